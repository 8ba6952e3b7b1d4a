"""`cardiotwin report CASE`: in-silico evidence report (ASME V&V 40) and one-page clinical summary.

Writes CASE/report/evidence.html, evidence.pdf, summary.html, summary.pdf and report.json (the
numbers shown and what is missing). Sections whose stage has not run say so. Patient
identifiers (case name, source file names) appear only with ``--include-identifiers``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "report"
HELP = "evidence report (HTML + PDF, ASME V&V 40) and clinical summary of a case"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory")
    parser.add_argument("--pipeline", help="pipeline YAML with the question of interest and context of use "
                                           "(default: the one recorded with the case)")
    parser.add_argument("--verification", help="verification results JSON (default: CASE/verify/verification.json; "
                                               "the CI suite is run into the case when absent)")
    parser.add_argument("--reference-labels", help="reference label map for segmentation validation (Dice)")
    parser.add_argument("--include-identifiers", action="store_true",
                        help="show the case name and source file names (default: pseudonymised)")
    parser.add_argument("--no-calc-verification", action="store_true",
                        help="skip the mesh-refinement study on this patient")
    parser.add_argument("--timestep-study", action="store_true",
                        help="also run the time-step refinement (dt, dt/2) of the baseline electromechanical beat: "
                             "about twice the CRT stage's beat time")
    parser.add_argument("--timestep-levels", type=int, choices=(2, 3), default=2,
                        help="time steps of --timestep-study: 2 (dt, dt/2) or 3 (also dt/4: observed order)")
    parser.add_argument("--em-mesh-study", action="store_true",
                        help="also repeat the baseline electromechanical beat on re-meshed levels of the patient (EF, "
                             "dP/dt_max, SV, stroke work with GCI): minutes (a coarser level costs less than the CRT "
                             "stage's beat, a finer one about its tet-count ratio times more)")
    parser.add_argument("--em-mesh-factors", type=float, nargs="+", default=[1.5, 2.25], metavar="F",
                        help="edge factors (> 1) of --em-mesh-study: each level is re-meshed at edge x F, or edge / F "
                             "when the mesher cannot make it coarser (default 1.5 2.25)")
    parser.add_argument("--no-verify", action="store_true", help="do not run the code-verification suite when absent")
    parser.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.errors import ConfigError
    from cardiotwin.pipeline import report_case
    from cardiotwin.report.build import ReportConfig

    if any(not f > 1.0 for f in args.em_mesh_factors):
        raise ConfigError(f"cardiotwin report: --em-mesh-factors must all be > 1, got {args.em_mesh_factors}")
    cfg = ReportConfig(include_identifiers=args.include_identifiers, calc_verification=not args.no_calc_verification,
                       run_verification=not args.no_verify, timestep_study=args.timestep_study,
                       timestep_levels=args.timestep_levels, em_mesh_study=args.em_mesh_study,
                       em_mesh_factors=tuple(args.em_mesh_factors))
    paths = report_case(
        args.case, config=cfg, force=args.force,
        pipeline=Path(args.pipeline) if args.pipeline else None,
        verification=Path(args.verification) if args.verification else None,
        reference_labels=Path(args.reference_labels) if args.reference_labels else None,
    )
    for name, path in paths.items():
        log.info("%s: %s", name, path)
    print("\n".join(str(p) for p in paths.values()))
    return 0
