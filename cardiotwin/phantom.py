"""Synthetic thorax phantoms with ground-truth labels (training data, tests, sample_scans/).

The heart is a parametric biventricular shape model evaluated as implicit functions at any set
of world points, so one shape can be sampled on a CT grid, a thick-slice short-axis MR grid, or
a fine grid for meshing:

- LV: truncated prolate ellipsoids (endocardium / epicardium), base plane at z_h = 0,
  apex at z_h = -length; the wall is thinner at the apex.
- RV: an ellipsoid centred on the septal side of the LV, minus the LV epicardium (a crescent
  wrapped around the septum), with a thin free wall.
- LA / RA: ellipsoids above the base plane, posterior; aorta and pulmonary artery: tubes along
  polylines from the outflow tracts (aortic arch and descending aorta; pulmonary bifurcation).
- Optional scar: a transmural sector of LV myocardium (label 9).
- Thorax: body, subcutaneous and pericardial fat, lungs, spine, ribs, liver, for appearance.

Heart frame (h): z_h from apex to base along the long axis, y_h from the LV towards the RV.
It is placed in LPS world space with the apex pointing left, anterior and inferior, plus a
random rotation and shift. Every random choice comes from ``numpy.random.default_rng(seed)``.

Appearances: contrast CT (HU per tissue, Gaussian noise, point-spread blur) and bSSFP-like
cine MR (bright blood, dark myocardium, bright fat, multiplicative bias field, Rician noise,
thick short-axis slices with through-slice partial volume).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from cardiotwin.anatomy import Label, ThoraxTissue
from cardiotwin.types import ImageGeometry, LabelMap, Scan

PhantomModality = Literal["CT", "MR"]
# LV size and wall: "typical" (adult, normal to moderately enlarged) or "dilated" (heart failure,
# dilated cardiomyopathy: a large, rounder cavity with a normal to thin wall)
LvShape = Literal["typical", "dilated"]

_AIR, _LUNG, _FAT, _SOFT, _BONE = (int(t) for t in ThoraxTissue)


# Nominal orientation: apex points left (+x), anterior (-y), inferior (-z) in LPS; the RV lies
# anterior and to the right of the LV.
NOMINAL_APEX_DIRECTION = (0.62, -0.55, -0.56)
NOMINAL_TO_RV = (-0.55, -0.75, 0.1)


@dataclass(frozen=True)
class HeartShapeParams:
    """Shape and pose parameters of the biventricular model (mm, degrees)."""

    lv_radius_mm: float
    lv_length_mm: float
    lv_wall_mm: float
    rv_offset_mm: float
    rv_radius_x_mm: float
    rv_radius_y_mm: float
    rv_length_fraction: float
    rv_wall_mm: float
    atrium_radius_mm: float
    aorta_radius_mm: float
    pa_radius_mm: float
    rotation: tuple[float, ...]  # 3x3 row-major, columns = heart axes x_h, y_h, z_h in LPS
    base_centre_lps_mm: tuple[float, float, float]
    scar_sector_deg: tuple[float, float] | None = None  # (centre, width) of the scar, about z_h
    scar_range: tuple[float, float] | None = None  # apico-basal fraction range (0 apex, 1 base)


@dataclass(frozen=True)
class Phantom:
    scan: Scan
    labels: LabelMap
    params: HeartShapeParams
    seed: int


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def sample_heart_params(rng: np.random.Generator, *, scar: bool = False, pose_jitter_deg: float = 15.0,
                        lv: LvShape = "typical") -> HeartShapeParams:
    """Draw a random but plausible adult heart.

    lv="typical": LV end-diastolic endocardial radius 21-31 mm, wall 7-13 mm. lv="dilated": radius
    29-38 mm (end-diastolic diameter 58-76 mm; dilated cardiomyopathy is usually diagnosed above
    about 58 mm in men, 52 mm in women: Pinto et al., Eur Heart J 2016;37:1850, ESC position
    statement), wall 5-9 mm and a rounder cavity (length 1.8-2.4 radii instead of 2.3-2.9).
    Both draw the same number of random numbers, so every other parameter of a seed is the same.
    """
    if lv == "typical":
        lv_r = rng.uniform(21.0, 31.0)
        lv_l = rng.uniform(2.3, 2.9) * lv_r
        wall = rng.uniform(7.0, 13.0)
    elif lv == "dilated":
        lv_r = rng.uniform(29.0, 38.0)
        lv_l = rng.uniform(1.8, 2.4) * lv_r
        wall = rng.uniform(5.0, 9.0)
    else:
        raise ValueError(f"lv must be 'typical' or 'dilated', got {lv!r}")
    apex_dir = np.array(NOMINAL_APEX_DIRECTION)
    z_h = -apex_dir / np.linalg.norm(apex_dir)
    to_rv = np.array(NOMINAL_TO_RV)
    y_h = to_rv - np.dot(to_rv, z_h) * z_h
    y_h /= np.linalg.norm(y_h)
    x_h = np.cross(y_h, z_h)
    rot = np.stack([x_h, y_h, z_h], axis=1)
    jitter = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(0, pose_jitter_deg)))
    rot = jitter @ rot
    scar_sector = scar_range = None
    if scar:
        # Angle about z_h from x_h; the septum faces +y_h (90 deg): keep the scar on the free wall.
        scar_sector = (float(rng.uniform(190, 350)), float(rng.uniform(50, 90)))
        lo = rng.uniform(0.1, 0.5)
        scar_range = (float(lo), float(min(lo + rng.uniform(0.3, 0.5), 0.95)))
    return HeartShapeParams(
        lv_radius_mm=float(lv_r),
        lv_length_mm=float(lv_l),
        lv_wall_mm=float(wall),
        rv_offset_mm=float((lv_r + wall) * rng.uniform(0.45, 0.7)),
        rv_radius_x_mm=float((lv_r + wall) * rng.uniform(1.05, 1.3)),
        rv_radius_y_mm=float(lv_r + wall + rng.uniform(12.0, 24.0)),
        rv_length_fraction=float(rng.uniform(0.7, 0.85)),
        rv_wall_mm=float(rng.uniform(3.0, 5.0)),
        atrium_radius_mm=float(rng.uniform(18.0, 25.0)),
        aorta_radius_mm=float(rng.uniform(12.0, 16.0)),
        pa_radius_mm=float(rng.uniform(11.0, 14.0)),
        rotation=tuple(float(v) for v in rot.ravel()),
        base_centre_lps_mm=tuple(float(v) for v in rng.normal(0.0, 6.0, size=3)),
        scar_sector_deg=scar_sector,
        scar_range=scar_range,
    )


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _polyline_distance(p: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    d = np.full(p.shape[0], np.inf)
    for a, b in zip(nodes[:-1], nodes[1:]):
        if np.linalg.norm(b - a) > 1e-9:
            d = np.minimum(d, _segment_distance(p, a, b))
    return d


VesselModel = Literal["short", "thoracic"]


def _vessel_paths(params: HeartShapeParams, vessels: VesselModel = "short",
                  ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Centre lines (heart frame, mm) of the aorta and of the pulmonary trunk and branches.

    "short": the compact vessels of the sample phantoms (ascending aorta about 0.35 LV lengths, an arch
    of 0.3 LV lengths, descending aorta 0.9 LV lengths; pulmonary trunk and two short branches).
    "thoracic": adult thoracic proportions (see ``_thoracic_vessel_paths``).
    """
    if vessels == "thoracic":
        return _thoracic_vessel_paths(params)
    r, l = params.lv_radius_mm, params.lv_length_mm
    sup, post, left = _world_axes_in_heart_frame(params)
    root = np.array([0.25 * r, 0.45 * r, 2.0])  # aortic root: LV outflow, towards the RV side
    asc_top = root + 0.35 * l * sup + 0.1 * l * (-post)
    arch = [asc_top + 0.3 * l * (np.sin(t) * post + (1 - np.cos(t)) * 0.15 * left) + 0.12 * l * np.sin(t) * sup
            for t in np.linspace(0, np.pi, 7)]
    desc = arch[-1] - 0.9 * l * sup
    aorta = np.vstack([root - 2.0 * np.array([0, 0, 1.0]), asc_top, *arch, desc])
    pa_root = np.array([0.6 * r, 1.25 * r, 2.0])  # RV outflow, anterior-left of the aortic root
    pa_top = pa_root + 0.35 * l * sup + 0.25 * l * post
    pa = np.vstack([pa_root - 2.0 * np.array([0, 0, 1.0]), pa_top])
    branches = [np.vstack([pa_top, pa_top + 0.45 * l * side + 0.1 * l * post]) for side in (left, -left)]
    return aorta, pa, branches


