"""`cardiotwin` command line: a thin dispatcher over ``cardiotwin.commands``.

Only this module configures logging handlers. Errors derived from ``CardiotwinError`` are
printed as one line naming the file and the problem, with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cardiotwin import __version__
from cardiotwin.errors import CardiotwinError

# Command modules under cardiotwin/commands/, in the order `--help` lists them.
COMMANDS: tuple[str, ...] = (
    "version",
    "info",
    "phantom",
    "case",
    "simulate",
    "verify",
    "bench",
    "segment",
    "train_seg",
    "mesh",
    "fibers",
    "calibrate",
    "report",
    "view",
    "crt",
    "run",
)

log = logging.getLogger("cardiotwin")


def _configure_logging(verbosity: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiotwin",
        description="Patient-specific cardiac digital twin: scan -> labels -> mesh -> fibres -> "
        "electromechanics -> virtual CRT -> report.",
    )
    parser.add_argument("--version", action="version", version=f"cardiotwin {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"cardiotwin.commands.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _configure_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args._run(args) or 0)
    except CardiotwinError as exc:
        print(f"cardiotwin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cardiotwin: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    # h5py's HDF5 must load before the dolfinx wheel's (a stage may import dolfinx first); the other
    # order makes h5py bind to the wheel's older library and fail on datatypes (viewer deformation)
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    sys.exit(main())


if __name__ == "__main__":
    entry()
