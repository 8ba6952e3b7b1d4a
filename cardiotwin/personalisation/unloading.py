"""Unloaded (stress-free) reference geometry by backward-displacement inverse elastostatics.

The imaged end-diastolic (ED) anatomy is loaded by the ED cavity pressures. The unloaded
reference X is the fixed point of (Sellier, Appl Math Comput 218:1271, 2011; Bols et al.,
J Comput Appl Math 246:137, 2013)

    X_{k+1} = X_k - (X_k + u(X_k; p_ED) - x_ED)

where u(X; p) is the displacement of the forward mechanics problem from the reference X loaded
by the cavity pressures p, and x_ED the imaged nodes. The residual r_k = X_k + u_k - x_ED is the
nodal distance between the reinflated and the imaged mesh; iterations stop when its maximum is
below ``tol_mm``, or its mean below ``mean_tol_mm`` with every cavity volume within
``volume_tol`` (a few nodes of a real mesh, e.g. at the basal rim, converge slowly). Each
forward solve starts from the previous displacement, which places the deformed mesh exactly on
x_ED at the new reference (one Newton solve, usually a few iterations);
load stepping from zero is the fallback.

The forward problem is ``mechanics.problem.CardiacMechanics`` with the beat's boundary
conditions; its forms read the mesh coordinates at assembly, so the reference is changed in
place (``mesh.geometry.x``) without rebuilding the problem. Fibre vectors stay attached to the
nodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx
import ufl

from cardiotwin.anatomy import FacetTag
from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.mechanics.electromechanics import EMConfig
from cardiotwin.mechanics.materials import Material
from cardiotwin.mechanics.newton import NewtonDiverged
from cardiotwin.mechanics.problem import Boundaries, CardiacMechanics

log = logging.getLogger(__name__)

MMHG_KPA = 0.133322387415


@dataclass(frozen=True)
class UnloadConfig:
    """Target ED pressures (population values unless LVEDP is measured) and iteration control."""

    lv_pressure: float = quantity(10.0 * MMHG_KPA, "kPa", doc="LV end-diastolic pressure (population 10 mmHg)")
    rv_pressure: float = quantity(5.0 * MMHG_KPA, "kPa", doc="RV end-diastolic pressure (population 5 mmHg)")
    tol_mm: float = quantity(0.05, "mm", doc="maximum nodal distance reinflated vs imaged")
    mean_tol_mm: float = quantity(0.05, "mm", doc="or: mean nodal distance, together with volume_tol")
    volume_tol: float = quantity(0.005, "", doc="relative cavity volume error accepted with mean_tol_mm")
    max_iterations: int = 30
    relaxation: float = 1.0
    aitken: bool = True

    def validate(self) -> None:
        if self.lv_pressure < 0 or self.rv_pressure < 0:
            raise ValueError("ED pressures must be >= 0")
        if not self.tol_mm > 0:
            raise ValueError("tol_mm must be > 0")
        if self.max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        if not 0 < self.relaxation <= 1.5:
            raise ValueError("relaxation must lie in (0, 1.5]")


@dataclass
class UnloadResult:
    """Reference (unloaded) and imaged node coordinates in dolfinx geometry order (mm), the
    iteration history and cavity volumes (mL) of the imaged, reinflated and unloaded meshes."""

    reference_mm: np.ndarray
    imaged_mm: np.ndarray
    converged: bool
    iterations: list[dict[str, Any]] = field(default_factory=list)
    volumes_ml: dict[str, dict[str, float]] = field(default_factory=dict)
    pressures_kpa: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        last = self.iterations[-1] if self.iterations else {}
        vol_err = {c: abs(self.volumes_ml["reinflated"][c] - self.volumes_ml["imaged"][c]) / self.volumes_ml["imaged"][c]
                   for c in self.volumes_ml.get("imaged", {})}
        return {"converged": self.converged, "n_iterations": len(self.iterations),
                "mean_distance_mm": last.get("mean_distance_mm"), "max_distance_mm": last.get("max_distance_mm"),
                "volume_rel_error": vol_err, "volumes_ml": self.volumes_ml, "pressures_kpa": self.pressures_kpa,
                "iterations": self.iterations, "seconds": round(self.seconds, 2)}


def beat_boundaries(facet_tags: dolfinx.mesh.MeshTags, cfg: EMConfig, comm: MPI.Comm) -> Boundaries:
    """The boundary conditions ``mechanics.electromechanics.simulate_beat`` uses (LV, and RV when tagged)."""
    def has(tag: int) -> bool:
        return comm.allreduce(int(len(facet_tags.find(tag))), op=MPI.SUM) > 0

    if not has(int(FacetTag.LV_ENDO)):
        raise StageError("mesh has no LV_ENDO facets: cannot pressurise the LV cavity")
    cavities = {"LV": int(FacetTag.LV_ENDO)}
    if has(int(FacetTag.RV_ENDO)):
        cavities["RV"] = int(FacetTag.RV_ENDO)
    base = int(FacetTag.BASE)
    m = cfg.mechanics
    return Boundaries(fixed=(base,) if m.base_bc == "fixed" else (),
                      base_springs=(base,) if m.base_bc == "spring" else (),
                      epi_springs=(int(FacetTag.EPI),) if m.epi_spring_kpa_per_mm > 0 else (),
                      cavities=cavities, base=base)


def passive_mechanics(mesh: dolfinx.mesh.Mesh, facet_tags: dolfinx.mesh.MeshTags,
                      fibres: tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr],
                      cfg: EMConfig, *, prefix: str = "unload_", material: Material | None = None) -> CardiacMechanics:
    """The beat's mechanics problem (material, discretisation, boundary conditions of ``cfg``);
    ``material`` replaces the configured one."""
    if material is None:
        material = cfg.guccione if cfg.material == "guccione" else cfg.holzapfel_ogden
    return CardiacMechanics(mesh, facet_tags, material=material, fibres=fibres,
                            boundaries=beat_boundaries(facet_tags, cfg, mesh.comm), cfg=cfg.mechanics, prefix=prefix)


class NodalDisplacement:
    """Displacement of ``mech`` at the geometry nodes (via a P1 interpolant)."""

    def __init__(self, mech: CardiacMechanics) -> None:
        mesh = mech.mesh
        self.mech = mech
        self.V1 = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (3,)))
        self.u1 = dolfinx.fem.Function(self.V1)
        node_dof = np.empty(mesh.geometry.x.shape[0], dtype=np.int64)
        node_dof[mesh.geometry.dofmap.ravel()] = self.V1.dofmap.list.ravel()
        self.node_dof = node_dof
        self.n_owned = mesh.geometry.index_map().size_local

    def displacement(self) -> np.ndarray:
        self.u1.interpolate(self.mech.displacement())
        return self.u1.x.array.reshape(-1, 3)[self.node_dof]


def _min_tet_volume(mesh: dolfinx.mesh.Mesh) -> float:
    x = mesh.geometry.x[mesh.geometry.dofmap]
    v = np.einsum("ij,ij->i", np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]), x[:, 3] - x[:, 0]) / 6.0
    return float(mesh.comm.allreduce(float(v.min(initial=np.inf)), op=MPI.MIN))


def surface_nodes(mech: CardiacMechanics) -> dict[str, np.ndarray]:
    """Geometry node indices on each tagged surface of ``mech``'s mesh (LV_ENDO, RV_ENDO, EPI, BASE)."""
    mesh, tags = mech.mesh, mech.facet_tags
    fdim = mesh.topology.dim - 1
    mesh.topology.create_connectivity(fdim, mesh.topology.dim)
    out = {}
    for tag in FacetTag:
        facets = tags.find(int(tag))
        if len(facets):
            out[tag.name] = np.unique(dolfinx.mesh.entities_to_geometry(mesh, fdim, facets, False))
    return out


