"""Is a reference label map registered to its image? A network-free check for the benchmarks' real data.

An expert's blood-pool contour follows the bright blood / dark wall edge of its own image. Moving the label
in plane by a few pixels and measuring the image's gradient magnitude along the moved boundary shows where
the edge is: for a registered label the strongest edges lie within about half a pixel of no shift (the
ACDC stacks, the control). A reference that is displaced against its image costs every model the same Dice,
most on thin structures such as the myocardium, so the benchmarks report the shift beside the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

SHIFTS_PX = tuple(float(s) for s in np.arange(-2.0, 2.01, 0.5))  # in-plane shifts tried, pixels per axis
GRADIENT_SIGMA_PX = 1.0


def _in_plane(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(a, axis, -1)


def shift_in_plane(labels: np.ndarray, shift_px: tuple[float, float], axis: int, *, ignore: int = 255) -> np.ndarray:
    """``labels`` moved by ``shift_px`` along the two axes other than the slice axis ``axis`` (linear
    interpolation of each label's indicator, then the largest; slices holding ``ignore`` are kept as they are)."""
    lab = _in_plane(labels, axis)
    values = [int(v) for v in np.unique(lab) if v != ignore]
    moved = np.stack([ndimage.shift((lab == v).astype(np.float32), (*shift_px, 0.0), order=1) for v in values])
    out = np.asarray(values, dtype=labels.dtype)[moved.argmax(0)]
    keep = (lab == ignore).all(axis=(0, 1))
    out[..., keep] = lab[..., keep]
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


def edge_ratios(image: np.ndarray, mask: np.ndarray, axis: int) -> dict[tuple[float, float], float]:
    """For each in-plane shift (pixels) in ``SHIFTS_PX`` x ``SHIFTS_PX``: the mean in-plane gradient magnitude of
    ``image`` (Gaussian derivative, sigma ``GRADIENT_SIGMA_PX``), sampled (linear interpolation) at the pixels on
    both sides of ``mask``'s boundary moved by that shift, divided by the unshifted mean (so stacks of any
    intensity scale can be pooled). Both sides: the edge lies between them, so a registered label peaks at 0."""
    img = _in_plane(np.asarray(image, dtype=np.float64), axis)
    m = _in_plane(np.asarray(mask, dtype=bool), axis)
    grad = np.stack([ndimage.gaussian_gradient_magnitude(img[..., z], GRADIENT_SIGMA_PX)
                     for z in range(img.shape[-1])], -1)
    plane = np.zeros((3, 3, 3), bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    sides = (m & ~ndimage.binary_erosion(m, plane)) | (ndimage.binary_dilation(m, plane) & ~m)
    pts = np.argwhere(sides).T.astype(np.float64)
    means = {}
    for dx in SHIFTS_PX:
        for dy in SHIFTS_PX:
            q = pts + np.array([[dx], [dy], [0.0]])
            means[(dx, dy)] = float(ndimage.map_coordinates(grad, q, order=1, mode="nearest").mean()) if pts.size else 0.0
    base = means[(0.0, 0.0)] or 1.0
    return {sh: v / base for sh, v in means.items()}


def pooled_shift(ratios: list[dict[tuple[float, float], float]]) -> tuple[tuple[float, float], float]:
    """The shift with the largest mean ratio over several stacks, and that mean (1.0: no shift is best)."""
    mean = {s: float(np.mean([r[s] for r in ratios])) for s in ratios[0]}
    best = max(mean, key=lambda s: (mean[s], -abs(s[0]) - abs(s[1])))
    return best, mean[best]


def stack_ratios(pairs: list[tuple[Path, Path]], *, label: int = 1) -> list[dict[tuple[float, float], float]]:
    """``edge_ratios`` of label ``label`` for each (image, labels) pair of NIfTI files (slice axis: the thickest)."""
    import SimpleITK as sitk

    from cardiotwin.io.scans import from_sitk
    from cardiotwin.segmentation.slicenet import stack_axis

    out = []
    for image_path, label_path in pairs:
        image, geometry = from_sitk(sitk.ReadImage(str(image_path)))
        labels = from_sitk(sitk.ReadImage(str(label_path)))[0]
        out.append(edge_ratios(image, labels == label, stack_axis(geometry.spacing_mm)))
    return out


def reference_shifts(shared_data: Path, split_file: Path) -> dict[str, tuple[tuple[float, float], float, int]]:
    """Pooled blood-pool edge shift (pixels), its gain and the number of stacks: Sunnybrook (ED and ES) and, as
    the control, the ACDC tuning patients (ED and ES); a data set that is not there is left out."""
    out = {}
    sb = sorted(p for p in (shared_data / "sunnybrook").glob("SCD*") if p.is_dir())
    acdc = [shared_data / "acdc" / p for p in sorted(json.loads(split_file.read_text())["tuning"])]
    for name, cases in (("sunnybrook", sb), ("acdc_tuning", [c for c in acdc if c.is_dir()])):
        pairs = [(c / f"{ph}_image.nii.gz", c / f"{ph}_labels.nii.gz") for c in cases for ph in ("ed", "es")]
        if pairs:
            best, gain = pooled_shift(stack_ratios(pairs))
            out[name] = (best, gain, len(pairs))
    return out
