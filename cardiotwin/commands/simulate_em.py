"""`cardiotwin simulate em CASE_OR_DIR`: one electromechanical beat (mechanics + 0D circulation).

Input: a case (uses ``ep/activation.vtu``), a folder holding ``activation.vtu``, the file itself,
or ``--demo ellipsoid|biventricle`` (analytic mesh, fibres and activation). Outputs (into the
case's ``em/`` stage, or ``--out``): metrics.json, curves.csv, pv_loops.png, displacement.xdmf.
Runs on ``--ranks`` MPI ranks (default: the machine's cores, at most 4; ``CARDIOTWIN_EM_RANKS``),
or under ``mpirun -n N`` in folder/file/demo mode.
"""

from __future__ import annotations

import argparse

from cardiotwin.errors import CaseError

NAME = "em"
HELP = "simulate one electromechanical beat (hyperelastic ventricles + 0D circulation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="case directory, folder with activation.vtu, or the .vtu file")
    parser.add_argument("--demo", choices=("ellipsoid", "biventricle"), help="analytic inputs instead of a path")
    parser.add_argument("--demo-mesh-mm", type=float, default=4.0, help="mesh size of the demo geometry (mm)")
    parser.add_argument("--out", help="output folder (default: the case's em/ stage or PATH/em)")
    parser.add_argument("--config", help="YAML file with EMConfig keys (units as strings, e.g. dt: '5 ms')")
    parser.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")
    parser.add_argument("--ranks", help="MPI ranks for the beat: a number (1 = serial, in this process) or 'auto' "
                        "(default, or $CARDIOTWIN_EM_RANKS: the usable cores, at most 4)")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.config import load_config, read_yaml
    from cardiotwin.mechanics.stage import EMConfig, em_case, em_demo
    from cardiotwin.stage_io import open_target

    cfg = load_config(EMConfig, read_yaml(args.config) if args.config else {}, source=args.config or "defaults")
    if args.demo:
        em_demo(args.demo, cfg, out=args.out or f"em_demo_{args.demo}", mesh_mm=args.demo_mesh_mm,
                ranks=args.ranks)
        return 0
    if not args.path:
        raise CaseError("give a case directory, a folder with activation.vtu, a .vtu file, or --demo")
    em_case(open_target(args.path), cfg, out=args.out, force=args.force, ranks=args.ranks)
    return 0
