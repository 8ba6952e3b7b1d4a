"""Options shared by commands that read a scan."""

from __future__ import annotations

import argparse

from cardiotwin.io.scans import read_scan
from cardiotwin.types import Scan


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=["CT", "MR"], type=str.upper, help="override the detected modality")
    parser.add_argument("--series-uid", help="DICOM folder with several series: the SeriesInstanceUID to read")
    parser.add_argument("--frame", type=int, help="4D image or cine series: the time frame to read (0-based)")


def read_scan_from_args(path: str, args: argparse.Namespace) -> Scan:
    return read_scan(path, modality=args.modality, series_uid=args.series_uid, frame=args.frame)
