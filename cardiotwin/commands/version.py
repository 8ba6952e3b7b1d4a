"""`cardiotwin version`: cardiotwin and the versions of the numerical stack."""

from __future__ import annotations

import argparse
import json

from cardiotwin.cases import software_versions

NAME = "version"
HELP = "print cardiotwin's version and those of its numerical dependencies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    versions = software_versions()
    if args.json:
        print(json.dumps(versions, indent=2))
    else:
        for name, version in versions.items():
            print(f"{name:22s} {version}")
    return 0
