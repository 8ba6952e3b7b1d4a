"""Land et al. 2015 cardiac mechanics benchmark (Proc R Soc A 471:20150641), Problems 1-3.

- Problem 1: beam [0,10]x[0,1]x[0,1] mm, x = 0 clamped, follower pressure 0.004 kPa on z = 0,
  fibres along x, Guccione C = 2 kPa, b_f 8, b_t 2, b_fs 4. Output: deformed point (10, 0.5, 1).
- Problem 2: truncated ellipsoid (``meshing.analytic.land_ellipsoid``), base z = 5 fixed,
  isotropic Guccione C = 10 kPa, b = 1, endocardial pressure 10 kPa. Output: apex z.
- Problem 3: as 2 with the analytic fibre field (helix angle +90 deg endo to -90 deg epi),
  C = 2 kPa, b_f 8, b_t 2, b_fs 4, pressure 15 kPa and active tension 60 kPa along f0.

All are solved incompressible (Taylor-Hood P2/P1). Lengths in mm, pressures in kPa.

Problem 3 and the fibre field: the analytic fibres are singular on the long axis (e_u and e_v
are undefined at x = y = 0), exactly where the outputs are read. The fibres are therefore
evaluated at the quadrature points (never on the axis). Quadrature degree 6 instead of 4 moves
the 2.5 mm result by 0.05 mm; nodal P1 or P2 fibres instead of quadrature fibres move it by 0.1
and 2.0 mm (the apex node's arbitrary fibre then spreads over its elements).

Geometry. Straight-sided tetrahedra facet the convex endo/epi surfaces: at 4 / 2.5 mm the
cavity is 5.4 / 2.6 % and the wall 1.0 / 0.4 % too small. ``geometry_degree=2`` (the default
for Problems 2-3) gives the tetrahedra a quadratic coordinate map with the endo/epi edge
mid-nodes on the analytic ellipsoids (cavity 0.04 / 0.01 %, wall 0.01 / 0.002 %); same dofs,
about the same cost. ``prolate_grid=(n_wall, n_long, n_circ)`` replaces the gmsh mesh (about one
element across the 3 mm wall at 2-2.5 mm) by a structured grid in the benchmark's prolate
coordinates, every mid-node on the parametric map.

Measured convergence of Problems 2-3 against the published values: docs/mechanics.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import basix
import basix.ufl
import dolfinx
import dolfinx.graph
import dolfinx.io
import ufl

from cardiotwin.anatomy import FacetTag
from cardiotwin.errors import StageError
from cardiotwin.mechanics.materials import Guccione
from cardiotwin.mechanics.problem import Boundaries, CardiacMechanics, MechanicsConfig

log = logging.getLogger(__name__)

# Land et al. 2015, section 3: ellipsoid radii (mm) and base plane.
ENDO_RS, ENDO_RL, EPI_RS, EPI_RL, BASE_Z = 7.0, 17.0, 10.0, 20.0, 5.0

# Published results (Land et al. 2015, figures 4, 6, 8; BENCHMARKS.md): deformed z in mm.
REFERENCE = {
    1: {"beam_point_z_mm": (4.10, 4.25)},
    2: {"endo_apex_z_mm": (-26.9, -26.1), "epi_apex_z_mm": (-28.6, -27.8)},
    3: {"endo_apex_z_mm": (-12.5, -12.0), "epi_apex_z_mm": (-15.5, -15.2)},
}

# The twins' default element (``MechanicsConfig``'s nodal-pressure P1/P1 with its pressure
# stabilisation) on the benchmark: nearly incompressible with kappa 1e4 kPa (5000 / 2000 small-strain
# shear moduli in Problems 1, 3 / 2), since the benchmark is incompressible.
DEFAULT_ELEMENT = {"formulation": "nodal_pressure", "bulk_modulus": 1e4}
# and the mesh it is reported on (``verify land``, the land_N checks): elements across the beam
# (Problem 1), gmsh mesh size in mm (Problem 2), structured prolate grid (n_wall, n_long, n_circ)
# (Problem 3: the apex needs elements across the wall; no gmsh mesh up to 0.9 mm brings the
# endocardial apex into range); the coarsest meshes inside the published ranges, measured
# convergence: docs/mechanics.md
DEFAULT_ELEMENT_RESOLUTION = {1: 2.0, 2: 1.5, 3: 1.0}
DEFAULT_ELEMENT_GRID = {3: (8, 32, 48)}


@dataclass(frozen=True)
class LandResult:
    """Outputs of one Land problem: deformed z (mm) of the reported points and solver figures."""

    problem: int
    resolution: float
    outputs_mm: dict[str, float]
    n_dofs: int
    newton_iterations: int
    seconds: float
    mesh: str = ""  # "beam <nx>x<ny>x<nz>", "gmsh h=<mm>" or "prolate <n_wall>x<n_long>x<n_circ>"
    geometry_degree: int = 1

    formulation: str = "mixed"
    bulk_modulus: float | None = None  # None: incompressible
    stabilisation_active_tension: bool = True

    def in_range(self) -> dict[str, bool]:
        """Each output inside the published range (``REFERENCE``)?"""
        return {key: lo <= self.outputs_mm[key] <= hi for key, (lo, hi) in REFERENCE[self.problem].items()}

    def element(self) -> str:
        """The element in words: "Taylor-Hood P2/P1 (incompressible)" or "nodal-pressure P1/P1 (kappa 10000 kPa)"."""
        if self.formulation == "mixed":
            return "Taylor-Hood P2/P1 (incompressible)"
        name = "nodal-pressure P1/P1" if self.formulation == "nodal_pressure" else f"{self.formulation} P1"
        extra = "" if self.stabilisation_active_tension else ", stabilisation by the passive modulus only"
        return f"{name} (kappa {self.bulk_modulus:g} kPa{extra})"

    def to_dict(self) -> dict[str, object]:
        return {"problem": self.problem, "resolution": self.resolution, **self.outputs_mm,
                "n_dofs": self.n_dofs, "newton_iterations": self.newton_iterations, "seconds": round(self.seconds, 3),
                "mesh": self.mesh, "geometry_degree": self.geometry_degree, "element": self.element(),
                "formulation": self.formulation, "bulk_modulus_kpa": self.bulk_modulus,
                "stabilisation_active_tension": self.stabilisation_active_tension, "in_range": self.in_range()}


def land_fibres(x: np.ndarray, *, alpha_endo_deg: float = 90.0, alpha_epi_deg: float = -90.0) -> np.ndarray:
    """Analytic Problem 3 fibre field at points x (3, P) -> (3, P) unit vectors.

    Prolate coordinates of Land 2015 eq. (3.1): x = r_s(t) sin u cos v, y = r_s(t) sin u sin v,
    z = r_l(t) cos u, r_s = 7 + 3t, r_l = 17 + 3t, t in [0, 1] endo -> epi; fibre angle
    alpha = alpha_endo + t (alpha_epi - alpha_endo); f = sin(alpha) e_u + cos(alpha) e_v with
    e_u, e_v the normalised derivatives dx/du, dx/dv.
    """
    px, py, pz = np.asarray(x[0]), np.asarray(x[1]), np.asarray(x[2])
    rho2 = px**2 + py**2
    lo, hi = np.full(px.shape, -0.5), np.full(px.shape, 1.5)
    for _ in range(60):  # bisection: level(t) decreases with t
        mid = 0.5 * (lo + hi)
        level = rho2 / (ENDO_RS + (EPI_RS - ENDO_RS) * mid) ** 2 + pz**2 / (ENDO_RL + (EPI_RL - ENDO_RL) * mid) ** 2
        outside = level > 1.0
        lo = np.where(outside, mid, lo)
        hi = np.where(outside, hi, mid)
    t = np.clip(0.5 * (lo + hi), 0.0, 1.0)
    rs, rl = ENDO_RS + (EPI_RS - ENDO_RS) * t, ENDO_RL + (EPI_RL - ENDO_RL) * t
    u = -np.arccos(np.clip(pz / rl, -1.0, 1.0))
    v = np.arctan2(-py, -px)
    du = np.stack([rs * np.cos(u) * np.cos(v), rs * np.cos(u) * np.sin(v), -rl * np.sin(u)])
    dv = np.stack([-rs * np.sin(u) * np.sin(v), rs * np.sin(u) * np.cos(v), np.zeros_like(u)])
    du /= np.maximum(np.linalg.norm(du, axis=0), 1e-12)
    nv = np.linalg.norm(dv, axis=0)
    dv = np.where(nv > 1e-9, dv / np.maximum(nv, 1e-12), np.array([[0.0], [1.0], [0.0]]))
    alpha = np.deg2rad(alpha_endo_deg + t * (alpha_epi_deg - alpha_endo_deg))
    f = np.sin(alpha) * du + np.cos(alpha) * dv
    return f / np.maximum(np.linalg.norm(f, axis=0), 1e-12)


def orthonormal_frame(f_fn: dolfinx.fem.Function) -> tuple[ufl.core.expr.Expr, ...]:
    """(f0, s0, n0) with s0, n0 any unit vectors orthogonal to f0 (enough for transverse isotropy)."""
    f = f_fn / ufl.sqrt(ufl.inner(f_fn, f_fn))
    a = ufl.conditional(ufl.lt(abs(f[2]), 0.9), ufl.as_vector((0.0, 0.0, 1.0)), ufl.as_vector((1.0, 0.0, 0.0)))
    s = a - ufl.inner(a, f) * f
    s = s / ufl.sqrt(ufl.inner(s, s))
    return f, s, ufl.cross(f, s)


def _beam_mesh(n: int, comm: MPI.Comm) -> tuple[dolfinx.mesh.Mesh, dolfinx.mesh.MeshTags]:
    mesh = dolfinx.mesh.create_box(comm, [[0.0, 0.0, 0.0], [10.0, 1.0, 1.0]], [10 * n, n, n],
                                   dolfinx.mesh.CellType.tetrahedron)
    fdim = 2
    clamp = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[0], 0.0))
    bottom = dolfinx.mesh.locate_entities_boundary(mesh, fdim, lambda x: np.isclose(x[2], 0.0))
    idx = np.concatenate([clamp, bottom])
    val = np.concatenate([np.full(len(clamp), 1), np.full(len(bottom), 2)]).astype(np.int32)
    idx, first = np.unique(idx, return_index=True)
    return mesh, dolfinx.mesh.meshtags(mesh, fdim, idx.astype(np.int32), val[first])


def land_ellipsoid_mesh(*, char_length_mm: float, geometry_degree: int = 1,
                        prolate_grid: tuple[int, int, int] | None = None,
                        comm: MPI.Comm = MPI.COMM_WORLD) -> tuple[dolfinx.mesh.Mesh, dolfinx.mesh.MeshTags]:
    """The Land truncated ellipsoid as a distributed dolfinx mesh with its facet tags.

    geometry_degree 1: straight-sided tetrahedra (``meshing.analytic.land_ellipsoid``);
    2: the same tetrahedra with a quadratic coordinate element whose endo/epi edge mid-nodes
    lie on the analytic ellipsoids (``land_ellipsoid_quadratic``). prolate_grid (n_wall, n_long,
    n_circ): the structured ``land_ellipsoid_prolate`` mesh instead of gmsh at ``char_length_mm``.
    Facet tags BASE, LV_ENDO, EPI. Raises StageError if the quadratic map inverts a cell.
    """
    from cardiotwin.meshing.analytic import land_ellipsoid, land_ellipsoid_prolate, land_ellipsoid_quadratic
    from cardiotwin.meshing.fem import to_dolfinx

    if geometry_degree not in (1, 2):
        raise ValueError(f"geometry_degree must be 1 or 2, got {geometry_degree}")
    if comm.rank != 0:
        linear = None
    elif prolate_grid is not None:
        linear = land_ellipsoid_prolate(n_wall=prolate_grid[0], n_long=prolate_grid[1], n_circ=prolate_grid[2])
    else:
        linear = land_ellipsoid(char_length_mm=char_length_mm)
    if geometry_degree == 1:
        heart = to_dolfinx(linear, comm)
        return heart.mesh, heart.facet_tags
    if comm.rank == 0:
        x, cells, facets = land_ellipsoid_quadratic(linear)
        tags = np.asarray(linear.facet_tags, dtype=np.int32)
    else:
        x, cells = np.empty((0, 3)), np.empty((0, 10), dtype=np.int64)
        facets, tags = np.empty((0, 6), dtype=np.int64), np.empty(0, dtype=np.int32)
    element = basix.ufl.element("Lagrange", "tetrahedron", 2, shape=(3,), dtype=np.float64)
    partitioner = dolfinx.mesh.create_cell_partitioner(dolfinx.mesh.GhostMode.none, 2)
    mesh = dolfinx.mesh.create_mesh(comm, cells, ufl.Mesh(element), x, partitioner=partitioner)
    fdim = mesh.topology.dim - 1
    mesh.topology.create_connectivity(fdim, mesh.topology.dim)
    local, values = dolfinx.io.distribute_entity_data(mesh, fdim, facets, tags)
    ft = dolfinx.mesh.meshtags_from_entities(mesh, fdim, dolfinx.graph.adjacencylist(local),
                                             values.astype(np.int32, copy=False))
    ft.name = "facet_tags"
    ratio = min_jacobian_ratio(mesh)
    if ratio <= 0.0:
        raise StageError(f"Land ellipsoid at {char_length_mm:g} mm / grid {prolate_grid}: the quadratic geometry "
                         f"inverts an element (min det J / max det J {ratio:.3g}); refine the mesh")
    return mesh, ft


def min_jacobian_ratio(mesh: dolfinx.mesh.Mesh, *, degree: int = 4) -> float:
    """Smallest det(dx/dX) over the quadrature points (degree ``degree``) of each cell divided by that
    cell's largest, minimised over all cells (1 for affine cells, <= 0 for an inverted curved cell)."""
    points, _ = basix.make_quadrature(mesh.basix_cell(), degree)
    expr = dolfinx.fem.Expression(ufl.JacobianDeterminant(mesh), points)
    n_cells = mesh.topology.index_map(mesh.topology.dim).size_local
    det = expr.eval(mesh, np.arange(n_cells, dtype=np.int32)).reshape(n_cells, -1)
    orient = np.sign(det[:, :1])  # straight cells may be given in either orientation
    local = float(np.min(det * orient / np.max(np.abs(det), axis=1, keepdims=True))) if n_cells else 1.0
    return float(mesh.comm.allreduce(local, op=MPI.MIN))


