"""Where a stage reads and writes: a case, or plain folders.

Every stage function (``segment_case``, ``mesh_case``, ``fibers_case``, ``ep_case``, ``em_case``)
takes a ``Case`` or a path. On a case it reads the output of the stage before it and writes its
own stage folder through ``Case.stage`` (skipped when inputs and config are unchanged, committed
atomically, recorded in the manifest). On a path it reads that file (or the stage's file name in
that folder) and writes into a plain folder, every time. The branch lives here, once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cardiotwin.cases import Case, StageRun
from cardiotwin.errors import CaseError, ConfigError

StageSource = Case | Path


def open_target(path: str | os.PathLike[str]) -> StageSource:
    """A case directory as a ``Case``, anything else as a ``Path`` (checked by the stage)."""
    return Case.open(path) if Case.is_case(path) else Path(path)


def stage_input(source: StageSource, *, stage: str, filename: str, hint: str) -> Path:
    """The file a stage reads: ``filename`` in the case's completed stage ``stage``, or in the
    folder ``source``, or ``source`` itself when it is a file. CaseError naming the path when
    absent; ``hint`` says how to make it (e.g. "run `cardiotwin fibers` first")."""
    if isinstance(source, Case):
        path = source.require_stage(stage) / filename
        if not path.is_file():
            raise CaseError(f"{path}: the {stage} stage wrote no {filename} ({hint})")
        return path
    path = Path(source)
    path = path / filename if path.is_dir() else path
    if not path.is_file():
        raise CaseError(f"{path}: no such file (expected the {stage} stage's {filename}; {hint})")
    return path


@contextlib.contextmanager
def stage_output(
    source: StageSource,
    name: str,
    *,
    out: str | os.PathLike[str] | None,
    inputs: Mapping[str, str | os.PathLike[str]],
    config: Any,
    force: bool = False,
) -> Iterator[StageRun]:
    """Where stage ``name`` writes. A case without ``out``: its stage folder (``Case.stage``:
    ``skipped`` when nothing changed). Otherwise the folder ``out``, created, never skipped;
    ConfigError when a plain path comes without ``out``."""
    if isinstance(source, Case) and out is None:
        with source.stage(name, inputs=inputs, config=config, force=force) as run:
            yield run
        return
    if out is None:
        raise ConfigError(f"{source}: not a case; give an output folder (--out DIR) for the {name} stage")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    yield StageRun(name=name, dir=folder, skipped=False, metrics={})
