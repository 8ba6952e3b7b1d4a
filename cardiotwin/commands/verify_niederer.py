"""`cardiotwin verify niederer --dx 0.5 --dt 0.05 --json OUT.json`: the Niederer 2011 EP slab."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cardiotwin.io.atomic import write_json_atomic

NAME = "niederer"
HELP = "Niederer 2011 monodomain slab benchmark (TTP06 epi); activation times at P1..P9"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dx", type=float, default=0.5, help="mesh spacing (mm): 0.5, 0.2 or 0.1")
    parser.add_argument("--dt", type=float, default=0.05, help="time step (ms)")
    parser.add_argument("--t-end", type=float, default=100.0, help="simulated time (ms)")
    parser.add_argument("--mass", choices=("consistent", "lumped"), default="consistent")
    parser.add_argument("--splitting", choices=("godunov", "strang"), default="godunov")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--backend", choices=("auto", "fused", "torch"), default="auto",
                        help="auto: compiled CPU kernels on the CPU, torch on CUDA; torch: tensor operations everywhere")
    parser.add_argument("--json", dest="json_out", help="write {\"P1\": ms, ..., \"P9\": ms} here")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig
    from cardiotwin.electrophysiology.verify import NIEDERER_REFERENCE_MS, run_niederer

    cfg = MonodomainConfig(mass=args.mass, splitting=args.splitting, device=args.device, precision=args.precision,
                           backend=args.backend)
    times, _ = run_niederer(dx_mm=args.dx, dt_ms=args.dt, t_end_ms=args.t_end, cfg=cfg)
    for name, t in times.items():
        print(f"{name}: {t:8.3f} ms")
    ref = NIEDERER_REFERENCE_MS.get((args.dx, args.dt))
    if ref:
        print(f"fenicsx-beat P1 reference: P8 {ref[0]} ms, P9 {ref[1]} ms")
    if args.json_out:
        write_json_atomic(Path(args.json_out), {k: (None if v != v else v) for k, v in times.items()})
        log.info("wrote %s", args.json_out)
    return 0
