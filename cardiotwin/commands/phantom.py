"""`cardiotwin phantom`: write a synthetic thorax scan and its ground-truth labels."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.errors import ConfigError
from cardiotwin.io.scans import image_suffix, write_labels, write_scan
from cardiotwin.phantom import make_phantom

NAME = "phantom"
HELP = "write a synthetic CT or MR thorax phantom (OUT) and its labels (OUT_labels)"

log = logging.getLogger(__name__)


def labels_path_for(out: Path) -> Path:
    """out.nii.gz -> out_labels.nii.gz (same folder, same format)."""
    suffix = image_suffix(out)
    return out.with_name(out.name[: -len(suffix)] + "_labels" + suffix)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output image (.nii.gz, .nii, .nrrd, .mha, .mhd); labels go to OUT_labels.<ext>")
    parser.add_argument("--modality", type=str.upper, choices=["CT", "MR"], default="CT")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the phantom is deterministic in it)")
    parser.add_argument("--scar", action="store_true", help="add a transmural LV scar (label 9)")
    parser.add_argument("--lv", choices=["typical", "dilated"], default="typical",
                        help="LV shape range: typical adult, or dilated (heart failure: 58-76 mm diameter, thin wall; "
                             "drawn in a 240 mm field of view)")
    parser.add_argument("--vessels", choices=["short", "thoracic"], default="short",
                        help="great vessels: short (as the sample scans) or thoracic (adult lengths: arch, descending aorta)")
    parser.add_argument("--dicom", metavar="DIR", help="also write the scan as a DICOM series into DIR")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not image_suffix(out):
        raise ConfigError(f"{out}: output must end in .nii.gz, .nii, .nrrd, .mha or .mhd")
    phantom = make_phantom(seed=args.seed, modality=args.modality, scar=args.scar, lv=args.lv, vessels=args.vessels)
    write_scan(phantom.scan, out)
    labels_out = write_labels(phantom.labels, labels_path_for(out))
    if args.dicom:
        from cardiotwin.io.dicom import write_dicom_series

        write_dicom_series(phantom.scan.voxels, phantom.scan.geometry, args.dicom, modality=args.modality)
    print(f"wrote {out} and {labels_out}")
    return 0
