"""`cardiotwin segment SCAN --out LABELS.nii.gz|CASE_DIR`: label the heart in a CT or MRI scan."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiotwin.commands._scan_args import add_dicomweb_options, add_scan_options, scan_source

NAME = "segment"
HELP = "segment the heart (labels 1-8) in a CT or MRI scan; writes a label map file or the case's segment stage"


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


def run(args: argparse.Namespace) -> int:
    from cardiotwin.io.scans import image_suffix
    from cardiotwin.segmentation.stage import SegStageConfig, segment_case

    scan = scan_source("segment", args, scan=args.scan, out=args.out, modality=args.modality)
    cfg = SegStageConfig(model=args.model, rv_myocardium=args.rv_myocardium, reference=args.reference,
                         modality=args.modality, series_uid=args.series_uid, frame=args.frame,
                         all_frames=args.all_frames)
    result = segment_case(Path(args.out), scan, cfg, force=args.force)
    if result is None:
        print(f"{args.out}: segment unchanged (use --force to rerun)")
    else:
        print(f"wrote {args.out if image_suffix(Path(args.out)) else result['labels_path']}")
    return 0
