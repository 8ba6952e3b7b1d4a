"""`cardiotwin export-fhir CASE --out BUNDLE.json [--fhir-server URL]`: the case's results as FHIR R4."""

from __future__ import annotations

import argparse
import logging

NAME = "export-fhir"
HELP = ("write the case's results as a FHIR R4 Bundle (DiagnosticReport with the PDF, coded Observations, the lead "
        "recommendation); --fhir-server also posts it as a transaction")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory")
    parser.add_argument("--out", required=True, help="BUNDLE.json to write")
    parser.add_argument("--subject", metavar="REFERENCE",
                        help="FHIR reference of the patient on the receiving server (e.g. Patient/123); the case "
                             "itself holds no patient identity")
    parser.add_argument("--fhir-server", metavar="URL",
                        help="FHIR R4 base URL to post the bundle to as a transaction; credentials from "
                             "CARDIOTWIN_FHIR_TOKEN[_FILE] or CARDIOTWIN_FHIR_USER with CARDIOTWIN_FHIR_PASSWORD[_FILE]")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.interop.fhir_export import export_case, post_transaction

    path, data = export_case(args.case, args.out, subject=args.subject)
    print(f"wrote {path} ({len(data['entry'])} resources)")
    if args.fhir_server:
        locations = post_transaction(data, args.fhir_server)
        for loc in locations:
            print(f"created {loc}")
    return 0
