"""Use error and validation of the segmentation: perturbation spread and Dice against a reference.

Plausible segmentation perturbation: the endocardial and the epicardial contours moved by one
voxel in and out (the inter-observer variability of manual contours is of that order: about
1-2 mm in cine MRI, Suinesiaputra et al., J Cardiovasc Magn Reson 17:63, 2015). The spread of
the anatomical quantities that drive the model (cavity volumes, myocardial mass) over the
perturbed label maps is reported; myocardial mass uses 1.05 g/mL.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cardiotwin.anatomy import LABEL_NAMES, Label
from cardiotwin.report.casedata import finite
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
_PAIRS = ((Label.LV_BLOOD, Label.LV_MYO), (Label.RV_BLOOD, Label.RV_MYO))


def _grow(labels: np.ndarray, src: int, into: tuple[int, ...]) -> np.ndarray:
    """Label ``src`` grown by one voxel (6-neighbourhood) into voxels labelled ``into``."""
    from scipy import ndimage

    grown = ndimage.binary_dilation(labels == src)
    out = labels.copy()
    out[grown & np.isin(labels, into)] = src
    return out


def perturbations(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Nominal and four one-voxel perturbations (endocardium out/in, epicardium out/in)."""
    out = {"nominal": labels}
    endo_out, endo_in, epi_out, epi_in = labels, labels, labels, labels
    for blood, myo in _PAIRS:
        endo_out = _grow(endo_out, int(blood), (int(myo),))
        endo_in = _grow(endo_in, int(myo), (int(blood),))
        epi_out = _grow(epi_out, int(myo), (int(Label.BACKGROUND),))
    # epicardium in: background grows into the myocardium
    bg = _grow(labels, int(Label.BACKGROUND), (int(Label.LV_MYO), int(Label.RV_MYO)))
    epi_in = bg
    out.update({"endocardium +1 voxel": endo_out, "endocardium -1 voxel": endo_in,
                "epicardium +1 voxel": epi_out, "epicardium -1 voxel": epi_in})
    return out


def anatomical_quantities(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """LV / RV blood-pool volumes (mL) and LV / RV myocardial mass (g) of a label array."""
    n = {int(v): int(np.count_nonzero(labels == int(v))) for v in Label}
    myo_lv = (n[int(Label.LV_MYO)] + n[int(Label.SCAR)]) * voxel_ml
    return {
        "lv_blood_volume_ml": n[int(Label.LV_BLOOD)] * voxel_ml,
        "rv_blood_volume_ml": n[int(Label.RV_BLOOD)] * voxel_ml,
        "lv_myocardial_mass_g": myo_lv * MYOCARDIAL_DENSITY_G_PER_ML,
        "rv_myocardial_mass_g": n[int(Label.RV_MYO)] * voxel_ml * MYOCARDIAL_DENSITY_G_PER_ML,
    }


def perturbation_spread(labels: LabelMap) -> dict[str, Any]:
    """Quantities under each perturbation and, per quantity, nominal / min / max / spread (%)."""
    voxel_ml = labels.geometry.voxel_volume_ml
    per = {name: anatomical_quantities(arr, voxel_ml) for name, arr in perturbations(labels.labels).items()}
    summary = {}
    for q, nominal in per["nominal"].items():
        vals = [p[q] for p in per.values()]
        summary[q] = {"nominal": nominal, "min": min(vals), "max": max(vals),
                      "spread_percent": 100.0 * (max(vals) - min(vals)) / nominal if nominal else None}
    return {"voxel_volume_ml": voxel_ml, "spacing_mm": list(labels.geometry.spacing_mm),
            "per_perturbation": per, "summary": summary}


def dice_scores(pred: LabelMap, ref: LabelMap) -> dict[str, float]:
    """Dice coefficient per label present in either map (label name -> 0..1)."""
    if not pred.geometry.same_space(ref.geometry):
        raise ValueError("segmentation and reference are not on the same voxel grid")
    out = {}
    for value, name in LABEL_NAMES.items():
        if value == 0:
            continue
        a, b = pred.labels == value, ref.labels == value
        denom = int(a.sum()) + int(b.sum())
        if denom:
            out[name] = 2.0 * int(np.count_nonzero(a & b)) / denom
    return out


def label_origin(manifest: dict[str, Any]) -> str:
    """Where the case's label map came from, from the ``segment`` stage record of the manifest:
    a label map given to the pipeline (``--labels``), or the segmentation model (name, weights hash)."""
    rec = (manifest.get("stages") or {}).get("segment")
    if not isinstance(rec, dict):
        return "unknown (no segment stage recorded in manifest.json)"
    cfg = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    if isinstance(cfg.get("source"), str):
        return f"{cfg['source']} (segment stage, not segmented by cardiotwin: no model QC was run)"
    if cfg.get("model"):
        sha = str(cfg.get("model_weights_sha256") or "")[:12]
        licence = str(cfg.get("model_licence") or "")
        use = " (non-commercial research only)" if "NC" in licence.split("-") else ""
        return (f"segmentation model {cfg['model']}" + (f" (weights sha256 {sha}…)" if sha else "")
                + (f", licence {licence}{use}" if licence else ""))
    return "segment stage (origin not recorded in its configuration)"


def segmentation_qc_rows(qc: dict[str, Any]) -> list[list[Any]]:
    """Table rows (item, value, unit) of a ``segmentation.qc.quality_report`` mapping."""
    rows: list[list[Any]] = []
    for name, v in (qc.get("volumes_ml") or {}).items():
        rows.append([f"volume {name}", v, "mL"])
    if finite(qc.get("lv_myocardial_mass_g")) is not None:
        rows.append(["LV myocardial mass", qc["lv_myocardial_mass_g"], "g"])
    for k, v in (qc.get("lv_wall_thickness_mm") or {}).items():
        rows.append([f"LV wall thickness {k}", v, "mm"])
    wall = qc.get("lv_wall_plausibility") or {}
    seg = list((wall.get("segment_median_thickness_mm") or {}).values())
    if seg:
        rows.append(["LV wall thinnest segment (median)", min(seg), "mm"])
        rows.append(["LV wall thickest segment (median)", max(seg), "mm"])
    if finite(wall.get("mid_open_fraction")) is not None:
        rows.append(["LV blood pool boundary not walled in mid slices", wall["mid_open_fraction"], "fraction"])
    for name, n in (qc.get("components") or {}).items():
        rows.append([f"connected components {name}", n, ""])
    for pair, ok in (qc.get("adjacency") or {}).items():
        rows.append([f"touching {pair}", ok, ""])
    rows.append(["errors", "; ".join(qc.get("errors") or []) or "none", ""])
    rows.append(["warnings", "; ".join(qc.get("warnings") or []) or "none", ""])
    return rows
