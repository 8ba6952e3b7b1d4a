"""Built-in code-verification checks (``BUILTIN_CHECKS``, run by ``verification.registry``).

- ``mms_diffusion``: manufactured solution of anisotropic diffusion, -div(D grad u) = f, with the
  P1 finite-element operator of the EP stage (dolfinx); observed orders must reach the
  theoretical L2 order 2 and H1 order 1 of P1 elements (Ciarlet, The Finite Element Method for
  Elliptic Problems, 1978, thm 3.2.2; Roache, J Fluids Eng 124:4, 2002 for MMS).
- ``circulation_rc``: the 0D circulation integrator on an RC discharge with the analytic solution
  V(t) = V0 + (V(0) - V0) exp(-t / RC); backward Euler is first order (Hairer & Wanner, Solving
  ODEs II, 1996, sec. IV.3).
- ``land_1`` .. ``land_3``: Land et al. 2015 mechanics benchmark (Proc R Soc A 471:20150641),
  reference ranges from ``cardiotwin.mechanics.land.REFERENCE``: the Taylor-Hood P2/P1 reference
  and the twins' default nodal-pressure P1/P1 element (``land.solve_land_default_element``).
- ``eikonal_analytic``: ``electrophysiology.eikonal`` against the analytic anisotropic point
  source and an exact plane wave (BENCHMARKS.md), with the convergence of the error.
- ``niederer``: ``electrophysiology.verify.run_niederer`` (monodomain, TTP06) on the Niederer et
  al. 2011 slab against the fenicsx-beat P1 reference at the same dx, dt (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cardiotwin.verification.outcome import CheckOutcome, Quantity, VerificationCheck

log = logging.getLogger(__name__)

# Niederer et al. 2011 monodomain diffusivities (BENCHMARKS.md): D_l, D_t in mm^2/ms.
NIEDERER_D_L, NIEDERER_D_T = 0.09530, 0.012576


def observed_orders(sizes: list[float], errors: list[float]) -> list[float]:
    """Observed orders log(e_i / e_{i+1}) / log(h_i / h_{i+1}) between successive levels."""
    return [math.log(errors[i] / errors[i + 1]) / math.log(sizes[i] / sizes[i + 1]) for i in range(len(errors) - 1)]


# -- manufactured solution, anisotropic diffusion (dolfinx P1) --------------------------------
def mms_diffusion_errors(n_cells: list[int]) -> tuple[list[float], list[float], list[float]]:
    """(h, L2 error, H1 seminorm error) on the unit cube with n x n x n x 6 tetrahedra.

    u = sin(pi x) sin(pi y) sin(pi z) + x y z, D = D_t I + (D_l - D_t) f f^T with f = (1, 1, 1)/sqrt 3
    (Niederer diffusivities, fibres oblique to the mesh), f = -div(D grad u), u exact on the
    boundary. Errors are integrated with degree-8 quadrature and summed over MPI ranks.
    """
    from mpi4py import MPI  # noqa: I001 - before dolfinx

    import dolfinx
    import dolfinx.fem.petsc
    import ufl

    comm = MPI.COMM_WORLD
    hs, l2, h1 = [], [], []
    fib = np.ones(3) / math.sqrt(3.0)
    d_np = NIEDERER_D_T * np.eye(3) + (NIEDERER_D_L - NIEDERER_D_T) * np.outer(fib, fib)
    for n in n_cells:
        mesh = dolfinx.mesh.create_unit_cube(comm, n, n, n, dolfinx.mesh.CellType.tetrahedron)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        x = ufl.SpatialCoordinate(mesh)
        u_ex = ufl.sin(ufl.pi * x[0]) * ufl.sin(ufl.pi * x[1]) * ufl.sin(ufl.pi * x[2]) + x[0] * x[1] * x[2]
        D = ufl.as_matrix(d_np.tolist())
        f = -ufl.div(D * ufl.grad(u_ex))
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        a = ufl.inner(D * ufl.grad(u), ufl.grad(v)) * ufl.dx
        L = f * v * ufl.dx(metadata={"quadrature_degree": 6})
        u_bc = dolfinx.fem.Function(V)
        u_bc.interpolate(lambda p: np.sin(np.pi * p[0]) * np.sin(np.pi * p[1]) * np.sin(np.pi * p[2]) + p[0] * p[1] * p[2])
        mesh.topology.create_connectivity(mesh.topology.dim - 1, mesh.topology.dim)
        facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        dofs = dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets)
        bc = dolfinx.fem.dirichletbc(u_bc, dofs)
        problem = dolfinx.fem.petsc.LinearProblem(
            a, L, bcs=[bc], petsc_options_prefix=f"ct_verify_mms_{n}_",
            petsc_options={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12, "ksp_atol": 1e-14,
                           "ksp_error_if_not_converged": True},
        )
        uh = problem.solve()
        uh = uh[0] if isinstance(uh, tuple) else uh
        dx8 = ufl.dx(metadata={"quadrature_degree": 8})
        e = uh - u_ex
        el2 = dolfinx.fem.assemble_scalar(dolfinx.fem.form(e * e * dx8))
        eh1 = dolfinx.fem.assemble_scalar(dolfinx.fem.form(ufl.inner(ufl.grad(e), ufl.grad(e)) * dx8))
        hs.append(1.0 / n)
        l2.append(math.sqrt(comm.allreduce(el2, op=MPI.SUM)))
        h1.append(math.sqrt(comm.allreduce(eh1, op=MPI.SUM)))
    return hs, l2, h1


def _mms_diffusion(*, quick: bool) -> CheckOutcome:
    n_cells = [4, 8, 16] if quick else [4, 8, 16, 32]
    hs, l2, h1 = mms_diffusion_errors(n_cells)
    p_l2, p_h1 = observed_orders(hs, l2), observed_orders(hs, h1)
    return CheckOutcome(
        quantities=(
            Quantity("observed L2 order (finest pair)", p_l2[-1], "", expected=2.0, range=(1.85, 2.3)),
            Quantity("observed H1 order (finest pair)", p_h1[-1], "", expected=1.0, range=(0.9, 1.3)),
        ),
        details={"h": hs, "l2_error": l2, "h1_error": h1, "l2_orders": p_l2, "h1_orders": p_h1,
                 "n_cells_per_edge": n_cells, "diffusivity_mm2_per_ms": [NIEDERER_D_L, NIEDERER_D_T]},
        message=f"L2 order {p_l2[-1]:.2f} (theory 2), H1 order {p_h1[-1]:.2f} (theory 1)",
    )


# -- 0D circulation time stepping ---------------------------------------------------------------
def rc_discharge_errors(dts_ms: list[float], *, duration_ms: float = 400.0) -> list[float]:
    """|V_h(T) - V(T)| (mL) of a capacitor (C 1.5 mL/kPa, V0 50 mL, V(0) 120 mL) draining
    through R 100 kPa*ms/mL into a 0 kPa reservoir, for each time step (ms)."""
    from cardiotwin.circulation.network import Compartment, Connection, Network
    from cardiotwin.circulation.simulate import run_0d

    c_ml_per_kpa, r, v0, v_init = 1.5, 100.0, 50.0, 120.0
    net = Network(
        (Compartment("artery", "capacitor", v0_ml=v0, compliance_ml_per_kpa=c_ml_per_kpa),
         Compartment("reservoir", "fixed", fixed_pressure_kpa=0.0)),
        (Connection("r", "artery", "reservoir", r_open=r),),
    )
    exact = v0 + (v_init - v0) * math.exp(-duration_ms / (r * c_ml_per_kpa))
    errors = []
    for dt in dts_ms:
        trace = run_0d(net, np.array([v_init, 0.0]), duration_ms=duration_ms, dt_ms=dt)
        errors.append(abs(float(trace.column("volumes_ml", "artery")[-1]) - exact))
    return errors


def _circulation_rc(*, quick: bool) -> CheckOutcome:
    dts = [8.0, 4.0, 2.0, 1.0] if quick else [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    errors = rc_discharge_errors(dts)
    orders = observed_orders(dts, errors)
    return CheckOutcome(
        quantities=(Quantity("observed order in dt (finest pair)", orders[-1], "", expected=1.0, range=(0.9, 1.1)),),
        details={"dt_ms": dts, "volume_error_ml": errors, "orders": orders},
        message=f"backward-Euler order {orders[-1]:.3f} (theory 1)",
    )


# -- Land et al. 2015 ----------------------------------------------------------------------------
def _land(problem: int):  # noqa: ANN202 - returns a check function
    def run(*, quick: bool) -> CheckOutcome:
        from cardiotwin.mechanics.land import REFERENCE, solve_land, solve_land_default_element

        if problem == 3:  # curved structured prolate mesh: 3 / 4 elements across the wall
            # (gmsh meshes with ~2 elements across the 3 mm wall stay ~0.4 mm short of the range)
            result = solve_land(3, prolate_grid=(3, 12, 16) if quick else (4, 16, 24))
        else:
            resolution = {1: (2.0, 4.0), 2: (5.0, 2.5)}[problem][0 if quick else 1]
            result = solve_land(problem, resolution=resolution)
        # the twins' default element next to the Taylor-Hood reference, at its stated resolution
        default = solve_land_default_element(problem)
        quantities = tuple(
            Quantity(prefix + key, float(res.outputs_mm[key]), "mm", expected=0.5 * (lo + hi), range=(lo, hi))
            for prefix, res in (("", result), ("default element: ", default))
            for key, (lo, hi) in REFERENCE[problem].items()
        )
        message = "; ".join(f"{res.element()} on {res.mesh}: "
                            + ", ".join(f"{key} {value:.3f} mm" for key, value in res.outputs_mm.items())
                            for res in (result, default))
        return CheckOutcome(quantities=quantities, details={**result.to_dict(), "default_element": default.to_dict()},
                            message=message)

    return run


# -- electrophysiology ----------------------------------------------------------------------------
# Speeds of the analytic check: Niederer anisotropy v_l / v_t = 2.75 (BENCHMARKS.md).
EIKONAL_V_L, EIKONAL_V_T = 0.6, 0.6 / 2.75


def eikonal_analytic_errors(spacings_mm: list[float], *, size_mm: tuple[float, float, float] = (8.0, 4.0, 4.0),
                            exclude_mm: float = 2.0, factor_radius_mm: float | None = None) -> dict[str, list[float]]:
    """Errors of ``electrophysiology.eikonal.simulate_eikonal`` against the analytic point source.

    Slab [0, size] with fibres along x, source at the origin, T = sqrt((x/v_l)^2 + (y^2 + z^2)/v_t^2)
    (BENCHMARKS.md). Per spacing: mean and max relative error of the nodes farther than
    ``exclude_mm`` from the source (the source region is initialised with the exact local travel
    time by the solver), and max absolute error (ms) of a plane wave T = k.x, k^T V k = 1, started on
    the inflow faces, which the exact local tet solver must reproduce to round-off.
    ``factor_radius_mm``: source factorisation radius of the solver (None: its default; 0: the
    plain first-order update, whose convergence under refinement is the discretisation check).
    """
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, EikonalSolver, simulate_eikonal
    from cardiotwin.meshing.analytic import niederer_slab

    cfg = EikonalConfig(v_l=EIKONAL_V_L, v_t=EIKONAL_V_T)
    if factor_radius_mm is not None:
        cfg = EikonalConfig(v_l=EIKONAL_V_L, v_t=EIKONAL_V_T, factor_radius=factor_radius_mm)
    out: dict[str, list[float]] = {"h_mm": [], "n_points": [], "mean_rel_error": [], "max_rel_error": [],
                                   "plane_wave_max_abs_error_ms": []}
    k = np.array([0.3, 0.5, 0.8])
    k = k / math.sqrt(k @ np.diag([EIKONAL_V_L**2, EIKONAL_V_T**2, EIKONAL_V_T**2]) @ k)
    for h in spacings_mm:
        mesh = niederer_slab(dx_mm=h, size_mm=size_mm)
        solver = EikonalSolver(mesh, cfg=cfg)
        x = mesh.points
        t = simulate_eikonal(mesh, [((0.0, 0.0, 0.0), 0.0)], cfg=cfg, solver=solver).activation_times_ms
        exact = np.sqrt((x[:, 0] / EIKONAL_V_L) ** 2 + (x[:, 1] ** 2 + x[:, 2] ** 2) / EIKONAL_V_T**2)
        far = np.linalg.norm(x, axis=1) > exclude_mm
        rel = np.abs(t[far] - exact[far]) / exact[far]
        plane = x @ k
        inflow = np.flatnonzero(x.min(axis=1) < 1e-9)
        tp, _ = solver.solve([(inflow, plane[inflow])])
        out["h_mm"].append(float(h))
        out["n_points"].append(int(mesh.n_points))
        out["mean_rel_error"].append(float(np.nanmean(rel)) if np.isfinite(rel).all() else float("inf"))
        out["max_rel_error"].append(float(np.max(rel)) if np.isfinite(rel).all() else float("inf"))
        out["plane_wave_max_abs_error_ms"].append(float(np.max(np.abs(tp - plane))))
    return out


def _eikonal_analytic(*, quick: bool) -> CheckOutcome:
    spacings = [1.0, 0.5] if quick else [1.0, 0.5, 0.25]
    plain = eikonal_analytic_errors(spacings, factor_radius_mm=0.0)
    used = eikonal_analytic_errors(spacings[-1:], size_mm=(10.0, 10.0, 10.0))
    orders = observed_orders(plain["h_mm"], plain["mean_rel_error"])
    # The plain first-order update: the point-source singularity lowers the observed order of the
    # mean error (measured 0.40 from 1 to 0.5 mm and 0.57 from 0.5 to 0.25 mm): convergence is
    # required, not order 1. The solver as used factorises the update near the source (exact for a
    # homogeneous medium up to the plane-wave round-off): issue 5's bound is < 2 % at h 0.5 mm.
    return CheckOutcome(
        quantities=(
            Quantity("plane wave: max |T - k.x| (finest)", plain["plane_wave_max_abs_error_ms"][-1], "ms",
                     expected=0.0, tolerance=1e-8),
            Quantity("point source, plain update: mean relative error (finest)", plain["mean_rel_error"][-1], "",
                     expected=0.0, range=(0.0, 0.035)),
            Quantity("point source, plain update: observed order of the mean error (finest pair)", orders[-1], "",
                     expected=1.0, range=(0.3, 1.5)),
            Quantity(f"point source, factorised (default): max relative error, h {used['h_mm'][0]} mm",
                     used["max_rel_error"][0], "", expected=0.0, range=(0.0, 0.02)),
        ),
        details={"plain": {**plain, "orders": orders}, "factorised": used, "v_l_mm_per_ms": EIKONAL_V_L,
                 "v_t_mm_per_ms": EIKONAL_V_T, "solver": "cardiotwin.electrophysiology.eikonal.simulate_eikonal"},
        message=(f"plane wave exact to {plain['plane_wave_max_abs_error_ms'][-1]:.1e} ms; point source: plain update "
                 f"mean relative error {100 * plain['mean_rel_error'][-1]:.2f} % at h {plain['h_mm'][-1]} mm, order "
                 f"{orders[-1]:.2f}; factorised max relative error {100 * used['max_rel_error'][0]:.2f} %"),
    )


# Niederer slab: (dx, dt) of the quick and full runs, and the tolerance against the fenicsx-beat
# P1 reference at the same (dx, dt) (BENCHMARKS.md): 3 % of the activation time.
NIEDERER_QUICK, NIEDERER_FULL, NIEDERER_REL_TOL = (0.5, 0.05), (0.2, 0.05), 0.03


def _niederer(*, quick: bool) -> CheckOutcome:
    from cardiotwin.electrophysiology import verify as ep_verify

    dx, dt = NIEDERER_QUICK if quick else NIEDERER_FULL
    times, _ = ep_verify.run_niederer(dx_mm=dx, dt_ms=dt)
    ref_p8, ref_p9 = ep_verify.NIEDERER_REFERENCE_MS[(dx, dt)]
    quantities = tuple(
        Quantity(f"{name} activation (dx {dx} mm, dt {dt} ms)", times[name], "ms", expected=ref,
                 tolerance=NIEDERER_REL_TOL * ref)
        for name, ref in (("P8", ref_p8), ("P9", ref_p9))
    )
    return CheckOutcome(quantities=quantities,
                        details={"dx_mm": dx, "dt_ms": dt, "activation_ms": times,
                                 "reference_ms": {"P8": ref_p8, "P9": ref_p9},
                                 "reference": "fenicsx-beat P1 FE (BENCHMARKS.md)",
                                 "solver": "cardiotwin.electrophysiology.verify.run_niederer"},
                        message=f"P8 {times['P8']:.2f} ms (ref {ref_p8}), P9 {times['P9']:.2f} ms (ref {ref_p9})")


BUILTIN_CHECKS: tuple[VerificationCheck, ...] = (
    VerificationCheck("mms_diffusion", "Manufactured solution: anisotropic P1 diffusion (dolfinx)",
                      "code: FE operator", "Roache 2002, J Fluids Eng 124:4; Ciarlet 1978 thm 3.2.2",
                      _mms_diffusion, in_ci=True),
    VerificationCheck("circulation_rc", "0D circulation: RC discharge, time-step convergence",
                      "code: ODE integrator", "analytic exponential; Hairer & Wanner 1996 sec. IV.3",
                      _circulation_rc, in_ci=True),
    VerificationCheck("land_1", "Land 2015 problem 1: beam bending", "code: mechanics benchmark",
                      "Land et al. 2015, Proc R Soc A 471:20150641", _land(1), in_ci=True),
    VerificationCheck("land_2", "Land 2015 problem 2: passive LV inflation", "code: mechanics benchmark",
                      "Land et al. 2015, Proc R Soc A 471:20150641", _land(2)),
    VerificationCheck("land_3", "Land 2015 problem 3: inflation and active contraction",
                      "code: mechanics benchmark", "Land et al. 2015, Proc R Soc A 471:20150641", _land(3)),
    VerificationCheck("eikonal_analytic", "Eikonal: anisotropic point source, analytic solution",
                      "code: EP eikonal", "T = sqrt((x/v_l)^2 + (y/v_t)^2 + (z/v_t)^2) (BENCHMARKS.md)",
                      _eikonal_analytic, in_ci=True),
    VerificationCheck("niederer", "Niederer 2011 N-version slab benchmark (monodomain, TTP06)",
                      "code: EP benchmark", "Niederer et al. 2011, Phil Trans R Soc A 369:4331",
                      _niederer),
)
