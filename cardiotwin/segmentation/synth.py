"""SynthSeg-style training data: random label maps of the heart shape model, random appearances.

Two steps, so the expensive part is done once:

1. ``make_label_volume(seed)`` draws a heart from the phantom's shape model
   (``cardiotwin.phantom.sample_heart_params`` / ``heart_labels_at``) plus a random affine
   scaling and a smooth random displacement field, adds papillary muscles inside the LV blood
   pool and the non-cardiac thorax tissues, and samples it on a cube of ``size``^3 voxels at
   ``spacing_mm`` (world-aligned, LPS). The result is a map of *tissue codes* (uint8): heart
   labels 1-8, papillary muscle (25, scored as LV blood pool) and thorax tissues 20-24.
2. ``synth_sample(codes, long_axis, ...)`` (torch, fast, on the fly) crops a randomly rotated and
   scaled patch and paints it: random intensity per tissue code (CT-like, bSSFP-like or fully
   random, as in SynthSeg: Billot et al., Medical Image Analysis 86:102789, 2023), texture noise,
   bias field, blur, thick slices with through-slice partial volume along a random direction near
   the heart's long axis (short-axis MR), a limited slab or box field of view, noise, gamma,
   and the same percentile normalisation as inference. The network therefore learns shapes, not
   one appearance.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cardiotwin.anatomy import Label, ThoraxTissue
from cardiotwin.phantom import LvShape, VesselModel, heart_labels_at, sample_heart_params, thorax_tissue_at

log = logging.getLogger(__name__)

AIR, LUNG, FAT, SOFT, BONE = (int(t) for t in ThoraxTissue)
PAPILLARY = 25  # painted inside the LV blood pool, scored as LV blood
# Non-cardiac structures of random shape and appearance painted on the fly (background class):
# real thoracic MR/CT shows many bright or ring-shaped non-cardiac structures (liver and its vessels,
# stomach, descending aorta, IVC, chest-wall fat, breasts, arms) that the plain thorax model lacks;
# SynthSeg adds random extra-cerebral labels for the same reason (Billot et al. 2023, sec. 3.1).
DISTRACTORS = tuple(range(26, 32))
# Tissue in contact with the heart's outer wall (painted on the fly over the phantom's pericardial
# fat shell and mediastinum): in real cine MRI the epicardium often borders lung, pericardium or
# thin fat of myocardial darkness, so the wall's outer edge has little or no contrast.
PERICARDIUM = 32
N_CODES = 33
N_CLASSES = 9  # background + labels 1-8 (scar is not predicted: it needs LGE contrast)
_BLOOD = (int(Label.LV_BLOOD), int(Label.RV_BLOOD), int(Label.LA), int(Label.RA), int(Label.AORTA),
          int(Label.PULMONARY_ARTERY))
_MYO = (int(Label.LV_MYO), int(Label.RV_MYO), PAPILLARY)

# code -> training class (papillary muscles count as LV blood pool, as in expert contours)
CODE_TO_CLASS = np.zeros(256, dtype=np.int64)
for _c in range(1, 9):
    CODE_TO_CLASS[_c] = _c
CODE_TO_CLASS[int(Label.SCAR)] = int(Label.LV_MYO)
CODE_TO_CLASS[PAPILLARY] = int(Label.LV_BLOOD)


@dataclass(frozen=True)
class SynthLabels:
    """A cube of tissue codes (uint8, (n, n, n), world-aligned LPS) and the heart's long axis.

    long_axis: unit vector (apex -> base) in the cube's index axes; spacing_mm: voxel size.
    """

    codes: np.ndarray
    long_axis: tuple[float, float, float]
    spacing_mm: float
    seed: int


def make_label_volume(seed: int, *, size: int = 80, spacing_mm: float = 2.5,
                      vessels: VesselModel = "short", lv: LvShape = "typical") -> SynthLabels:
    """Random heart + thorax tissue codes on a ``size``^3 cube, deterministic in ``seed``.

    vessels: the shape model's great vessels ("short" as the sample phantoms, or "thoracic" with
    adult lengths; ``cardiotwin.phantom.heart_labels_at``). lv: "typical" or "dilated" LV
    (``cardiotwin.phantom.sample_heart_params``).
    """
    rng = np.random.default_rng(seed)
    params = sample_heart_params(rng, pose_jitter_deg=30.0, lv=lv)
    rot = np.asarray(params.rotation).reshape(3, 3)
    base = np.asarray(params.base_centre_lps_mm)
    centre = base - 0.35 * params.lv_length_mm * rot[:, 2] + rng.normal(0.0, 10.0, 3)
    axis = (np.arange(size) - (size - 1) / 2.0) * spacing_mm
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    # Random affine about the heart (dilated or small hearts, anisotropy) ...
    scale = rng.uniform(0.85, 1.3) * np.exp(rng.normal(0.0, 0.07, 3))
    shear = np.eye(3) + rng.normal(0.0, 0.05, (3, 3))
    a_inv = np.linalg.inv(rot @ np.diag(scale) @ rot.T @ shear)
    pts = centre + (grid + centre - base) @ a_inv.T + base - centre
    # ... plus a smooth random displacement (coarse 5^3 control grid, cubic upsampling).
    amp = rng.uniform(2.0, 6.0)
    disp = np.stack([
        ndimage.zoom(rng.normal(0.0, amp, (5, 5, 5)), size / 5.0, order=3, mode="nearest")[:size, :size, :size]
        for _ in range(3)
    ], axis=-1).reshape(-1, 3)
    pts = pts + disp
    heart = heart_labels_at(pts, params, vessels=vessels)
    tissue = thorax_tissue_at(pts, params, seed + 1)
    codes = np.where(heart > 0, heart, tissue).astype(np.uint8)
    # Papillary muscles: elongated blobs near the LV free wall, inside the blood pool.
    q = (pts - base) @ rot
    r, length = params.lv_radius_mm, params.lv_length_mm
    for _ in range(int(rng.integers(0, 4))):
        theta = rng.uniform(0, 2 * math.pi)
        c = np.array([0.65 * r * math.cos(theta), 0.65 * r * math.sin(theta), -rng.uniform(0.3, 0.6) * length])
        radii = np.array([rng.uniform(2.5, 5.0), rng.uniform(2.5, 5.0), rng.uniform(6.0, 14.0)])
        blob = np.sum(((q - c) / radii) ** 2, axis=1) <= 1.0
        codes[blob & (codes == int(Label.LV_BLOOD))] = PAPILLARY
    long_axis = np.linalg.solve(a_inv, rot[:, 2])  # the model's long axis seen in the cube
    long_axis = long_axis / np.linalg.norm(long_axis)
    return SynthLabels(codes=codes.reshape(size, size, size), long_axis=tuple(float(v) for v in long_axis),
                       spacing_mm=float(spacing_mm), seed=int(seed))


# --------------------------------------------------------------------------------------------
# On-the-fly appearance (torch)
# --------------------------------------------------------------------------------------------


def _rand(gen: torch.Generator, lo: float, hi: float, size: tuple[int, ...] = ()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(size, generator=gen, dtype=torch.float64)


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(_rand(gen, lo, hi))


def _random_rotation(gen: torch.Generator, max_deg: float) -> torch.Tensor:
    axis = torch.randn(3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm()
    angle = math.radians(_u(gen, 0.0, max_deg))
    k = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _sample(volume: torch.Tensor, idx: torch.Tensor, *, mode: str, padding: str = "zeros") -> torch.Tensor:
    """Sample a (C, X, Y, Z) volume at continuous voxel indices idx (..., 3) -> (C, ...); padding as grid_sample."""
    shape = torch.tensor(volume.shape[1:], dtype=torch.float32)
    scale = (2.0 / (shape - 1)).flip(0)
    grid = idx.float().flip(-1) * scale - 1.0  # grid_sample wants (z, y, x) in [-1, 1]
    grid = grid.reshape(1, *idx.shape[:-1], 3)
    out = F.grid_sample(volume[None].float(), grid, mode=mode, padding_mode=padding, align_corners=True)
    return out[0]


def _gaussian_blur(img: torch.Tensor, sigmas: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of a (X, Y, Z) tensor; sigmas in voxels per axis."""
    out = img[None, None]
    for ax, s in enumerate(sigmas):
        if s < 0.2:
            continue
        rad = max(1, int(math.ceil(2.5 * s)))
        x = torch.arange(-rad, rad + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (x / s) ** 2)
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + ax] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - ax)] = pad[2 * (2 - ax) + 1] = rad
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.reshape(shape))
    return out[0, 0]


