"""A command made of sub-commands (``simulate ep``, ``verify land``), each a command module."""

from __future__ import annotations

import argparse
import importlib


def add_subcommands(parser: argparse.ArgumentParser, modules: tuple[str, ...], *, dest: str) -> None:
    """Register each module (NAME, HELP, add_arguments, run) as a sub-command of ``parser``."""
    sub = parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)
    for path in modules:
        module = importlib.import_module(path)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