def _world_axes_in_heart_frame(params: HeartShapeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World superior, posterior and left (LPS +z, +y, +x) as unit vectors of the heart frame."""
    rot = np.asarray(params.rotation).reshape(3, 3)
    return rot.T @ np.array([0.0, 0.0, 1.0]), rot.T @ np.array([0.0, 1.0, 0.0]), rot.T @ np.array([1.0, 0.0, 0.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _thoracic_vessel_paths(params: HeartShapeParams) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Aorta and pulmonary arteries with adult thoracic proportions, deterministic in ``params``.

    Ascending aorta 50-70 mm from the root, rising with a slight anterior and rightward lean; an arch
    that runs 45-65 mm backwards and 10-25 mm to the left over the pulmonary bifurcation, 15-25 mm
    high; descending aorta straight down beside the spine for 220 mm (through any field of view).
    Pulmonary trunk 35-50 mm upwards, backwards and to the left from the RV outflow; the right
    pulmonary artery runs 55 mm to the right behind the ascending aorta, the left one 40 mm
    backwards and to the left. Typical adult values from standard anatomy texts: ascending aorta
    about 5 cm, descending thoracic aorta about 20 cm, pulmonary trunk about 5 cm.
    The lengths are drawn from a generator seeded by the shape parameters, so the labels stay a
    pure function of ``params``.
    """
    r, l = params.lv_radius_mm, params.lv_length_mm
    key = np.frombuffer(np.asarray([r, l, params.aorta_radius_mm, params.pa_radius_mm]).tobytes(), dtype=np.uint32)
    rng = np.random.default_rng(key)
    sup, post, left = _world_axes_in_heart_frame(params)
    root = np.array([0.25 * r, 0.45 * r, 2.0])
    asc_top = root + rng.uniform(50.0, 70.0) * _unit(sup - 0.15 * post - 0.2 * left)
    back, side, height = rng.uniform(45.0, 65.0), rng.uniform(10.0, 25.0), rng.uniform(15.0, 25.0)
    arch = [asc_top + 0.5 * (1 - np.cos(t)) * (back * post + side * left) + height * np.sin(t) * sup
            for t in np.linspace(0, np.pi, 9)]
    desc = arch[-1] - 220.0 * sup
    aorta = np.vstack([root - 2.0 * np.array([0, 0, 1.0]), asc_top, *arch, desc])
    pa_root = np.array([0.6 * r, 1.25 * r, 2.0])
    pa_top = pa_root + rng.uniform(35.0, 50.0) * _unit(0.75 * sup + 0.5 * post + 0.3 * left)
    pa = np.vstack([pa_root - 2.0 * np.array([0, 0, 1.0]), pa_top])
    branches = [np.vstack([pa_top, pa_top + 40.0 * _unit(0.7 * left + 0.6 * post - 0.2 * sup)]),
                np.vstack([pa_top, pa_top + 55.0 * _unit(-0.85 * left + 0.4 * post - 0.1 * sup)])]
    return aorta, pa, branches


def heart_labels_at(points_lps: np.ndarray, params: HeartShapeParams, *, vessels: VesselModel = "short") -> np.ndarray:
    """Labels (uint8, ARCHITECTURE.md table) of the heart model at (N, 3) LPS points.

    vessels: "short" (the sample phantoms' compact great vessels) or "thoracic" (adult lengths:
    ascending aorta, arch and descending aorta, pulmonary trunk and branches; ``_vessel_paths``).
    """
    rot = np.asarray(params.rotation).reshape(3, 3)
    q = (points_lps - np.asarray(params.base_centre_lps_mm)) @ rot  # heart frame
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    out = np.zeros(q.shape[0], dtype=np.uint8)
    r, l, t = params.lv_radius_mm, params.lv_length_mm, params.lv_wall_mm

    below_base = z <= 0.0
    lv_endo = (x**2 + y**2) / r**2 + z**2 / l**2 <= 1.0
    lv_epi = (x**2 + y**2) / (r + t) ** 2 + z**2 / (l + 0.7 * t) ** 2 <= 1.0
    ry, rx = params.rv_radius_y_mm, params.rv_radius_x_mm
    rl = params.rv_length_fraction * l
    yc = params.rv_offset_mm
    rv_endo = x**2 / rx**2 + (y - yc) ** 2 / ry**2 + z**2 / rl**2 <= 1.0
    w = params.rv_wall_mm
    rv_epi = x**2 / (rx + w) ** 2 + (y - yc) ** 2 / (ry + w) ** 2 + z**2 / (rl + w) ** 2 <= 1.0

    # Atria and great vessels above the base plane.
    ra = params.atrium_radius_mm
    above = z > 0.0
    la_c = np.array([-0.35 * r, -0.2 * r, 0.75 * ra])
    ra_c = np.array([-0.45 * r, 1.7 * r, 0.7 * ra])
    la = np.sum(((q - la_c) / np.array([1.1 * ra, ra, 0.9 * ra])) ** 2, axis=1) <= 1.0
    ra_mask = np.sum(((q - ra_c) / np.array([ra, 1.05 * ra, 0.95 * ra])) ** 2, axis=1) <= 1.0
    out[above & ra_mask] = Label.RA
    out[above & la] = Label.LA
    aorta, pa, branches = _vessel_paths(params, vessels)
    if vessels == "short":  # the short vessels stay above the base plane and near the heart (speed)
        idx = np.flatnonzero((np.linalg.norm(q, axis=1) < 3.5 * l) & (z > -1.0))
    else:  # the descending aorta runs down beside the ventricles (which overwrite it where they overlap)
        idx = np.arange(q.shape[0])
    if idx.size:
        qn = q[idx]
        pa_d = _polyline_distance(qn, pa)
        for br in branches:
            pa_d = np.minimum(pa_d, _polyline_distance(qn, br) + 0.3 * params.pa_radius_mm)
        out[idx[pa_d <= params.pa_radius_mm]] = Label.PULMONARY_ARTERY
        ao_d = _polyline_distance(qn, aorta)
        out[idx[ao_d <= params.aorta_radius_mm]] = Label.AORTA

    # Ventricles (below the base plane) overwrite everything else there.
    out[below_base & rv_epi & ~lv_epi] = Label.RV_MYO
    out[below_base & rv_endo & ~lv_epi] = Label.RV_BLOOD
    lv_myo = below_base & lv_epi & ~lv_endo
    out[lv_myo] = Label.LV_MYO
    out[below_base & lv_endo] = Label.LV_BLOOD
    if params.scar_sector_deg is not None and params.scar_range is not None:
        centre, width = params.scar_sector_deg
        angle = np.rad2deg(np.arctan2(y, x)) % 360.0
        diff = np.abs((angle - centre + 180.0) % 360.0 - 180.0)
        frac = 1.0 + z / (l + 0.7 * t)  # 0 apex, 1 base
        lo, hi = params.scar_range
        out[lv_myo & (diff <= width / 2) & (frac >= lo) & (frac <= hi)] = Label.SCAR
    return out


def thorax_tissue_at(points_lps: np.ndarray, params: HeartShapeParams, rng_state: int) -> np.ndarray:
    """Non-cardiac tissue codes at LPS points: air, lung, fat, soft tissue, bone."""
    rng = np.random.default_rng(rng_state)
    # Body centre: the heart sits left and anterior in the chest.
    body_c = np.asarray(params.base_centre_lps_mm) + np.array([-25.0, 30.0, 0.0]) + rng.normal(0, 4, 3)
    p = points_lps - body_c
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    a, b = rng.uniform(135, 165), rng.uniform(100, 125)
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    inner = (x / (a - rng.uniform(8, 20))) ** 2 + (y / (b - rng.uniform(8, 18))) ** 2 <= 1.0
    tissue = np.full(p.shape[0], _AIR, dtype=np.uint8)
    tissue[body] = _FAT
    tissue[inner] = _SOFT
    lung_r = np.array([0.42 * a, 0.62 * b, 140.0])
    for side in (-1.0, 1.0):
        c = np.array([side * 0.5 * a, 0.12 * b, 10.0])
        lung = np.sum(((p - c) / lung_r) ** 2, axis=1) <= 1.0
        tissue[inner & lung] = _LUNG
    liver = np.sum(((p - np.array([-0.3 * a, 0.0, -110.0])) / np.array([0.6 * a, 0.7 * b, 60.0])) ** 2, axis=1) <= 1.0
    tissue[inner & liver] = _SOFT
    spine = (x / 18.0) ** 2 + ((y - 0.72 * b) / 18.0) ** 2 <= 1.0
    tissue[spine] = _BONE
    sternum = (x / 14.0) ** 2 + ((y + 0.88 * b) / 6.0) ** 2 <= 1.0
    tissue[sternum] = _BONE
    # Ribs: thin bands in the chest wall every ~25 mm in z.
    rib_ring = (~inner) & body & ((x / (a - 4)) ** 2 + (y / (b - 4)) ** 2 >= 0.85)
    rib_z = np.abs(((z + 1000.0) % 25.0) - 12.5) < 4.0
    tissue[rib_ring & rib_z] = _BONE
    # Pericardial / epicardial fat and mediastinal tissue around the heart.
    rot = np.asarray(params.rotation).reshape(3, 3)
    q = (points_lps - np.asarray(params.base_centre_lps_mm)) @ rot
    r, l, t = params.lv_radius_mm, params.lv_length_mm, params.lv_wall_mm
    around = (q[:, 0] ** 2 / (r + t + 14) ** 2 + (q[:, 1] - 0.4 * r) ** 2 / (r + t + 28) ** 2
              + (q[:, 2] + 0.3 * l) ** 2 / (0.8 * l + 25) ** 2) <= 1.0
    tissue[inner & around] = _SOFT
    fat_shell = (q[:, 0] ** 2 / (r + t + 6) ** 2 + (q[:, 1] - 0.5 * r) ** 2 / (r + t + 20) ** 2
                 + (q[:, 2] + 0.4 * l) ** 2 / (0.6 * l + 12) ** 2) <= 1.0
    tissue[inner & fat_shell] = _FAT
    return tissue


def _grid_points(geometry: ImageGeometry, *, slice_offsets: np.ndarray | None = None) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=float) for n in geometry.shape), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
    return geometry.index_to_world(ijk)


