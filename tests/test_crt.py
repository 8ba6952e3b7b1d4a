"""`cardiotwin crt` command and the stage's output files (read back as the viewer and report do)."""

from __future__ import annotations

import csv
import json

import pytest
from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file

from cardiotwin.cli import main
from cardiotwin.therapy.outputs import CSV_COLUMNS, write_outputs
from cardiotwin.therapy.stage import CRTConfig, run_crt
from cardiotwin.therapy.uq import UQConfig


def test_crt_needs_the_fibers_stage(tmp_path, capsys):
    assert main(["case", "new", str(tmp_path / "c"), "--scan", "sample_scans/ct_sample.nii.gz"]) == 0
    assert main(["crt", str(tmp_path / "c"), "--workers", "0"]) != 0
    assert "stage 'fibers' has not been run" in capsys.readouterr().err


def test_outputs_are_complete_and_readable_by_the_viewer(tmp_path):
    from cardiotwin.commands.crt import summary_lines
    from cardiotwin.viewer.therapy import read_candidates

    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, tmp_path / "fibers")
    cfg = CRTConfig(uq=UQConfig(samples=2), em_top_k=0)
    result, maps, beats = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=tmp_path / "tasks", solver=graph_activation)
    out = tmp_path / "therapy"
    write_outputs(result, out, mesh=mesh, maps=maps, beats=beats)
    data = json.loads((out / "ranking.json").read_text())
    assert data["best"] == data["candidates"][0]["name"]
    assert data["latest_segment"] == result.latest_segment
    assert set(data["sensitivity"]) == {"best_tat_change_pct", "best_is_still_best", "baseline_tat_ms"}
    rows = list(csv.DictReader((out / "ranking.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(data["candidates"])
    assert rows[0]["name"] == data["best"]
    uq = json.loads((out / "uq.json").read_text())
    assert uq["samples"] == 2 and set(uq["inputs"]) == {"cv_fibre", "cv_cross", "fibre_angle_offset", "border_zone_mm"}
    cands = read_candidates(out / "ranking.json", case_root=tmp_path)
    assert [c.id for c in cands] == [c["name"] for c in data["candidates"]]
    assert cands[0].activation_path == out / "activation" / f"{data['best']}.vtu"
    assert cands[0].response == pytest.approx(-data["candidates"][0]["metrics"]["tat_change_pct"])
    lines = summary_lines(result)
    assert lines[0].startswith("baseline (LBBB)") and data["best"].split("_", 1)[1] in lines[1]


def test_crt_mri_recipe_on_the_mr_sample(tmp_path, capsys):
    # `cardiotwin run pipelines/crt_mri.yaml` on the thick-slice MR sample from its reference labels
    # (as scripts/demo.sh does for CT with DEMO_LABELS=reference), with the recipe's mesh, fibre and conduction settings and a
    # smaller sweep (2 QMC samples, 2 timings for the best site, no electromechanics).
    import yaml

    from cardiotwin.therapy.candidates import SEPTAL_SEGMENTS

    data = yaml.safe_load(open("pipelines/crt_mri.yaml"))
    assert data["modality"] == "MR"
    crt = next(stage["crt"] for stage in data["stages"] if "crt" in stage)
    crt["uq"].update({"samples": 2, "stiffness_samples": 0})
    crt["em_top_k"] = 0
    crt["protocols"].update({"timing_top_k": 1, "av_delays_ms": [170.0], "vv_delays_ms": [0.0, 20.0]})
    recipe = tmp_path / "crt_mri_small.yaml"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    case = tmp_path / "mr_case"
    assert main(["run", str(recipe), "--scan", "sample_scans/mr_sample.nii.gz", "--labels",
                 "sample_scans/mr_sample_labels.nii.gz", "--out", str(case), "--workers", "0"]) == 0
    assert "pipeline crt_mri" in capsys.readouterr().out
    info = json.loads((case / "pipeline.json").read_text())
    # the recipe calibrates before the CRT stage; the sample has no ES phase or measurements, so that stage is skipped
    assert list(info["wall_s"]) == ["segment", "mesh", "fibers", "calibrate", "crt"]
    # the recipe's mesh edge keeps the MR twin small (the mesher's fallback at >= 3.5 mm gave ~35k points)
    assert json.loads((case / "mesh" / "quality.json").read_text())["n_points"] < 15_000
    ranking = json.loads((case / "therapy" / "ranking.json").read_text())
    best = ranking["candidates"][0]
    assert ranking["best"] == best["name"] and best["recommended"]
    # LBBB physics as on the CT twin (Lee et al., Europace 2019;21:1): pacing the best LV site
    # shortens activation, and that site is not septal
    assert best["metrics"]["tat_change_pct"] < -5.0
    assert best["lv_site"]["aha_segment"] not in SEPTAL_SEGMENTS
    assert ranking["latest_segment"] not in SEPTAL_SEGMENTS
    assert ranking["metadata"]["n_samples"] == 2
    winners = ranking["metadata"]["timing_winners"]
    assert len(winners) == 1
    uq = {c["name"]: c["uq"] for c in ranking["candidates"]}
    assert 0.0 <= uq[winners[0]]["probability_best"] <= 1.0
    assert "probability_best" in best["uq"]
    for f in ("ranking.csv", "uq.json", "bullseye_activation.png", "activation_maps.png", "activation.vtu"):
        assert (case / "therapy" / f).is_file(), f
