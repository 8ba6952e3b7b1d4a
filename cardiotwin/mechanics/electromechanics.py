"""One heart beat: EP activation times -> active tension -> 3D mechanics <-> 0D circulation.

Sequence: inflate the unloaded mesh to the end-diastolic pressures (load stepping), then march
the beat in steps of ``dt``. Each step sets the active tension of every point from its
activation time (``active.TwitchConfig``) and finds the cavity pressures for which the 3D cavity
volumes equal the 0D circulation's (``circulation.CoupledCirculation``). Outputs: pressure and
volume curves, metrics (EDV, ESV, SV, EF, dP/dt max, stroke work), end-systolic fibre strain per
AHA segment, displacement over the beat (XDMF).

Discretisation: the default ``MechanicsConfig`` is the nodal-pressure P1/P1 tetrahedron
(``mechanics.problem``); the P1 penalty element it replaced locks on the twin meshes (1-2 cells
across the wall). The measurements behind both choices (passive filling against P2, beat metrics
across meshes and time steps, cost per beat) are in ``docs/mechanics.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx
import dolfinx.io
import ufl

from cardiotwin.anatomy import FacetTag
from cardiotwin.circulation.models import (
    RV_WINDKESSEL,
    ClosedLoopConfig,
    WindkesselConfig,
    closed_loop_network,
    initial_volumes,
    windkessel_network,
)
from cardiotwin.circulation.network import Network
from cardiotwin.circulation.simulate import CoupledCirculation
from cardiotwin.config import config_to_dict, quantity
from cardiotwin.errors import BeatDiverged, StageError
from cardiotwin.mechanics.active import TwitchConfig
from cardiotwin.mechanics.materials import Guccione, HolzapfelOgden
from cardiotwin.mechanics.newton import JIT_OPTIONS, NewtonDiverged
from cardiotwin.mechanics.problem import Boundaries, CardiacMechanics, FibresAtDegree, MechanicsConfig
from cardiotwin.types import MechResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EMConfig:
    """Electromechanics stage configuration (times ms, pressures kPa)."""

    material: Literal["guccione", "holzapfel_ogden"] = "guccione"
    guccione: Guccione = Guccione(C=2.0, bf=8.0, bt=2.0, bfs=4.0)
    holzapfel_ogden: HolzapfelOgden = HolzapfelOgden()
    mechanics: MechanicsConfig = MechanicsConfig()
    twitch: TwitchConfig = TwitchConfig()
    circulation: Literal["windkessel", "closed_loop"] = "windkessel"
    lv_windkessel: WindkesselConfig = WindkesselConfig()
    rv_windkessel: WindkesselConfig = RV_WINDKESSEL
    closed_loop: ClosedLoopConfig = ClosedLoopConfig()
    lv_end_diastolic_pressure: float = quantity(1.0, "kPa")
    rv_end_diastolic_pressure: float = quantity(0.5, "kPa")
    beat_duration: float = quantity(800.0, "ms")
    dt: float = quantity(10.0, "ms", doc="time step while any point's twitch is active")
    diastolic_dt: float = quantity(40.0, "ms", doc="time step once every twitch has ended (filling)")
    output_every: int = 2
    # while twitches are active, steps between dt and diastolic_dt chosen from the error of a
    # linear extrapolation of cavity pressures and volumes (per step, tolerances below)
    adaptive_dt: bool = False
    step_pressure_tol: float = quantity(0.1, "kPa")
    step_volume_tol: float = quantity(1.0, "mL")

    def validate(self) -> None:
        self.guccione.validate()
        self.holzapfel_ogden.validate()
        self.mechanics.validate()
        self.twitch.validate()
        if not (0 < self.dt <= self.beat_duration):
            raise ValueError(f"dt must lie in (0, beat_duration], got {self.dt}")
        if self.lv_end_diastolic_pressure < 0 or self.rv_end_diastolic_pressure < 0:
            raise ValueError("end-diastolic pressures must be >= 0")
        if not self.diastolic_dt > 0:
            raise ValueError(f"diastolic_dt must be > 0, got {self.diastolic_dt}")
        if self.output_every < 1:
            raise ValueError("output_every must be >= 1")
        if not (self.step_pressure_tol > 0 and self.step_volume_tol > 0):
            raise ValueError("step_pressure_tol and step_volume_tol must be > 0")


def beat_metrics(times_ms: np.ndarray, pressure_kpa: np.ndarray, volume_ml: np.ndarray) -> dict[str, float]:
    """EDV, ESV (mL), SV (mL), EF, dP/dt max (kPa/ms), stroke work (mJ: PV-loop area, kPa*mL)."""
    t, p, v = (np.asarray(a, dtype=float) for a in (times_ms, pressure_kpa, volume_ml))
    edv, esv = float(v.max()), float(v.min())
    # shoelace area of the closed p-V polygon; positive for the counter-clockwise loop of a beat
    work = 0.5 * float(np.sum(v * np.roll(p, -1) - np.roll(v, -1) * p))
    dpdt = float(np.max(np.diff(p) / np.diff(t))) if len(t) > 1 else 0.0
    return {"edv_ml": edv, "esv_ml": esv, "stroke_volume_ml": edv - esv,
            "ejection_fraction": (edv - esv) / edv if edv > 0 else 0.0,
            "dpdt_max_kpa_per_ms": dpdt, "stroke_work_mj": abs(work)}


def _merge_networks(parts: list[tuple[Network, dict[str, float]]]) -> tuple[Network, dict[str, float]]:
    comps = tuple(c for net, _ in parts for c in net.compartments)
    conns = tuple(k for net, _ in parts for k in net.connections)
    init: dict[str, float] = {}
    for _, i in parts:
        init.update(i)
    return Network(comps, conns), init


def _circulation(cfg: EMConfig, cavities: tuple[str, ...]) -> tuple[Network, dict[str, float]]:
    if cfg.circulation == "closed_loop":
        net, init = closed_loop_network(cfg.closed_loop)
        if cavities == ("LV",):
            raise StageError("the closed-loop circulation needs a biventricular mesh (LV and RV cavities)")
        return net.with_coupled(cavities), init
    parts = [windkessel_network(cfg.lv_windkessel, chamber="LV")]
    if "RV" in cavities:
        parts.append(windkessel_network(cfg.rv_windkessel, chamber="RV"))
    return _merge_networks(parts)


@dataclass
class BeatInputs:
    """What a beat needs on the dolfinx side.

    mesh, facet_tags (``anatomy.FacetTag``); fibres (f0, s0, n0) as UFL vectors, or a function of the
    mechanics' quadrature degree returning them (``problem.FibresAtDegree``); activation: P1
    scalar Function of activation times (ms); aha: optional DG0 Function of AHA segments (0-17).
    """

    mesh: dolfinx.mesh.Mesh
    facet_tags: dolfinx.mesh.MeshTags
    fibres: tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr] | FibresAtDegree
    activation: dolfinx.fem.Function
    aha: dolfinx.fem.Function | None = None
    extra: dict[str, object] = field(default_factory=dict)


def beat_times_ms(cfg: EMConfig, activation_times_ms: np.ndarray) -> np.ndarray:
    """Time grid (ms) of a beat: steps of ``dt`` until the last twitch has ended, then
    ``max(dt, diastolic_dt)`` (passive filling needs no fine steps); ends at ``beat_duration``."""
    act = np.asarray(activation_times_ms, dtype=float)
    act = act[np.isfinite(act)]
    active_end = (float(act.max()) if act.size else 0.0) + cfg.twitch.duration
    times, t = [0.0], 0.0
    while t < cfg.beat_duration - 1e-9:
        step = cfg.dt if t < active_end - 1e-9 else max(cfg.dt, cfg.diastolic_dt)
        t = min(t + step, cfg.beat_duration)
        times.append(t)
    return np.array(times)


def _next_dt(cfg: EMConfig, times: list[float], pressures: list[list[float]], volumes: list[list[float]]) -> float:
    """The next active-phase step (ms): the error of a linear extrapolation of the cavity pressures
    and volumes over the last step (second order in dt) against ``step_pressure_tol`` and
    ``step_volume_tol``, the step grown or shrunk by at most 2x, within [dt, diastolic_dt]."""
    if len(times) < 3:
        return cfg.dt
    dt = times[-1] - times[-2]
    ratio = dt / (times[-2] - times[-3])
    p, v = np.asarray(pressures[-3:]), np.asarray(volumes[-3:])
    err = max(float(np.max(np.abs(p[2] - p[1] - ratio * (p[1] - p[0])))) / cfg.step_pressure_tol,
              float(np.max(np.abs(v[2] - v[1] - ratio * (v[1] - v[0])))) / cfg.step_volume_tol)
    grow = 2.0 if err <= 0.25 else 0.5 if err >= 4.0 else err ** -0.5
    return float(np.clip(dt * grow, cfg.dt, max(cfg.dt, cfg.diastolic_dt)))


def _has_tag(ft: dolfinx.mesh.MeshTags, tag: int, comm: MPI.Comm) -> bool:
    return comm.allreduce(int(len(ft.find(tag))), op=MPI.SUM) > 0


class _SegmentStretch:
    """Mean fibre stretch per AHA segment (owned cells, summed over ranks). A cell's stretch is
    its mean over the mechanics' quadrature points (where the fibres may be given)."""

    def __init__(self, mech: CardiacMechanics, aha: dolfinx.fem.Function | None) -> None:
        self.mech = mech
        self.Q = dolfinx.fem.functionspace(mech.mesh, ("DG", 0))
        w = ufl.TestFunction(self.Q)
        dx = ufl.Measure("dx", domain=mech.mesh, metadata={"quadrature_degree": mech.cfg.quadrature()})
        self.form = dolfinx.fem.form(mech.fibre_stretch() * w * dx, jit_options=JIT_OPTIONS)
        self.volume = dolfinx.fem.assemble_vector(dolfinx.fem.form(w * dx, jit_options=JIT_OPTIONS)).array.copy()
        n_owned = mech.mesh.topology.index_map(mech.mesh.topology.dim).size_local
        seg = np.zeros(n_owned, dtype=int) if aha is None else np.rint(aha.x.array[:n_owned]).astype(int)
        self.seg = seg
        self.segments = [s for s in range(1, 18) if mech.comm.allreduce(int(np.sum(seg == s)), op=MPI.SUM) > 0]
        self.n_owned = n_owned

    def cell_stretch(self) -> np.ndarray:
        integral = dolfinx.fem.assemble_vector(self.form).array
        return integral[: self.n_owned] / self.volume[: self.n_owned]

    def mean_by_segment(self, values: np.ndarray) -> dict[int, float]:
        out = {}
        for s in self.segments:
            mask = self.seg == s
            total = self.mech.comm.allreduce(float(values[mask].sum()), op=MPI.SUM)
            count = self.mech.comm.allreduce(int(mask.sum()), op=MPI.SUM)
            out[s] = total / count
        return out