def _tissue_map(points: np.ndarray, params: HeartShapeParams, seed: int, vessels: VesselModel = "short") -> np.ndarray:
    heart = heart_labels_at(points, params, vessels=vessels)
    tissue = thorax_tissue_at(points, params, seed + 1)
    return np.where(heart > 0, heart, tissue)


_CT_HU = {  # mean HU per tissue; contrast-enhanced blood varies per scan (set below)
    Label.LV_MYO: 100.0, Label.RV_MYO: 100.0, Label.SCAR: 85.0,
    _AIR: -1000.0, _LUNG: -850.0, _FAT: -100.0, _SOFT: 45.0, _BONE: 650.0,
}
_MR_SIGNAL = {  # relative bSSFP signal per tissue
    Label.LV_MYO: 0.22, Label.RV_MYO: 0.22, Label.SCAR: 0.24,
    _AIR: 0.0, _LUNG: 0.04, _FAT: 0.85, _SOFT: 0.32, _BONE: 0.12,
}


def make_phantom(
    *,
    seed: int,
    modality: PhantomModality = "CT",
    scar: bool = False,
    spacing_mm: tuple[float, float, float] | None = None,
    fov_mm: float | None = None,
    lv: LvShape = "typical",
    vessels: VesselModel = "short",
) -> Phantom:
    """A synthetic thorax scan and its ground-truth labels, deterministic in ``seed``.

    CT: isotropic grid (default 1.5 mm) in the patient axes; MR: a short-axis stack (default
    1.5 x 1.5 x 8 mm) oriented along the heart's long axis with a small tilt. lv: the LV's shape
    range (``sample_heart_params``); vessels: the great vessels' model (``heart_labels_at``).
    fov_mm: field of view (default 180 mm, 240 mm for a dilated LV).
    """
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}")
    fov_mm = fov_mm if fov_mm is not None else (180.0 if lv == "typical" else 240.0)
    rng = np.random.default_rng(seed)
    params = sample_heart_params(rng, scar=scar, lv=lv)
    rot = np.asarray(params.rotation).reshape(3, 3)
    centre = np.asarray(params.base_centre_lps_mm) - 0.45 * params.lv_length_mm * rot[:, 2]
    centre = centre + rng.normal(0.0, 8.0, 3)  # field-of-view jitter
    if modality == "CT":
        spacing = np.asarray(spacing_mm or (1.5, 1.5, 1.5), dtype=float)
        direction = np.eye(3)
        extent = np.array([fov_mm, fov_mm, fov_mm])
    else:
        spacing = np.asarray(spacing_mm or (1.5, 1.5, 8.0), dtype=float)
        tilt = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(0, 8)))
        direction = tilt @ rot  # short-axis stack: slice normal along the long axis
        if np.linalg.det(direction) < 0:
            direction[:, 0] *= -1
        extent = np.array([fov_mm, fov_mm, params.lv_length_mm + 30.0])
    shape = tuple(int(v) for v in np.maximum(np.round(extent / spacing), 4))
    origin = centre - direction @ (spacing * (np.asarray(shape) - 1) / 2.0)
    geometry = ImageGeometry(
        shape=shape,  # type: ignore[arg-type]
        spacing_mm=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin_mm=tuple(float(o) for o in origin),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction.ravel()),
    )
    points = _grid_points(geometry)
    tissue = _tissue_map(points, params, seed, vessels).reshape(shape)
    labels = _remove_fragments(np.where(tissue < _AIR, tissue, 0).astype(np.uint8))
    tissue = np.where(labels > 0, labels, np.where(tissue < _AIR, _SOFT, tissue)).astype(np.uint8)

    if modality == "CT":
        voxels = _ct_appearance(tissue, rng, spacing)
    else:
        # Through-slice partial volume: average the signal over sub-slices of the thick slice.
        offsets = np.linspace(-0.4, 0.4, 5) * spacing[2]
        signal = np.zeros(shape, dtype=np.float64)
        mr_values = _mr_values(rng)
        for off in offsets:
            pts = points + off * direction[:, 2]
            t = _tissue_map(pts, params, seed, vessels).reshape(shape)
            signal += _lookup(t, mr_values)
        signal /= len(offsets)
        voxels = _mr_appearance(signal, rng, spacing)
    digest = hashlib.sha256(voxels.tobytes()).hexdigest()
    scan = Scan(voxels=voxels.astype(np.float32), geometry=geometry, modality=modality, sha256=digest,
                source=f"phantom:{modality}:seed={seed}")
    label_map = LabelMap(labels=labels, geometry=geometry, source=f"phantom:{modality}:seed={seed}")
    return Phantom(scan=scan, labels=label_map, params=params, seed=seed)


