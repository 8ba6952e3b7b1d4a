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
    # protocols tied within round-off share the sample's win
    tied = uq.probability_best({1: {"a": -7.0, "b": -7.0 + 1e-12, "c": 0.0}, 2: {"a": -1.0, "b": -2.0, "c": 0.0}},
                               ["a", "b", "c"])
    assert tied == {"a": pytest.approx(0.25), "b": pytest.approx(0.75), "c": 0.0}
    lo, hi = uq.interval(list(range(101)))
    assert (lo, hi) == pytest.approx((2.5, 97.5))


def test_crt_config_reads_units_and_rejects_unknown_keys():
    cfg = load_config(CRTConfig, {"conduction": {"cv_fibre": "60 cm/s"}, "uq": {"samples": 4}}, source="t.yaml:crt")
    assert cfg.conduction.cv_fibre == pytest.approx(0.6) and cfg.uq.samples == 4
    with pytest.raises(ConfigError, match="cv_fiber"):
        load_config(CRTConfig, {"conduction": {"cv_fiber": 0.6}}, source="t.yaml:crt")
    with pytest.raises(ConfigError, match="cv_cross"):
        load_config(CRTConfig, {"conduction": {"cv_cross": "1 m/s"}}, source="t.yaml:crt")


def test_stiffness_factors_are_seeded_stratified_and_within_the_range():
    # +-30 % default (uq.py docstring: Xi et al. 2013, Asner et al. 2016); 0 samples disables
    cfg = uq.UQConfig(stiffness_samples=4, seed=2)
    f = uq.stiffness_factors(cfg)
    assert np.array_equal(f, uq.stiffness_factors(cfg)) and f.shape == (4,)
    assert np.all((f >= 0.7) & (f < 1.3))
    # a scrambled Sobol net of 4 points: one point in each quarter of [0.7, 1.3)
    assert np.array_equal(np.sort(((f - 0.7) / 0.6 * 4).astype(int)), np.arange(4))
    two = uq.stiffness_factors(uq.UQConfig(stiffness_samples=2))
    assert two.min() < 1.0 <= two.max()  # one softer, one stiffer than nominal
    assert uq.stiffness_factors(uq.UQConfig(stiffness_samples=0)).size == 0
    with pytest.raises(ValueError):
        uq.UQConfig(stiffness_rel=1.0).validate()


def test_scale_stiffness_scales_only_the_stress_parameters():
    from mpi4py import MPI  # noqa: F401, I001 - before dolfinx (EMConfig)

    from cardiotwin.mechanics.electromechanics import EMConfig
    from cardiotwin.therapy.response import scale_stiffness

    em = {"dt": "20 ms", "guccione": {"C": "3 kPa"}}
    scaled = load_config(EMConfig, scale_stiffness(em, 1.25), source="t")
    assert scaled.guccione.C == pytest.approx(3.75) and scaled.guccione.bf == 8.0 and scaled.dt == 20.0
    assert em == {"dt": "20 ms", "guccione": {"C": "3 kPa"}}  # the caller's mapping is not changed
    ho = load_config(EMConfig, scale_stiffness({"material": "holzapfel_ogden"}, 0.5), source="t").holzapfel_ogden
    ref = EMConfig().holzapfel_ogden
    assert (ho.a, ho.a_f, ho.a_s, ho.a_fs) == pytest.approx((ref.a / 2, ref.a_f / 2, ref.a_s / 2, ref.a_fs / 2))
    assert (ho.b, ho.b_f, ho.b_s, ho.b_fs) == (ref.b, ref.b_f, ref.b_s, ref.b_fs)
    with pytest.raises(ValueError):
        scale_stiffness(em, 0.0)


def test_stiffness_response_intervals_pair_each_sample_with_its_own_baseline():
    from cardiotwin.therapy.response import stiffness_response_uq

    def beat(dpdt, sv, ef, sw):
        return {"result": {"dpdt_max_kpa_per_ms": {"LV": dpdt}, "stroke_volume_ml": {"LV": sv},
                           "ejection_fraction": {"LV": ef}, "stroke_work_mj": {"LV": sw}}}

    samples = [
        {"baseline": beat(1.0, 50.0, 0.4, 500.0), "A": beat(1.2, 60.0, 0.5, 600.0)},   # +20 %: responder
        {"baseline": beat(2.0, 40.0, 0.3, 400.0), "A": beat(2.1, 44.0, 0.35, 420.0)},  # +5 %
        {"baseline": {"error": "diverged"}, "A": beat(9.0, 1.0, 0.1, 1.0)},            # left out
    ]
    out = stiffness_response_uq(samples, ["A"])
    a = out["candidates"]["A"]
    assert a["stiffness_samples"] == 2 and a["responder_probability"] == 0.5
    # 2.5 / 97.5 percentiles of {5, 20} by linear interpolation: 5 + 0.025 * 15, 5 + 0.975 * 15
    assert a["dpdt_change_pct_ci95"] == pytest.approx([5.375, 19.625])
    assert a["stroke_volume_ml_ci95"] == pytest.approx([44.4, 59.6])
    assert out["baseline"]["stiffness_samples"] == 2
    assert out["baseline"]["dpdt_max_kpa_per_ms_ci95"] == pytest.approx([1.025, 1.975])
    assert out["failures"] == {"baseline__stiffness03": "diverged"}


def test_crt_command_overrides_the_uq_sample_counts():
    from cardiotwin.therapy.stage import load_crt_config

    cfg = load_crt_config({"uq": {"samples": 4, "stiffness_rel": 0.2}}, source="t.yaml", stiffness_samples=3)
    assert (cfg.uq.samples, cfg.uq.stiffness_samples, cfg.uq.stiffness_rel) == (4, 3, pytest.approx(0.2))
    assert load_crt_config({}, source="defaults", samples=0).uq.stiffness_samples == 2
    with pytest.raises(ValueError, match="stiffness_samples"):
        load_crt_config({}, source="t", stiffness_samples=-1)
