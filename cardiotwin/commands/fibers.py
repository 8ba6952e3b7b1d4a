"""`cardiotwin fibers DIR|CASE`: add LDRB fibres, ventricular coordinates and AHA segments."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from cardiotwin.config import load_config
from cardiotwin.errors import CaseError

NAME = "fibers"
HELP = "add rule-based fibres (f0, s0, n0), ventricular coordinates (uvc_*) and AHA segments to a mesh"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="mesh folder (with mesh.vtu) or a case directory")
    parser.add_argument("--alpha-endo", default="60 deg", help="helix angle at the endocardium")
    parser.add_argument("--alpha-epi", default="-60 deg", help="helix angle at the epicardium")
    parser.add_argument("--beta-endo", default="-65 deg", help="sheet angle at the endocardium")
    parser.add_argument("--beta-epi", default="25 deg", help="sheet angle at the epicardium")
    parser.add_argument("--force", action="store_true", help="rerun even when inputs are unchanged")


def _process(src_vtu: Path, out: Path, cfg) -> dict:
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.io.meshes import read_mesh, write_mesh, write_opencarp

    mesh = read_mesh(src_vtu)
    mesh, timings = compute_fibers(mesh, cfg=cfg)
    write_mesh(mesh, out / "mesh.vtu")
    write_opencarp(mesh, out / "mesh")
    return timings


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.fibers.ldrb import FiberConfig

    cfg = load_config(
        FiberConfig,
        {"alpha_endo_deg": args.alpha_endo, "alpha_epi_deg": args.alpha_epi,
         "beta_endo_deg": args.beta_endo, "beta_epi_deg": args.beta_epi},
        source="cardiotwin fibers",
    )
    target = Path(args.target)
    if Case.is_case(target):
        case = Case.open(target)
        mesh_dir = case.require_stage("mesh")
        with case.stage("fibers", inputs={"mesh": mesh_dir / "mesh.vtu"}, config=cfg, force=args.force) as st:
            if not st.skipped:
                for name in ("mesh.xdmf", "mesh.h5", "quality.json"):
                    if (mesh_dir / name).exists():
                        shutil.copy2(mesh_dir / name, st.dir / name)
                st.metrics.update(_process(mesh_dir / "mesh.vtu", st.dir, cfg))
        return 0
    if not (target / "mesh.vtu").is_file():
        raise CaseError(f"{target}: no mesh.vtu here (run `cardiotwin mesh LABELS --out {target}` first)")
    _process(target / "mesh.vtu", target, cfg)
    return 0
