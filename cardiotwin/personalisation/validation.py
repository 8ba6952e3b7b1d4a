"""Validation of a calibrated twin against the patient's end-systolic images (data the fit did not use).

- End-systolic geometry: the beat is quasi-static, so the twin's state at the end-systolic instant
  is the equilibrium under that instant's cavity pressures and active tension; it is solved from
  the end-diastolic state (``end_systolic_points``).
- Cavity Dice: the deformed LV cavity (LV endocardium closed by a fan over its basal rim) is
  voxelised on the ES label grid by the generalised winding number (Jacobson et al. 2013) and
  compared with the ES blood pool (label 1) on the slices between the ES apex and the deformed base.
- Surface distance: from each deformed LV endocardial node (within the labelled slab) to the
  nearest boundary voxel centre of the ES blood pool (mean, max; one-sided).
- Regional thickening: wall thickness at an LV endocardial node is its distance to the nearest
  epicardial or RV endocardial node; (T_ES - T_ED) / T_ED averaged per AHA segment, against the
  image measurement (``measurements.image_measurements``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cardiotwin.anatomy import FacetTag, Label
from cardiotwin.types import HeartMesh, LabelMap


def _rim_fan(tris: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles closing an open surface over its boundary rim(s) with a fan to the rim centroid."""
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    rim = uniq[counts == 1]
    if len(rim) == 0:
        return tris, points
    centre = points[np.unique(rim)].mean(axis=0)
    c = len(points)
    # orient each fan triangle consistently with the surface edge it closes
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    rim_set = {tuple(e) for e in rim}
    fan = [[b, a, c] for a, b in directed if tuple(sorted((a, b))) in rim_set]
    return np.vstack([tris, np.asarray(fan, dtype=tris.dtype)]), np.vstack([points, centre])


def winding_number(query: np.ndarray, tris: np.ndarray, points: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """Generalised winding number of a triangle soup at query points (Van Oosterom & Strackee solid angles)."""
    a, b, c = (points[tris[:, i]] for i in range(3))
    out = np.zeros(len(query))
    for s in range(0, len(query), chunk):
        q = query[s:s + chunk, None, :]
        ra, rb, rc = a[None] - q, b[None] - q, c[None] - q
        la, lb, lc = (np.linalg.norm(r, axis=2) for r in (ra, rb, rc))
        num = np.einsum("ijk,ijk->ij", ra, np.cross(rb, rc))
        den = (la * lb * lc + np.einsum("ijk,ijk->ij", ra, rb) * lc + np.einsum("ijk,ijk->ij", rb, rc) * la
               + np.einsum("ijk,ijk->ij", rc, ra) * lb)
        out[s:s + chunk] = np.sum(2.0 * np.arctan2(num, den), axis=1) / (4.0 * np.pi)
    return out


def _thickness(points: np.ndarray, endo: np.ndarray, outer: np.ndarray) -> np.ndarray:
    d, _ = cKDTree(points[outer]).query(points[endo])
    return d


def es_validation(mesh: HeartMesh, es_points: np.ndarray, es: LabelMap, *,
                  measured_thickening: dict[int, float] | None = None) -> dict[str, Any]:
    """Compare the twin's end-systolic geometry (``es_points``, mesh point order, mm) with the ES
    label map (blood pool 1); ``measured_thickening`` by AHA segment from the images."""
    lv = mesh.facets[mesh.facet_tags == FacetTag.LV_ENDO]
    lv_nodes = np.unique(lv)
    g = es.geometry
    blood = es.labels == Label.LV_BLOOD
    out: dict[str, Any] = {}
    # cavity Dice on the slab covered by both
    tris, pts = _rim_fan(lv, es_points)
    # voxels of the labelled slices within two voxels of the deformed endocardium's index box
    ijk = g.world_to_index(es_points[lv_nodes])
    i0 = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 2, 0, np.asarray(g.shape) - 1)
    i1 = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 2, 0, np.asarray(g.shape) - 1)
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(i0, i1)], indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid[es.labels[tuple(grid.T)] != 255]
    inside_sim = np.abs(winding_number(g.index_to_world(grid), tris, pts)) > 0.5  # sign: facet orientation
    inside_img = blood[tuple(grid.T)]
    labelled = np.ones(len(grid), dtype=bool)
    # restrict to the slices that hold ES blood pool and lie apical of the deformed base
    k_axis = int(np.argmax(g.spacing_mm))
    ks_img = np.unique(grid[inside_img, k_axis])
    ks_sim = np.unique(grid[inside_sim, k_axis])
    common = np.intersect1d(ks_img, ks_sim)
    sel = labelled & np.isin(grid[:, k_axis], common)
    a, b = inside_sim & sel, inside_img & sel
    out["lv_cavity_dice"] = float(2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1))
    out["lv_cavity_compared_slices"] = int(len(common))
    # surface distance: deformed endocardial nodes within the compared slices -> ES blood boundary
    boundary = blood & ~ndimage.binary_erosion(blood)
    bw = g.index_to_world(np.argwhere(boundary))
    node_k = np.rint(g.world_to_index(es_points[lv_nodes])[:, k_axis]).astype(int)
    keep = np.isin(node_k, common)
    if keep.any() and len(bw):
        d, _ = cKDTree(bw).query(es_points[lv_nodes][keep])
        out["lv_endo_surface_distance_mm"] = {"mean": float(d.mean()), "max": float(d.max()), "nodes": int(keep.sum())}
    # regional thickening
    if "aha" in mesh.point_data:
        aha = np.asarray(mesh.point_data["aha"]).astype(int)[lv_nodes]
        outer = np.unique(mesh.facets[np.isin(mesh.facet_tags, (FacetTag.EPI, FacetTag.RV_ENDO))])
        t_ed = _thickness(mesh.points, lv_nodes, outer)
        t_es = _thickness(es_points, lv_nodes, outer)
        ok = t_ed > 0
        sim = {int(s): float(np.mean((t_es[ok & (aha == s)] - t_ed[ok & (aha == s)]) / t_ed[ok & (aha == s)]))
               for s in range(1, 17) if np.any(ok & (aha == s))}
        rows = {}
        for s, v in sim.items():
            m = (measured_thickening or {}).get(s)
            rows[str(s)] = {"simulated": v, "measured": m, "error": None if m is None else v - m}
        out["systolic_thickening_by_aha"] = rows
        errs = [r["error"] for r in rows.values() if r["error"] is not None]
        if errs:
            out["systolic_thickening_mean_abs_error"] = float(np.mean(np.abs(errs)))
    return out
