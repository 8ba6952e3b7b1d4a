"""`cardiotwin info SCAN`: geometry, modality, intensity statistics and sha256 of a scan."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cardiotwin.commands._scan_args import add_scan_options, read_scan_from_args
from cardiotwin.types import Scan

NAME = "info"
HELP = "describe a scan (NIfTI, NRRD, MHA/MHD file or DICOM folder): geometry, modality, intensities"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scan", help="image file or DICOM series folder")
    add_scan_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def scan_info(scan: Scan) -> dict:
    g = scan.geometry
    v = scan.voxels
    p1, p50, p99 = (float(x) for x in np.percentile(v, [1, 50, 99]))
    return {
        "source": scan.source,
        "modality": scan.modality,
        "sha256": scan.sha256,
        "shape": list(g.shape),
        "spacing_mm": list(g.spacing_mm),
        "origin_mm": list(g.origin_mm),
        "direction": [list(g.direction[i : i + 3]) for i in (0, 3, 6)],
        "coordinate_system": "LPS",
        "extent_mm": [float(n * s) for n, s in zip(g.shape, g.spacing_mm)],
        "intensity": {
            "min": float(v.min()),
            "max": float(v.max()),
            "mean": float(v.mean()),
            "std": float(v.std()),
            "p01": p1,
            "median": p50,
            "p99": p99,
        },
    }


def run(args: argparse.Namespace) -> int:
    info = scan_info(read_scan_from_args(args.scan, args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=info["source"], show_header=False)
    for key in ("modality", "shape", "spacing_mm", "origin_mm", "direction", "extent_mm", "sha256"):
        value = info[key]
        if isinstance(value, list):
            value = "  ".join(str(round(x, 4) if isinstance(x, float) else x) for x in value)
        table.add_row(key, str(value))
    it = info["intensity"]
    table.add_row("intensity", f"min {it['min']:.1f}  median {it['median']:.1f}  max {it['max']:.1f}  "
                               f"mean {it['mean']:.1f} ± {it['std']:.1f}")
    Console().print(table)
    return 0