def solve_land(problem: int, *, resolution: float | None = None, comm: MPI.Comm = MPI.COMM_WORLD,
               load_steps: int | None = None, quadrature_degree: int = 4,
               fibre_degree: int | None = None, geometry_degree: int = 2,
               prolate_grid: tuple[int, int, int] | None = None, formulation: str = "mixed",
               bulk_modulus: float = 500.0, stabilisation_active_tension: bool = True) -> LandResult:
    """Solve Land Problem 1, 2 or 3 and return the benchmark outputs.

    resolution: elements across the beam thickness for Problem 1 (default 2; 10x as many along
    x), or the mesh characteristic length in mm for Problems 2 and 3 (default 2.5).
    quadrature_degree: of the forms; fibre_degree: None for fibres at the quadrature points
    (default), or 1/2 for nodal Lagrange fibres (Problems 2-3); geometry_degree: 1 for
    straight-sided tetrahedra, 2 (default) for curved (quadratic) endo/epi surfaces
    (Problems 2-3); prolate_grid: (n_wall, n_long, n_circ) for the structured prolate mesh
    (``land_ellipsoid_prolate``) instead of the gmsh mesh of size ``resolution`` (Problems 2-3).
    formulation: "mixed" (incompressible Taylor-Hood, the benchmark's problem) or a nearly
    incompressible ``MechanicsConfig.formulation`` ("nodal_pressure", "penalty") with ``bulk_modulus``
    (and ``MechanicsConfig.stabilisation_active_tension`` for "nodal_pressure"; False: the pressure
    stabilisation sized by the passive modulus alone).
    """
    if prolate_grid is not None and (len(prolate_grid) != 3 or min(prolate_grid) < 1):
        raise ValueError(f"prolate_grid must be three positive integers, got {prolate_grid}")
    t0 = time.perf_counter()
    cfg = MechanicsConfig(formulation=formulation, quadrature_degree=quadrature_degree, bulk_modulus=bulk_modulus,
                          stabilisation_active_tension=stabilisation_active_tension,
                          snes_rtol=1e-9)  # converged far below the benchmark's 0.01 mm spread
    if problem == 1:
        n = int(resolution or 2)
        mesh, ft = _beam_mesh(n, comm)
        e = tuple(ufl.as_vector(v) for v in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
        mech = CardiacMechanics(mesh, ft, material=Guccione(C=2.0, bf=8.0, bt=2.0, bfs=4.0), fibres=e,
                                boundaries=Boundaries(fixed=(1,), cavities={"beam": 2}), cfg=cfg, prefix="land1_")
        its = mech.solve_to(pressures_kpa={"beam": 0.004}, label="Land problem 1",
                            initial_fraction=1.0 / (load_steps or 1))
        z = mech.point_values(np.array([10.0, 0.5, 1.0]))[0, 2] + 1.0
        outputs = {"beam_point_z_mm": float(z)}
        res, mesh_name, degree = float(n), f"beam {10 * n}x{n}x{n}", 1
    elif problem in (2, 3):
        h = float(resolution or 2.5)
        mesh, facet_tags = land_ellipsoid_mesh(char_length_mm=h, geometry_degree=geometry_degree,
                                                prolate_grid=prolate_grid, comm=comm)
        # fibres at the quadrature points: exact analytic field where the forms are evaluated
        if fibre_degree is None:
            qe = basix.ufl.quadrature_element(mesh.basix_cell(), value_shape=(3,), degree=cfg.quadrature())
            Vf = dolfinx.fem.functionspace(mesh, qe)
        else:  # nodal Lagrange fibres, as most codes of the benchmark used
            Vf = dolfinx.fem.functionspace(mesh, ("Lagrange", fibre_degree, (3,)))
        f_fn = dolfinx.fem.Function(Vf, name="f0")
        if problem == 3:
            f_fn.interpolate(land_fibres)
            material = Guccione(C=2.0, bf=8.0, bt=2.0, bfs=4.0)
        else:
            f_fn.interpolate(lambda x: np.vstack([np.ones_like(x[0]), np.zeros_like(x[0]), np.zeros_like(x[0])]))
            material = Guccione(C=10.0, bf=1.0, bt=1.0, bfs=1.0)
        mech = CardiacMechanics(
            mesh, facet_tags, material=material, fibres=orthonormal_frame(f_fn),
            boundaries=Boundaries(fixed=(int(FacetTag.BASE),), cavities={"LV": int(FacetTag.LV_ENDO)},
                                  base=int(FacetTag.BASE)),
            cfg=cfg, prefix=f"land{problem}_",
        )
        steps = load_steps or (10 if problem == 2 else 20)
        if problem == 2:
            its = mech.solve_to(pressures_kpa={"LV": 10.0}, label="Land problem 2", initial_fraction=1.0 / steps)
        else:
            its = mech.solve_to(pressures_kpa={"LV": 15.0}, active_tension_kpa=60.0, label="Land problem 3",
                                initial_fraction=1.0 / steps)
        u = mech.point_values(np.array([[0.0, 0.0, -ENDO_RL], [0.0, 0.0, -EPI_RL]]))
        outputs = {"endo_apex_z_mm": float(u[0, 2] - ENDO_RL), "epi_apex_z_mm": float(u[1, 2] - EPI_RL)}
        res, degree = h, geometry_degree
        mesh_name = f"prolate {'x'.join(map(str, prolate_grid))}" if prolate_grid else f"gmsh h={h:g}"
    else:
        raise ValueError(f"Land problem must be 1, 2 or 3, got {problem}")
    result = LandResult(problem=problem, resolution=res, outputs_mm=outputs, n_dofs=mech.n_dofs,
                        newton_iterations=its, seconds=time.perf_counter() - t0, mesh=mesh_name,
                        geometry_degree=degree, formulation=formulation,
                        bulk_modulus=None if formulation == "mixed" else bulk_modulus,
                        stabilisation_active_tension=stabilisation_active_tension)
    log.info("Land problem %d on %s (geometry degree %d): %s (%d dofs, %d Newton its, %.1f s)", problem,
             mesh_name, degree, outputs,
             mech.n_dofs, its, result.seconds)
    return result


def solve_land_default_element(problem: int, *, resolution: float | None = None,
                               comm: MPI.Comm = MPI.COMM_WORLD, **kwargs: object) -> LandResult:
    """``solve_land`` with the twins' default element (``DEFAULT_ELEMENT``) at ``resolution`` or on a
    ``prolate_grid`` keyword; neither given: on ``DEFAULT_ELEMENT_GRID[problem]`` where there is one,
    else at ``DEFAULT_ELEMENT_RESOLUTION[problem]``."""
    if problem not in DEFAULT_ELEMENT_RESOLUTION:
        raise ValueError(f"Land problem must be 1, 2 or 3, got {problem}")
    grid = kwargs.pop("prolate_grid", None)
    if grid is None and resolution is None:
        grid = DEFAULT_ELEMENT_GRID.get(problem)
    return solve_land(problem, resolution=resolution or DEFAULT_ELEMENT_RESOLUTION[problem], comm=comm,
                      prolate_grid=grid, **DEFAULT_ELEMENT, **kwargs)


def parse_prolate_grid(text: str | None, *, problem: int, resolution: float | None,
                       flag: str = "--grid", resolution_flag: str = "--resolution") -> tuple[int, int, int] | None:
    """"NWALLxNLONGxNCIRC" -> (n_wall, n_long, n_circ) of a structured prolate mesh, or None for None.
    Raises ConfigError (naming ``flag``) for problem 1, together with a resolution, or a malformed text."""
    from cardiotwin.errors import ConfigError

    if text is None:
        return None
    if problem == 1 or resolution is not None:
        raise ConfigError(f"{flag} applies to problems 2-3 and replaces {resolution_flag}")
    try:
        grid = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        grid = ()
    if len(grid) != 3 or min(grid) < 1 or grid[2] < 3:
        raise ConfigError(f"{flag} must read NWALLxNLONGxNCIRC with positive integers (NCIRC >= 3), got {text!r}")
    return grid  # type: ignore[return-value]


def land_benchmark(problem: int, *, element: str = "both", resolution: float | None = None,
                   prolate_grid: tuple[int, int, int] | None = None, geometry_degree: int = 2,
                   default_resolution: float | None = None, default_grid: tuple[int, int, int] | None = None,
                   stabilisation_active_tension: bool = True, comm: MPI.Comm = MPI.COMM_WORLD) -> dict[str, object]:
    """One Land problem as `verify land` reports it: the Taylor-Hood P2/P1 outputs (top level, ``element``
    "both" or "taylor-hood") and the twins' default element (``default_element``; "both" or "default"),
    with the published ranges and the reference."""
    data: dict[str, object] = {"problem": problem}
    if element in ("both", "taylor-hood"):
        data.update(solve_land(problem, resolution=resolution, geometry_degree=geometry_degree,
                               prolate_grid=prolate_grid, comm=comm).to_dict())
    if element in ("both", "default"):
        data["default_element"] = solve_land_default_element(
            problem, resolution=default_resolution, prolate_grid=default_grid, geometry_degree=geometry_degree,
            stabilisation_active_tension=stabilisation_active_tension, comm=comm).to_dict()
    data.update({"reference_range_mm": {k: list(v) for k, v in REFERENCE[problem].items()},
                 "reference": "Land et al. 2015, Proc R Soc A 471:20150641", "mpi_ranks": comm.size})
    return data
