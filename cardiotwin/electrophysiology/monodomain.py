"""Monodomain solver: operator splitting of dV/dt = div(D grad V) - I_ion + I_stim on P1 tets.

Reaction: the ionic model's ``step`` (Rush-Larsen gates) over all nodes at once.
Diffusion: theta scheme (M + theta dt K) V+ = (M - (1 - theta) dt K) V + dt F(t + dt/2) with
Jacobi-preconditioned CG (theta = 0.5 Crank-Nicolson by default, 1 backward Euler), started from V
plus the previous step's diffusion increment, or explicit (theta = 0, lumped mass only) after a
Gershgorin stability check. Godunov (R dt, D dt) or Strang (R dt/2, D dt, R dt/2) splitting.

Two backends run the same scheme: ``torch`` (tensor operations on ``device``, "cpu" or "cuda", float64
or float32; the GPU path) and ``fused`` (compiled CPU kernels in ``cpu_kernels``: the TTP06 update in
one pass over the nodes, CG in three passes per iteration; the CPU default). They agree to the CG
tolerance (tests/test_ep_fused.py).

Stimuli are a finite-element source in the diffusion step, F_i = sum_s strength_s int_{Omega_s} phi_i
(``Stimulus.load_mm3``), evaluated at the step midpoint, as in fenicsx-beat's P1 reference for the
Niederer benchmark. (Setting V-rate 35.71 mV/ms pointwise on every node in the closed stimulus box
instead injects (1.75/1.5)^3 = 1.6x the charge at dx 0.5 and made P8 / P9 ~2.2 / 1.8 ms early.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from cardiotwin.config import quantity
from cardiotwin.electrophysiology.ionic import MODELS
from cardiotwin.electrophysiology.monitor import NullMonitor, PerformanceMonitor
from cardiotwin.electrophysiology.operators import (
    NIEDERER_D_L,
    NIEDERER_D_T,
    EPOperators,
    assemble,
    conductivity_scale,
    to_torch_csr,
)
from cardiotwin.electrophysiology.stimulus import Stimulus
from cardiotwin.errors import ConfigError, StageError
from cardiotwin.types import EPResult, HeartMesh

log = logging.getLogger(__name__)


class EPDivergenceError(StageError):
    """The simulation blew up (NaN or unbounded Vm); carries the simulated time of failure."""

    def __init__(self, message: str, *, t_ms: float, partial: EPResult | None = None) -> None:
        super().__init__(message)
        self.t_ms = t_ms
        self.partial = partial


@dataclass(frozen=True)
class MonodomainConfig:
    """Monodomain settings (units in the field declarations)."""

    dt: float = quantity(0.05, "ms")
    t_end: float = quantity(100.0, "ms")
    d_l: float = quantity(NIEDERER_D_L, "mm^2/ms")
    d_t: float = quantity(NIEDERER_D_T, "mm^2/ms")
    ionic_model: Literal["ttp06", "ms"] = "ttp06"
    # TTP06 only: V-only gate kinetics and current factors from lookup tables (linear interpolation
    # on a grid of ionic_table_step over -120..80 mV), as openCARP does; False: exact exp() per node.
    ionic_tables: bool = True
    ionic_table_step: float = quantity(0.02, "mV")
    cell_type: Literal["endo", "mid", "epi"] = "epi"
    splitting: Literal["godunov", "strang"] = "godunov"
    theta: float = 0.5
    mass: Literal["consistent", "lumped"] = "consistent"
    # Relative to ||rhs||. 1e-6 vs 1e-8 on the Niederer slab dx 0.5 / dt 0.05: P1..P9 activation moves
    # by <= 0.003 ms (P8 0.0004, P9 0.001) with 8.7 instead of 14.8 CG iterations per step (issue #5).
    cg_rtol: float = 1e-6
    cg_max_iterations: int = 200
    precision: Literal["float64", "float32"] = "float64"
    device: str = "cpu"
    # "fused": compiled CPU kernels (cpu_kernels.py: one pass per phase); "torch": tensor operations
    # (the CUDA path, and the reference the fused kernels are tested against); "auto": fused on the CPU.
    backend: Literal["auto", "fused", "torch"] = "auto"
    activation_threshold: float = quantity(0.0, "mV")
    repolarisation_threshold: float = quantity(-70.0, "mV")
    border_zone: float = quantity(0.0, "mm")
    border_zone_factor: float = 0.25
    check_every_steps: int = 20
    snapshot_interval: float = quantity(0.0, "ms")


def _resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA device")
    return torch.device(name)


def explicit_stable_dt_ms(ops: EPOperators) -> float:
    """Largest stable explicit (forward Euler, lumped mass) diffusion step: 2 / lambda_max(M_L^-1 K),
    with lambda_max bounded above by Gershgorin row sums (so the returned dt is safe)."""
    k = ops.stiffness
    row = np.asarray(abs(k).sum(axis=1)).ravel() / ops.lumped_mass
    return float(2.0 / row.max()) if row.max() > 0 else math.inf


def pcg(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, inv_diag: torch.Tensor, *, rtol: float,
        max_iterations: int) -> tuple[torch.Tensor, int]:
    """Jacobi-preconditioned conjugate gradients for SPD ``A`` (torch sparse CSR); returns (x, its).

    Convergence is checked every 4 iterations to keep host-device synchronisation rare."""
    r = b - A @ x
    z = inv_diag * r
    p = z.clone()
    rz = torch.dot(r, z)
    bnorm = torch.linalg.vector_norm(b)
    tol = (rtol * bnorm) ** 2
    it = 0
    while it < max_iterations:
        Ap = A @ p
        alpha = rz / torch.dot(p, Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        it += 1
        if it % 4 == 0 or it == max_iterations:
            if float(torch.dot(r, r)) <= float(tol):
                break
        z = inv_diag * r
        rz_new = torch.dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it


@dataclass
class _Recorder:
    """Activation (upward) and repolarisation (downward) threshold crossings, interpolated in time."""

    act: torch.Tensor
    rep: torch.Tensor
    thr_up: float
    thr_down: float
    snapshots: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def update(self, v_old: torch.Tensor, v_new: torch.Tensor, t_old: float, dt: float) -> None:
        up = (v_old < self.thr_up) & (v_new >= self.thr_up) & torch.isnan(self.act)
        frac = (self.thr_up - v_old) / (v_new - v_old)
        self.act = torch.where(up, t_old + dt * frac, self.act)
        down = (v_old > self.thr_down) & (v_new <= self.thr_down) & ~torch.isnan(self.act) & torch.isnan(self.rep)
        frac_d = (v_old - self.thr_down) / (v_old - v_new)
        self.rep = torch.where(down, t_old + dt * frac_d, self.rep)


class _TorchStepper:
    """One monodomain step in torch tensor operations (any device)."""

    torch_operators = True  # build torch CSR copies of the diffusion matrices

    def __init__(self, *, cfg: MonodomainConfig, model, params, states: torch.Tensor, A, B,  # noqa: ANN001
                 lumped_mass: np.ndarray, passive: torch.Tensor, rec: _Recorder, explicit: bool) -> None:
        self.cfg, self.model, self.params, self.states, self.rec, self.explicit = cfg, model, params, states, rec, explicit
        dtype, device = states.dtype, states.device
        if self.torch_operators:
            self.A = to_torch_csr(A, dtype=dtype, device=device)
            self.B = to_torch_csr(B, dtype=dtype, device=device)
            self.inv_diag = torch.as_tensor(1.0 / A.diagonal(), dtype=dtype, device=device)
            self.ml = torch.as_tensor(lumped_mass, dtype=dtype, device=device)
        self.passive = passive
        self.any_passive = bool(passive.any())
        self.tables: dict[float, object] = {}  # reaction step (ms) -> TTP06Tables (Strang uses dt/2)
        self.use_tables = cfg.ionic_model == "ttp06" and cfg.ionic_tables
        self.v_old = torch.empty_like(states[0])  # V before the step, for the threshold crossings
        self.delta = torch.zeros_like(states[0])  # last step's diffusion increment (CG initial guess)

    def save_old(self) -> None:
        self.v_old.copy_(self.states[0])

    def react(self, h: float) -> None:
        states, cfg = self.states, self.cfg
        v_keep = states[0][self.passive] if self.any_passive else None
        if self.use_tables:
            if h not in self.tables:
                self.tables[h] = self.model.build_tables(h, self.params, dv_mv=cfg.ionic_table_step,
                                                         dtype=states.dtype, device=states.device)
            self.model.step_tabulated(states, h, tables=self.tables[h], params=self.params)
        else:
            self.model.step(states, h, params=self.params)
        if v_keep is not None:
            states[0][self.passive] = v_keep

    def diffuse(self, f: torch.Tensor | None) -> int:
        """(theta scheme) V+ from V and the FE source ``f``; returns the CG iterations."""
        cfg, v = self.cfg, self.states[0]
        rhs = self.B @ v
        if f is not None:
            rhs = rhs + cfg.dt * f
        if self.explicit:
            self.states[0] = rhs / self.ml  # forward Euler with lumped mass: M_L V+ = (M_L - dt K) V + dt F
            return 0
        # initial guess: V plus the previous step's diffusion increment (saves 1-2 CG iterations)
        x, its = pcg(self.A, rhs, v + self.delta, self.inv_diag, rtol=cfg.cg_rtol, max_iterations=cfg.cg_max_iterations)
        torch.sub(x, v, out=self.delta)
        self.states[0] = x
        return its

    def record(self, t_old: float) -> None:
        self.rec.update(self.v_old, self.states[0], t_old, self.cfg.dt)

    def max_abs_vm(self) -> float:
        return float(torch.max(torch.abs(self.states[0])))


class _FusedStepper(_TorchStepper):
    """The same step with compiled CPU kernels (``cpu_kernels``) on NumPy views of the CPU tensors:
    TTP06 with lookup tables as one fused pass, CG in three passes per iteration. Other ionic
    models (and TTP06 without tables) keep the torch reaction step."""

    torch_operators = False

    def __init__(self, **kw) -> None:  # noqa: ANN003 - as _TorchStepper
        from cardiotwin.electrophysiology import cpu_kernels

        super().__init__(**kw)
        self.k = cpu_kernels
        cpu_kernels.use_torch_threads()
        self.S = self.states.numpy()  # shares memory with the tensor
        np_dtype = self.S.dtype
        self.A_np = cpu_kernels.CSRMatrix(kw["A"], np_dtype)
        self.B_np = cpu_kernels.CSRMatrix(kw["B"], np_dtype)
        self.ml_np = np.asarray(kw["lumped_mass"], dtype=np_dtype)
        self.rhs = np.empty(self.S.shape[1], dtype=np_dtype)
        self.v_react = np.empty_like(self.rhs)
        self.delta = self.delta.numpy()
        self.v_old_np = self.v_old.numpy()
        self.passive_np = self.passive.numpy()
        self.kernels: dict[float, object] = {}

    def save_old(self) -> None:
        np.copyto(self.v_old_np, self.S[0])

    def react(self, h: float) -> None:
        if not self.use_tables:
            super().react(h)
            return
        if h not in self.kernels:
            tables = self.model.build_tables(h, self.params, dv_mv=self.cfg.ionic_table_step)
            self.kernels[h] = self.k.TTP06Kernel(tables, self.params, self.S.dtype)
        self.kernels[h].step(self.S, self.passive_np)

    def diffuse(self, f: torch.Tensor | None) -> int:
        cfg, v = self.cfg, self.S[0]
        self.B_np.matvec_plus(v, None if f is None else f.numpy(), cfg.dt, out=self.rhs)
        if self.explicit:
            np.divide(self.rhs, self.ml_np, out=v)
            return 0
        self.k.extrapolate_guess(v, self.v_react, self.delta)
        its = self.A_np.pcg(self.rhs, v, rtol=cfg.cg_rtol, max_iterations=cfg.cg_max_iterations)
        self.k.increment(v, self.v_react, self.delta)
        return its

    def record(self, t_old: float) -> None:
        rec = self.rec
        self.k.record_crossings(self.v_old_np, self.S[0], rec.act.numpy(), rec.rep.numpy(), t_old, self.cfg.dt,
                                rec.thr_up, rec.thr_down)

    def max_abs_vm(self) -> float:
        return float(np.max(np.abs(self.S[0])))


def simulate_monodomain(
    mesh: HeartMesh,
    stimuli: list[Stimulus],
    *,
    cfg: MonodomainConfig = MonodomainConfig(),
    operators: EPOperators | None = None,
    monitor: NullMonitor | None = None,
    on_snapshot: Callable[[float, np.ndarray], None] | None = None,
) -> EPResult:
    """Run the monodomain model on ``mesh`` (fibres ``f0`` required) from the model's initial state.

    Returns an EPResult with activation / repolarisation times (ms) per mesh point. Raises
    EPDivergenceError (with the simulated time) on NaN or unbounded Vm, ConfigError on an unstable
    explicit step or a stimulus outside the mesh. ``on_snapshot(t_ms, vm_mv (N,))`` is called every
    ``cfg.snapshot_interval`` ms when that is > 0.
    """
    monitor = monitor or NullMonitor()
    if cfg.ionic_model not in MODELS:
        raise ConfigError(f"unknown ionic model {cfg.ionic_model!r}; choose one of {sorted(MODELS)}")
    if cfg.dt <= 0 or cfg.t_end <= 0:
        raise ConfigError(f"dt and t_end must be positive (got dt {cfg.dt} ms, t_end {cfg.t_end} ms)")
    device = _resolve_device(cfg.device)
    dtype = torch.float64 if cfg.precision == "float64" else torch.float32
    t_setup = time.perf_counter()
    with monitor.phase("assembly"):
        ops = operators or assemble(mesh, d_l=cfg.d_l, d_t=cfg.d_t, border_zone_mm=cfg.border_zone,
                                    border_zone_factor=cfg.border_zone_factor)
    n = mesh.n_points
    model = MODELS[cfg.ionic_model]
    if cfg.ionic_model == "ttp06":
        params = model.params_for(cfg.cell_type)
        states = model.initial_state(n, dtype=dtype, device=device)
    else:
        params = model.MSParams()
        states = model.initial_state(n, params=params, dtype=dtype, device=device)

    theta = float(cfg.theta)
    explicit = theta == 0.0
    if explicit:
        if cfg.mass != "lumped":
            raise ConfigError("explicit diffusion (theta = 0) needs mass: lumped")
        dt_max = explicit_stable_dt_ms(ops)
        if cfg.dt > dt_max:
            raise ConfigError(f"explicit diffusion unstable: dt {cfg.dt} ms exceeds the stability limit "
                              f"{dt_max:.4g} ms (Gershgorin bound of 2/lambda_max(M_L^-1 K)); use theta 0.5 or a smaller dt")
    if cfg.mass == "consistent":
        A_sp = (ops.mass + theta * cfg.dt * ops.stiffness).tocsr()
        B_sp = (ops.mass - (1.0 - theta) * cfg.dt * ops.stiffness).tocsr()
    else:
        import scipy.sparse as sp

        A_sp = (sp.diags(ops.lumped_mass) + theta * cfg.dt * ops.stiffness).tocsr()
        B_sp = (sp.diags(ops.lumped_mass) - (1.0 - theta) * cfg.dt * ops.stiffness).tocsr()

    conducting_cells = conductivity_scale(mesh, border_zone_mm=0.0) > 0
    stim_loads = [torch.as_tensor(s.load_mm3(mesh.points, mesh.cells, ops.lumped_mass, conducting_cells),
                                  dtype=dtype, device=device) for s in stimuli]
    stim_vec = torch.zeros(n, dtype=dtype, device=device)
    passive = torch.as_tensor(~ops.conducting, device=device)
    rec = _Recorder(act=torch.full((n,), float("nan"), dtype=dtype, device=device),
                    rep=torch.full((n,), float("nan"), dtype=dtype, device=device),
                    thr_up=cfg.activation_threshold, thr_down=cfg.repolarisation_threshold)
    if cfg.ionic_model == "ttp06" and cfg.ionic_tables and cfg.ionic_table_step <= 0:
        raise ConfigError(f"ionic_table_step must be positive (got {cfg.ionic_table_step} mV)")
    if cfg.backend not in ("auto", "fused", "torch"):
        raise ConfigError(f"unknown monodomain backend {cfg.backend!r}; choose auto, fused or torch")
    if cfg.backend == "fused" and device.type != "cpu":
        raise ConfigError(f"backend 'fused' runs on the CPU only (device {cfg.device!r}); use auto or torch")
    fused = device.type == "cpu" and cfg.backend != "torch"
    stepper_cls = _FusedStepper if fused else _TorchStepper
    stepper = stepper_cls(cfg=cfg, model=model, params=params, states=states, A=A_sp, B=B_sp,
                          lumped_mass=ops.lumped_mass, passive=passive, rec=rec, explicit=explicit)
    n_steps = int(round(cfg.t_end / cfg.dt))
    snap_every = int(round(cfg.snapshot_interval / cfg.dt)) if cfg.snapshot_interval > 0 else 0
    setup_s = time.perf_counter() - t_setup

    def stimulus_load(t_mid: float) -> torch.Tensor | None:
        """FE source F (mV/ms * mm^3) of the stimuli active at ``t_mid``; None when none is."""
        active = [(s, w) for s, w in zip(stimuli, stim_loads) if s.active(t_mid)]
        if not active:
            return None
        stim_vec.zero_()
        for s, w in active:
            stim_vec.add_(w, alpha=s.strength_mv_per_ms)
        return stim_vec

    cg_total = 0
    t_loop = time.perf_counter()
    t = 0.0
    for k in range(n_steps):
        stepper.save_old()
        with monitor.phase("ionic"):
            stepper.react(0.5 * cfg.dt if cfg.splitting == "strang" else cfg.dt)
        with monitor.phase("diffusion"):
            cg_total += stepper.diffuse(stimulus_load(t + 0.5 * cfg.dt))
        if cfg.splitting == "strang":
            with monitor.phase("ionic"):
                stepper.react(0.5 * cfg.dt)
        with monitor.phase("other"):
            stepper.record(t)
            t = (k + 1) * cfg.dt
            if (k + 1) % cfg.check_every_steps == 0 or k + 1 == n_steps:
                vmax = stepper.max_abs_vm()
                if not math.isfinite(vmax) or vmax > 1000.0:
                    partial = _result(mesh, rec, stimuli, cfg, {"failed_at_ms": t})
                    raise EPDivergenceError(
                        f"monodomain diverged: Vm {'is NaN' if not math.isfinite(vmax) else f'reached {vmax:.3g} mV'} "
                        f"at t = {t:.3f} ms (within the last {cfg.check_every_steps} steps, dt {cfg.dt} ms); "
                        "reduce dt or check the stimulus strength", t_ms=t, partial=partial)
            if snap_every and (k + 1) % snap_every == 0 and on_snapshot is not None:
                on_snapshot(t, states[0].double().cpu().numpy())
    loop_s = time.perf_counter() - t_loop
    meta = {"n_nodes": n, "n_steps": n_steps, "dt_ms": cfg.dt, "setup_s": setup_s, "loop_s": loop_s,
            "cg_iterations_total": cg_total, "device": str(device), "precision": cfg.precision,
            "splitting": cfg.splitting, "theta": theta, "mass": cfg.mass, "backend": "fused" if fused else "torch",
            **monitor.summary()}
    if isinstance(monitor, PerformanceMonitor):
        meta["s_per_simulated_ms"] = loop_s / cfg.t_end
    return _result(mesh, rec, stimuli, cfg, meta)


def _result(mesh: HeartMesh, rec: _Recorder, stimuli: list[Stimulus], cfg: MonodomainConfig,
            meta: dict[str, object]) -> EPResult:
    return EPResult(
        activation_times_ms=rec.act.double().cpu().numpy(),
        repolarisation_times_ms=rec.rep.double().cpu().numpy(),
        stimuli=tuple(s.describe() for s in stimuli),
        model=f"monodomain/{cfg.ionic_model}",
        metadata=meta,
    )
