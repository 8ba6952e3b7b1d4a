"""The machine a benchmark or a verification run ran on, in one line."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