def _remove_fragments(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected piece of each label; slivers (where two implicit surfaces are
    nearly tangent) take the label of the nearest voxel outside the slivers."""
    fragments = np.zeros(labels.shape, dtype=bool)
    for lab in np.unique(labels):
        if lab == 0:
            continue
        cc, n = ndimage.label(labels == lab)
        if n > 1:
            sizes = np.bincount(cc.ravel())
            sizes[0] = 0
            fragments |= (cc > 0) & (cc != int(np.argmax(sizes)))
    if not fragments.any():
        return labels
    _, nearest = ndimage.distance_transform_edt(fragments, return_indices=True)
    out = labels.copy()
    out[fragments] = labels[tuple(idx[fragments] for idx in nearest)]
    return out


def _lookup(tissue: np.ndarray, values: dict[int, float]) -> np.ndarray:
    table = np.zeros(256, dtype=np.float64)
    for code, v in values.items():
        table[int(code)] = v
    return table[tissue]


def _ct_appearance(tissue: np.ndarray, rng: np.random.Generator, spacing: np.ndarray) -> np.ndarray:
    values = {int(k): v + rng.normal(0, 0.1 * abs(v) + 5) for k, v in _CT_HU.items()}
    left_blood = rng.uniform(250.0, 450.0)
    right_blood = left_blood * rng.uniform(0.6, 1.05)
    for lab in (Label.LV_BLOOD, Label.LA, Label.AORTA):
        values[int(lab)] = left_blood + rng.normal(0, 10)
    for lab in (Label.RV_BLOOD, Label.RA, Label.PULMONARY_ARTERY):
        values[int(lab)] = right_blood + rng.normal(0, 10)
    hu = _lookup(tissue, values)
    hu = ndimage.gaussian_filter(hu, sigma=rng.uniform(0.5, 0.9) / spacing * spacing.min())
    hu += rng.normal(0.0, rng.uniform(10.0, 30.0), size=hu.shape)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


def _mr_values(rng: np.random.Generator) -> dict[int, float]:
    values = {int(k): max(v * rng.uniform(0.8, 1.2), 0.0) for k, v in _MR_SIGNAL.items()}
    blood = rng.uniform(0.8, 1.0)
    for lab in (Label.LV_BLOOD, Label.RV_BLOOD, Label.LA, Label.RA, Label.AORTA, Label.PULMONARY_ARTERY):
        values[int(lab)] = blood * rng.uniform(0.9, 1.05)
    return values


def _mr_appearance(signal: np.ndarray, rng: np.random.Generator, spacing: np.ndarray) -> np.ndarray:
    shape = np.asarray(signal.shape, dtype=float)
    grids = np.meshgrid(*(np.linspace(-1, 1, int(n)) for n in shape), indexing="ij")
    coeffs = rng.normal(0.0, 0.25, size=6)
    log_bias = (coeffs[0] * grids[0] + coeffs[1] * grids[1] + coeffs[2] * grids[2]
                + coeffs[3] * grids[0] * grids[1] + coeffs[4] * grids[0] ** 2 + coeffs[5] * grids[1] ** 2)
    s = signal * np.exp(log_bias)
    in_plane_sigma = np.array([0.6, 0.6, 0.0])
    s = ndimage.gaussian_filter(s, sigma=in_plane_sigma)
    sigma = rng.uniform(0.02, 0.05)
    s = np.sqrt((s + rng.normal(0, sigma, s.shape)) ** 2 + rng.normal(0, sigma, s.shape) ** 2)  # Rician
    scale = rng.uniform(600.0, 1200.0)
    return np.clip(np.round(s * scale), 0, 32767).astype(np.int16)


def phantom_params_dict(params: HeartShapeParams) -> dict:
    return asdict(params)