def _where(dist: np.ndarray, surfaces: Mapping[str, np.ndarray], points: np.ndarray) -> dict[str, Any]:
    """Where the residual sits: its maximum per surface, and the surfaces and position of the worst node."""
    worst = int(np.argmax(dist))
    return {"max_by_surface_mm": {name: round(float(dist[nodes].max()), 4) for name, nodes in surfaces.items()},
            "worst_node_surfaces": [name for name, nodes in surfaces.items() if worst in set(nodes.tolist())] or ["interior"],
            "worst_node_mm": [round(float(c), 2) for c in points[worst]]}


def _stats(dist: np.ndarray, n_owned: int, comm: MPI.Comm) -> tuple[float, float]:
    own = dist[:n_owned]
    total = comm.allreduce(float(own.sum()), op=MPI.SUM)
    count = comm.allreduce(int(own.size), op=MPI.SUM)
    return total / max(count, 1), comm.allreduce(float(own.max(initial=0.0)), op=MPI.MAX)


def _forward(mech: CardiacMechanics, pressures: Mapping[str, float], warm: np.ndarray | None) -> int:
    """Solve the loaded state at the current reference; warm start, else load stepping from zero."""
    if warm is not None:
        mech.state.x.array[:] = warm
        mech.state.x.scatter_forward()
        for name, p in pressures.items():
            mech.pressures_kpa[name].value = p
        try:
            return mech.newton.solve().iterations
        except NewtonDiverged as exc:
            log.debug("unloading: warm-started solve failed (%s); load stepping from zero", exc)
    mech.state.x.array[:] = 0.0
    mech.state.x.scatter_forward()
    for c in mech.pressures_kpa.values():
        c.value = 0.0
    return mech.solve_to(pressures_kpa=dict(pressures), label="unloading: reinflation", initial_fraction=0.25)


