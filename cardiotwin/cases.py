"""Case directories: inputs, each stage's outputs, and a provenance manifest.

Layout::

    cases/p001/
      manifest.json        inputs (sha256), per-stage records (config, input/output hashes, versions, timings)
      inputs/scan.nii.gz   the scan as read (geometry and voxels only: no patient identifiers)
      segment/ mesh/ ...   one folder per stage, replaced atomically when the stage succeeds
      .staging/            work folders of running stages (removed when they end)
      .lock                held (flock) by the process that runs a stage
      .attempts.json       the last failed attempt of each stage (merged into ``Case.manifest``)

A stage is skipped when its recorded inputs (sha256), config and outputs are unchanged, unless
forced. A case is written only by its stages, inside its folder: a stage's new inputs (a scan)
are staged next to its outputs and replace the case's inputs only when the stage succeeds, so a
stage that fails or is killed leaves every visible file of the case byte-identical (its failure
is noted in the hidden ``.attempts.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardiotwin import __version__
from cardiotwin.config import config_to_dict
from cardiotwin.errors import CaseError
from cardiotwin.io.atomic import sha256_file, sha256_paths, write_json_atomic

if TYPE_CHECKING:
    from cardiotwin.types import Scan

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ATTEMPTS = ".attempts.json"
MANIFEST_VERSION = 1
_MAX_MANIFEST_BYTES = 64 << 20
_TRACKED_PACKAGES = (
    "numpy", "scipy", "SimpleITK", "torch", "monai", "fenics-dolfinx", "dolfinx-solver-real",
    "petsc4py", "mpi4py", "pyvista", "vtk", "meshio", "tetgen", "gmsh", "dask", "distributed",
)


def software_versions() -> dict[str, str]:
    """Versions of cardiotwin, Python and the numerical packages (without importing them)."""
    versions = {"cardiotwin": __version__, "python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hash_path(path: Path) -> str:
    """sha256 of a file, or of all files below a folder (names and contents)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return sha256_paths(files, root=path)
    if path.is_file():
        return sha256_file(path)
    raise CaseError(f"stage input {path} does not exist")


def config_digest(config: Any) -> tuple[Any, str]:
    data = config_to_dict(config)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return data, digest


def pseudonym(case_id: str) -> str:
    """The pseudonymous name outputs show for a case unless identifiers are asked for: the first
    ten hex digits of the sha256 of its id (folder names are often made from patient names)."""
    return hashlib.sha256(str(case_id).encode("utf-8", "surrogatepass")).hexdigest()[:10]


# Folder names too generic to identify anyone (tests, demos, examples): not replaced as words.
_GENERIC_NAMES = frozenset({"case", "cases", "demo", "empty", "example", "sample", "test", "tmp", "temp", "out",
                            "output", "run", "phantom", "copy", "new", "data"})


