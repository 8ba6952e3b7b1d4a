"""`cardiotwin verify`: code-verification benchmarks (Niederer slab, Land problems, MMS, eikonal, ...).

``cardiotwin verify`` (or ``verify all``) runs every registered check of
``cardiotwin.verification.registry`` (``--suite ci``: the quick subset; ``--suite full``: all at
benchmark sizes) and stores the results with software versions and timestamps in a JSON that
the evidence report cites: ``--out PATH`` (default ``verification.json``) or, with ``--case
CASE``, the case's ``verify/verification.json``. ``verify NAME`` runs one benchmark module.
"""

from __future__ import annotations

import argparse
import importlib

NAME = "verify"
HELP = "run code-verification benchmarks and store their results"

# Sub-command modules, each with NAME, HELP, add_arguments, run.
SUBCOMMANDS: tuple[str, ...] = ("cardiotwin.commands.verify_land", "cardiotwin.commands.verify_niederer")


def _add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", choices=("ci", "full"), default="ci",
                        help="ci: quick subset at small sizes (default); full: every check at benchmark sizes")
    parser.add_argument("--check", action="append", dest="checks", metavar="NAME",
                        help="run only this registered check (repeatable); see --list")
    parser.add_argument("--list", action="store_true", help="list the registered checks and exit")
    parser.add_argument("--out", default=None, help="results JSON (default: verification.json, or CASE/verify/)")
    parser.add_argument("--case", default=None, help="store the results in this case's verify/ stage")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_suite_arguments(parser)
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    p = sub.add_parser("all", help="run every registered verification check (the default)",
                       description="run every registered verification check and store the results")
    _add_suite_arguments(p)
    p.set_defaults(_run=run)
    for path in SUBCOMMANDS:
        module = importlib.import_module(path)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)


def run(args: argparse.Namespace) -> int:
    """Run the suite; exit 0 when no check failed or errored (unavailable checks are reported)."""
    from mpi4py import MPI

    from cardiotwin.verification.registry import registered_checks, summary_counts
    from cardiotwin.verification.store import run_and_store

    if args.list:
        for name, check in sorted(registered_checks().items()):
            print(f"{name:20s} {'ci ' if check.in_ci else '   '} {check.title}")
        return 0
    results, path = run_and_store(suite=args.suite, names=args.checks, out=args.out, case=args.case)
    counts = summary_counts(results)
    if MPI.COMM_WORLD.rank == 0:
        for rec in results["checks"]:
            print(f"{rec['status']:12s} {rec['name']:20s} {rec['seconds']:8.1f} s  {rec['message']}")
        print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
              f"{counts['unavailable']} unavailable; results in {path}")
    return 1 if counts["fail"] or counts["error"] else 0
