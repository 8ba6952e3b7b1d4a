"""Virtual CRT on the idealised LBBB biventricle: physics of the ranking, scar, determinism.

Expected behaviour (references): in LBBB the LV lateral / posterolateral wall activates last and
pacing there shortens total activation time most, while septal LV pacing helps least (Lee et
al., Europace 2019;21:1 ("laterobasal sites best"); Auricchio et al., Circulation 1999;99:2993;
Khan et al., JACC 2012;59:1509, TARGET). Scar does not conduct, so a lead inside it captures
nothing, and scar segments are never recommended (TARGET excludes them).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file

from cardiotwin.anatomy import CellTag
from cardiotwin.therapy.candidates import SEPTAL_SEGMENTS, CandidateConfig
from cardiotwin.therapy.protocols import ProtocolConfig
from cardiotwin.therapy.stage import CRTConfig, run_crt
from cardiotwin.therapy.uq import UQConfig

LATERAL_SEGMENTS = {5, 6, 11, 12, 16}  # inferolateral / anterolateral rings + apical lateral


@pytest.fixture(scope="module")
def biv(tmp_path_factory):
    mesh = biventricle_with_fibres(3.0)
    return mesh, write_mesh_file(mesh, tmp_path_factory.mktemp("biv"))


@pytest.fixture(scope="module")
def scarred(tmp_path_factory):
    mesh = biventricle_with_fibres(3.0)
    c = mesh.points[mesh.cells].mean(axis=1)
    # transmural lateral scar (+x is the LV free wall, away from the RV at -x), mid-ventricular
    scar = (mesh.cell_tags == CellTag.LV_MYO) & (c[:, 0] > 4.0) & (np.abs(c[:, 1]) < 6.0) & (c[:, 2] > -12.0) & (c[:, 2] < -2.0)
    tags = np.where(scar, int(CellTag.SCAR), mesh.cell_tags).astype(np.int32)
    mesh = dataclasses.replace(mesh, cell_tags=tags)
    return mesh, write_mesh_file(mesh, tmp_path_factory.mktemp("scar"))


def _run(mesh_and_path, tmp_path, **cfg_kwargs):
    mesh, path = mesh_and_path
    cfg = CRTConfig(uq=UQConfig(samples=0), em_top_k=0, **cfg_kwargs)
    result, maps, _ = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    return result, maps


def _site_protocols(result):
    return [c for c in result.candidates if c.protocol.lv_site is not None and c.protocol.name == f"BiV_{c.protocol.lv_site.name}"]


def test_lbbb_baseline_activates_lv_late(biv, tmp_path):
    result, maps = _run(biv, tmp_path)
    seg = {int(k): v for k, v in result.metadata["segment_activation_ms"].items()}
    septal = np.mean([seg[s] for s in (2, 3, 8, 9)])
    lateral = np.mean([seg[s] for s in (5, 6, 11, 12)])
    # LBBB: septum early (RV breakthrough), lateral wall last
    assert lateral > 2.0 * septal
    assert result.latest_segment in LATERAL_SEGMENTS
    assert np.isfinite(maps["baseline"]).all() and maps["baseline"].min() == 0.0


def test_best_lv_site_is_lateral_and_septal_helps_least(biv, tmp_path):
    result, _ = _run(biv, tmp_path)
    best = next(c for c in result.candidates if c.recommended)
    assert best.protocol.lv_site.aha_segment in LATERAL_SEGMENTS
    assert best.metrics["tat_change_pct"] < -10.0  # pacing the best site shortens TAT markedly
    sites = _site_protocols(result)
    worst = max(sites, key=lambda c: c.metrics["tat_change_pct"])
    assert worst.protocol.lv_site.aha_segment in SEPTAL_SEGMENTS
    septal_mean = np.mean([c.metrics["tat_change_pct"] for c in sites if c.protocol.lv_site.aha_segment in SEPTAL_SEGMENTS])
    lateral_mean = np.mean([c.metrics["tat_change_pct"] for c in sites if c.protocol.lv_site.aha_segment in LATERAL_SEGMENTS])
    assert lateral_mean < septal_mean - 10.0
    assert best.concordance in ("concordant", "adjacent")
    # ranks are 1..n, best first, and the timing sweep was added for the top sites
    assert [c.rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))
    assert any("_AV" in c.protocol.name for c in result.candidates)


def test_scar_segments_never_recommended_and_scar_site_captures_nothing(scarred, tmp_path):
    mesh, _ = scarred
    result, _ = _run(scarred, tmp_path, candidates=CandidateConfig(user_sites_mm=((10.0, 0.0, -7.0),)))
    assert result.scar_segments, "the lateral scar must mark at least one AHA segment as scar"
    for c in result.candidates:
        if c.recommended:
            assert c.protocol.lv_site.aha_segment not in result.scar_segments
            assert not c.protocol.lv_site.in_scar
    user = next(c for c in result.candidates if c.protocol.name == "BiV_LV_user1")
    assert user.protocol.lv_site.in_scar
    assert user.metrics["captured"] is False and not user.recommended
    assert "scar" in user.excluded_reason
    rv_only = next(c for c in result.candidates if c.protocol.name.startswith("RVonly_"))
    # no capture: the activation is that of RV pacing alone at the same timing
    assert user.metrics["tat_ms"] == pytest.approx(rv_only.metrics["tat_ms"], rel=1e-12)
    assert result.latest_segment not in result.scar_segments


def test_same_case_and_seed_give_same_ranking(biv, tmp_path):
    cfg = dict(uq=UQConfig(samples=4, seed=3), em_top_k=0)
    mesh, path = biv
    a, _, _ = run_crt(mesh, mesh_path=path, cfg=CRTConfig(**cfg), work_dir=tmp_path / "a", solver=graph_activation)
    b, _, _ = run_crt(mesh, mesh_path=path, cfg=CRTConfig(**cfg), work_dir=tmp_path / "b", solver=graph_activation)
    assert [c.protocol.name for c in a.candidates] == [c.protocol.name for c in b.candidates]
    assert [c.metrics["tat_ms"] for c in a.candidates] == [c.metrics["tat_ms"] for c in b.candidates]
    assert [c.uq.get("probability_best") for c in a.candidates] == [c.uq.get("probability_best") for c in b.candidates]
    assert a.sensitivity == b.sensitivity
    probs = [c.uq["probability_best"] for c in a.candidates if c.uq and c.recommended]
    assert sum(probs) == pytest.approx(1.0)


def test_candidate_sites_grid_and_user_coordinates(biv):
    from cardiotwin.therapy.candidates import candidate_sites, lv_epicardial_nodes

    mesh, _ = biv
    cfg = CandidateConfig(rv_lead="septum", grid_spacing=8.0, user_sites_mm=((10.0, 0.0, -8.0),),
                          user_sites_uvc=((0.5, 0.5),))
    rv, lv, scar = candidate_sites(mesh, cfg)
    assert rv.chamber == "RV" and rv.name == "RV_septum" and scar == ()
    aha = [s for s in lv if s.name.startswith("LV_AHA")]
    assert sorted(s.aha_segment for s in aha) == list(range(1, 18))  # one site per segment, no scar
    assert all((s.surface == "endo") == (s.aha_segment in SEPTAL_SEGMENTS) for s in aha)
    grid = np.array([s.position_mm for s in lv if s.name.startswith("LV_grid")])
    assert len(grid) >= 6
    d = np.linalg.norm(grid[:, None] - grid[None], axis=-1) + np.eye(len(grid)) * 1e9
    assert d.min() >= 8.0 - 1e-9  # farthest-point grid keeps the spacing
    epi = set(lv_epicardial_nodes(mesh).tolist())
    user = {s.name: s for s in lv if s.name.startswith(("LV_user", "LV_uvc"))}
    assert user["LV_user1"].node in epi and user["LV_uvc1"].node in epi
    assert user["LV_user1"].position_mm[0] > 5.0  # nearest epicardial node to a lateral point is lateral
    rot = mesh.point_data["uvc_rotational"][user["LV_uvc1"].node]
    assert abs(rot - 0.5) < 0.1  # rotational 0.5 = opposite the septum


def test_timing_winners_get_the_same_uncertainty_as_lead_sites(biv, tmp_path):
    # the AV/VV winner of each top site is re-solved for every QMC sample, so the protocols the
    # ranking puts first carry P(best) and a TAT-change interval (issue #7: UQ "for each candidate")
    mesh, path = biv
    cfg = CRTConfig(uq=UQConfig(samples=4, seed=1), em_top_k=0, protocols=ProtocolConfig(timing_top_k=2))
    result, _, _ = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    winners = result.metadata["timing_winners"]
    assert len(winners) == 2 and all("_AV" in w for w in winners)
    by_name = {c.protocol.name: c for c in result.candidates}
    sites = [by_name[w].protocol.lv_site.name for w in winners]
    assert len(set(sites)) == 2
    for w in winners:
        c = by_name[w]
        assert c.uq["samples"] == 4 and 0.0 <= c.uq["probability_best"] <= 1.0
        lo, hi = c.uq["tat_change_pct_ci95"]
        assert lo <= hi and np.isfinite([lo, hi]).all()
        # the winner is the best timing of its site at nominal inputs
        same_site = [o for o in result.candidates if o.protocol.lv_site is not None
                     and o.protocol.lv_site.name == c.protocol.lv_site.name and "_AV" in o.protocol.name]
        assert c.metrics["tat_change_pct"] == min(o.metrics["tat_change_pct"] for o in same_site)
    # the overall best protocol is always among the sampled ones; P(best) sums to 1 over them
    assert "probability_best" in result.candidates[0].uq
    probs = [c.uq["probability_best"] for c in result.candidates if c.uq and c.recommended]
    assert sum(probs) == pytest.approx(1.0)
    # one task per (sample, winner) on top of phase 1 and the nominal timing grid
    n_phase2 = sum(1 for c in result.candidates if "_AV" in c.protocol.name)
    assert result.metadata["n_tasks"] == 5 * (len(result.candidates) - n_phase2 + 1) + n_phase2 + 4 * 2
