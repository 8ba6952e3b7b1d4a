"""Newton's method for the mechanics residual, with everything built once and reused.

Why not ``dolfinx.fem.petsc.NonlinearProblem`` (SNES): profiling a beat showed most of the time
in ``apply_lifting`` (which re-evaluates every Jacobian element tensor to lift boundary values
that are zero here) and in re-creating work per solve. This solver compiles the residual and
Jacobian forms once, keeps one matrix, one KSP (MUMPS LU by default: PETSc reuses the symbolic
factorisation while the sparsity pattern is unchanged, so each iteration costs one numeric
factorisation), and applies the homogeneous Dirichlet conditions directly.

It also solves the *bordered* system of a body whose cavity pressures are unknowns tied to
volume equations ``V3D(u) - V0D(p) = 0`` (3D-0D coupling): one factorisation of the stiffness K
per iteration and ``1 + n_cavities`` back-substitutions, the pressure update from the small
Schur complement (Newton for (u, p) together; no restore-and-resolve).

Every PETSc object carries the options prefix given; ``<prefix>ksp_error_if_not_converged``
is set, and options already in the PETSc options database win (e.g. from the environment:
``PETSC_OPTIONS="-em_ksp_type cg -em_pc_type gamg"``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx
import dolfinx.fem.petsc
import ufl
from petsc4py import PETSc

log = logging.getLogger(__name__)

DEFAULT_KSP_OPTIONS: dict[str, object] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
    "ksp_error_if_not_converged": True,
}


# FFCx waits this long (s) for a form that another process is compiling; dolfinx's 10 s is too
# short when several jobs share two cores (a TimeoutError then aborts the solve)
JIT_OPTIONS: dict[str, object] = {"timeout": 600}


class NewtonDiverged(RuntimeError):
    """Newton did not converge (iteration limit, non-finite values or a failed linear solve)."""


@dataclass
class NewtonResult:
    """Iterations used and final residual norm (kPa mm^2, the units of the weak form)."""

    iterations: int
    residual_norm: float
    jacobians: int = 0  # Jacobian assemblies and factorisations spent


def _forgets_jacobian_on_failure(solve: Callable[..., NewtonResult]) -> Callable[..., NewtonResult]:
    """After a failed solve the kept Jacobian may belong to a state far from the next start (a
    chord step from it can invert elements at every step length): the next solve begins with a
    fresh one."""

    @functools.wraps(solve)
    def wrapper(self: "NewtonSolver", *args: object, **kwargs: object) -> NewtonResult:
        try:
            return solve(self, *args, **kwargs)
        except NewtonDiverged:
            self._factorised = False
            self._drop_border()
            raise

    return wrapper


class NewtonSolver:
    """Newton for ``R(state) = 0`` with homogeneous Dirichlet conditions ``bcs``.

    ``residual`` is a UFL form linear in the test function; its Jacobian is derived once.

    ``reuse_jacobian``: keep the factorised Jacobian (also across solves: the next load or time
    step starts from the last one) while each iteration still reduces the residual by at least
    ``contraction`` (chord / modified Newton); otherwise reassemble and refactorise, undoing a
    chord step that increased the residual. Iterations are then capped at ``4 * max_it`` with at
    most ``max_it`` Jacobians. Without it every iteration is a full Newton step.
    """

    def __init__(
        self,
        residual: ufl.Form,
        state: dolfinx.fem.Function,
        *,
        bcs: Sequence[dolfinx.fem.DirichletBC],
        prefix: str,
        rtol: float,
        atol: float,
        max_it: int,
        ksp_options: dict[str, object] | None = None,
        jit_options: dict | None = None,
        reuse_jacobian: bool = False,
        contraction: float = 0.25,
    ) -> None:
        self.state, self.bcs, self.prefix = state, list(bcs), prefix
        self.rtol, self.atol, self.max_it = rtol, atol, max_it
        self.reuse_jacobian, self.contraction = reuse_jacobian, contraction
        self._factorised = False  # self.A holds a Jacobian (of some earlier state)
        self._border: tuple[list[PETSc.Vec], list[PETSc.Vec]] | tuple = ()  # c and z2 of the kept Jacobian
        self.jacobians = 0
        self.comm = state.function_space.mesh.comm
        jit_options = {**JIT_OPTIONS, **(jit_options or {})}
        du = ufl.TrialFunction(state.function_space)
        self.F_form = dolfinx.fem.form(residual, jit_options=jit_options)
        self.J_form = dolfinx.fem.form(ufl.derivative(residual, state, du), jit_options=jit_options)
        self.A = dolfinx.fem.petsc.create_matrix(self.J_form)
        self.A.setOptionsPrefix(f"{prefix}A_")
        self.b = dolfinx.fem.petsc.create_vector(state.function_space)
        self.dx = dolfinx.fem.petsc.create_vector(state.function_space)
        self.ksp = PETSc.KSP().create(self.comm)
        self.ksp.setOptionsPrefix(prefix)
        opts = PETSc.Options()
        for key, value in {**DEFAULT_KSP_OPTIONS, **(ksp_options or {})}.items():
            if not opts.hasName(f"{prefix}{key}"):  # command-line options win
                opts[f"{prefix}{key}"] = value
        self.ksp.setOperators(self.A)
        self.ksp.setFromOptions()
        self._extra_vectors: dict[str, tuple[dolfinx.fem.Form, PETSc.Vec]] = {}

    # -- assembly ------------------------------------------------------------------------------
    def assemble_residual(self) -> float:
        """Assemble R(state) into ``self.b`` (Dirichlet rows set to 0); returns ||R||_2."""
        with self.b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.F_form)
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        # constrained dofs already hold their (zero) values: their residual is g - x = 0
        dolfinx.fem.petsc.set_bc(self.b, self.bcs, self.state.x.petsc_vec, -1.0)
        return float(self.b.norm())

    def assemble_jacobian(self) -> None:
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.J_form, bcs=self.bcs)
        self.A.assemble()
        self._factorised = True
        self.jacobians += 1
        self._drop_border()

    def _drop_border(self) -> None:
        for vecs in self._border:
            for vec in vecs:
                vec.destroy()
        self._border = ()

    def _iteration_budget(self) -> int:
        return 4 * self.max_it if self.reuse_jacobian else self.max_it

    def linear_form_vector(self, name: str, form: ufl.Form) -> PETSc.Vec:
        """Assemble a linear form (compiled on first use, cached by ``name``), Dirichlet rows 0."""
        if name not in self._extra_vectors:
            compiled = dolfinx.fem.form(form, jit_options=JIT_OPTIONS)
            self._extra_vectors[name] = (compiled, dolfinx.fem.petsc.create_vector(self.state.function_space))
        compiled, vec = self._extra_vectors[name]
        with vec.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(vec, compiled)
        vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(vec, self.bcs, None, 0.0)
        return vec

    def _linear_solve(self, rhs: PETSc.Vec, out: PETSc.Vec) -> None:
        try:
            self.ksp.solve(rhs, out)
        except PETSc.Error as exc:
            raise NewtonDiverged(f"linear solve failed ({exc})") from None

    def _update(self, step: PETSc.Vec, scale: float) -> None:
        self.state.x.petsc_vec.axpy(scale, step)
        self.state.x.scatter_forward()
        if not np.all(np.isfinite(self.state.x.array)):
            raise NewtonDiverged("non-finite state")

    def _finite_residual(self, step: PETSc.Vec, scale: float) -> tuple[float, float]:
        """Apply ``scale * step``, halving it (up to 6 times) while the residual is not finite
        (a full Newton step can invert elements, where J^(-2/3) is undefined). Returns
        (residual norm, the scale kept)."""
        for _ in range(7):
            self._update(step, scale)
            norm = self.assemble_residual()
            finite = self.comm.allreduce(bool(np.isfinite(norm)), op=MPI.LAND)
            if finite:
                return norm, scale
            self._update(step, -0.5 * scale)  # back to half the step
            self._update(step, -0.5 * scale)
            scale *= 0.5
        raise NewtonDiverged("non-finite residual after step halving")

    # -- plain Newton --------------------------------------------------------------------------
    @_forgets_jacobian_on_failure
    def solve(self) -> NewtonResult:
        """Newton until ||R|| <= max(atol, rtol ||R_0||); raises NewtonDiverged otherwise."""
        norm0 = norm = self.assemble_residual()
        jac0, budget = self.jacobians, self._iteration_budget()
        refresh = not (self.reuse_jacobian and self._factorised)
        for it in range(budget + 1):
            if not np.isfinite(norm):
                raise NewtonDiverged("non-finite residual")
            if norm <= max(self.atol, self.rtol * norm0):
                return NewtonResult(it, norm, self.jacobians - jac0)
            if it == budget or norm > 1e6 * max(norm0, self.atol) or self.jacobians - jac0 >= self.max_it:
                break
            if refresh:
                self.assemble_jacobian()
            self._linear_solve(self.b, self.dx)
            previous = norm
            norm, scale = self._finite_residual(self.dx, -1.0)
            undone: list[bool] = []
            refresh = self._judge_step(refresh, norm, previous,
                                       lambda scale=scale: (self._update(self.dx, -scale), undone.append(True)))
            if undone:
                norm = self.assemble_residual()
        raise NewtonDiverged(f"no convergence in {self.max_it} iterations (|R| {norm:.3g}, |R0| {norm0:.3g})")

    def _judge_step(self, was_fresh: bool, norm: float, previous: float, undo: Callable[[], None]) -> bool:
        """Whether the next iteration needs a fresh Jacobian; undoes a chord step that did not
        reduce the residual (the caller then reassembles it)."""
        if not self.reuse_jacobian:
            return True
        if was_fresh or norm <= self.contraction * previous:
            return False
        if not norm < previous:
            undo()
        return True

    # -- Newton with cavity pressures as unknowns ------------------------------------------------
    @_forgets_jacobian_on_failure
    def solve_bordered(
        self,
        *,
        pressures: Sequence[dolfinx.fem.Constant],
        pressure_load_forms: Sequence[ufl.Form],
        volume_derivative_forms: Sequence[ufl.Form],
        volumes_3d: Callable[[], np.ndarray],
        volumes_0d: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        volume_tol: float,
        max_pressure_step: float = 2.0,
    ) -> NewtonResult:
        """Solve R(u, p) = 0 and V3D(u) = V0D(p) for the state u and the cavity pressures p.

        pressure_load_forms[i]: dR/dp_i (linear forms); volume_derivative_forms[i]: dV3D_i/du
        (linear forms, same volume units as ``volumes_3d``); volumes_0d(p) -> (V0D(p), dV0D/dp).
        Convergence: ||R|| <= max(atol, rtol ||R_0||) and |V3D - V0D| <= volume_tol.
        Pressure steps are limited to ``max_pressure_step`` (same units as p) per iteration.
        """
        n = len(pressures)
        z2 = [self.dx.duplicate() for _ in range(n)]
        p = np.array([float(c.value) for c in pressures])
        norm0 = None
        norm_ref = 0.0
        norm = self.assemble_residual()
        jac0, budget = self.jacobians, self._iteration_budget()
        refresh = not (self.reuse_jacobian and self._factorised)
        merit_prev = None
        for it in range(budget + 1):
            v0d, dv0d_dp = volumes_0d(p)
            g = volumes_3d() - v0d
            if not (np.isfinite(norm) and np.all(np.isfinite(g))):
                raise NewtonDiverged("non-finite residual")
            norm0 = norm if norm0 is None else norm0
            if it == 1:
                # the first residual can be ~0 when only the volume equations are violated;
                # judge growth against the residual after the first update too
                norm_ref = max(norm0, norm, self.atol)
            if it > 1 and norm > 1e6 * norm_ref:
                raise NewtonDiverged(f"residual grew from {norm_ref:.3g} to {norm:.3g}")
            ref = norm0 if it == 0 else norm_ref
            # distance to convergence: > 1 until both residuals are within tolerance
            merit = max(norm / max(self.atol, self.rtol * ref), float(np.max(np.abs(g))) / volume_tol)
            if merit <= 1.0:
                return NewtonResult(it, norm, self.jacobians - jac0)
            if merit_prev is not None:
                undone: list[bool] = []
                refresh = self._judge_step(refresh, merit, merit_prev, lambda: (undo(), undone.append(True)))
                if undone:  # the chord step was undone: state and p as before
                    p = p_prev
                    norm = self.assemble_residual()
                    v0d, dv0d_dp = volumes_0d(p)
                    g = volumes_3d() - v0d
                    merit = merit_prev
            if it == budget or self.jacobians - jac0 >= self.max_it:
                break
            if refresh or not self._border:
                if refresh:
                    self.assemble_jacobian()
                # the border of the bordered Jacobian (c = dV/du, z2 = K^-1 dR/dp) is kept with K
                c_vecs = [self.linear_form_vector(f"dVdu{i}", f).copy() for i, f in enumerate(volume_derivative_forms)]
                for i, form in enumerate(pressure_load_forms):
                    self._linear_solve(self.linear_form_vector(f"dRdp{i}", form), z2[i])
                self._drop_border()
                self._border = (c_vecs, [z.copy() for z in z2])
            c_vecs, z2_kept = self._border
            for z, kept in zip(z2, z2_kept):
                kept.copy(z)
            self._linear_solve(self.b, self.dx)  # K dx = R, i.e. z1 = -dx
            # g + c.(z1 - sum_i z2_i dp_i) - D dp = 0  ->  (C Z2 + D) dp = g + C z1
            M = np.array([[c_vecs[j].dot(z2[i]) for i in range(n)] for j in range(n)]) + dv0d_dp
            rhs = g - np.array([c_vecs[j].dot(self.dx) for j in range(n)])
            try:
                dp = np.linalg.solve(M, rhs)
            except np.linalg.LinAlgError:
                raise NewtonDiverged("singular pressure-volume Schur complement") from None
            scale = min(1.0, max_pressure_step / max(float(np.max(np.abs(dp))), 1e-300))
            # du = z1 - sum_i z2_i dp_i = -(dx + sum_i z2_i dp_i)
            for i in range(n):
                self.dx.axpy(float(dp[i]), z2[i])
            # the residual depends on p: set the pressures of the trial step before assembling
            p_old = p.copy()
            trial = scale
            for _ in range(7):
                for c, value in zip(pressures, p_old + trial * dp):
                    c.value = float(value)
                self._update(self.dx, -trial)
                norm = self.assemble_residual()
                if self.comm.allreduce(bool(np.isfinite(norm)), op=MPI.LAND):
                    break
                self._update(self.dx, trial)
                trial *= 0.5
            else:
                raise NewtonDiverged("non-finite residual after step halving")
            p = p_old + trial * dp
            merit_prev, p_prev = merit, p_old

            def undo(trial: float = trial, p_old: np.ndarray = p_old) -> None:
                self._update(self.dx, trial)
                for c, value in zip(pressures, p_old):
                    c.value = float(value)
        raise NewtonDiverged(f"coupled Newton: no convergence in {self.max_it} iterations")

    def destroy(self) -> None:
        for obj in (self.ksp, self.A, self.b, self.dx):
            obj.destroy()
        for _, vec in self._extra_vectors.values():
            vec.destroy()
        self._drop_border()
