"""Short-axis stacks segmented slice by slice in the stack's own voxel frame (2D slice networks).

A cine short-axis stack is a pile of thick slices (5-10 mm) with fine pixels (1.2-1.8 mm). Its
direction matrix is often missing or wrong in research exports (ACDC: identity), so nothing here
reads it: the slice axis is the index axis with the largest spacing, each slice is resampled only
in its own plane (to ``pixel_mm`` pixels, from the header's pixel spacing), and the network was
trained with every in-plane rotation and mirror image (``train_cine``). The labels come back on
exactly the stack's voxel grid, so an identity, rotated or mirrored header gives the same labels.

Input of the network: three channels per slice, the slice and its two neighbours along the slice
axis (the first and last slices repeat themselves), 2.5D as in many ACDC 2D networks; training
shifts the neighbours in-plane to mimic breath-hold slice misalignment.

Steps (``predict_stack``): normalise the whole stack (0.5 / 99.5 percentiles -> 0..1), run the
network on every whole slice (padded to a multiple of 16) to find the heart, run it again on a
``window`` x ``window`` crop centred on the heart (the training crops hold the heart near their
centre), optionally average over the four right-angle rotations and their mirror images
(``tta``), resample the probabilities back (bilinear), take the argmax, and keep one 3D connected
component of each blood pool (LV: the one enclosed by its wall, holes filled per slice) and the LV wall
around it (``clean_stack_labels``; the bundle's inference.json sets ``largest_component`` false, so the
generic clean-up of ``inference.postprocess`` does not repeat it 3D-connected only); where the bundle sets
it, the basal-slice RV rule (``trim_basal_rv``) then clears the RV blood pool from the basal slices that
cut the right atrium rather than the ventricle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

PERCENTILES = (0.5, 99.5)


def stack_axis(spacing_mm: tuple[float, float, float] | np.ndarray) -> int:
    """The slice axis of a stack: the index axis with the largest spacing (the last one on ties)."""
    sp = np.asarray(spacing_mm, dtype=float)
    return int(len(sp) - 1 - np.argmax(sp[::-1]))


def normalise_stack(vox: np.ndarray) -> np.ndarray:
    """Stack intensities mapped by their 0.5 / 99.5 percentiles onto 0..1 (clipped), float32."""
    v = np.asarray(vox, dtype=np.float32)
    lo, hi = np.percentile(v, PERCENTILES)
    if hi <= lo:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def neighbour_channels(stack: np.ndarray) -> np.ndarray:
    """(Z, X, Y) normalised slices -> (Z, 3, X, Y): each slice with the one before and after it."""
    prev = np.concatenate([stack[:1], stack[:-1]], axis=0)
    nxt = np.concatenate([stack[1:], stack[-1:]], axis=0)
    return np.stack([prev, stack, nxt], axis=1)


@dataclass(frozen=True)
class StackConfig:
    """Inference settings of a slice network (a bundle's inference.json ``slice_stack`` entry)."""

    pixel_mm: float = 1.5625  # pixel size the network works at
    window: int = 128  # crop of the second pass, pixels
    tta: int = 1  # 1: as is; 4: four right-angle rotations; 8: and their mirror images
    min_lv_voxels: int = 20
    basal_rv_confidence: float = 0.0  # ``trim_basal_rv``: both 0 switch the rule off
    basal_rv_ratio: float = 0.0
    basal_rv_slices: int = 2

    @property
    def trims_basal_rv(self) -> bool:
        return self.basal_rv_confidence > 0.0 or self.basal_rv_ratio > 0.0


def _resample_slices(x: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *out_shape), bilinear with the corner pixels kept in place."""
    return torch.nn.functional.interpolate(x, size=out_shape, mode="bilinear", align_corners=True)


def _run(network: torch.nn.Module, x: torch.Tensor, tta: int, batch: int = 16) -> torch.Tensor:
    """Softmax of the network on (N, 3, H, W) with test-time rotations / mirrors averaged."""
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            acc = None
            for t in range(tta):
                k, flip = t % 4, t >= 4
                xt = torch.rot90(xb, k, dims=(2, 3))
                if flip:
                    xt = torch.flip(xt, dims=(3,))
                p = torch.softmax(network(xt), dim=1)
                if flip:
                    p = torch.flip(p, dims=(3,))
                p = torch.rot90(p, -k, dims=(2, 3))
                acc = p if acc is None else acc + p
            outs.append(acc / tta)
    return torch.cat(outs, 0)


def _pad16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    return torch.nn.functional.pad(x, (0, pw, 0, ph)), (h, w)


def predict_stack_probs(network: torch.nn.Module, vox: np.ndarray, spacing_mm, cfg: StackConfig) -> np.ndarray:
    """Class probabilities (C, *vox.shape) float32 of a slice network on a stack, on the stack's own grid."""
    axis = stack_axis(spacing_mm)
    order = [a for a in range(3) if a != axis] + [axis]
    sp = np.asarray(spacing_mm, dtype=float)[order[:2]]
    stack = np.moveaxis(np.transpose(normalise_stack(vox), order), 2, 0)  # (Z, X, Y)
    nz, nx, ny = stack.shape
    mx, my = (max(16, int(round(nx * sp[0] / cfg.pixel_mm))), max(16, int(round(ny * sp[1] / cfg.pixel_mm))))
    x = torch.from_numpy(neighbour_channels(stack))
    if sp.max() < cfg.pixel_mm * 0.8:  # finer pixels than the network's: anti-alias before downsampling
        sig = 0.4 * np.sqrt(np.maximum(cfg.pixel_mm**2 - sp**2, 0.0)) / sp
        x = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, float(sig[0]), float(sig[1]))))
    xw = _resample_slices(x, (mx, my))  # (Z, 3, MX, MY) at pixel_mm
    xp, (h, w) = _pad16(xw)
    p1 = _run(network, xp, 1)[:, :, :h, :w]
    fg = p1[:, 1:].sum(1).numpy() > 0.5
    lv = p1.argmax(1).numpy() == 1
    probs_w = torch.zeros((p1.shape[1], nz, mx, my))
    probs_w[0] = 1.0
    if lv.sum() >= cfg.min_lv_voxels:
        cc, n = ndimage.label(fg)
        sizes = ndimage.sum(lv, cc, index=np.arange(1, n + 1)) if n else np.array([0])
        heart = cc == int(np.argmax(sizes)) + 1
        c = np.argwhere(heart)[:, 1:].mean(axis=0)
    else:
        c = np.array([mx / 2.0, my / 2.0])
    win = cfg.window
    x0 = int(round(c[0] - win / 2))
    y0 = int(round(c[1] - win / 2))
    padded = torch.nn.functional.pad(xw, (win, win, win, win))
    crop = padded[:, :, x0 + win:x0 + 2 * win, y0 + win:y0 + 2 * win]
    p2 = _run(network, crop, cfg.tta)  # (Z, C, win, win)
    full = torch.zeros((nz, p2.shape[1], mx + 2 * win, my + 2 * win))
    full[:, 0] = 1.0
    full[:, :, x0 + win:x0 + 2 * win, y0 + win:y0 + 2 * win] = p2
    full = full[:, :, win:win + mx, win:win + my]
    back = _resample_slices(full, (nx, ny))  # (Z, C, X, Y)
    out = back.permute(1, 2, 3, 0).numpy()  # (C, X, Y, Z)
    inv = np.argsort(order)
    return np.ascontiguousarray(np.transpose(out, [0] + [int(v) + 1 for v in inv]), dtype=np.float32)