def _intensity_table(gen: torch.Generator, mode: str, *, p_dark_fat: float = 0.0) -> torch.Tensor:
    """Mean intensity per tissue code (N_CODES,) for one synthetic scan.

    p_dark_fat (MR appearance): probability that the fat codes (the phantom's pericardial fat shell
    and the body wall) get a myocardium-like signal instead of bright bSSFP fat, so the outer wall
    has no edge at all (no random draw when 0, so older configs give the same data).
    """
    t = torch.zeros(N_CODES, dtype=torch.float64)
    if mode == "ct":
        blood_l = _u(gen, 150.0, 550.0)
        blood_r = blood_l * _u(gen, 0.5, 1.1)
        myo = _u(gen, 60.0, 160.0)
        vals = {AIR: -1000.0, LUNG: _u(gen, -920.0, -650.0), FAT: _u(gen, -130.0, -60.0),
                SOFT: _u(gen, 20.0, 80.0), BONE: _u(gen, 250.0, 900.0)}
        for c in (int(Label.LV_BLOOD), int(Label.LA), int(Label.AORTA)):
            vals[c] = blood_l + _u(gen, -20.0, 20.0)
        for c in (int(Label.RV_BLOOD), int(Label.RA), int(Label.PULMONARY_ARTERY)):
            vals[c] = blood_r + _u(gen, -20.0, 20.0)
        for c in _MYO:
            vals[c] = myo + _u(gen, -10.0, 10.0)
    elif mode == "mr":
        blood = _u(gen, 0.55, 1.0)
        myo = _u(gen, 0.08, 0.32)
        vals = {AIR: 0.0, LUNG: _u(gen, 0.0, 0.08), FAT: _u(gen, 0.5, 1.0), SOFT: _u(gen, 0.18, 0.5),
                BONE: _u(gen, 0.03, 0.25)}
        for c in _BLOOD:
            vals[c] = blood * _u(gen, 0.85, 1.1)
        for c in _MYO:
            vals[c] = myo * _u(gen, 0.85, 1.15)
        if p_dark_fat > 0.0 and _u(gen, 0, 1) < p_dark_fat:
            vals[FAT] = myo * _u(gen, 0.4, 1.3)
    else:  # fully random, with blood (and myocardium) usually tied as in any real contrast
        vals = {c: _u(gen, 0.0, 1.0) for c in range(1, N_CODES)}
        if _u(gen, 0, 1) < 0.7:
            blood = _u(gen, 0.0, 1.0)
            for c in _BLOOD:
                vals[c] = blood + _u(gen, -0.04, 0.04)
        if _u(gen, 0, 1) < 0.8:
            myo = _u(gen, 0.0, 1.0)
            for c in _MYO:
                vals[c] = myo + _u(gen, -0.04, 0.04)
    # Pericardial contact tissue: dark (lung- or myocardium-like, no epicardial edge) or fat-like.
    if mode == "ct":
        vals[PERICARDIUM] = _u(gen, -150.0, 80.0)
    elif mode == "mr":
        dark = _u(gen, 0, 1) < 0.6
        vals[PERICARDIUM] = vals[int(Label.LV_MYO)] * _u(gen, 0.3, 1.4) if dark else _u(gen, 0.3, 1.0)
    if mode != "random":  # distractors: anything from dark to as bright as blood, often exactly blood-like
        lo, hi = (-150.0, 700.0) if mode == "ct" else (0.0, 1.0)
        blood = vals[int(Label.LV_BLOOD)]
        for c in DISTRACTORS:
            vals[c] = blood * _u(gen, 0.85, 1.1) if _u(gen, 0, 1) < 0.35 else _u(gen, lo, hi)
    for c, v in vals.items():
        t[c] = v
    return t


