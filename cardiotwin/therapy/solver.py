"""Binding of the CRT sweep's ``ActivationSolver`` protocol to the electrophysiology eikonal solver.

``eikonal_solver(mesh, *, sources, tissue)`` runs ``electrophysiology.eikonal.EikonalSolver`` (fast
iterative method, Fu et al. 2013) with the tissue of the sweep:

- non-conducting cells (scar core) are removed from the mesh handed to the solver, so their
  nodes are reached only through conducting neighbours (never, inside the core);
- fibres: the tissue's (possibly rotated) point fibres averaged per cell with their signs aligned
  (``cell_data["f0"]``);
- speeds: the solver's ``v_l`` / ``v_t`` when uniform; when the tissue has per-cell speeds
  (border zone, fast endocardial layer) the solver's per-cell metric tensor ``M = V^-1`` (which
  it precomputes once per mesh) is set from them: M = f f^T / v_l^2 + (I - f f^T) / v_t^2.

Solvers are cached per tissue object (the sweep reuses one tissue per conduction config), so a
worker builds each solver once. ``qrs_from_ecg`` is the QRS duration of the EP package's
pseudo-ECG of an activation map
(``paced_ecg``: the leads too).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from cardiotwin.anatomy import CellTag
from cardiotwin.errors import StageError
from cardiotwin.therapy.conduction import Source, Tissue
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)

_CACHE: "OrderedDict[int, tuple[Tissue, HeartMesh, Any]]" = OrderedDict()
_CACHE_SIZE = 4


def _cell_fibres(mesh: HeartMesh, point_fibres: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(C, 3) unit fibre per cell: mean of its nodes' fibres after aligning their signs with the
    first node's (a fibre is an axis, f and -f are the same; LDRB nodal fields flip sign)."""
    nodal = point_fibres[cells]  # (C, 4, 3)
    sign = np.sign(np.einsum("cij,cj->ci", nodal, nodal[:, 0]))
    sign[sign == 0] = 1.0
    f = (nodal * sign[:, :, None]).mean(axis=1)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    if np.any(n < 1e-8):
        raise StageError(f"{mesh.name or 'mesh'}: fibres cancel out in {int(np.sum(n < 1e-8))} cells")
    return f / n


def _build(mesh: HeartMesh, tissue: Tissue) -> Any:
    try:
        import torch

        from cardiotwin.electrophysiology.eikonal import EikonalConfig, EikonalSolver
    except ImportError as exc:
        raise StageError(f"the CRT sweep needs the electrophysiology eikonal solver ({exc})") from None
    keep = ~np.asarray(tissue.blocked_cells, dtype=bool)
    if not keep.any():
        raise StageError(f"{mesh.name or 'mesh'}: no conducting cell (all cells are scar)")
    cells = mesh.cells[keep]
    f = _cell_fibres(mesh, np.asarray(tissue.fibres, dtype=float), cells)
    conducting = HeartMesh(points=mesh.points, cells=cells,
                           cell_tags=np.full(cells.shape[0], int(CellTag.LV_MYO), dtype=np.int32),
                           facets=mesh.facets, facet_tags=mesh.facet_tags, cell_data={"f0": f},
                           name=f"{mesh.name}:conducting")
    v_l = np.asarray(tissue.cv_fibre_mm_per_ms, dtype=float)[keep]
    v_t = np.asarray(tissue.cv_cross_mm_per_ms, dtype=float)[keep]
    solver = EikonalSolver(conducting, cfg=EikonalConfig(v_l=float(v_l.max()), v_t=float(v_t.max())))
    if np.ptp(v_l) > 0 or np.ptp(v_t) > 0:
        il, it = 1.0 / v_l**2, 1.0 / v_t**2
        m = it[:, None, None] * np.eye(3)[None] + (il - it)[:, None, None] * f[:, :, None] * f[:, None, :]
        if tuple(solver.M.shape) != m.shape:
            raise StageError(f"eikonal solver metric has shape {tuple(solver.M.shape)}, expected {m.shape}")
        solver.M = torch.as_tensor(m, dtype=solver.M.dtype, device=solver.M.device)
    return solver


def _solver_for(mesh: HeartMesh, tissue: Tissue) -> Any:
    key = id(tissue)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is tissue and hit[1] is mesh:
        _CACHE.move_to_end(key)
        return hit[2]
    solver = _build(mesh, tissue)
    _CACHE[key] = (tissue, mesh, solver)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return solver


def eikonal_solver(mesh: HeartMesh, *, sources: Sequence[Source], tissue: Tissue) -> np.ndarray:
    """(N,) activation times (ms; inf where never reached) from the EP eikonal solver."""
    solver = _solver_for(mesh, tissue)
    nodes = np.concatenate([np.asarray(s.nodes, dtype=np.int64) for s in sources])
    delays = np.concatenate([np.asarray(s.delays_ms, dtype=float) for s in sources])
    # the solver takes (nodes, delay) groups: one group per distinct delay
    order = np.argsort(delays, kind="stable")
    uniq, start = np.unique(delays[order], return_index=True)
    groups = np.split(nodes[order], start[1:])
    t, _ = solver.solve([(g, float(d)) for g, d in zip(groups, uniq)])
    t = np.asarray(t, dtype=float)
    t[~np.isfinite(t)] = np.inf
    return t


def paced_ecg(mesh: HeartMesh, activation_times_ms: np.ndarray) -> dict[str, Any] | None:
    """The electrophysiology package's 12-lead pseudo-ECG of an activation map (reaction-eikonal
    transmembrane potentials, Niederer monodomain diffusivities) over depolarisation only (until
    40 ms after the last activation, before any repolarisation), 1 ms steps: ``{"times_ms",
    "leads": {name: values}, "qrs_ms"}`` (arbitrary units, as the pseudo-ECG), None when nothing
    activates."""
    from cardiotwin.electrophysiology.ecg import ecg_from_activation, qrs_duration_ms
    from cardiotwin.electrophysiology.operators import NIEDERER_D_L, NIEDERER_D_T

    t = np.asarray(activation_times_ms, dtype=float)
    t = np.where(np.isfinite(t), t, np.nan)
    if not np.isfinite(t).any():
        return None
    times, leads = ecg_from_activation(mesh, t, d_l=NIEDERER_D_L, d_t=NIEDERER_D_T,
                                       t_end_ms=float(np.nanmax(t)) + 40.0, dt_ms=1.0)
    return {"times_ms": np.asarray(times, dtype=float), "leads": {k: np.asarray(v, dtype=float) for k, v in leads.items()},
            "qrs_ms": float(qrs_duration_ms(times, leads))}


def qrs_from_ecg(mesh: HeartMesh, activation_times_ms: np.ndarray) -> float | None:
    """QRS duration (ms) of ``paced_ecg``."""
    ecg = paced_ecg(mesh, activation_times_ms)
    return ecg["qrs_ms"] if ecg is not None else None
