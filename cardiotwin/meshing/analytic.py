"""Analytic verification geometries, returned as the same ``HeartMesh`` as patient meshes.

- ``niederer_slab``: the cuboid of the Niederer et al. 2011 EP benchmark (Phil Trans R Soc A
  369:4331), a structured grid of hexahedra each split into six tetrahedra (Kuhn split, conformal),
  fibres along x.
- ``land_ellipsoid``: the truncated ellipsoid of the Land et al. 2015 mechanics benchmark (Proc R
  Soc A 471:20150641): endocardium r_s 7, r_l 17 mm; epicardium r_s 10, r_l 20 mm; base plane
  z = 5 mm; long axis along z with the apex at negative z. Meshed with gmsh (OpenCASCADE kernel),
  so boundary nodes lie on the exact quadric surfaces.
- ``idealised_biventricle``: the Land LV plus a right-ventricular crescent that shares the septum,
  truncated at the same base plane; cells tagged LV_MYO / RV_MYO.

All coordinates are LPS millimetres. Facet tags are assigned per boundary triangle by testing a
point just outside the triangle against the analytic cavities, which is exact for these shapes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.errors import StageError
from cardiotwin.meshing.tets import boundary_facets, compact, orient_positive, triangle_normals
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid: centre (mm) and semi-axes (mm) along x, y, z."""

    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]

    def level(self, xyz: np.ndarray) -> np.ndarray:
        """(...,) value of sum((x - c)^2 / r^2): < 1 inside, 1 on the surface."""
        d = (np.asarray(xyz, dtype=float) - np.asarray(self.centre_mm)) / np.asarray(self.radii_mm)
        return np.einsum("...i,...i->...", d, d)

    def inside(self, xyz: np.ndarray) -> np.ndarray:
        return self.level(xyz) < 1.0


# Land et al. 2015 benchmark geometry (mm).
LAND_ENDO = Ellipsoid((0.0, 0.0, 0.0), (7.0, 7.0, 17.0))
LAND_EPI = Ellipsoid((0.0, 0.0, 0.0), (10.0, 10.0, 20.0))
LAND_BASE_Z_MM = 5.0

# Idealised RV (mm): a crescent on the -x (patient right) side of the LV, sharing the septum.
BIV_RV_ENDO = Ellipsoid((-8.0, 0.0, 0.0), (10.0, 13.0, 16.0))
BIV_RV_EPI = Ellipsoid((-8.0, 0.0, 0.0), (13.0, 16.0, 19.0))