def clean_stack_labels(lab: np.ndarray, axis: int) -> np.ndarray:
    """One 3D component of LV blood pool (the one touching the largest LV myocardium component most) and of RV
    blood pool (the largest); LV myocardium: its largest component and every other one that touches the kept
    LV blood pool (the wall of an apical slice whose ring, 5-10 mm from the next, does not overlap it in plane
    is still the wall around that cavity); LV blood holes filled slice by slice. Labels 1 LV blood, 2 LV
    myocardium, 3 RV blood pool."""
    out = lab.copy()
    myo = out == 2
    cc_myo, n_myo = ndimage.label(myo)
    if n_myo > 1:
        main_myo = cc_myo == int(np.argmax(ndimage.sum(myo, cc_myo, index=np.arange(1, n_myo + 1)))) + 1
    else:
        main_myo = myo
    for k in (1, 3):
        mask = out == k
        cc, n = ndimage.label(mask)
        if n <= 1:
            continue
        if k == 1 and main_myo.any():
            near = ndimage.binary_dilation(main_myo)
            score = ndimage.sum(near, cc, index=np.arange(1, n + 1)) * 1e6 + ndimage.sum(mask, cc, np.arange(1, n + 1))
        else:
            score = ndimage.sum(mask, cc, index=np.arange(1, n + 1))
        keep = int(np.argmax(score)) + 1
        out[mask & (cc != keep)] = 0
    if n_myo > 1:
        in_plane = np.moveaxis(np.stack([np.zeros((3, 3), bool), ndimage.generate_binary_structure(2, 1),
                                         np.zeros((3, 3), bool)]), 0, axis)
        touching = np.unique(cc_myo[ndimage.binary_dilation(out == 1, structure=in_plane) & myo])
        out[myo & ~main_myo & ~np.isin(cc_myo, touching[touching > 0])] = 0
    lv = np.moveaxis(out == 1, axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(s) for s in lv])
    view = np.moveaxis(out, axis, 0)
    view[filled & ~lv] = 1
    return out


