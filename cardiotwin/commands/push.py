"""`cardiotwin push CASE --dicomweb URL`: store a case's results in its source study (STOW-RS)."""

from __future__ import annotations

import argparse
import logging

NAME = "push"
HELP = ("store the case's DICOM SEG, evidence report and clinical summary (Encapsulated PDF) and key numbers "
        "(TID 1500 SR) in the PACS study the scan was pulled from")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory created with --dicomweb URL --study UID")
    parser.add_argument("--dicomweb", required=True, metavar="URL",
                        help="DICOMweb root of the PACS; credentials from CARDIOTWIN_DICOMWEB_TOKEN[_FILE] or "
                             "CARDIOTWIN_DICOMWEB_USER with CARDIOTWIN_DICOMWEB_PASSWORD[_FILE]")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.interop.push import push_case

    pushed, skipped = push_case(args.case, args.dicomweb)
    for why in skipped:
        log.warning("not pushed: %s", why)
    for p in pushed:
        print(f"{p.kind:9s} {p.status:16s} series {p.series_uid} instance {p.sop_uid}")
    return 0
