"""Electromechanics of the best CRT protocol (slow: two beats of the coupled 3D-0D model).

Expectation: resynchronising the LBBB heart raises LV dP/dt max (acute haemodynamic response;
Auricchio et al., Circulation 1999;99:2993; Lee et al., Europace 2019;21:1), because the active
tension rises more simultaneously over the wall.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file

from cardiotwin.therapy.outputs import write_outputs
from cardiotwin.therapy.stage import CRTConfig, run_crt
from cardiotwin.therapy.uq import UQConfig


@pytest.mark.slow
def test_best_protocol_raises_dpdt_max(tmp_path):
    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, tmp_path / "fibers")
    cfg = CRTConfig(uq=UQConfig(samples=0), em_top_k=1,
                    electromechanics={"dt": "10 ms", "beat_duration": "350 ms"})
    result, maps, beats = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    assert not result.metadata["em_failures"]
    assert set(beats) == {"baseline", result.candidates[0].protocol.name}
    best = result.candidates[0].metrics
    assert best["dpdt_change_pct"] > 0.0
    assert best["responder"] == (best["dpdt_change_pct"] >= 10.0)
    assert best["stroke_volume_ml"] > 0 and 0 < best["ejection_fraction"] < 1
    assert np.isfinite(result.baseline["stroke_work_mj"])
    out = tmp_path / "therapy"
    write_outputs(result, out, mesh=mesh, maps=maps, beats=beats)
    assert (out / "pv_loops.png").is_file()
    data = json.loads((out / "ranking.json").read_text())
    assert data["candidates"][0]["metrics"]["dpdt_change_pct"] == pytest.approx(best["dpdt_change_pct"])
    # rerun: beats are read from the task folder, not simulated again
    again, _, _ = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    assert again.candidates[0].metrics["dpdt_change_pct"] == best["dpdt_change_pct"]
