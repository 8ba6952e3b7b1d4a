"""Quality control of a label map: volumes, LV mass, wall thickness, connectivity, plausibility,
agreement with a reference (Dice, HD95, ASSD) and overlay PNGs for review.

An implausible result is never silent: ``quality_report`` lists it under ``errors`` (no heart,
LV far outside a plausible size) or ``warnings`` (chambers disconnected, fragments), and
``raise_on_errors`` turns errors into a StageError.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from cardiotwin.anatomy import LABEL_NAMES, Label
from cardiotwin.errors import StageError
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)

MYOCARDIAL_DENSITY_G_PER_ML = 1.05  # Vinnakota & Bassingthwaighte, Am J Physiol 2004;286:H1742
# Plausible adult LV blood pool volume (end-diastole to end-systole, normal to severely dilated).
LV_BLOOD_RANGE_ML = (15.0, 450.0)
# Chamber pairs that touch in every heart (adjacency within ~2 voxels).
_ADJACENT = ((Label.LV_BLOOD, Label.LV_MYO), (Label.RV_BLOOD, Label.LV_MYO), (Label.RV_BLOOD, Label.RV_MYO))


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def lv_wall_thickness_mm(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> dict[str, float]:
    """LV wall thickness from endocardium to epicardium (mm): mean, median, 5th and 95th percentiles.

    For every myocardial voxel touching the LV blood pool, the distance (in mm) to the nearest
    voxel outside the LV (neither blood pool nor myocardium) is a local thickness.
    """
    myo = labels == Label.LV_MYO
    blood = labels == Label.LV_BLOOD
    if not myo.any() or not blood.any():
        return {}
    endo = myo & ndimage.binary_dilation(blood)
    outside = ~(myo | blood)
    dist = ndimage.distance_transform_edt(~outside, sampling=spacing_mm)
    d = dist[endo]
    if d.size == 0:
        return {}
    return {"mean": float(d.mean()), "median": float(np.median(d)), "p05": float(np.percentile(d, 5)),
            "p95": float(np.percentile(d, 95))}


WALL_RANGE_MM = (2.0, 25.0)  # plausible local LV wall thickness over a segment (thin infarct scar to severe HCM)
OPEN_RING_MAX_FRACTION = 0.1  # of the LV blood pool's boundary in a mid slice not covered by myocardium


def _lv_frame(blood: np.ndarray, lv: np.ndarray, spacing: np.ndarray) -> tuple[int | None, np.ndarray]:
    """(slice axis of a thick-slice stack or None, unit LV long axis in index-mm space)."""
    k = int(np.argmax(spacing))
    if spacing[k] >= 2.0 * float(np.delete(spacing, k).max()):
        axis = np.zeros(3)
        axis[k] = 1.0
        return k, axis
    pts = np.argwhere(lv) * spacing
    if len(pts) < 10:
        return None, np.array([0.0, 0.0, 1.0])
    _, _, vt = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)
    return None, vt[0]


def lv_wall_plausibility(labels: np.ndarray, spacing_mm: tuple[float, float, float], *, n_sectors: int = 6,
                         wall_range_mm: tuple[float, float] = WALL_RANGE_MM,
                         open_max_fraction: float = OPEN_RING_MAX_FRACTION) -> dict[str, Any]:
    """Is the LV myocardium plausible for its cavity? Wall thickness per segment and a closed ring in mid slices.

    Segments: three levels along the LV long axis (thirds of the LV blood pool's extent: ``end1``,
    ``mid``, ``end2``; which end is basal is not known from the labels) x ``n_sectors`` angular sectors around the blood pool's centre. For a thick-slice stack
    (a short-axis cine) the long axis is the slice axis and everything is measured in-plane, slice
    by slice; otherwise it is the principal axis of the LV and distances are 3D. Local thickness:
    distance from each myocardial voxel touching the blood pool to the nearest voxel outside the LV
    (as ``lv_wall_thickness_mm``); a segment's value is its median. Mid slices (the middle third):
    the fraction of the blood pool's boundary touching neither myocardium nor blood pool; more than
    ``open_max_fraction`` means the ring is not closed. Returns the table and the ``flags`` (empty:
    plausible).
    """
    sp = np.asarray(spacing_mm, dtype=float)
    myo = np.isin(labels, (int(Label.LV_MYO), int(Label.SCAR)))
    blood = labels == Label.LV_BLOOD
    if not myo.any() or not blood.any():
        return {}
    lv = myo | blood
    stack_axis, axis = _lv_frame(blood, lv, sp)
    if stack_axis is not None:
        st = ndimage.generate_binary_structure(3, 1)  # in-plane neighbours only
        sl = [slice(None)] * 3
        for off in (0, 2):
            sl[stack_axis] = off
            st[tuple(sl)] = False
        dist_sp = sp.copy()
        dist_sp[stack_axis] = 1.0e6  # no distance across slices
    else:
        st = ndimage.generate_binary_structure(3, 1)
        dist_sp = sp
    endo = myo & ndimage.binary_dilation(blood, st)
    dist = ndimage.distance_transform_edt(lv, sampling=dist_sp)
    pts_mm = np.argwhere(blood) * sp
    h_blood = pts_mm @ axis
    lo, hi = float(h_blood.min()), float(h_blood.max())
    if stack_axis is not None:
        levels_of = lambda idx: np.clip(((idx[:, stack_axis] * sp[stack_axis] - lo) / max(hi - lo, 1e-6) * 3)  # noqa: E731
                                        .astype(int), 0, 2)
    else:
        levels_of = lambda idx: np.clip((((idx * sp) @ axis - lo) / max(hi - lo, 1e-6) * 3).astype(int), 0, 2)  # noqa: E731
    # in-plane basis perpendicular to the axis
    ref = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    centre = pts_mm.mean(axis=0)
    idx = np.argwhere(endo)
    rel = idx * sp - centre
    ang = np.arctan2(rel @ e2, rel @ e1)
    sector = ((ang + np.pi) / (2 * np.pi) * n_sectors).astype(int) % n_sectors
    level = levels_of(idx)
    thick = dist[endo]
    names = ("end1", "mid", "end2")  # which end is basal is not known from the labels alone
    segments, flags = {}, []
    for lv_i in range(3):
        for s_i in range(n_sectors):
            sel = (level == lv_i) & (sector == s_i)
            if sel.sum() < 3:
                continue
            med = float(np.median(thick[sel]))
            key = f"{names[lv_i]}-{s_i + 1}"
            segments[key] = round(med, 2)
            if med < wall_range_mm[0]:
                flags.append(f"LV wall {med:.1f} mm thin over segment {key} (< {wall_range_mm[0]:g} mm)")
            elif med > wall_range_mm[1]:
                flags.append(f"LV wall {med:.1f} mm thick over segment {key} (> {wall_range_mm[1]:g} mm)")
    # closed ring in the mid third
    boundary = blood & ndimage.binary_dilation(~blood, st)
    outside_lv = ~lv
    open_vox = boundary & ndimage.binary_dilation(outside_lv, st)
    b_idx = np.argwhere(boundary)
    b_level = levels_of(b_idx)
    mid = b_level == 1
    open_fraction = None
    if mid.any():
        n_open = int(open_vox[tuple(b_idx[mid].T)].sum())
        open_fraction = n_open / int(mid.sum())
        if open_fraction > open_max_fraction:
            flags.append(f"LV myocardium not closed around the blood pool in the mid slices ({open_fraction:.0%} of "
                         f"its boundary touches neither wall nor cavity; > {open_max_fraction:.0%})")
    return {"frame": "short-axis stack, in-plane" if stack_axis is not None else "principal LV axis, 3D",
            "segment_median_thickness_mm": segments, "mid_open_fraction": (round(open_fraction, 4)
                                                                           if open_fraction is not None else None),
            "flags": flags}


def quality_report(label_map: LabelMap, *, lv_range_ml: tuple[float, float] = LV_BLOOD_RANGE_ML) -> dict[str, Any]:
    """Volumes (mL) per label, LV myocardial mass (g), LV wall thickness (mm), connected components
    per label, adjacency checks, and lists of ``errors`` and ``warnings``."""
    lab = label_map.labels
    v_ml = label_map.geometry.voxel_volume_ml
    counts = np.bincount(lab.ravel(), minlength=256)
    volumes = {LABEL_NAMES[k]: round(float(counts[k]) * v_ml, 3) for k in range(1, 10) if k in LABEL_NAMES}
    errors: list[str] = []
    warnings: list[str] = []
    components = {}
    for k in range(1, 10):
        if counts[k]:
            _, n = ndimage.label(lab == k)
            components[LABEL_NAMES[k]] = int(n)
            if n > 1:
                hint = (" (ascending and descending aorta are separate when the arch is outside the field of view)"
                        if k == Label.AORTA and n == 2 else "")
                warnings.append(f"{LABEL_NAMES[k]} is in {n} disconnected pieces{hint}")
    lv_ml = volumes["lv_blood"]
    if counts[1:].sum() == 0:
        errors.append("no heart found: the label map is empty")
    elif lv_ml == 0:
        errors.append("no LV blood pool")
    elif not lv_range_ml[0] <= lv_ml <= lv_range_ml[1]:
        errors.append(f"LV blood pool {lv_ml:.1f} mL outside the plausible {lv_range_ml[0]:g}-{lv_range_ml[1]:g} mL")
    adjacency = {}
    for a, b in _ADJACENT:
        if counts[a] and counts[b]:
            near = ndimage.binary_dilation(lab == a, iterations=2) & (lab == b)
            ok = bool(near.any())
            adjacency[f"{LABEL_NAMES[a]}-{LABEL_NAMES[b]}"] = ok
            if not ok:
                msg = f"{LABEL_NAMES[a]} and {LABEL_NAMES[b]} do not touch (chambers disconnected)"
                # an LV blood pool outside its own myocardium is no heart at all (e.g. a model that
                # paints labels onto non-cardiac texture): an error; other gaps are warnings
                (errors if (a, b) == (Label.LV_BLOOD, Label.LV_MYO) else warnings).append(msg)
    for k in (Label.LV_MYO, Label.RV_BLOOD):
        if counts[1] and not counts[k]:
            warnings.append(f"no {LABEL_NAMES[k]} found")
    thickness = lv_wall_thickness_mm(lab, label_map.geometry.spacing_mm)
    if thickness and not 2.0 <= thickness["median"] <= 25.0:
        warnings.append(f"median LV wall thickness {thickness['median']:.1f} mm is implausible (2-25 mm)")
    wall = lv_wall_plausibility(lab, label_map.geometry.spacing_mm)
    warnings.extend(f"implausible myocardium: {f}" for f in wall.get("flags", []))
    myo_ml = volumes["lv_myo"] + volumes.get("scar", 0.0)
    return {
        "volumes_ml": volumes,
        "lv_myocardial_mass_g": round(myo_ml * MYOCARDIAL_DENSITY_G_PER_ML, 2),
        "lv_wall_thickness_mm": {k: round(v, 2) for k, v in thickness.items()},
        "lv_wall_plausibility": wall,
        "components": components,
        "adjacency": adjacency,
        "errors": errors,
        "warnings": warnings,
    }


def raise_on_errors(report: dict[str, Any], *, source: str) -> None:
    if report["errors"]:
        raise StageError(f"{source}: implausible segmentation: {'; '.join(report['errors'])}")


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distances (mm) from the surface voxels of ``a`` to the surface of ``b``."""
    sa, sb = _surface(a), _surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return dist_to_b[sa]


