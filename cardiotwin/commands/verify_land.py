"""`cardiotwin verify land --problem 1|2|3 [--resolution MM | --grid 4x16x24] [--geometry-degree 1|2]
[--element both|taylor-hood|default] [--default-resolution R | --default-grid 8x32x48]
[--no-active-tension-stabilisation] --json OUT.json`.

Land et al. 2015 mechanics benchmark: the Taylor-Hood P2/P1 reference (top-level outputs) and the
twins' default element (``default_element``), each output against the published range.
"""

from __future__ import annotations

import argparse
import json

from cardiotwin.errors import ConfigError

NAME = "land"
HELP = "Land et al. 2015 mechanics benchmark (1: beam, 2: passive LV inflation, 3: active contraction)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problem", type=int, choices=(1, 2, 3), required=True)
    parser.add_argument("--resolution", type=float, default=None,
                        help="problem 1: elements across the beam (default 2); problems 2-3: mesh size in mm (default 2.5)")
    parser.add_argument("--geometry-degree", type=int, choices=(1, 2), default=2,
                        help="problems 2-3: 1 straight-sided tetrahedra, 2 curved endo/epi surfaces (default)")
    parser.add_argument("--grid", default=None, metavar="NWALLxNLONGxNCIRC",
                        help="problems 2-3: structured prolate mesh (e.g. 4x16x24 elements through the wall, "
                             "apex to base, around) instead of the gmsh mesh of --resolution")
    parser.add_argument("--element", choices=("both", "taylor-hood", "default"), default="both",
                        help="Taylor-Hood P2/P1 (the benchmark's incompressible element, on --resolution/--grid), the "
                             "twins' default nodal-pressure P1/P1 element (on --default-resolution), or both (default)")
    parser.add_argument("--default-resolution", type=float, default=None,
                        help="the default element's resolution (as --resolution; default: 2 elements across for "
                             "problem 1, 1.5 mm for problem 2; problem 3 defaults to the prolate grid 8x32x48)")
    parser.add_argument("--default-grid", default=None, metavar="NWALLxNLONGxNCIRC",
                        help="problems 2-3: the default element on a structured prolate mesh instead")
    parser.add_argument("--active-tension-stabilisation", action=argparse.BooleanOptionalAction, default=True,
                        help="the default element's pressure stabilisation sized by the passive shear modulus plus "
                             "the active tension (MechanicsConfig.stabilisation_active_tension, the default); "
                             "--no-active-tension-stabilisation: by the passive modulus alone (problem 3 then "
                             "leaves its range)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the outputs (mm) to this JSON file")


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.mechanics.land import land_benchmark, parse_prolate_grid

    for flag, value in (("--resolution", args.resolution), ("--default-resolution", args.default_resolution)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    data = land_benchmark(
        args.problem, element=args.element, resolution=args.resolution, geometry_degree=args.geometry_degree,
        prolate_grid=parse_prolate_grid(args.grid, problem=args.problem, resolution=args.resolution),
        default_resolution=args.default_resolution,
        default_grid=parse_prolate_grid(args.default_grid, problem=args.problem, resolution=args.default_resolution,
                                        flag="--default-grid", resolution_flag="--default-resolution"),
        stabilisation_active_tension=args.active_tension_stabilisation)
    if MPI.COMM_WORLD.rank == 0:
        if args.json_out:
            write_json_atomic(args.json_out, data)
        print(json.dumps(data, indent=2))
    return 0
