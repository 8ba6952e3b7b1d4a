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
