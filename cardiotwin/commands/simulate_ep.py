"""`cardiotwin simulate ep MESH_DIR --model eikonal|monodomain --pace X,Y,Z[@T] ... --out DIR`.

MESH_DIR holds ``mesh.vtu`` with point data ``f0`` (or pass the .vtu itself). Writes
DIR/activation.vtu (point data ``activation_time_ms``, NaN where never activated, plus the
input fields), DIR/ep.json (model, stimuli, timings, activation summary, QRS duration) and, with
``--ecg``, DIR/ecg.hea/.dat (WFDB) and DIR/ecg.png.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from cardiotwin.errors import CaseError, ConfigError

NAME = "ep"
HELP = "simulate electrophysiology (eikonal or monodomain) on a mesh with fibres"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder with mesh.vtu (f0 point data) or the .vtu file")
    parser.add_argument("--model", choices=("eikonal", "monodomain"), default="eikonal")
    parser.add_argument("--pace", action="append", required=True, metavar="X,Y,Z[@T]",
                        help="pacing site in mm, optional delay in ms (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ionic", choices=("ttp06", "ms"), default="ms", help="monodomain ionic model")
    parser.add_argument("--dt", type=float, default=0.05, help="monodomain time step (ms)")
    parser.add_argument("--t-end", type=float, default=150.0, help="monodomain simulated time (ms)")
    parser.add_argument("--v-l", type=float, default=0.6, help="eikonal fibre speed (mm/ms)")
    parser.add_argument("--v-t", type=float, default=0.6 / 2.75, help="eikonal cross-fibre speed (mm/ms)")
    parser.add_argument("--radius", type=float, default=1.5, help="pacing electrode radius (mm)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--ecg", action="store_true", help="also write a 12-lead pseudo-ECG (WFDB + PNG)")


def run(args: argparse.Namespace) -> int:
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
    from cardiotwin.electrophysiology.operators import NIEDERER_D_L, NIEDERER_D_T
    from cardiotwin.electrophysiology.stimulus import parse_pace
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import read_mesh, write_mesh

    src = Path(args.path)
    vtu = src / "mesh.vtu" if src.is_dir() else src
    if not vtu.exists():
        raise CaseError(f"{vtu}: no mesh (expected MESH_DIR/mesh.vtu written by `cardiotwin mesh`)")
    mesh = read_mesh(vtu)
    if "f0" not in mesh.point_data and "f0" not in mesh.cell_data:
        raise CaseError(f"{vtu}: no fibre field 'f0' (run `cardiotwin fibers` first)")
    stimuli = [parse_pace(p, radius_mm=args.radius) for p in args.pace]
    lo, hi = mesh.points.min(axis=0), mesh.points.max(axis=0)
    for s in stimuli:
        d = np.min(np.linalg.norm(mesh.points - np.asarray(s.centre_mm), axis=1))
        if d > max(args.radius, 2.0):
            raise ConfigError(f"--pace {s.centre_mm}: {d:.1f} mm from the nearest node of {vtu} "
                              f"(bounds {lo.round(1).tolist()} - {hi.round(1).tolist()} mm): outside the mesh")
    if args.model == "eikonal":
        cfg = EikonalConfig(v_l=args.v_l, v_t=args.v_t, device=args.device)
        res = simulate_eikonal(mesh, [(s.centre_mm, s.start_ms) for s in stimuli], cfg=cfg, radius_mm=args.radius)
    else:
        mcfg = MonodomainConfig(dt=args.dt, t_end=args.t_end, ionic_model=args.ionic, device=args.device)
        res = simulate_monodomain(mesh, stimuli, cfg=mcfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    act = res.activation_times_ms
    fields = {"activation_time_ms": act}
    if res.repolarisation_times_ms is not None:
        fields["repolarisation_time_ms"] = res.repolarisation_times_ms
    write_mesh(mesh.with_fields(point_data=fields), out / "activation.vtu")
    summary = {
        "model": res.model, "mesh": str(vtu), "n_points": mesh.n_points, "stimuli": list(res.stimuli),
        "activation_ms": {"min": float(np.nanmin(act)), "max": float(np.nanmax(act)),
                          "mean": float(np.nanmean(act)), "not_activated": int(np.isnan(act).sum())},
        "metadata": {k: v for k, v in res.metadata.items() if isinstance(v, (int, float, str))},
    }
    if args.ecg:
        from cardiotwin.electrophysiology.ecg import ecg_from_activation, qrs_duration_ms, write_ecg

        times, leads = ecg_from_activation(mesh, act, d_l=NIEDERER_D_L, d_t=NIEDERER_D_T)
        write_ecg(out, times, leads)
        summary["qrs_duration_ms"] = qrs_duration_ms(times, leads)
    write_json_atomic(out / "ep.json", summary)
    log.info("EP (%s): activation %.1f-%.1f ms; outputs in %s", res.model, summary["activation_ms"]["min"],
             summary["activation_ms"]["max"], out)
    return 0
