"""Patient meshing: label map -> tagged biventricular tetrahedral HeartMesh.

Mesher choice: TetGen 1.6 (through the maintained ``tetgen`` wheel of the PyVista project). It
builds a constrained Delaunay tetrahedralisation that keeps the given watertight surface, refines
by radius-edge ratio, minimum dihedral angle and a maximum volume (the target edge length), and
runs its sliver-removal optimisation, in a few seconds for ~300k tets. gmsh is the better tool for
CAD-like analytic geometry (``analytic.py``), but remeshing a discrete marching-cubes surface
with it needs a surface reparametrisation that fails on biventricular topologies
("Wrong topology of boundary mesh for parametrization"); so the surface is improved here
(decimation + tangential relaxation) and TetGen fills the volume. TetGen's refinement bounds the
radius-edge ratio, which leaves slivers (worst ~3 deg on the sample CT at 1.5 mm); ``optimize``
then moves interior vertices to maximise the worst dihedral angle around them and removes the
few flat caps that sit on the surface where that keeps the surface's topology (no hole through a
wall one tet thick), which brings the minimum dihedral angle near or above 5 deg without moving
the boundary (so volumes and tags are unaffected). ``quality.json`` reports the boundary
surface's genus: 0 for a closed wall. TetGen runs in a child process in a
temporary folder (``tetgen_run``): it leaves no ``_skipped.*`` files and its crashes become errors.

Tags: cells take the myocardial label of the voxel holding their centroid (nearest myocardial
voxel where smoothing moved the wall); boundary triangles lying on the base plane (normal along
the plane normal, within half an edge) are BASE, others look a short distance outward along their
normal: LV blood -> LV_ENDO, RV blood -> RV_ENDO, anything else -> EPI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardiotwin.anatomy import CellTag, FacetTag, Label
from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.meshing.surface import (
    MYO_LABELS,
    BasePlane,
    clean_labels,
    decimation_break_points,
    decimation_shortfall,
    find_base_plane,
    labelled_volume_below_plane_ml,
    myocardium_surface,
    resample_thick_slices,
    thicken_thin_walls,
)
from cardiotwin.meshing.optimize import improve_tets
from cardiotwin.meshing.tetgen_run import SurfaceRejectedError, run_tetgen
from cardiotwin.meshing.tets import (boundary_facets, boundary_genus, face_connected_components, orient_positive,
                                     signed_volumes, triangle_normals)
from cardiotwin.types import HeartMesh, LabelMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshConfig:
    """Meshing parameters. ``base_point_mm`` / ``base_normal`` (LPS, normal towards the atria)
    replace the automatic base plane when both are given."""

    edge_mm: float = quantity(1.5, "mm", doc="target tetrahedron edge length")
    base_margin_mm: float = quantity(2.0, "mm", doc="cut this far below the valve plane")
    min_dihedral_deg: float = quantity(5.0, "deg", doc="tets below this are improved (interior vertices moved, surface caps removed)")
    max_volume_error: float = quantity(0.05, "", doc="allowed |mesh - label| / label myocardial volume")
    smoothing_iterations: int = 30
    min_wall_fraction: float = quantity(
        0.8, "", doc="where decimation stops short of the target edge, walls thinner than this fraction of edge_mm "
        "(then than one edge) are thickened outwards first (0: never)")
    base_point_mm: tuple[float, float, float] | None = None
    base_normal: tuple[float, float, float] | None = None

    def validate(self) -> None:
        if not 0.5 <= self.edge_mm <= 5.0:
            raise ValueError(f"edge_mm must be within 0.5-5 mm, got {self.edge_mm}")
        if not 0.0 <= self.min_wall_fraction <= 1.0:
            raise ValueError(f"min_wall_fraction must be within 0-1, got {self.min_wall_fraction}")
        if (self.base_point_mm is None) != (self.base_normal is None):
            raise ValueError("give both base_point_mm and base_normal, or neither")
        if self.base_normal is not None and np.linalg.norm(self.base_normal) < 1e-9:
            raise ValueError("base_normal must be a non-zero vector")


TETGEN_OPTIONS: dict[str, float | int | bool] = {
    "quality": True, "minratio": 1.5, "mindihedral": 10.0,
    "opt_iterations": 10, "opt_max_flip_level": 5, "optmaxdihedral": 170.0,
}


def tetrahedralise(surface, *, edge_mm: float, source: str = "label map") -> tuple[np.ndarray, np.ndarray]:
    """TetGen quality tetrahedralisation of a closed surface (pyvista PolyData, mm).

    TetGen runs in a child process in a temporary folder (``tetgen_run``), so it leaves no files
    behind. Returns points (N, 3) and positively oriented cells (M, 4); StageError if it fails.
    """
    max_volume = 1.5 * edge_mm**3 / (6.0 * np.sqrt(2.0))  # 1.5 x a regular tet of edge h
    triangles = np.asarray(surface.faces).reshape(-1, 4)[:, 1:]
    points, cells = run_tetgen(np.asarray(surface.points), triangles,
                               options={**TETGEN_OPTIONS, "maxvolume": float(max_volume)}, source=source)
    return points, orient_positive(points, cells)


def _nearest_label_lookup(labels: LabelMap, values: tuple[int, ...]):
    """Function xyz (K, 3) -> label of the nearest voxel whose label is in ``values``."""
    lab = labels.labels
    mask = np.isin(lab, values)
    _, idx = ndimage.distance_transform_edt(~mask, sampling=labels.geometry.spacing_mm, return_indices=True)
    nearest = lab[idx[0], idx[1], idx[2]]

    def lookup(xyz: np.ndarray) -> np.ndarray:
        ijk = np.rint(labels.geometry.world_to_index(xyz)).astype(np.int64)
        ijk = np.clip(ijk, 0, np.asarray(lab.shape) - 1)
        return nearest[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    return lookup


def tag_cells(points: np.ndarray, cells: np.ndarray, labels: LabelMap) -> np.ndarray:
    """(M,) CellTag of each tet from the myocardial label nearest its centroid."""
    lookup = _nearest_label_lookup(labels, MYO_LABELS)
    lab = lookup(points[cells].mean(axis=1))
    tags = np.full(cells.shape[0], int(CellTag.LV_MYO), dtype=np.int32)
    tags[lab == Label.RV_MYO] = int(CellTag.RV_MYO)
    tags[lab == Label.SCAR] = int(CellTag.SCAR)
    return tags


def tag_facets(
    points: np.ndarray, facets: np.ndarray, labels: LabelMap, base: BasePlane, *, edge_mm: float
) -> np.ndarray:
    """(F,) FacetTag of outward-oriented boundary triangles (see the module docstring)."""
    normals, _ = triangle_normals(points, facets)
    centroids = points[facets].mean(axis=1)
    bn = np.asarray(base.normal)
    on_base = (normals @ bn > 0.8) & (np.abs(base.signed_distance_mm(centroids)) < 0.5 * edge_mm)
    lab = labels.labels
    g = labels.geometry
    tags = np.full(facets.shape[0], int(FacetTag.EPI), dtype=np.int32)
    undecided = np.ones(facets.shape[0], dtype=bool)
    step = float(min(g.spacing_mm))
    for k in (0.5, 1.0, 1.5, 2.5, 4.0):
        if not undecided.any():
            break
        ijk = np.rint(g.world_to_index(centroids + k * step * normals)).astype(np.int64)
        inside_img = np.all((ijk >= 0) & (ijk < np.asarray(lab.shape)), axis=1)
        ijk = np.clip(ijk, 0, np.asarray(lab.shape) - 1)
        v = lab[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        v = np.where(inside_img, v, Label.BACKGROUND)
        decided = undecided & ~np.isin(v, MYO_LABELS)
        tags[decided & (v == Label.LV_BLOOD)] = int(FacetTag.LV_ENDO)
        tags[decided & (v == Label.RV_BLOOD)] = int(FacetTag.RV_ENDO)
        undecided &= ~decided
    tags[on_base] = int(FacetTag.BASE)
    return tags


def _thicken_where_decimation_fails(surface, cleaned: LabelMap, base: BasePlane, cfg: MeshConfig,
                                    timings: dict[str, float]):
    """A wall thinner than the edge stopped the decimation of ``surface``: thicken such spots outwards
    (their growth is part of the volume error in quality.json, and stays under 70 % of its limit).

    First only around the spots where one-step decimation breaks the surface (a thin RV wall, a free
    fin of wall left by the thick slices of a cine stack), with a wall of one edge, raised by half an
    edge, up to two edges, wherever a round leaves as many breaks as the last; then, if the surface
    is still too fine, everywhere: walls under ``min_wall_fraction`` x edge, then under one edge.
    Returns the surface to use and the label map it came from; records what grew in ``timings``.
    """
    source = cleaned.source or "label map"
    edge = cfg.edge_mm
    myo_ml = labelled_volume_below_plane_ml(cleaned, base, MYO_LABELS)
    max_growth = 0.7 * cfg.max_volume_error  # keep the volume check's margin

    def growth_of(labels: LabelMap) -> float:
        return labelled_volume_below_plane_ml(labels, base, MYO_LABELS) / myo_ml - 1.0

    def accept(labels: LabelMap, wall_mm: float, how: str) -> bool:
        nonlocal surface, thickened
        retry = myocardium_surface(labels, base, edge_mm=edge, smoothing_iterations=cfg.smoothing_iterations)
        if retry.n_cells >= 0.8 * surface.n_cells:
            return False
        added_ml = float(np.count_nonzero(labels.labels != cleaned.labels)) * labels.geometry.voxel_volume_ml
        log.info("%s: walls thinner than %.1f mm thickened outwards %s (%.1f mL); surface %d -> %d triangles",
                 source, wall_mm, how, added_ml, surface.n_cells, retry.n_cells)
        surface, thickened = retry, labels
        timings.update(thickened_wall_ml=added_ml, thickened_below_mm=float(wall_mm),
                       thickened_wall_fraction=float(growth_of(labels)), thickened_locally=float(how != "everywhere"))
        return True

    thickened = cleaned
    current, wall, last = thickened, edge, None
    for _ in range(12):
        fine = myocardium_surface(current, base, edge_mm=edge, smoothing_iterations=cfg.smoothing_iterations,
                                  decimate=False, relax=False)
        breaks = decimation_break_points(fine, edge_mm=edge)
        if breaks.shape[0] == 0:
            break
        if last is not None and breaks.shape[0] >= last:
            wall += 0.5 * edge
        if wall > 2.0 * edge:
            break
        last = breaks.shape[0]
        thick, added = thicken_thin_walls(current, min_wall_mm=wall, near_mm=breaks, radius_mm=3.0 * edge)
        if added and growth_of(thick) > max_growth:
            break
        current = thick
    if current is not cleaned and accept(current, wall, f"around {last} decimation breaks") and \
            decimation_shortfall(surface, edge_mm=edge) <= 1.5:
        return surface, thickened
    for fraction in sorted({cfg.min_wall_fraction, 1.0}):
        thick, added = thicken_thin_walls(thickened, min_wall_mm=fraction * edge)
        if not added:
            continue
        growth = growth_of(thick)
        if growth > max_growth:
            log.info("%s: thickening walls under %.1f mm would add %.1f %% of the myocardium; not used",
                     source, fraction * edge, 100 * growth)
            break
        accept(thick, fraction * edge, "everywhere")
        if decimation_shortfall(surface, edge_mm=edge) <= 1.5:
            return surface, thickened
    return surface, thickened


def mesh_labels(labels: LabelMap, *, cfg: MeshConfig) -> tuple[HeartMesh, BasePlane, LabelMap, dict[str, float]]:
    """Label map -> tagged HeartMesh.

    Returns (mesh, base plane used, cleaned labels, timings in s per step). Raises StageError
    naming the cause when there is no LV myocardium, no base plane, or the mesher fails.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    resampled = resample_thick_slices(labels)
    # Between the slices of a thick-slice stack the wall closes over the ends of the blood pools (the
    # apical tip of the RV); closed there with one voxel, it is lost to the anti-aliasing of the
    # surface and leaves holes through the wall (MR sample: genus 21; two voxels: genus 0).
    wall_mm = 2.05 * min(resampled.geometry.spacing_mm) if resampled is not labels else 0.0
    cleaned = clean_labels(resampled, min_wall_mm=wall_mm)
    if cfg.base_point_mm is not None and cfg.base_normal is not None:
        n = np.asarray(cfg.base_normal, dtype=float)
        base = BasePlane(point_mm=tuple(cfg.base_point_mm), normal=tuple(n / np.linalg.norm(n)))
    else:
        base = find_base_plane(cleaned, margin_mm=cfg.base_margin_mm)
    timings["labels_s"] = time.perf_counter() - t0
    source = labels.source or "label map"
    # Fallbacks when a wall thinner than the target edge makes the surface fold onto itself: drop the
    # tangential relaxation, then the decimation (finer surface, more tets), then most and finally
    # all of the smoothing (marching cubes of the anti-aliased labels never self-intersects).
    n_smooth = cfg.smoothing_iterations
    attempts = ((True, True, n_smooth), (True, False, n_smooth), (False, False, n_smooth),
                (False, False, n_smooth // 3), (False, False, 0))
    timings["surface_s"] = timings["tetgen_s"] = 0.0
    timings["thickened_wall_ml"] = 0.0
    for i, (decimate, relax, iterations) in enumerate(attempts):
        t = time.perf_counter()
        surface = myocardium_surface(cleaned, base, edge_mm=cfg.edge_mm, smoothing_iterations=iterations,
                                     decimate=decimate, relax=relax)
        if i == 0 and cfg.min_wall_fraction > 0 and decimation_shortfall(surface, edge_mm=cfg.edge_mm) > 1.2:
            surface, cleaned = _thicken_where_decimation_fails(surface, cleaned, base, cfg, timings)
        timings["surface_s"] += time.perf_counter() - t
        t = time.perf_counter()
        try:
            points, cells = tetrahedralise(surface, edge_mm=cfg.edge_mm, source=source)
        except SurfaceRejectedError as exc:
            if i == len(attempts) - 1:
                raise
            nxt = attempts[i + 1]
            log.warning("%s; retrying with decimation %s, relaxation %s, %d smoothing iterations", exc,
                        "on" if nxt[0] else "off", "on" if nxt[1] else "off", nxt[2])
            continue
        finally:
            timings["tetgen_s"] += time.perf_counter() - t
        timings["surface_attempt"] = float(i + 1)
        break
    t = time.perf_counter()
    points, cells, slivers, peeled = improve_tets(points, cells, min_dihedral_deg=cfg.min_dihedral_deg)
    # Cells hanging on by an edge or a vertex (left by surface caps peeled around them, or by
    # fragments of the label map) would hinge freely and make the mechanics singular: keep the
    # largest face-connected piece.
    comp = face_connected_components(cells)
    detached = int(np.count_nonzero(comp))
    if detached:
        log.warning("%s: %d tets joined to the mesh only by an edge or a vertex removed (%.3f mL)",
                    labels.source or "label map", detached, float(signed_volumes(points, cells[comp > 0]).sum()) / 1e3)
        cells = cells[comp == 0]
    timings["detached_cells_removed"] = float(detached)
    used = np.unique(cells)
    if used.size != points.shape[0]:
        remap = np.full(points.shape[0], -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        points, cells = points[used], remap[cells]
    timings["optimise_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if np.any(signed_volumes(points, cells) <= 0):
        raise StageError("the tetrahedral mesh has inverted or flat elements")
    facets, _ = boundary_facets(cells)
    mesh = HeartMesh(
        points=points,
        cells=cells,
        cell_tags=tag_cells(points, cells, cleaned),
        facets=facets,
        facet_tags=tag_facets(points, facets, cleaned, base, edge_mm=cfg.edge_mm),
        name=labels.source or "patient",
    )
    timings["tags_s"] = time.perf_counter() - t
    timings["peeled_slivers"] = float(peeled)
    timings["relocated_vertices"] = float(slivers.vertices_moved)
    if slivers.cells_below_target:
        log.warning("%s: %d tets stay below the %.1f deg minimum dihedral angle (worst %.2f deg)",
                    labels.source or "label map", slivers.cells_below_target, cfg.min_dihedral_deg,
                    slivers.min_dihedral_after_deg)
    genus = boundary_genus(cells)
    timings["boundary_genus"] = genus
    if genus != 0:
        log.warning("%s: the mesh surface has genus %g, not 0: holes through the wall or bridges across a cavity "
                    "(check the label map where the wall is thin)", source, genus)
    missing = [t.name for t in (FacetTag.LV_ENDO, FacetTag.EPI, FacetTag.BASE) if not np.any(mesh.facet_tags == t)]
    if missing:
        raise StageError(f"{labels.source or 'label map'}: the mesh has no {', '.join(missing)} surface")
    log.info("mesh: %d points, %d tets (%d interior vertices relocated, %d surface caps removed)",
             mesh.n_points, mesh.n_cells, slivers.vertices_moved, peeled)
    return mesh, base, cleaned, timings
