"""Shared helpers of the therapy / CRT / distributed tests (no tests here).

``graph_activation`` is a test double of the ``ActivationSolver`` protocol: shortest paths on the
mesh edge graph (scipy Dijkstra) with anisotropic edge travel times. It lets the ranking, UQ and
Dask logic be tested independently of the electrophysiology package; the product binds the
protocol to the EP stage's eikonal solver (``cardiotwin.therapy.solver``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

_EDGES = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])


def graph_activation(mesh, *, sources, tissue):
    """(N,) activation times (ms): earliest arrival over edges of conducting cells."""
    ok = ~tissue.blocked_cells
    e = mesh.cells[ok][:, _EDGES].reshape(-1, 2)
    cell = np.repeat(np.flatnonzero(ok), 6)
    d = mesh.points[e[:, 1]] - mesh.points[e[:, 0]]
    length = np.linalg.norm(d, axis=1)
    fa, fb = tissue.fibres[e[:, 0]], tissue.fibres[e[:, 1]]
    f = fa + np.where(np.einsum("ij,ij->i", fa, fb)[:, None] < 0, -fb, fb)  # fibres are axes: align signs
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    cos = np.abs(np.einsum("ij,ij->i", d, f)) / np.maximum(length, 1e-12)
    vl, vt = tissue.cv_fibre_mm_per_ms[cell], tissue.cv_cross_mm_per_ms[cell]
    w = length * np.sqrt((cos / vl) ** 2 + (1.0 - cos**2) / vt**2)
    n = mesh.n_points
    nodes = np.concatenate([s.nodes for s in sources])
    delays = np.concatenate([s.delays_ms for s in sources])
    first = np.full(n, np.inf)
    np.minimum.at(first, nodes, delays)
    src = np.flatnonzero(np.isfinite(first))
    t0 = first[src].min()
    rows = np.concatenate([e[:, 0], e[:, 1], np.full(src.size, n)])
    cols = np.concatenate([e[:, 1], e[:, 0], src])
    wts = np.concatenate([w, w, first[src] - t0 + 1e-9])
    graph = coo_matrix((wts, (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    return dijkstra(graph, indices=n)[:n] + t0


def biventricle_with_fibres(char_length_mm: float = 3.0):
    """Idealised biventricle (meshing.analytic) with LDRB fibres, UVC and AHA segments."""
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.meshing.analytic import idealised_biventricle

    mesh, _ = compute_fibers(idealised_biventricle(char_length_mm=char_length_mm))
    return mesh


def write_mesh_file(mesh, folder: Path) -> Path:
    from cardiotwin.io.meshes import write_mesh

    folder.mkdir(parents=True, exist_ok=True)
    return write_mesh(mesh, folder / "mesh.vtu")
