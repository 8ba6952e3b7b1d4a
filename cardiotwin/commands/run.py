"""`cardiotwin run RECIPE --scan SCAN|--dicomweb URL --study UID --out CASE`: run a pipeline recipe end to end on a scan."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.commands._scan_args import add_dicomweb_options, scan_source

NAME = "run"
HELP = "run a pipeline recipe (pipelines/crt_ct.yaml, crt_mri.yaml) on a scan into a case directory"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="pipeline YAML (e.g. pipelines/crt_ct.yaml)")
    parser.add_argument("--scan", help="scan file or DICOM series folder (or --dicomweb URL --study UID)")
    parser.add_argument("--out", required=True, help="case directory (created when absent)")
    parser.add_argument("--labels", help="use this label map (on the scan's grid) instead of running the segmentation")
    parser.add_argument("--es-scan", help="end-systolic scan (same series as --scan) for the calibrate stage")
    parser.add_argument("--es-labels", help="end-systolic label map (on the ES scan's grid) instead of segmenting --es-scan")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--measurements", help="YAML file of clinical measurements with units for the calibrate stage")
    src.add_argument("--fhir", help="FHIR R4 Bundle (JSON) of Observations with the clinical measurements")
    parser.add_argument("--scheduler", help="running Dask scheduler for the sweeps (tcp://HOST:PORT); default: local")
    parser.add_argument("--workers", type=int, default=2, help="workers of the embedded local Dask cluster (0: run the sweep in this process)")
    parser.add_argument("--force", action="store_true", help="rerun every stage even when inputs are unchanged")
    add_dicomweb_options(parser)


def run(args: argparse.Namespace) -> int:
    from cardiotwin.commands.crt import summary_lines
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.pipeline import load_recipe, run_pipeline

    recipe = load_recipe(args.recipe)
    args.scan = scan_source("run", args, scan=args.scan, out=args.out, modality=recipe.modality)
    ctx = run_pipeline(recipe, scan_path=Path(args.scan), out=Path(args.out),
                       labels_path=Path(args.labels) if args.labels else None, force=args.force,
                       scheduler=args.scheduler, workers=args.workers,
                       es_scan_path=Path(args.es_scan) if args.es_scan else None,
                       es_labels_path=Path(args.es_labels) if args.es_labels else None,
                       measurements_path=Path(args.measurements or args.fhir) if (args.measurements or args.fhir) else None)
    manifest = ctx.case.manifest
    stage_times = {name: manifest["stages"].get(name, {}).get("duration_s") for name in ("segment", "mesh", "fibers",
                                                                                        "calibrate", "therapy")}
    therapy = manifest["stages"].get("therapy", {}).get("metrics", {})
    write_json_atomic(ctx.case.root / "pipeline.json", {"recipe": recipe.name, "source": recipe.source,
                                                        "wall_s": ctx.timings_s, "stage_duration_s": stage_times,
                                                        "therapy_steps_s": therapy.get("timings_s", {})})
    print(f"pipeline {recipe.name} on {args.scan} -> {ctx.case.root}")
    for name, seconds in ctx.timings_s.items():
        print(f"  {name:8s} {seconds:8.1f} s")
    if "crt" in ctx.results:
        for line in summary_lines(ctx.results["crt"]):
            print("  " + line)
    calibration = ctx.case.stage_dir("calibrate") / "calibration.json"
    if calibration.is_file():
        print(f"calibration: {calibration}")
    ranking = ctx.case.stage_dir("therapy") / "ranking.json"
    if ranking.is_file():
        print(f"ranking: {ranking}")
    return 0
