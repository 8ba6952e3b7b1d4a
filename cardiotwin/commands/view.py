"""`cardiotwin view CASE`: browser review of a case (local server), or `--export review.html`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.errors import CaseError, ConfigError

NAME = "view"
HELP = "review a case in the browser (local server on 127.0.0.1), or export a self-contained HTML page"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any free port)")
    parser.add_argument("--export", metavar="HTML", help="write a self-contained review page here instead of serving")
    parser.add_argument("--max-voxels", type=int, default=128, help="slice resolution cap per axis (default 128)")
    parser.add_argument("--include-identifiers", action="store_true",
                        help="show the case id (default: pseudonymised)")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.viewer.scene import SceneOptions

    case = Path(args.case)
    if not (case / "manifest.json").is_file():
        raise CaseError(f"{case}: not a case directory (no manifest.json)")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    if args.max_voxels < 8:
        raise ConfigError(f"--max-voxels {args.max_voxels}: must be at least 8")
    opts = SceneOptions(max_voxels_per_axis=args.max_voxels, include_identifiers=args.include_identifiers)
    if args.export:
        from cardiotwin.viewer.export import export_review

        out = export_review(case, args.export, opts=opts)
        print(f"wrote {out}")
        return 0
    from cardiotwin.viewer.app import serve

    port = args.port
    if port == 0:  # pick a free port now, so that the address printed is the one served
        import socket

        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as sock:
            sock.bind((args.host, 0))
            port = int(sock.getsockname()[1])
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can read the case", args.host)
    print(f"cardiotwin review of {case} on http://{args.host}:{port}/  (Ctrl-C to stop)", flush=True)
    serve(case, host=args.host, port=port, opts=opts)
    return 0
