"""Patient meshing: label map -> tagged biventricular tetrahedral HeartMesh, at the requested edge
length whatever the scan's voxel size.

Steps (each logged, each checked against the mesh's time limit, ``MeshConfig.time_limit_s``):
1. labels: cut to the ventricles and a margin; thick-slice stacks and coarse voxels (coarser than 1.5 x the working grid, at least 1 mm)
   resampled by nested shape-based interpolation, cleaned, base plane
   (valve interface, a user-given plane, or for a stack without valve labels its most basal slice);
2. surface: marching cubes of the anti-aliased myocardium on an isotropic working grid of a third
   of the edge, 0.75-1 mm (``surface.working_step_mm``, ``surface.myocardium_surface``), so a 0.5 mm CT
   and a 3 mm one give the same work;
3. remesh: ACVD clustering to the target edge, the base cap and its rim put on the base plane, and
   MeshFix repair (``remesh``);
4. tetrahedralise: TetGen 1.6 (``tetgen`` wheel; constrained Delaunay, radius-edge and dihedral
   refinement, maximum volume of a regular tet at the edge); where its elements stay below the
   minimum dihedral angle after step 5 (a sliver with all four vertices on the surface, which no
   interior move fixes), TetGen again with a 15 degree dihedral bound (a second, cheap try); where
   TetGen rejects the surface or both stay below it, fTetWild (``pytetwild``), which tolerates
   what the repair left and optimises element shape, at the same edge;
5. improve: interior vertices of slivers moved, flat surface caps peeled where that keeps the
   surface's topology (``optimize``); the largest face-connected piece kept; tags.
A mesh whose minimum dihedral angle stays below ``min_dihedral_deg`` after every try is an
error naming it, not a silent bad mesh. The meshers run in a child process (``tetgen_run``).

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

from cardiotwin.anatomy import CellTag, FacetTag, Label
from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.meshing.optimize import improve_tets
from cardiotwin.meshing.remesh import remesh_uniform, triangles_of
from cardiotwin.meshing.surface import (
    MYO_LABELS,
    VALVE_LABELS,
    BasePlane,
    close_wall,
    crop_to_ventricles,
    fill_pool_tunnels,
    find_base_plane,
    myocardium_surface,
    nearest_label,
    open_pools_to_the_base,
    resample_thick_slices,
    stack_base_plane,
    tidy_labels,
    working_step_mm,
)
from cardiotwin.meshing.tetgen_run import MesherTimeoutError, SurfaceRejectedError, run_ftetwild, run_tetgen
from cardiotwin.meshing.tets import (boundary_facets, boundary_genus, dihedral_angles_deg, face_connected_components,
                                     orient_positive, signed_volumes, triangle_normals)
from cardiotwin.types import HeartMesh, LabelMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshConfig:
    """Meshing parameters. ``base_point_mm`` / ``base_normal`` (LPS, normal towards the atria)
    replace the automatic base plane when both are given."""

    edge_mm: float = quantity(1.5, "mm", doc="target tetrahedron edge length")
    base_margin_mm: float = quantity(2.0, "mm", doc="cut this far below the valve plane")
    min_dihedral_deg: float = quantity(
        5.0, "deg", doc="tets below this are improved (interior vertices moved, surface caps removed); a mesh still "
        "below it after every mesher is an error")
    max_volume_error: float = quantity(0.05, "", doc="allowed |mesh - label| / label myocardial volume")
    built_wall_mm: float = quantity(
        4.0, "mm", doc="thickness of the wall built outside a blood pool that touches the background (the RV of "
        "labels without RV myocardium, a gap in a network's wall); a normal RV free wall is under 5 mm "
        "(Rudski et al. 2010, J Am Soc Echocardiogr 23:685)")
    smoothing_iterations: int = 30
    time_limit_s: float = quantity(600.0, "s", doc="the mesh fails with a clear error when it takes longer")
    base_point_mm: tuple[float, float, float] | None = None
    base_normal: tuple[float, float, float] | None = None

    def validate(self) -> None:
        if not 0.5 <= self.edge_mm <= 5.0:
            raise ValueError(f"edge_mm must be within 0.5-5 mm, got {self.edge_mm}")
        if not 0.0 < self.built_wall_mm <= 10.0:
            raise ValueError(f"built_wall_mm must be within 0-10 mm, got {self.built_wall_mm}")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {self.time_limit_s}")
        if (self.base_point_mm is None) != (self.base_normal is None):
            raise ValueError("give both base_point_mm and base_normal, or neither")
        if self.base_normal is not None and np.linalg.norm(self.base_normal) < 1e-9:
            raise ValueError("base_normal must be a non-zero vector")


TETGEN_OPTIONS: dict[str, float | int | bool] = {
    "quality": True, "minratio": 1.5, "mindihedral": 10.0,
    "opt_iterations": 10, "opt_max_flip_level": 5, "optmaxdihedral": 170.0,
}


def tetrahedralise(surface, *, edge_mm: float, source: str = "label map", timeout_s: float = 600.0,
                   mesher: str = "tetgen") -> tuple[np.ndarray, np.ndarray]:
    """Quality tetrahedralisation of a closed surface (pyvista PolyData, mm) at ``edge_mm``.

    ``mesher``: "tetgen" (maximum volume three regular tets of edge ``edge_mm``), "tetgen-strict" (the
    same with a dihedral bound of 15 instead of 10 degrees: more Steiner points where the surface makes
    slivers) or "ftetwild" (target edge ``edge_mm``). Runs in a child process (``tetgen_run``) that leaves no files and is stopped
    after ``timeout_s``. Returns points (N, 3) and positively oriented cells (M, 4); StageError if it
    fails (SurfaceRejectedError when the mesher cannot use the surface, MesherTimeoutError on time).
    """
    points_in, triangles = np.asarray(surface.points, dtype=float), triangles_of(surface)
    if mesher == "ftetwild":
        points, cells = run_ftetwild(points_in, triangles, edge_mm=edge_mm, timeout_s=timeout_s, source=source)
    else:
        # A Delaunay mesh's tets average about a third of the regular tet's volume at the same mean edge.
        max_volume = 3.0 * edge_mm**3 / (6.0 * np.sqrt(2.0))
        options = {**TETGEN_OPTIONS, "fixedvolume": True, "maxvolume": float(max_volume)}
        if mesher == "tetgen-strict":
            options["mindihedral"] = 15.0
        points, cells = run_tetgen(points_in, triangles, options=options, timeout_s=timeout_s, source=source)
    return points, orient_positive(points, cells)


def _nearest_label_lookup(labels: LabelMap, values: tuple[int, ...]):
    """Function xyz (K, 3) -> label of the nearest voxel whose label is in ``values``."""
    lab = labels.labels

    def lookup(xyz: np.ndarray) -> np.ndarray:
        ijk = np.rint(labels.geometry.world_to_index(xyz)).astype(np.int64)
        ijk = np.clip(ijk, 0, np.asarray(lab.shape) - 1)
        return nearest_label(lab, labels.geometry.spacing_mm, values, ijk)

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


class _Clock:
    """The mesh's time limit: seconds left, or MesherTimeoutError naming the step that ran out."""

    def __init__(self, limit_s: float, source: str) -> None:
        self.limit_s, self.source, self.start = float(limit_s), source, time.perf_counter()

    def left(self, step: str) -> float:
        left = self.limit_s - (time.perf_counter() - self.start)
        if left <= 0:
            raise MesherTimeoutError(
                f"{self.source}: meshing did not finish within its time limit of {self.limit_s:.0f} s (at: {step}); "
                "raise the limit (`--time-limit`, MeshConfig.time_limit_s) or ask for a coarser edge")
        return left


