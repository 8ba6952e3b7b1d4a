"""Inference: scan -> label map in the scan's exact geometry.

Steps (``segment``):

1. Orientation and spacing normalisation: the scan is resampled (linear, with a Gaussian
   anti-aliasing filter where it is finer than the target) onto a world-aligned (LPS, identity
   direction) grid of the bundle's spacing covering the scan's bounding box; voxels outside the
   acquired volume are marked (``fov``) and set to 0 after intensity normalisation, as in training.
2. Sliding-window inference (Gaussian-weighted overlap 0.5, windows outside the acquired volume
   skipped) gives class probabilities on that grid; a second pass adds 27 windows centred on the
   heart found (as in training, where the heart lies near the patch centre).
3. The probabilities are resampled trilinearly onto the input's own voxel grid (in chunks, so
   large scans stay within memory) and the argmax is taken there: the output has the input's
   shape, spacing, origin and direction exactly, with sub-voxel boundaries.
4. Post-processing: one connected component per label (for the LV blood pool the one enclosed
   by LV myocardium, for the LV myocardium the one around it, else the largest; for the aorta every
   piece of at least ``aorta_min_fraction`` of the largest), holes inside the heart and the LV
   blood pool filled, the RV wall completed (a ``rv_wall_mm`` shell of RV myocardium wherever the
   RV blood pool touches background, i.e. where the predicted wall has gaps, all round when the
   model finds none), and a "no heart found" StageError when no plausible LV is present.

Thick-slice MR stacks (slices at least ``min_slice_ratio`` times thicker than their pixels, as
short-axis cines) are, when the bundle has a slice network, relabelled between steps 3 and 4 from
the 3D probabilities averaged with the slice network's, run at the slices' own in-plane resolution
(``refine_thick_slices``).

A bundle whose main network is 2D (a short-axis stack bundle, ``bundle.SegModel.stack``) replaces
steps 1-3: the stack is segmented slice by slice in its own voxel frame, its direction matrix
ignored (``slicenet.predict_stack_probs``); other scans are refused with a StageError.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scipy import ndimage

from cardiotwin.anatomy import Label
from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.io.scans import guess_modality, to_sitk
from cardiotwin.segmentation.synth import normalise_intensities
from cardiotwin.types import ImageGeometry, LabelMap, Scan

if TYPE_CHECKING:
    from cardiotwin.segmentation.bundle import SegModel, SliceModel

log = logging.getLogger(__name__)

_OUTSIDE = -1.0e9  # resampling default: marks voxels outside the acquired volume


@dataclass(frozen=True)
class SegConfig:
    """Inference settings (defaults come from the bundle's inference.json where it sets them)."""

    # window overlap: 0.5 as nnU-Net; with 0.25 (heart_seg_v1 1.2.0) the real heart could fall at window
    # edges (Sunnybrook LV blood 0.821 -> 0.868, LV myocardium 0.476 -> 0.520 with 0.5; MODEL_CARD.md)
    overlap: float = 0.5
    # second pass: a 3 x 3 x 3 block of windows centred on the first pass's heart (LV blood and
    # myocardium), this far apart (mm); 0 switches it off. Training patches hold the heart near their
    # centre (shift up to 18 mm per axis), which a regular window grid need not give.
    centred_windows_mm: float = quantity(15.0, "mm")
    sw_batch_size: int = 2
    largest_component: bool = True
    # which LV blood / LV myocardium component is kept: the largest, or the blood pool with the most
    # contact with LV myocardium and the myocardium around it (a bright non-cardiac structure larger
    # than the LV, e.g. liver or stomach in a thoracic MR, can be mislabelled as LV blood pool)
    lv_component: Literal["largest", "myocardium_contact"] = "largest"
    # aorta: keep every connected piece of at least this fraction of the largest one (1.0: the
    # largest only). A cardiac field of view often cuts the aortic arch off, and the ascending and
    # descending aorta are then two pieces (real CT crop, heart_seg_v1 1.4.0: the descending aorta,
    # 10,060 voxels, was dropped as "not the largest component"). The pulmonary artery keeps its
    # largest piece: on the CT sample its second piece was a misnamed part of the aortic arch.
    aorta_min_fraction: float = 0.25
    fill_holes: bool = True
    # RV myocardium from the RV blood pool: "always" completes the wall (a rv_wall_mm shell wherever
    # the blood pool touches background, so gaps in the predicted wall are closed; a real RV cavity
    # is walled everywhere except at its valves, which border RA and pulmonary artery). On the real
    # CT crop heart_seg_v1 finds 13 mL of RV wall in scattered pieces around 112 mL of RV blood: with
    # "auto" (a whole shell only when the model finds less than rv_myo_min_fraction of the blood
    # pool's volume, heart_seg_v1 <= 1.4.1) the twin's mesh had a 1.5 mL RV cavity and its
    # electromechanics failed; completed, 44 mL and a converged beat. "never" keeps the network's.
    rv_myocardium: Literal["auto", "always", "never"] = "always"
    rv_wall_mm: float = quantity(3.5, "mm")
    rv_myo_min_fraction: float = 0.1
    # thick-slice MR stacks (e.g. short-axis cines): the bundle's slice network, where it has one,
    # relabels each slice at its own in-plane resolution inside a window centred on the heart
    # (``refine_thick_slices``); False keeps the 3D network's labels
    slice_network: bool = True
    # thick-slice MR stacks with a 3D network: search the heart's pose instead of trusting the header's
    # direction matrix (``pose.search_pose``; research exports often carry an identity direction)
    pose_search: bool = False
    min_lv_blood_ml: float = quantity(8.0, "mL")
    min_heart_ml: float = quantity(30.0, "mL")
    threads: int = 2

    def validate(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.lv_component not in ("largest", "myocardium_contact"):
            raise ValueError(f"lv_component must be 'largest' or 'myocardium_contact', got {self.lv_component!r}")
        if self.rv_wall_mm <= 0:
            raise ValueError("rv_wall_mm must be positive")
        if not 0.0 < self.aorta_min_fraction <= 1.0:
            raise ValueError(f"aorta_min_fraction must be in (0, 1], got {self.aorta_min_fraction}")
        if self.centred_windows_mm < 0:
            raise ValueError(f"centred_windows_mm must be >= 0, got {self.centred_windows_mm}")


@dataclass(frozen=True)
class WorkingImage:
    """The scan on the network's grid: image (X, Y, Z) float32 in [0, 1], fov (X, Y, Z) bool."""

    image: torch.Tensor
    fov: np.ndarray
    geometry: ImageGeometry


def working_geometry(geometry: ImageGeometry, *, spacing_mm: float) -> ImageGeometry:
    """World-aligned grid of ``spacing_mm`` covering the bounding box of ``geometry``'s voxels."""
    n = np.asarray(geometry.shape, dtype=float)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    world = geometry.index_to_world(corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    shape = np.maximum(np.ceil((hi - lo) / spacing_mm).astype(int), 1)
    origin = (lo + hi) / 2.0 - spacing_mm * (shape - 1) / 2.0
    return ImageGeometry(shape=tuple(int(s) for s in shape), spacing_mm=(float(spacing_mm),) * 3,  # type: ignore[arg-type]
                         origin_mm=tuple(float(o) for o in origin))  # type: ignore[arg-type]


def to_working_grid(scan: Scan, *, spacing_mm: float, modality: str | None = None) -> WorkingImage:
    """Resample and normalise a scan for the network (see module docstring, step 1)."""
    import SimpleITK as sitk

    modality = modality or (scan.modality if scan.modality in ("CT", "MR") else guess_modality(scan.voxels))
    geom = working_geometry(scan.geometry, spacing_mm=spacing_mm)
    image = to_sitk(scan.voxels.astype(np.float32), scan.geometry)
    src = np.asarray(scan.geometry.spacing_mm)
    sigma = 0.4 * np.sqrt(np.maximum(spacing_mm**2 - src**2, 0.0))  # anti-aliasing, mm per axis
    if np.any(sigma > 0.05):
        image = sitk.SmoothingRecursiveGaussian(image, [float(max(s, 1e-3)) for s in sigma])
    ref = to_sitk(np.zeros(geom.shape, dtype=np.float32), geom)
    res = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, _OUTSIDE, sitk.sitkFloat32)
    arr = np.transpose(sitk.GetArrayFromImage(res), (2, 1, 0))
    fov = arr > _OUTSIDE / 2
    img = normalise_intensities(torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(fov), modality=modality)
    return WorkingImage(image=img.float(), fov=fov, geometry=geom)


def labels_to_working_grid(labels: LabelMap, geometry: ImageGeometry) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto ``geometry`` (0 outside)."""
    import SimpleITK as sitk

    image = to_sitk(labels.labels.astype(np.uint8), labels.geometry)
    ref = to_sitk(np.zeros(geometry.shape, dtype=np.uint8), geometry)
    res = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return np.transpose(sitk.GetArrayFromImage(res), (2, 1, 0))


def _window_starts(n: int, roi: int, step: int) -> list[int]:
    if n <= roi:
        return [0]
    starts = list(range(0, n - roi + 1, step))
    if starts[-1] != n - roi:
        starts.append(n - roi)
    return starts


def _gaussian_importance(roi: int) -> torch.Tensor:
    """Window weight (roi^3): Gaussian with sigma roi/8 (as nnU-Net), so window centres count most."""
    x = torch.arange(roi, dtype=torch.float32) - (roi - 1) / 2.0
    g = torch.exp(-0.5 * (x / (roi / 8.0)) ** 2)
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return (w / w.max()).clamp(min=1e-3)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: torch.Tensor, *, roi: int, overlap: float = 0.5,
                          sw_batch_size: int = 2, fov: np.ndarray | None = None) -> torch.Tensor:
    """Softmax class probabilities (C, X, Y, Z) for a normalised (X, Y, Z) image.

    Sliding window of ``roi``^3 with Gaussian-weighted overlap; windows without any voxel inside
    ``fov`` (the acquired volume, e.g. outside an oblique short-axis slab) are skipped: they get
    background.
    """
    model.eval()
    device = next(model.parameters()).device
    shape = tuple(int(n) for n in image.shape)
    padded = tuple(max(n, roi) for n in shape)
    x = torch.zeros(padded, dtype=torch.float32)
    x[: shape[0], : shape[1], : shape[2]] = image
    inside = np.zeros(padded, dtype=bool)
    inside[: shape[0], : shape[1], : shape[2]] = True if fov is None else fov
    step = max(1, int(round(roi * (1.0 - overlap))))
    weight = _gaussian_importance(roi)
    windows = [(a, b, c) for a in _window_starts(padded[0], roi, step) for b in _window_starts(padded[1], roi, step)
               for c in _window_starts(padded[2], roi, step)
               if inside[a:a + roi, b:b + roi, c:c + roi].any()]
    acc: torch.Tensor | None = None
    norm = torch.zeros(padded, dtype=torch.float32)
    for i in range(0, len(windows), sw_batch_size):
        batch = windows[i:i + sw_batch_size]
        xb = torch.stack([x[a:a + roi, b:b + roi, c:c + roi] for a, b, c in batch])[:, None].to(device)
        logits = model(xb).float().cpu()
        if acc is None:
            acc = torch.zeros((logits.shape[1], *padded), dtype=torch.float32)
        for (a, b, c), lg in zip(batch, logits):
            acc[:, a:a + roi, b:b + roi, c:c + roi] += lg * weight
            norm[a:a + roi, b:b + roi, c:c + roi] += weight
    if acc is None:  # nothing acquired at all
        raise StageError("no heart found (the image has no voxels inside its field of view)")
    acc = acc / norm.clamp(min=1e-6)
    probs = torch.softmax(acc, dim=0)
    probs[:, norm == 0] = 0.0
    probs[0, norm == 0] = 1.0
    return probs[:, : shape[0], : shape[1], : shape[2]].contiguous()


@torch.no_grad()
def refine_around_heart(model: torch.nn.Module, image: torch.Tensor, probs: torch.Tensor, *, roi: int,
                        step_vox: int) -> torch.Tensor:
    """Add a 3 x 3 x 3 block of windows, ``step_vox`` apart, centred on the LV (the largest connected
    piece of blood pool and myocardium) of ``probs`` (C, X, Y, Z): their softmax outputs are averaged
    in with the same Gaussian window weight, the first pass counting as weight 1. Returns new
    probabilities; ``probs`` itself when no LV was found.
    """
    lab = probs.argmax(0).numpy()
    lv = (lab == Label.LV_BLOOD) | (lab == Label.LV_MYO)
    shape = tuple(int(n) for n in image.shape)
    if not lv.any() or step_vox < 1 or min(shape) < roi:
        return probs
    cc, n = ndimage.label(lv)
    if n > 1:  # a stray LV-labelled blob elsewhere must not pull the windows off the heart
        lv = cc == int(np.argmax(np.bincount(cc.ravel())[1:])) + 1
    centre = np.argwhere(lv).mean(axis=0)
    device = next(model.parameters()).device
    weight = _gaussian_importance(roi)
    acc = probs.clone()
    norm = torch.ones(shape, dtype=torch.float32)
    offsets = (-step_vox, 0, step_vox)
    for da in offsets:
        for db in offsets:
            for dc in offsets:
                start = [min(max(int(round(centre[k])) + d - roi // 2, 0), shape[k] - roi)
                         for k, d in enumerate((da, db, dc))]
                box = tuple(slice(a, a + roi) for a in start)
                out = model(image[box][None, None].float().to(device))[0].float().cpu()
                acc[(slice(None), *box)] += torch.softmax(out, dim=0) * weight
                norm[box] += weight
    return acc / norm


def predict_working_grid(network: torch.nn.Module, image: torch.Tensor, *, roi: int, spacing_mm: float,
                         cfg: SegConfig, fov: np.ndarray | None = None) -> torch.Tensor:
    """Class probabilities (C, X, Y, Z) on the working grid: the sliding window of ``cfg`` and, when
    ``cfg.centred_windows_mm`` > 0, the windows centred on the heart found (module docstring, step 2).
    Shared by inference and by train-seg's validation, so checkpoints are chosen by the shipped windows."""
    probs = predict_probabilities(network, image, roi=roi, overlap=cfg.overlap, sw_batch_size=cfg.sw_batch_size,
                                  fov=fov)
    if cfg.centred_windows_mm > 0:
        probs = refine_around_heart(network, image, probs, roi=roi,
                                    step_vox=int(round(cfg.centred_windows_mm / spacing_mm)))
    return probs


def _resampled_probabilities(probs: torch.Tensor, work: ImageGeometry, target: ImageGeometry, *, chunk_voxels: int):
    """Yield (k0, probabilities (C, nx, ny, nk)) of ``probs`` (C, work.shape) resampled trilinearly onto
    ``target``'s voxels, a block of whole slices along its third axis at a time (bounded memory)."""
    nx, ny, nz = target.shape
    ii, jj = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), indexing="ij")
    step = max(1, chunk_voxels // (nx * ny))
    w_origin = np.asarray(work.origin_mm)
    w_sp = np.asarray(work.spacing_mm)
    w_shape = np.asarray(work.shape, dtype=np.float64)
    vol = probs[None]
    for k0 in range(0, nz, step):
        ks = np.arange(k0, min(nz, k0 + step), dtype=np.float64)
        ijk = np.stack(np.broadcast_arrays(ii[..., None], jj[..., None], ks[None, None, :]), axis=-1)
        world = target.index_to_world(ijk.reshape(-1, 3))
        widx = (world - w_origin) / w_sp
        grid = 2.0 * widx / np.maximum(w_shape - 1, 1) - 1.0
        grid_t = torch.from_numpy(grid[:, ::-1].copy()).float().reshape(1, nx, ny, len(ks), 3)
        yield k0, torch.nn.functional.grid_sample(vol, grid_t, mode="bilinear", padding_mode="border",
                                                  align_corners=True)[0]


def probabilities_to_geometry(probs: torch.Tensor, work: ImageGeometry, target: ImageGeometry,
                              *, chunk_voxels: int = 2_000_000) -> np.ndarray:
    """Argmax labels (uint8, target.shape) of ``probs`` (C, work.shape) resampled trilinearly onto ``target``."""
    out = np.zeros(target.shape, dtype=np.uint8)
    for k0, sampled in _resampled_probabilities(probs, work, target, chunk_voxels=chunk_voxels):
        out[:, :, k0:k0 + sampled.shape[-1]] = sampled.argmax(0).numpy().astype(np.uint8)
    return out


def probabilities_on_geometry(probs: torch.Tensor, work: ImageGeometry, target: ImageGeometry,
                              *, chunk_voxels: int = 2_000_000) -> np.ndarray:
    """``probs`` (C, work.shape) resampled trilinearly onto ``target``: float32 (C, *target.shape)."""
    out = np.zeros((probs.shape[0], *target.shape), dtype=np.float32)
    for k0, sampled in _resampled_probabilities(probs, work, target, chunk_voxels=chunk_voxels):
        out[..., k0:k0 + sampled.shape[-1]] = sampled.numpy()
    return out


def slice_axis(geometry: ImageGeometry, *, min_ratio: float) -> int | None:
    """The index axis of a thick-slice stack (its spacing at least ``min_ratio`` times both others), or None."""
    sp = np.asarray(geometry.spacing_mm, dtype=float)
    k = int(np.argmax(sp))
    others = np.delete(sp, k)
    return k if sp[k] >= min_ratio * float(others.max()) else None


def predict_slices(network: torch.nn.Module, image: np.ndarray, geometry: ImageGeometry, *, axis: int,
                   centre_mm: np.ndarray, spacing_mm: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of a 2D network on every slice of a thick-slice stack, at its own slices.

    image: the scan's voxels normalised as for the network (``normalise_intensities``), on
    ``geometry``; axis: the slice axis (``slice_axis``). Each slice is resampled in its own plane
    (bilinear; Gaussian anti-aliasing where its pixels are finer than ``spacing_mm``) onto a
    ``size`` x ``size`` window of ``spacing_mm`` pixels centred on ``centre_mm`` (world, LPS; the
    heart found by the 3D pass) projected into the slice, as the training slices hold the heart near
    their centre (``synth.synth_slice``). The probabilities are resampled back bilinearly.

    Returns probabilities (C, *geometry.shape) float32 and the mask (geometry.shape) of the voxels
    inside the window (elsewhere the probabilities are 0).
    """
    order = [a for a in range(3) if a != axis] + [axis]
    vox = np.transpose(np.asarray(image, dtype=np.float32), order)  # (X, Y, Z): Z the slice axis
    sp = np.asarray(geometry.spacing_mm, dtype=float)[order[:2]]
    sigma_px = 0.4 * np.sqrt(np.maximum(spacing_mm**2 - sp**2, 0.0)) / sp
    if np.any(sigma_px > 0.05):
        vox = ndimage.gaussian_filter(vox, sigma=(float(sigma_px[0]), float(sigma_px[1]), 0.0))
    nx, ny, nz = vox.shape
    centre = geometry.world_to_index(np.asarray(centre_mm, dtype=float))[order[:2]]
    half = (size - 1) / 2.0
    # window pixel (a, b) -> slice index (i, j)
    a = (np.arange(size) - half) * spacing_mm / sp[0] + centre[0]
    b = (np.arange(size) - half) * spacing_mm / sp[1] + centre[1]
    gi, gj = np.meshgrid(2.0 * a / max(nx - 1, 1) - 1.0, 2.0 * b / max(ny - 1, 1) - 1.0, indexing="ij")
    grid = torch.from_numpy(np.stack([gj, gi], axis=-1)).float()[None].expand(nz, -1, -1, -1)
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vox, 2, 0)))[:, None]  # (Z, 1, X, Y)
    windows = torch.nn.functional.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    with torch.no_grad():
        probs = torch.softmax(network(windows), dim=1)  # (Z, C, size, size)
    # slice index (i, j) -> window pixel
    wi = (np.arange(nx) - centre[0]) * sp[0] / spacing_mm + half
    wj = (np.arange(ny) - centre[1]) * sp[1] / spacing_mm + half
    inside2d = ((wi >= 0) & (wi <= size - 1))[:, None] & ((wj >= 0) & (wj <= size - 1))[None, :]
    qi, qj = np.meshgrid(2.0 * wi / (size - 1) - 1.0, 2.0 * wj / (size - 1) - 1.0, indexing="ij")
    back = torch.from_numpy(np.stack([qj, qi], axis=-1)).float()[None].expand(nz, -1, -1, -1)
    out = torch.nn.functional.grid_sample(probs, back, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out.permute(1, 2, 3, 0).numpy() * inside2d[None, :, :, None]  # (C, X, Y, Z)
    inv = np.argsort(order)
    out = np.transpose(out, [0] + [int(v) + 1 for v in inv])
    inside = np.transpose(np.broadcast_to(inside2d[:, :, None], (nx, ny, nz)), inv)
    return np.ascontiguousarray(out, dtype=np.float32), np.ascontiguousarray(inside)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def select_lv_components(lab: np.ndarray) -> dict[str, int]:
    """Keep one LV blood pool and one LV myocardium component, chosen by contact (in place).

    LV blood pool: the connected component (6-connectivity) with the most face contacts with LV
    myocardium voxels (the cavity is enclosed by its wall; ties go to the larger component).
    LV myocardium: the component with the most voxels within 2 voxels of that blood pool (the
    largest when none is near). Returns the numbers of voxels removed per label.
    """
    removed = {}
    face = ndimage.generate_binary_structure(3, 1)
    blood = lab == Label.LV_BLOOD
    myo = lab == Label.LV_MYO
    cc, n = ndimage.label(blood, face)
    if n > 1:
        best, best_score = 1, (-1, -1)
        for i, sl in enumerate(ndimage.find_objects(cc), start=1):
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
            comp = cc[grown] == i
            shell = ndimage.binary_dilation(comp, face) & ~comp
            score = (int((shell & myo[grown]).sum()), int(comp.sum()))
            if score > best_score:
                best, best_score = i, score
        drop = blood & (cc != best)
        removed[int(Label.LV_BLOOD)] = int(drop.sum())
        lab[drop] = 0
        blood = cc == best
    cc, n = ndimage.label(myo, face)
    if n > 1:
        near = ndimage.binary_dilation(blood, face, iterations=2) if blood.any() else np.zeros_like(blood)
        counts = np.bincount(cc[near].ravel(), minlength=n + 1)
        counts[0] = 0
        keep = int(np.argmax(counts)) if counts.max() > 0 else int(np.argmax(np.bincount(cc.ravel())[1:])) + 1
        drop = myo & (cc != keep)
        removed[int(Label.LV_MYO)] = int(drop.sum())
        lab[drop] = 0
    return removed


def postprocess(labels: np.ndarray, geometry: ImageGeometry, cfg: SegConfig,
                predicted: tuple[int, ...] = tuple(range(1, 9))) -> tuple[np.ndarray, dict[str, object]]:
    """Clean a label map (see module docstring, step 4). Returns (labels, notes on what changed)."""
    notes: dict[str, object] = {}
    if not labels.any():
        return labels, notes
    spacing = np.asarray(geometry.spacing_mm)
    margin = int(np.ceil(cfg.rv_wall_mm / spacing.min())) + 2
    box = _bbox(labels > 0, margin)
    lab = labels[box].copy()
    if cfg.largest_component:
        removed = {}
        if cfg.lv_component == "myocardium_contact" and Label.LV_BLOOD in predicted and Label.LV_MYO in predicted:
            notes["lv_removed_voxels_by_contact"] = select_lv_components(lab)
        for k in predicted:
            mask = lab == k
            if not mask.any():
                continue
            cc, n = ndimage.label(mask)
            if n > 1:
                sizes = np.bincount(cc.ravel())[1:]
                if k == Label.AORTA:
                    kept = np.flatnonzero(sizes >= cfg.aorta_min_fraction * sizes.max()) + 1
                else:
                    kept = np.array([int(np.argmax(sizes)) + 1])
                drop = mask & ~np.isin(cc, kept)
                removed[int(k)] = int(drop.sum())
                lab[drop] = 0
        notes["removed_voxels_not_largest_component"] = removed
    if cfg.fill_holes:
        lv = lab == Label.LV_BLOOD
        lv_filled = ndimage.binary_fill_holes(lv)
        notes["lv_blood_holes_filled"] = int((lv_filled & ~lv).sum())
        lab[lv_filled] = Label.LV_BLOOD
        heart = lab > 0
        holes = ndimage.binary_fill_holes(heart) & ~heart
        if holes.any():
            _, nearest = ndimage.distance_transform_edt(~heart, sampling=spacing, return_indices=True)
            lab[holes] = lab[tuple(n[holes] for n in nearest)]
        notes["heart_holes_filled"] = int(holes.sum())
    rv_blood = lab == Label.RV_BLOOD
    n_rv_myo = int((lab == Label.RV_MYO).sum())
    build = cfg.rv_myocardium == "always" or (
        cfg.rv_myocardium == "auto" and rv_blood.any() and n_rv_myo < cfg.rv_myo_min_fraction * rv_blood.sum())
    if build and rv_blood.any():
        dist = ndimage.distance_transform_edt(~rv_blood, sampling=spacing)
        shell = (dist > 0) & (dist <= cfg.rv_wall_mm) & (lab == 0)
        lab[shell] = Label.RV_MYO
        notes["rv_myocardium_built_from_blood_pool_voxels"] = int(shell.sum())  # 0: the wall was whole
    out = labels.copy()
    out[box] = lab
    return out, notes


def check_heart_found(labels: np.ndarray, geometry: ImageGeometry, cfg: SegConfig, *, source: str) -> None:
    """StageError "no heart found" unless an LV blood pool and a heart of plausible size are present."""
    v = geometry.voxel_volume_ml
    lv_ml = float((labels == Label.LV_BLOOD).sum()) * v
    heart_ml = float((labels > 0).sum()) * v
    if lv_ml < cfg.min_lv_blood_ml or heart_ml < cfg.min_heart_ml:
        raise StageError(
            f"{source}: no heart found (LV blood pool {lv_ml:.1f} mL, all heart labels {heart_ml:.1f} mL; "
            f"need at least {cfg.min_lv_blood_ml:g} and {cfg.min_heart_ml:g} mL). Is this a cardiac CT or MRI?"
        )


def predict_raw_labels(scan: Scan, model: "SegModel", *, cfg: SegConfig) -> np.ndarray:
    """Network argmax labels (uint8, scan.shape) on the scan's own grid, before post-processing."""
    if model.stack is not None:
        return _predict_stack_labels(scan, model)
    modality = scan.modality if scan.modality in ("CT", "MR") else guess_modality(scan.voxels)
    if cfg.pose_search and modality == "MR":
        scan = _posed(scan, model)
    work = to_working_grid(scan, spacing_mm=model.spacing_mm, modality=modality)
    probs = predict_working_grid(model.network, work.image, roi=model.roi, spacing_mm=model.spacing_mm, cfg=cfg,
                                 fov=work.fov)
    probs[:, ~torch.from_numpy(work.fov)] = 0.0
    probs[0, ~torch.from_numpy(work.fov)] = 1.0  # nothing is labelled where nothing was acquired
    sm = model.slice
    if (cfg.slice_network and sm is not None and modality == "MR"
            and slice_axis(scan.geometry, min_ratio=sm.min_slice_ratio) is not None):
        return refine_thick_slices(probabilities_on_geometry(probs, work.geometry, scan.geometry), scan, sm)
    return probabilities_to_geometry(probs, work.geometry, scan.geometry)


def _posed(scan: Scan, model: "SegModel") -> Scan:
    """A thick-slice stack with the direction matrix of the pose search (``pose.search_pose``); other scans as they are.
    The voxel grid is unchanged, so labels predicted on the returned scan's grid belong to ``scan``'s voxels."""
    from cardiotwin.segmentation.pose import search_pose, with_direction

    axis = slice_axis(scan.geometry, min_ratio=2.0)
    if axis is None:
        return scan
    pose = search_pose(model.network, scan, slice_axis=axis, roi=model.roi, spacing_mm=model.spacing_mm)
    return with_direction(scan, pose.direction) if pose.changed else scan


def _predict_stack_labels(scan: Scan, model: "SegModel") -> np.ndarray:
    """A 2D stack bundle's labels: the scan's slices in its own voxel frame (direction matrix ignored)."""
    from cardiotwin.segmentation.slicenet import predict_stack_probs, stack_axis, stack_labels

    sp = np.asarray(scan.geometry.spacing_mm, dtype=float)
    axis = stack_axis(sp)
    ratio = sp[axis] / max(float(np.delete(sp, axis).max()), 1e-6)
    if scan.modality == "CT" or ratio < 2.0:
        raise StageError(f"{scan.source or 'scan'}: model {model.name} segments short-axis cine MR stacks only "
                         f"(slices at least 2x thicker than their pixels); this {scan.modality} scan has spacing "
                         f"{tuple(round(float(v), 3) for v in sp)} mm: use the default model")
    probs = predict_stack_probs(model.network, scan.voxels, sp, model.stack)
    return stack_labels(probs, axis, model.stack)


def refine_thick_slices(probs3d: np.ndarray, scan: Scan, slice_model: "SliceModel") -> np.ndarray:
    """Labels (uint8, scan.shape) of a thick-slice MR stack from the 3D network's probabilities on the
    scan's grid (``probs3d``, (C, *scan.shape)) and the bundle's 2D network run slice by slice
    (``predict_slices``) in a window centred on the 3D pass's heart (the largest connected LV blood pool
    + myocardium): inside the window the average of the two, the 2D network weighted
    ``slice_model.weight`` (nnU-Net ensembles its 2D and 3D configurations by averaging), elsewhere the
    3D network's. Scans that are not thick-slice stacks, or where the 3D pass found no LV, get the 3D labels."""
    raw = probs3d.argmax(0).astype(np.uint8)
    axis = slice_axis(scan.geometry, min_ratio=slice_model.min_slice_ratio)
    lv = np.isin(raw, (int(Label.LV_BLOOD), int(Label.LV_MYO)))
    if axis is None or not lv.any():
        return raw
    comp, _ = ndimage.label(lv)
    sizes = np.bincount(comp.ravel())[1:]
    centre = scan.geometry.index_to_world(np.argwhere(comp == int(np.argmax(sizes)) + 1).mean(axis=0))
    image = normalise_intensities(torch.from_numpy(np.asarray(scan.voxels, dtype=np.float32)),
                                  torch.ones(raw.shape, dtype=torch.bool), modality="MR").numpy()
    probs2d, inside = predict_slices(slice_model.network, image, scan.geometry, axis=axis, centre_mm=centre,
                                     spacing_mm=slice_model.spacing_mm, size=slice_model.window)
    log.info("slice network on %d slices (axis %d, %.2f mm pixels, window %d, weight %.2f)", raw.shape[axis], axis,
             slice_model.spacing_mm, slice_model.window, slice_model.weight)
    w = slice_model.weight
    mixed = (w * probs2d + (1.0 - w) * probs3d).argmax(0).astype(np.uint8)
    return np.where(inside, mixed, raw)


def segment(scan: Scan, model: "SegModel", *, cfg: SegConfig | None = None) -> LabelMap:
    """Label map (labels of the bundle's table) of ``scan`` on exactly the scan's voxel grid.

    Raises StageError "no heart found" for a blank or non-cardiac image.
    """
    cfg = cfg or model.default_config
    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.perf_counter()
    if float(np.ptp(scan.voxels)) <= 0.0:
        raise StageError(f"{scan.source or 'scan'}: no heart found (the image is blank: every voxel is "
                         f"{float(scan.voxels.flat[0]):g})")
    raw = predict_raw_labels(scan, model, cfg=cfg)
    t1 = time.perf_counter()
    labels, notes = postprocess(raw, scan.geometry, cfg, predicted=model.predicted_labels)
    check_heart_found(labels, scan.geometry, cfg, source=scan.source or "scan")
    log.info("segmented %s in %.1f s (network and resampling %.1f s); post-processing: %s", scan.source or "scan",
             time.perf_counter() - t0, t1 - t0, notes)
    return LabelMap(labels=labels, geometry=scan.geometry, source=f"segment:{model.name}:{scan.source}")
