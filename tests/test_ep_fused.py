"""Fused CPU kernels (electrophysiology/cpu_kernels.py) against the torch reference path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from cardiotwin.electrophysiology import cpu_kernels
from cardiotwin.electrophysiology.ionic import tentusscher2006 as tt
from cardiotwin.electrophysiology.monodomain import MonodomainConfig, _Recorder, simulate_monodomain
from cardiotwin.electrophysiology.stimulus import niederer_stimulus
from cardiotwin.errors import ConfigError
from cardiotwin.meshing.analytic import niederer_slab


def _perturbed_states(n: int) -> torch.Tensor:
    """TTP06 states spread over an action potential: resting cells with V from -90 to +40 mV."""
    s = tt.initial_state(n)
    s[0] = torch.linspace(-90.0, 40.0, n, dtype=torch.float64)
    return s


@pytest.mark.parametrize("cell_type", ["epi", "endo"])
def test_fused_ttp06_step_equals_torch_tabulated_step(cell_type: str) -> None:
    p = tt.params_for(cell_type)
    tables = tt.build_tables(0.02, p)
    ref = _perturbed_states(257)
    fused = ref.clone()
    kernel = cpu_kernels.TTP06Kernel(tables, p, np.float64)
    passive = np.zeros(ref.shape[1], dtype=bool)
    for _ in range(300):  # 6 ms: upstrokes, calcium release, gates moving
        tt.step_tabulated(ref, 0.02, tables=tables, params=p)
        kernel.step(fused.numpy(), passive)
    assert torch.isfinite(fused).all()
    rel = ((fused - ref).abs() / (ref.abs() + 1e-12)).max()
    assert float(rel) < 1e-9  # same formulas; only the order of floating-point operations differs


def test_fused_ttp06_keeps_passive_vm() -> None:
    p = tt.params_for("epi")
    s = _perturbed_states(16).numpy()
    v0 = s[0].copy()
    passive = np.zeros(16, dtype=bool)
    passive[::3] = True
    cpu_kernels.TTP06Kernel(tt.build_tables(0.05, p), p, np.float64).step(s, passive)
    assert np.array_equal(s[0, passive], v0[passive])
    assert not np.any(s[0, ~passive] == v0[~passive])


def test_fused_pcg_solves_spd_system() -> None:
    mesh = niederer_slab(dx_mm=0.5)
    from cardiotwin.electrophysiology.operators import assemble

    ops = assemble(mesh, d_l=0.1171, d_t=0.0195)
    a = (ops.mass + 0.025 * ops.stiffness).tocsr()
    x_true = np.sin(mesh.points[:, 0]) * 40.0 - 60.0
    b = a @ x_true
    for dtype, tol in ((np.float64, 1e-8), (np.float32, 1e-4)):
        mat = cpu_kernels.CSRMatrix(a, dtype)
        x = np.full(mesh.n_points, -85.0, dtype=dtype)
        its = mat.pcg(b.astype(dtype), x, rtol=tol, max_iterations=500)
        assert 0 < its < 100
        assert np.linalg.norm(a @ x - b) <= 1.01 * tol * np.linalg.norm(b)
    # products equal scipy's
    y = np.empty(mesh.n_points)
    f = np.cos(mesh.points[:, 1])
    mat = cpu_kernels.CSRMatrix(a, np.float64)
    assert np.allclose(mat.matvec_plus(x_true, f, 0.3, y), a @ x_true + 0.3 * f, rtol=1e-12, atol=1e-9)
    assert np.allclose(spla.spsolve(a.tocsc(), b), x_true, atol=1e-8)  # the system is the one meant


def test_record_crossings_equals_torch_recorder() -> None:
    rng = np.random.default_rng(3)
    v_old = rng.uniform(-90.0, 30.0, 500)
    v_new = v_old + rng.uniform(-60.0, 60.0, 500)
    act = np.where(rng.random(500) < 0.3, 1.0, np.nan)
    rep = np.full(500, np.nan)
    rec = _Recorder(act=torch.tensor(act), rep=torch.tensor(rep), thr_up=0.0, thr_down=-70.0)
    rec.update(torch.tensor(v_old), torch.tensor(v_new), 2.0, 0.05)
    cpu_kernels.record_crossings(v_old, v_new, act, rep, 2.0, 0.05, 0.0, -70.0)
    assert np.allclose(act, rec.act.numpy(), equal_nan=True, rtol=0, atol=1e-12)
    assert np.allclose(rep, rec.rep.numpy(), equal_nan=True, rtol=0, atol=1e-12)
    assert np.isfinite(act).sum() > 150 and np.isfinite(rep).sum() > 10  # both branches exercised


@pytest.mark.parametrize("ionic_model", ["ttp06", "ms"])
def test_fused_monodomain_matches_torch_backend(ionic_model: str) -> None:
    """Niederer slab dx 0.5: the two backends solve the same discrete problem; activation times agree
    to the CG tolerance (cg_rtol 1e-6 moves P1..P9 by < 0.003 ms, see MonodomainConfig)."""
    mesh = niederer_slab(dx_mm=0.5)
    cfg = MonodomainConfig(dt=0.05, t_end=30.0, ionic_model=ionic_model)
    fused = simulate_monodomain(mesh, [niederer_stimulus()], cfg=replace(cfg, backend="fused"))
    ref = simulate_monodomain(mesh, [niederer_stimulus()], cfg=replace(cfg, backend="torch"))
    assert fused.metadata["backend"] == "fused" and ref.metadata["backend"] == "torch"
    a, b = fused.activation_times_ms, ref.activation_times_ms
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    assert np.isfinite(a).sum() > mesh.n_points // 5  # the wave is well under way (MS: ~30 % of the slab)
    assert np.nanmax(np.abs(a - b)) < 0.01


def test_fused_backend_refuses_gpu_device() -> None:
    with pytest.raises(ConfigError):
        simulate_monodomain(niederer_slab(dx_mm=0.5), [niederer_stimulus()],
                            cfg=MonodomainConfig(dt=0.05, t_end=1.0, backend="fused", device="cuda"))


def test_fused_explicit_lumped_matches_torch() -> None:
    mesh = niederer_slab(dx_mm=0.5)
    cfg = MonodomainConfig(dt=0.01, t_end=8.0, theta=0.0, mass="lumped", ionic_model="ms")
    a = simulate_monodomain(mesh, [niederer_stimulus()], cfg=replace(cfg, backend="fused")).activation_times_ms
    b = simulate_monodomain(mesh, [niederer_stimulus()], cfg=replace(cfg, backend="torch")).activation_times_ms
    assert np.isfinite(a).sum() > 50
    assert np.allclose(a, b, equal_nan=True, atol=1e-9)



def test_numba_threading_layer_leaves_torch_thread_count() -> None:
    # numba's OpenMP layer, started by the first parallel kernel, resets the shared OpenMP thread count
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cpu_kernels.use_torch_threads() == 1
        x = np.zeros(8)
        cpu_kernels.increment(x, x, x)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