def passive_digest(mesh_sha256: str, cfg: EMConfig) -> str:
    """Identity of a beat's end-diastolic inflation: the mesh and the passive part of ``cfg``
    (material, discretisation, end-diastolic pressures; not the twitch, circulation or steps)."""
    passive = {key: config_to_dict(getattr(cfg, key)) for key in (
        "material", cfg.material, "mechanics", "lv_end_diastolic_pressure", "rv_end_diastolic_pressure")}
    h = hashlib.sha256(mesh_sha256.encode())
    h.update(json.dumps(passive, sort_keys=True, default=str).encode())
    return h.hexdigest()


def end_diastole_file(path: Path, comm: MPI.Comm) -> Path:
    """This rank's part of the end-diastolic state ``path``: ``path`` itself on 1 rank,
    ``<stem>.<size>ranks.rank<r>.npz`` on ``size`` ranks (a state is partition-dependent, so a
    snapshot made on one rank count is never read on another)."""
    return path if comm.size == 1 else path.with_name(f"{path.stem}.{comm.size}ranks.rank{comm.rank}{path.suffix}")


def _layout(mech: CardiacMechanics) -> np.ndarray:
    """This rank's cells and mesh nodes by their input indices: equal only on the same partition."""
    mesh = mech.state.function_space.mesh
    return np.concatenate([np.asarray(mesh.topology.original_cell_index, dtype=np.int64),
                           np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)])


