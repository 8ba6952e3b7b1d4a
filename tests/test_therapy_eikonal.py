"""The CRT physics checks with the product binding: the electrophysiology eikonal solver.

Same expectations as tests/test_therapy.py (Lee et al., Europace 2019;21:1: laterobasal LV sites
best, septal LV pacing least helpful; TARGET: scar segments excluded), plus the binding itself:
per-cell speeds (slow border zone) and blocked scar reach the solver.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_therapy_support import biventricle_with_fibres, write_mesh_file

from cardiotwin.anatomy import CellTag
from cardiotwin.therapy.candidates import SEPTAL_SEGMENTS, CandidateConfig
from cardiotwin.therapy.conduction import ConductionConfig, Source, build_tissue
from cardiotwin.therapy.protocols import ProtocolConfig
from cardiotwin.therapy.solver import eikonal_solver
from cardiotwin.therapy.stage import CRTConfig, run_crt
from cardiotwin.therapy.uq import UQConfig

LATERAL_SEGMENTS = {5, 6, 11, 12, 16}


@pytest.fixture(scope="module")
def biv(tmp_path_factory):
    mesh = biventricle_with_fibres(3.0)
    return mesh, write_mesh_file(mesh, tmp_path_factory.mktemp("biv_eik"))


def test_eikonal_lbbb_ranking(biv, tmp_path):
    mesh, path = biv
    cfg = CRTConfig(uq=UQConfig(samples=0), em_top_k=0, protocols=ProtocolConfig(timing_top_k=0))
    result, maps, _ = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "t", solver=eikonal_solver)
    best = result.candidates[0]
    assert best.recommended and best.protocol.lv_site.aha_segment in LATERAL_SEGMENTS
    assert best.metrics["tat_change_pct"] < -10.0
    sites = [c for c in result.candidates if c.protocol.lv_site is not None]
    worst = max(sites, key=lambda c: (c.metrics["tat_change_pct"], c.protocol.name))
    assert worst.protocol.lv_site.aha_segment in SEPTAL_SEGMENTS | {17}
    septal = np.mean([c.metrics["tat_change_pct"] for c in sites if c.protocol.lv_site.aha_segment in SEPTAL_SEGMENTS])
    assert best.metrics["tat_change_pct"] < septal - 10.0
    assert result.latest_segment in LATERAL_SEGMENTS
    assert np.all(np.isfinite(maps["baseline"]))


def test_border_zone_slows_and_scar_blocks_in_the_eikonal(biv):
    mesh, _ = biv
    c = mesh.points[mesh.cells].mean(axis=1)
    core = (mesh.cell_tags == CellTag.LV_MYO) & (c[:, 0] > 4.0) & (np.abs(c[:, 1]) < 5.0) & (np.abs(c[:, 2] + 7.0) < 4.0)
    scarred = dataclasses.replace(mesh, cell_tags=np.where(core, int(CellTag.SCAR), mesh.cell_tags).astype(np.int32))
    apex = int(np.argmin(mesh.points[:, 2]))
    src = [Source(nodes=np.array([apex]), delays_ms=np.array([0.0]))]
    healthy = eikonal_solver(mesh, sources=src, tissue=build_tissue(mesh, ConductionConfig()))
    t_fast = eikonal_solver(scarred, sources=src, tissue=build_tissue(scarred, ConductionConfig(border_zone_cv_factor=1.0)))
    t_slow = eikonal_solver(scarred, sources=src, tissue=build_tissue(scarred, ConductionConfig(border_zone_cv_factor=0.3)))
    inside = np.ones(mesh.n_points, dtype=bool)
    inside[np.unique(mesh.cells[~core])] = False  # nodes touching only scar cells
    assert inside.any() and np.all(np.isinf(t_fast[inside]))
    ok = np.isfinite(t_fast)
    assert np.all(t_fast[ok] >= healthy[ok] - 1e-9)  # blocking can only delay
    assert np.all(t_slow[ok] >= t_fast[ok] - 1e-9) and t_slow[ok].max() > t_fast[ok].max()


def test_paced_qrs_from_the_pseudo_ecg_is_narrower_at_the_best_site(biv, tmp_path):
    # resynchronisation narrows the QRS (paced QRS duration shortening tracks response; Lee 2019)
    from cardiotwin.therapy.solver import qrs_from_ecg

    mesh, path = biv
    cfg = CRTConfig(uq=UQConfig(samples=0), em_top_k=0, protocols=ProtocolConfig(timing_top_k=0))
    result, maps, _ = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "t", solver=eikonal_solver,
                              qrs=qrs_from_ecg)
    best = result.candidates[0]
    assert result.baseline["qrs_ms"] > 0 and best.metrics["qrs_ms"] > 0
    assert best.metrics["qrs_ms"] < result.baseline["qrs_ms"]
    assert result.baseline["qrs_ms"] <= result.baseline["tat_ms"] + 40.0
