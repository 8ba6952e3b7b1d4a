"""`cardiotwin simulate ep|em ...`: run the electrophysiology or electromechanics stage."""

from __future__ import annotations

import argparse

from cardiotwin.commands._group import add_subcommands

NAME = "simulate"
HELP = "run a simulation stage on a mesh or case (ep: electrophysiology, em: electromechanics)"

# Sub-command modules, each with NAME, HELP, add_arguments, run.
SUBCOMMANDS: tuple[str, ...] = ("cardiotwin.commands.simulate_em", "cardiotwin.commands.simulate_ep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, SUBCOMMANDS, dest="model_kind")


def run(args: argparse.Namespace) -> int:  # replaced by the sub-command's run via set_defaults
    raise AssertionError("unreachable: a sub-command is required")
