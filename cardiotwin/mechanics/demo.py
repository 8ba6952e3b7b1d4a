"""Analytic beat inputs for tests and benchmarks (no EP or fibre stage needed).

Geometry from ``meshing.analytic`` (Land ellipsoid or idealised biventricle), fibres from the
Land 2015 analytic helix (``land.land_fibres``: +90 deg endo to -90 deg epi; RV points beyond
the LV epicardium get the epicardial angle), activation times from a point source at the apex
spreading at a constant speed: ``t_act = |x - x_apex| / v``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx

from cardiotwin.mechanics.electromechanics import BeatInputs
from cardiotwin.mechanics.land import EPI_RL, land_fibres, orthonormal_frame


def analytic_beat_inputs(
    *,
    geometry: Literal["ellipsoid", "biventricle"] = "ellipsoid",
    char_length_mm: float = 4.0,
    conduction_velocity_mm_per_ms: float = 0.6,
    source_mm: tuple[float, float, float] = (0.0, 0.0, -EPI_RL),
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> BeatInputs:
    """BeatInputs on an analytic mesh with analytic fibres and point-source activation times."""
    from cardiotwin.meshing.analytic import idealised_biventricle, land_ellipsoid
    from cardiotwin.meshing.fem import to_dolfinx

    if conduction_velocity_mm_per_ms <= 0:
        raise ValueError("conduction velocity must be > 0")
    make = land_ellipsoid if geometry == "ellipsoid" else idealised_biventricle
    heart = to_dolfinx(make(char_length_mm=char_length_mm) if comm.rank == 0 else None, comm)
    Vf = dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1, (3,)))
    f0 = dolfinx.fem.Function(Vf, name="f0")
    f0.interpolate(land_fibres)
    S = dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1))
    act = dolfinx.fem.Function(S, name="activation_time_ms")
    src = np.asarray(source_mm, dtype=float)
    act.interpolate(lambda x: np.linalg.norm(x.T - src, axis=1) / conduction_velocity_mm_per_ms)
    return BeatInputs(mesh=heart.mesh, facet_tags=heart.facet_tags, fibres=orthonormal_frame(f0), activation=act,
                      extra={"heart": heart})