def _load_end_diastole(path: Path | None, mech: CardiacMechanics, edp: dict[str, float]) -> bool:
    """Set the state stored by ``_save_end_diastole`` (False on every rank unless every rank has its part
    for this problem, rank count and partition)."""
    if path is None:
        return False
    state = None
    try:
        with np.load(end_diastole_file(path, mech.comm)) as data:
            state = np.asarray(data["state"], dtype=float)
            pressures = {c: float(data[f"p_{c}"]) for c in edp}
            same = np.array_equal(np.asarray(data["layout"]), _layout(mech))
    except (OSError, ValueError, KeyError):
        same = False
    ok = same and state.shape == mech.state.x.array.shape and all(abs(pressures[c] - edp[c]) <= 1e-12 for c in edp)
    if not mech.comm.allreduce(bool(ok), op=MPI.LAND):
        return False
    mech.state.x.array[:] = state
    mech.state.x.scatter_forward()
    for c, value in pressures.items():
        mech.pressures_kpa[c].value = value
    return True


def _save_end_diastole(path: Path | None, mech: CardiacMechanics) -> None:
    if path is None:
        return
    part = end_diastole_file(path, mech.comm)
    part.parent.mkdir(parents=True, exist_ok=True)
    tmp = part.with_name(f".{part.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, state=mech.state.x.array, layout=_layout(mech),
                 **{f"p_{c}": float(v.value) for c, v in mech.pressures_kpa.items()})
    os.replace(tmp, part)


