"""Benchmark bookkeeping: each `cardiotwin bench NAME` owns one section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from cardiotwin.io.atomic import write_text_atomic

HEADER = (
    "# cardiotwin benchmarks\n\n"
    "Written by `cardiotwin bench NAME`; each section names the command that produced it and the machine.\n"
)


def machine_description() -> str:
    """One line: CPU model, cores, memory, and GPU if torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem_gb}{gpu}, Python {platform.python_version()}"


def write_section(name: str, markdown: str, *, path: str | Path = "docs/BENCHMARKS.md") -> Path:
    """Replace (or append) the section of benchmark ``name`` in the benchmarks file, atomically."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(path, text)
    return path