def compare(pred: LabelMap, ref: LabelMap, *, labels: tuple[int, ...] = tuple(range(1, 9))) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm) and ASSD (mm) per label between two label maps on the same grid.

    Raises StageError when the grids differ. Labels absent from both are left out; a label
    present in only one gets Dice 0 and infinite distances.
    """
    if not pred.geometry.same_space(ref.geometry):
        raise StageError(f"reference {ref.source or ''} is on another grid than the prediction "
                         f"({ref.geometry.shape} vs {pred.geometry.shape}); resample it first")
    spacing = pred.geometry.spacing_mm
    out: dict[str, dict[str, float]] = {}
    for k in labels:
        p, r = pred.labels == k, ref.labels == k
        if not p.any() and not r.any():
            continue
        dice = 2.0 * float(np.logical_and(p, r).sum()) / float(p.sum() + r.sum())
        if p.any() and r.any():
            box = tuple(slice(max(int(lo) - 2, 0), int(hi) + 3) for lo, hi in
                        zip(np.argwhere(p | r).min(0), np.argwhere(p | r).max(0)))
            d_pr = _surface_distances(p[box], r[box], spacing)
            d_rp = _surface_distances(r[box], p[box], spacing)
            both = np.concatenate([d_pr, d_rp])
            hd95 = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
            assd = float(both.mean())
        else:
            hd95 = assd = float("inf")
        out[LABEL_NAMES[k]] = {"dice": round(dice, 4), "hd95_mm": round(hd95, 3), "assd_mm": round(assd, 3)}
    return out


def write_overlays(label_map: LabelMap, image: np.ndarray, out_dir: Path, *, stem: str = "overlay") -> list[Path]:
    """Three orthogonal slices through the LV centre (or the heart's centre) with label contours, as PNGs.

    image: the scan's voxels on the same grid, shape ``label_map.geometry.shape``. Returns the paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = label_map.labels
    if image.shape != lab.shape:
        raise ValueError(f"image shape {image.shape} differs from labels {lab.shape}")
    target = lab == Label.LV_BLOOD if (lab == Label.LV_BLOOD).any() else lab > 0
    centre = (np.argwhere(target).mean(axis=0).round().astype(int) if target.any()
              else np.asarray(lab.shape) // 2)
    lo, hi = np.percentile(image, [1, 99])
    colours = plt.get_cmap("tab10")
    sp = label_map.geometry.spacing_mm
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for axis, name in enumerate(("i", "j", "k")):
        sl = [slice(None)] * 3
        sl[axis] = int(centre[axis])
        img2, lab2 = image[tuple(sl)].T, lab[tuple(sl)].T
        others = [a for a in range(3) if a != axis]
        aspect = sp[others[1]] / sp[others[0]]
        fig, ax = plt.subplots(figsize=(5, 5 * min(max(aspect * img2.shape[0] / img2.shape[1], 0.3), 3)))
        ax.imshow(img2, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        for k in range(1, 10):
            if (lab2 == k).any():
                ax.contour(lab2 == k, levels=[0.5], colors=[colours((k - 1) % 10)], linewidths=1.0)
                ax.plot([], [], color=colours((k - 1) % 10), label=LABEL_NAMES[k])
        ax.set_title(f"{name} = {centre[axis]}")
        ax.axis("off")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=6, framealpha=0.6)
        path = out_dir / f"{stem}_{name}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def signed_boundary_offset_mm(pred: np.ndarray, ref: np.ndarray, spacing_mm: tuple[float, float, float], *,
                              slice_axis: int | None = None, valid: np.ndarray | None = None) -> float:
    """Mean signed in-plane distance (mm) of ``pred``'s boundary from ``ref``'s: positive where the
    predicted boundary lies outside the reference, negative inside (a prediction eroded by d has
    about -d, one dilated by d about +d, a shifted one about 0).

    Computed slice by slice across ``slice_axis`` (default: the axis of the largest spacing, the
    slice direction of a short-axis stack), on slices where both masks are present and, when given,
    ``valid`` (e.g. the labelled slices of a reference) is set. The predicted boundary pixels are
    those of ``pred`` touching its outside in the plane; a pixel inside the reference counts
    ``-(d - s)``, one outside ``+d``, where ``d`` is the distance to the nearest pixel across the
    reference boundary and ``s`` the in-plane pixel size, so identical masks give exactly 0.
    NaN when no slice qualifies.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    axis = int(np.argmax(spacing_mm)) if slice_axis is None else slice_axis
    plane = tuple(float(s) for i, s in enumerate(spacing_mm) if i != axis)
    pixel = float(np.mean(plane))
    values: list[np.ndarray] = []
    for k in range(pred.shape[axis]):
        p, r = np.take(pred, k, axis=axis), np.take(ref, k, axis=axis)
        if valid is not None:
            v = np.take(valid, k, axis=axis)
            if not v.any():
                continue
            p, r = p & v, r & v
        if not p.any() or not r.any():
            continue
        edge = _surface(p)
        d_in = ndimage.distance_transform_edt(r, sampling=plane)  # inside ref: distance to its outside
        d_out = ndimage.distance_transform_edt(~r, sampling=plane)  # outside ref: distance to it
        values.append(np.where(r[edge], -(d_in[edge] - pixel), d_out[edge]))
    return float(np.concatenate(values).mean()) if values else float("nan")


def myocardium_confusion(pred: np.ndarray, ref: np.ndarray, *, valid: np.ndarray | None = None) -> dict[str, float]:
    """Where an LV myocardium prediction disagrees with a reference, as fractions of the reference
    myocardium: ``missed_as_background`` / ``missed_as_blood`` (reference wall called outside / LV
    cavity) and ``extra_in_blood`` / ``extra_in_background`` (predicted wall where the reference has
    LV cavity / outside). ``pred`` and ``ref`` are label arrays of the project table."""
    v = np.ones(ref.shape, dtype=bool) if valid is None else valid
    myo, blood = int(Label.LV_MYO), int(Label.LV_BLOOD)
    r_myo, p_myo = (ref == myo) & v, (pred == myo) & v
    n = float(r_myo.sum())
    if n == 0:
        return {}
    return {"missed_as_background": float((r_myo & ~np.isin(pred, (myo, blood))).sum()) / n,
            "missed_as_blood": float((r_myo & (pred == blood)).sum()) / n,
            "extra_in_blood": float((p_myo & (ref == blood)).sum()) / n,
            "extra_in_background": float((p_myo & ~np.isin(ref, (myo, blood))).sum()) / n}
