"""Uniform refinement of a beat's input mesh (``mechanics.refine``): same geometry, 8 children per
tetrahedron, boundary and tags kept, point data interpolated exactly for linear fields."""

from __future__ import annotations

import itertools

import meshio
import numpy as np

from cardiotwin.mechanics.outputs import read_em_mesh
from cardiotwin.mechanics.refine import refine_activation_vtu, refine_tets


def _box(n: int = 3):
    """A unit-ish box [0,2]x[0,1]x[0,1] in n^3 cubes, 6 tetrahedra each (Kuhn), boundary triangles tagged by side."""
    g = np.linspace(0, 1, n + 1)
    pts = np.array(list(itertools.product(g * 2, g, g)))
    idx = np.arange(len(pts)).reshape(n + 1, n + 1, n + 1)
    cells = []
    for i, j, k in itertools.product(range(n), repeat=3):
        c = [idx[i + a, j + b, k + d] for a, b, d in itertools.product((0, 1), repeat=3)]
        for perm in itertools.permutations(range(3)):
            v, path = [0, 0, 0], [c[0]]
            for ax in perm:
                v[ax] = 1
                path.append(c[v[0] * 4 + v[1] * 2 + v[2]])
            cells.append(path)
    cells = np.array(cells)
    faces = np.sort(np.concatenate([cells[:, [0, 1, 2]], cells[:, [0, 1, 3]], cells[:, [0, 2, 3]], cells[:, [1, 2, 3]]]), 1)
    uniq, count = np.unique(faces, axis=0, return_counts=True)
    bnd = uniq[count == 1]
    tags = np.where(np.isclose(pts[bnd][:, :, 0], 0).all(1), 1, np.where(np.isclose(pts[bnd][:, :, 0], 2).all(1), 2, 3))
    return pts, cells, bnd, tags


def _volume(pts, cells):
    v = pts[cells]
    return np.einsum("ij,ij->i", np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), v[:, 3] - v[:, 0]) / 6


def test_refinement_keeps_geometry_boundary_and_linear_fields(tmp_path):
    pts, cells, bnd, tags = _box()
    src = tmp_path / "activation.vtu"
    # fibres turning through the wall like a helix (120 deg across the box): the fine P1 field is the
    # coarse one, so the new points carry the plain (shorter than unit) mean of the ends
    angle = np.radians(60 - 120 * pts[:, 2])
    f0 = np.stack([np.cos(angle), np.sin(angle), 0 * angle], axis=1)
    meshio.write(src, meshio.Mesh(pts, [("tetra", cells), ("triangle", bnd)],
                                  point_data={"activation_time_ms": 10 + 3 * pts[:, 0] - 2 * pts[:, 2], "f0": f0},
                                  cell_data={"facet_tags": [np.zeros(len(cells), np.int32), tags.astype(np.int32)]}))
    fine = refine_activation_vtu(src, tmp_path / "fine" / "activation.vtu")
    mesh, act = read_em_mesh(fine)
    assert len(mesh.cells) == 8 * len(cells) and len(mesh.facets) == 4 * len(bnd)
    vol = _volume(mesh.points, mesh.cells)
    assert vol.min() > 0 and np.isclose(vol.sum(), 2.0)  # positive, same total volume
    np.testing.assert_allclose(vol, _volume(pts, cells)[0] / 8)  # every child is 1/8 of its (equal) parent
    # the refined boundary triangles are exactly the faces of the refined tetrahedra that no other shares
    c = mesh.cells
    faces = np.sort(np.concatenate([c[:, [0, 1, 2]], c[:, [0, 1, 3]], c[:, [0, 2, 3]], c[:, [1, 2, 3]]]), 1)
    uniq, count = np.unique(faces, axis=0, return_counts=True)
    assert {tuple(f) for f in uniq[count == 1]} == {tuple(f) for f in np.sort(mesh.facets, 1)}
    assert np.bincount(mesh.facet_tags).tolist()[1:] == (4 * np.bincount(tags)[1:]).tolist()
    np.testing.assert_allclose(act, 10 + 3 * mesh.points[:, 0] - 2 * mesh.points[:, 2], atol=1e-12)
    n = len(pts)
    np.testing.assert_allclose(mesh.point_data["f0"][:n], f0)
    _, _, _, edges, _, _ = refine_tets(pts, cells, bnd)
    np.testing.assert_allclose(mesh.point_data["f0"][n:], 0.5 * (f0[edges[:, 0]] + f0[edges[:, 1]]))


def test_refined_tetrahedra_split_along_the_shortest_diagonal():
    # a stretched tetrahedron: the 8 children tile it and are no flatter than the parent needs
    pts = np.array([[0, 0, 0], [4, 0, 0], [0, 1, 0], [3.5, 0.5, 1.0]])
    p, c, f, edges, parent, _ = refine_tets(pts, np.array([[0, 1, 2, 3]]), np.array([[0, 1, 2]]))
    assert len(p) == 10 and len(edges) == 6 and c.shape == (8, 4) and f.shape == (4, 3)
    vol = _volume(p, c)
    np.testing.assert_allclose(vol, _volume(pts, np.array([[0, 1, 2, 3]]))[0] / 8)
    assert parent.tolist() == [0] * 8
    # the inner octahedron is cut along its shortest diagonal: here midpoint(0,3)-midpoint(1,2) (0.61 mm
    # against 0.94 and 3.79): new points 4 + index of the edge in (01, 02, 03, 12, 13, 23)
    assert all({6, 7} <= set(t) for t in c[4:].tolist())
