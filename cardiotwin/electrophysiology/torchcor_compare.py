"""Side by side: our monodomain and TorchCor (Zhou et al., github.com/sagebei/torchcor, a PyTorch
FEM monodomain) on the Niederer et al. 2011 slab, same mesh, same time step, same machine.

Both solvers get the identical structured slab (``meshing.analytic.niederer_slab``; TorchCor
reads it as openCARP .pts/.elem/.lon files written by ``io.meshes.write_opencarp``), the ten
Tusscher-Panfilov 2006 epicardial cell (the Niederer specification, shared/BENCHMARKS.md),
float64, fibres along x and the Niederer stimulus (35.71 mV/ms for 2 ms in [0, 1.5]^3 mm).

TorchCor is set up the way its authors run it (``demo/monodomain_ventricle.py``,
``benchmark/torchcor/volume.py`` in its repository): bidomain conductivities il 0.17, it 0.019,
el 0.62, et 0.24 S/m, which it reduces to their harmonic means (0.1334 / 0.0176 S/m) with its
default chi 140 /mm and Cm 0.01 uF/mm^2 (so D_l = 0.0953 mm^2/ms as ours), Crank-Nicolson with
a consistent mass matrix, Jacobi-CG to a_tol = r_tol = 1e-5 on the preconditioned residual,
and its own initial state of the cell model. Its stimulus ``intensity`` is a source on dV/dt in
mV/ms (``Monodomain.step`` adds ``dt * I / 100`` to ``Cm V`` with ``Cm = 0.01``), i.e. the same
35.71 mV/ms as ours, applied at the nodes inside the box.

TorchCor is optional: install it with ``scripts/install_torchcor.sh``.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cardiotwin.electrophysiology.monitor import PerformanceMonitor
from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
from cardiotwin.electrophysiology.stimulus import Stimulus, niederer_stimulus
from cardiotwin.electrophysiology.verify import NIEDERER_POINTS_MM
from cardiotwin.errors import CardiotwinError, StageError
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)

TORCHCOR_INSTALL_HINT = (
    "install it into the venv with `scripts/install_torchcor.sh` (pip install --no-deps torchcor==1.0.6, "
    "then scikit-learn and nvidia-ml-py: a plain `pip install torchcor` fails on its pandas<3 pin)")

# Niederer 2011 bidomain conductivities (S/m); TorchCor takes their harmonic mean itself.
NIEDERER_SIGMA_S_PER_M: dict[str, float] = {"il": 0.17, "it": 0.019, "el": 0.62, "et": 0.24}
# TorchCor's CG tolerances and iteration cap as in its demos (on the Jacobi-preconditioned residual).
TORCHCOR_A_TOL = 1e-5
TORCHCOR_R_TOL = 1e-5
TORCHCOR_MAX_ITER = 500


class TorchCorMissingError(CardiotwinError, ImportError):
    """TorchCor (or a module its monodomain import chain needs) is not importable in this venv."""


def _import_torchcor() -> tuple[type, type, str]:
    """(Monodomain, TenTusscherPanfilov, version) from TorchCor; TorchCorMissingError if it is missing."""
    try:
        import importlib.metadata as md

        from torchcor.ionic import TenTusscherPanfilov
        from torchcor.simulator import Monodomain
    except ImportError as exc:  # torchcor itself, or sklearn / pynvml that its imports need
        raise TorchCorMissingError(f"TorchCor is not importable ({exc}); {TORCHCOR_INSTALL_HINT}") from exc
    try:
        version = md.version("torchcor")
    except md.PackageNotFoundError:
        version = "unknown"
    return Monodomain, TenTusscherPanfilov, version


def torchcor_available() -> bool:
    """True when TorchCor's monodomain solver can be imported."""
    try:
        _import_torchcor()
    except TorchCorMissingError:
        return False
    return True


