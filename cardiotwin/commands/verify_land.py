"""`cardiotwin verify land --problem 1|2|3 --json OUT.json`: Land et al. 2015 mechanics benchmark."""

from __future__ import annotations

import argparse
import json
import logging

from cardiotwin.errors import ConfigError

NAME = "land"
HELP = "Land et al. 2015 mechanics benchmark (1: beam, 2: passive LV inflation, 3: active contraction)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problem", type=int, choices=(1, 2, 3), required=True)
    parser.add_argument("--resolution", type=float, default=None,
                        help="problem 1: elements across the beam (default 2); problems 2-3: mesh size in mm (default 2.5)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the outputs (mm) to this JSON file")


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.mechanics.land import REFERENCE, solve_land

    if args.resolution is not None and args.resolution <= 0:
        raise ConfigError(f"--resolution must be > 0, got {args.resolution}")
    result = solve_land(args.problem, resolution=args.resolution)
    data = {**result.to_dict(), "reference_range_mm": {k: list(v) for k, v in REFERENCE[args.problem].items()},
            "reference": "Land et al. 2015, Proc R Soc A 471:20150641", "mpi_ranks": MPI.COMM_WORLD.size}
    if MPI.COMM_WORLD.rank == 0:
        if args.json_out:
            write_json_atomic(args.json_out, data)
        print(json.dumps(data, indent=2))
    return 0
