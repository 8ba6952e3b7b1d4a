"""Electromechanics of the best CRT protocols: haemodynamic response (slow: coupled 3D-0D beats) and its
spread over passive-stiffness samples.

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
from cardiotwin.therapy.protocols import ProtocolConfig
from cardiotwin.therapy.stage import CRTConfig, run_crt
from cardiotwin.therapy.uq import UQConfig


@pytest.mark.slow
def test_best_protocol_raises_dpdt_max(tmp_path):
    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, tmp_path / "fibers")
    cfg = CRTConfig(uq=UQConfig(samples=0, stiffness_samples=0), em_top_k=1,
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


def test_stiffness_samples_give_intervals_of_the_em_metrics(tmp_path):
    # issue #7 lists stiffness among the uncertain inputs: the beats of the EM candidates are rerun
    # with the Guccione C scaled by QMC factors in [0.7, 1.3) (uq.py docstring), each paired with a
    # baseline beat at the same stiffness.
    import csv

    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, tmp_path / "fibers")
    cfg = CRTConfig(uq=UQConfig(samples=0, stiffness_samples=2), em_top_k=1,
                    protocols=ProtocolConfig(timing_top_k=0),
                    electromechanics={"dt": "20 ms", "beat_duration": "350 ms"})
    result, maps, beats = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    em_uq = result.metadata["em_uq"]
    factors = em_uq["stiffness_factors"]
    assert len(factors) == 2 and min(factors) < 1.0 <= max(factors) and all(0.7 <= f < 1.3 for f in factors)
    assert not em_uq["failures"] and set(beats) == {"baseline", result.candidates[0].protocol.name}
    best = result.candidates[0]
    assert best.uq["stiffness_samples"] == 2
    for key in ("dpdt_change_pct", "stroke_volume_ml", "ejection_fraction", "stroke_work_mj"):
        lo, hi = best.uq[f"{key}_ci95"]
        assert np.isfinite([lo, hi]).all() and lo <= hi
    assert 0 < best.uq["stroke_volume_ml_ci95"][0] and best.uq["ejection_fraction_ci95"][1] < 1
    assert 0.0 <= best.uq["responder_probability"] <= 1.0
    # physics: passive stress scales with C (Guccione et al., J Biomech Eng 1991;113:42), so at the same
    # end-diastolic pressure the stiffer ventricle fills less: EDV falls as the factor rises
    edv = {f: json.loads((tmp_path / "tasks" / f"em_baseline__stiffness{j:02d}.json").read_text())["result"]["edv_ml"]["LV"]
           for j, f in enumerate(factors, start=1)}
    nominal_edv = beats["baseline"]["result"]["edv_ml"]["LV"]
    soft, stiff = min(factors), max(factors)
    assert edv[soft] > edv[stiff]
    assert (edv[soft] - nominal_edv) * (soft - 1.0) < 0 and (edv[stiff] - nominal_edv) * (stiff - 1.0) <= 0
    out = tmp_path / "therapy"
    write_outputs(result, out, mesh=mesh, maps=maps, beats=beats)
    data = json.loads((out / "ranking.json").read_text())
    assert data["candidates"][0]["uq"]["dpdt_change_pct_ci95"] == pytest.approx(best.uq["dpdt_change_pct_ci95"])
    assert json.loads((out / "uq.json").read_text())["electromechanics"]["stiffness_factors"] == pytest.approx(factors)
    row = next(csv.DictReader((out / "ranking.csv").open()))
    assert float(row["dpdt_change_pct_ci_low"]) == pytest.approx(best.uq["dpdt_change_pct_ci95"][0], rel=1e-3)


def test_beat_digest_hashes_the_resolved_config() -> None:
    # A stored beat must be reused exactly when the resolved settings match: a default written out
    # equals the default left implicit, and any resolved difference (here dt) gives a new digest.
    # (Hashing the mapping as written once reused a beat computed under an old default twitch peak.)
    import numpy as np

    from cardiotwin.mechanics.electromechanics import EMConfig
    from cardiotwin.therapy.response import beat_digest

    act = np.linspace(0.0, 80.0, 5)
    implicit = beat_digest("m", act, {})
    explicit = beat_digest("m", act, {"dt": f"{EMConfig().dt} ms",
                                      "twitch": {"peak_tension": f"{EMConfig().twitch.peak_tension} kPa"}})
    assert implicit == explicit
    assert beat_digest("m", act, {"dt": "5 ms"}) != implicit
    assert beat_digest("m", act + 1.0, {}) != implicit
