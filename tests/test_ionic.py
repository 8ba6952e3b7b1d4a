"""Single-cell checks of the ionic models (plain functions over state tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiotwin.electrophysiology.ionic import mitchell_schaeffer as ms
from cardiotwin.electrophysiology.ionic import tentusscher2006 as ttp


def _apd90(times: np.ndarray, v: np.ndarray, v_rest: float) -> tuple[float, float]:
    up = times[np.argmax(v > -40.0)]
    vmax = v.max()
    v90 = vmax - 0.9 * (vmax - v_rest)
    after = np.flatnonzero((v < v90) & (times > up + 10.0))
    return float(times[after[0]] - up), float(vmax)


def test_mitchell_schaeffer_apd_matches_published_formula() -> None:
    # Mitchell & Schaeffer 2003 (Bull Math Biol 65:767): repolarisation starts when the gate has
    # closed to h_min = 4 tau_in / tau_out, i.e. APD_max = tau_close * ln(tau_out / (4 tau_in))
    # = 150 ln 5 = 241.4 ms. That is the leading order in tau_in / tau_out; the slow passage
    # through the fold adds a few per cent, so the half-amplitude APD must lie within
    # [formula, formula * 1.10].
    p = ms.MSParams()
    s = ms.initial_state(1, params=p)
    dt = 0.01
    n = int(400 / dt)
    u = np.empty(n)
    for k in range(n):
        ms.step(s, dt, stim_mv_per_ms=50.0 if k * dt < 1.0 else 0.0, params=p)
        u[k] = (float(s[0, 0]) - p.v_rest_mv) / (p.v_peak_mv - p.v_rest_mv)
    t = np.arange(n) * dt
    up = t[np.argmax(u > 0.5)]
    apd50 = t[np.flatnonzero((u < 0.5) & (t > up + 10.0))[0]] - up
    assert ms.apd_max_ms(p) <= apd50 <= 1.10 * ms.apd_max_ms(p)


def test_ttp06_epi_action_potential_and_steady_state() -> None:
    # Niederer 2011 initial state is the TTP06 epicardial state at 1 Hz pacing: after one beat
    # (stimulus 52 mV/ms for 1 ms) the cell must return close to it. TTP06 (ten Tusscher &
    # Panfilov 2006, Fig. 3) epicardial AP: overshoot about +30..+40 mV, spike-and-dome, APD90 of
    # roughly 270-310 ms at 1 Hz.
    s = ttp.initial_state(1)
    dt = 0.05
    n = int(400 / dt)
    v = np.empty(n)
    p = ttp.params_for("epi")
    for k in range(n):
        ttp.step(s, dt, stim_mv_per_ms=52.0 if k * dt < 1.0 else 0.0, params=p)
        v[k] = float(s[0, 0])
    apd, vmax = _apd90(np.arange(n) * dt, v, ttp.NIEDERER_INITIAL[0])
    assert 25.0 < vmax < 45.0
    assert 270.0 < apd < 310.0
    assert v[-1] == pytest.approx(ttp.NIEDERER_INITIAL[0], abs=1.0)
    assert float(s[17, 0]) == pytest.approx(ttp.NIEDERER_INITIAL[17], rel=0.01)  # Na_i
    assert float(s[18, 0]) == pytest.approx(ttp.NIEDERER_INITIAL[18], rel=0.001)  # K_i


def test_ttp06_cell_types_differ_as_published() -> None:
    # ten Tusscher 2006: M cells have the smallest g_Ks (longest APD), endo the smallest g_to.
    assert ttp.params_for("mid").g_Ks < ttp.params_for("epi").g_Ks
    assert ttp.params_for("endo").g_to < ttp.params_for("epi").g_to
    s = ttp.initial_state(3)
    out = ttp.currents_and_rates(s, ttp.params_for("endo"))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_ttp06_float32_matches_float64_upstroke() -> None:
    # float32 option for the GPU path: the upstroke time over 5 ms agrees within one step.
    res = {}
    for dtype in (torch.float64, torch.float32):
        s = ttp.initial_state(1, dtype=dtype)
        t_up = None
        for k in range(200):
            ttp.step(s, 0.025, stim_mv_per_ms=52.0 if k * 0.025 < 1.0 else 0.0)
            if t_up is None and float(s[0, 0]) > 0.0:
                t_up = k * 0.025
        res[dtype] = (t_up, float(s[0, 0]))
    assert res[torch.float32][0] == pytest.approx(res[torch.float64][0], abs=0.03)
    assert res[torch.float32][1] == pytest.approx(res[torch.float64][1], abs=0.5)
