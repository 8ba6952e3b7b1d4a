"""Patient-twin inputs for an electromechanical beat: a normal (sinus-like) activation.

Without a Purkinje network, an eikonal activation from one or two pacing sites spreads through
the working myocardium at ~0.6 mm/ms and takes 200+ ms for an adult heart, twice a normal QRS.
``sinus_sources`` stands in for the His-Purkinje system the usual way (early endocardial
breakthrough sites, Durrer et al., Circulation 41:899, 1970): one site on the LV endocardium at
the centre of each mid and apical AHA segment at 0 ms, each basal segment at 10 ms, and three RV
endocardial sites at 5 ms. On the sample CT twin this gives a total activation of ~140 ms.

``prepare_twin`` runs the stages a beat needs (mesh, fibres, eikonal EP) on a label map and
returns the EP stage's ``activation.vtu``; the benchmark and the README use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


def sinus_sources(mesh: HeartMesh, *, seed: int = 0) -> list[tuple[tuple[float, float, float], float]]:
    """Endocardial breakthrough sites ((x, y, z) mm, start ms) from the fibres stage's fields.

    Needs point data ``uvc_transmural`` (0 at the endocardium), ``uvc_ventricle`` (0 LV, 1 RV)
    and ``aha`` (segments 1-17, 0 outside the LV), as written by ``cardiotwin fibers``.
    """
    missing = [k for k in ("uvc_transmural", "uvc_ventricle", "aha") if k not in mesh.point_data]
    if missing:
        raise ValueError(f"mesh lacks point data {missing}: run the fibres stage first")
    pts = np.asarray(mesh.points, dtype=float)
    transmural = np.asarray(mesh.point_data["uvc_transmural"], dtype=float)
    ventricle = np.rint(np.asarray(mesh.point_data["uvc_ventricle"], dtype=float))
    aha = np.rint(np.asarray(mesh.point_data["aha"], dtype=float)).astype(int)
    endo = transmural < 0.05
    sources: list[tuple[tuple[float, float, float], float]] = []
    for seg in range(1, 18):
        idx = np.flatnonzero(endo & (ventricle == 0) & (aha == seg))
        if idx.size == 0:
            continue
        centre = pts[idx].mean(axis=0)
        i = idx[np.argmin(np.linalg.norm(pts[idx] - centre, axis=1))]
        sources.append((tuple(map(float, pts[i])), 10.0 if seg <= 6 else 0.0))
    rv = np.flatnonzero(endo & (ventricle == 1))
    if rv.size:
        rng = np.random.default_rng(seed)
        for i in rng.choice(rv, size=min(3, rv.size), replace=False):
            sources.append((tuple(map(float, pts[i])), 5.0))
    if not sources:
        raise ValueError("no endocardial nodes found for the activation sources")
    return sources


def prepare_twin(labels_path: Path, work_dir: Path, *, edge_mm: float) -> Path:
    """Mesh (``edge_mm``), fibres and a sinus-like eikonal activation of a label map.

    Writes ``work_dir/mesh`` (the mesh and fibres stages) and ``work_dir/ep/activation.vtu``
    (returned). Serial; run it before starting MPI ranks.
    """
    from cardiotwin.cli import main
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
    from cardiotwin.errors import StageError
    from cardiotwin.io.meshes import read_mesh, write_mesh

    mesh_dir, ep_dir = work_dir / "mesh", work_dir / "ep"
    if main(["-q", "mesh", str(labels_path), "--out", str(mesh_dir), "--edge-mm", f"{edge_mm:g}"]) != 0:
        raise StageError(f"{labels_path}: meshing failed")
    if main(["-q", "fibers", str(mesh_dir)]) != 0:
        raise StageError(f"{mesh_dir}: fibres stage failed")
    mesh = read_mesh(mesh_dir / "mesh.vtu")
    res = simulate_eikonal(mesh, sinus_sources(mesh), cfg=EikonalConfig())
    ep_dir.mkdir(parents=True, exist_ok=True)
    vtu = ep_dir / "activation.vtu"
    write_mesh(mesh.with_fields(point_data={"activation_time_ms": res.activation_times_ms}), vtu)
    log.info("twin of %s at %g mm: %d points, activation %.0f-%.0f ms", labels_path, edge_mm, mesh.n_points,
             float(np.nanmin(res.activation_times_ms)), float(np.nanmax(res.activation_times_ms)))
    return vtu
