"""Fine marching-cubes surface -> closed surface of uniform triangles at the target edge length.

Two maintained libraries do the work:

- ``pyacvd`` (approximated centroidal Voronoi diagram clustering, Valette & Chassery 2004 /
  Valette, Chassery & Prost 2008): the fine surface's vertices are grouped into as many clusters
  of equal area as an equilateral triangulation at the target edge has vertices; the clusters'
  dual is a surface of near-equilateral triangles at that edge, whatever the fine surface's
  resolution. Unlike quadric decimation it never keeps a fine patch where a wall is thin. Its
  vertices are then fitted to the fine surface in the mean, so that the chords of a curved wall do
  not cut volume off (``_fit_to_surface``).
- ``pymeshfix`` (MeshFix, Attene 2010): removes what clustering can leave across a wall thinner
  than the edge (non-manifold edges, self-intersecting or degenerate triangles) and closes the
  holes it made, so the tetrahedral mesher gets a closed, manifold, self-intersection-free surface.
"""

from __future__ import annotations

import logging

import numpy as np

from cardiotwin.errors import StageError

log = logging.getLogger(__name__)


def target_triangles(area_mm2: float, edge_mm: float) -> float:
    """Equilateral triangles of edge ``edge_mm`` that tile ``area_mm2``."""
    return float(area_mm2 / (np.sqrt(3.0) / 4.0 * edge_mm**2))


def open_edges(surface):
    """Boundary and non-manifold edges of ``surface`` (pyvista PolyData of lines)."""
    return surface.extract_feature_edges(boundary_edges=True, non_manifold_edges=True, feature_edges=False,
                                         manifold_edges=False)


def is_closed(surface) -> bool:
    """True when ``surface`` has no boundary and no non-manifold edge."""
    return open_edges(surface).n_cells == 0


def mean_edge_mm(surface) -> float:
    """Mean edge length (mm) of a triangulated surface (edges shared by two triangles count twice)."""
    f = np.asarray(surface.faces).reshape(-1, 4)[:, 1:]
    p = np.asarray(surface.points)
    e = np.concatenate([p[f[:, 0]] - p[f[:, 1]], p[f[:, 1]] - p[f[:, 2]], p[f[:, 2]] - p[f[:, 0]]])
    return float(np.linalg.norm(e, axis=1).mean())


def triangles_of(surface) -> np.ndarray:
    """(F, 3) vertex indices of a triangulated pyvista surface."""
    return np.asarray(surface.faces).reshape(-1, 4)[:, 1:]


def polydata(points: np.ndarray, triangles: np.ndarray):
    """pyvista PolyData from (N, 3) points and (F, 3) triangles."""
    import pyvista as pv

    triangles = np.asarray(triangles, dtype=np.int64)
    return pv.PolyData(np.asarray(points, dtype=float),
                       np.hstack([np.full((triangles.shape[0], 1), 3), triangles]).ravel())


def repair_surface(surface, *, source: str = "label map"):
    """MeshFix repair: the largest component, closed, manifold, free of self-intersections and
    degenerate triangles. Raises StageError when nothing closed is left."""
    import pymeshfix

    fix = pymeshfix.MeshFix(np.asarray(surface.points, dtype=float), triangles_of(surface).astype(np.int32))
    fix.repair(joincomp=False, remove_smallest_components=True)
    points, tris = np.asarray(fix.points), np.asarray(fix.faces)
    if tris.shape[0] < 4:
        raise StageError(f"{source}: surface repair (MeshFix) left no closed surface; the myocardium is not a "
                         "closed wall at this edge length")
    return polydata(points, tris)


def _project_centroids(centroids: np.ndarray, surface, clusters: np.ndarray) -> np.ndarray:
    """(C, 3) each cluster centroid moved to the nearest point of ``surface`` (the clustered fine
    surface; centroid c belongs to cluster c) where that point lies on a triangle of its own cluster,
    else (the nearest point is across a wall thinner than the edge) to its cluster's nearest vertex."""
    points = np.asarray(surface.points)
    cells, closest = surface.find_closest_cell(centroids, return_closest_point=True)
    faces = triangles_of(surface)
    own = (clusters[faces[np.asarray(cells)]] == np.arange(len(centroids))[:, None]).any(axis=1)
    out = np.asarray(closest, dtype=float).copy()
    if own.all():
        return out
    ok = clusters >= 0
    idx, cl = np.flatnonzero(ok), clusters[ok]
    d2 = ((points[idx] - centroids[cl]) ** 2).sum(axis=1)
    order = np.lexsort((d2, cl))
    first = order[np.r_[True, cl[order][1:] != cl[order][:-1]]]
    nearest_own = centroids.copy()
    nearest_own[cl[first]] = points[idx[first]]
    out[~own] = nearest_own[~own]
    return out


