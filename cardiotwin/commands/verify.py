"""`cardiotwin verify [CASE]`: code-verification benchmarks (Niederer slab, Land problems, ...)."""

from __future__ import annotations

import argparse

from cardiotwin.commands._group import add_subcommands

NAME = "verify"
HELP = "run code-verification benchmarks and store their results"

# Sub-command modules, each with NAME, HELP, add_arguments, run.
SUBCOMMANDS: tuple[str, ...] = ("cardiotwin.commands.verify_land",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, SUBCOMMANDS, dest="benchmark")


def run(args: argparse.Namespace) -> int:  # replaced by the sub-command's run via set_defaults
    raise AssertionError("unreachable: a sub-command is required")