def _base_plane(labels: LabelMap, cleaned: LabelMap, cfg: MeshConfig) -> BasePlane:
    if cfg.base_point_mm is not None and cfg.base_normal is not None:
        n = np.asarray(cfg.base_normal, dtype=float)
        return BasePlane(point_mm=tuple(cfg.base_point_mm), normal=tuple(n / np.linalg.norm(n)))
    try:
        return find_base_plane(cleaned, margin_mm=cfg.base_margin_mm)
    except StageError:
        stack = stack_base_plane(labels)
        if stack is None:
            raise
        return stack


def _improve(points: np.ndarray, cells: np.ndarray, cfg: MeshConfig, source: str):
    """Sliver removal, then the largest face-connected piece. Returns (points, cells, info dict)."""
    points, cells, slivers, peeled = improve_tets(points, cells, min_dihedral_deg=cfg.min_dihedral_deg)
    # Cells hanging on by an edge or a vertex (left by surface caps peeled around them, or by
    # fragments of the label map) would hinge freely and make the mechanics singular: keep the
    # largest face-connected piece.
    comp = face_connected_components(cells)
    detached = int(np.count_nonzero(comp))
    if detached:
        log.warning("%s: %d tets joined to the mesh only by an edge or a vertex removed (%.3f mL)",
                    source, detached, float(signed_volumes(points, cells[comp > 0]).sum()) / 1e3)
        cells = cells[comp == 0]
    used = np.unique(cells)
    if used.size != points.shape[0]:
        remap = np.full(points.shape[0], -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        points, cells = points[used], remap[cells]
    min_dihedral = float(dihedral_angles_deg(points, cells).min()) if cells.size else 0.0
    info = {"detached_cells_removed": float(detached), "peeled_slivers": float(peeled),
            "relocated_vertices": float(slivers.vertices_moved), "min_dihedral_deg": min_dihedral}
    return points, cells, info


_MESHERS = ("tetgen", "tetgen-strict", "ftetwild")
_MESHER_NAMES = {"tetgen": "TetGen", "tetgen-strict": "TetGen, dihedral bound 15 deg", "ftetwild": "fTetWild"}


def mesh_labels(labels: LabelMap, *, cfg: MeshConfig) -> tuple[HeartMesh, BasePlane, LabelMap, dict[str, float]]:
    """Label map -> tagged HeartMesh at ``cfg.edge_mm`` (see the module docstring for the steps).

    Returns (mesh, base plane used, cleaned labels, timings in s per step and step facts). Raises
    StageError naming the cause when there is no LV myocardium or blood pool, no base plane, no
    closed wall, when every mesher fails or leaves elements below ``cfg.min_dihedral_deg``, and
    MesherTimeoutError when ``cfg.time_limit_s`` runs out.
    """
    source = labels.source or "label map"
    clock = _Clock(cfg.time_limit_s, source)
    timings: dict[str, float] = {}

    def begin(i: int, what: str) -> float:
        clock.left(what)
        log.info("%s: mesh step %d/5: %s", source, i, what)
        return time.perf_counter()

    t = begin(1, "labels (resample thick slices, clean, base plane)")
    # The margin holds the wall built outside a pool (built_wall_mm) and the gaps filled (1.5 of it).
    cropped = crop_to_ventricles(labels, margin_mm=3.0 * cfg.built_wall_mm)
    # Coarse voxels are split towards the working grid (not finer than 1 mm: finer voxels only cost).
    resampled = resample_thick_slices(cropped, max_spacing_mm=max(working_step_mm(cfg.edge_mm), 1.0))
    # Where a blood pool touches the background a wall is built outside it (``cfg.built_wall_mm``);
    # where it touches the other pool its own voxels become wall, at least two voxels: one is lost to
    # the anti-aliasing of the surface (a Gaussian of ~0.7 voxel, at least a third of the working
    # step) and leaves holes through the wall (MR sample's RV tip: genus 21, two voxels: 0).
    wall_mm = max(2.05 * min(resampled.geometry.spacing_mm), 0.5 * working_step_mm(cfg.edge_mm))
    tidy = tidy_labels(resampled)
    base = _base_plane(cropped, tidy, cfg)  # from the labels' own valve interface, not the wall built below
    if not np.isin(tidy.labels, VALVE_LABELS).any():
        tidy = open_pools_to_the_base(tidy, base)
    # A pool looping round a piece of wall (thick slices' contours overlapping twice) makes a handle.
    tidy = fill_pool_tunnels(tidy, base, max_radius_mm=1.5 * cfg.built_wall_mm)
    # Gaps between walls narrower than 1.5 built walls are filled: a background channel between a wall
    # built over a gap in a network's LV wall and the network's wall makes a handle (real CT crop: genus 1).
    cleaned = close_wall(tidy, min_wall_mm=wall_mm, outward_mm=cfg.built_wall_mm, gap_mm=1.5 * cfg.built_wall_mm)
    timings["labels_s"] = time.perf_counter() - t
    t = begin(2, f"surface (marching cubes at {working_step_mm(cfg.edge_mm):.2f} mm)")
    fine = myocardium_surface(cleaned, base, edge_mm=cfg.edge_mm, smoothing_iterations=cfg.smoothing_iterations)
    timings["surface_s"] = time.perf_counter() - t
    t = begin(3, f"remesh to {cfg.edge_mm:g} mm and repair (ACVD, MeshFix)")
    surface = remesh_uniform(fine, edge_mm=cfg.edge_mm, source=source, plane=base)
    timings["remesh_s"] = time.perf_counter() - t
    failures: list[str] = []
    best = None
    for mesher in _MESHERS:
        t = begin(4, f"tetrahedralise ({_MESHER_NAMES[mesher]})")
        try:
            points, cells = tetrahedralise(surface, edge_mm=cfg.edge_mm, source=source, mesher=mesher,
                                           timeout_s=clock.left(mesher))
        except SurfaceRejectedError as exc:
            failures.append(str(exc))
            log.warning("%s", exc)
            continue
        finally:
            timings[f"{mesher}_s"] = time.perf_counter() - t
        t = begin(5, f"improve {cells.shape[0]} tets (slivers)")
        points, cells, info = _improve(points, cells, cfg, source)
        timings[f"optimise_{mesher}_s"] = time.perf_counter() - t
        if best is None or info["min_dihedral_deg"] > best[2]["min_dihedral_deg"]:
            best = (points, cells, info, mesher)
        if info["min_dihedral_deg"] >= cfg.min_dihedral_deg:
            break
        failures.append(f"{mesher}: minimum dihedral angle {info['min_dihedral_deg']:.2f} deg")
        log.warning("%s: %s leaves a minimum dihedral angle of %.2f deg (< %.1f deg)", source, mesher,
                    info["min_dihedral_deg"], cfg.min_dihedral_deg)
    if best is None:
        raise StageError(f"{source}: mesher failed: no tetrahedral mesher could use the myocardial surface: "
                         + "; ".join(failures))
    points, cells, info, mesher = best
    if info["min_dihedral_deg"] < cfg.min_dihedral_deg:
        raise StageError(f"{source}: no mesh reaches the {cfg.min_dihedral_deg:g} deg minimum dihedral angle at a "
                         f"{cfg.edge_mm:g} mm edge ({'; '.join(failures)}); check the label map for walls much "
                         "thinner than the edge, or ask for a finer edge")
    timings.update({k: v for k, v in info.items() if k != "min_dihedral_deg"})
    timings["mesher_ftetwild"] = float(mesher == "ftetwild")
    t = time.perf_counter()
    if np.any(signed_volumes(points, cells) <= 0):
        raise StageError(f"{source}: the tetrahedral mesh has inverted or flat elements")
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
    genus = boundary_genus(cells)
    timings["boundary_genus"] = genus
    if genus != 0:
        log.warning("%s: the mesh surface has genus %g, not 0: holes through the wall or bridges across a cavity "
                    "(check the label map where the wall is thin)", source, genus)
    missing = [t.name for t in (FacetTag.LV_ENDO, FacetTag.EPI, FacetTag.BASE) if not np.any(mesh.facet_tags == t)]
    if missing:
        raise StageError(f"{source}: the mesh has no {', '.join(missing)} surface")
    timings["total_s"] = time.perf_counter() - clock.start
    log.info("%s: mesh: %d points, %d tets (%s), min dihedral %.2f deg, %.1f s", source, mesh.n_points, mesh.n_cells,
             "fTetWild" if mesher == "ftetwild" else "TetGen", info["min_dihedral_deg"], timings["total_s"])
    return mesh, base, cleaned, timings
