"""0D circulation: conservation, periodic state, valves, and 3D-0D coupling consistency."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.circulation import (
    ClosedLoopConfig,
    Compartment,
    CoupledCirculation,
    WindkesselConfig,
    closed_loop_network,
    initial_volumes,
    run_0d,
    run_to_periodic,
    windkessel_network,
)
from cardiotwin.circulation.models import MMHG
from cardiotwin.circulation.network import Activation
from cardiotwin.config import load_config
from cardiotwin.errors import ConfigError


@pytest.fixture(scope="module")
def closed_loop():
    cfg = ClosedLoopConfig()
    net, init = closed_loop_network(cfg)
    return cfg, net, initial_volumes(net, init)


def test_closed_loop_conserves_volume_to_1e6(closed_loop):
    # A closed loop has no sources or sinks: total blood volume is an exact invariant.
    cfg, net, v0 = closed_loop
    trace = run_0d(net, v0, duration_ms=5 * cfg.period_ms, dt_ms=1.0)
    totals = np.array([v.sum() for v in trace.volumes_ml])
    assert np.max(np.abs(totals - v0.sum())) < 1e-6


def test_closed_loop_reaches_periodic_steady_state(closed_loop):
    cfg, net, v0 = closed_loop
    v_per, cycles, change = run_to_periodic(net, v0, period_ms=cfg.period_ms, dt_ms=1.0, tol_ml=0.01)
    assert cycles < 200 and change < 0.01
    trace = run_0d(net, v_per, duration_ms=cfg.period_ms, dt_ms=1.0)
    assert np.max(np.abs(trace.volumes_ml[-1] - v_per)) < 0.02  # one more beat repeats itself
    # Plausible adult haemodynamics (Regazzoni et al. 2022 report LV 50-120 mL, aortic ~80/120 mmHg)
    lv_v = trace.column("volumes_ml", "LV")
    sa_p = trace.column("pressures_kpa", "SA") / MMHG
    assert 90 < lv_v.max() < 160 and 30 < lv_v.min() < 80
    assert 60 < sa_p.min() < 100 and 100 < sa_p.max() < 150


def test_valves_prevent_backflow(closed_loop):
    cfg, net, v0 = closed_loop
    trace = run_0d(net, v0, duration_ms=2 * cfg.period_ms, dt_ms=1.0)
    q = np.array(trace.flows_ml_per_ms)
    for j, k in enumerate(net.connections):
        if k.valve:  # closed valve leaks through R_closed = 1e7 x R_open: negligible
            assert q[:, j].min() > -1e-4, k.name


def test_coupled_elastance_reproduces_0d_run():
    """Coupling check: a 'cavity model' that is the elastance law itself must give the 0D result."""
    act = Activation(0.0, 300.0, 150.0, 800.0)
    lv = Compartment("LV", "elastance", v0_ml=10.0, e_pass_kpa_per_ml=0.01, e_act_kpa_per_ml=0.3, activation=act)
    net, init = windkessel_network(WindkesselConfig(), chamber="LV", ventricle=lv)
    v = initial_volumes(net, {**init, "LV": 120.0})
    ref = run_0d(net, v, duration_ms=800.0, dt_ms=2.0)

    coupled_net = net.with_coupled(("LV",))
    p0 = float(ref.pressures_kpa[0][net.index["LV"]])
    cc = CoupledCirculation(coupled_net, v.copy(), ("LV",), {"LV": p0}, tol_ml=1e-8, rtol=0.0)
    t_now = {"t": 0.0}

    def cavity(p):
        return {"LV": p["LV"] / lv.elastance(t_now["t"]) + lv.v0_ml}

    lv_v = [120.0]
    for k in range(1, 401):
        t_now["t"] = 2.0 * k
        cc.step(2.0 * k, 2.0, cavity)
        lv_v.append(cc.volumes_ml[net.index["LV"]])
    np.testing.assert_allclose(lv_v, ref.column("volumes_ml", "LV"), atol=1e-5)
    assert max(lv_v) - min(lv_v) > 30  # it actually ejected


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="compliance"):
        load_config(WindkesselConfig, {"compliance": "-1 mL/kPa"}, source="test")
    with pytest.raises(ConfigError, match="r_sys_art"):
        load_config(ClosedLoopConfig, {"r_sys_art": 0}, source="test")
    cfg = load_config(ClosedLoopConfig, {"c_sys_art": "1.2 mL/mmHg"}, source="test")
    assert cfg.c_sys_art == pytest.approx(1.2 / MMHG)