def heart_slices_from_base(lab: np.ndarray, axis: int) -> list[int]:
    """Indices of the slices holding any label, from the base: the end whose half of the stack holds more
    labelled area (the apex tapers), so the stack's index order and header are not trusted."""
    area = np.moveaxis(lab > 0, axis, 0).reshape(lab.shape[axis], -1).sum(1).astype(float)
    offset = np.arange(len(area)) - (len(area) - 1) / 2.0
    order = range(len(area)) if float((area * offset).sum()) <= 0.0 else range(len(area) - 1, -1, -1)
    return [z for z in order if area[z] > 0]


def trim_basal_rv(lab: np.ndarray, p_rv: np.ndarray, axis: int, *, confidence: float, ratio: float,
                  max_slices: int = 2) -> np.ndarray:
    """Labels with the RV blood pool (3) cleared from the basal slices that cut the right atrium, not the
    ventricle. ACDC's experts label the RV only below the tricuspid and pulmonary valves; the base descends in
    systole, so at end-systole the most basal slice usually lies above the valve, and a 2D network, which
    cannot see where the valve plane is, calls the atrium there RV. Such a slice's RV is less certain and
    smaller than the next slice's: from the base, a slice loses its RV when the mean RV probability over it is
    below ``confidence`` or its RV area is below ``ratio`` x the next slice's; the first slice that passes
    ends the search (at most ``max_slices`` slices)."""
    out = lab.copy()
    view = np.moveaxis(out, axis, 0)
    prob = np.moveaxis(p_rv, axis, 0)
    idx = heart_slices_from_base(lab, axis)
    for k in range(min(max_slices, len(idx) - 1)):
        z, nxt = idx[k], idx[k + 1]
        rv = view[z] == 3
        if not rv.any():
            continue
        if float(prob[z][rv].mean()) >= confidence and rv.sum() >= ratio * (view[nxt] == 3).sum():
            break
        view[z][rv] = 0
    return out


def stack_labels(probs: np.ndarray, axis: int, cfg: StackConfig) -> np.ndarray:
    """Labels (uint8) from a slice network's probabilities (C, ...): argmax, ``clean_stack_labels``, and the
    basal-slice RV rule where ``cfg`` sets it."""
    lab = clean_stack_labels(probs.argmax(0).astype(np.uint8), axis)
    if cfg.trims_basal_rv:
        lab = trim_basal_rv(lab, probs[3], axis, confidence=cfg.basal_rv_confidence, ratio=cfg.basal_rv_ratio,
                            max_slices=cfg.basal_rv_slices)
    return lab


def predict_stack(network: torch.nn.Module, vox: np.ndarray, spacing_mm, cfg: StackConfig | None = None) -> np.ndarray:
    """Labels (uint8, vox.shape) of a short-axis stack: 0 background, 1 LV blood, 2 LV myocardium, 3 RV blood."""
    cfg = cfg or StackConfig()
    return stack_labels(predict_stack_probs(network, vox, spacing_mm, cfg), stack_axis(spacing_mm), cfg)