def unload(mech: CardiacMechanics, *, cfg: UnloadConfig = UnloadConfig(),
           pressures_kpa: Mapping[str, float] | None = None,
           initial_reference_mm: np.ndarray | None = None) -> UnloadResult:
    """Find the unloaded reference of ``mech``'s mesh, whose coordinates are the imaged (loaded) ED
    geometry. On return the mesh holds the unloaded reference and ``mech`` the reinflated state.

    ``pressures_kpa`` defaults to ``cfg``'s LV/RV pressures for the cavities ``mech`` has;
    ``initial_reference_mm`` (geometry order) starts the iteration from a nearby reference, e.g.
    the unloaded mesh of a neighbouring stiffness (default: the imaged mesh). Raises
    StageError (with the iteration history) when the iteration diverges, inverts an element or
    does not reach ``cfg.tol_mm`` in ``cfg.max_iterations`` iterations.
    """
    cfg.validate()
    t0 = time.perf_counter()
    comm = mech.comm
    cavities = list(mech.boundaries.cavities)
    default = {"LV": cfg.lv_pressure, "RV": cfg.rv_pressure}
    pressures = {c: float((pressures_kpa or default)[c]) for c in cavities}
    geom = mech.mesh.geometry.x
    imaged = geom.copy()
    nodal = NodalDisplacement(mech)
    surfaces = surface_nodes(mech)

    def volumes() -> dict[str, float]:
        return {c: mech.cavity_volume_ml(c) for c in cavities}

    mech.state.x.array[:] = 0.0
    mech.state.x.scatter_forward()
    imaged_volumes = volumes()
    X = imaged.copy() if initial_reference_mm is None else np.array(initial_reference_mm, dtype=float, copy=True)
    warm = None
    history: list[dict[str, Any]] = []
    converged = False
    rising = 0
    omega, r_prev, n_own = cfg.relaxation, None, nodal.n_owned
    for k in range(1, cfg.max_iterations + 1):
        geom[:] = X
        if _min_tet_volume(mech.mesh) <= 0:
            geom[:] = imaged
            raise StageError(f"unloading inverted an element at iteration {k} (ED pressures "
                             f"{pressures} kPa too high for the passive stiffness?); history: {history}")
        try:
            its = _forward(mech, pressures, warm)
        except StageError as exc:
            geom[:] = imaged
            raise StageError(f"unloading: the reinflation at iteration {k} failed ({exc}); history: {history}") from None
        u = nodal.displacement()
        r = X + u - imaged
        dist = np.linalg.norm(r, axis=1)
        mean_d, max_d = _stats(dist, nodal.n_owned, comm)
        v = volumes()
        history.append({"iteration": k, "mean_distance_mm": mean_d, "max_distance_mm": max_d,
                        "newton_iterations": int(its),
                        "volume_rel_error": {c: (v[c] - imaged_volumes[c]) / imaged_volumes[c] for c in cavities},
                        "reference_shift_max_mm": float(np.max(np.linalg.norm(X - imaged, axis=1), initial=0.0)),
                        **_where(dist, surfaces, imaged)})
        log.info("unloading iteration %d: mean %.3g mm, max %.3g mm, volumes %s mL", k, mean_d, max_d,
                 {c: round(x, 2) for c, x in v.items()})
        if not np.isfinite(max_d):
            break
        vol_err = max(abs(e) for e in history[-1]["volume_rel_error"].values())
        if max_d < cfg.tol_mm or (mean_d < cfg.mean_tol_mm and vol_err < cfg.volume_tol):
            converged = True
            break
        rising = rising + 1 if len(history) > 1 and max_d > history[-2]["max_distance_mm"] else 0
        if rising >= 3:
            break
        warm = mech.state.x.array.copy()
        if cfg.aitken and r_prev is not None:
            # Aitken's dynamic relaxation (Irons & Tuck 1969; Kuettler & Wall 2008): damps the
            # period-two oscillation of the plain fixed point on soft walls
            dr = (r - r_prev)[:n_own].ravel()
            denom = comm.allreduce(float(dr @ dr), op=MPI.SUM)
            if denom > 0:
                omega = -omega * comm.allreduce(float(r_prev[:n_own].ravel() @ dr), op=MPI.SUM) / denom
                omega = float(np.clip(omega, 0.05, 1.5))
        # backtrack a step that would invert an element (a large first correction on a soft wall)
        while True:
            geom[:] = X - omega * r
            if _min_tet_volume(mech.mesh) > 0 or omega < 0.02:
                break
            omega *= 0.5
        history[-1]["relaxation"] = omega
        r_prev = r
        X = X - omega * r
    reinflated = volumes()
    snap = mech.snapshot()
    mech.state.x.array[:] = 0.0
    mech.state.x.scatter_forward()
    unloaded = volumes()
    mech.restore(snap)
    result = UnloadResult(reference_mm=geom.copy(), imaged_mm=imaged, converged=converged, iterations=history,
                          volumes_ml={"imaged": imaged_volumes, "reinflated": reinflated, "unloaded": unloaded},
                          pressures_kpa=pressures, seconds=time.perf_counter() - t0)
    if not converged:
        geom[:] = imaged
        last = history[-1] if history else {}
        raise StageError(
            f"unloading did not converge in {len(history)} iterations (max nodal distance "
            f"{last.get('max_distance_mm', float('nan')):.3g} mm, tolerance {cfg.tol_mm:g} mm; distances by iteration "
            f"{[round(h['max_distance_mm'], 4) for h in history]}; cavity volume errors "
            f"{ {c: round(e, 4) for c, e in last.get('volume_rel_error', {}).items()} }; the largest distance on "
            f"{'/'.join(last.get('worst_node_surfaces', []))} at {last.get('worst_node_mm')} mm, per surface "
            f"{last.get('max_by_surface_mm')}): the ED pressures {pressures} kPa may be too high "
            "for the passive stiffness, or the mesh too coarse")
    return result
