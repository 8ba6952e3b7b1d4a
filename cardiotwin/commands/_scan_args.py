"""Options shared by commands that read a scan: a local file or folder, or a series pulled from a PACS."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardiotwin.io.scans import read_scan
from cardiotwin.types import Scan


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=["CT", "MR"], type=str.upper, help="override the detected modality")
    parser.add_argument("--series-uid", help="DICOM folder with several series: the SeriesInstanceUID to read")
    parser.add_argument("--frame", type=int, help="4D image or cine series: the time frame to read (0-based)")


def add_dicomweb_options(parser: argparse.ArgumentParser) -> None:
    """--dicomweb URL --study UID [--series UID]: pull the scan from a PACS into the case instead of --scan.
    Credentials come from CARDIOTWIN_DICOMWEB_TOKEN[_FILE] or CARDIOTWIN_DICOMWEB_USER/_PASSWORD[_FILE]."""
    group = parser.add_argument_group("pull the scan from a PACS (DICOMweb) instead of a local file")
    group.add_argument("--dicomweb", metavar="URL", help="DICOMweb root of the PACS (e.g. http://pacs:8042/dicom-web); "
                       "credentials from CARDIOTWIN_DICOMWEB_TOKEN[_FILE] or CARDIOTWIN_DICOMWEB_USER with "
                       "CARDIOTWIN_DICOMWEB_PASSWORD[_FILE]")
    group.add_argument("--study", metavar="STUDY_UID", help="with --dicomweb: the StudyInstanceUID")
    group.add_argument("--series", metavar="SERIES_UID", help="with --dicomweb: the SeriesInstanceUID (default: the "
                                                             "study's one CT or MR series)")


def scan_source(parser_name: str, args: argparse.Namespace, *, scan: str | None, out: str,
                modality: str | None = None, new_case: bool = False, case_id: str | None = None) -> str:
    """The scan path to read: ``scan``, or the DICOM folder of the series pulled into the case ``out``."""
    from cardiotwin.errors import ConfigError

    if args.dicomweb is None:
        if args.study or args.series:
            raise ConfigError(f"{parser_name}: --study and --series need --dicomweb URL")
        if not scan:
            raise ConfigError(f"{parser_name}: give a scan (--scan) or a PACS study (--dicomweb URL --study UID)")
        return scan
    if scan:
        raise ConfigError(f"{parser_name}: give either a scan or --dicomweb, not both")
    if not args.study:
        raise ConfigError(f"{parser_name}: --dicomweb needs --study STUDY_UID")
    from cardiotwin.io.scans import image_suffix

    if image_suffix(Path(out)):
        raise ConfigError(f"{parser_name}: --dicomweb stores the series in a case: the output must be a case folder, "
                          f"not {out}")
    from cardiotwin.interop.pull import pull_series

    _, folder = pull_series(args.dicomweb, args.study, out=Path(out), series_uid=args.series, modality=modality,
                            frame=getattr(args, "frame", None), new_case=new_case, case_id=case_id)
    return str(folder)


def read_scan_from_args(path: str, args: argparse.Namespace) -> Scan:
    return read_scan(path, modality=args.modality, series_uid=args.series_uid, frame=args.frame)
