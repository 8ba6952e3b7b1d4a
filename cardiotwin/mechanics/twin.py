"""Patient-twin inputs for an electromechanical beat: a normal (sinus-like) activation.

Without a Purkinje network, an eikonal activation from one or two pacing sites spreads through
the working myocardium at ~0.6 mm/ms and takes 200+ ms for an adult heart, twice a normal QRS.
``electrophysiology.sources.sinus_sources`` stands in for the His-Purkinje system (early
endocardial breakthrough sites); on the sample CT twin it gives a total activation of ~140 ms.

``prepare_twin`` runs the stages a beat needs (mesh, fibres, eikonal EP) on a label map and
returns the EP stage's ``activation.vtu``; the benchmark and the README use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cardiotwin.electrophysiology.sources import sinus_sources

__all__ = ["prepare_twin", "sinus_sources"]

log = logging.getLogger(__name__)


def prepare_twin(labels_path: Path, work_dir: Path, *, edge_mm: float) -> Path:
    """Mesh (``edge_mm``), fibres and a sinus-like eikonal activation of a label map.

    Writes ``work_dir/mesh`` (the mesh and fibres stages) and ``work_dir/ep/activation.vtu``
    (returned). Serial; run it before starting MPI ranks.
    """
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
    from cardiotwin.fibers.stage import FIBERS_VTU, FiberConfig, fibers_case
    from cardiotwin.io.meshes import read_mesh, write_mesh
    from cardiotwin.meshing.stage import MeshConfig, mesh_case

    mesh_dir, ep_dir = work_dir / "mesh", work_dir / "ep"
    mesh_case(Path(labels_path), MeshConfig(edge_mm=edge_mm), out=mesh_dir)
    fibers_case(mesh_dir, FiberConfig())
    mesh = read_mesh(mesh_dir / FIBERS_VTU)
    res = simulate_eikonal(mesh, sinus_sources(mesh), cfg=EikonalConfig())
    ep_dir.mkdir(parents=True, exist_ok=True)
    vtu = ep_dir / "activation.vtu"
    write_mesh(mesh.with_fields(point_data={"activation_time_ms": res.activation_times_ms}), vtu)
    log.info("twin of %s at %g mm: %d points, activation %.0f-%.0f ms", labels_path, edge_mm, mesh.n_points,
             float(np.nanmin(res.activation_times_ms)), float(np.nanmax(res.activation_times_ms)))
    return vtu
