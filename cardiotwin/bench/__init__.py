"""Benchmarks, one module per stage (``mesh``, ``ep``, ``em``, ``crt``, ``seg``, ``seg_cine``, ``viewer``, ``calibrate``), each
calling the public stage functions; each `cardiotwin bench NAME` owns one section of docs/BENCHMARKS.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cardiotwin.errors import ConfigError
from cardiotwin.io.atomic import write_text_atomic

HEADER = (
    "# cardiotwin benchmarks\n\n"
    "Written by `cardiotwin bench NAME`; each section names the command that produced it and the machine.\n"
)


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


def sources_fingerprint(package: str, *, seed: bytes = b"", extra: tuple[Path, ...] = ()) -> str:
    """sha256 (16 hex digits) of ``seed``, the ``extra`` files (an absent one counts as empty) and the sources
    (``*.py``) of cardiotwin's sub-package ``package``: the key under which a benchmark keeps rows that
    stay valid while that code (and those inputs) are unchanged."""
    import hashlib

    h = hashlib.sha256(seed)
    for path in [*extra, *sorted((Path(__file__).resolve().parents[1] / package).glob("*.py"))]:
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:16]


BENCHES: tuple[str, ...] = ("em", "em_mesh", "ep", "mesh", "crt", "crt_real", "crt_real_mr", "viewer", "seg", "seg_acdc", "calibrate")
MODEL_BENCHES: tuple[str, ...] = ("seg", "seg_acdc")  # benchmarks of a model bundle (``model=`` a bundle folder)


def bench_function(name: str) -> Callable[..., str]:
    """The function of benchmark ``name``: takes ``quick`` (and ``model`` for MODEL_BENCHES) and
    returns a markdown section. ConfigError for an unknown name."""
    if name not in BENCHES:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHES)}")
    from cardiotwin.bench import calibrate, crt, em, em_mesh, ep, mesh, seg, viewer

    return {"em": em.bench_em, "em_mesh": em_mesh.bench_em_mesh, "ep": ep.bench_ep, "mesh": mesh.bench_mesh, "crt": crt.bench_crt,
            "crt_real": crt.bench_crt_real, "crt_real_mr": crt.bench_crt_real_mr, "viewer": viewer.run_bench,
            "seg": seg.run_seg_bench, "seg_acdc": seg.run_acdc_bench,
            "calibrate": calibrate.bench_calibrate}[name]
