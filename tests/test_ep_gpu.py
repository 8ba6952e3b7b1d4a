"""CPU vs CUDA agreement of the EP solvers (skipped without a CUDA device)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cardiotwin.electrophysiology.eikonal import EikonalConfig, simulate_eikonal
from cardiotwin.electrophysiology.monodomain import MonodomainConfig, simulate_monodomain
from cardiotwin.electrophysiology.stimulus import niederer_stimulus
from cardiotwin.meshing.analytic import niederer_slab

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_monodomain_cuda_matches_cpu() -> None:
    mesh = niederer_slab(dx_mm=0.5, size_mm=(8.0, 3.0, 2.0))
    cfg = MonodomainConfig(dt=0.05, t_end=20.0)
    cpu = simulate_monodomain(mesh, [niederer_stimulus()], cfg=cfg)
    for prec, tol in (("float64", 1e-6), ("float32", 0.05)):
        gpu = simulate_monodomain(mesh, [niederer_stimulus()], cfg=replace(cfg, device="cuda", precision=prec))
        assert np.nanmax(np.abs(gpu.activation_times_ms - cpu.activation_times_ms)) < tol


def test_eikonal_cuda_matches_cpu() -> None:
    mesh = niederer_slab(dx_mm=0.5, size_mm=(8.0, 3.0, 2.0))
    a = simulate_eikonal(mesh, [((0.0, 0.0, 0.0), 0.0)], cfg=EikonalConfig())
    b = simulate_eikonal(mesh, [((0.0, 0.0, 0.0), 0.0)], cfg=EikonalConfig(device="cuda"))
    assert np.allclose(a.activation_times_ms, b.activation_times_ms, atol=1e-9)
