"""The ``ep`` stage: mesh with fibres -> activation map, summary and pseudo-ECG.

Writes activation.vtu (point data ``activation_time_ms``, NaN where never activated, plus the
input fields), ep.json (model, stimuli, timings, activation summary, QRS duration) and, with the
ECG, ecg.hea/.dat (WFDB) and ecg.png. Monodomain with ``snapshot_interval`` > 0 also writes the
transmembrane potential over time as a ParaView collection vm.pvd of vm/vm_NNNNNN.vtu (``vm_mV``).
Without pacing sites the activation starts at sinus-like endocardial breakthrough sites
(``electrophysiology.sources.sinus_sources``; needs the fibres stage's UVC and AHA fields).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cardiotwin.cases import Case
from cardiotwin.config import quantity
from cardiotwin.errors import CaseError, ConfigError
from cardiotwin.fibers.stage import FIBERS_VTU
from cardiotwin.stage_io import StageSource, stage_input, stage_output
from cardiotwin.types import HeartMesh

__all__ = ["ACTIVATION_FIELD", "ACTIVATION_VTU", "EP_JSON", "EPStageConfig", "ep_case"]

ACTIVATION_VTU = "activation.vtu"
ACTIVATION_FIELD = "activation_time_ms"  # point data of activation.vtu (ms; NaN: never activated)
EP_JSON = "ep.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EPStageConfig:
    """Options of the ep stage. ``pace``: pacing sites "X,Y,Z" or "X,Y,Z@T" (mm, ms; None:
    sinus-like sources). ``dt``, ``t_end``, ``snapshot_interval`` and ``ionic`` apply to the
    monodomain model, ``v_l`` / ``v_t`` (fibre / cross-fibre speed) to the eikonal model."""

    model: Literal["eikonal", "monodomain"] = "eikonal"
    pace: tuple[str, ...] | None = None
    ionic: Literal["ttp06", "ms"] = "ms"
    dt: float = quantity(0.05, "ms")
    t_end: float = quantity(150.0, "ms")
    snapshot_interval: float = quantity(0.0, "ms", doc="write Vm every this many ms (0: none)")
    v_l: float = quantity(0.6, "mm/ms")
    v_t: float = quantity(0.6 / 2.75, "mm/ms")
    radius: float = quantity(1.5, "mm", doc="pacing electrode radius")
    device: str = "cpu"

    def validate(self) -> None:
        if self.snapshot_interval < 0:
            raise ValueError(f"snapshot_interval must be >= 0 ms, got {self.snapshot_interval}")
        if self.snapshot_interval and self.model != "monodomain":
            raise ValueError("snapshot_interval writes the monodomain Vm; the eikonal model has none")


def ep_case(
    source: StageSource,
    cfg: EPStageConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    ecg: bool = False,
    force: bool = False,
) -> dict[str, Any] | None:
    """Simulate the activation of a case's fibres mesh (into its ``ep/`` stage, or into ``out``),
    or of a folder's mesh.vtu / a .vtu file into ``out``. A case always gets the pseudo-ECG; a
    plain mesh with ``ecg``. Returns the ep.json summary, None when the case's stage was unchanged."""
    from cardiotwin.io.meshes import read_mesh

    try:
        cfg.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    vtu = stage_input(source, stage="fibers", filename=FIBERS_VTU, hint="run `cardiotwin fibers` first")
    ecg = ecg or isinstance(source, Case)
    with stage_output(source, "ep", out=out, inputs={"mesh": vtu}, config=cfg, force=force) as st:
        if st.skipped:
            log.info("ep: inputs and options unchanged, nothing to do (use --force to rerun)")
            return None
        summary = simulate_to_folder(read_mesh(vtu), cfg, st.dir, source_name=str(vtu), ecg=ecg)
        st.metrics.update({"total_activation_ms": summary["activation_ms"]["max"] - summary["activation_ms"]["min"],
                           "qrs_duration_ms": summary.get("qrs_duration_ms")})
    return summary


