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
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, for a smoke run; written to its own section (bench:NAME:quick), so "
                             "the full run's section is kept")
    parser.add_argument("--file", default="docs/BENCHMARKS.md", help="where to write the section")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--model", metavar="DIR",
                        help="bench seg / seg_acdc: measure this bundle instead of the shipped one (its own section, "
                             "bench:seg:<folder name>, so the shipped model's section is kept)")
    parser.add_argument("--cases", nargs="+", metavar="TEXT",
                        help="bench mesh: run only the sweep cases whose name contains one of these texts (rows of "
                             "other cases measured earlier by the same mesher code are kept in the section)")
    parser.add_argument("--jobs", type=int, default=1, help="bench mesh: sweep meshes at a time (one thread each)")
    parser.add_argument("--section-only", action="store_true",
                        help="bench mesh: measure nothing, build the section from the rows already measured")


def run(args: argparse.Namespace) -> int:
    func = bench_function(args.name)
    name, kwargs = args.name, {}
    if args.model:
        if args.name not in MODEL_BENCHES:
            raise ConfigError(f"benchmark {args.name!r} does not measure a model; --model is for: "
                              f"{', '.join(MODEL_BENCHES)}")
        name, kwargs = f"{args.name}:{Path(args.model).name}", {"model": args.model}
    mesh_options = {"cases": args.cases, "jobs": args.jobs if args.jobs != 1 else None,
                    "run": False if args.section_only else None}
    mesh_options = {k: v for k, v in mesh_options.items() if v is not None}
    if mesh_options and args.name != "mesh":
        raise ConfigError(f"--cases, --jobs and --section-only are options of `bench mesh`, not of {args.name!r}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.quick:
        name += ":quick"
    section = func(quick=args.quick, **kwargs, **mesh_options)
    print(section)
    if not args.no_write:
        path = write_section(name, section, path=args.file)
        log.info("wrote benchmark %s to %s", name, path)
    return 0
