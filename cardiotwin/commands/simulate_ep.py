"""`cardiotwin simulate ep CASE_OR_MESH --model eikonal|monodomain [--pace X,Y,Z[@T] ...] [--out DIR]`.

Input: a case (uses ``fibers/mesh.vtu``; outputs go into the case's ``ep/`` stage, cached and
committed atomically), a folder holding ``mesh.vtu`` with point data ``f0``, or the .vtu itself
(then ``--out`` is required). The stage and its outputs: ``electrophysiology.stage``.
"""

from __future__ import annotations

import argparse

NAME = "ep"
HELP = "simulate electrophysiology (eikonal or monodomain) on a case or a mesh with fibres"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="case directory, folder with mesh.vtu (f0 point data) or the .vtu file")
    parser.add_argument("--model", choices=("eikonal", "monodomain"), default="eikonal")
    parser.add_argument("--pace", action="append", metavar="X,Y,Z[@T]",
                        help="pacing site in mm, optional delay in ms (repeatable); default: sinus-like "
                             "endocardial breakthrough sites")
    parser.add_argument("--out", help="output folder (default for a case: its ep/ stage)")
    parser.add_argument("--ionic", choices=("ttp06", "ms"), default="ms", help="monodomain ionic model")
    parser.add_argument("--dt", type=float, default=0.05, help="monodomain time step (ms)")
    parser.add_argument("--t-end", type=float, default=150.0, help="monodomain simulated time (ms)")
    parser.add_argument("--snapshot-interval", type=float, default=0.0,
                        help="monodomain: write Vm every this many ms (vm.pvd + vm/*.vtu; 0: none)")
    parser.add_argument("--v-l", type=float, default=0.6, help="eikonal fibre speed (mm/ms)")
    parser.add_argument("--v-t", type=float, default=0.6 / 2.75, help="eikonal cross-fibre speed (mm/ms)")
    parser.add_argument("--radius", type=float, default=1.5, help="pacing electrode radius (mm)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--ecg", action="store_true", help="also write a 12-lead pseudo-ECG (WFDB + PNG)")
    parser.add_argument("--force", action="store_true", help="case: rerun even if inputs and options are unchanged")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.electrophysiology.stage import EPStageConfig, ep_case
    from cardiotwin.stage_io import open_target

    cfg = EPStageConfig(model=args.model, pace=tuple(args.pace) if args.pace else None, ionic=args.ionic, dt=args.dt,
                        t_end=args.t_end, snapshot_interval=args.snapshot_interval, v_l=args.v_l, v_t=args.v_t,
                        radius=args.radius, device=args.device)
    ep_case(open_target(args.path), cfg, out=args.out, ecg=args.ecg, force=args.force)
    return 0
