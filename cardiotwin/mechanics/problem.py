"""Quasi-static cardiac mechanics in dolfinx: forms, boundary conditions, Newton with load stepping.

Units: mm, kPa, mL (cavity volumes; mm^3 inside the forms).

The residual is the first variation of the strain energy plus three load terms:

- follower (cavity) pressure on the endocardium: ``+ p J F^-T N . v ds`` (the pressure
  pushes the wall away from the cavity);
- Robin springs: ``k u . v ds`` on the base (all directions) and ``k (u.N)(v.N) ds`` on the
  epicardium (pericardium, normal direction only);
- active second Piola-Kirchhoff stress ``S_a = T_a (f0 x f0 + eta (s0 x s0 + n0 x n0))``
  (``eta`` the cross-fibre fraction), i.e. ``P_a = F S_a``, as in Land et al. 2015.

Three compressibility treatments:

- ``mixed``: incompressible, Taylor-Hood P2 displacement / P1 pressure, ``W - p (J - 1)``.
- ``penalty``: nearly incompressible, isochoric W plus ``kappa/2 (J - 1)^2`` per quadrature
  point. With P1 tetrahedra this locks on walls one or two cells thick (``tests/test_em_locking.py``).
- ``nodal_pressure`` (default): the same energy with the volumetric term moved to the nodes,
  the averaged nodal pressure tetrahedron of Bonet and Burton (Commun Numer Meth Eng 14:437,
  1998): P1 displacement and P1 pressure, ``Pi = int W_iso + p (J - 1) dx - sum_a p_a^2 V_a /
  (2 kappa)`` with the last term by vertex quadrature (lumped), so that
  ``p_a = kappa (int J phi_a / int phi_a - 1)``: one volume constraint per node instead of one per
  cell. P1/P1 is not inf-sup stable and still locks on one-cell walls (the filling of the Land
  ellipsoid fell by 42 % from kappa 100 to 2000 kPa), so a Brezzi-Pitkaranta term
  ``- alpha h^2 / (2 mu) |grad p|^2`` (h the edge of the regular tetrahedron of the cell's volume,
  mu the material's small-strain shear modulus) relaxes it: the ellipsoid's filling then changes by
  < 1 % from kappa 500 to 2000 kPa and by 5 % across alpha 0.02-2. Bending needs a pressure
  gradient across the wall, which the term also relaxes: alpha 0.14 keeps Land's beam (Problem 1)
  inside the published range. Under an active fibre stress far above mu (Land Problem 3: 60 kPa
  against 2 kPa) the term smooths away the pressure the constraint needs and the wall compresses
  locally (nodal volume ratios off by 25 %); so it is sized by mu + T_a (the stiffness the active
  stress adds; ``stabilisation_active_tension``, on by default), which keeps Problem 3 in its
  published range and leaves every passive solve unchanged. Measurements against P2 and the beam:
  ``docs/mechanics.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import basix
import basix.ufl
import dolfinx
import dolfinx.fem.petsc
import ufl
from petsc4py import PETSc

from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.mechanics.materials import Material
from cardiotwin.mechanics.newton import JIT_OPTIONS, NewtonDiverged, NewtonSolver

log = logging.getLogger(__name__)

# (f0, s0, n0) for a quadrature degree: fibres given at the forms' quadrature points
FibresAtDegree = Callable[[int], tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr]]


@dataclass(frozen=True)
class MechanicsConfig:
    """Discretisation, boundary conditions and Newton settings of the mechanics solve."""

    formulation: Literal["mixed", "penalty", "nodal_pressure"] = "nodal_pressure"
    degree: int = 1  # displacement degree for "penalty"; "mixed" is always P2/P1, "nodal_pressure" P1/P1
    bulk_modulus: float = quantity(500.0, "kPa", doc="penalty kappa (penalty and nodal_pressure)")
    pressure_stabilisation: float = quantity(0.14, "", doc="Brezzi-Pitkaranta alpha of nodal_pressure")
    # shear modulus scaling the stabilisation; None: the material's small-strain cross-fibre value
    stabilisation_modulus: float | None = None
    # add the local active fibre tension T_a to that modulus (the stiffness an active stress adds):
    # keeps the pressure constraint under a stress far above the passive modulus (docs/mechanics.md);
    # no effect where T_a = 0 (passive filling, Land Problems 1-2)
    stabilisation_active_tension: bool = True
    base_bc: Literal["fixed", "spring"] = "fixed"
    base_spring_kpa_per_mm: float = 1.0
    epi_spring_kpa_per_mm: float = 0.0
    cross_fibre_fraction: float = 0.0
    # the residual falls 1e3x per solve (the sample CT twin's beat: EDV, ESV, EF, dP/dt the same to
    # 5 digits as with 1e-4, 1e-6 and 1e-9, with 1/5 fewer chord iterations than 1e-4; the cavity
    # volumes have their own tolerance; Land's verification asks for 1e-9)
    snes_rtol: float = 1e-3
    snes_atol: float = 1e-8
    snes_max_it: int = 25
    min_load_fraction: float = 1.0 / 256
    # modified Newton: keep the factorised Jacobian while the residual falls by this factor per
    # iteration (one Jacobian and factorisation cost about 12 chord iterations: 0.5 halves the
    # Jacobians of a beat against 0.25 for 1.5x the iterations)
    jacobian_reuse: bool = True
    jacobian_contraction: float = 0.5
    # None: 2 for P1 (F is constant per cell; fibres vary linearly), 4 otherwise (P2). Degree 4
    # costs ~3.5x as many points as degree 2 in every Jacobian assembly. 1 (one point per cell, the
    # fibres at the centroid) makes a nodal_pressure beat ~1/3 cheaper; its p (J - 1) term stays
    # exact (degree 2). Measurements: docs/mechanics.md.
    quadrature_degree: int | None = None

    def quadrature(self) -> int:
        """The quadrature degree used in the forms."""
        if self.quadrature_degree is not None:
            return self.quadrature_degree
        linear = self.formulation == "nodal_pressure" or (self.formulation == "penalty" and self.degree == 1)
        return 2 if linear else 4

    def validate(self) -> None:
        if self.formulation not in ("mixed", "penalty", "nodal_pressure"):
            raise ValueError(f"formulation must be 'mixed', 'penalty' or 'nodal_pressure', got {self.formulation!r}")
        if self.degree not in (1, 2):
            raise ValueError("degree must be 1 or 2")
        if not self.bulk_modulus > 0:
            raise ValueError(f"bulk_modulus must be > 0, got {self.bulk_modulus}")
        if not self.pressure_stabilisation >= 0:
            raise ValueError(f"pressure_stabilisation must be >= 0, got {self.pressure_stabilisation}")
        if not 0 < self.jacobian_contraction < 1:
            raise ValueError(f"jacobian_contraction must lie in (0, 1), got {self.jacobian_contraction}")
        if self.stabilisation_modulus is not None and not self.stabilisation_modulus > 0:
            raise ValueError(f"stabilisation_modulus must be > 0, got {self.stabilisation_modulus}")
        if self.base_spring_kpa_per_mm < 0 or self.epi_spring_kpa_per_mm < 0:
            raise ValueError("spring stiffnesses must be >= 0")
        if not 0 <= self.cross_fibre_fraction <= 1:
            raise ValueError("cross_fibre_fraction must lie in [0, 1]")
        if self.quadrature_degree is not None and not 1 <= self.quadrature_degree <= 8:
            raise ValueError(f"quadrature_degree must lie in [1, 8], got {self.quadrature_degree}")
        if self.quadrature_degree is not None and (weight := _smallest_tet_weight(self.quadrature_degree)) <= 0:
            safe = ", ".join(str(d) for d in range(1, 9) if _smallest_tet_weight(d) > 0)
            raise ValueError(f"quadrature_degree {self.quadrature_degree}: the default tetrahedron rule of that degree "
                             f"has a negative weight ({weight:.3g}), which can make the tangent indefinite (a beat "
                             f"diverged with degree 3); use one of {safe}")


def _smallest_tet_weight(degree: int) -> float:
    """The smallest weight of the tetrahedron quadrature rule the forms get at ``degree`` (basix's default
    rule, as FFCx uses it): negative for degrees 3, 7 and 8."""
    return float(np.min(basix.make_quadrature(basix.CellType.tetrahedron, degree)[1]))


def _cell_size(mesh: dolfinx.mesh.Mesh) -> ufl.core.expr.Expr:
    """The edge of the regular tetrahedron of the cell's (local) volume, 2^(1/6) |det J|^(1/3): the
    same measure on affine and curved cells, and not inflated on flat or sliver cells as the
    circumsphere diameter is (3x the volume's edge on a 5-degree sliver, 1.5x on a cube's corner tet)."""
    return 2.0 ** (1.0 / 6.0) * abs(ufl.JacobianDeterminant(mesh)) ** (1.0 / 3.0)


def _shear_modulus(material: Material) -> float | ufl.core.expr.Expr:
    """Small-strain shear modulus (kPa; a number or a UFL scalar) of a material, for the pressure
    stabilisation."""
    modulus = getattr(material, "shear_modulus", None)
    if modulus is None:
        raise ValueError(f"{type(material).__name__} has no shear_modulus(); set MechanicsConfig.stabilisation_modulus")
    return modulus()


@dataclass(frozen=True)
class Boundaries:
    """Facet tags of the problem: fixed (Dirichlet u = 0), springs, pressurised cavities.

    ``cavities`` maps a cavity name ("LV", "RV", or "beam" for a loaded face) to its facet tag;
    ``base`` is the tag whose deformed centroid closes the cavities for volume computation.
    """

    fixed: tuple[int, ...] = ()
    base_springs: tuple[int, ...] = ()
    epi_springs: tuple[int, ...] = ()
    cavities: Mapping[str, int] = field(default_factory=dict)
    base: int | None = None


@dataclass
class NewtonMonitor:
    """Counts Newton iterations and times of every accepted solve (read by the benchmark)."""

    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    jacobians: list[int] = field(default_factory=list)
    failures: int = 0


class CardiacMechanics:
    """A hyperelastic body with cavity pressures and active tension, solved by Newton (SNES).

    Loads are ``pressures_kpa[name]`` (dolfinx Constants) and ``active_tension_kpa`` (a scalar
    Function on ``scalar_space``). ``solve_to`` moves them to targets with adaptive load steps.
    """

    def __init__(
        self,
        mesh: dolfinx.mesh.Mesh,
        facet_tags: dolfinx.mesh.MeshTags,
        *,
        material: Material,
        fibres: tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr] | FibresAtDegree,
        boundaries: Boundaries,
        cfg: MechanicsConfig = MechanicsConfig(),
        prefix: str = "mech_",
    ) -> None:
        material.validate()
        cfg.validate()
        self.mesh, self.facet_tags, self.cfg, self.boundaries = mesh, facet_tags, cfg, boundaries
        self.comm = mesh.comm
        self.monitor = NewtonMonitor()
        gdim = mesh.geometry.dim
        cell = mesh.basix_cell()
        mixed = cfg.formulation in ("mixed", "nodal_pressure")
        if mixed:
            el_u = basix.ufl.element("Lagrange", cell, 2 if cfg.formulation == "mixed" else 1, shape=(gdim,))
            el_p = basix.ufl.element("Lagrange", cell, 1)
            self.W = dolfinx.fem.functionspace(mesh, basix.ufl.mixed_element([el_u, el_p]))
            self.V, self._v_map = self.W.sub(0).collapse()
        else:
            self.W = dolfinx.fem.functionspace(mesh, ("Lagrange", cfg.degree, (gdim,)))
            self.V, self._v_map = self.W, None
        self.scalar_space = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.state = dolfinx.fem.Function(self.W, name="state")
        self.u_out = dolfinx.fem.Function(self.V, name="displacement_mm")
        self.active_tension_kpa = dolfinx.fem.Function(self.scalar_space, name="active_tension_kPa")
        self.pressures_kpa = {
            name: dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0)) for name in boundaries.cavities
        }
        if callable(fibres):  # fibres on the quadrature points of the forms
            fibres = fibres(cfg.quadrature())
        f0, s0, n0 = (v / ufl.sqrt(ufl.inner(v, v)) for v in fibres)
        self.f0, self.s0, self.n0 = f0, s0, n0

        if mixed:
            u, p_h = ufl.split(self.state)
        else:
            u, p_h = self.state, None
        self.u = u
        test = ufl.TestFunction(self.W)
        v = ufl.split(test)[0] if mixed else test
        F = ufl.variable(ufl.Identity(gdim) + ufl.grad(u))
        J = ufl.det(F)
        self.F, self.J = F, J
        dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": cfg.quadrature()})
        ds = ufl.Measure("ds", domain=mesh, subdomain_data=facet_tags,
                         metadata={"quadrature_degree": max(2, cfg.quadrature())})
        self.ds = ds
        if cfg.formulation == "mixed":
            psi = material.strain_energy(F, f0, s0, n0, isochoric=False) - p_h * (J - 1)
            residual = ufl.derivative(psi * dx, self.state, test)
        elif cfg.formulation == "nodal_pressure":
            # Pi = int W_iso + p (J - 1) dx - sum_a p_a^2 V_a / (2 kappa): the p^2 term by vertex
            # quadrature (lumped), so p_a = kappa (int J phi_a dx / V_a - 1) at every node
            dx_vertex = ufl.Measure("dx", domain=mesh, metadata={"quadrature_rule": "vertex",
                                                                 "quadrature_degree": 1})
            dx_exact = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": max(2, cfg.quadrature())})
            psi = material.strain_energy(F, f0, s0, n0, isochoric=True) * dx + p_h * (J - 1) * dx_exact
            residual = (ufl.derivative(psi, self.state, test)
                        - ufl.derivative(p_h**2 / (2.0 * cfg.bulk_modulus) * dx_vertex, self.state, test))
            if cfg.pressure_stabilisation > 0:
                # Brezzi-Pitkaranta: - alpha h^2 / (2 mu) |grad p|^2 relaxes the one-constraint-per-node
                # P1/P1 pair (not inf-sup stable) that still locks on walls one or two cells thick
                mu = cfg.stabilisation_modulus or _shear_modulus(material)
                if cfg.stabilisation_active_tension:
                    mu = mu + self.active_tension_kpa
                beta = cfg.pressure_stabilisation / (2.0 * mu) * _cell_size(mesh) ** 2
                residual -= ufl.derivative(beta * ufl.inner(ufl.grad(p_h), ufl.grad(p_h)) * dx, self.state, test)
        else:
            psi = material.strain_energy(F, f0, s0, n0, isochoric=True) + 0.5 * cfg.bulk_modulus * (J - 1) ** 2
            residual = ufl.derivative(psi * dx, self.state, test)
        eta = cfg.cross_fibre_fraction
        S_a = self.active_tension_kpa * (ufl.outer(f0, f0) + eta * (ufl.outer(s0, s0) + ufl.outer(n0, n0)))
        residual += ufl.inner(F * S_a, ufl.grad(v)) * dx
        N = ufl.FacetNormal(mesh)
        cofactor_N = J * ufl.inv(F).T * N
        for name, tag in boundaries.cavities.items():
            residual += self.pressures_kpa[name] * ufl.inner(cofactor_N, v) * ds(tag)
        k_base = dolfinx.fem.Constant(mesh, PETSc.ScalarType(cfg.base_spring_kpa_per_mm))
        k_epi = dolfinx.fem.Constant(mesh, PETSc.ScalarType(cfg.epi_spring_kpa_per_mm))
        for tag in boundaries.base_springs:
            residual += k_base * ufl.inner(u, v) * ds(tag)
        for tag in boundaries.epi_springs:
            residual += k_epi * ufl.inner(u, N) * ufl.inner(v, N) * ds(tag)
        self.residual = residual
        self._pressure_load_forms = {name: ufl.inner(cofactor_N, v) * ds(tag)
                                     for name, tag in boundaries.cavities.items()}
        self._test = test

        fdim = mesh.topology.dim - 1
        mesh.topology.create_connectivity(fdim, mesh.topology.dim)
        bcs = []
        for tag in boundaries.fixed:
            facets = facet_tags.find(tag)
            if mixed:
                dofs = dolfinx.fem.locate_dofs_topological((self.W.sub(0), self.V), fdim, facets)
                zero = dolfinx.fem.Function(self.V)
                bcs.append(dolfinx.fem.dirichletbc(zero, dofs, self.W.sub(0)))
            else:
                dofs = dolfinx.fem.locate_dofs_topological(self.W, fdim, facets)
                bcs.append(dolfinx.fem.dirichletbc(np.zeros(gdim, dtype=PETSc.ScalarType), dofs, self.W))
        self.bcs = bcs
        self.prefix = prefix
        self.newton = NewtonSolver(residual, self.state, bcs=bcs, prefix=prefix, rtol=cfg.snes_rtol,
                                   atol=cfg.snes_atol, max_it=cfg.snes_max_it, reuse_jacobian=cfg.jacobian_reuse,
                                   contraction=cfg.jacobian_contraction)
        self._volume_forms: dict[str, dolfinx.fem.Form] = {}
        self._volume_ufl: dict[str, ufl.Form] = {}
        self._base_centroid_forms = None
        log.debug("mechanics problem %s: %d dofs", prefix, self.W.dofmap.index_map.size_global * self.W.dofmap.index_map_bs)

    # -- state -------------------------------------------------------------------------------
    @property
    def n_dofs(self) -> int:
        im = self.W.dofmap.index_map
        return int(im.size_global * self.W.dofmap.index_map_bs)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copy of the state and loads (restore with ``restore``)."""
        snap = {"state": self.state.x.array.copy(), "Ta": self.active_tension_kpa.x.array.copy()}
        for name, c in self.pressures_kpa.items():
            snap[f"p_{name}"] = np.array(float(c.value))
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        self.state.x.array[:] = snap["state"]
        self.active_tension_kpa.x.array[:] = snap["Ta"]
        for name, c in self.pressures_kpa.items():
            c.value = float(snap[f"p_{name}"])
        self.state.x.scatter_forward()

    def displacement(self) -> dolfinx.fem.Function:
        """The displacement (mm) as a Function on ``self.V`` (a copy for mixed problems)."""
        if self._v_map is None:
            return self.state
        self.u_out.x.array[:] = self.state.x.array[self._v_map]
        self.u_out.x.scatter_forward()
        return self.u_out

    # -- solving -----------------------------------------------------------------------------
    def _newton(self) -> int:
        t0 = time.perf_counter()
        res = self.newton.solve()
        its = res.iterations
        self.monitor.iterations.append(int(its))
        self.monitor.jacobians.append(res.jacobians)
        self.monitor.seconds.append(time.perf_counter() - t0)
        return int(its)

    def solve_to(
        self,
        *,
        pressures_kpa: Mapping[str, float] | None = None,
        active_tension_kpa: np.ndarray | float | None = None,
        label: str = "",
        initial_fraction: float = 1.0,
        on_failure: Callable[["CardiacMechanics"], None] | None = None,
    ) -> int:
        """Move loads from their current values to the targets, halving steps when Newton fails.

        Returns the Newton iterations spent. Raises StageError naming ``label`` and the load
        reached when the step falls below ``cfg.min_load_fraction``; the state is then the last
        converged one and ``on_failure(self)`` is called (to save it) before raising.
        """
        p_start = {n: float(c.value) for n, c in self.pressures_kpa.items()}
        p_end = {**p_start, **(dict(pressures_kpa) if pressures_kpa else {})}
        unknown = set(p_end) - set(p_start)
        if unknown:
            raise ValueError(f"unknown cavities {sorted(unknown)}; have {sorted(p_start)}")
        ta_start = self.active_tension_kpa.x.array.copy()
        ta_end = ta_start if active_tension_kpa is None else np.broadcast_to(
            np.asarray(active_tension_kpa, dtype=float), ta_start.shape).copy()
        done, step, total_its = 0.0, min(1.0, initial_fraction), 0
        last = self.snapshot()
        while done < 1.0 - 1e-12:
            trial = min(1.0, done + step)
            for n, c in self.pressures_kpa.items():
                c.value = p_start[n] + trial * (p_end[n] - p_start[n])
            self.active_tension_kpa.x.array[:] = ta_start + trial * (ta_end - ta_start)
            try:
                total_its += self._newton()
            except NewtonDiverged as exc:
                self.monitor.failures += 1
                self.restore(last)
                step *= 0.5
                log.debug("%s: Newton failed at load fraction %.4f (%s), halving step to %.4g", label, trial, exc, step)
                if step < self.cfg.min_load_fraction:
                    if on_failure is not None:
                        on_failure(self)
                    loads = ", ".join(f"p_{n} {p_start[n] + done * (p_end[n] - p_start[n]):.4g} kPa" for n in p_end)
                    from_rest = done == 0.0 and not any(p_start.values()) and not np.any(ta_start)
                    hint = ("" if not from_rest else
                            " (not even a small first load step converges: the mesh probably holds a near-mechanism, "
                            "a thin flap of wall on a narrow neck or degenerate tets; look at the mesh and its "
                            "quality.json, remesh coarser or clean the label map)")
                    raise StageError(
                        f"mechanics Newton solve diverged at {label or 'load step'}: reached load fraction "
                        f"{done:.4f} of the step ({loads}; max active tension "
                        f"{float(np.max(ta_start + done * (ta_end - ta_start), initial=0.0)):.4g} kPa), "
                        f"could not advance by {step * 2:.2g}; last converged state kept{hint}"
                    ) from None
                continue
            done = trial
            last = self.snapshot()
            if step < 1.0:
                step = min(1.0, step * 2.0)
        return total_its

    def solve_coupled(
        self,
        *,
        active_tension_kpa: np.ndarray | float,
        volumes_0d: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        volume_tol_ml: float,
        max_substeps: int = 8,
    ) -> int:
        """Set the active tension and solve for the state AND the cavity pressures together.

        The pressures (``pressures_kpa``, in ``boundaries.cavities`` order) are unknowns fixed
        by ``V3D(u) = V0D(p)``; ``volumes_0d(p)`` returns the 0D volumes (mL) implied by cavity
        pressures p (kPa) and their derivative dV0D/dp (n x n, mL/kPa). One Newton loop for
        (u, p), warm-started from the current state and pressures. Raises NewtonDiverged (the
        caller restores a snapshot and falls back to load stepping) when even ``max_substeps``
        tension substeps fail. Returns the Newton iterations spent.
        """
        names = list(self.boundaries.cavities)
        ta_start = self.active_tension_kpa.x.array.copy()
        ta_end = np.broadcast_to(np.asarray(active_tension_kpa, dtype=float), ta_start.shape).copy()
        self.cavity_volume_ml(names[0])  # builds the volume forms and the base centroid constant
        for name in names:
            if name not in self._volume_forms:
                self.cavity_volume_ml(name)
        if not hasattr(self, "_volume_derivatives"):
            self._volume_derivatives = [1.0e-3 * ufl.derivative(self._volume_ufl[n], self.state, self._test)
                                        for n in names]
        start = self.snapshot()
        substeps, total = 1, 0
        while True:
            t0 = time.perf_counter()
            try:
                # continuation in the active tension; the volume equations are those of the
                # end of the step in every substep, so the last substep is the exact problem
                for k in range(1, substeps + 1):
                    self.active_tension_kpa.x.array[:] = ta_start + k / substeps * (ta_end - ta_start)
                    res = self.newton.solve_bordered(
                        pressures=[self.pressures_kpa[n] for n in names],
                        pressure_load_forms=[self._pressure_load_forms[n] for n in names],
                        volume_derivative_forms=self._volume_derivatives,
                        volumes_3d=lambda: np.array([self.cavity_volume_ml(n) for n in names]),
                        volumes_0d=volumes_0d,
                        volume_tol=volume_tol_ml,
                    )
                    total += res.iterations
                    self.monitor.iterations.append(res.iterations)
                    self.monitor.jacobians.append(res.jacobians)
                    self.monitor.seconds.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                return total
            except NewtonDiverged:
                self.monitor.failures += 1
                self.restore(start)
                substeps *= 2
                if substeps > max_substeps:
                    raise
                log.debug("coupled Newton failed; retrying with %d tension substeps", substeps)

    # -- outputs -----------------------------------------------------------------------------
    def _scalar(self, form: dolfinx.fem.Form) -> float:
        return float(self.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM))

    def cavity_volume_ml(self, name: str) -> float:
        """Volume (mL) enclosed by the deformed endocardium ``name`` and the plane of the base.

        V = -1/3 int_endo (x - x_c) . n da over the deformed surface (n out of the wall, into
        the cavity), with x_c the deformed centroid of the base facets: exact for a planar base.
        """
        tag = self.boundaries.cavities[name]
        x = ufl.SpatialCoordinate(self.mesh) + self.u
        if self._base_centroid_forms is None:
            if self.boundaries.base is None:
                raise ValueError("cavity volumes need Boundaries.base")
            ds_b = self.ds(self.boundaries.base)
            self._base_area = dolfinx.fem.form(1.0 * ds_b, jit_options=JIT_OPTIONS)
            self._base_centroid_forms = [dolfinx.fem.form(x[i] * ds_b, jit_options=JIT_OPTIONS) for i in range(3)]
            self._xc = dolfinx.fem.Constant(self.mesh, np.zeros(3, dtype=PETSc.ScalarType))
        area = self._scalar(self._base_area)
        self._xc.value[:] = [self._scalar(f) / area for f in self._base_centroid_forms]
        if name not in self._volume_forms:
            N = ufl.FacetNormal(self.mesh)
            n_da = self.J * ufl.inv(self.F).T * N
            self._volume_ufl[name] = -1.0 / 3.0 * ufl.inner(x - self._xc, n_da) * self.ds(tag)
            self._volume_forms[name] = dolfinx.fem.form(self._volume_ufl[name], jit_options=JIT_OPTIONS)
        return self._scalar(self._volume_forms[name]) / 1000.0

    def fibre_stretch(self) -> ufl.core.expr.Expr:
        """UFL expression of the fibre stretch |F f0| (dimensionless)."""
        return ufl.sqrt(ufl.inner(self.F * self.f0, self.F * self.f0))

    def point_values(self, points_mm: np.ndarray) -> np.ndarray:
        """Displacement (mm) at reference points (P, 3), identical on every rank."""
        u = self.displacement()
        pts = np.asarray(points_mm, dtype=float).reshape(-1, 3)
        tree = dolfinx.geometry.bb_tree(self.mesh, self.mesh.topology.dim)
        cand = dolfinx.geometry.compute_collisions_points(tree, pts)
        coll = dolfinx.geometry.compute_colliding_cells(self.mesh, cand, pts)
        vals = np.zeros((len(pts), 3))
        found = np.zeros(len(pts))
        for i in range(len(pts)):
            cells = coll.links(i)
            if len(cells) > 0:
                vals[i] = u.eval(pts[i], cells[:1])
                found[i] = 1.0
        vals = self.comm.allreduce(vals * found[:, None], op=MPI.SUM)
        count = self.comm.allreduce(found, op=MPI.SUM)
        if np.any(count == 0):
            raise ValueError(f"points {pts[count == 0]} lie outside the mesh")
        return vals / count[:, None]
