"""`cardiotwin bench NAME`: measure speed/accuracy targets and write them to docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
from pathlib import Path

from cardiotwin.bench import write_section
from cardiotwin.errors import ConfigError

NAME = "bench"
HELP = "run a benchmark and write its table to docs/BENCHMARKS.md"

# name -> "module:function"; the function takes (*, quick: bool) and returns a markdown section
# (benchmarks of a model also take model: a bundle folder, default the shipped one).
BENCHES: dict[str, str] = {
    "em": "cardiotwin.mechanics.bench:bench_em",
    "ep": "cardiotwin.electrophysiology.bench:bench_ep",
    "mesh": "cardiotwin.meshing.bench:bench_mesh",
    "crt": "cardiotwin.therapy.bench:bench_crt",
    "crt_real": "cardiotwin.therapy.bench:bench_crt_real",
    "crt_real_mr": "cardiotwin.therapy.bench:bench_crt_real_mr",
    "viewer": "cardiotwin.viewer.bench:run_bench",
    "seg": "cardiotwin.segmentation.bench:run_seg_bench",
    "seg_acdc": "cardiotwin.segmentation.bench_cine:run_acdc_bench",
}

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"benchmark to run: {', '.join(BENCHES) or '(none yet)'}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--file", default="docs/BENCHMARKS.md", help="where to write the section")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--model", metavar="DIR",
                        help="bench seg / seg_acdc: measure this bundle instead of the shipped one (its own section, "
                             "bench:seg:<folder name>, so the shipped model's section is kept)")


def run(args: argparse.Namespace) -> int:
    if args.name not in BENCHES:
        raise ConfigError(f"unknown benchmark {args.name!r}; choose one of: {', '.join(BENCHES)}")
    module_name, func_name = BENCHES[args.name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    name, kwargs = args.name, {}
    if args.model:
        if "model" not in inspect.signature(func).parameters:
            raise ConfigError(f"benchmark {args.name!r} does not measure a model; --model is for: seg, seg_acdc")
        name, kwargs = f"{args.name}:{Path(args.model).name}", {"model": args.model}
    section = func(quick=args.quick, **kwargs)
    print(section)
    if not args.no_write:
        path = write_section(name, section, path=args.file)
        log.info("wrote benchmark %s to %s", name, path)
    return 0