def simulate_to_folder(mesh: HeartMesh, cfg: EPStageConfig, out: Path, *, source_name: str,
                       ecg: bool) -> dict[str, Any]:
    """Run the EP model on ``mesh`` and write the stage's files into ``out``; returns the summary."""
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
    from cardiotwin.electrophysiology.sources import sinus_sources
    from cardiotwin.electrophysiology.stimulus import Stimulus, parse_pace
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import write_mesh

    if "f0" not in mesh.point_data and "f0" not in mesh.cell_data:
        raise CaseError(f"{source_name}: no fibre field 'f0' (run `cardiotwin fibers` first)")
    if cfg.pace:
        stimuli = [parse_pace(p, radius_mm=cfg.radius) for p in cfg.pace]
    else:
        try:
            sites = sinus_sources(mesh)
        except ValueError as exc:
            raise CaseError(f"{source_name}: no pacing sites given and no sinus-like sources: {exc}") from None
        stimuli = [Stimulus(kind="point", centre_mm=xyz, radius_mm=cfg.radius, start_ms=t) for xyz, t in sites]
    lo, hi = mesh.points.min(axis=0), mesh.points.max(axis=0)
    for s in stimuli:
        d = np.min(np.linalg.norm(mesh.points - np.asarray(s.centre_mm), axis=1))
        if d > max(cfg.radius, 2.0):
            raise ConfigError(f"--pace {s.centre_mm}: {d:.1f} mm from the nearest node of {source_name} "
                              f"(bounds {lo.round(1).tolist()} - {hi.round(1).tolist()} mm): outside the mesh")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model == "eikonal":
        ecfg = EikonalConfig(v_l=cfg.v_l, v_t=cfg.v_t, device=cfg.device)
        res = simulate_eikonal(mesh, [(s.centre_mm, s.start_ms) for s in stimuli], cfg=ecfg, radius_mm=cfg.radius)
    else:
        mcfg = MonodomainConfig(dt=cfg.dt, t_end=cfg.t_end, ionic_model=cfg.ionic, device=cfg.device,
                                snapshot_interval=cfg.snapshot_interval)
        writer = VmWriter(mesh, out) if cfg.snapshot_interval > 0 else None
        try:
            res = simulate_monodomain(mesh, stimuli, cfg=mcfg, on_snapshot=writer.write if writer else None)
        finally:
            if writer:
                writer.close()
    act = res.activation_times_ms
    fields = {ACTIVATION_FIELD: act}
    if res.repolarisation_times_ms is not None:
        fields["repolarisation_time_ms"] = res.repolarisation_times_ms
    write_mesh(mesh.with_fields(point_data=fields), out / ACTIVATION_VTU)
    summary: dict[str, Any] = {
        "model": res.model, "mesh": _case_relative(Path(source_name)), "n_points": mesh.n_points, "stimuli": list(res.stimuli),
        "activation_ms": {"min": float(np.nanmin(act)), "max": float(np.nanmax(act)),
                          "mean": float(np.nanmean(act)), "not_activated": int(np.isnan(act).sum())},
        "metadata": {k: v for k, v in res.metadata.items() if isinstance(v, (int, float, str))},
    }
    if cfg.snapshot_interval > 0:
        summary["vm_snapshots"] = {"file": "vm.pvd", "interval_ms": cfg.snapshot_interval}
    if ecg:
        from cardiotwin.electrophysiology.ecg import ecg_from_activation, qrs_duration_ms, write_ecg
        from cardiotwin.electrophysiology.operators import NIEDERER_D_L, NIEDERER_D_T

        times, leads = ecg_from_activation(mesh, act, d_l=NIEDERER_D_L, d_t=NIEDERER_D_T)
        write_ecg(out, times, leads)
        summary["qrs_duration_ms"] = qrs_duration_ms(times, leads)
    write_json_atomic(out / EP_JSON, summary)
    log.info("EP (%s): activation %.1f-%.1f ms; outputs in %s", res.model, summary["activation_ms"]["min"],
             summary["activation_ms"]["max"], out)
    return summary


class VmWriter:
    """Vm snapshots as one VTU per frame under vm/ plus a ParaView collection vm.pvd (plain XML:
    no HDF5, whose library would clash with the one dolfinx loads in the same process)."""

    def __init__(self, mesh: HeartMesh, out: Path) -> None:
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
    parents = Path(path).parents
    return str(Path(path).relative_to(parents[1])) if len(parents) > 1 and Case.is_case(parents[1]) else str(path)
