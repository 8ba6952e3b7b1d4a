"""`cardiotwin bench ep`: monodomain wall time per simulated ms on the Niederer slab (with the
ionic / diffusion / other split from the monitor) and eikonal lead sweeps on an idealised
biventricle. TorchCor is compared when it is importable in the venv."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from cardiotwin.machine import machine_description
from cardiotwin.electrophysiology.torchcor_compare import (
    TorchCorMissingError,
    compare_niederer,
    comparison_markdown,
)

log = logging.getLogger(__name__)


def _cached_biventricle(char_length_mm: float):  # noqa: ANN202 - HeartMesh
    """The bench biventricle, kept under .cache/bench (gmsh takes minutes at ~200k nodes)."""
    from pathlib import Path

    from cardiotwin.io.meshes import read_mesh, write_mesh

    path = Path(".cache") / "bench" / f"biventricle_{char_length_mm:g}mm.vtu"
    if path.is_file():
        return read_mesh(path)
    mesh = _biventricle_with_fibres(char_length_mm)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mesh(mesh, path)
    return mesh


def _biventricle_with_fibres(char_length_mm: float):  # noqa: ANN202 - HeartMesh
    from cardiotwin.meshing.analytic import idealised_biventricle

    mesh = idealised_biventricle(char_length_mm=char_length_mm)
    # circumferential fibres about the long (z) axis: enough for timing the solver
    p = mesh.points
    f = np.cross(np.array([0.0, 0.0, 1.0]), p - p.mean(axis=0))
    f[np.linalg.norm(f, axis=1) < 1e-9] = (1.0, 0.0, 0.0)
    return mesh.with_fields(point_data={"f0": f / np.linalg.norm(f, axis=1)[:, None]})


def bench_ep(*, quick: bool) -> str:
    """Markdown section with the measured numbers (see module docstring)."""
    from cardiotwin.electrophysiology.eikonal import EikonalConfig, EikonalSolver, simulate_eikonal
    from cardiotwin.electrophysiology.monitor import PerformanceMonitor
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig
    from cardiotwin.electrophysiology.verify import run_niederer

    dx, t_end = (0.5, 5.0) if quick else (0.2, 10.0)
    cmd = "cardiotwin bench ep" + (" --quick" if quick else "")
    lines = [f"## ep: electrophysiology compute core\n", f"Command: `{cmd}`; machine: {machine_description()}; "
             f"torch threads {torch.get_num_threads()}.\n"]
    lines.append("| case | backend | nodes | dt (ms) | simulated (ms) | wall (s) | s per simulated ms | ionic / diffusion / other (s) | CG its/step |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    # compile the fused kernels (numba, cached on disk) before timing
    run_niederer(dx_mm=1.0, dt_ms=0.05, t_end_ms=0.2, cfg=MonodomainConfig(backend="fused"))
    run_niederer(dx_mm=1.0, dt_ms=0.05, t_end_ms=0.2, cfg=MonodomainConfig(backend="fused", precision="float32"))
    for backend, prec in (("fused", "float64"), ("fused", "float32"), ("torch", "float64"), ("torch", "float32")):
        mon = PerformanceMonitor()
        _, res = run_niederer(dx_mm=dx, dt_ms=0.01 if not quick else 0.05, t_end_ms=t_end,
                              cfg=MonodomainConfig(precision=prec, backend=backend), monitor=mon)
        m = res.metadata
        lines.append(
            f"| Niederer slab dx {dx} mm, TTP06, {prec}, CPU | {backend} | {m['n_nodes']} | {m['dt_ms']} | {t_end} | "
            f"{m['loop_s']:.1f} | {m['loop_s'] / t_end:.2f} | {m.get('ionic_s', 0):.1f} / {m.get('diffusion_s', 0):.1f} / "
            f"{m.get('other_s', 0):.1f} | {m['cg_iterations_total'] / max(1, m['n_steps']):.1f} |")
    lines.append("\n`fused`: compiled CPU kernels (the CPU default); `torch`: tensor operations (the GPU path).")
    # Side by side with TorchCor (issue #5): same slab, dt and cell model, one run after the other.
    try:
        side = compare_niederer(dx_mm=dx, dt_ms=0.01 if not quick else 0.05, t_end_ms=t_end,
                                threads=torch.get_num_threads())
        lines.append(f"\nTorchCor side by side on the Niederer slab (dx {dx} mm, TorchCor set up as in "
                     "its own demos; see `cardiotwin/electrophysiology/torchcor_compare.py`):\n")
        lines.append(comparison_markdown(side))
    except TorchCorMissingError as exc:
        lines.append(f"\nTorchCor: {exc}. No side-by-side ratio is reported.")

    from cardiotwin.bench.ep_eikonal import eikonal_section

    lines += eikonal_section(quick=quick, mesh_factory=_cached_biventricle)
    lines.append("\nGPU: not measured (no GPU lent to this session); the same code runs with `device='cuda'`.")
    return "\n".join(lines) + "\n"