def _fit_to_surface(coarse, fine, clusters: np.ndarray, *, edge_mm: float, iterations: int = 2) -> np.ndarray:
    """(C, 3) the vertices of ``coarse`` (vertex c: cluster c of the ``fine`` surface's points) moved
    along their normals so that ``fine`` lies on both sides of ``coarse`` in equal measure near each.

    Vertices on a curved surface span chords inside it: a convex piece loses, a concave one gains
    about a sixth of the edge squared times the curvature, on the order of 2 % of a small LV
    cavity at a 5 mm edge. Each vertex moves by the mean signed distance of its cluster's fine
    points to ``coarse`` (a least-squares fit in place of interpolation), averaged with its
    neighbours' (the chords' loss varies with the curvature, smoothly; what varies from vertex to
    vertex is noise that would leave flat tets between surface vertices); points farther than a
    quarter edge (across a wall thinner than the edge) are left out, vertices on a crease (the base
    rim: a face turned more than 30 degrees from the vertex normal) stay, and no vertex moves more
    than a tenth of the edge.
    """
    pts = np.asarray(coarse.points, dtype=float).copy()
    tris = triangles_of(coarse)
    fine_pts = np.asarray(fine.points, dtype=float)
    ok = clusters >= 0
    fine_pts, cl = fine_pts[ok], clusters[ok]
    n = pts.shape[0]
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    degree = np.bincount(edges.ravel(), minlength=n).astype(float)
    for _ in range(iterations):
        surf = polydata(pts, tris).compute_normals(cell_normals=True, point_normals=True, auto_orient_normals=True,
                                                   consistent_normals=True, split_vertices=False)
        if surf.n_points != n:
            break
        cell_normals = np.asarray(surf.cell_data["Normals"])
        normals = np.asarray(surf.point_data["Normals"])
        cells, closest = surf.find_closest_cell(fine_pts, return_closest_point=True)
        d = np.einsum("ij,ij->i", fine_pts - closest, cell_normals[cells])
        near = np.abs(d) <= 0.25 * edge_mm
        total = np.bincount(cl[near], weights=d[near], minlength=n)
        count = np.bincount(cl[near], minlength=n)
        shift = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        turn = np.ones(n)
        np.minimum.at(turn, tris.ravel(), np.einsum("ij,ij->i", normals[tris.ravel()], np.repeat(cell_normals, 3, axis=0)))
        crease = turn < np.cos(np.radians(30.0))
        for _ in range(2):  # each vertex with its neighbours (edges shared by two triangles count twice)
            shift[crease] = 0.0
            nb = np.bincount(edges[:, 0], weights=shift[edges[:, 1]], minlength=n) + \
                np.bincount(edges[:, 1], weights=shift[edges[:, 0]], minlength=n)
            shift = 0.5 * (shift + np.divide(nb, degree, out=np.zeros(n), where=degree > 0))
        shift[crease] = 0.0
        pts = pts + np.clip(shift, -0.1 * edge_mm, 0.1 * edge_mm)[:, None] * normals
    return pts