def niederer_slab(*, dx_mm: float, size_mm: tuple[float, float, float] = (20.0, 7.0, 3.0)) -> HeartMesh:
    """Structured tetrahedral cuboid [0, Lx] x [0, Ly] x [0, Lz] (mm) with node spacing ~``dx_mm``.

    Cells are tagged LV_MYO, all boundary triangles EPI (select faces geometrically, e.g. with
    ``dolfinx.mesh.locate_entities_boundary``). ``point_data`` holds f0 = x, s0 = y, n0 = z.
    """
    if dx_mm <= 0:
        raise ValueError(f"dx_mm must be positive, got {dx_mm}")
    size = np.asarray(size_mm, dtype=float)
    if np.any(size <= 0):
        raise ValueError(f"size_mm must be positive, got {size_mm}")
    n = np.maximum(1, np.round(size / dx_mm).astype(int))
    axes = [np.linspace(0.0, size[d], n[d] + 1) for d in range(3)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    points = np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])

    def vid(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return (i * (n[1] + 1) + j) * (n[2] + 1) + k

    i, j, k = (a.ravel() for a in np.meshgrid(np.arange(n[0]), np.arange(n[1]), np.arange(n[2]), indexing="ij"))
    unit = np.eye(3, dtype=int)
    tets = []
    # Kuhn (Freudenthal) split: one tet per axis permutation, all sharing the diagonal 000-111;
    # neighbouring hexes split their shared face identically, so the mesh is conformal.
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        c0 = np.zeros(3, dtype=int)
        c1 = unit[perm[0]]
        c2 = c1 + unit[perm[1]]
        c3 = np.ones(3, dtype=int)
        tets.append(np.column_stack([vid(i + c[0], j + c[1], k + c[2]) for c in (c0, c1, c2, c3)]))
    cells = orient_positive(points, np.concatenate(tets))
    facets, _ = boundary_facets(cells)
    npts = points.shape[0]
    return HeartMesh(
        points=points,
        cells=cells,
        cell_tags=np.full(cells.shape[0], int(CellTag.LV_MYO), dtype=np.int32),
        facets=facets,
        facet_tags=np.full(facets.shape[0], int(FacetTag.EPI), dtype=np.int32),
        point_data={
            "f0": np.tile([1.0, 0.0, 0.0], (npts, 1)),
            "s0": np.tile([0.0, 1.0, 0.0], (npts, 1)),
            "n0": np.tile([0.0, 0.0, 1.0], (npts, 1)),
        },
        name=f"niederer_slab_dx{dx_mm:g}mm",
    )


@contextlib.contextmanager
def gmsh_session(*, threads: int = 1) -> Iterator[object]:
    """Initialise gmsh quietly for one model and finalise it afterwards (re-entrant safe)."""
    import gmsh

    started = not gmsh.isInitialized()
    if started:
        gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.Verbosity", 1)
    gmsh.option.setNumber("General.NumThreads", threads)
    gmsh.model.add("cardiotwin")
    try:
        yield gmsh
    finally:
        gmsh.model.remove()
        if started:
            gmsh.finalize()


def _occ_ellipsoid(gmsh: object, e: Ellipsoid) -> int:
    occ = gmsh.model.occ  # type: ignore[attr-defined]
    tag = occ.addSphere(0.0, 0.0, 0.0, 1.0)
    occ.dilate([(3, tag)], 0.0, 0.0, 0.0, *e.radii_mm)
    occ.translate([(3, tag)], *e.centre_mm)
    return tag


def _mesh_volumes(gmsh: object, char_length_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the current gmsh model in 3D; return (points (N, 3), positively oriented tets (M, 4))."""
    opt = gmsh.option  # type: ignore[attr-defined]
    opt.setNumber("Mesh.MeshSizeMax", char_length_mm)
    opt.setNumber("Mesh.MeshSizeMin", 0.3 * char_length_mm)
    opt.setNumber("Mesh.MeshSizeFromCurvature", 0)
    opt.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay surfaces
    opt.setNumber("Mesh.Algorithm3D", 1)  # Delaunay volumes
    opt.setNumber("Mesh.Optimize", 1)
    model = gmsh.model  # type: ignore[attr-defined]
    try:
        model.mesh.generate(3)
    except Exception as exc:  # gmsh raises a bare Exception with its log line
        raise StageError(f"gmsh failed to mesh the analytic geometry: {exc}") from exc
    node_tags, coords, _ = model.mesh.getNodes()
    points_all = coords.reshape(-1, 3)
    index = np.zeros(int(node_tags.max()) + 1, dtype=np.int64)
    index[node_tags.astype(np.int64)] = np.arange(node_tags.size)
    elem_types, _, elem_nodes = model.mesh.getElements(3)
    tets = [np.asarray(nodes, dtype=np.int64).reshape(-1, 4) for t, nodes in zip(elem_types, elem_nodes) if t == 4]
    if not tets:
        raise StageError("gmsh produced no tetrahedra for the analytic geometry")
    cells = index[np.concatenate(tets)]
    points, cells, _ = compact(points_all, cells)
    return points, orient_positive(points, cells)


def _tag_facets(
    points: np.ndarray,
    cells: np.ndarray,
    *,
    base_z_mm: float,
    classify: Callable[[np.ndarray], np.ndarray],
    h_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary triangles and tags: BASE on the plane z = base_z_mm, else ``classify`` of a point
    0.1 h outside the triangle centroid."""
    facets, _ = boundary_facets(cells)
    normals, _ = triangle_normals(points, facets)
    centroids = points[facets].mean(axis=1)
    on_base = np.all(np.abs(points[facets][:, :, 2] - base_z_mm) < 1e-6 * max(1.0, abs(base_z_mm)), axis=1)
    tags = classify(centroids + 0.1 * h_mm * normals)
    tags = np.where(on_base, int(FacetTag.BASE), tags).astype(np.int32)
    return facets, tags


def land_ellipsoid(*, char_length_mm: float) -> HeartMesh:
    """Land et al. 2015 truncated LV ellipsoid meshed by gmsh at ``char_length_mm``.

    Facet tags LV_ENDO, EPI, BASE (plane z = 5 mm); cells LV_MYO. Apex at (0, 0, -17) endo and
    (0, 0, -20) epi.
    """
    if char_length_mm <= 0:
        raise ValueError(f"char_length_mm must be positive, got {char_length_mm}")
    with gmsh_session() as gmsh:
        occ = gmsh.model.occ
        epi = _occ_ellipsoid(gmsh, LAND_EPI)
        endo = _occ_ellipsoid(gmsh, LAND_ENDO)
        wall, _ = occ.cut([(3, epi)], [(3, endo)])
        box = occ.addBox(-30.0, -30.0, -30.0, 60.0, 60.0, 30.0 + LAND_BASE_Z_MM)
        trunc, _ = occ.intersect(wall, [(3, box)])
        occ.synchronize()
        gmsh.model.addPhysicalGroup(3, [t for d, t in trunc if d == 3], int(CellTag.LV_MYO))
        points, cells = _mesh_volumes(gmsh, char_length_mm)

    def classify(p: np.ndarray) -> np.ndarray:
        return np.where(LAND_ENDO.inside(p), int(FacetTag.LV_ENDO), int(FacetTag.EPI))

    facets, ftags = _tag_facets(points, cells, base_z_mm=LAND_BASE_Z_MM, classify=classify, h_mm=char_length_mm)
    log.info("Land ellipsoid: %d points, %d tets at %.2f mm", points.shape[0], cells.shape[0], char_length_mm)
    return HeartMesh(
        points=points,
        cells=cells,
        cell_tags=np.full(cells.shape[0], int(CellTag.LV_MYO), dtype=np.int32),
        facets=facets,
        facet_tags=ftags,
        name=f"land_ellipsoid_h{char_length_mm:g}mm",
    )

def _prolate_to_xyz(tsv: np.ndarray) -> np.ndarray:
    """Land 2015 eq. (3.1): (K, 3) prolate (t, s, v) -> (K, 3) points (mm), s in [0, 1] apex -> base."""
    (rs0, _, rl0), (rs1, _, rl1) = LAND_ENDO.radii_mm, LAND_EPI.radii_mm
    t, s, v = tsv[:, 0], tsv[:, 1], tsv[:, 2]
    rs, rl = rs0 + (rs1 - rs0) * t, rl0 + (rl1 - rl0) * t
    u = -np.pi + s * (np.pi - np.arccos(LAND_BASE_Z_MM / rl))
    xyz = np.column_stack([rs * np.sin(u) * np.cos(v), rs * np.sin(u) * np.sin(v), rl * np.cos(u)])
    xyz[s == 1.0, 2] = LAND_BASE_Z_MM  # exactly on the plane (cos(arccos(.)) rounds)
    return xyz


def land_ellipsoid_prolate(*, n_wall: int, n_long: int, n_circ: int) -> HeartMesh:
    """Structured Land ellipsoid in the benchmark's prolate coordinates (Land 2015, eq. 3.1).

    x = r_s(t) sin(u) cos(v), y = r_s(t) sin(u) sin(v), z = r_l(t) cos(u) with r_s = 7 + 3t,
    r_l = 17 + 3t (mm), t in [0, 1] endo -> epi, u from -pi (apex) to -arccos(5 / r_l) (base
    plane z = 5), v in [0, 2 pi). A grid of ``n_wall`` x ``n_long`` x ``n_circ`` hexahedra in
    (t, u, v), each split into six tetrahedra (Kuhn split, conformal also across the periodic
    seam); at the apex the hexahedra collapse onto the long axis and the split's degenerate
    tetrahedra are dropped. Unlike the gmsh mesh, the number of elements across the 3 mm wall
    is set directly. Tags as ``land_ellipsoid`` (BASE, LV_ENDO, EPI; cells LV_MYO);
    ``point_data["prolate_tsv"]`` holds each node's (t, s, v), s = (u + pi) / (pi - arccos(5 / r_l)).
    """
    if min(n_wall, n_long) < 1 or n_circ < 3:
        raise ValueError(f"need n_wall, n_long >= 1 and n_circ >= 3, got {n_wall}, {n_long}, {n_circ}")
    t = np.linspace(0.0, 1.0, n_wall + 1)
    s = np.linspace(0.0, 1.0, n_long + 1)
    v = 2.0 * np.pi * np.arange(n_circ) / n_circ
    # node ids: apex (i) -> i; ring node (i, j >= 1, k) -> (n_wall + 1) + (i * n_long + j - 1) * n_circ + k
    n_apex = n_wall + 1
    ti, sj, vk = np.meshgrid(np.arange(n_wall + 1), np.arange(1, n_long + 1), np.arange(n_circ), indexing="ij")
    ti, sj, vk = ti.ravel(), sj.ravel(), vk.ravel()
    tsv = np.concatenate([np.column_stack([t, np.zeros(n_apex), np.zeros(n_apex)]),
                          np.column_stack([t[ti], s[sj], v[vk]])])
    points = _prolate_to_xyz(tsv)

    def node(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.where(j == 0, i, n_apex + (i * n_long + np.maximum(j, 1) - 1) * n_circ + k % n_circ)

    i, j, k = (a.ravel() for a in np.meshgrid(np.arange(n_wall), np.arange(n_long), np.arange(n_circ), indexing="ij"))
    unit = np.eye(3, dtype=int)
    tets = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        corners = (np.zeros(3, dtype=int), unit[perm[0]], unit[perm[0]] + unit[perm[1]], np.ones(3, dtype=int))
        tets.append(np.column_stack([node(i + c[0], j + c[1], k + c[2]) for c in corners]))
    cells = np.concatenate(tets)
    distinct = np.all(np.diff(np.sort(cells, axis=1), axis=1) > 0, axis=1)  # collapsed at the apex
    cells = orient_positive(points, cells[distinct])
    facets, _ = boundary_facets(cells)
    t_index = np.concatenate([np.arange(n_apex), ti])
    ft = t_index[facets]
    tags = np.full(facets.shape[0], int(FacetTag.BASE), dtype=np.int32)  # the rest lie on z = 5
    tags[np.all(ft == 0, axis=1)] = int(FacetTag.LV_ENDO)
    tags[np.all(ft == n_wall, axis=1)] = int(FacetTag.EPI)
    on_base = np.all(np.abs(points[facets][:, :, 2] - LAND_BASE_Z_MM) < 1e-9, axis=1)
    if not np.all(on_base | (tags != int(FacetTag.BASE))):
        raise StageError("land_ellipsoid_prolate: a boundary triangle is neither endo, epi nor base")
    log.info("Land ellipsoid (prolate grid %d x %d x %d): %d points, %d tets", n_wall, n_long, n_circ,
             points.shape[0], cells.shape[0])
    return HeartMesh(
        points=points,
        cells=cells,
        cell_tags=np.full(cells.shape[0], int(CellTag.LV_MYO), dtype=np.int32),
        facets=facets,
        facet_tags=tags,
        point_data={"prolate_tsv": tsv},
        name=f"land_ellipsoid_prolate_{n_wall}x{n_long}x{n_circ}",
    )



# Edges of a tetrahedron in the basix / DOLFINx order of the P2 (10-node) cell: the edge
# opposite-vertex convention e0 = (2, 3), e1 = (1, 3), e2 = (1, 2), e3 = (0, 3), e4 = (0, 2),
# e5 = (0, 1); and of a triangle: e0 = (1, 2), e1 = (0, 2), e2 = (0, 1).
_TET_EDGES = np.array([[2, 3], [1, 3], [1, 2], [0, 3], [0, 2], [0, 1]], dtype=np.int64)
_TRI_EDGES = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)


def _project_onto(e: Ellipsoid, x: np.ndarray, *, keep_z: np.ndarray) -> np.ndarray:
    """Points x (K, 3) moved onto the surface of ``e`` (centred on the z axis).

    Where ``keep_z`` (or where the surface circle at that height is wide, |z| < 0.8 r_z), only
    (x, y) is scaled, so points on the base plane stay on it; near the apex, where that
    scaling is ill-conditioned, the point is scaled radially from the centre.
    """
    c = np.asarray(e.centre_mm)
    rx, _, rz = e.radii_mm
    d = x - c
    rho = np.hypot(d[:, 0], d[:, 1])
    ring = np.clip(1.0 - (d[:, 2] / rz) ** 2, 0.0, None)
    use_xy = keep_z | ((np.abs(d[:, 2]) < 0.8 * rz) & (rho > 1e-9))
    out = d.copy()
    scale_xy = rx * np.sqrt(ring) / np.maximum(rho, 1e-300)
    out[use_xy, :2] *= scale_xy[use_xy, None]
    radial = ~use_xy
    out[radial] /= np.sqrt(e.level(x[radial]))[:, None]
    return out + c


def land_ellipsoid_quadratic(
    mesh: HeartMesh, *, base_z_mm: float = LAND_BASE_Z_MM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second-order (10-node) geometry of a ``land_ellipsoid`` mesh: curved endo/epi faces.

    Every edge gets a mid-node: at the edge midpoint inside the wall and on the base plane, and
    projected onto the analytic endocardial / epicardial ellipsoid for edges of LV_ENDO / EPI
    boundary triangles (edges of the base rim are moved within the plane z = ``base_z_mm``).
    A ``land_ellipsoid_prolate`` grid (``point_data["prolate_tsv"]``) instead gets every mid-node
    at the parametric midpoint, so its thin curved elements stay valid through the wall.
    The straight-sided mesh faces the quadric surfaces at O(h^2) distance (a faceted apex,
    a cavity volume short by O(h^2)); the quadratic map places those surfaces to O(h^3).

    Returns ``(points (N + E, 3), cells (M, 10), facets (F, 6))``: the first N points are
    ``mesh.points``; cells and facets list their vertices then their edge mid-nodes in the
    basix / DOLFINx order (tetrahedron edges (2,3), (1,3), (1,2), (0,3), (0,2), (0,1); triangle
    edges (1,2), (0,2), (0,1)), facets in ``mesh.facets`` order.
    """
    pts = np.asarray(mesh.points, dtype=np.float64)
    cells = np.asarray(mesh.cells, dtype=np.int64)
    facets = np.asarray(mesh.facets, dtype=np.int64)
    n = pts.shape[0]
    cell_edges = np.sort(cells[:, _TET_EDGES].reshape(-1, 2), axis=1)
    edges, inverse = np.unique(cell_edges[:, 0] * n + cell_edges[:, 1], return_inverse=True)
    a, b = edges // n, edges % n
    mid = 0.5 * (pts[a] + pts[b])
    facet_edges = np.sort(facets[:, _TRI_EDGES].reshape(-1, 2), axis=1)
    facet_edge_id = np.searchsorted(edges, facet_edges[:, 0] * n + facet_edges[:, 1])
    if not np.array_equal(edges[facet_edge_id], facet_edges[:, 0] * n + facet_edges[:, 1]):
        raise StageError("land_ellipsoid_quadratic: boundary triangles are not faces of the cells")
    if "prolate_tsv" in mesh.point_data:  # structured grid: every mid-node on the parametric map
        tsv = mesh.point_data["prolate_tsv"]
        ta, tb = tsv[a], tsv[b]
        dv = np.mod(tb[:, 2] - ta[:, 2] + np.pi, 2 * np.pi) - np.pi
        v_mid = np.where(ta[:, 1] == 0, tb[:, 2], np.where(tb[:, 1] == 0, ta[:, 2], ta[:, 2] + 0.5 * dv))
        mid = _prolate_to_xyz(np.column_stack([0.5 * (ta[:, 0] + tb[:, 0]), 0.5 * (ta[:, 1] + tb[:, 1]), v_mid]))
    else:
        on_plane = np.abs(pts[:, 2] - base_z_mm) < 1e-6 * max(1.0, abs(base_z_mm))
        rim = on_plane[a] & on_plane[b]
        for tag, surface in ((FacetTag.LV_ENDO, LAND_ENDO), (FacetTag.EPI, LAND_EPI)):
            ids = np.unique(facet_edge_id.reshape(-1, 3)[mesh.facet_tags == int(tag)])
            mid[ids] = _project_onto(surface, mid[ids], keep_z=rim[ids])
    points = np.concatenate([pts, mid])
    cells10 = np.concatenate([cells, n + inverse.reshape(-1, 6)], axis=1)
    facets6 = np.concatenate([facets, n + facet_edge_id.reshape(-1, 3)], axis=1)
    return points, cells10, facets6


def idealised_biventricle(*, char_length_mm: float) -> HeartMesh:
    """Land LV ellipsoid plus an RV crescent sharing the septum, truncated at z = 5 mm.

    RV endocardium: ellipsoid centred (-8, 0, 0) with semi-axes (10, 13, 16) mm minus the LV;
    RV epicardium (13, 16, 19) mm. Cells LV_MYO (inside the LV epicardium) / RV_MYO; facets LV_ENDO,
    RV_ENDO (RV free wall and the septal LV epicardium facing the RV cavity), EPI, BASE.
    """
    if char_length_mm <= 0:
        raise ValueError(f"char_length_mm must be positive, got {char_length_mm}")
    with gmsh_session() as gmsh:
        occ = gmsh.model.occ
        lv_epi = _occ_ellipsoid(gmsh, LAND_EPI)
        lv_endo = _occ_ellipsoid(gmsh, LAND_ENDO)
        lv_epi_2 = _occ_ellipsoid(gmsh, LAND_EPI)
        rv_epi = _occ_ellipsoid(gmsh, BIV_RV_EPI)
        rv_endo = _occ_ellipsoid(gmsh, BIV_RV_ENDO)
        lv_wall, _ = occ.cut([(3, lv_epi)], [(3, lv_endo)])
        rv_wall, _ = occ.cut([(3, rv_epi)], [(3, rv_endo), (3, lv_epi_2)])
        box_lv = occ.addBox(-40.0, -40.0, -40.0, 80.0, 80.0, 40.0 + LAND_BASE_Z_MM)
        box_rv = occ.addBox(-40.0, -40.0, -40.0, 80.0, 80.0, 40.0 + LAND_BASE_Z_MM)
        lv_t, _ = occ.intersect(lv_wall, [(3, box_lv)])
        rv_t, _ = occ.intersect(rv_wall, [(3, box_rv)])
        pieces, _ = occ.fragment(lv_t, rv_t)  # conformal interface along the RV insertion
        occ.synchronize()
        gmsh.model.addPhysicalGroup(3, [t for d, t in pieces if d == 3], 1)
        points, cells = _mesh_volumes(gmsh, char_length_mm)

    centroids = points[cells].mean(axis=1)
    cell_tags = np.where(LAND_EPI.inside(centroids), int(CellTag.LV_MYO), int(CellTag.RV_MYO)).astype(np.int32)

    def classify(p: np.ndarray) -> np.ndarray:
        tags = np.full(p.shape[0], int(FacetTag.EPI), dtype=np.int32)
        tags[BIV_RV_ENDO.inside(p) & ~LAND_EPI.inside(p)] = int(FacetTag.RV_ENDO)
        tags[LAND_ENDO.inside(p)] = int(FacetTag.LV_ENDO)
        return tags

    facets, ftags = _tag_facets(points, cells, base_z_mm=LAND_BASE_Z_MM, classify=classify, h_mm=char_length_mm)
    log.info("idealised biventricle: %d points, %d tets at %.2f mm", points.shape[0], cells.shape[0], char_length_mm)
    return HeartMesh(
        points=points,
        cells=cells,
        cell_tags=cell_tags,
        facets=facets,
        facet_tags=ftags,
        name=f"idealised_biventricle_h{char_length_mm:g}mm",
    )
