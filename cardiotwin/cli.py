"""`cardiotwin` command line: a thin dispatcher over ``cardiotwin.commands``.

Only this module configures logging handlers. There is one error path: a ``CardiotwinError``
or an ``OSError`` (unreadable input, read-only folder, full disk) is printed as one line naming
the file and the problem, with exit code 2 and no traceback; ``--debug`` shows the traceback too.
Before a command computes anything, the locations it will write (``--out``, ``--export``) are
checked for writability.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from cardiotwin import __version__
from cardiotwin.errors import CardiotwinError, ConfigError

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
    "push",
    "export_fhir",
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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
        for attr in _OUTPUT_ARGS:
            if isinstance(getattr(args, attr, None), str):
                check_writable(getattr(args, attr), flag="--" + attr.replace("_", "-"))
        return int(args._run(args) or 0)
    except CardiotwinError as exc:
        return _fail(str(exc), exc.exit_code, debug=args.debug)
    except OSError as exc:
        return _fail(describe_os_error(exc), 2, debug=args.debug)
    except KeyboardInterrupt:
        print("cardiotwin: interrupted", file=sys.stderr)
        return 130


# Arguments that name where a command writes; checked before anything is computed.
_OUTPUT_ARGS = ("out", "export")


def _fail(message: str, code: int, *, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"cardiotwin: error: {one_line(message)}", file=sys.stderr)
    return code


def one_line(message: str, *, limit: int = 2000) -> str:
    """A message on one line (newlines and runs of blanks folded), cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_os_error(exc: OSError) -> str:
    """'PATH: problem' for an OSError (the file it names and the system's reason)."""
    reason = exc.strerror or (errno.errorcode.get(exc.errno, "") if exc.errno else "") or str(exc)
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    if not files:
        return str(exc) or reason
    return f"{' -> '.join(os.fsdecode(f) for f in files)}: {reason}"


def check_writable(path: str | os.PathLike[str], *, flag: str = "--out") -> None:
    """ConfigError unless ``path`` (a file or folder, existing or to be created) can be written.

    The nearest existing folder at or above it must be a writable folder, and an existing
    ``path`` itself must be writable.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.lexists(target):
        if not os.access(target, os.W_OK) or (os.path.isdir(target) and not os.access(target, os.X_OK)):
            raise ConfigError(f"{path}: {flag} is not writable (permission denied)")
        if not os.path.isdir(target):
            target = os.path.dirname(target)
    parent = target
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{path}: {flag} cannot be created ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: {flag} is not writable (no permission to write in {parent})")


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
