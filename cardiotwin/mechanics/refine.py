"""Uniform refinement of a beat's input mesh: the same geometry with half the edge length.

Each tetrahedron splits into 8 (corner tetrahedra plus the inner octahedron cut along its
shortest diagonal), each boundary triangle into 4 with its facet tag. Point data are
interpolated linearly (the new points are edge midpoints; AHA segment labels are copied from one
end), so activation times, the nodal fibres and the fibre rule's Laplace fields are the P1
interpolants of the coarse ones (the beat evaluates the rule at its quadrature points from those,
``fibers.quadrature``). Cell data pass to the children. The beat on the refined mesh differs from the coarse beat only by the
mechanics' discretisation: the mesh study of ``docs/mechanics.md`` compares it with a re-mesh
of the labels, which also changes the geometry, the fibres and the activation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardiotwin.errors import CaseError

__all__ = ["refine_activation_vtu", "refine_tets"]

_EDGES = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
# midpoint slots 4..9 = edges 01, 02, 03, 12, 13, 23
_CORNERS = np.array([(0, 4, 5, 6), (1, 4, 7, 8), (2, 5, 7, 9), (3, 6, 8, 9)])
# inner octahedron around each diagonal (01-23, 02-13, 03-12): the ring of the other 4 midpoints in order
_OCTA = {
    0: np.array([(4, 9, 5, 6), (4, 9, 6, 8), (4, 9, 8, 7), (4, 9, 7, 5)]),
    1: np.array([(5, 8, 4, 6), (5, 8, 6, 9), (5, 8, 9, 7), (5, 8, 7, 4)]),
    2: np.array([(6, 7, 4, 5), (6, 7, 5, 9), (6, 7, 9, 8), (6, 7, 8, 4)]),
}


def _midpoints(points: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique edges of ``edges`` (M, 2) -> (unique sorted edges, index of each input edge, new points)."""
    key = np.sort(edges, axis=1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1), 0.5 * (points[uniq[:, 0]] + points[uniq[:, 1]])


def refine_tets(points: np.ndarray, cells: np.ndarray, facets: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(points, cells, facets, edge end points (E, 2) of the new points, parent of each new cell,
    parent of each new facet). New points follow the old ones, one per unique edge."""
    n = len(points)
    all_edges = cells[:, _EDGES].reshape(-1, 2)
    uniq, inv, mids = _midpoints(points, all_edges)
    local = np.concatenate([cells, n + inv.reshape(-1, 6)], axis=1)  # (C, 10): 4 vertices, 6 midpoints
    pts = np.vstack([points, mids])
    x = pts[local]
    diag = np.stack([np.linalg.norm(x[:, 4] - x[:, 9], axis=1), np.linalg.norm(x[:, 5] - x[:, 8], axis=1),
                     np.linalg.norm(x[:, 6] - x[:, 7], axis=1)], axis=1).argmin(axis=1)
    children = np.empty((len(cells), 8, 4), dtype=np.int64)
    children[:, :4] = local[:, _CORNERS]
    for d, ring in _OCTA.items():
        sel = diag == d
        children[sel, 4:] = local[sel][:, ring]
    new_cells = children.reshape(-1, 4)
    # positive orientation, as the mesher writes them
    v = pts[new_cells]
    vol = np.einsum("ij,ij->i", np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), v[:, 3] - v[:, 0])
    new_cells[vol < 0] = new_cells[vol < 0][:, [0, 2, 1, 3]]
    # boundary triangles: their edges are edges of the tetrahedra, so their midpoints exist already
    lookup = {tuple(e): n + i for i, e in enumerate(uniq)}
    f = np.asarray(facets, dtype=np.int64)
    m01, m12, m02 = ([lookup[tuple(e)] for e in np.sort(f[:, pair], axis=1)] for pair in ([0, 1], [1, 2], [0, 2]))
    m01, m12, m02 = np.array(m01), np.array(m12), np.array(m02)
    new_facets = np.stack([np.stack([f[:, 0], m01, m02], 1), np.stack([f[:, 1], m12, m01], 1),
                           np.stack([f[:, 2], m02, m12], 1), np.stack([m01, m12, m02], 1)], axis=1).reshape(-1, 3)
    return (pts, new_cells, new_facets, uniq, np.repeat(np.arange(len(cells)), 8),
            np.repeat(np.arange(len(f)), 4))


def _interpolate(values: np.ndarray, edges: np.ndarray, *, label: bool) -> np.ndarray:
    """Values at the new points: the mean of the edge's ends (the coarse P1 interpolant, so the
    fine mesh's P1 field is the coarse one everywhere), or one end's value for a label."""
    a, b = values[edges[:, 0]], values[edges[:, 1]]
    if label:  # segment numbers: a midpoint takes one end's label
        return np.vstack([values, a])
    mid = 0.5 * (a + b)
    if mid.shape[1] == 3:  # a direction field: exactly opposite ends (no coarse direction there) keep one end's
        flat = np.linalg.norm(mid, axis=1) < 1e-6 * np.maximum(np.linalg.norm(a, axis=1), 1e-300)
        mid[flat] = a[flat]
    return np.vstack([values, mid])


def refine_activation_vtu(src: Path, dst: Path) -> Path:
    """Write ``dst``: ``src`` (an activation.vtu, ``mechanics.outputs`` format) refined once uniformly."""
    import meshio

    try:
        m = meshio.read(src)
    except Exception as exc:  # meshio raises many types
        raise CaseError(f"{src}: cannot read mesh ({exc})") from None
    tet = next((i for i, b in enumerate(m.cells) if b.type == "tetra"), None)
    tri = next((i for i, b in enumerate(m.cells) if b.type == "triangle"), None)
    if tet is None or tri is None:
        raise CaseError(f"{src}: needs a 'tetra' and a 'triangle' block")
    pts, cells, facets, edges, cell_parent, facet_parent = refine_tets(
        np.asarray(m.points, float), np.asarray(m.cells[tet].data, np.int64), np.asarray(m.cells[tri].data, np.int64))
    point_data = {}
    for k, v in m.point_data.items():
        v = np.asarray(v, dtype=float)
        point_data[k] = _interpolate(v if v.ndim == 2 else v[:, None], edges, label=k == "aha")
        if v.ndim == 1:
            point_data[k] = point_data[k][:, 0]
    cell_data: dict[str, list[np.ndarray]] = {}
    for k, blocks in m.cell_data.items():
        if len(blocks) <= max(tet, tri) or blocks[tet] is None:
            continue
        cell_data[k] = [np.asarray(blocks[tet])[cell_parent], np.asarray(blocks[tri])[facet_parent]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    meshio.write(dst, meshio.Mesh(pts, [("tetra", cells), ("triangle", facets)], point_data=point_data,
                                  cell_data=cell_data))
    return dst
