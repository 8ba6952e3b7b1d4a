"""Label map -> cleaned myocardium, base plane, and a smooth watertight fine surface (LPS mm).

Steps (each a plain function):
0. ``crop_to_ventricles``: the image cut to the ventricles and a margin for the wall built outside them.
   ``resample_thick_slices``: a thick-slice stack (cine MR), and voxels much coarser than the
   working grid, become finer by nested shape-based interpolation (the blood pools stay inside the
   interpolated epicardium).
1. ``tidy_labels``: keep the largest connected piece of the ventricles (drop islands), fill
   enclosed holes. After the base plane (step 2; ``open_pools_to_the_base`` for a stack whose RV
   stops below it) and ``fill_pool_tunnels`` (a pool looping round a piece of wall below the plane,
   from thick slices' contours that overlap twice, closed), ``close_wall``: a wall built outside a blood pool where it touches the
   background, the pool's own voxels made wall where it touches the other pool (at least two
   voxels), narrow gaps between walls filled, so the wall is closed around both cavities.
2. ``find_base_plane``: the plane of the valves: a least-squares plane through the voxels where
   the ventricles (labels 1-4) touch the atria / great vessels (5-8), oriented apex -> base; the
   cut is placed ``margin_mm`` below it. ``stack_base_plane``: the most basal LV slice of a
   short-axis stack labelled without atria. A user-given plane replaces both.
3. ``myocardium_surface``: anti-aliased indicator (Gaussian, sigma ~0.7 voxel; thick MR slices
   get a proportionally wider sigma across slices; the curvature motion of its 0.5 level reversed,
   ``blurred_without_curvature_shift``) sampled on an isotropic working grid tied to
   the target edge (``working_step_mm``), combined with the half-space below the base plane (min
   of the two implicit functions), marching cubes (scikit-image, Lewiner), windowed-sinc smoothing
   (Taubin 1995, VTK) which does not shrink the surface. ``remesh`` brings it to the target edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardiotwin.anatomy import Label
from cardiotwin.errors import StageError
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)

MYO_LABELS = (int(Label.LV_MYO), int(Label.RV_MYO), int(Label.SCAR))
VENTRICLE_LABELS = (int(Label.LV_BLOOD), int(Label.LV_MYO), int(Label.RV_BLOOD), int(Label.RV_MYO), int(Label.SCAR))
VALVE_LABELS = (int(Label.LA), int(Label.RA), int(Label.AORTA), int(Label.PULMONARY_ARTERY))


@dataclass(frozen=True)
class BasePlane:
    """Plane in LPS mm: points x with (x - point) . normal = 0; normal points from apex to base."""

    point_mm: tuple[float, float, float]
    normal: tuple[float, float, float]

    def signed_distance_mm(self, xyz: np.ndarray) -> np.ndarray:
        """(...,) signed distance, positive on the base (atrial) side."""
        return (np.asarray(xyz, dtype=float) - np.asarray(self.point_mm)) @ np.asarray(self.normal)


def distance_to_mm(target: np.ndarray, spacing_mm) -> np.ndarray:
    """(float32, the grid's shape) Euclidean distance in mm of every voxel to the nearest voxel of the
    boolean ``target`` (0 on it, inf when it is empty), by the exact transform of the ``edt``
    library (Felzenszwalb & Huttenlocher 2012; several times faster than scipy.ndimage's)."""
    import edt

    return edt.edt(np.ascontiguousarray(~target), anisotropy=tuple(float(v) for v in spacing_mm), black_border=False,
                   parallel=1)


def nearest_label(lab: np.ndarray, spacing_mm, values: tuple[int, ...], ijk: np.ndarray) -> np.ndarray:
    """(K,) label, among ``values``, of the voxel nearest (in mm) to each integer voxel index of
    ``ijk`` (K, 3) whose label is one of ``values`` (the voxel itself where it is one)."""
    from scipy.spatial import cKDTree

    ijk = np.asarray(ijk, dtype=np.int64)
    out = lab[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    away = ~np.isin(out, values)
    if away.any():
        candidates = np.argwhere(np.isin(lab, values))
        if candidates.size == 0:
            raise StageError("no voxel of labels " + ", ".join(map(str, values)) + " to take a label from")
        sp = np.asarray(spacing_mm, dtype=float)
        _, nearest = cKDTree(candidates * sp).query(ijk[away] * sp)
        c = candidates[nearest]
        out[away] = lab[c[:, 0], c[:, 1], c[:, 2]]
    return out


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to ``mask`` (excluding it)."""
    return ndimage.binary_dilation(mask) & ~mask


def crop_to_ventricles(labels: LabelMap, *, margin_mm: float) -> LabelMap:
    """``labels`` cut to the box of the ventricles (labels 1-4, 9) and ``margin_mm`` around it (at
    least one voxel; never beyond the image, so a pool reaching the image's edge still does). The
    field of view of a cine or CT scan is several times the heart: every later step costs by voxel.
    Unchanged when there are no ventricles or the box is the whole image."""
    lab = np.asarray(labels.labels)
    vent = np.isin(lab, VENTRICLE_LABELS)
    if not vent.any():
        return labels
    g = labels.geometry
    pad = np.ceil(margin_mm / np.asarray(g.spacing_mm, dtype=float)).astype(int) + 1
    idx = [np.flatnonzero(vent.any(axis=tuple(a for a in range(3) if a != d))) for d in range(3)]
    lo = np.array([max(int(i[0]) - p, 0) for i, p in zip(idx, pad)])
    hi = np.array([min(int(i[-1]) + p + 1, n) for i, p, n in zip(idx, pad, lab.shape)])
    if np.all(lo == 0) and np.all(hi == np.asarray(lab.shape)):
        return labels
    out = np.ascontiguousarray(lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    geometry = type(g)(shape=tuple(int(v) for v in out.shape), spacing_mm=g.spacing_mm,
                       origin_mm=tuple(float(v) for v in g.index_to_world(lo.astype(float))), direction=g.direction)
    return LabelMap(labels=out, geometry=geometry, source=labels.source)


def _sub_slices(spacing: np.ndarray, max_anisotropy: float) -> np.ndarray:
    """(3,) number of sub-slices per voxel along each axis: spacing / finest spacing on thick axes, else 1."""
    ratio = spacing / spacing.min()
    return np.where(ratio > max_anisotropy, np.rint(ratio), 1).astype(int)


def resample_thick_slices(labels: LabelMap, *, max_anisotropy: float = 2.0,
                          max_spacing_mm: float | None = None) -> LabelMap:
    """Near-isotropic label map from a thick-slice one (e.g. 8-10 mm cine MR stacks), and with
    ``max_spacing_mm`` a finer one from coarse voxels (axes coarser than 1.5 x it are split into
    ceil(spacing / max_spacing_mm) sub-voxels: a wall one 3 mm voxel thick would otherwise be lost to
    the anti-aliasing of the surface), by nested shape-based interpolation (Raya & Udupa 1990, applied to nested regions as endo- and epicardial
    contours are interpolated in cardiac MR).

    Each region's signed distance map is interpolated linearly along the thick axes: the ventricles
    as a whole (blood pools and myocardium, the epicardial region V), each blood pool, and every
    other label. A new voxel inside V is blood where a blood pool's distance is negative (the least
    one wins), myocardium elsewhere (the myocardial label of least distance); outside V it takes
    the non-ventricular label (background, atria, great vessels) of least distance. A blood pool
    lies inside V, so its distance is never below V's; linear interpolation keeps that order, so
    the interpolated blood stays inside the interpolated epicardium and the wall stays closed
    between slices. Taking the least distance over all labels instead (plain shape-based
    interpolation) loses a thin wall that moves in-plane from one slice to the next: the blood pool
    then touches the background through holes that the cleaning closes only with one-voxel sheets.

    Each thick voxel is split into m = round(spacing / finest spacing) sub-voxels that tile it
    exactly (beyond the end slices the end slice's distances are kept), so volumes stay comparable
    with the original voxels. Returned unchanged when max/min spacing <= ``max_anisotropy``.
    """
    g = labels.geometry
    spacing = np.asarray(g.spacing_mm, dtype=float)
    m = _sub_slices(spacing, max_anisotropy)
    if max_spacing_mm is not None:
        coarse = spacing > 1.5 * max_spacing_mm
        m = np.where(coarse, np.maximum(m, np.ceil(spacing / max_spacing_mm - 1e-9)), m).astype(int)
    if np.all(m == 1):
        return labels
    shape = np.asarray(g.shape)
    # Continuous index, along each axis, of the centres of the sub-voxels.
    positions = [-0.5 + (np.arange(shape[d] * m[d]) + 0.5) / m[d] for d in range(3)]
    lab = np.asarray(labels.labels)

    def interpolated_sdf(mask: np.ndarray) -> np.ndarray:
        sdf = distance_to_mm(mask, spacing) - distance_to_mm(~mask, spacing)
        for d in range(3):
            if m[d] > 1:
                sdf = _interp_axis(sdf, positions[d], axis=d)
        return sdf

    blood = (int(Label.LV_BLOOD), int(Label.RV_BLOOD))
    present = [int(v) for v in np.unique(lab)]
    # Per group (blood pools, myocardium, everything outside the ventricles): least distance, its label.
    groups = {"blood": blood, "myo": MYO_LABELS, "other": tuple(v for v in present if v not in VENTRICLE_LABELS)}
    best: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, values in groups.items():
        for value in (v for v in values if v in present):
            sdf = interpolated_sdf(lab == value)
            if name not in best:
                best[name] = (sdf, np.full(sdf.shape, value, dtype=np.uint8))
                continue
            dist, which = best[name]
            closer = sdf < dist
            dist[closer] = sdf[closer]
            which[closer] = value
    ventricles = np.isin(lab, VENTRICLE_LABELS)
    if not ventricles.any():
        out = best["other"][1]
    else:
        inside = interpolated_sdf(ventricles) < 0.0
        wall = best["myo"][1] if "myo" in best else np.full(inside.shape, int(Label.LV_MYO), dtype=np.uint8)
        out = np.where(inside, wall, best["other"][1] if "other" in best else np.uint8(Label.BACKGROUND))
        if "blood" in best:
            dist, which = best["blood"]
            pool = inside & (dist < 0.0)
            out[pool] = which[pool]
        out = out.astype(np.uint8)
    start = np.array([positions[d][0] for d in range(3)])
    geometry = type(g)(
        shape=tuple(int(v) for v in shape * m),
        spacing_mm=tuple(float(v) for v in spacing / m),
        origin_mm=tuple(float(v) for v in g.index_to_world(start)),
        direction=g.direction,
    )
    log.info("%s: voxels of %s mm resampled to %s mm (nested shape-based interpolation)",
             labels.source or "label map", [round(float(v), 2) for v in spacing],
             [round(float(v), 2) for v in spacing / m])
    return LabelMap(labels=out, geometry=geometry, source=labels.source)


def _interp_axis(values: np.ndarray, positions: np.ndarray, *, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` at continuous ``positions`` along ``axis`` (clamped at the ends)."""
    n = values.shape[axis]
    pos = np.clip(positions, 0.0, n - 1)
    lo = np.minimum(np.floor(pos).astype(int), max(n - 2, 0))
    w = (pos - lo).astype(np.float32)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1, 1, 1]
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(values, lo, axis=axis) * (1.0 - w) + np.take(values, hi, axis=axis) * w


def tidy_labels(labels: LabelMap) -> LabelMap:
    """The largest connected piece of the ventricles; blood islands inside the wall made wall;
    enclosed holes in the ventricles filled. Raises StageError when there is no LV myocardium or
    LV blood pool."""
    lab = np.asarray(labels.labels).astype(np.uint8, copy=True)
    src = labels.source or "label map"
    if not np.any(lab == Label.LV_MYO):
        raise StageError(f"{src}: no LV myocardium (label {int(Label.LV_MYO)}) in the label map; cannot mesh")
    if not np.any(lab == Label.LV_BLOOD):
        raise StageError(f"{src}: no LV blood pool (label {int(Label.LV_BLOOD)}); cannot find the LV endocardium")
    # Islands: keep the largest 26-connected component of the ventricles (myocardium + blood).
    vent = np.isin(lab, VENTRICLE_LABELS)
    comp, n = ndimage.label(vent, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = ndimage.sum_labels(vent, comp, index=np.arange(1, n + 1))
        keep = comp == (1 + int(np.argmax(sizes)))
        dropped = int(vent.sum() - keep.sum())
        lab[vent & ~keep] = Label.BACKGROUND
        log.info("%s: removed %d voxels in %d ventricular islands", src, dropped, n - 1)
    # Small blood islands inside the wall become myocardium; holes in the myocardium are filled.
    for blood in (Label.LV_BLOOD, Label.RV_BLOOD):
        m = lab == blood
        comp, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum_labels(m, comp, index=np.arange(1, n + 1))
            small = m & (comp != (1 + int(np.argmax(sizes))))
            lab[small] = Label.LV_MYO if blood == Label.LV_BLOOD else Label.RV_MYO
    heart = np.isin(lab, VENTRICLE_LABELS)
    holes = ndimage.binary_fill_holes(heart) & ~heart
    lab[holes & ndimage.binary_dilation(lab == Label.LV_MYO, iterations=2)] = Label.LV_MYO
    lab[holes & (lab == Label.BACKGROUND)] = Label.RV_MYO
    return LabelMap(labels=lab, geometry=labels.geometry, source=labels.source)


def fill_pool_tunnels(labels: LabelMap, base: BasePlane, *, max_radius_mm: float) -> LabelMap:
    """Tunnels through a blood pool below the base plane filled with blood.

    Below the plane (the mesh's domain) a pool is one piece without tunnels (Euler characteristic
    1 of its 6-connected voxels). A thick-slice stack whose pool contours of two neighbouring slices
    overlap in two places (an RV crescent that moves across the septum between 10 mm slices)
    interpolates to a pool looping round a piece of wall, and the mesh surface gets a handle. Such
    a pool is closed (dilation then erosion by a ball, as distance thresholds) with the least
    radius, in steps of the finest voxel up to ``max_radius_mm`` (found by bisection), that leaves it
    without tunnels below the plane; the closing takes no voxel of the other pool and none above the
    plane. A pool whose tunnels no such closing removes is left as it is.
    """
    from skimage.measure import euler_number

    lab = np.asarray(labels.labels).copy()
    g = labels.geometry
    sp = np.asarray(g.spacing_mm, dtype=float)
    changed = False
    for value, other in ((int(Label.LV_BLOOD), int(Label.RV_BLOOD)), (int(Label.RV_BLOOD), int(Label.LV_BLOOD))):
        pool = lab == value
        if not pool.any():
            continue
        n = np.ceil(max_radius_mm / sp).astype(int) + 1
        idx = np.argwhere(pool)
        lo, hi = np.maximum(idx.min(axis=0) - n, 0), np.minimum(idx.max(axis=0) + n + 1, np.asarray(lab.shape))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        below = _below_plane(g, base, lo, hi)
        sub = pool[box]
        if euler_number(sub & below, connectivity=1) >= 1:
            continue
        free = below & (lab[box] != other)
        # The least radius that removes the tunnels, by bisection over the steps (none: the largest does not).
        radii = np.arange(sp.min(), max_radius_mm + 1e-9, sp.min())
        best = _closing_without_tunnels(sub, free, below, sp, float(radii[-1])) if radii.size else None
        if best is None:
            continue
        lo_i, hi_i = -1, radii.size - 1
        while hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            add = _closing_without_tunnels(sub, free, below, sp, float(radii[mid]))
            if add is None:
                lo_i = mid
            else:
                hi_i, best = mid, add
        changed = True
        lab[box][best] = value
        log.info("%s: a tunnel through the %s blood pool below the base plane filled with blood (closing by "
                 "%.1f mm: %d voxels, %.2f mL)", labels.source or "label map", "LV" if value == Label.LV_BLOOD else "RV",
                 radii[hi_i], int(best.sum()), int(best.sum()) * g.voxel_volume_ml)
    if not changed:
        return labels
    return LabelMap(labels=lab, geometry=g, source=labels.source)


def _closing_without_tunnels(pool: np.ndarray, free: np.ndarray, below: np.ndarray, spacing: np.ndarray,
                             radius: float) -> np.ndarray | None:
    """The ``free`` voxels that the closing of ``pool`` by a ball of ``radius`` (mm) adds, or None when
    none or when the pool (with them) keeps a tunnel ``below`` the plane."""
    from skimage.measure import euler_number

    n = np.ceil(radius / spacing).astype(int) + 1  # room for the dilation beyond the box: the closing is not cut
    grown = distance_to_mm(np.pad(pool, [(k, k) for k in n]), spacing) <= radius + 1e-4
    closed = (distance_to_mm(~grown, spacing) > radius + 1e-4)[tuple(slice(k, -k) for k in n)]
    add = closed & ~pool & free
    return add if add.any() and euler_number((pool | add) & below, connectivity=1) >= 1 else None


def _below_plane(g, base: BasePlane, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(bool, the box's shape) voxels of the box ``lo:hi`` of grid ``g`` whose centre lies below ``base``."""
    d0 = float(base.signed_distance_mm(g.index_to_world(np.zeros((1, 3))))[0])
    unit = base.signed_distance_mm(g.index_to_world(np.eye(3))) - d0  # (3,) change per index step
    axes = [unit[k] * np.arange(lo[k], hi[k]) for k in range(3)]
    return (d0 + axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]) < 0.0


def close_wall(labels: LabelMap, *, min_wall_mm: float = 0.0, outward_mm: float | None = None,
               gap_mm: float | None = None) -> LabelMap:
    """Close the myocardial wall where a blood pool touches non-ventricular tissue (other than the
    valves), so that the wall encloses both pools.

    With ``outward_mm`` the wall goes outside the pool and the cavity keeps its size: the tissue
    within ``outward_mm`` of where the pool touches it becomes that pool's wall (expert labels
    without RV myocardium get an RV wall that thick, a gap in a network's wall is bridged outside the
    blood; the grid grows where a pool reaches its edge), and a wall thinner than ``min_wall_mm`` is
    thickened to it outwards. Where that cannot be done (without ``outward_mm``, and where the pool touches the other
    blood pool) the pool's own voxels within ``min_wall_mm`` (at least the adjacent ones) become wall.
    A wall closed with one voxel is lost to the anti-aliasing of the surface and leaves a hole.
    With ``gap_mm``, a gap narrower than that between two walls (a channel of background between a
    built wall and the network's, a tunnel through the myocardium) is filled with wall.
    """
    src = labels.source or "label map"
    sp = np.asarray(labels.geometry.spacing_mm, dtype=float)
    if outward_mm is not None:  # room for the wall where a pool reaches the image's edge (a stack's apex)
        labels = _pad_where_blood_reaches_the_edge(labels, int(np.ceil(max(outward_mm, min_wall_mm) / sp.min())) + 1)
    lab = np.asarray(labels.labels).astype(np.uint8, copy=True)
    outside = ~np.isin(lab, VENTRICLE_LABELS + VALVE_LABELS)
    grown = 0
    if outward_mm is not None:
        near = max(min_wall_mm, float(sp.max()))  # at least the 6-adjacent voxels
        reach = {}
        for blood in (Label.LV_BLOOD, Label.RV_BLOOD):
            pool = lab == blood
            touching = pool & ndimage.binary_dilation(outside)
            # distance of the outside voxels that become this pool's wall: within min_wall_mm of the
            # pool (a thin wall thickened), within outward_mm of where it touches outside (a wall built)
            d = distance_to_mm(pool, sp)
            d_touch = distance_to_mm(touching, sp) if touching.any() else np.inf
            reach[blood] = np.where((d <= near) | (d_touch <= outward_mm), d, np.inf)
        grow_lv = outside & np.isfinite(reach[Label.LV_BLOOD]) & (reach[Label.LV_BLOOD] <= reach[Label.RV_BLOOD])
        grow_rv = outside & np.isfinite(reach[Label.RV_BLOOD]) & ~grow_lv
        del reach
        lab[grow_lv] = Label.LV_MYO
        lab[grow_rv] = Label.RV_MYO
        grown = int(grow_lv.sum() + grow_rv.sum())
        outside &= ~(grow_lv | grow_rv)
    lv, rv = lab == Label.LV_BLOOD, lab == Label.RV_BLOOD
    lv_leak = lv & ndimage.binary_dilation(outside | rv)
    rv_leak = rv & ndimage.binary_dilation(outside | lv)
    if min_wall_mm > 0:  # also those within min_wall_mm (the adjacent ones stay, however small it is)
        lv_leak |= lv & (distance_to_mm(outside | rv, sp) <= min_wall_mm)
        rv_leak |= rv & (distance_to_mm(outside | lv, sp) <= min_wall_mm)
    lab[lv_leak] = Label.LV_MYO
    lab[rv_leak] = Label.RV_MYO
    filled = _fill_gaps(lab, outside & ~(lv_leak | rv_leak), sp, gap_mm) if gap_mm else 0
    if grown or filled or lv_leak.any() or rv_leak.any():
        log.info("%s: closed the wall where a blood pool touches outside: %d voxels of wall grown outwards, %d blood "
                 "voxels made wall, %d voxels of gaps between walls filled", src, grown,
                 int(lv_leak.sum() + rv_leak.sum()), filled)
    return LabelMap(labels=lab, geometry=labels.geometry, source=labels.source)


def _fill_gaps(lab: np.ndarray, outside: np.ndarray, spacing: np.ndarray, gap_mm: float) -> int:
    """Outside voxels (``outside``) within a morphological closing of the ventricles by a ball of
    diameter ``gap_mm`` become the nearest wall's label, in place. Returns how many."""
    radius = 0.5 * gap_mm + 1e-4  # mm; the ball holds the voxels at exactly its radius
    n = np.ceil(0.5 * gap_mm / spacing).astype(int)
    vent = np.pad(np.isin(lab, VENTRICLE_LABELS), [(k, k) for k in n])
    # Closing = dilation then erosion by the ball, both as distance thresholds (exact for a Euclidean ball).
    dilated = distance_to_mm(vent, spacing) <= radius
    closed = (distance_to_mm(~dilated, spacing) > radius)[tuple(slice(k, -k if k else None) for k in n)]
    gap = closed & outside
    if gap.any():
        lab[gap] = nearest_label(lab, spacing, MYO_LABELS, np.argwhere(gap))
    return int(gap.sum())


def _pad_where_blood_reaches_the_edge(labels: LabelMap, n: int) -> LabelMap:
    """``labels`` with ``n`` background voxels added beyond each face of the grid that a blood pool
    touches (unchanged when none does)."""
    lab = np.asarray(labels.labels)
    blood = np.isin(lab, (int(Label.LV_BLOOD), int(Label.RV_BLOOD)))
    pad = [(n if blood.take(0, axis=d).any() else 0, n if blood.take(-1, axis=d).any() else 0) for d in range(3)]
    if not any(a or b for a, b in pad):
        return labels
    g = labels.geometry
    out = np.pad(lab, pad, constant_values=int(Label.BACKGROUND))
    geometry = type(g)(shape=tuple(int(v) for v in out.shape), spacing_mm=g.spacing_mm,
                       origin_mm=tuple(float(v) for v in g.index_to_world(np.array([-a for a, _ in pad], dtype=float))),
                       direction=g.direction)
    return LabelMap(labels=out, geometry=geometry, source=labels.source)


def open_pools_to_the_base(labels: LabelMap, base: BasePlane) -> LabelMap:
    """A blood pool that ends below the base plane of a stack labelled without atria (ACDC: the RV
    contours stop a slice before the LV's) extended to just beyond the plane, along the plane's
    normal, by its most basal cross-section (into background only), so that its cavity opens at the
    base as the LV's does: a wall closed over it would shut it off and the mesh would fill it.
    Unchanged when the normal is not along a grid axis or every pool reaches the plane."""
    g = labels.geometry
    cos = g.direction_matrix.T @ np.asarray(base.normal, dtype=float)
    axis = int(np.argmax(np.abs(cos)))
    if abs(cos[axis]) < 0.999:
        return labels
    lab = np.moveaxis(np.asarray(labels.labels).copy(), axis, -1)
    if cos[axis] < 0:  # index increasing towards the base
        lab = lab[..., ::-1]
    n = lab.shape[-1]
    k = np.arange(n) if cos[axis] > 0 else np.arange(n)[::-1]
    ijk = np.zeros((n, 3))
    ijk[:, axis] = k
    height = base.signed_distance_mm(g.index_to_world(ijk))  # of each slice, apex -> base
    step = float(g.spacing_mm[axis])
    added = 0
    for blood in (int(Label.LV_BLOOD), int(Label.RV_BLOOD)):
        present = np.flatnonzero((lab == blood).any(axis=(0, 1)))
        if present.size == 0 or height[present[-1]] >= -step:
            continue
        section = lab[..., present[-1]] == blood
        for kk in np.flatnonzero((np.arange(n) > present[-1]) & (height <= step)):
            fill = section & (lab[..., kk] == Label.BACKGROUND)
            lab[..., kk][fill] = blood
            added += int(fill.sum())
    if not added:
        return labels
    if cos[axis] < 0:
        lab = lab[..., ::-1]
    log.info("%s: a blood pool ending below the base plane extended to it (%.1f mL)",
             labels.source or "label map", added * g.voxel_volume_ml)
    return LabelMap(labels=np.ascontiguousarray(np.moveaxis(lab, -1, axis)), geometry=g, source=labels.source)


def find_base_plane(labels: LabelMap, *, margin_mm: float = 2.0) -> BasePlane:
    """Base plane from the ventricle / valve (atria, aorta, pulmonary artery) interface.

    Raises StageError when the label map has no atria or great vessels touching the ventricles.
    """
    lab = labels.labels
    g = labels.geometry
    vent = np.isin(lab, VENTRICLE_LABELS)
    valves = np.isin(lab, VALVE_LABELS)
    interface = vent & ndimage.binary_dilation(valves)
    if interface.sum() < 10:
        raise StageError(
            f"{labels.source or 'label map'}: no base plane: the ventricles touch no atrium or great vessel "
            "(labels 5-8); give the base plane explicitly (--base-point and --base-normal)"
        )
    pts = g.index_to_world(np.argwhere(interface))
    centre = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    normal = vt[2]
    vent_centre = g.index_to_world(np.argwhere(vent).mean(axis=0))
    if (centre - vent_centre) @ normal < 0:
        normal = -normal
    # Cut at the lowest (most apical) part of the interface, then a margin below: no valve tissue.
    offset = np.percentile((pts - centre) @ normal, 5.0)
    point = centre + (offset - margin_mm) * normal
    log.info("base plane through %s mm, normal %s", np.round(point, 2), np.round(normal, 3))
    return BasePlane(point_mm=tuple(float(v) for v in point), normal=tuple(float(v) for v in normal))


def stack_base_plane(labels: LabelMap) -> BasePlane | None:
    """Base plane of a short-axis stack whose labels hold no atria or great vessels (expert contours
    of the ventricles only): the plane of the most basal slice holding LV blood, normal along the
    slice axis towards the base. The base is the end where the LV blood reaches furthest beyond the
    myocardium's apical cap, i.e. where the blood pool is open; ties go to the larger blood area.
    None when the grid is not a thick-slice stack (max / min spacing <= 2) or has no LV blood.
    """
    g = labels.geometry
    spacing = np.asarray(g.spacing_mm, dtype=float)
    axis = int(np.argmax(spacing))
    if spacing[axis] <= 2.0 * spacing.min():
        return None
    lab = np.moveaxis(np.asarray(labels.labels), axis, -1)
    blood_slices = np.flatnonzero((lab == Label.LV_BLOOD).any(axis=(0, 1)))
    wall_slices = np.flatnonzero(np.isin(lab, MYO_LABELS).any(axis=(0, 1)))
    if blood_slices.size == 0 or wall_slices.size == 0:
        return None
    lo, hi = int(blood_slices[0]), int(blood_slices[-1])
    cap_lo, cap_hi = lo - int(wall_slices[0]), int(wall_slices[-1]) - hi  # slices of wall beyond the blood
    if cap_lo != cap_hi:
        base_at_hi = cap_lo > cap_hi
    else:
        area = (lab == Label.LV_BLOOD).sum(axis=(0, 1))
        base_at_hi = area[hi] >= area[lo]
    k = hi if base_at_hi else lo
    centre = np.asarray(np.argwhere(lab[..., k] == Label.LV_BLOOD).mean(axis=0), dtype=float)
    ijk = np.zeros(3)
    ijk[[d for d in range(3) if d != axis]] = centre
    ijk[axis] = k
    normal = np.asarray(g.direction, dtype=float).reshape(3, 3)[:, axis] * (1.0 if base_at_hi else -1.0)
    point = g.index_to_world(ijk)
    log.info("%s: no valve labels; base plane at the most basal LV slice (%d), normal %s",
             labels.source or "label map", k, np.round(normal, 3))
    return BasePlane(point_mm=tuple(float(v) for v in point), normal=tuple(float(v) for v in normal))


def working_step_mm(edge_mm: float) -> float:
    """Grid step (mm) of the marching cubes, whatever the voxel size: a third of the target edge, not
    finer than 0.75 mm (half of a 1.5 mm edge; finer only adds remeshing time) and not coarser than
    1 mm. The marching cubes' chords and the smoothing shrink the cavities by an amount that scales
    with the step (sample CT, fine surface against the labels: RV cavity -1.8 % on a 1.67 mm grid,
    -1.0 % on 0.83 mm), so a coarser grid would make a coarse mesh's cavities smaller than a fine
    one's: the surface is meant to follow the labels, and only the remeshing to follow the edge."""
    return max(min(edge_mm / 3.0, 1.0), min(edge_mm / 2.0, 0.75))


def blurred_without_curvature_shift(indicator: np.ndarray, sigma_mm, spacing_mm) -> np.ndarray:
    """(float32) the Gaussian blur (``sigma_mm`` per axis) of a 0/1 ``indicator``, its 0.5 level
    moved back by the mean-curvature motion the blur made.

    A blur is a diffusion for a time of sigma^2 / 2 (D = diag(sigma^2) / 2); it moves a level set
    along its normal by the curvature: a convex piece (the epicardium) shrinks, a concave one (an
    endocardium, seen from the wall) grows into the cavity, by about sigma^2 / R for a radius R:
    2-3 % of a small LV cavity at a 5 mm edge. The tangential part of the diffusion,
    tr(D H) - (n.D n)(n.H n) (H the Hessian, n the gradient's direction), is subtracted from the
    blur: the curvature flow reversed, the profile across the boundary (the anti-aliasing) kept.
    Derivatives by Gaussian derivative filters (exact for the blurred indicator), the correction
    where its level 0.5 can be (between 0.02 and 0.98).
    """
    sp = np.asarray(spacing_mm, dtype=float)
    diff = 0.5 * np.asarray(sigma_mm, dtype=float) ** 2
    s_vox = np.asarray(sigma_mm, dtype=float) / sp
    field = ndimage.gaussian_filter(indicator, sigma=s_vox, mode="constant")
    at = np.nonzero((field > 0.02) & (field < 0.98))
    if at[0].size == 0:
        return field

    def derivative(*axes: int) -> np.ndarray:
        order = [0, 0, 0]
        for a in axes:
            order[a] += 1
        d = ndimage.gaussian_filter(indicator, sigma=s_vox, order=order, mode="constant")[at].astype(np.float64)
        return d / float(np.prod(sp[list(axes)]))

    g = [derivative(i) for i in range(3)]
    norm2 = g[0] ** 2 + g[1] ** 2 + g[2] ** 2
    tangential = np.zeros_like(norm2)
    n_d_n = np.zeros_like(norm2)
    n_h_n = np.zeros_like(norm2)
    for i in range(3):
        for j in range(i, 3):
            h = derivative(i, j)
            if i == j:
                tangential += diff[i] * h
                n_d_n += diff[i] * g[i] ** 2
            n_h_n += (1.0 if i == j else 2.0) * g[i] * g[j] * h
    steep = norm2 > 1e-12  # where the gradient has a direction
    tangential[steep] -= n_d_n[steep] * n_h_n[steep] / norm2[steep] ** 2
    # The level moves by tangential / |grad|: at most a quarter sigma (a cavity of radius 4 sigma or
    # more is corrected in full), so the ridge of a wall thinner than the blur is not moved.
    limit = np.where(steep, 0.25 * float(np.min(sigma_mm)) * np.sqrt(norm2), 0.0)
    field[at] -= np.clip(tangential, -limit, limit).astype(np.float32)
    return field


def myocardium_surface(
    labels: LabelMap,
    base: BasePlane,
    *,
    edge_mm: float,
    smoothing_iterations: int = 30,
):
    """Closed, smooth, fine triangulated surface of the myocardium below ``base`` (pyvista PolyData,
    LPS mm), at about a third of ``edge_mm`` (``working_step_mm``) whatever the voxel size (``remesh.remesh_uniform``
    brings it to the target edge).

    The anti-aliased indicator (Gaussian of ~0.7 finest voxel, wider across thick slices, and at
    least a third of the working step so a fine grid is not aliased) is sampled trilinearly on an
    isotropic working grid of step ``working_step_mm(edge_mm)``; marching cubes of its minimum with
    the base half-space, windowed-sinc smoothing (does not shrink the surface). ``labels`` should be
    closed with ``tidy_labels`` and ``close_wall`` first.
    """
    from skimage.measure import marching_cubes

    from cardiotwin.meshing.remesh import polydata

    g = labels.geometry
    spacing = np.asarray(g.spacing_mm, dtype=float)
    myo = np.isin(labels.labels, MYO_LABELS)
    idx = np.argwhere(myo)
    if idx.size == 0:
        raise StageError(f"{labels.source or 'label map'}: empty myocardium after cleaning")
    step_mm = working_step_mm(edge_mm)
    pad = int(np.ceil(max(3.0, 2.0 * step_mm / spacing.min())))
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, np.asarray(myo.shape))
    # Pad the crop with zeros so the surface is closed even where labels reach the image edge.
    crop = np.pad(myo[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32), pad)
    origin_index = lo - pad
    sigma_mm = np.maximum(np.maximum(0.7 * spacing.min(), 0.45 * spacing), step_mm / 3.0)
    field = blurred_without_curvature_shift(crop, sigma_mm, spacing)
    # Working grid: isotropic step, as continuous indices of the crop.
    n = np.asarray(crop.shape)
    m = np.maximum(np.round((n - 1) * spacing / step_mm).astype(int) + 1, 2)
    scale = (n - 1) / (m - 1)  # crop index per working-grid index, per axis
    axes = [np.arange(m[d], dtype=np.float32) * np.float32(scale[d]) for d in range(3)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    sampled = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
    xyz = g.index_to_world(coords.reshape(3, -1).T.astype(float) + origin_index)
    del coords
    dist = base.signed_distance_mm(xyz).reshape(sampled.shape)
    # Plane as a ramp of the same slope scale as the indicator: 0.5 - dist / (2 * step).
    plane = np.clip(-dist / (2.0 * step_mm), -0.5, 0.5)
    implicit = np.pad(np.minimum(sampled - 0.5, plane).astype(np.float32), 1, constant_values=-0.5)
    if implicit.max() <= 0.0:
        raise StageError(f"{labels.source or 'label map'}: no closed myocardial wall to mesh: the myocardium below "
                         f"the base plane is nowhere thicker than the anti-aliasing at a {edge_mm:g} mm edge (about "
                         f"{2 * sigma_mm.max():.1f} mm); check the label map, or ask for a finer edge")
    verts, faces, _, _ = marching_cubes(implicit, level=0.0, allow_degenerate=False, method="lewiner")
    pts = g.index_to_world(origin_index + (verts - 1.0) * scale)
    surf = polydata(pts, faces).clean()
    comps = surf.connectivity("largest")
    if comps.n_cells != surf.n_cells:
        surf = polydata(np.asarray(comps.points), np.asarray(comps.faces).reshape(-1, 4)[:, 1:])
    # Feature-preserving smoothing keeps the base rim sharp; windowed sinc does not shrink.
    if smoothing_iterations > 0:
        surf = surf.smooth_taubin(
            n_iter=smoothing_iterations, pass_band=0.05, feature_smoothing=False, feature_angle=45.0,
            boundary_smoothing=False, non_manifold_smoothing=True, normalize_coordinates=True,
        )
    log.info("surface: marching cubes at %.2f mm: %d triangles, %.1f mL enclosed", step_mm, surf.n_cells,
             surf.volume / 1000.0)
    labelled_ml = labelled_volume_below_plane_ml(labels, base, MYO_LABELS)
    if surf.volume / 1000.0 < 0.5 * labelled_ml:
        raise StageError(f"{labels.source or 'label map'}: no closed myocardial wall to mesh: the largest closed "
                         f"surface of the myocardium encloses {surf.volume / 1000.0:.1f} of its {labelled_ml:.1f} mL "
                         f"below the base plane (walls thinner than the {step_mm:.1f} mm grid it is sampled on at a {edge_mm:g} "
                         "mm edge); check the label map, or ask for a finer edge")
    return surf


def labelled_volume_below_plane_ml(
    labels: LabelMap, base: BasePlane, values: tuple[int, ...], *, max_anisotropy: float = 2.0
) -> float:
    """Volume (mL) of voxels with one of ``values`` below the base plane.

    Each voxel counts by the fraction of its box below the plane, sampled at m sub-voxel centres
    along thick axes (m as in ``resample_thick_slices``; one sample, the voxel centre, on
    near-isotropic grids), so 8 mm slices cut obliquely by the plane are not counted all-or-nothing.
    """
    idx = np.argwhere(np.isin(labels.labels, values))
    if idx.size == 0:
        return 0.0
    g = labels.geometry
    m = _sub_slices(np.asarray(g.spacing_mm, dtype=float), max_anisotropy)
    grids = np.meshgrid(*[-0.5 + (np.arange(m[d]) + 0.5) / m[d] for d in range(3)], indexing="ij")
    offsets = np.stack([gr.ravel() for gr in grids], axis=1)  # (S, 3) sub-voxel centres, index units
    below = 0.0
    for off in offsets:
        below += float(np.count_nonzero(base.signed_distance_mm(g.index_to_world(idx + off)) < 0.0))
    return below / offsets.shape[0] * g.voxel_volume_ml
