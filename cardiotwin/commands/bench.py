"""`cardiotwin bench NAME`: measure speed/accuracy targets and write them to docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.bench import BENCHES, MODEL_BENCHES, bench_function, write_section
from cardiotwin.errors import ConfigError

NAME = "bench"
HELP = "run a benchmark and write its table to docs/BENCHMARKS.md"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"benchmark to run: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--file", default="docs/BENCHMARKS.md", help="where to write the section")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--model", metavar="DIR",
                        help="bench seg / seg_acdc: measure this bundle instead of the shipped one (its own section, "
                             "bench:seg:<folder name>, so the shipped model's section is kept)")


def run(args: argparse.Namespace) -> int:
    func = bench_function(args.name)
    name, kwargs = args.name, {}
    if args.model:
        if args.name not in MODEL_BENCHES:
            raise ConfigError(f"benchmark {args.name!r} does not measure a model; --model is for: "
                              f"{', '.join(MODEL_BENCHES)}")
        name, kwargs = f"{args.name}:{Path(args.model).name}", {"model": args.model}
    section = func(quick=args.quick, **kwargs)
    print(section)
    if not args.no_write:
        path = write_section(name, section, path=args.file)
        log.info("wrote benchmark %s to %s", name, path)
    return 0
