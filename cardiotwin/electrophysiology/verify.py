"""Niederer et al. 2011 N-version slab benchmark (Phil Trans R Soc A 369:4331; shared/BENCHMARKS.md)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from cardiotwin.electrophysiology.monitor import NullMonitor
from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
from cardiotwin.electrophysiology.stimulus import niederer_stimulus
from cardiotwin.types import EPResult

log = logging.getLogger(__name__)

# P1 (0,0,0) ... P8 (20,7,3) the far corner, P9 (10,3.5,1.5) the centre (mm).
NIEDERER_POINTS_MM: dict[str, tuple[float, float, float]] = {
    "P1": (0.0, 0.0, 0.0), "P2": (0.0, 7.0, 0.0), "P3": (20.0, 0.0, 0.0), "P4": (20.0, 7.0, 0.0),
    "P5": (0.0, 0.0, 3.0), "P6": (0.0, 7.0, 3.0), "P7": (20.0, 0.0, 3.0), "P8": (20.0, 7.0, 3.0),
    "P9": (10.0, 3.5, 1.5),
}
# fenicsx-beat P1 FE reference (shared/BENCHMARKS.md): (dx, dt) -> (P8, P9) activation in ms.
NIEDERER_REFERENCE_MS: dict[tuple[float, float], tuple[float, float]] = {
    (0.5, 0.05): (56.65, 26.05), (0.5, 0.01): (55.91, 25.64), (0.5, 0.005): (55.83, 25.60),
    (0.2, 0.05): (39.90, 18.90), (0.2, 0.01): (38.42, 18.14), (0.2, 0.005): (38.24, 18.05),
    (0.1, 0.05): (40.55, 18.95), (0.1, 0.01): (38.21, 17.95), (0.1, 0.005): (37.93, 17.84),
}


def interpolate_p1(points: np.ndarray, cells: np.ndarray, values: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Values at ``xs`` (K, 3) of the P1 field ``values`` (N,) on the tets ``cells`` (M, 4) of
    ``points`` (N, 3): barycentric interpolation in a cell that contains each x (NaN where a vertex
    value is NaN). Only cells whose bounding box holds x are examined. ValueError if no cell holds x."""
    lo = points[cells].min(axis=1)  # (M, 3), computed once for all K points
    hi = points[cells].max(axis=1)
    out = np.empty(len(xs))
    for k, x in enumerate(np.asarray(xs, dtype=float)):
        for c in np.flatnonzero(np.all((lo <= x + 1e-9) & (hi >= x - 1e-9), axis=1)):
            p = points[cells[c]]
            lam = np.linalg.solve((p[1:] - p[0]).T, x - p[0])
            bary = np.concatenate([[1.0 - lam.sum()], lam])
            if bary.min() >= -1e-9:
                out[k] = bary @ values[cells[c]]
                break
        else:
            raise ValueError(f"point {x} lies in no cell of the mesh")
    return out


def run_niederer(*, dx_mm: float, dt_ms: float, t_end_ms: float = 100.0, cfg: MonodomainConfig | None = None,
                 monitor: NullMonitor | None = None) -> tuple[dict[str, float], EPResult]:
    """Run the slab at (dx, dt); return activation times (ms) at P1..P9 and the full EPResult.

    The times are the P1 interpolant of the nodal activation times at the points, as a finite-element
    code evaluates its solution there. (P9 = (10, 3.5, 1.5) is no node at dx 0.2: its nearest node,
    0.14 mm closer to the stimulus, activates about 0.6 ms earlier.)"""
    from cardiotwin.meshing.analytic import niederer_slab

    mesh = niederer_slab(dx_mm=dx_mm)
    base = cfg or MonodomainConfig()
    cfg = replace(base, dt=dt_ms, t_end=t_end_ms, ionic_model="ttp06", cell_type="epi")
    res = simulate_monodomain(mesh, [niederer_stimulus()], cfg=cfg, monitor=monitor)
    at_points = interpolate_p1(mesh.points, mesh.cells, res.activation_times_ms, np.array(list(NIEDERER_POINTS_MM.values())))
    out = {name: float(t) for name, t in zip(NIEDERER_POINTS_MM, at_points)}
    log.info("Niederer dx %.2g dt %.3g: P8 %.2f P9 %.2f ms", dx_mm, dt_ms, out["P8"], out["P9"])
    return out, res
