"""Binding of the CRT sweep's ``ActivationSolver`` protocol to the electrophysiology package.

``eikonal_solver(mesh, *, sources, tissue)`` hands the sources (nodes + delays) and the tissue
(fibres, per-cell speeds, blocked scar cells) to the electrophysiology stage's eikonal solver
and returns activation times (N,) in ms; ``qrs_from_ecg(mesh, activation_times_ms)`` is the QRS
duration of its pseudo-ECG, or None when that package offers no ECG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from cardiotwin.errors import StageError
from cardiotwin.therapy.conduction import Source, Tissue
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


def _eikonal_module():  # noqa: ANN202 - module
    try:
        from cardiotwin.electrophysiology import eikonal
    except ImportError as exc:
        raise StageError(
            "the CRT sweep needs the electrophysiology eikonal solver (cardiotwin.electrophysiology.eikonal), "
            f"which is not available in this installation ({exc})"
        ) from None
    return eikonal


def eikonal_solver(mesh: HeartMesh, *, sources: Sequence[Source], tissue: Tissue) -> np.ndarray:
    """(N,) activation times (ms; inf where never reached) from the EP eikonal solver."""
    eikonal = _eikonal_module()
    solve = getattr(eikonal, "solve_activation", None)
    if solve is None:
        raise StageError("cardiotwin.electrophysiology.eikonal has no solve_activation(); cannot run the CRT sweep")
    nodes = np.concatenate([np.asarray(s.nodes, dtype=np.int64) for s in sources])
    delays = np.concatenate([np.asarray(s.delays_ms, dtype=float) for s in sources])
    t = solve(mesh, source_nodes=nodes, source_times_ms=delays, fibres=tissue.fibres,
              cv_fibre_mm_per_ms=tissue.cv_fibre_mm_per_ms, cv_cross_mm_per_ms=tissue.cv_cross_mm_per_ms,
              blocked_cells=tissue.blocked_cells)
    return np.asarray(t, dtype=float)


def qrs_from_ecg(mesh: HeartMesh, activation_times_ms: np.ndarray) -> float | None:
    """QRS duration (ms) of the pseudo-ECG of an activation map, None without an ECG model."""
    try:
        from cardiotwin.electrophysiology import ecg
    except ImportError:
        return None
    qrs = getattr(ecg, "qrs_duration_from_activation", None)
    if qrs is None:
        return None
    return float(qrs(mesh, activation_times_ms))
