"""The ``segment`` stage: scan -> label map (labels.nii.gz) with a quality report.

On a case, the stage also writes qc.json and overlay images; on a label map file, only the
labels (and a DICOM SEG beside them when the scan is a DICOM series).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cardiotwin.cases import Case
from cardiotwin.errors import ConfigError

__all__ = ["LABELS_FILE", "QC_JSON", "SegStageConfig", "segment_case", "store_labels_case"]

LABELS_FILE = "labels.nii.gz"
QC_JSON = "qc.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegStageConfig:
    """Options of the segment stage. ``model``: bundle folder or the name of a folder in models/
    (None: the shipped one); ``all_frames``: segment every frame of a 4D cine (LV/RV volume curves,
    ED / ES label maps; the ED labels are the stage's labels);
    ``rv_myocardium``: auto | always | never (None: the bundle's default); ``reference``: a
    label map on the scan's grid to score against (Dice, HD95, ASSD); ``modality``,
    ``series_uid``, ``frame``: how to read the scan (see ``io.scans.read_scan``)."""

    model: str | None = None
    rv_myocardium: str | None = None
    reference: str | None = None
    modality: str | None = None
    series_uid: str | None = None
    frame: int | None = None
    all_frames: bool = False

    def validate(self) -> None:
        if self.rv_myocardium not in (None, "auto", "always", "never"):
            raise ValueError(f"rv_myocardium must be auto, always or never, got {self.rv_myocardium!r}")
        if self.modality not in (None, "CT", "MR"):
            raise ValueError(f"modality must be CT or MR, got {self.modality!r}")
        if self.all_frames and self.frame is not None:
            raise ValueError("segment: all_frames (--all-frames) and frame (--frame) exclude each other")


def dicom_seg_path(labels_path: Path) -> Path:
    """labels.nii.gz -> labels_seg.dcm (same folder)."""
    from cardiotwin.io.scans import image_suffix

    suffix = image_suffix(labels_path)
    return labels_path.with_name(labels_path.name[: -len(suffix)] + "_seg.dcm")


def segment_case(
    target: Case | Path,
    scan_path: str | os.PathLike[str],
    cfg: SegStageConfig,
    *,
    force: bool = False,
) -> dict[str, Any] | None:
    """Segment ``scan_path`` into a case's ``segment/`` stage (the scan is stored in the case;
    a folder that is no case yet becomes one), or into ``target`` when it names a label map
    file (.nii.gz, .nrrd, ...). Returns {"label_map", "report", "labels_path"};
    None when the case's stage was unchanged."""
    from cardiotwin.io.scans import image_suffix, read_labels, read_scan
    from cardiotwin.segmentation.bundle import DEFAULT_BUNDLE, load_bundle, model_record, resolve_bundle
    from cardiotwin.segmentation.inference import segment

    try:
        cfg.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    scan_path = Path(scan_path)
    model_dir = resolve_bundle(cfg.model) if cfg.model else DEFAULT_BUNDLE
    model = load_bundle(model_dir if cfg.model else None)
    seg_cfg = model.default_config
    if cfg.rv_myocardium:
        seg_cfg = replace(seg_cfg, rv_myocardium=cfg.rv_myocardium)
    cine = None
    frame = cfg.frame
    if cfg.all_frames:
        from cardiotwin.segmentation.cine import segment_cine

        cine = segment_cine(scan_path, lambda s: segment(s, model, cfg=seg_cfg), modality=cfg.modality,
                            series_uid=cfg.series_uid)
        frame = cine.ed_frame
    scan = read_scan(scan_path, modality=cfg.modality, series_uid=cfg.series_uid, frame=frame)
    reference = read_labels(cfg.reference) if cfg.reference else None

    def run(folder: Path, labels_name: str) -> dict[str, Any]:
        from cardiotwin.io.scans import write_labels
        from cardiotwin.segmentation.qc import compare, quality_report, raise_on_errors

        label_map = segment(scan, model, cfg=seg_cfg) if cine is None else cine.labels[cine.ed_frame]
        report = quality_report(label_map)
        report["model"] = model_record(model)
        if cine is not None:
            from cardiotwin.segmentation.cine import write_cine_outputs

            report["cine"] = cine.summary()
            write_cine_outputs(cine, folder, stem="cine" if labels_name == LABELS_FILE else
                               labels_name[: -len(image_suffix(labels_name))] + "_cine")
        raise_on_errors(report, source=str(scan_path))
        for w in report["warnings"]:
            log.warning("%s: %s", scan_path, w)
        if reference is not None:
            report["reference"] = {"path": str(cfg.reference), "metrics": compare(label_map, reference)}
        write_labels(label_map, folder / labels_name)
        if scan_path.is_dir():
            from cardiotwin.segmentation.dicomseg import write_dicom_seg

            seg_path = dicom_seg_path(folder / labels_name)
            write_dicom_seg(label_map, scan_path, seg_path, series_uid=cfg.series_uid, frame=frame,
                            label_names=model.label_table)
            log.info("wrote DICOM SEG %s", seg_path)
        log_report(report)
        return {"label_map": label_map, "report": report, "labels_path": folder / labels_name}

    if not isinstance(target, Case):
        target = Path(target)
        if image_suffix(target):
            return run(target.parent if str(target.parent) else Path("."), target.name)
        target = Case.open_or_create(target)  # after the scan and the model were read

    from cardiotwin.segmentation.qc import write_overlays

    config = {"model": model.name, "model_weights_sha256": model.metadata["weights"]["sha256"],
              "model_licence": model.licence, "all_frames": cfg.all_frames,
              "inference": {k: str(v) for k, v in seg_cfg.__dict__.items()}}
    inputs: dict[str, Path] = {"model": model_dir}
    if reference is not None:
        inputs["reference"] = Path(cfg.reference)  # type: ignore[arg-type]
    # the scan replaces the case's inputs/scan.nii.gz only when the stage succeeds
    with target.stage("segment", inputs=inputs, config=config, force=force, scans={"scan": scan}) as st:
        if st.skipped:
            return None
        result = run(st.dir, LABELS_FILE)
        write_overlays(result["label_map"], scan.voxels, st.dir, stem="overlay")
        (st.dir / QC_JSON).write_text(json.dumps(result["report"], indent=2, default=str))
        st.metrics.update({"volumes_ml": result["report"]["volumes_ml"],
                           "lv_myocardial_mass_g": result["report"]["lv_myocardial_mass_g"],
                           "warnings": result["report"]["warnings"]})
    result["labels_path"] = target.stage_dir("segment") / LABELS_FILE
    return result


def store_labels_case(case: Case, scan_path: Path, labels_path: Path, *, config: Any = None,
                      force: bool = False) -> Path:
    """Store a label map made elsewhere (reference labels, another tool) as the case's segment
    stage; ScanError when it is not on the scan's grid. Returns the stored labels path."""
    from cardiotwin.errors import ScanError
    from cardiotwin.io.scans import read_labels, read_scan, write_labels

    scan = read_scan(scan_path)
    labels = read_labels(labels_path)
    if not labels.geometry.same_space(scan.geometry):
        raise ScanError(labels_path, f"label map is not on the grid of the scan {scan_path}")
    with case.stage("segment", inputs={"labels": labels_path}, scans={"scan": scan},
                    config={"source": "label map given with --labels", **(config or {})}, force=force) as st:
        if not st.skipped:
            write_labels(labels, st.dir / LABELS_FILE)
    return case.stage_dir("segment") / LABELS_FILE


def log_report(report: dict[str, Any]) -> None:
    """Volumes, LV mass and (with a reference) the agreement metrics, to the log."""
    vol = report["volumes_ml"]
    log.info("volumes (mL): %s; LV mass %.1f g", {k: v for k, v in vol.items() if v}, report["lv_myocardial_mass_g"])
    if "reference" in report:
        for name, m in report["reference"]["metrics"].items():
            log.info("vs reference %-18s Dice %.3f  HD95 %.1f mm  ASSD %.2f mm", name, m["dice"], m["hd95_mm"],
                     m["assd_mm"])
