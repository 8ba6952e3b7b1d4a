"""HeartMesh -> dolfinx mesh with cell and facet tags, correct under MPI.

The mesh is created from rank 0's arrays (other ranks pass empty arrays), partitioned by
dolfinx, and the tags are carried through the original input indices
(``topology.original_cell_index``, ``geometry.input_global_indices``). HeartMesh point/cell
fields (indexed in the original order) map to P1 / DG0 functions with
``point_field_to_function`` / ``cell_field_to_function`` and back with
``function_to_point_field`` (gathered on rank 0).

    from mpi4py import MPI
    heart = to_dolfinx(land_ellipsoid(char_length_mm=2.0), comm=MPI.COMM_WORLD)
    ds = ufl.Measure("ds", domain=heart.mesh, subdomain_data=heart.facet_tags)
    endo = ds(int(FacetTag.LV_ENDO))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

import basix.ufl
import dolfinx
import dolfinx.fem
import dolfinx.graph
import dolfinx.io
import dolfinx.mesh
import ufl

from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DolfinxHeart:
    """A HeartMesh distributed as a dolfinx mesh.

    mesh: the dolfinx mesh (P1 tetrahedra, LPS mm); cell_tags: ``anatomy.CellTag`` values on local
    cells; facet_tags: ``anatomy.FacetTag`` values on exterior facets; original_cell_index: (local
    cells incl. ghosts,) index into ``HeartMesh.cells``; original_point_index: (local geometry
    nodes,) index into ``HeartMesh.points``; n_points_global / n_cells_global: sizes of the source.
    """

    mesh: dolfinx.mesh.Mesh
    cell_tags: dolfinx.mesh.MeshTags
    facet_tags: dolfinx.mesh.MeshTags
    original_cell_index: np.ndarray
    original_point_index: np.ndarray
    n_points_global: int
    n_cells_global: int


def to_dolfinx(mesh: HeartMesh | None, comm: MPI.Comm = MPI.COMM_WORLD, *, root: int = 0) -> DolfinxHeart:
    """Distribute ``mesh`` (needed on ``root`` only; other ranks may pass it or None) over ``comm``."""
    rank = comm.rank
    if rank == root:
        if mesh is None:
            raise ValueError("to_dolfinx: the root rank must pass a HeartMesh")
        x = np.ascontiguousarray(mesh.points, dtype=np.float64)
        cells = np.ascontiguousarray(mesh.cells, dtype=np.int64)
        cell_tags = np.ascontiguousarray(mesh.cell_tags, dtype=np.int32)
        facets = np.ascontiguousarray(mesh.facets, dtype=np.int64)
        facet_tags = np.ascontiguousarray(mesh.facet_tags, dtype=np.int32)
        sizes = (x.shape[0], cells.shape[0])
    else:
        x = np.empty((0, 3), dtype=np.float64)
        cells = np.empty((0, 4), dtype=np.int64)
        cell_tags = np.empty(0, dtype=np.int32)
        facets = np.empty((0, 3), dtype=np.int64)
        facet_tags = np.empty(0, dtype=np.int32)
        sizes = None
    n_points, n_cells = comm.bcast(sizes, root=root)

    domain = ufl.Mesh(basix.ufl.element("Lagrange", "tetrahedron", 1, shape=(3,), dtype=np.float64))
    partitioner = dolfinx.mesh.create_cell_partitioner(dolfinx.mesh.GhostMode.none, 2)
    dmesh = dolfinx.mesh.create_mesh(comm, cells, domain, x, partitioner=partitioner)
    tdim = dmesh.topology.dim

    # Cell tags: distribute (cell -> original vertices, value) to owners the same way as facets.
    ctags_local, cvals_local = dolfinx.io.distribute_entity_data(dmesh, tdim, cells, cell_tags)
    dmesh.topology.create_connectivity(tdim, 0)
    ct = dolfinx.mesh.meshtags_from_entities(
        dmesh, tdim, dolfinx.graph.adjacencylist(ctags_local), cvals_local.astype(np.int32, copy=False)
    )
    ct.name = "cell_tags"

    dmesh.topology.create_connectivity(tdim - 1, tdim)
    f_local, fvals_local = dolfinx.io.distribute_entity_data(dmesh, tdim - 1, facets, facet_tags)
    ft = dolfinx.mesh.meshtags_from_entities(
        dmesh, tdim - 1, dolfinx.graph.adjacencylist(f_local), fvals_local.astype(np.int32, copy=False)
    )
    ft.name = "facet_tags"

    heart = DolfinxHeart(
        mesh=dmesh,
        cell_tags=ct,
        facet_tags=ft,
        original_cell_index=np.asarray(dmesh.topology.original_cell_index, dtype=np.int64),
        original_point_index=np.asarray(dmesh.geometry.input_global_indices, dtype=np.int64),
        n_points_global=int(n_points),
        n_cells_global=int(n_cells),
    )
    log.debug("rank %d: %d local cells", rank, dmesh.topology.index_map(tdim).size_local)
    return heart


def p1_dof_to_original_point(heart: DolfinxHeart, V: dolfinx.fem.FunctionSpace) -> np.ndarray:
    """(local dofs incl. ghosts,) original point index of each (blocked) dof of a P1 space."""
    element = V.element.basix_element
    if element.degree != 1 or element.discontinuous:
        raise ValueError("point fields map only to continuous P1 spaces")
    dofs = V.dofmap.list
    geom = heart.mesh.geometry.dofmap
    n_local = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    dof_to_node = np.full(n_local, -1, dtype=np.int64)
    # P1 Lagrange on a P1 geometry: the cell-local dof order equals the cell-local node order.
    dof_to_node[dofs.ravel()] = geom.ravel()
    return heart.original_point_index[dof_to_node]


def point_field_to_function(heart: DolfinxHeart, values: np.ndarray, V: dolfinx.fem.FunctionSpace) -> dolfinx.fem.Function:
    """P1 function from a field over the HeartMesh points.

    values: (N,) or (N, bs) in HeartMesh point order, available on every rank (broadcast it
    with ``comm.bcast`` if only rank 0 has it); bs must equal the block size of ``V``.
    """
    values = np.asarray(values, dtype=np.float64)
    bs = V.dofmap.index_map_bs
    values = values.reshape(values.shape[0], -1)
    if values.shape[0] != heart.n_points_global or values.shape[1] != bs:
        raise ValueError(f"expected values of shape ({heart.n_points_global}, {bs}), got {values.shape}")
    u = dolfinx.fem.Function(V)
    orig = p1_dof_to_original_point(heart, V)
    u.x.array[:] = values[orig].ravel()
    return u


def cell_field_to_function(heart: DolfinxHeart, values: np.ndarray, V: dolfinx.fem.FunctionSpace) -> dolfinx.fem.Function:
    """DG0 function from a field over the HeartMesh cells ((M,) or (M, bs), on every rank)."""
    values = np.asarray(values, dtype=np.float64)
    bs = V.dofmap.index_map_bs
    values = values.reshape(values.shape[0], -1)
    if values.shape[0] != heart.n_cells_global or values.shape[1] != bs:
        raise ValueError(f"expected values of shape ({heart.n_cells_global}, {bs}), got {values.shape}")
    u = dolfinx.fem.Function(V)
    dofs = V.dofmap.list[:, 0]
    n = dofs.shape[0]
    arr = u.x.array.reshape(-1, bs)
    arr[dofs] = values[heart.original_cell_index[:n]]
    return u


def function_to_point_field(heart: DolfinxHeart, u: dolfinx.fem.Function, *, root: int = 0) -> np.ndarray | None:
    """Gather a P1 function into HeartMesh point order on ``root``: (N,) or (N, bs); None elsewhere."""
    V = u.function_space
    bs = V.dofmap.index_map_bs
    n_owned = V.dofmap.index_map.size_local
    orig = p1_dof_to_original_point(heart, V)[:n_owned]
    vals = u.x.array.reshape(-1, bs)[:n_owned]
    comm = heart.mesh.comm
    gathered = comm.gather((orig, vals.copy()), root=root)
    if comm.rank != root:
        return None
    out = np.full((heart.n_points_global, bs), np.nan)
    for o, v in gathered:
        out[o] = v
    return out[:, 0] if bs == 1 else out


def write_xdmf(mesh: HeartMesh, path: str | os.PathLike[str]) -> Path:
    """XDMF/HDF5 for dolfinx: mesh, ``cell_tags`` and ``facet_tags`` (serial write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heart = to_dolfinx(mesh, MPI.COMM_SELF)
    heart.mesh.name = "heart"
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(path), "w") as fh:
        fh.write_mesh(heart.mesh)
        heart.mesh.topology.create_connectivity(2, 3)
        fh.write_meshtags(heart.cell_tags, heart.mesh.geometry)
        fh.write_meshtags(heart.facet_tags, heart.mesh.geometry)
    return path
