"""Helpers of the robustness suite: a bad-input corpus built in the tests, and the probe that runs
the CLI in-process and checks exit code, one error line, no traceback, and untouched files."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cardiotwin.cli import main
from cardiotwin.types import ImageGeometry, Scan

# Hidden bookkeeping a case may update even when a stage fails (the lock file's holder line, the
# failed attempt's note); every other file must stay byte-identical.
BOOKKEEPING = {".lock", ".attempts.json"}


def snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), bookkeeping files excluded."""
    out: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for f in files:
            if f.name in BOOKKEEPING:
                continue
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        if root.is_dir():  # empty folders count too (a stage that leaves a folder behind changed the case)
            for d in root.rglob("*"):
                if d.is_dir() and d.name != ".staging" and not any(d.iterdir()):
                    out[str(d) + "/"] = "empty folder"
    return out


def probe(capsys, argv: list[str], *, protect: Iterable[Path] = (), match: str = "", code: int = 2) -> str:
    """Run ``cardiotwin ARGV`` in-process; assert exit ``code``, exactly one error line (matching
    ``match``), no traceback, and every file under ``protect`` unchanged. Returns the error line."""
    protect = list(protect)
    before = snapshot(protect)
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    errors = [ln for ln in err.splitlines() if ln.startswith("cardiotwin: error:")]
    assert rc == code, f"exit {rc}, expected {code}; stderr: {err[-2000:]}"
    assert len(errors) == 1, f"expected one error line, got: {err[-2000:]}"
    line = errors[0]
    if match:
        assert re.search(match, line), line
    assert snapshot(protect) == before, "files changed by a refused or failed command"
    return line


def small_scan(*, spacing=(2.0, 2.0, 2.0), shape=(24, 24, 20), seed: int = 0, source: str = "synthetic") -> Scan:
    """A small CT-like scan (air and soft tissue), enough for the readers' checks."""
    rng = np.random.default_rng(seed)
    vox = np.full(shape, -1000.0, dtype=np.float32)
    vox[4:-4, 4:-4, 3:-3] = 40.0 + rng.normal(0, 10, size=(shape[0] - 8, shape[1] - 8, shape[2] - 6))
    geom = ImageGeometry(shape=shape, spacing_mm=tuple(float(s) for s in spacing), origin_mm=(0.0, 0.0, 0.0),
                         direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    return Scan(voxels=np.round(vox), geometry=geom, modality="CT", sha256="0" * 64, source=source)


def nifti_with_pixdim(path: Path, pixdim: tuple[float, float, float]) -> Path:
    """A NIfTI-1 (.nii.gz) whose header stores ``pixdim`` as given (0, negative or NaN included):
    pixdim[1:4] are float32 at byte 80 of the header, patched after writing."""
    import gzip
    import struct

    from cardiotwin.io.scans import write_scan

    write_scan(small_scan(), path)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[80:92] = struct.pack("<3f", *pixdim)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def header_with(path: Path, old: str, new: str) -> Path:
    """Rewrite a text field of an NRRD or MetaImage header in place (the data part untouched)."""
    raw = path.read_bytes()
    assert old.encode() in raw, (old, raw[:400])
    path.write_bytes(raw.replace(old.encode(), new.encode(), 1))
    return path
