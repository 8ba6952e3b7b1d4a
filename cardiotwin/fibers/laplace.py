"""Laplace-Dirichlet problems on a HeartMesh, solved with dolfinx (P1, CG + GAMG)."""

from __future__ import annotations

import logging

import numpy as np
from mpi4py import MPI

import dolfinx.fem as fem
import dolfinx.fem.petsc
import ufl

from cardiotwin.errors import StageError
from cardiotwin.meshing.fem import DolfinxHeart, function_to_point_field

log = logging.getLogger(__name__)


def solve_laplace(
    heart: DolfinxHeart,
    *,
    dirichlet: list[tuple[np.ndarray, float]],
    name: str,
) -> np.ndarray:
    """Solve -div grad u = 0 with u = value on each given set of facets/vertices.

    dirichlet: list of (local dolfinx dof indices of a P1 space from ``p1_space(heart)``, value).
    Returns the nodal solution (N,) in HeartMesh point order (on rank 0; None elsewhere).
    """
    V = p1_space(heart)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    zero = fem.Constant(heart.mesh, 0.0)
    L = zero * v * ufl.dx
    bcs = []
    for dofs, value in dirichlet:
        bcs.append(fem.dirichletbc(np.float64(value), np.asarray(dofs, dtype=np.int32), V))
    n_bc = heart.mesh.comm.allreduce(sum(len(d) for d, _ in dirichlet), op=MPI.SUM)
    if n_bc == 0:
        raise StageError(f"Laplace problem {name}: no Dirichlet nodes")
    problem = dolfinx.fem.petsc.LinearProblem(
        a, L, bcs=bcs, petsc_options_prefix=f"ct_laplace_{name}_",
        petsc_options={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-10, "ksp_error_if_not_converged": True},
    )
    try:
        uh = problem.solve()
    except Exception as exc:  # PETSc raises a generic error on divergence
        raise StageError(f"Laplace problem {name} did not converge: {exc}") from exc
    if isinstance(uh, tuple):
        uh = uh[0]
    return function_to_point_field(heart, uh)


def p1_space(heart: DolfinxHeart) -> fem.FunctionSpace:
    return fem.functionspace(heart.mesh, ("Lagrange", 1))


def facet_dofs(heart: DolfinxHeart, tags: tuple[int, ...]) -> np.ndarray:
    """Local P1 dofs on facets carrying any of ``tags``."""
    V = p1_space(heart)
    fdim = heart.mesh.topology.dim - 1
    facets = heart.facet_tags.indices[np.isin(heart.facet_tags.values, tags)]
    return fem.locate_dofs_topological(V, fdim, facets)


def point_dofs(heart: DolfinxHeart, original_points: np.ndarray) -> np.ndarray:
    """Local P1 dofs of the given HeartMesh point indices."""
    from cardiotwin.meshing.fem import p1_dof_to_original_point

    V = p1_space(heart)
    orig = p1_dof_to_original_point(heart, V)
    return np.flatnonzero(np.isin(orig, original_points)).astype(np.int32)
