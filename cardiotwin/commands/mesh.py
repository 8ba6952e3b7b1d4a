"""`cardiotwin mesh LABELS.nii.gz|CASE --out DIR --edge-mm 1.5`: label map -> tagged tet mesh."""

from __future__ import annotations

import argparse

NAME = "mesh"
HELP = "label map -> biventricular tetrahedral mesh (mesh.vtu with tags, mesh.xdmf, quality.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="label map (NIfTI etc.) or a case directory (reads segment/labels.nii.gz)")
    parser.add_argument("--out", help="output folder (default: the case's mesh/ stage)")
    parser.add_argument("--edge-mm", default="1.5 mm", help="target edge length (0.5-5 mm)")
    parser.add_argument("--time-limit", default="600 s", help="fail with a clear error when meshing takes longer")
    parser.add_argument("--base-point", type=float, nargs=3, metavar=("X", "Y", "Z"), help="base plane point, LPS mm")
    parser.add_argument("--base-normal", type=float, nargs=3, metavar=("X", "Y", "Z"), help="base plane normal (towards atria)")
    parser.add_argument("--force", action="store_true", help="rerun even when inputs are unchanged")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.config import load_config
    from cardiotwin.meshing.stage import MeshConfig, mesh_case
    from cardiotwin.stage_io import open_target

    data = {"edge_mm": args.edge_mm, "time_limit_s": args.time_limit}
    if args.base_point or args.base_normal:
        data.update(base_point_mm=args.base_point, base_normal=args.base_normal)
    cfg = load_config(MeshConfig, data, source="cardiotwin mesh")
    mesh_case(open_target(args.source), cfg, out=args.out, force=args.force)
    return 0