def write_torchcor_inputs(mesh: HeartMesh, stimulus: Stimulus, directory: Path) -> tuple[Path, Path]:
    """Write ``mesh`` as openCARP files (``slab.pts`` in um, ``slab.elem``, ``slab.lon`` with one
    fibre vector per element, as TorchCor's MeshReader expects) into ``directory/mesh`` and the
    stimulated nodes of ``stimulus`` as a ``.vtx`` list into ``directory``. Returns (mesh_dir, vtx)."""
    from cardiotwin.io.meshes import write_opencarp

    if "f0" not in mesh.point_data and "f0" not in mesh.cell_data:
        raise StageError(f"mesh {mesh.name!r}: no fibre field f0 to write for TorchCor")
    # f0 only: with s0 the .lon file gets two vectors per line, which TorchCor reads as one 6-vector.
    fibre_only = replace(mesh, point_data={k: v for k, v in mesh.point_data.items() if k == "f0"},
                         cell_data={k: v for k, v in mesh.cell_data.items() if k == "f0"})
    mesh_dir = Path(directory) / "mesh"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    write_opencarp(fibre_only, mesh_dir / "slab")
    nodes = stimulus.nodes(mesh.points)
    vtx = Path(directory) / "stimulus.vtx"
    with open(vtx, "w") as fh:  # openCARP vertex list: count, "extra" / "intra", one index a line
        fh.write(f"{nodes.size}\nextra\n")
        np.savetxt(fh, nodes, fmt="%d")
    return mesh_dir, vtx


def _point_indices(points_mm: np.ndarray) -> dict[str, int]:
    """Nearest mesh node to each Niederer point P1..P9 (they are nodes when dx divides 0.5 mm)."""
    return {name: int(np.argmin(np.linalg.norm(points_mm - np.asarray(p), axis=1)))
            for name, p in NIEDERER_POINTS_MM.items()}


def _vm_summary(vm_mv: np.ndarray) -> dict[str, Any]:
    return {"vm_finite": bool(np.all(np.isfinite(vm_mv))), "vm_min_mv": float(np.min(vm_mv)),
            "vm_max_mv": float(np.max(vm_mv))}


def run_ours(mesh: HeartMesh, *, dt_ms: float, t_end_ms: float, device: str = "cpu") -> dict[str, Any]:
    """Our monodomain on ``mesh`` with the Niederer set-up of ``verify.run_niederer`` (TTP06 epi,
    float64, default CG tolerance). Returns wall / setup / loop seconds (and the ionic / diffusion
    split of the loop), seconds of time stepping per simulated ms, nodes, CG iterations per step,
    the final Vm range and activation at P1..P9 (ms, NaN where not reached by ``t_end_ms``)."""
    cfg = replace(MonodomainConfig(), dt=dt_ms, t_end=t_end_ms, ionic_model="ttp06", cell_type="epi",
                  precision="float64", device=device, snapshot_interval=t_end_ms)
    final_vm: list[np.ndarray] = []
    monitor = PerformanceMonitor(cuda_sync=device.startswith("cuda"))
    # the fused CPU kernels compile on first use (then load from numba's disk cache): warm up on a
    # few steps of a small slab, timed and reported like TorchCor's JIT warm-up
    t_warm = time.perf_counter()
    from cardiotwin.meshing.analytic import niederer_slab

    simulate_monodomain(niederer_slab(dx_mm=1.0), [niederer_stimulus()], cfg=replace(cfg, t_end=4 * dt_ms,
                                                                                      snapshot_interval=0.0))
    warmup_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    res = simulate_monodomain(mesh, [niederer_stimulus()], cfg=cfg, monitor=monitor,
                              on_snapshot=lambda _t, vm: final_vm.append(vm))
    wall_s = time.perf_counter() - t0
    m = res.metadata
    idx = _point_indices(mesh.points)
    return {
        "solver": "cardiotwin monodomain",
        "settings": f"TTP06 epi, float64, {m['backend']} backend, {cfg.splitting} splitting, theta {cfg.theta}, {cfg.mass} mass, "
                    f"Jacobi-CG rtol {cfg.cg_rtol:g}, FE stimulus over the box tets",
        "nodes": int(m["n_nodes"]),
        "wall_s": wall_s,
        "setup_s": float(m["setup_s"]),
        "loop_s": float(m["loop_s"]),
        "jit_warmup_s": warmup_s,
        "s_per_simulated_ms": float(m["loop_s"]) / t_end_ms,
        "cg_iterations_per_step": float(m["cg_iterations_total"]) / max(1, int(m["n_steps"])),
        "ionic_s": float(m.get("ionic_s", math.nan)),
        "diffusion_s": float(m.get("diffusion_s", math.nan)),
        "activation_ms": {k: float(res.activation_times_ms[i]) for k, i in idx.items()},
        **_vm_summary(final_vm[-1]),
    }


