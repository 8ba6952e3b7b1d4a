"""`cardiotwin case new|show`: create a case from a scan, or show a case's stages and provenance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cardiotwin.cases import Case
from cardiotwin.commands._scan_args import add_dicomweb_options, add_scan_options, read_scan_from_args, scan_source

NAME = "case"
HELP = "create a case directory from a scan (new) or show its manifest (show)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="create CASE_DIR holding the scan (geometry and voxels only) and a manifest")
    new.add_argument("case_dir")
    new.add_argument("--scan", help="image file or DICOM folder (or --dicomweb URL --study UID)")
    new.add_argument("--id", dest="case_id", help="case identifier (default: the folder name)")
    add_scan_options(new)
    add_dicomweb_options(new)
    show = sub.add_parser("show", help="print the stages of a case with status, timings and hashes")
    show.add_argument("case_dir")
    show.add_argument("--json", action="store_true", help="print the whole manifest")


def run(args: argparse.Namespace) -> int:
    if args.action == "new" and args.dicomweb:
        folder = scan_source("case new", args, scan=args.scan, out=args.case_dir, modality=args.modality,
                             new_case=True, case_id=args.case_id)
        case = Case.open(args.case_dir)
        rec = case.manifest["inputs"]["scan"]
        print(f"created case {case.root} with {rec['path']} ({rec['modality']}, {'x'.join(map(str, rec['shape']))} "
              f"voxels) and the DICOM series {Path(folder).relative_to(case.root)} from {args.dicomweb}")
        return 0
    if args.action == "new":
        if not args.scan:
            from cardiotwin.errors import ConfigError

            raise ConfigError("case new: give a scan (--scan) or a PACS study (--dicomweb URL --study UID)")
        scan = read_scan_from_args(args.scan, args)  # validate before anything is created
        case = Case.create(args.case_dir, case_id=args.case_id)
        path = case.import_scan(scan)
        print(f"created case {case.root} with {path.relative_to(case.root)} ({scan.modality}, "
              f"{'x'.join(map(str, scan.geometry.shape))} voxels)")
        return 0
    case = Case.open(args.case_dir)
    manifest = case.manifest
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"case {manifest['case_id']} ({case.root}), created {manifest['created']}")
    for name, rec in manifest["inputs"].items():
        print(f"  input {name}: {rec['path']} sha256 {rec['sha256'][:12]} (source {rec['source_name']}, "
              f"sha256 {rec['source_sha256'][:12]})")
    for name, rec in manifest["stages"].items():
        line = f"  stage {name}: {rec.get('status')}"
        if rec.get("status") == "ok":
            line += f", {rec['duration_s']:.1f} s, {len(rec['outputs'])} outputs, ended {rec['ended']}"
        if "last_attempt" in rec:
            line += f" (last attempt {rec['last_attempt']['status']}: {rec['last_attempt']['error'][:80]})"
        print(line)
    return 0
