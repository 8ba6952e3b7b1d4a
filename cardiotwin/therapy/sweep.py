"""The CRT sweep as idempotent tasks: one (uncertainty sample, pacing protocol) activation solve each.

Every task writes its own JSON (``<work_dir>/<key>.json``, atomically) holding a digest of what
it computed (mesh sha256, conduction config, protocol). A task whose file exists with the same
digest returns it without solving, so a rerun skips finished work and a killed worker loses only
the task it was running (Dask reschedules it; ``retries`` covers failures inside the task). Tasks
run on a Dask client when given, else serially in this process.

Workers load the mesh from ``mesh_path`` (so they need the case directory on a shared file
system when the scheduler is remote) and cache it, with its tissue per conduction config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiotwin.config import config_to_dict
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.therapy.baseline import lbbb_sources, lv_nodes
from cardiotwin.therapy.conduction import ActivationSolver, ConductionConfig, Tissue, build_tissue, conducting_points
from cardiotwin.therapy.metrics import activation_metrics, point_volumes_mm3, segment_activation_ms
from cardiotwin.therapy.protocols import protocol_sources
from cardiotwin.types import HeartMesh, PacingProtocol

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

TASK_FORMAT = 1


@dataclass(frozen=True)
class SweepTask:
    """One activation solve: ``protocol`` under the conduction of uncertainty ``sample`` (0 = nominal)."""

    sample: int
    conduction: ConductionConfig
    protocol: PacingProtocol

    @property
    def key(self) -> str:
        return f"s{self.sample:03d}_{self.protocol.name}"


def task_digest(task: SweepTask, mesh_sha256: str) -> str:
    """sha256 of everything that determines a task's result."""
    data = {"format": TASK_FORMAT, "mesh": mesh_sha256, "conduction": config_to_dict(task.conduction),
            "protocol": config_to_dict(dataclasses.asdict(task.protocol))}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class TwinContext:
    """Per (mesh, conduction) quantities a task needs."""

    tissue: Tissue
    conducting: np.ndarray
    lv_mask: np.ndarray
    volumes_mm3: np.ndarray
    aha: np.ndarray


def twin_context(mesh: HeartMesh, conduction: ConductionConfig) -> TwinContext:
    tissue = build_tissue(mesh, conduction)
    return TwinContext(tissue=tissue, conducting=conducting_points(mesh, tissue), lv_mask=lv_nodes(mesh),
                       volumes_mm3=point_volumes_mm3(mesh), aha=np.asarray(mesh.point_data["aha"]).astype(int))


def solve_protocol(
    mesh: HeartMesh,
    protocol: PacingProtocol,
    conduction: ConductionConfig,
    *,
    solver: ActivationSolver,
    context: TwinContext | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Activation times (N,) in ms from QRS onset (inf: not reached) and the protocol's metrics:
    tat_ms, lvat_ms, t90_ms, unreached_fraction, captured {chamber: bool}, segment_ms {aha: ms}."""
    ctx = context or twin_context(mesh, conduction)
    sources, captured = protocol_sources(protocol, mesh=mesh, conduction=conduction,
                                         intrinsic=lbbb_sources(mesh, conduction), conducting_points=ctx.conducting)
    t = np.asarray(solver(mesh, sources=sources, tissue=ctx.tissue), dtype=float)
    if t.shape != (mesh.n_points,):
        raise ValueError(f"activation solver returned shape {t.shape}, expected ({mesh.n_points},)")
    t = np.where(ctx.conducting, t, np.inf)
    metrics: dict[str, Any] = activation_metrics(t, conducting=ctx.conducting, lv_mask=ctx.lv_mask,
                                                 volumes_mm3=ctx.volumes_mm3)
    metrics["captured"] = captured
    metrics["segment_ms"] = {str(k): v for k, v in segment_activation_ms(
        t, aha=ctx.aha, conducting=ctx.conducting, volumes_mm3=ctx.volumes_mm3).items()}
    return t - metrics["onset_ms"], metrics


@lru_cache(maxsize=2)
def _cached_mesh(path: str, sha256: str) -> HeartMesh:
    from cardiotwin.io.meshes import read_mesh

    return read_mesh(path)


@lru_cache(maxsize=8)
def _cached_context(path: str, sha256: str, conduction: ConductionConfig) -> TwinContext:
    return twin_context(_cached_mesh(path, sha256), conduction)


def read_task_result(path: Path, digest: str) -> dict[str, Any] | None:
    """The stored result when ``path`` exists and was computed for ``digest``, else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("digest") == digest else None


def run_task(task: SweepTask, *, mesh_path: str, mesh_sha256: str, work_dir: str, solver: ActivationSolver) -> dict[str, Any]:
    """Compute one task (or return its stored result); writes ``work_dir/<key>.json``."""
    out = Path(work_dir) / f"{task.key}.json"
    digest = task_digest(task, mesh_sha256)
    done = read_task_result(out, digest)
    if done is not None:
        return done
    t0 = time.perf_counter()
    mesh = _cached_mesh(mesh_path, mesh_sha256)
    ctx = _cached_context(mesh_path, mesh_sha256, task.conduction)
    _, metrics = solve_protocol(mesh, task.protocol, task.conduction, solver=solver, context=ctx)
    result = {"key": task.key, "digest": digest, "sample": task.sample, "protocol": task.protocol.name,
              "metrics": metrics, "seconds": round(time.perf_counter() - t0, 4)}
    write_json_atomic(out, result)
    return result


def run_sweep(
    tasks: Sequence[SweepTask],
    *,
    mesh_path: Path,
    mesh_sha256: str,
    work_dir: Path,
    solver: ActivationSolver,
    client: "Client | None" = None,
    retries: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run (or reuse) every task; returns key -> result. Finished tasks are read, not submitted."""
    work_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    todo: list[SweepTask] = []
    for task in tasks:
        done = read_task_result(work_dir / f"{task.key}.json", task_digest(task, mesh_sha256))
        if done is not None:
            results[task.key] = done
        else:
            todo.append(task)
    log.info("CRT sweep: %d tasks, %d already done, %d to run on %s", len(tasks), len(results), len(todo),
             "Dask" if client is not None else "this process")
    kwargs = {"mesh_path": str(mesh_path), "mesh_sha256": mesh_sha256, "work_dir": str(work_dir), "solver": solver}
    total = len(tasks)
    if client is None:
        for task in todo:
            results[task.key] = run_task(task, **kwargs)
            if progress:
                progress(len(results), total)
        return results
    from distributed import as_completed

    futures = [client.submit(run_task, task, **kwargs, key=f"crt-{task.key}-{task_digest(task, mesh_sha256)[:12]}",
                             retries=retries, pure=False) for task in todo]
    for fut in as_completed(futures):
        res = fut.result()
        results[res["key"]] = res
        if progress:
            progress(len(results), total)
    return results