def redact(data: Any, case: "Case | str | os.PathLike[str]") -> Any:
    """``data`` (text, or JSON-like lists and mappings of it) with the case folder's path, and its
    name and case id as whole words, replaced by ``case <pseudonym>``, also where they appear
    HTML-escaped. Names shorter than 3 characters or generic (``case``, ``demo``) stay."""
    import html
    import re

    root = Path(case.root if isinstance(case, Case) else case)
    try:
        case_id = Case(root)._read_manifest().get("case_id")
    except (CaseError, OSError):
        case_id = None
    tag = "case " + pseudonym(str(case_id or root.name))
    paths = {str(root.resolve()), str(root.absolute()), str(root)}
    paths = sorted({v for p in paths if len(p) > 1 for v in (p, html.escape(p))}, key=len, reverse=True)
    words = {n for n in (case_id, root.name) if n and len(n) >= 3 and n.lower() not in _GENERIC_NAMES}
    words = sorted({v for n in words for v in (n, html.escape(n))}, key=len, reverse=True)
    word_re = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w-])") if words else None

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for path in paths:
                value = value.replace(path, tag)
            return word_re.sub(tag, value) if word_re is not None else value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StageRun:
    """Handle given to a running stage. Write outputs into ``dir`` unless ``skipped``."""

    name: str
    dir: Path
    skipped: bool
    metrics: dict[str, Any]

    def output(self, relname: str) -> Path:
        """Path of an output file inside the stage folder (parents created)."""
        p = self.dir / relname
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class Case:
    """A case directory. Use ``Case.create``, ``Case.open`` or ``Case.open_or_create``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str], *, case_id: str | None = None) -> "Case":
        root = Path(root)
        if (root / MANIFEST).exists():
            raise CaseError(f"{root}: a case already exists here")
        if root.exists() and not root.is_dir():
            raise CaseError(f"{root}: exists and is not a folder")
        if root.exists() and any(root.iterdir()):
            raise CaseError(f"{root}: folder is not empty and holds no case manifest; refusing to use it")
        root.mkdir(parents=True, exist_ok=True)
        case = cls(root)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "case_id": case_id or root.name,
            "created": _now(),
            "software": software_versions(),
            "inputs": {},
            "stages": {},
        }
        write_json_atomic(root / MANIFEST, manifest)
        return case

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> "Case":
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise CaseError(f"{root}: not a case directory (no {MANIFEST})")
        case = cls(root)
        case.manifest  # validate it parses
        return case

    @classmethod
    def open_or_create(cls, root: str | os.PathLike[str], *, case_id: str | None = None) -> "Case":
        root = Path(root)
        return cls.open(root) if (root / MANIFEST).is_file() else cls.create(root, case_id=case_id)

    @staticmethod
    def is_case(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST).is_file()

    # -- manifest --------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest, with each stage's last failed attempt (if any) as ``last_attempt``."""
        data = self._read_manifest()
        for name, attempt in self._read_attempts().items():
            rec = data["stages"].setdefault(name, {"status": "failed"})
            rec["last_attempt"] = attempt
        return data

    def _read_manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        try:
            if path.stat().st_size > _MAX_MANIFEST_BYTES:
                raise CaseError(f"{path}: manifest of {path.stat().st_size} bytes; not a cardiotwin manifest")
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CaseError(f"{self.root}: not a case directory (no {MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CaseError(f"{path}: manifest is not valid JSON ({exc})") from None
        except RecursionError:
            raise CaseError(f"{path}: manifest nested too deeply") from None
        validate_manifest(data, source=path)
        return data

    def _read_attempts(self) -> dict[str, Any]:
        path = self.root / ATTEMPTS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.root / MANIFEST, manifest)

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def stage_record(self, name: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(name)

    def _committed_record(self, name: str) -> dict[str, Any] | None:
        return self._read_manifest()["stages"].get(name)

    def require_stage(self, name: str) -> Path:
        """Folder of a stage that must have completed; CaseError naming the case otherwise."""
        rec = self.stage_record(name)
        if not rec or rec.get("status") != "ok" or not self.stage_dir(name).is_dir():
            raise CaseError(f"{self.root}: stage '{name}' has not been run (run `cardiotwin {name}` first)")
        return self.stage_dir(name)

    # -- inputs ----------------------------------------------------------------------------
    def record_input(self, name: str, path: Path, *, source_sha256: str, source_name: str, **extra: Any) -> None:
        """Record an input stored in the case (path relative to the root) with its source hash."""
        with self.lock():
            manifest = self._read_manifest()
            manifest["inputs"][name] = _input_record(Path(path).relative_to(self.root), sha256_file(path),
                                                     source_sha256=source_sha256, source_name=source_name, **extra)
            self._write_manifest(manifest)

    def import_scan(self, scan: "Scan", *, name: str = "scan", **extra: Any) -> Path:
        """Store a scan as ``inputs/<name>.nii.gz`` (voxels and geometry only) and record it now
        (a new case). A stage that reads a new scan passes it as ``Case.stage(scans=...)`` instead,
        so that the case's scan is replaced only when that stage succeeds.

        Rewriting the image drops every header field but geometry, so no patient identifier of
        the source (DICOM tags, NIfTI descriptions) enters the case; only the source's file name
        and sha256 are recorded, with ``extra`` (e.g. the PACS a scan was pulled from). A scan
        from the same source as the recorded one keeps the recorded extras (here and in
        ``Case.stage(scans=...)``).
        """
        from cardiotwin.io.scans import write_scan

        with self.lock():
            path = write_scan(scan, self.root / "inputs" / f"{name}.nii.gz")
            self.record_input(
                name,
                path,
                source_sha256=scan.sha256,
                source_name=Path(scan.source).name,
                modality=scan.modality,
                shape=list(scan.geometry.shape),
                spacing_mm=list(scan.geometry.spacing_mm),
                **self._kept_extras(name, scan, extra),
            )
        return path

    def _kept_extras(self, name: str, scan: "Scan", extra: dict[str, Any]) -> dict[str, Any]:
        if extra:
            return extra
        prev = self.manifest["inputs"].get(name) or {}
        if not isinstance(prev, dict) or prev.get("source_sha256") != scan.sha256:
            return {}
        standard = {"path", "sha256", "source_name", "source_sha256", "recorded", "modality", "shape", "spacing_mm"}
        return {k: v for k, v in prev.items() if k not in standard}

    def input_path(self, name: str) -> Path:
        rec = self.manifest["inputs"].get(name)
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            raise CaseError(f"{self.root}: no input '{name}' in this case")
        path = (self.root / rec["path"]).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise CaseError(f"{self.root / MANIFEST}: input '{name}' points outside the case ({rec['path']})")
        return path

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on the case (re-entrant within one process)."""
        if getattr(self, "_lock_depth", 0):
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        path = self.root / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise CaseError(f"{self.root}: case is locked by {holder}; wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()} since {_now()}")
        fh.flush()
        self._lock_depth = 1
        try:
            self._recover()
            yield
        finally:
            self._lock_depth = 0
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def _recover(self) -> None:
        """Undo what a killed commit left: restore a stage folder parked in .staging, drop work folders."""
        staging = self.root / ".staging"
        if not staging.is_dir():
            return
        for p in staging.iterdir():
            if p.name.startswith("oldinput-"):
                dest = self.root / "inputs" / p.name[len("oldinput-"):].rsplit("-", 1)[0]
                if not dest.exists():
                    os.replace(p, dest)
                    log.warning("%s: restored the previous input %s", self.root, dest.name)
                    continue
            if p.name.startswith("old-"):
                stage = p.name[4:].rsplit("-", 1)[0]
                if not self.stage_dir(stage).exists():
                    os.replace(p, self.stage_dir(stage))
                    log.warning("%s: restored previous outputs of stage %s", self.root, stage)
                    continue
            shutil.rmtree(p, ignore_errors=True)

    # -- stages ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(
        self,
        name: str,
        *,
        inputs: Mapping[str, str | os.PathLike[str]],
        config: Any,
        force: bool = False,
        scans: Mapping[str, "Scan"] | None = None,
    ) -> Iterator[StageRun]:
        """Run a stage: skip when unchanged, else stage outputs and commit them atomically.

        inputs: files or folders the stage reads (hashed for the cache). scans: new input scans
        of the case (e.g. ``{"scan": scan}``), stored as ``inputs/<name>.nii.gz`` together with
        the stage's outputs when it succeeds; on failure the case's inputs stay as they were.
        """
        if not name.isidentifier():
            raise ValueError(f"stage name must be an identifier, got {name!r}")
        with self.lock():
            input_hashes = {k: hash_path(Path(v)) for k, v in inputs.items()}
            staged = {k: self._stage_scan(k, scan) for k, scan in (scans or {}).items()}
            try:
                input_hashes.update({k: rec["sha256"] for k, (_, rec) in staged.items()})
                cfg_data, cfg_sha = config_digest(config)
                prev = self._committed_record(name)
                if not force and self._unchanged(name, prev, input_hashes, cfg_sha):
                    log.info("%s: stage %s unchanged, skipped (use --force to rerun)", self.root.name, name)
                    yield StageRun(name=name, dir=self.stage_dir(name), skipped=True, metrics={})
                    return
                work = self.root / ".staging" / f"{name}-{uuid.uuid4().hex[:8]}"
                work.mkdir(parents=True)
                started, t0 = _now(), time.perf_counter()
                run = StageRun(name=name, dir=work, skipped=False, metrics={})
                try:
                    yield run
                    self._commit(name, work, {self.root / "inputs" / f"{k}.nii.gz": tmp for k, (tmp, _) in staged.items()})
                except BaseException as exc:
                    shutil.rmtree(work, ignore_errors=True)
                    self._record_failure(name, started, time.perf_counter() - t0, exc)
                    raise
            finally:
                for tmp, _ in staged.values():
                    tmp.unlink(missing_ok=True)
            outputs = {
                str(p.relative_to(self.stage_dir(name))): sha256_file(p)
                for p in sorted(self.stage_dir(name).rglob("*"))
                if p.is_file()
            }
            manifest = self._read_manifest()
            for key, (_, rec) in staged.items():
                manifest["inputs"][key] = rec
            manifest["stages"][name] = {
                "status": "ok",
                "started": started,
                "ended": _now(),
                "duration_s": round(time.perf_counter() - t0, 3),
                "inputs": input_hashes,
                "config": cfg_data,
                "config_sha256": cfg_sha,
                "outputs": outputs,
                "metrics": run.metrics,
                "software": software_versions(),
            }
            self._write_manifest(manifest)
            self._clear_attempt(name)

    def _stage_scan(self, name: str, scan: "Scan") -> tuple[Path, dict[str, Any]]:
        """Write a new input scan into .staging; it replaces ``inputs/<name>.nii.gz`` on commit."""
        from cardiotwin.io.scans import write_scan

        if not name.isidentifier():
            raise ValueError(f"input name must be an identifier, got {name!r}")
        tmp = write_scan(scan, self.root / ".staging" / f"input-{name}-{uuid.uuid4().hex[:8]}.nii.gz")
        rec = _input_record(Path("inputs") / f"{name}.nii.gz", sha256_file(tmp), source_sha256=scan.sha256,
                            source_name=Path(scan.source).name, modality=scan.modality,
                            shape=list(scan.geometry.shape), spacing_mm=list(scan.geometry.spacing_mm),
                            **self._kept_extras(name, scan, {}))
        return tmp, rec

    def _unchanged(self, name: str, prev: dict[str, Any] | None, inputs: dict[str, str], cfg_sha: str) -> bool:
        if not prev or prev.get("status") != "ok":
            return False
        if prev.get("inputs") != inputs or prev.get("config_sha256") != cfg_sha:
            return False
        folder = self.stage_dir(name)
        for rel, digest in prev.get("outputs", {}).items():
            p = folder / rel
            if not p.is_file() or sha256_file(p) != digest:
                log.info("%s: output %s of stage %s changed or missing; rerunning", self.root.name, rel, name)
                return False
        return True

    def _commit(self, name: str, work: Path, new_inputs: Mapping[Path, Path]) -> None:
        """Move the stage's work folder (and its new input files) into place; on any error the
        previous folder and inputs are put back, so the case is as before."""
        final = self.stage_dir(name)
        tag = uuid.uuid4().hex[:8]
        moved: list[tuple[Path, Path]] = []  # (parked, original) to restore on failure
        placed: list[Path] = []
        try:
            for dest, tmp in new_inputs.items():
                if dest.exists():
                    parked = self.root / ".staging" / f"oldinput-{dest.name}-{tag}"
                    os.replace(dest, parked)
                    moved.append((parked, dest))
                dest.parent.mkdir(exist_ok=True)
                os.replace(tmp, dest)
                placed.append(dest)
            parked = self.root / ".staging" / f"old-{name}-{tag}"
            if final.exists():
                os.replace(final, parked)
                moved.append((parked, final))
            os.replace(work, final)
        except BaseException:
            for dest in placed:
                dest.unlink(missing_ok=True)
            for parked, original in reversed(moved):
                if not original.exists():
                    os.replace(parked, original)
            inputs = self.root / "inputs"
            if inputs.is_dir() and not any(inputs.iterdir()):
                inputs.rmdir()
            raise
        for parked, _ in moved:
            shutil.rmtree(parked, ignore_errors=True) if parked.is_dir() else parked.unlink(missing_ok=True)

    def _record_failure(self, name: str, started: str, seconds: float, exc: BaseException) -> None:
        attempts = self._read_attempts()
        attempts[name] = {
            "status": "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
            "started": started,
            "ended": _now(),
            "duration_s": round(seconds, 3),
            "error": redact(f"{type(exc).__name__}: {exc}", self)[:2000],
        }
        try:
            write_json_atomic(self.root / ATTEMPTS, attempts)
        except OSError as err:  # the stage's own error is the one to report
            log.warning("%s: could not note the failed attempt of %s (%s)", self.root, name, err)

    def _clear_attempt(self, name: str) -> None:
        attempts = self._read_attempts()
        if attempts.pop(name, None) is not None:
            write_json_atomic(self.root / ATTEMPTS, attempts)


def _input_record(rel: Path, sha256: str, *, source_sha256: str, source_name: str, **extra: Any) -> dict[str, Any]:
    return {"path": str(rel), "sha256": sha256, "source_name": source_name, "source_sha256": source_sha256,
            "recorded": _now(), **extra}


def validate_manifest(data: Any, *, source: object) -> None:
    """CaseError naming ``source`` unless ``data`` has the structure of a cardiotwin manifest."""
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise CaseError(f"{source}: not a cardiotwin manifest (no 'stages' mapping)")
    if not isinstance(data.setdefault("inputs", {}), dict):
        raise CaseError(f"{source}: damaged manifest ('inputs' must be a mapping)")
    for key in ("inputs", "stages"):
        for name, rec in data[key].items():
            if not isinstance(rec, dict):
                raise CaseError(f"{source}: damaged manifest ({key}.{name} must be a mapping)")
    for name, rec in data["inputs"].items():
        if not isinstance(rec.get("path"), str) or not isinstance(rec.get("sha256", ""), str):
            raise CaseError(f"{source}: damaged manifest (inputs.{name} needs a path and sha256)")
    for name, rec in data["stages"].items():
        for sub in ("inputs", "outputs", "config", "metrics"):
            if sub in rec and not isinstance(rec[sub], dict):
                raise CaseError(f"{source}: damaged manifest (stages.{name}.{sub} must be a mapping)")
        if any(not isinstance(v, str) for v in (rec.get("outputs") or {}).values()):
            raise CaseError(f"{source}: damaged manifest (stages.{name}.outputs must map files to sha256)")
    if not isinstance(data.get("case_id", ""), (str, type(None))):
        raise CaseError(f"{source}: damaged manifest ('case_id' must be a string)")
