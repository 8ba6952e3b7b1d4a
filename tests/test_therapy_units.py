"""Unit checks of the CRT building blocks: metrics, TARGET concordance, QMC design, sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.config import load_config
from cardiotwin.errors import ConfigError
from cardiotwin.therapy import uq
from cardiotwin.therapy.metrics import activation_metrics, change_vs_baseline
from cardiotwin.therapy.ranking import AHA_ADJACENT, concordance, latest_segment
from cardiotwin.therapy.stage import CRTConfig


def test_activation_metrics_on_a_uniform_line():
    # 101 equal-volume points activated at 0..100 ms: TAT 100, t90 = 90 ms (90 % of the volume),
    # LV = the second half -> LVAT 100; a blocked point is ignored, an unreached one is counted.
    t = np.linspace(0.0, 100.0, 101) + 20.0
    t = np.append(t, [np.inf, 1000.0])
    conducting = np.ones(t.size, dtype=bool)
    conducting[-1] = False
    lv = np.zeros(t.size, dtype=bool)
    lv[50:101] = True
    m = activation_metrics(t, conducting=conducting, lv_mask=lv, volumes_mm3=np.ones(t.size))
    assert m["onset_ms"] == 20.0 and m["tat_ms"] == 100.0 and m["lvat_ms"] == 100.0
    assert m["t90_ms"] == pytest.approx(90.0, abs=1.0)
    assert m["unreached_fraction"] == pytest.approx(1.0 / 102.0)
    ch = change_vs_baseline({"tat_ms": 80.0, "lvat_ms": 50.0, "t90_ms": 45.0}, {"tat_ms": 100.0, "lvat_ms": 100.0, "t90_ms": 90.0})
    assert ch == {"tat_change_pct": -20.0, "lvat_change_pct": -50.0, "t90_change_pct": -50.0}


def test_target_concordance_and_aha_adjacency():
    # Khan et al. 2012 (TARGET): concordant = latest segment, adjacent = bordering segment, else remote
    assert concordance(11, 11) == "concordant"
    assert concordance(5, 11) == "adjacent"      # basal inferolateral above mid inferolateral
    assert concordance(12, 11) == "adjacent"     # same ring neighbour
    assert concordance(16, 11) == "adjacent"     # apical lateral below mid inferolateral
    assert concordance(2, 11) == "remote"
    assert concordance(0, 11) == ""
    assert all(a in AHA_ADJACENT[b] for a in range(1, 18) for b in AHA_ADJACENT[a])  # symmetric
    assert AHA_ADJACENT[17] == frozenset({13, 14, 15, 16})
    assert latest_segment({5: 90.0, 11: 120.0, 12: 110.0}, exclude=(11,)) == 12


def test_qmc_design_is_deterministic_and_covers_the_ranges():
    cfg = uq.UQConfig(samples=16, seed=7)
    a, b = uq.design(cfg), uq.design(cfg)
    assert np.array_equal(a, b) and a.shape == (16, 4)
    assert not np.array_equal(a, uq.design(uq.UQConfig(samples=16, seed=8)))
    # a scrambled Sobol net of 16 points puts exactly one point in each 1/16 interval per axis
    assert all(np.array_equal(np.sort((a[:, j] * 16).astype(int)), np.arange(16)) for j in range(4))
    from cardiotwin.therapy.conduction import ConductionConfig

    nominal = ConductionConfig()
    confs = [uq.sample_conduction(nominal, row, cfg) for row in a]
    x = uq.input_values(confs)
    assert np.all(np.abs(x[:, 0] / nominal.cv_fibre - 1.0) <= 0.2 + 1e-12)
    assert np.all(np.abs(x[:, 2]) <= 10.0 + 1e-12)


def test_first_order_indices_of_a_linear_function():
    # y = 3 x0 + 0 x1 with independent uniform inputs: analytic Sobol indices S0 = 1, S1 = 0
    x = uq.design(uq.UQConfig(samples=64, seed=0))[:, :2]
    s = uq.first_order_indices(x, 3.0 * x[:, 0])
    assert s[0] > 0.85 and s[1] < 0.15
    # y = x0 + x1: S0 = S1 = 0.5
    s = uq.first_order_indices(x, x[:, 0] + x[:, 1])
    assert s == pytest.approx([0.5, 0.5], abs=0.15)
    assert np.all(uq.first_order_indices(x, np.ones(64)) == 0.0)


def test_probability_best_and_intervals():
    scores = {1: {"a": -10.0, "b": -5.0}, 2: {"a": -3.0, "b": -8.0}, 3: {"a": -9.0, "b": -1.0, "c": -50.0}}
    p = uq.probability_best(scores, ["a", "b"])  # c is not eligible (e.g. in scar)
    assert p == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    lo, hi = uq.interval(list(range(101)))
    assert (lo, hi) == pytest.approx((2.5, 97.5))


def test_crt_config_reads_units_and_rejects_unknown_keys():
    cfg = load_config(CRTConfig, {"conduction": {"cv_fibre": "60 cm/s"}, "uq": {"samples": 4}}, source="t.yaml:crt")
    assert cfg.conduction.cv_fibre == pytest.approx(0.6) and cfg.uq.samples == 4
    with pytest.raises(ConfigError, match="cv_fiber"):
        load_config(CRTConfig, {"conduction": {"cv_fiber": 0.6}}, source="t.yaml:crt")
    with pytest.raises(ConfigError, match="cv_cross"):
        load_config(CRTConfig, {"conduction": {"cv_cross": "1 m/s"}}, source="t.yaml:crt")
