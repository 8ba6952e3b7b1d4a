"""`cardiotwin calibrate CASE [--measurements M.yaml | --fhir B.json]`: fit the twin to its patient.

Writes CASE/calibrate/ (calibration.json, validation.json, unloaded_mesh.vtu, fit.png); the CRT
stage then runs its beats with the calibrated parameters on the unloaded mesh.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "calibrate"
HELP = "calibrate the twin to the patient's measurements (unloaded geometry, stiffness, contractility, circulation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory with a completed fibers stage")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--measurements", help="YAML file of clinical measurements with units (cuff pressures, heart "
                     "rate, QRS duration, LVEDP, EF / volumes)")
    src.add_argument("--fhir", help="FHIR R4 Bundle (JSON) of Observations with the same measurements")
    parser.add_argument("--es-labels", help="end-systolic label map (default: the case's segment_es stage)")
    parser.add_argument("--config", help="YAML file with CalibrationConfig keys")
    parser.add_argument("--force", action="store_true", help="rerun the stage even when inputs are unchanged")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.config import read_yaml
    from cardiotwin.personalisation.stage import calibrate_case_stage, load_calibration_config, read_clinical

    case = Case.open(args.case)
    cfg = load_calibration_config(read_yaml(args.config) if args.config else {}, source=args.config or "defaults")
    path = Path(args.measurements or args.fhir) if (args.measurements or args.fhir) else None
    result = calibrate_case_stage(case, cfg=cfg, clinical=read_clinical(path), clinical_path=path,
                                  es_labels=Path(args.es_labels) if args.es_labels else None, force=args.force)
    out = case.stage_dir("calibrate") / "calibration.json"
    if result is None:
        print(f"{case.root}: calibration unchanged (use --force to rerun); see {out}")
        return 0
    m, s = result["measured"], result["simulated"]
    for key in ("lv_edv_ml", "lv_esv_ml", "lv_ef", "rv_ef"):
        if m.get(key) is not None or s.get(key) is not None:
            print(f"{key:10s} measured {m.get(key) if m.get(key) is None else round(m[key], 3)!s:>8}  "
                  f"simulated {s.get(key) if s.get(key) is None else round(s[key], 3)!s:>8}")
    for name, p in result["parameters"].items():
        lo_hi = p.get("interval")
        iv = f" [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi and lo_hi[1] is not None else ""
        print(f"{name}: {p['value']:.4g} {p['unit']}{iv}{'' if p.get('identifiable', True) else ' (not identified)'}")
    print(f"wrote {out}")
    return 0