def simulate_beat(inputs: BeatInputs, cfg: EMConfig, *, out_dir: Path | None = None,
                  on_step: Callable[[float, float], None] | None = None,
                  end_diastole: Path | None = None) -> MechResult:
    """Simulate one beat; write ``displacement.xdmf`` into ``out_dir`` when given. ``on_step(t_ms,
    end_ms)`` is called after each converged time step (progress displays).

    ``end_diastole``: a file (.npz) for the end-diastolic state, named by the caller after
    ``passive_digest`` (beats of one twin that differ only in activation, tension, circulation or
    time steps share it): read instead of inflating when present, written after inflating
    otherwise; on several ranks one part per rank (``end_diastole_file``).

    A diverging Newton solve raises StageError naming the step, time and load; the last
    converged displacement is then written to ``out_dir/last_converged.xdmf``.
    """
    cfg.validate()
    t_start = time.perf_counter()
    comm = inputs.mesh.comm
    ft = inputs.facet_tags
    if not _has_tag(ft, int(FacetTag.LV_ENDO), comm):
        raise StageError("mesh has no LV_ENDO facets: cannot pressurise the LV cavity")
    cavities = ("LV", "RV") if _has_tag(ft, int(FacetTag.RV_ENDO), comm) else ("LV",)
    base = int(FacetTag.BASE)
    m = cfg.mechanics
    boundaries = Boundaries(
        fixed=(base,) if m.base_bc == "fixed" else (),
        base_springs=(base,) if m.base_bc == "spring" else (),
        epi_springs=(int(FacetTag.EPI),) if m.epi_spring_kpa_per_mm > 0 else (),
        cavities={c: int(FacetTag.LV_ENDO if c == "LV" else FacetTag.RV_ENDO) for c in cavities},
        base=base,
    )
    material = cfg.guccione if cfg.material == "guccione" else cfg.holzapfel_ogden
    mech = CardiacMechanics(inputs.mesh, ft, material=material, fibres=inputs.fibres, boundaries=boundaries,
                            cfg=m, prefix="em_")
    reference_volumes = {c: mech.cavity_volume_ml(c) for c in cavities}  # of the unloaded mesh
    act = dolfinx.fem.Function(mech.scalar_space)
    act.interpolate(inputs.activation)
    act_values = act.x.array.copy()

    V1 = dolfinx.fem.functionspace(inputs.mesh, ("Lagrange", 1, (3,)))
    u_p1 = dolfinx.fem.Function(V1, name="displacement_mm")
    xdmf = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        xdmf = dolfinx.io.XDMFFile(comm, str(out_dir / "displacement.xdmf"), "w")
        xdmf.write_mesh(inputs.mesh)

    def write(t_ms: float) -> None:
        if xdmf is not None:
            u_p1.interpolate(mech.displacement())
            xdmf.write_function(u_p1, t_ms)

    def save_failure(state: CardiacMechanics) -> None:
        if out_dir is not None:
            with dolfinx.io.XDMFFile(comm, str(out_dir / "last_converged.xdmf"), "w") as f:
                f.write_mesh(inputs.mesh)
                u_p1.interpolate(state.displacement())
                f.write_function(u_p1, 0.0)

    edp = {"LV": cfg.lv_end_diastolic_pressure, "RV": cfg.rv_end_diastolic_pressure}
    try:
        warm = _load_end_diastole(end_diastole, mech, {c: edp[c] for c in cavities})
        if not warm:
            mech.solve_to(pressures_kpa={c: edp[c] for c in cavities}, label="end-diastolic inflation",
                          initial_fraction=0.25, on_failure=save_failure)
            _save_end_diastole(end_diastole, mech)
        segments = _SegmentStretch(mech, inputs.aha)
        stretch_ed = segments.cell_stretch()
        network, init = _circulation(cfg, cavities)
        volumes = {c: mech.cavity_volume_ml(c) for c in cavities}
        v0 = initial_volumes(network, {**init, **volumes})
        coupled = CoupledCirculation(network, v0, cavities, {c: edp[c] for c in cavities})
        times, pressures, vols = [0.0], [[edp[c] for c in cavities]], [[volumes[c] for c in cavities]]
        # blood outside the 3D cavities (0D compartments) plus the 3D cavity volumes: constant for
        # the closed loop up to the coupling tolerance per step
        outside = [i for name, i in network.index.items() if name not in cavities]

        def blood_ml() -> float:
            return float(np.sum(coupled.volumes_ml[outside]) + sum(vols[-1]))

        blood = [blood_ml()]
        write(0.0)
        act_max = comm.allreduce(float(np.max(act_values[np.isfinite(act_values)], initial=0.0)), op=MPI.MAX)
        grid = beat_times_ms(cfg, np.array([act_max]))
        end_ms = float(grid[-1])
        active_end = act_max + cfg.twitch.duration
        adaptive_dt = cfg.dt
        stretch_hist = [stretch_ed]
        solves_total = 0
        fallbacks = 0
        step_seconds: list[float] = []
        step_its: list[int] = []
        names = np.array(cavities)
        k = 0
        while times[-1] < end_ms - 1e-9:
            k += 1
            if not cfg.adaptive_dt:
                t = float(grid[k])
            elif times[-1] < active_end - 1e-9:
                t = min(times[-1] + adaptive_dt, end_ms)
            else:
                t = min(times[-1] + max(cfg.dt, cfg.diastolic_dt), end_ms)
            dt = t - times[-1]
            ta = cfg.twitch.tension_kpa(t, act_values)
            start = mech.snapshot()
            label = f"time step {k} (t = {t:g} ms)"
            step_t0, its0 = time.perf_counter(), sum(mech.monitor.iterations)
            try:
                # one Newton loop for displacement and cavity pressures, warm-started
                mech.solve_coupled(active_tension_kpa=ta, volume_tol_ml=coupled.volume_tolerance(),
                                   volumes_0d=lambda p, t=t, dt=dt: coupled.volumes_for(p, t, dt))
                p_new = np.array([float(mech.pressures_kpa[c].value) for c in names])
                coupled.commit(p_new, t, dt)
                solves = 1
            except NewtonDiverged as exc:
                # slow, robust path: load-stepped 3D solves inside a quasi-Newton pressure iteration
                log.info("%s: coupled Newton failed (%s); falling back to load stepping", label, exc)
                adaptive_dt = cfg.dt
                fallbacks += 1
                mech.restore(start)

                def solve_cavities(p: dict[str, float], start: dict = start, ta: np.ndarray = ta,
                                   label: str = label) -> dict[str, float]:
                    mech.restore(start)
                    mech.solve_to(pressures_kpa=p, active_tension_kpa=ta, label=label, on_failure=save_failure)
                    return {c: mech.cavity_volume_ml(c) for c in cavities}

                try:
                    _, _, solves = coupled.step(t, dt, solve_cavities)
                except StageError as exc:
                    mech.restore(start)
                    save_failure(mech)
                    raise BeatDiverged(str(exc), time_ms=t) from exc
            solves_total += solves
            step_seconds.append(round(time.perf_counter() - step_t0, 3))
            step_its.append(sum(mech.monitor.iterations) - its0)
            times.append(t)
            pressures.append([coupled.pressures_kpa[c] for c in cavities])
            vols.append([mech.cavity_volume_ml(c) for c in cavities])
            if cfg.adaptive_dt:
                adaptive_dt = _next_dt(cfg, times, pressures, vols)
            blood.append(blood_ml())
            stretch_hist.append(segments.cell_stretch())
            if k % cfg.output_every == 0:
                write(t)
            log.info("t = %5.0f ms  p = %s kPa  V = %s mL  (%d 3D solves)", t,
                     np.round(pressures[-1], 3), np.round(vols[-1], 2), solves)
            if on_step is not None:
                on_step(t, end_ms)
    finally:
        if xdmf is not None:
            xdmf.close()

    times_a = np.array(times)
    P, V = np.array(pressures), np.array(vols)
    metrics = {c: beat_metrics(times_a, P[:, i], V[:, i]) for i, c in enumerate(cavities)}
    i_es = int(np.argmin(V[:, 0]))
    strain = segments.mean_by_segment(stretch_hist[i_es] / stretch_ed - 1.0)
    strain_curves = {s: [segments.mean_by_segment(h / stretch_ed - 1.0)[s] for h in stretch_hist]
                     for s in segments.segments}
    empty = np.zeros(0)
    meta = {
        "n_dofs": mech.n_dofs, "n_steps": len(times) - 1, "dt_ms": cfg.dt, "diastolic_dt_ms": cfg.diastolic_dt,
        "coupling_fallbacks": fallbacks, "step_seconds": step_seconds, "newton_iterations_per_step": step_its, "cavities": list(cavities),
        "newton_iterations": int(sum(mech.monitor.iterations)), "newton_solves": len(mech.monitor.iterations),
        "newton_failures": mech.monitor.failures,
        "jacobians": int(sum(mech.monitor.jacobians)), "coupling_3d_solves": solves_total,
        "seconds": round(time.perf_counter() - t_start, 2), "mpi_ranks": comm.size, "end_diastole_reused": warm,
        "aha_strain_curves": strain_curves, "circulation": cfg.circulation, "blood_volume_ml": blood,
        "reference_volume_ml": reference_volumes,
    }
    return MechResult(
        times_ms=times_a,
        lv_pressure_kpa=P[:, 0], lv_volume_ml=V[:, 0],
        rv_pressure_kpa=P[:, 1] if len(cavities) > 1 else empty,
        rv_volume_ml=V[:, 1] if len(cavities) > 1 else empty,
        edv_ml={c: m_["edv_ml"] for c, m_ in metrics.items()},
        esv_ml={c: m_["esv_ml"] for c, m_ in metrics.items()},
        stroke_volume_ml={c: m_["stroke_volume_ml"] for c, m_ in metrics.items()},
        ejection_fraction={c: m_["ejection_fraction"] for c, m_ in metrics.items()},
        dpdt_max_kpa_per_ms={c: m_["dpdt_max_kpa_per_ms"] for c, m_ in metrics.items()},
        stroke_work_mj={c: m_["stroke_work_mj"] for c, m_ in metrics.items()},
        aha_fibre_strain=strain,
        metadata=meta,
    )