def run_torchcor(mesh: HeartMesh, *, dt_ms: float, t_end_ms: float, workdir: Path,
                 snapshot_interval_ms: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """TorchCor's monodomain on ``mesh`` (written to ``workdir`` as openCARP files) with its own
    Niederer set-up (module docstring). ``snapshot_interval_ms`` (default: the multiple of dt
    nearest 0.1 ms) sets how often TorchCor stores Vm, from which its ``compute_activation_map``
    interpolates the 0 mV crossing. Same keys as ``run_ours``; TorchCorMissingError if absent."""
    Monodomain, TenTusscherPanfilov, version = _import_torchcor()
    steps_per_snapshot = max(1, round((snapshot_interval_ms or 0.1) / dt_ms))
    snapshot_ms = steps_per_snapshot * dt_ms
    mesh_dir, vtx = write_torchcor_inputs(mesh, niederer_stimulus(), workdir)
    stim = niederer_stimulus()
    tdev = torch.device(device)

    # TorchCor wraps the cell model's right-hand side in torch.compile: the first call for a new
    # node count compiles it (seconds with a warm inductor cache, about a minute cold on 2 cores).
    # Warm it up on a throw-away cell model of the same size so the timed run measures stepping.
    tw = time.perf_counter()
    warm = TenTusscherPanfilov(cell_type="EPI", dt=dt_ms)
    warm.device, warm.dtype = tdev, torch.float64
    warm.differentiate(warm.initialize(mesh.n_points))
    jit_warmup_s = time.perf_counter() - tw

    t0 = time.perf_counter()
    ionic = TenTusscherPanfilov(cell_type="EPI", dt=dt_ms)
    sim = Monodomain(ionic_models=[ionic], T=t_end_ms, dt=dt_ms, device=tdev, dtype=torch.float64)
    sim.load_mesh(path=str(mesh_dir), unit_conversion=1000)  # .pts in um -> mm
    if sim.n_nodes != mesh.n_points:
        raise StageError(f"{mesh_dir}: TorchCor read {sim.n_nodes} nodes, the mesh has {mesh.n_points}")
    sim.add_conductivity(None, **NIEDERER_SIGMA_S_PER_M)
    # period beyond the run: TorchCor re-fires a stimulus whenever t % period == start, i.e. at t = T
    sim.add_stimulus(str(vtx), start=stim.start_ms, duration=stim.duration_ms,
                     intensity=stim.strength_mv_per_ms, period=2.0 * t_end_ms + stim.duration_ms)
    assembly_s = 0.0
    assemble = sim.assemble

    def timed_assemble() -> None:  # solve() assembles first; time it to split setup from stepping
        nonlocal assembly_s
        ta = time.perf_counter()
        assemble()
        assembly_s += time.perf_counter() - ta

    sim.assemble = timed_assemble
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        vm = sim.solve(a_tol=TORCHCOR_A_TOL, r_tol=TORCHCOR_R_TOL, max_iter=TORCHCOR_MAX_ITER,
                       snapshot_interval=snapshot_ms, verbose=False, result_path=str(Path(workdir) / "out"))
    except Exception as exc:  # TorchCor raises a bare Exception when CG exceeds max_iter
        raise StageError(f"TorchCor monodomain failed on {mesh_dir}: {exc}") from exc
    if tdev.type == "cuda":
        torch.cuda.synchronize()
    solve_s = time.perf_counter() - t1
    wall_s = time.perf_counter() - t0
    loop_s = solve_s - assembly_s
    n_steps = int(t_end_ms / dt_ms)  # as TorchCor counts them
    at = sim.compute_activation_map(vm, snapshot_interval=snapshot_ms, threshold=0.0, interpolate=True)
    at = at.double().cpu().numpy()
    idx = _point_indices(mesh.points)
    return {
        "solver": f"TorchCor {version}",
        "settings": f"TTP06 EPI (TorchCor initial state), float64, theta {sim.theta}, consistent mass, "
                    f"Jacobi-CG a_tol {TORCHCOR_A_TOL:g} r_tol {TORCHCOR_R_TOL:g}, nodal stimulus, "
                    f"Vm stored every {snapshot_ms:g} ms",
        "nodes": int(sim.n_nodes),
        "wall_s": wall_s,
        "setup_s": load_s + assembly_s,
        "loop_s": loop_s,
        "jit_warmup_s": jit_warmup_s,
        "s_per_simulated_ms": loop_s / (n_steps * dt_ms),
        "snapshot_interval_ms": snapshot_ms,
        "activation_ms": {k: float(at[i]) for k, i in idx.items()},
        **_vm_summary(vm[-1].double().cpu().numpy()),
    }


def compare_niederer(*, dx_mm: float, dt_ms: float, t_end_ms: float, threads: int,
                     snapshot_interval_ms: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run our monodomain and TorchCor one after the other on the same Niederer slab (node spacing
    ``dx_mm``), time step ``dt_ms`` and duration ``t_end_ms``, with ``threads`` torch threads.

    Returns {"dx_mm", "dt_ms", "t_end_ms", "threads", "device", "nodes", "tets",
    "cardiotwin": {...}, "torchcor": {...}, "ratio", "ratio_wall"}: per solver wall_s (setup and
    time stepping), setup_s, loop_s, jit_warmup_s (TorchCor's one-off torch.compile of its cell
    model, done before and outside wall_s), s_per_simulated_ms (time stepping only), nodes, activation_ms
    at P1..P9 (NaN if not reached), vm_finite / vm_min_mv / vm_max_mv of the final Vm, settings.
    ``ratio`` = TorchCor / ours seconds per simulated ms (> 1: ours is faster); ``ratio_wall`` the
    same for the whole wall time. Raises TorchCorMissingError (an ImportError) if TorchCor is absent.
    """
    from cardiotwin.meshing.analytic import niederer_slab

    _import_torchcor()  # fail before spending minutes on our side
    mesh = niederer_slab(dx_mm=dx_mm)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = run_ours(mesh, dt_ms=dt_ms, t_end_ms=t_end_ms, device=device)
        with tempfile.TemporaryDirectory(prefix="cardiotwin_torchcor_") as tmp:
            theirs = run_torchcor(mesh, dt_ms=dt_ms, t_end_ms=t_end_ms, workdir=Path(tmp),
                                  snapshot_interval_ms=snapshot_interval_ms, device=device)
    finally:
        torch.set_num_threads(previous)
    ratio = theirs["s_per_simulated_ms"] / ours["s_per_simulated_ms"] if ours["s_per_simulated_ms"] > 0 else math.nan
    log.info("Niederer dx %g dt %g, %g ms: ours %.3f s/ms, TorchCor %.3f s/ms (ratio %.2f); P8 %.2f / %.2f ms",
             dx_mm, dt_ms, t_end_ms, ours["s_per_simulated_ms"], theirs["s_per_simulated_ms"], ratio,
             ours["activation_ms"]["P8"], theirs["activation_ms"]["P8"])
    return {
        "dx_mm": dx_mm, "dt_ms": dt_ms, "t_end_ms": t_end_ms, "threads": threads, "device": device,
        "nodes": mesh.n_points, "tets": mesh.n_cells,
        "cardiotwin": ours, "torchcor": theirs,
        "ratio": ratio, "ratio_wall": theirs["wall_s"] / ours["wall_s"],
    }


def comparison_markdown(result: dict[str, Any]) -> str:
    """Markdown table rows (one per solver) and the ratio line for a ``compare_niederer`` result."""
    def fmt_ms(v: float) -> str:
        return "not reached" if math.isnan(v) else f"{v:.2f}"

    lines = [
        "| solver | nodes | dt (ms) | simulated (ms) | wall (s) | setup (s) | time stepping (s) | "
        "s per simulated ms | JIT warm-up, not in wall (s) | P1 / P9 / P8 activation (ms) | settings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("cardiotwin", "torchcor"):
        r = result[key]
        a = r["activation_ms"]
        lines.append(
            f"| {r['solver']} | {r['nodes']} | {result['dt_ms']} | {result['t_end_ms']} | {r['wall_s']:.1f} | "
            f"{r['setup_s']:.1f} | {r['loop_s']:.1f} | {r['s_per_simulated_ms']:.3f} | {r['jit_warmup_s']:.1f} | "
            f"{fmt_ms(a['P1'])} / {fmt_ms(a['P9'])} / {fmt_ms(a['P8'])} | {r['settings']} |")
    lines.append(
        f"\nRatio TorchCor / cardiotwin, seconds per simulated ms of time stepping: **{result['ratio']:.2f}** "
        f"({'ours faster' if result['ratio'] > 1 else 'TorchCor faster'}); whole wall time incl. setup: "
        f"{result['ratio_wall']:.2f}. Same slab (dx {result['dx_mm']} mm, {result['nodes']} nodes, "
        f"{result['tets']} tets), {result['threads']} torch threads, device {result['device']}.")
    return "\n".join(lines)
