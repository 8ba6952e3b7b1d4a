"""`cardiotwin simulate ep CASE_OR_MESH --model eikonal|monodomain [--pace X,Y,Z[@T] ...] [--out DIR]`.

Input: a case (uses ``fibers/mesh.vtu``; outputs go into the case's ``ep/`` stage, cached and
committed atomically), a folder holding ``mesh.vtu`` with point data ``f0``, or the .vtu itself
(then ``--out`` is required). Without ``--pace`` the activation starts at sinus-like endocardial
breakthrough sites (``electrophysiology.sources.sinus_sources``; needs the fibres stage's UVC and
AHA fields). Writes activation.vtu (point data ``activation_time_ms``, NaN where never activated,
plus the input fields), ep.json (model, stimuli, timings, activation summary, QRS duration) and,
with ``--ecg`` (always for a case), ecg.hea/.dat (WFDB) and ecg.png. Monodomain with
``--snapshot-interval MS`` also writes the transmembrane potential over time as a ParaView
collection vm.pvd of vm/vm_NNNNNN.vtu (point data ``vm_mV``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.errors import CaseError, ConfigError

NAME = "ep"
HELP = "simulate electrophysiology (eikonal or monodomain) on a case or a mesh with fibres"

log = logging.getLogger(__name__)


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


def _options(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("model", "pace", "ionic", "dt", "t_end", "snapshot_interval", "v_l", "v_t", "radius", "device")
    return {k: getattr(args, k) for k in keys}


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.io.meshes import read_mesh

    src = Path(args.path)
    if Case.is_case(src):
        case = Case.open(src)
        vtu = case.require_stage("fibers") / "mesh.vtu"
        if not vtu.is_file():
            raise CaseError(f"{vtu}: the fibers stage wrote no mesh.vtu")
        if args.out:
            _simulate(read_mesh(vtu), vtu, args, Path(args.out), ecg=True)
            return 0
        with case.stage("ep", inputs={"mesh": vtu}, config=_options(args), force=args.force) as st:
            if st.skipped:
                log.info("ep: inputs and options unchanged, nothing to do (use --force to rerun)")
                return 0
            summary = _simulate(read_mesh(vtu), vtu, args, st.dir, ecg=True)
            st.metrics.update({"total_activation_ms": summary["activation_ms"]["max"] - summary["activation_ms"]["min"],
                               "qrs_duration_ms": summary.get("qrs_duration_ms")})
        return 0
    vtu = src / "mesh.vtu" if src.is_dir() else src
    if not vtu.exists():
        raise CaseError(f"{vtu}: no mesh (expected MESH_DIR/mesh.vtu written by `cardiotwin mesh`, or a case)")
    if not args.out:
        raise ConfigError(f"{src}: not a case; give --out DIR for the results")
    _simulate(read_mesh(vtu), vtu, args, Path(args.out), ecg=args.ecg)
    return 0


def _simulate(mesh, vtu: Path, args: argparse.Namespace, out: Path, *, ecg: bool) -> dict[str, Any]:  # noqa: ANN001
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
    from cardiotwin.electrophysiology.operators import NIEDERER_D_L, NIEDERER_D_T
    from cardiotwin.electrophysiology.sources import sinus_sources
    from cardiotwin.electrophysiology.stimulus import Stimulus, parse_pace
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import write_mesh

    if "f0" not in mesh.point_data and "f0" not in mesh.cell_data:
        raise CaseError(f"{vtu}: no fibre field 'f0' (run `cardiotwin fibers` first)")
    if args.snapshot_interval < 0:
        raise ConfigError(f"--snapshot-interval must be >= 0 ms, got {args.snapshot_interval}")
    if args.snapshot_interval and args.model != "monodomain":
        raise ConfigError("--snapshot-interval writes the monodomain Vm; the eikonal model has none")
    if args.pace:
        stimuli = [parse_pace(p, radius_mm=args.radius) for p in args.pace]
    else:
        try:
            sites = sinus_sources(mesh)
        except ValueError as exc:
            raise CaseError(f"{vtu}: no --pace given and no sinus-like sources: {exc}") from None
        stimuli = [Stimulus(kind="point", centre_mm=xyz, radius_mm=args.radius, start_ms=t) for xyz, t in sites]
    lo, hi = mesh.points.min(axis=0), mesh.points.max(axis=0)
    for s in stimuli:
        d = np.min(np.linalg.norm(mesh.points - np.asarray(s.centre_mm), axis=1))
        if d > max(args.radius, 2.0):
            raise ConfigError(f"--pace {s.centre_mm}: {d:.1f} mm from the nearest node of {vtu} "
                              f"(bounds {lo.round(1).tolist()} - {hi.round(1).tolist()} mm): outside the mesh")
    out.mkdir(parents=True, exist_ok=True)
    if args.model == "eikonal":
        cfg = EikonalConfig(v_l=args.v_l, v_t=args.v_t, device=args.device)
        res = simulate_eikonal(mesh, [(s.centre_mm, s.start_ms) for s in stimuli], cfg=cfg, radius_mm=args.radius)
    else:
        mcfg = MonodomainConfig(dt=args.dt, t_end=args.t_end, ionic_model=args.ionic, device=args.device,
                                snapshot_interval=args.snapshot_interval)
        writer = _VmWriter(mesh, out) if args.snapshot_interval > 0 else None
        try:
            res = simulate_monodomain(mesh, stimuli, cfg=mcfg, on_snapshot=writer.write if writer else None)
        finally:
            if writer:
                writer.close()
    act = res.activation_times_ms
    fields = {"activation_time_ms": act}
    if res.repolarisation_times_ms is not None:
        fields["repolarisation_time_ms"] = res.repolarisation_times_ms
    write_mesh(mesh.with_fields(point_data=fields), out / "activation.vtu")
    summary: dict[str, Any] = {
        "model": res.model, "mesh": _case_relative(vtu), "n_points": mesh.n_points, "stimuli": list(res.stimuli),
        "activation_ms": {"min": float(np.nanmin(act)), "max": float(np.nanmax(act)),
                          "mean": float(np.nanmean(act)), "not_activated": int(np.isnan(act).sum())},
        "metadata": {k: v for k, v in res.metadata.items() if isinstance(v, (int, float, str))},
    }
    if args.snapshot_interval > 0:
        summary["vm_snapshots"] = {"file": "vm.pvd", "interval_ms": args.snapshot_interval}
    if ecg:
        from cardiotwin.electrophysiology.ecg import ecg_from_activation, qrs_duration_ms, write_ecg

        times, leads = ecg_from_activation(mesh, act, d_l=NIEDERER_D_L, d_t=NIEDERER_D_T)
        write_ecg(out, times, leads)
        summary["qrs_duration_ms"] = qrs_duration_ms(times, leads)
    write_json_atomic(out / "ep.json", summary)
    log.info("EP (%s): activation %.1f-%.1f ms; outputs in %s", res.model, summary["activation_ms"]["min"],
             summary["activation_ms"]["max"], out)
    return summary


class _VmWriter:
    """Vm snapshots as one VTU per frame under vm/ plus a ParaView collection vm.pvd (plain XML:
    no HDF5, whose library would clash with the one dolfinx loads in the same process)."""

    def __init__(self, mesh, out: Path) -> None:  # noqa: ANN001
        self._mesh = mesh
        self._out = out
        (out / "vm").mkdir(parents=True, exist_ok=True)
        self._frames: list[tuple[float, str]] = []

    def write(self, t_ms: float, vm_mv: np.ndarray) -> None:
        import meshio

        name = f"vm/vm_{len(self._frames):06d}.vtu"
        meshio.Mesh(np.asarray(self._mesh.points, dtype=float), [("tetra", np.asarray(self._mesh.cells))],
                    point_data={"vm_mV": np.asarray(vm_mv, dtype=np.float32)}).write(self._out / name)
        self._frames.append((float(t_ms), name))

    def close(self) -> None:
        from cardiotwin.io.atomic import atomic_path

        rows = "\n".join(f'    <DataSet timestep="{t:.6g}" part="0" file="{f}"/>' for t, f in self._frames)
        with atomic_path(self._out / "vm.pvd") as tmp:
            Path(tmp).write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n'
                                 f"  <Collection>\n{rows}\n  </Collection>\n</VTKFile>\n")


def _case_relative(path: Path) -> str:
    """A case's file as CASE-relative text (outputs never name the case folder), others as given."""
    from cardiotwin.cases import Case

    parents = Path(path).parents
    return str(Path(path).relative_to(parents[1])) if len(parents) > 1 and Case.is_case(parents[1]) else str(path)