def _snap_to_plane(points: np.ndarray, fine, clusters: np.ndarray, plane, *, edge_mm: float) -> np.ndarray:
    """(C, 3) ``points`` (vertex c: cluster c of the ``fine`` surface's points) with every vertex whose
    cluster holds a piece of the fine surface's planar cut (points within half an edge of ``plane``
    whose normal is within 37 degrees of the plane's normal: the base cap, as ``volume.tag_facets``
    tells it) moved onto the plane, along the wall's surface where the cluster also holds wall.

    The cut is the intersection of the myocardium with a half-space: a flat cap meeting the walls at
    a sharp rim. The clusters along the rim straddle both, and their vertices, fitted in the mean,
    sit a fraction of an edge below the plane: the remeshed surface bevels the rim, and the cavities
    closed by the base lose a ring of that height (the sample CT's RV endocardium at a 5 mm edge:
    its rim 0.4 mm lower than the fine surface's, 1.5 mL; at 2.5 mm 0.1 mm, 0.3 mL). On the plane
    the cap is flat and the rim where the walls meet it.
    """
    fine_pts = np.asarray(fine.points, dtype=float)
    normals = np.asarray(fine.compute_normals(point_normals=True, cell_normals=False, auto_orient_normals=True,
                                              split_vertices=False).point_data["Normals"])
    n = np.asarray(plane.normal, dtype=float)
    near = (np.abs(plane.signed_distance_mm(fine_pts)) < 0.5 * edge_mm) & (clusters >= 0)
    cap = near & (normals @ n > 0.8)
    on_cap = np.zeros(points.shape[0], dtype=bool)
    on_cap[clusters[cap]] = True
    # The direction to move along: within the wall's surface (the mean normal m of the cluster's
    # points off the cap, near the plane), towards the plane, t = n - (n.m) m; a vertex of the cap
    # alone (or of a wall nearly parallel to the plane) along n.
    side = near & ~cap
    m = np.stack([np.bincount(clusters[side], weights=normals[side, d], minlength=points.shape[0]) for d in range(3)],
                 axis=1)
    norm = np.linalg.norm(m, axis=1)
    m = np.divide(m, norm[:, None], out=np.zeros_like(m), where=norm[:, None] > 0)
    t = n[None, :] - (m @ n)[:, None] * m
    tn = t @ n
    t = np.where((tn > 0.25)[:, None], t / np.maximum(tn, 0.25)[:, None], n[None, :])
    out = points.copy()
    out[on_cap] -= plane.signed_distance_mm(points[on_cap])[:, None] * t[on_cap]
    return out


def remesh_uniform(surface, *, edge_mm: float, source: str = "label map", plane=None):
    """Closed surface of near-equilateral triangles of edge ~``edge_mm`` covering ``surface``.

    ACVD clustering (pyacvd) to the vertex count of an equilateral triangulation at ``edge_mm``
    (about half its triangle count), then MeshFix repair. A fine surface is subdivided first when
    it has fewer than four vertices per cluster. With ``plane`` (a ``surface.BasePlane`` where the
    surface is cut flat), the vertices of the cut and its rim are put on the plane
    (``_snap_to_plane``). Raises StageError when the result is not closed.
    """
    import pyacvd

    n_clusters = max(int(round(target_triangles(surface.area, edge_mm) / 2.0)), 50)
    clustering = pyacvd.Clustering(surface)
    if surface.n_points < 4 * n_clusters:
        clustering.subdivide(int(np.ceil(np.log2(4 * n_clusters / surface.n_points) / 2)) + 1)
    clustering.cluster(n_clusters)
    # The clusters' centroids lie slightly off a curved surface: each goes to the nearest point of it
    # (one VTK locator query; pyacvd's own ray casting against 1000 faces per cluster costs minutes at
    # 1.5 mm), unless that point is across a wall thinner than the edge (not on its own cluster), which
    # folds the wall (real CT crop's built apical wall at 5 mm: LV cavity -12 %): then to its
    # cluster's nearest vertex (everywhere, that gives triangles down to 0.4 deg at 1.5 mm).
    coarse = clustering.create_mesh(moveclus=False, flipnorm=True, clean=False)
    coarse.points = _project_centroids(np.asarray(coarse.points, dtype=float), clustering.mesh,
                                       np.asarray(clustering.clusters))
    coarse.points = _fit_to_surface(coarse, clustering.mesh, np.asarray(clustering.clusters), edge_mm=edge_mm)
    if plane is not None:
        coarse.points = _snap_to_plane(np.asarray(coarse.points, dtype=float), clustering.mesh,
                                       np.asarray(clustering.clusters), plane, edge_mm=edge_mm)
    coarse = coarse.clean()
    repaired = repair_surface(coarse, source=source)
    if not is_closed(repaired):
        raise StageError(f"{source}: the remeshed myocardial surface is not closed after repair")
    log.info("surface remeshed: %d -> %d triangles (mean edge %.2f -> %.2f mm; %d triangles changed by repair)",
             surface.n_cells, repaired.n_cells, mean_edge_mm(surface), mean_edge_mm(repaired),
             abs(repaired.n_cells - coarse.n_cells))
    return repaired
