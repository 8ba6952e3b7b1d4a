"""P1 finite-element operators of the monodomain equation, assembled with dolfinx (serial) and
handed to torch as sparse CSR matrices in HeartMesh point order.

mass M_ij = int phi_i phi_j dx (mm^3); stiffness K_ij = int D grad phi_i . grad phi_j dx (mm^3/ms)
with D = d_t I + (d_l - d_t) f f^T per cell (mm^2/ms), f the cell-averaged fibre direction.
Scar cells (``CellTag.SCAR``) get D = 0 (non-conducting core); border-zone cells get D scaled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from cardiotwin.anatomy import CellTag
from cardiotwin.errors import StageError
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)

# Niederer 2011 monodomain diffusivities (harmonic-mean conductivity / (chi Cm)), mm^2/ms.
NIEDERER_D_L = 0.09530
NIEDERER_D_T = 0.012576


@dataclass(frozen=True)
class EPOperators:
    """Sparse operators in point order. mass, stiffness: scipy CSR (N, N); lumped_mass: (N,) mm^3;
    conducting: (N,) bool, False on nodes that touch only scar cells."""

    mass: sp.csr_matrix
    stiffness: sp.csr_matrix
    lumped_mass: np.ndarray
    conducting: np.ndarray


def cell_fibres(mesh: HeartMesh) -> np.ndarray:
    """(M, 3) unit fibre direction per cell from point (N, 3) or cell (M, 3) ``f0``."""
    if "f0" in mesh.cell_data:
        f = np.asarray(mesh.cell_data["f0"], dtype=float).reshape(mesh.n_cells, 3)
    elif "f0" in mesh.point_data:
        f = np.asarray(mesh.point_data["f0"], dtype=float)[mesh.cells].mean(axis=1)
    else:
        raise StageError(f"mesh {mesh.name or '(unnamed)'}: no fibre field 'f0' in point or cell data; "
                         "run `cardiotwin fibers` first")
    n = np.linalg.norm(f, axis=1)
    if np.any(~np.isfinite(n)) or np.any(n < 1e-8):
        raise StageError(f"mesh {mesh.name or '(unnamed)'}: fibre field 'f0' has zero or non-finite vectors "
                         f"in {int(np.sum(~np.isfinite(n) | (n < 1e-8)))} cells")
    return f / n[:, None]


def conductivity_scale(mesh: HeartMesh, *, border_zone_mm: float = 0.0, border_zone_factor: float = 0.25) -> np.ndarray:
    """(M,) factor on D: 0 in scar cells, ``border_zone_factor`` in cells whose centroid lies within
    ``border_zone_mm`` of a scar node, 1 elsewhere."""
    scale = np.ones(mesh.n_cells)
    scar = mesh.cell_tags == int(CellTag.SCAR)
    if not scar.any():
        return scale
    scale[scar] = 0.0
    if border_zone_mm > 0:
        from scipy.spatial import cKDTree

        scar_nodes = np.unique(mesh.cells[scar])
        tree = cKDTree(mesh.points[scar_nodes])
        cent = mesh.points[mesh.cells[~scar]].mean(axis=1)
        dist, _ = tree.query(cent)
        idx = np.flatnonzero(~scar)[dist <= border_zone_mm]
        scale[idx] = border_zone_factor
    return scale


def assemble(mesh: HeartMesh, *, d_l: float = NIEDERER_D_L, d_t: float = NIEDERER_D_T,
             border_zone_mm: float = 0.0, border_zone_factor: float = 0.25) -> EPOperators:
    """Assemble M and K (P1, exact quadrature) with dolfinx on COMM_SELF; returns point-ordered CSR."""
    from mpi4py import MPI

    import dolfinx
    import dolfinx.fem.petsc  # noqa: F401  (registers assemblers)
    import ufl

    from cardiotwin.meshing.fem import cell_field_to_function, p1_dof_to_original_point, to_dolfinx

    f = cell_fibres(mesh)
    scale = conductivity_scale(mesh, border_zone_mm=border_zone_mm, border_zone_factor=border_zone_factor)
    Dcell = scale[:, None, None] * (d_t * np.eye(3)[None] + (d_l - d_t) * f[:, :, None] * f[:, None, :])
    heart = to_dolfinx(mesh, MPI.COMM_SELF)
    T = dolfinx.fem.functionspace(heart.mesh, ("DG", 0, (3, 3)))
    Dfun = cell_field_to_function(heart, Dcell.reshape(-1, 9), T)
    V = dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    m_form = dolfinx.fem.form(u * v * ufl.dx)
    k_form = dolfinx.fem.form(ufl.inner(Dfun * ufl.grad(u), ufl.grad(v)) * ufl.dx)
    Mdx = dolfinx.fem.assemble_matrix(m_form).to_scipy()
    Kdx = dolfinx.fem.assemble_matrix(k_form).to_scipy()
    orig = p1_dof_to_original_point(heart, V)
    n = mesh.n_points
    if orig.shape[0] != n:
        raise StageError(f"mesh {mesh.name}: {n} points but {orig.shape[0]} P1 dofs (unused points?)")
    P = sp.csr_matrix((np.ones(n), (orig, np.arange(n))), shape=(n, n))  # dof -> point permutation
    M = (P @ Mdx @ P.T).tocsr()
    K = (P @ Kdx @ P.T).tocsr()
    M.sort_indices()
    K.sort_indices()
    conducting = np.zeros(n, dtype=bool)
    conducting[mesh.cells[scale > 0].ravel()] = True
    log.info("EP operators: %d nodes, %d nnz", n, M.nnz)
    return EPOperators(mass=M, stiffness=K, lumped_mass=np.asarray(M.sum(axis=1)).ravel(), conducting=conducting)


def to_torch_csr(a: sp.csr_matrix, *, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """scipy CSR -> torch sparse CSR on ``device``."""
    a = a.tocsr()
    return torch.sparse_csr_tensor(
        torch.as_tensor(a.indptr, dtype=torch.int64), torch.as_tensor(a.indices, dtype=torch.int64),
        torch.as_tensor(a.data), size=a.shape, dtype=dtype, device=device)
