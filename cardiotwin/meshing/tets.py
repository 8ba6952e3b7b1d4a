"""Topology and geometry helpers for tetrahedral meshes stored as plain numpy arrays.

All functions take ``points`` (N, 3) float64 in mm and ``cells`` (M, 4) int64 and are pure.
"""

from __future__ import annotations

import numpy as np

# Faces of a positively oriented tetrahedron (a, b, c, d), each ordered so that its right-hand
# normal points out of the tetrahedron.
OUTWARD_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)


def signed_volumes(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(M,) signed tetrahedron volumes in mm^3 (positive: d on the normal side of (a, b, c))."""
    p = points[cells]
    return np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0]) / 6.0


def orient_positive(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """A copy of ``cells`` with the last two vertices swapped where the volume is negative."""
    cells = np.array(cells, dtype=np.int64, copy=True)
    neg = signed_volumes(points, cells) < 0
    cells[neg, 2], cells[neg, 3] = cells[neg, 3].copy(), cells[neg, 2].copy()
    return cells


def boundary_face_mask(cells: np.ndarray) -> np.ndarray:
    """(M, 4) bool: face j of cell i (the face opposite corner j) belongs to no other cell."""
    cells = np.asarray(cells, dtype=np.int64)
    key = _face_keys(np.sort(cells[:, OUTWARD_FACES].reshape(-1, 3), axis=1))
    order = np.argsort(key, kind="stable")
    sk = key[order]
    dup = np.zeros(sk.size, dtype=bool)
    same = sk[1:] == sk[:-1]
    dup[1:] |= same
    dup[:-1] |= same
    once = np.empty(sk.size, dtype=bool)
    once[order] = ~dup
    return once.reshape(-1, 4)


def boundary_facets(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary triangles of a positively oriented tet mesh.

    Returns ``(facets (F, 3), owner (F,))``: triangles that belong to exactly one cell, ordered
    with outward normals, and the index of that cell.
    """
    cells = np.asarray(cells, dtype=np.int64)
    faces = cells[:, OUTWARD_FACES].reshape(-1, 3)
    owner = np.repeat(np.arange(cells.shape[0]), 4)
    # A face is on the boundary when its key occurs once.
    once = boundary_face_mask(cells).ravel()
    return faces[once], owner[once]


def boundary_genus(cells: np.ndarray) -> float:
    """Genus of the boundary surface of a one-piece tet mesh, (2 - V + E - F) / 2 over its triangles.

    0 for a biventricular myocardium cut at the base (topologically a ball); each hole through the
    wall or handle adds 1; a pinched (non-manifold) vertex or edge makes it a half-integer or off.
    """
    facets, _ = boundary_facets(cells)
    if facets.size == 0:
        return 0.0
    edges = np.unique(np.sort(np.concatenate([facets[:, [0, 1]], facets[:, [1, 2]], facets[:, [2, 0]]]), axis=1),
                      axis=0)
    chi = np.unique(facets).size - edges.shape[0] + facets.shape[0]
    return (2.0 - chi) / 2.0


def face_connected_components(cells: np.ndarray) -> np.ndarray:
    """(M,) component index of every cell, cells being connected when they share a face; components
    are numbered by decreasing size (0: the largest).

    A piece joined to the rest only through an edge or a vertex is a component of its own: it can
    hinge about that edge or vertex, a mechanism that makes a mechanics stiffness matrix singular.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    cells = np.asarray(cells, dtype=np.int64)
    n = cells.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    key = _face_keys(np.sort(cells[:, OUTWARD_FACES].reshape(-1, 3), axis=1))
    owner = np.repeat(np.arange(n), 4)
    order = np.argsort(key, kind="stable")
    sk, so = key[order], owner[order]
    same = sk[1:] == sk[:-1]
    a, b = so[:-1][same], so[1:][same]
    graph = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    rank = np.argsort(np.argsort(-np.bincount(comp), kind="stable"), kind="stable")
    return rank[comp]


def require_face_connected(cells: np.ndarray, *, source: str) -> None:
    """StageError unless every cell is joined to the rest by faces (``face_connected_components``):
    a piece hanging on an edge or a vertex has no stiffness against turning about it, and the
    mechanics' Newton solve would diverge at the first load step without saying why."""
    from cardiotwin.errors import StageError

    comp = face_connected_components(cells)
    if comp.size and comp.max() > 0:
        raise StageError(f"{source}: {int(np.count_nonzero(comp))} of {comp.size} tets form {int(comp.max())} "
                         "piece(s) joined to the mesh only by an edge or a vertex; the mechanics cannot hold them. "
                         "Remesh the labels with `cardiotwin mesh` (it keeps the largest face-connected piece)")


def _face_keys(sorted_faces: np.ndarray) -> np.ndarray:
    """One int64 per sorted vertex triple (unique for up to 2^21 vertices); a void view otherwise."""
    f = np.asarray(sorted_faces, dtype=np.int64)
    if f.size and f.max() < 2**21:
        return (f[:, 0] << 42) | (f[:, 1] << 21) | f[:, 2]
    f = np.ascontiguousarray(f)
    return f.view(np.dtype((np.void, f.dtype.itemsize * f.shape[1]))).ravel()


def triangle_normals(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3) unit normals and (F,) areas in mm^2 of triangles (right-hand rule)."""
    p = points[tris]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    norm = np.linalg.norm(n, axis=1)
    return n / np.maximum(norm, 1e-300)[:, None], 0.5 * norm


def enclosed_volume_mm3(points: np.ndarray, tris: np.ndarray) -> float:
    """Volume enclosed by a triangulated surface, closing each of its holes by a fan from the hole's
    centroid (exact for a planar hole, e.g. an endocardium cut at a base plane; a small hole left by
    a few triangles tagged otherwise is closed where it is, whatever the size of the others).

    Divergence theorem over the surface and the fans. The result is positive (absolute value).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    tris = np.asarray(tris, dtype=np.int64)
    if tris.size == 0:
        return 0.0
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])  # oriented as in the triangles
    key = np.sort(edges, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    border = edges[counts[inv.ravel()] == 1]
    origin = points[tris].reshape(-1, 3).mean(axis=0)
    p = points - origin
    q = p[tris]
    total = np.einsum("ij,ij->i", np.cross(q[:, 0], q[:, 1]), q[:, 2]).sum()
    if border.size:
        nodes, local = np.unique(border, return_inverse=True)
        local = local.reshape(-1, 2)
        graph = sparse.coo_matrix((np.ones(len(local)), (local[:, 0], local[:, 1])), shape=(nodes.size,) * 2)
        _, loop_of_node = connected_components(graph, directed=False)
        loop = loop_of_node[local[:, 0]]
        centroids = np.stack([np.bincount(loop_of_node, weights=p[nodes, d]) for d in range(3)], axis=1)
        centroids /= np.bincount(loop_of_node)[:, None]
        # cap triangles (b, a, centroid) for a border edge (a, b): opposite to the surface's orientation
        a, b, c = p[border[:, 1]], p[border[:, 0]], centroids[loop]
        total += np.einsum("ij,ij->i", np.cross(a, b), c).sum()
    return float(abs(total) / 6.0)


def compact(points: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop points no cell uses. Returns (points, cells renumbered, old index of each kept point)."""
    used = np.unique(cells)
    new_index = np.full(points.shape[0], -1, dtype=np.int64)
    new_index[used] = np.arange(used.size)
    return points[used], new_index[cells], used


def edge_lengths(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Lengths (mm) of the unique edges of a tet mesh."""
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    e = np.sort(cells[:, pairs].reshape(-1, 2), axis=1)
    e = np.unique(e, axis=0)
    return np.linalg.norm(points[e[:, 0]] - points[e[:, 1]], axis=1)


def dihedral_angles_deg(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(M, 6) interior dihedral angles in degrees of each tetrahedron."""
    p = points[cells]
    # Outward face normals for faces opposite vertex 0..3 (orientation-independent via abs below).
    normals = []
    for f in OUTWARD_FACES:
        n = np.cross(p[:, f[1]] - p[:, f[0]], p[:, f[2]] - p[:, f[0]])
        normals.append(n / np.maximum(np.linalg.norm(n, axis=1), 1e-300)[:, None])
    angles = []
    for i in range(4):
        for j in range(i + 1, 4):
            c = np.einsum("ij,ij->i", normals[i], normals[j])
            # Interior dihedral angle between two faces = pi - angle between outward normals.
            angles.append(180.0 - np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
    out = np.stack(angles, axis=1)
    # For a negatively oriented cell all normals flip together, which leaves the angles unchanged.
    return out


def radius_ratios(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(M,) normalised radius ratio 3 r_in / r_circ: 1 for a regular tet, 0 for a degenerate one."""
    p = points[cells]
    vol = np.abs(signed_volumes(points, cells))
    area = np.zeros(cells.shape[0])
    for f in OUTWARD_FACES:
        area += 0.5 * np.linalg.norm(np.cross(p[:, f[1]] - p[:, f[0]], p[:, f[2]] - p[:, f[0]]), axis=1)
    r_in = 3.0 * vol / np.maximum(area, 1e-300)
    # Circumradius: |a|^2 (b x c) + |b|^2 (c x a) + |c|^2 (a x b) over 12 V, with a, b, c from vertex 0.
    a, b, c = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    num = (
        (a * a).sum(1)[:, None] * np.cross(b, c)
        + (b * b).sum(1)[:, None] * np.cross(c, a)
        + (c * c).sum(1)[:, None] * np.cross(a, b)
    )
    r_circ = np.linalg.norm(num, axis=1) / np.maximum(12.0 * vol, 1e-300)
    return np.clip(3.0 * r_in / np.maximum(r_circ, 1e-300), 0.0, 1.0)
