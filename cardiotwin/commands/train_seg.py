"""`cardiotwin train-seg`: train the heart segmentation network on synthetic data, optionally export a bundle."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.config import load_config, read_yaml

NAME = "train-seg"
HELP = "train the segmentation network on domain-randomised synthetic data (resumable) and export a bundle"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/seg_train.yaml", help="training config (YAML)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, summary.json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (same config)")
    parser.add_argument("--steps", type=int, help="override the number of steps of the config")
    parser.add_argument("--export", metavar="BUNDLE_DIR",
                        help="after training, write best.pt as a bundle here (a slice network, spatial_dims 2, "
                             "is added to the existing bundle there)")
    parser.add_argument("--export-only", action="store_true", help="skip training; export OUT/best.pt to --export")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for log files)")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.segmentation.bundle import export_bundle, export_slice_model
    from cardiotwin.segmentation.train import TrainConfig, train

    data = read_yaml(args.config)
    if args.steps is not None:
        data["steps"] = args.steps
    cfg = load_config(TrainConfig, data, source=str(args.config))
    out = Path(args.out)
    if not args.export_only:
        summary = train(cfg, out_dir=out, resume=args.resume, progress=not args.no_progress)
        log.info("trained %d steps in %.0f s; best validation mean Dice %.3f", summary["steps"],
                 summary["elapsed_s"], summary["best_val_mean_dice"])
    if args.export and cfg.spatial_dims == 2:  # a slice network joins an existing bundle
        path = export_slice_model(out, Path(args.export), config_path=Path(args.config))
        log.info("added the slice network to bundle %s", path)
    elif args.export:
        path = export_bundle(out, Path(args.export), config_path=Path(args.config))
        log.info("exported bundle to %s", path)
    return 0
