"""`cardiotwin fibers DIR|CASE`: add LDRB fibres, ventricular coordinates and AHA segments."""

from __future__ import annotations

import argparse

NAME = "fibers"
HELP = "add rule-based fibres (f0, s0, n0), ventricular coordinates (uvc_*) and AHA segments to a mesh"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="mesh folder (with mesh.vtu) or a case directory")
    parser.add_argument("--alpha-endo", default="60 deg", help="helix angle at the endocardium")
    parser.add_argument("--alpha-epi", default="-60 deg", help="helix angle at the epicardium")
    parser.add_argument("--beta-endo", default="-65 deg", help="sheet angle at the endocardium")
    parser.add_argument("--beta-epi", default="25 deg", help="sheet angle at the epicardium")
    parser.add_argument("--force", action="store_true", help="rerun even when inputs are unchanged")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.config import load_config
    from cardiotwin.fibers.stage import FiberConfig, fibers_case
    from cardiotwin.stage_io import open_target

    cfg = load_config(
        FiberConfig,
        {"alpha_endo_deg": args.alpha_endo, "alpha_epi_deg": args.alpha_epi,
         "beta_endo_deg": args.beta_endo, "beta_epi_deg": args.beta_epi},
        source="cardiotwin fibers",
    )
    fibers_case(open_target(args.target), cfg, force=args.force)
    return 0
