"""`cardiotwin mesh LABELS.nii.gz|CASE --out DIR --edge-mm 1.5`: label map -> tagged tet mesh."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.config import load_config
from cardiotwin.errors import CaseError, ConfigError

NAME = "mesh"
HELP = "label map -> biventricular tetrahedral mesh (mesh.vtu with tags, mesh.xdmf, quality.json)"

# The segmentation stage's output in a case (cardiotwin/commands/segment.py writes this name).
SEGMENT_LABELS = "labels.nii.gz"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="label map (NIfTI etc.) or a case directory (reads segment/labels.nii.gz)")
    parser.add_argument("--out", help="output folder (default: the case's mesh/ stage)")
    parser.add_argument("--edge-mm", default="1.5 mm", help="target edge length (0.5-5 mm)")
    parser.add_argument("--time-limit", default="600 s", help="fail with a clear error when meshing takes longer")
    parser.add_argument("--base-point", type=float, nargs=3, metavar=("X", "Y", "Z"), help="base plane point, LPS mm")
    parser.add_argument("--base-normal", type=float, nargs=3, metavar=("X", "Y", "Z"), help="base plane normal (towards atria)")
    parser.add_argument("--force", action="store_true", help="rerun even when inputs are unchanged")


def _write_outputs(folder: Path, labels, cfg) -> dict:
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import write_mesh, write_xdmf
    from cardiotwin.meshing.quality import mesh_quality
    from cardiotwin.meshing.volume import mesh_labels

    mesh, base, _, timings = mesh_labels(labels, cfg=cfg)
    quality = mesh_quality(mesh, labels=labels, base=base)
    quality["timings_s"] = timings
    folder.mkdir(parents=True, exist_ok=True)
    write_mesh(mesh, folder / "mesh.vtu")
    write_xdmf(mesh, folder / "mesh.xdmf")
    write_json_atomic(folder / "quality.json", quality)
    log.info("mesh: %d tets, volume error %.2f %%, min dihedral %.1f deg -> %s", mesh.n_cells,
             100 * quality["volume_error"], quality["min_dihedral_deg"], folder)
    return quality


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.io.scans import read_labels
    from cardiotwin.meshing.volume import MeshConfig

    data = {"edge_mm": args.edge_mm, "time_limit_s": args.time_limit}
    if args.base_point or args.base_normal:
        data.update(base_point_mm=args.base_point, base_normal=args.base_normal)
    cfg = load_config(MeshConfig, data, source="cardiotwin mesh")
    source = Path(args.source)
    if Case.is_case(source):
        case = Case.open(source)
        labels_path = case.require_stage("segment") / SEGMENT_LABELS
        if not labels_path.is_file():
            raise CaseError(f"{case.root}: the segment stage has no {SEGMENT_LABELS} (rerun `cardiotwin segment`)")
        with case.stage("mesh", inputs={"labels": labels_path}, config=cfg, force=args.force) as st:
            if st.skipped:
                log.info("%s: mesh unchanged (use --force to rerun)", case.root)
            else:
                st.metrics.update({k: v for k, v in _write_outputs(st.dir, read_labels(labels_path), cfg).items()
                                   if isinstance(v, (int, float))})
        return 0
    if not args.out:
        raise ConfigError("cardiotwin mesh: --out DIR is required when the source is a label file")
    _write_outputs(Path(args.out), read_labels(source), cfg)
    return 0
