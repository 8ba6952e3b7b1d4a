"""Domain-gap review panels: real scans with reference contours and raw network output, next to
synthetic training samples.

Used for the real-MR diagnosis of heart_seg_v1 (MODEL_CARD.md, "Real cine MRI"): a model that
meets its synthetic targets and fails on real scans is first looked at, not tuned blindly.

- ``scan_panel``: native slices of a scan with the reference contours (top row) and the network's
  raw argmax (before post-processing, bottom row), so fragments and false positives that
  post-processing would hide are visible.
- ``synth_panel``: synthetic training samples of ``synth.synth_sample`` at the working grid, three
  orthogonal planes through the LV, with the class contours.

Example (a Sunnybrook case, as in the issue)::

    from cardiotwin.segmentation.bundle import load_bundle
    from cardiotwin.segmentation.diagnose import sunnybrook_panel
    sunnybrook_panel(Path("../shared/data/sunnybrook/SCD0000201"), load_bundle(), Path("sb201.png"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from cardiotwin.anatomy import Label
from cardiotwin.segmentation.synth import SynthLabels, synth_sample

if TYPE_CHECKING:
    from cardiotwin.segmentation.bundle import SegModel

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scan_panel(image: np.ndarray, reference: np.ndarray, raw: np.ndarray, out_png: Path, *, n_slices: int = 4,
               ignore_value: int = 255, title: str = "") -> Path:
    """PNG of ``n_slices`` labelled z-slices: reference contours (LV blood red, LV myocardium yellow)
    over the image, and the raw predicted labels (colour per label) over the image.

    image, reference, raw: (X, Y, Z) arrays on one grid (voxel order as ``Scan.voxels``);
    reference slices that are entirely ``ignore_value`` are not shown.
    """
    if not image.shape == reference.shape == raw.shape:
        raise ValueError(f"image {image.shape}, reference {reference.shape} and raw {raw.shape} differ in shape")
    plt = _pyplot()
    labelled = [z for z in range(image.shape[2]) if (reference[:, :, z] != ignore_value).any()]
    if not labelled:
        raise ValueError("the reference has no labelled slice")
    picks = labelled[:: max(1, len(labelled) // n_slices)][:n_slices]
    fig, axes = plt.subplots(2, len(picks), figsize=(3.2 * len(picks), 6.4), squeeze=False)
    for j, z in enumerate(picks):
        img = image[:, :, z].T
        ref = reference[:, :, z].T
        axes[0, j].imshow(img, cmap="gray")
        for value, colour in ((Label.LV_BLOOD, "r"), (Label.LV_MYO, "y")):
            if (ref == value).any():
                axes[0, j].contour(ref == value, levels=[0.5], colors=colour, linewidths=0.8)
        axes[0, j].set_title(f"{title} z={z} reference", fontsize=8)
        axes[1, j].imshow(img, cmap="gray")
        axes[1, j].imshow(np.ma.masked_equal(raw[:, :, z].T, 0), cmap="tab10", vmin=0, vmax=9, alpha=0.5,
                          interpolation="nearest")
        axes[1, j].set_title("raw network output", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=70)
    plt.close(fig)
    return out_png


def synth_panel(volumes: Sequence[SynthLabels], out_png: Path, *, n_samples: int = 6, patch: int = 48,
                seed: int = 0, mode: str | None = "mr", **sample_kwargs: object) -> Path:
    """PNG of ``n_samples`` synthetic samples (three orthogonal planes through the LV blood pool, or
    the patch centre when it holds none) with LV blood (red) and LV myocardium (yellow) contours.

    sample_kwargs go to ``synth.synth_sample`` (p_distractors, p_trabeculae, ...).
    """
    if not volumes:
        raise ValueError("no label volumes")
    plt = _pyplot()
    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(3, n_samples, figsize=(2.6 * n_samples, 7.8), squeeze=False)
    for j in range(n_samples):
        img, cls = synth_sample(volumes[j % len(volumes)], gen, patch=patch, mode=mode, **sample_kwargs)  # type: ignore[arg-type]
        img_np, cls_np = img[0].numpy(), cls.numpy()
        lv = np.argwhere(cls_np == Label.LV_BLOOD)
        centre = lv.mean(axis=0).astype(int) if len(lv) else np.array(cls_np.shape) // 2
        for i in range(3):
            sl: list[object] = [slice(None)] * 3
            sl[i] = int(centre[i])
            axes[i, j].imshow(img_np[tuple(sl)].T, cmap="gray", vmin=0.0, vmax=1.0)
            for value, colour in ((Label.LV_BLOOD, "r"), (Label.LV_MYO, "y")):
                plane = cls_np[tuple(sl)].T == value
                if plane.any():
                    axes[i, j].contour(plane, levels=[0.5], colors=colour, linewidths=0.7)
            axes[i, j].axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=60)
    plt.close(fig)
    return out_png


def sunnybrook_panel(case_dir: Path, model: "SegModel", out_png: Path, *, phase: str = "ed") -> Path:
    """``scan_panel`` of one Sunnybrook case folder (``<phase>_image.nii.gz`` + ``<phase>_labels.nii.gz``,
    layout of shared/data/README.md) with ``model``'s raw output."""
    import SimpleITK as sitk

    from cardiotwin.io.scans import from_sitk
    from cardiotwin.segmentation.inference import predict_raw_labels

    case_dir = Path(case_dir)
    scan = read_mr_scan(case_dir / f"{phase}_image.nii.gz")
    reference = from_sitk(sitk.ReadImage(str(case_dir / f"{phase}_labels.nii.gz")))[0]
    raw = predict_raw_labels(scan, model, cfg=model.default_config)
    log.info("%s %s: raw labels %s", case_dir.name, phase, np.bincount(raw.ravel(), minlength=9).tolist())
    return scan_panel(scan.voxels, reference, raw, out_png, title=f"{case_dir.name} {phase.upper()}")


def read_mr_scan(path: Path) -> "Scan":
    """read_scan, tolerating a slice spacing stored as 10.000004 mm (float32 NIfTI header) that
    io.scans rejects as over its 10 mm limit; geometry and voxels are taken as ITK reads them."""
    import SimpleITK as sitk

    from cardiotwin.errors import ScanError
    from cardiotwin.io.scans import from_sitk, read_scan
    from cardiotwin.types import Scan

    try:
        return read_scan(path, modality="MR")
    except ScanError as exc:
        if "voxel spacing" not in str(exc):
            raise
        voxels, geometry = from_sitk(sitk.ReadImage(str(path)))
        if max(geometry.spacing_mm) > 10.01:
            raise
        log.warning("%s: %s; read with ITK directly", path, exc)
        return Scan(voxels=voxels.astype(np.float32), geometry=geometry, modality="MR", sha256="", source=str(path))
