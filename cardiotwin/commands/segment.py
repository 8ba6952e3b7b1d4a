"""`cardiotwin segment SCAN --out LABELS.nii.gz|CASE_DIR`: label the heart in a CT or MRI scan."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from cardiotwin.commands._scan_args import add_dicomweb_options, add_scan_options, read_scan_from_args, scan_source
from cardiotwin.io.scans import image_suffix

NAME = "segment"
HELP = "segment the heart (labels 1-8) in a CT or MRI scan; writes a label map file or the case's segment stage"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", nargs="?", help="scan file (.nii.gz, .nrrd, .mha ...) or DICOM series folder "
                                                "(or --dicomweb URL --study UID)")
    parser.add_argument("--out", required=True,
                        help="LABELS.nii.gz (a label map file in the scan's geometry) or a case folder")
    parser.add_argument("--model", help="model bundle folder or the name of a folder in models/ (default: the shipped "
                                        "models/heart_seg_v1; e.g. heart_seg_cine_acdc: non-commercial research only)")
    parser.add_argument("--all-frames", action="store_true",
                        help="4D cine (4D NIfTI or DICOM cine series): segment every frame, write the LV/RV volume "
                             "curves (cine_volumes.json, .png) and ED / ES label maps; the ED labels are the output")
    parser.add_argument("--reference", help="reference label map on the scan's grid: report Dice, HD95, ASSD")
    parser.add_argument("--rv-myocardium", choices=["auto", "always", "never"],
                        help="RV myocardium from the RV blood pool: always = complete the wall with a shell where the "
                             "blood pool touches background (default of the shipped bundle); auto = a whole shell "
                             "only when the model finds almost no wall; never = the network's wall only")
    parser.add_argument("--force", action="store_true", help="case output: rerun even when inputs are unchanged")
    add_scan_options(parser)
    add_dicomweb_options(parser)


def _dicom_seg_path(out: Path) -> Path:
    suffix = image_suffix(out)
    return out.with_name(out.name[: -len(suffix)] + "_seg.dcm")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.io.scans import read_labels, write_labels
    from cardiotwin.errors import ConfigError
    from cardiotwin.segmentation.bundle import DEFAULT_BUNDLE, load_bundle, model_record, resolve_bundle
    from cardiotwin.segmentation.cine import segment_cine, write_cine_outputs
    from cardiotwin.segmentation.inference import segment
    from cardiotwin.segmentation.qc import compare, quality_report, raise_on_errors, write_overlays

    args.scan = scan_source("segment", args, scan=args.scan, out=args.out, modality=args.modality)
    scan_path = Path(args.scan)
    model_dir = resolve_bundle(args.model) if args.model else DEFAULT_BUNDLE
    model = load_bundle(model_dir if args.model else None)
    cfg = model.default_config
    if args.rv_myocardium:
        cfg = replace(cfg, rv_myocardium=args.rv_myocardium)
    cine = None
    if args.all_frames:
        if args.frame is not None:
            raise ConfigError("segment: --all-frames and --frame exclude each other")
        cine = segment_cine(scan_path, lambda s: segment(s, model, cfg=cfg), modality=args.modality,
                            series_uid=args.series_uid)
        args.frame = cine.ed_frame
    scan = read_scan_from_args(args.scan, args)
    reference = read_labels(args.reference) if args.reference else None
    out = Path(args.out)

    def run_stage(folder: Path, labels_name: str) -> dict:
        label_map = segment(scan, model, cfg=cfg) if cine is None else cine.labels[cine.ed_frame]
        report = quality_report(label_map)
        report["model"] = model_record(model)
        if cine is not None:
            report["cine"] = cine.summary()
            write_cine_outputs(cine, folder, stem="cine" if labels_name == "labels.nii.gz" else
                               labels_name[: -len(image_suffix(labels_name))] + "_cine")
        raise_on_errors(report, source=str(scan_path))
        for w in report["warnings"]:
            log.warning("%s: %s", scan_path, w)
        if reference is not None:
            report["reference"] = {"path": str(args.reference), "metrics": compare(label_map, reference)}
        write_labels(label_map, folder / labels_name)
        if scan_path.is_dir():
            from cardiotwin.segmentation.dicomseg import write_dicom_seg

            seg_path = _dicom_seg_path(folder / labels_name)
            write_dicom_seg(label_map, scan_path, seg_path, series_uid=args.series_uid, frame=args.frame,
                            label_names=model.label_table)
            log.info("wrote DICOM SEG %s", seg_path)
        return {"label_map": label_map, "report": report}

    if image_suffix(out):
        result = run_stage(out.parent if str(out.parent) else Path("."), out.name)
        _log_report(result["report"])
        print(f"wrote {out}")
        return 0

    case = Case.open_or_create(out)
    config = {"model": model.name, "model_weights_sha256": model.metadata["weights"]["sha256"],
              "model_licence": model.licence, "all_frames": bool(args.all_frames),
              "inference": {k: str(v) for k, v in cfg.__dict__.items()}}
    inputs = {"model": model_dir}
    if reference is not None:
        inputs["reference"] = Path(args.reference)
    # the scan replaces the case's inputs/scan.nii.gz only when the stage succeeds
    with case.stage("segment", inputs=inputs, config=config, force=args.force, scans={"scan": scan}) as st:
        if st.skipped:
            print(f"{case.root}: segment unchanged (use --force to rerun)")
            return 0
        result = run_stage(st.dir, "labels.nii.gz")
        write_overlays(result["label_map"], scan.voxels, st.dir, stem="overlay")
        (st.dir / "qc.json").write_text(json.dumps(result["report"], indent=2, default=str))
        st.metrics.update({"volumes_ml": result["report"]["volumes_ml"],
                           "lv_myocardial_mass_g": result["report"]["lv_myocardial_mass_g"],
                           "warnings": result["report"]["warnings"]})
    _log_report(result["report"])
    print(f"wrote {case.stage_dir('segment') / 'labels.nii.gz'}")
    return 0


def _log_report(report: dict) -> None:
    vol = report["volumes_ml"]
    log.info("volumes (mL): %s; LV mass %.1f g", {k: v for k, v in vol.items() if v}, report["lv_myocardial_mass_g"])
    if "reference" in report:
        for name, m in report["reference"]["metrics"].items():
            log.info("vs reference %-18s Dice %.3f  HD95 %.1f mm  ASSD %.2f mm", name, m["dice"], m["hd95_mm"],
                     m["assd_mm"])