def add_distractors(code_p: torch.Tensor, u: torch.Tensor, gen: torch.Generator, *, n: int) -> torch.Tensor:
    """Paint ``n`` random non-cardiac structures into the thorax tissue of a patch of tissue codes.

    code_p: (p, p, p) int64 codes; u: (p, p, p, 3) patch coordinates in mm. Each structure is an
    ellipsoid (optionally with a wall of another code: vessels and bowel look like a blood pool in a
    ring), a straight tube (vessels) or a smooth random blob (organs), with one code of
    ``DISTRACTORS``. Only thorax codes (AIR..BONE) are replaced: heart labels are never touched, so
    the classes do not change; only what the background looks like does.
    """
    out = code_p.clone()
    free = (code_p >= AIR) & (code_p <= BONE)
    extent = float(u.abs().max())
    for i in range(n):
        code = DISTRACTORS[i % len(DISTRACTORS)]
        kind = _u(gen, 0, 1)
        centre = _rand(gen, -extent, extent, (3,)).float()
        if kind < 0.45:  # ellipsoid, maybe with a wall
            rot = _random_rotation(gen, 180.0).float()
            radii = _rand(gen, 4.0, 30.0, (3,)).float()
            q = ((u - centre) @ rot) / radii
            r2 = (q * q).sum(-1)
            out[free & (r2 <= 1.0)] = code
            if _u(gen, 0, 1) < 0.5:
                wall = _u(gen, 2.0, 6.0) / float(radii.min())
                shell = (r2 > 1.0) & (r2 <= (1.0 + wall) ** 2)
                out[free & shell] = DISTRACTORS[(i + 3) % len(DISTRACTORS)]
        elif kind < 0.7:  # tube
            d = torch.randn(3, generator=gen).float()
            d = d / d.norm()
            rel = u - centre
            along = rel @ d
            dist2 = (rel * rel).sum(-1) - along * along
            out[free & (dist2 <= _u(gen, 3.0, 14.0) ** 2)] = code
        else:  # smooth random blob: thresholded coarse noise
            coarse = torch.randn((1, 1, 4, 4, 4), generator=gen)
            field = F.interpolate(coarse, size=tuple(code_p.shape), mode="trilinear", align_corners=True)[0, 0]
            thr = torch.quantile(field.flatten()[:: max(1, field.numel() // 20000)], _u(gen, 0.8, 0.97))
            out[free & (field > thr)] = code
    return out


CT_WINDOW_HU = (-200.0, 800.0)


def normalise_intensities(img: torch.Tensor, fov: torch.Tensor, *, modality: str = "MR", lower_pct: float = 0.5,
                          upper_pct: float = 99.5) -> torch.Tensor:
    """Scale intensities to [0, 1]; voxels outside ``fov`` (not acquired) -> 0.

    CT: the fixed window ``CT_WINDOW_HU`` (Hounsfield units are absolute). Other modalities: the
    [lower, upper] percentiles of the voxels inside ``fov``. Shared with inference
    (``cardiotwin.segmentation.inference``) so training and use agree.
    """
    if modality == "CT":
        lo_hu, hi_hu = CT_WINDOW_HU
        out = ((img - lo_hu) / (hi_hu - lo_hu)).clamp(0.0, 1.0)
        return torch.where(fov, out, torch.zeros_like(out))
    vals = img[fov]
    if vals.numel() == 0:
        return torch.zeros_like(img)
    if vals.numel() > 2_000_000:
        vals = vals[torch.linspace(0, vals.numel() - 1, 2_000_000).long()]
    lo = torch.quantile(vals.float(), lower_pct / 100.0)
    hi = torch.quantile(vals.float(), upper_pct / 100.0)
    out = ((img - lo) / torch.clamp(hi - lo, min=1e-6)).clamp(0.0, 1.0)
    return torch.where(fov, out, torch.zeros_like(out))


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Dilation of a 3D bool mask by a (2r+1)^3 cube: three 1D max-pools (the same as one cubic
    max-pool, several times faster for large r)."""
    out = mask[None, None].float()
    for k in ((2 * r + 1, 1, 1), (1, 2 * r + 1, 1), (1, 1, 2 * r + 1)):
        out = F.max_pool3d(out, kernel_size=k, stride=1, padding=tuple(v // 2 for v in k))
    return out[0, 0] > 0


def add_trabeculae(code_p: torch.Tensor, gen: torch.Generator, *, depth_vox: int) -> torch.Tensor:
    """Turn a random, fine-grained part of the LV blood pool within ``depth_vox`` voxels of the LV
    wall into trabeculae (code PAPILLARY: myocardial signal, class LV blood pool).

    Expert LV contours (Sunnybrook, ACDC) are drawn around the compacted wall and include
    trabeculations and papillary muscles in the blood pool; a network that has only seen a smooth
    cavity labels that dark, irregular rim as myocardium and moves the endocardium inwards.
    code_p: (p, p, p) int64 codes; returns a new tensor.
    """
    myo = (code_p == int(Label.LV_MYO)) | (code_p == int(Label.SCAR))
    blood = code_p == int(Label.LV_BLOOD)
    if depth_vox < 1 or not myo.any() or not blood.any():
        return code_p
    zone = _dilate(myo, depth_vox) & blood
    p = code_p.shape[0]
    m = max(4, p // int(torch.randint(2, 5, (1,), generator=gen)))  # grain of 2-4 voxels
    noise = F.interpolate(torch.randn((1, 1, m, m, m), generator=gen), size=tuple(code_p.shape), mode="trilinear",
                          align_corners=True)[0, 0]
    thr = torch.quantile(noise.flatten()[:: max(1, noise.numel() // 20000)], _u(gen, 0.35, 0.75))
    return torch.where(zone & (noise > thr), torch.full_like(code_p, PAPILLARY), code_p)


def add_pericardium(code_p: torch.Tensor, gen: torch.Generator, *, depth_vox: int) -> torch.Tensor:
    """Turn a random, patchy part of the thorax tissue within ``depth_vox`` voxels of the heart's
    outer wall (LV / RV myocardium) into ``PERICARDIUM`` (a class-0 code with its own intensity).

    The phantom wraps the ventricles in a shell of fat, bright in bSSFP; a network trained on it
    learns that the myocardium ends at a bright edge and, on real cine MRI (lateral wall against
    lung, thin pericardium), stops inside the real epicardium (Sunnybrook: most of the missed
    myocardium was the outer wall). Only thorax codes are replaced, so the classes do not change.
    code_p: (p, p, p) int64 codes; returns a new tensor.
    """
    wall = (code_p == int(Label.LV_MYO)) | (code_p == int(Label.RV_MYO)) | (code_p == int(Label.SCAR))
    free = (code_p >= AIR) & (code_p <= BONE)
    if depth_vox < 1 or not wall.any():
        return code_p
    near = _dilate(wall, depth_vox)
    p = code_p.shape[0]
    m = max(3, p // int(torch.randint(4, 12, (1,), generator=gen)))  # coarse patches, 4-12 voxels
    noise = F.interpolate(torch.randn((1, 1, m, m, m), generator=gen), size=tuple(code_p.shape), mode="trilinear",
                          align_corners=True)[0, 0]
    thr = torch.quantile(noise.flatten()[:: max(1, noise.numel() // 20000)], _u(gen, 0.0, 0.6))
    return torch.where(near & free & (noise > thr), torch.full_like(code_p, PERICARDIUM), code_p)


def add_endocardial_ramp(img: torch.Tensor, code_p: torch.Tensor, gen: torch.Generator, *, depth_vox: int,
                         myo_value: float) -> torch.Tensor:
    """Darken the LV blood pool towards ``myo_value`` within ``depth_vox`` voxels of the LV wall,
    most at the wall and linearly less inwards (class unchanged: LV blood pool).

    In real cine MRI (thick slices through trabeculae and slow flow) the blood signal falls over
    4-6 mm before the expert endocardium (Sunnybrook ED, median normalised signal 6 / 4 / 2 mm inside
    the contour: 0.35 / 0.30 / 0.19, myocardium 0.12), and the contour is drawn at the dark end of
    that ramp. A network that has only seen a sharp blood-wall edge puts the endocardium in the middle
    of the ramp (1.2.0: 2-7 mm inside the expert's, and the whole wall shifted inwards with it).
    img: (p, p, p) mean intensities before blur; code_p: (p, p, p) tissue codes. Returns a new tensor.
    """
    myo = (code_p == int(Label.LV_MYO)) | (code_p == int(Label.SCAR))
    blood = code_p == int(Label.LV_BLOOD)
    if depth_vox < 1 or not myo.any() or not blood.any():
        return img
    strength = _u(gen, 0.4, 0.9)
    return _blend_rings(img.clone(), start=myo, within=blood, depth_vox=depth_vox, strength=strength, value=myo_value)


def _blend_rings(out: torch.Tensor, *, start: torch.Tensor, within: torch.Tensor, depth_vox: int, strength: float,
                 value: float) -> torch.Tensor:
    """Blend ``out`` (in place) towards ``value`` in the ``depth_vox`` one-voxel rings grown from
    ``start`` into ``within``: weight ``strength`` in the first ring, linearly less in the next ones."""
    grown = start
    for i in range(1, depth_vox + 1):
        nxt = F.max_pool3d(grown[None, None].float(), kernel_size=3, stride=1, padding=1)[0, 0] > 0
        ring = nxt & ~grown & within
        a = strength * (1.0 - (i - 1) / depth_vox)
        out[ring] = (1.0 - a) * out[ring] + a * value
        grown = nxt
    return out


def add_myocardial_heterogeneity(img: torch.Tensor, code_p: torch.Tensor, gen: torch.Generator, *,
                                 myo_value: float, epi_depth_vox: int) -> torch.Tensor:
    """Make the ventricular myocardium's signal uneven (class unchanged): a smooth random
    multiplicative field over the LV and RV myocardium, and the outer ``epi_depth_vox`` voxels of the
    LV wall brightened towards 1.3-2.2x ``myo_value`` (most at the epicardium, linearly less inwards).

    The phantom paints the myocardium with one signal. Real cine MRI does not (coil sensitivity,
    through-slice partial volume with epicardial fat and blood at 8-10 mm slices): on Sunnybrook ED
    (SCD0000201) the expert's wall is a dark inner layer and a grey outer layer, and the network
    trained on flat walls (heart_seg_v1 1.3.0) called the grey layer background. Replacing each real
    expert myocardium by its median signal (a counterfactual, not a method) raised LV myocardium Dice
    0.588 -> 0.648 (SCD0000201 0.462 -> 0.575).
    img: (p, p, p) mean intensities before blur; code_p: (p, p, p) tissue codes. Returns a new tensor.
    """
    wall = (code_p == int(Label.LV_MYO)) | (code_p == int(Label.RV_MYO)) | (code_p == int(Label.SCAR))
    if not wall.any():
        return img
    p = code_p.shape[0]
    m = max(3, p // int(torch.randint(3, 9, (1,), generator=gen)))  # grain of 3-8 voxels
    field = F.interpolate(torch.randn((1, 1, m, m, m), generator=gen), size=tuple(code_p.shape), mode="trilinear",
                          align_corners=True)[0, 0]
    out = torch.where(wall, img * torch.exp(_u(gen, 0.1, 0.4) * field), img)
    lv_wall = (code_p == int(Label.LV_MYO)) | (code_p == int(Label.SCAR))
    if epi_depth_vox < 1 or not lv_wall.any():
        return out
    target = myo_value * _u(gen, 1.3, 2.2)
    strength = _u(gen, 0.4, 1.0)
    # the LV's outside: anything that is neither LV wall nor LV cavity (papillary muscles count as cavity)
    outside = ~(lv_wall | (code_p == int(Label.LV_BLOOD)) | (code_p == PAPILLARY))
    return _blend_rings(out, start=outside, within=lv_wall, depth_vox=epi_depth_vox, strength=strength, value=target)


def texture_negative(gen: torch.Generator, *, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A hard negative: smooth random texture without anatomy, every voxel background.

    A network trained only on patches that hold a heart paints one into any input (a smooth noise
    volume gets a 60 mL "LV"); a share of such patches teaches it that texture alone is no heart.
    Returns image (1, p, p, p) in [0, 1] and classes (p, p, p) zeros, as ``synth_sample``.
    """
    grain = int(torch.randint(3, 13, (1,), generator=gen))
    coarse = torch.randn((1, 1, grain, grain, grain), generator=gen)
    img = F.interpolate(coarse, size=(patch,) * 3, mode="trilinear", align_corners=True)[0, 0]
    img = img + _u(gen, 0.0, 0.3) * torch.randn(img.shape, generator=gen)
    img = _gaussian_blur(img, (_u(gen, 0.3, 1.5),) * 3)
    fov = torch.ones(img.shape, dtype=torch.bool)
    img = normalise_intensities(img, fov, modality="MR")
    if _u(gen, 0, 1) < 0.5:
        img = img.clamp(min=0) ** math.exp(_u(gen, -0.5, 0.5))
    return img[None].float(), torch.zeros(img.shape, dtype=torch.int64)


def add_contrast_mixing(img: torch.Tensor, code_p: torch.Tensor, gen: torch.Generator, *,
                        unenhanced: float) -> torch.Tensor:
    """Mix unenhanced blood into the right heart (RA, RV; class unchanged): a smooth random field
    blends each voxel between its enhanced value and ``unenhanced``, in swirls of 2-8 voxels.

    In contrast CT the bolus from the superior vena cava meets unopacified blood from the inferior
    vena cava in the right atrium and ventricle, so the right heart shows streaks and swirls from
    about 40 HU to full enhancement. On the real CT crop (``../shared/data/real_ct``) heart_seg_v1 1.4.1
    left such a region unlabelled: 63,225 of the reference heart's 198,176 voxels were background.
    img: (p, p, p) mean intensities before blur; code_p: (p, p, p) tissue codes. Returns a new tensor.
    """
    right = (code_p == int(Label.RV_BLOOD)) | (code_p == int(Label.RA))
    if not right.any():
        return img
    p = code_p.shape[0]
    m = max(3, p // int(torch.randint(2, 9, (1,), generator=gen)))
    field = F.interpolate(torch.randn((1, 1, m, m, m), generator=gen), size=tuple(code_p.shape), mode="trilinear",
                          align_corners=True)[0, 0]
    # share of enhanced blood: a sigmoid of the field, centred anywhere from mostly unenhanced to mostly enhanced
    mix = torch.sigmoid(_u(gen, 1.5, 5.0) * (field - _u(gen, -1.0, 1.0)))
    return torch.where(right, img * mix + unenhanced * (1.0 - mix), img)


def synth_sample(labels: SynthLabels, gen: torch.Generator, *, patch: int = 64, mode: str | None = None,
                 mode_weights: tuple[float, float, float] = (0.3, 0.35, 0.35), p_distractors: float = 0.0,
                 scale_range: tuple[float, float] = (0.85, 1.2), p_off_centre: float = 0.0,
                 off_centre_mm: float = 90.0, p_reflect: float = 0.0, p_trabeculae: float = 0.0,
                 p_negative: float = 0.0, p_pericardium: float = 0.0,
                 dim_range: tuple[float, float] = (1.0, 1.0),
                 log_gamma_range: tuple[float, float] = (-0.35, 0.35), p_dark_fat: float = 0.0,
                 pericardium_depth_vox: int = 4, p_endo_ramp: float = 0.0,
                 p_myo_hetero: float = 0.0, p_contrast_mixing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic training pair from a label volume.

    mode: "ct", "mr" or "random" appearance, or None to draw one with ``mode_weights`` (ct, mr,
    random). p_distractors: probability of painting random non-cardiac structures
    (``add_distractors``). scale_range: zoom of the patch (> 1 shows the heart larger).
    p_off_centre: probability of shifting the patch up to ``off_centre_mm`` per axis (instead of
    18 mm), so the heart may lie at the edge of or outside the patch. p_reflect: probability of
    continuing the thorax beyond the label cube by mirroring its non-cardiac tissue (else not acquired).
    p_trabeculae: probability of a trabeculated LV rim (``add_trabeculae``, 1-3 voxels deep).
    p_negative: probability of a texture-only hard negative instead (``texture_negative``).
    p_pericardium: probability of dark or bright tissue against the outer wall (``add_pericardium``),
    1 to ``pericardium_depth_vox`` voxels deep.
    p_dark_fat: probability (MR appearance) of fat with a myocardium-like signal (``_intensity_table``).
    p_endo_ramp: probability of LV blood signal falling towards the wall over 1-3 voxels
    (``add_endocardial_ramp``; no random draw when 0).
    p_myo_hetero: probability (MR and random appearance) of an uneven myocardial signal with a
    brighter outer LV wall (``add_myocardial_heterogeneity``; no random draw when 0).
    p_contrast_mixing: probability (CT appearance) of unenhanced blood swirling into the right heart
    (``add_contrast_mixing``; no random draw when 0).
    dim_range: MR-normalised images are multiplied by a factor drawn from this range. Inference
    normalises over the whole scan, whose 99.5th percentile is often fat near a surface coil far
    brighter than blood (Sunnybrook: blood pool median 0.27-0.37 after normalisation), while a
    training patch is normalised over itself, where blood is the brightest tissue (about 0.6-1.0).
    log_gamma_range: half of the MR and random-appearance patches get intensity ** exp(u), u drawn
    from this range (after normalisation; gamma < 1 brightens dark tissue; CT: -0.35..0.35).

    Returns image (1, patch, patch, patch) float32 in [0, 1] and classes (patch, patch, patch)
    int64 (0 background, 1-8 labels; 0 outside the simulated field of view).
    """
    if p_negative > 0.0 and _u(gen, 0, 1) < p_negative:
        return texture_negative(gen, patch=patch)
    sp = labels.spacing_mm
    codes = torch.from_numpy(labels.codes)
    n = codes.shape[0]
    if mode is None:
        mode = ["ct", "mr", "random"][int(torch.multinomial(torch.tensor(mode_weights), 1, generator=gen))]
    # Patch grid (mm, patch frame) -> source voxel indices through a random similarity transform.
    ax = (torch.arange(patch, dtype=torch.float32) - (patch - 1) / 2.0) * sp
    u = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)  # (p, p, p, 3) mm
    rot = _random_rotation(gen, 25.0)
    scale = _u(gen, *scale_range)
    # usually the heart near the centre; sometimes far off it or outside the patch, as most windows
    # of a sliding-window pass over a whole thorax are (without these the network learns that every
    # patch holds a heart and paints one into chest wall, liver or air)
    off = off_centre_mm if _u(gen, 0, 1) < p_off_centre else 18.0
    shift = _rand(gen, -off, off, (3,))
    src_mm = (u / scale) @ rot.T.float() + shift.float()
    src_idx = src_mm / sp + (n - 1) / 2.0
    code_p = _sample_codes(codes, src_idx, reflect=_u(gen, 0, 1) < p_reflect)  # (p, p, p)
    fov = code_p > 0  # outside the label volume (when not mirrored): not acquired
    code_p = _add_structures(code_p, u, gen, p_trabeculae=p_trabeculae, p_pericardium=p_pericardium,
                             pericardium_depth_vox=pericardium_depth_vox, p_distractors=p_distractors)
    img, table = _paint(code_p, gen, mode, p_dark_fat=p_dark_fat, p_endo_ramp=p_endo_ramp, p_myo_hetero=p_myo_hetero,
                        p_contrast_mixing=p_contrast_mixing)

    classes = torch.from_numpy(CODE_TO_CLASS)[code_p]
    # Thick slices (short-axis stacks): through-slice partial volume along a direction near the long axis.
    p_thick = {"ct": 0.1, "mr": 0.85, "random": 0.45}[mode]
    if _u(gen, 0, 1) < p_thick:
        la = rot.T @ torch.tensor(labels.long_axis, dtype=torch.float64)
        normal = la + 0.25 * torch.randn(3, generator=gen, dtype=torch.float64)
        normal = (normal / normal.norm()).float()
        thick = _u(gen, 5.0, 11.0)
        img = _thick_slices(img, u, normal, thick, _u(gen, 0.0, 1.0), sp)
        if _u(gen, 0, 1) < 0.75:  # the stack covers a slab only
            half = _u(gen, 35.0, 80.0)
            proj = u @ normal + _u(gen, -20.0, 20.0)
            fov = fov & (proj.abs() <= half)
    elif _u(gen, 0, 1) < 0.2:  # limited axial field of view
        half = _rand(gen, 45.0, 80.0, (3,))
        fov = fov & (u.abs() <= half).all(dim=-1)
    img = _finish(img, fov, gen, mode, table, log_gamma_range=log_gamma_range, dim_range=dim_range)
    classes = torch.where(fov, classes, torch.zeros_like(classes))
    return img[None].float(), classes


def _sample_codes(codes: torch.Tensor, src_idx: torch.Tensor, *, reflect: bool) -> torch.Tensor:
    """Tissue codes of the cube ``codes`` at voxel indices ``src_idx`` (..., 3), nearest neighbour.

    reflect: the thorax continues beyond the cube as mirrored tissue (hearts there are removed);
    else code 0 there (not acquired).
    """
    if not reflect:
        return _sample(codes[None].float(), src_idx, mode="nearest")[0].round().long()
    code_p = _sample(codes[None].float(), src_idx, mode="nearest", padding="reflection")[0].round().long()
    n = codes.shape[0]
    beyond = ((src_idx < -0.5) | (src_idx > n - 0.5)).any(dim=-1)
    heart = (code_p >= 1) & ((code_p <= int(Label.SCAR)) | (code_p == PAPILLARY))
    return torch.where(beyond & heart, torch.full_like(code_p, SOFT), code_p)


def _add_structures(code_p: torch.Tensor, u: torch.Tensor, gen: torch.Generator, *, p_trabeculae: float,
                    p_pericardium: float, pericardium_depth_vox: int, p_distractors: float,
                    depth_scale: int = 1) -> torch.Tensor:
    """Trabeculae, pericardial contact tissue and distractors, each with its probability (tissue codes only).

    depth_scale multiplies the depths drawn in voxels (2 on a 1.25 mm grid keeps the 2.5 mm grid's millimetres).
    """
    if _u(gen, 0, 1) < p_trabeculae:
        code_p = add_trabeculae(code_p, gen, depth_vox=depth_scale * int(torch.randint(1, 4, (1,), generator=gen)))
    if _u(gen, 0, 1) < p_pericardium:
        depth = depth_scale * int(torch.randint(1, pericardium_depth_vox + 1, (1,), generator=gen))
        code_p = add_pericardium(code_p, gen, depth_vox=depth)
    if _u(gen, 0, 1) < p_distractors:
        code_p = add_distractors(code_p, u, gen, n=int(torch.randint(1, 8, (1,), generator=gen)))
    return code_p


def _paint(code_p: torch.Tensor, gen: torch.Generator, mode: str, *, p_dark_fat: float, p_endo_ramp: float,
           p_myo_hetero: float, p_contrast_mixing: float, depth_scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Image of a patch of tissue codes (any 3D shape): a random mean per code, texture, the optional
    signal effects, blur and a bias field (depth_scale as ``_add_structures``; the blur's width scales
    with it too). Returns the image and the intensity table used."""
    table = _intensity_table(gen, mode, p_dark_fat=p_dark_fat)
    img = table[code_p].float()
    rng_range = float(table[1:].max() - table[1:].min()) or 1.0
    tex = _rand(gen, 0.0, 0.03 if mode == "ct" else 0.06, (N_CODES,)).float() * rng_range
    img = img + tex[code_p] * torch.randn(img.shape, generator=gen)
    if p_endo_ramp > 0.0 and _u(gen, 0, 1) < p_endo_ramp:
        depth = depth_scale * int(torch.randint(1, 4, (1,), generator=gen))
        img = add_endocardial_ramp(img, code_p, gen, depth_vox=depth, myo_value=float(table[int(Label.LV_MYO)]))
    if p_myo_hetero > 0.0 and mode != "ct" and _u(gen, 0, 1) < p_myo_hetero:
        depth = depth_scale * int(torch.randint(0, 4, (1,), generator=gen))
        img = add_myocardial_heterogeneity(img, code_p, gen, myo_value=float(table[int(Label.LV_MYO)]),
                                           epi_depth_vox=depth)
    if p_contrast_mixing > 0.0 and mode == "ct" and _u(gen, 0, 1) < p_contrast_mixing:
        img = add_contrast_mixing(img, code_p, gen, unenhanced=_u(gen, 20.0, 80.0))
    img = _gaussian_blur(img, (depth_scale * _u(gen, 0.3, 1.2),) * 3)
    if mode != "ct" or _u(gen, 0, 1) < 0.3:  # multiplicative bias field (smooth, coarse)
        coarse = torch.randn((1, 1, 4, 4, 4), generator=gen) * _u(gen, 0.0, 0.35)
        bias = F.interpolate(coarse, size=tuple(img.shape), mode="trilinear", align_corners=True)[0, 0]
        offset = float(img.min()) if mode == "random" else 0.0
        img = (img - offset) * torch.exp(bias) + offset
    return img, table


def _finish(img: torch.Tensor, fov: torch.Tensor, gen: torch.Generator, mode: str, table: torch.Tensor, *,
            log_gamma_range: tuple[float, float], dim_range: tuple[float, float]) -> torch.Tensor:
    """Noise (Gaussian or Rician), the inference normalisation, gamma and dimming of a painted image."""
    rng_range = float(table[1:].max() - table[1:].min()) or 1.0
    sigma = _u(gen, 3.0, 50.0) if mode == "ct" else _u(gen, 0.0, 0.05) * rng_range
    if mode == "mr" or (mode == "random" and _u(gen, 0, 1) < 0.5):
        img = img.clamp(min=0)
        img = torch.sqrt((img + sigma * torch.randn(img.shape, generator=gen)) ** 2
                         + (sigma * torch.randn(img.shape, generator=gen)) ** 2)
    else:
        img = img + sigma * torch.randn(img.shape, generator=gen)
    img = normalise_intensities(img, fov, modality="CT" if mode == "ct" else "MR")
    if _u(gen, 0, 1) < 0.5:
        img = img.clamp(min=0) ** math.exp(_u(gen, *(log_gamma_range if mode != "ct" else (-0.35, 0.35))))
        img = torch.where(fov, img, torch.zeros_like(img))
    if mode != "ct" and dim_range[0] < 1.0:  # brighter tissue elsewhere in the scan's field of view
        img = img * _u(gen, *dim_range)
    return img


def _thick_slices(img: torch.Tensor, u: torch.Tensor, normal: torch.Tensor, thick_mm: float, phase: float,
                  sp: float) -> torch.Tensor:
    """Simulate slices of thickness ``thick_mm`` along ``normal``, read back by linear interpolation."""
    p = img.shape[0]
    to_idx = lambda mm: mm / sp + (p - 1) / 2.0  # noqa: E731 - patch mm -> patch index
    box = torch.zeros_like(img)
    offsets = torch.linspace(-0.4, 0.4, 5) * thick_mm
    for s in offsets:
        box += _sample(img[None], to_idx(u + s * normal), mode="bilinear")[0]
    box /= len(offsets)
    f = (u @ normal) / thick_mm + phase
    w = (f - torch.floor(f))[..., None]
    lower = _sample(box[None], to_idx(u - w * thick_mm * normal), mode="bilinear")[0]
    upper = _sample(box[None], to_idx(u + (1 - w) * thick_mm * normal), mode="bilinear")[0]
    w = w[..., 0].float()
    return (1 - w) * lower + w * upper


def synth_slice(labels: SynthLabels, gen: torch.Generator, *, patch: int = 160, mode: str | None = None,
                mode_weights: tuple[float, float, float] = (0.0, 0.7, 0.3), p_distractors: float = 0.0,
                scale_range: tuple[float, float] = (0.85, 1.2), p_off_centre: float = 0.0, off_centre_mm: float = 60.0,
                p_reflect: float = 1.0, p_trabeculae: float = 0.0, p_pericardium: float = 0.0,
                pericardium_depth_vox: int = 4, p_dark_fat: float = 0.0, p_endo_ramp: float = 0.0,
                p_myo_hetero: float = 0.0, p_contrast_mixing: float = 0.0,
                dim_range: tuple[float, float] = (1.0, 1.0), log_gamma_range: tuple[float, float] = (-0.35, 0.35),
                thickness_range_mm: tuple[float, float] = (5.0, 11.0), p_oblique: float = 0.15,
                depth_scale: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic thick slice of a short-axis stack (2D training pair) from a label cube.

    The slice plane's normal is the heart's long axis tilted by about 15 degrees (either sign, so
    both in-plane handednesses occur; with probability ``p_oblique`` any direction), at a random level
    from below the apex to the atria, with a random in-plane rotation, zoom (``scale_range``) and
    shift (18 mm, or up to ``off_centre_mm`` with probability ``p_off_centre``). The slab is
    ``thickness_range_mm`` thick: five sub-planes across it are painted as ``synth_sample`` paints a
    patch (same random tissue codes, appearance and signal effects, their depths times
    ``depth_scale``) and averaged, which is the through-slice partial volume of thick-slice cine MRI;
    the classes are those of the middle plane, where an expert's contour lies. In-plane pixels have the
    cube's voxel size (``labels.spacing_mm``).

    Returns image (1, patch, patch) float32 in [0, 1] and classes (patch, patch) int64.
    """
    sp = labels.spacing_mm
    codes = torch.from_numpy(labels.codes)
    n = codes.shape[0]
    if mode is None:
        mode = ["ct", "mr", "random"][int(torch.multinomial(torch.tensor(mode_weights), 1, generator=gen))]
    la = torch.tensor(labels.long_axis, dtype=torch.float64)
    if _u(gen, 0, 1) < p_oblique:
        normal = torch.randn(3, generator=gen, dtype=torch.float64)
    else:
        normal = la + 0.25 * torch.randn(3, generator=gen, dtype=torch.float64)
    normal = normal / normal.norm() * (1.0 if _u(gen, 0, 1) < 0.5 else -1.0)
    a = torch.randn(3, generator=gen, dtype=torch.float64)
    e1 = a - (a @ normal) * normal
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(normal, e1)
    basis = torch.stack([e1, e2, normal], dim=1).float()  # columns: slice x, slice y, slice normal
    thick = _u(gen, *thickness_range_mm)
    scale = _u(gen, *scale_range)
    off = off_centre_mm if _u(gen, 0, 1) < p_off_centre else 18.0
    shift = _rand(gen, -off, off, (2,))
    centre = (_u(gen, -75.0, 55.0) * la + shift[0] * e1 + shift[1] * e2).float()
    ax = (torch.arange(patch, dtype=torch.float32) - (patch - 1) / 2.0) * sp
    across = torch.linspace(-0.4, 0.4, 5) * thick
    u = torch.stack(torch.meshgrid(ax, ax, across, indexing="ij"), dim=-1)  # (p, p, 5, 3) mm, slab frame
    src_idx = ((u / scale) @ basis.T + centre) / sp + (n - 1) / 2.0
    code_p = _sample_codes(codes, src_idx, reflect=_u(gen, 0, 1) < p_reflect)  # (p, p, 5)
    code_p = _add_structures(code_p, u, gen, p_trabeculae=p_trabeculae, p_pericardium=p_pericardium,
                             pericardium_depth_vox=pericardium_depth_vox, p_distractors=p_distractors,
                             depth_scale=depth_scale)
    img, table = _paint(code_p, gen, mode, p_dark_fat=p_dark_fat, p_endo_ramp=p_endo_ramp, p_myo_hetero=p_myo_hetero,
                        p_contrast_mixing=p_contrast_mixing, depth_scale=depth_scale)
    mid = code_p[:, :, code_p.shape[2] // 2]
    fov = mid > 0
    img = _finish(img.mean(dim=2), fov, gen, mode, table, log_gamma_range=log_gamma_range, dim_range=dim_range)
    classes = torch.from_numpy(CODE_TO_CLASS)[mid]
    return img[None].float(), torch.where(fov, classes, torch.zeros_like(classes))


def synth_batch(volumes: list[SynthLabels], gen: torch.Generator, *, batch: int, patch: int = 64,
                spatial_dims: int = 3, **sample_kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of synthetic pairs: images (B, 1, p, p, p) float32, classes (B, 1, p, p, p) int64
    (spatial_dims 3, ``synth_sample``), or thick short-axis slices (B, 1, p, p) (2, ``synth_slice``).

    sample_kwargs go to the sampler (mode_weights, p_distractors, scale_range, ...).
    """
    sampler = synth_sample if spatial_dims == 3 else synth_slice
    images, targets = [], []
    for _ in range(batch):
        vol = volumes[int(torch.randint(len(volumes), (1,), generator=gen))]
        img, cls = sampler(vol, gen, patch=patch, **sample_kwargs)  # type: ignore[arg-type]
        images.append(img)
        targets.append(cls[None])
    return torch.stack(images), torch.stack(targets)
