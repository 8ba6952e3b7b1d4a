"""Pipeline recipes: validation, and an end-to-end run scan -> labels -> mesh -> fibres -> crt."""

from __future__ import annotations

import json

import pytest
import yaml
from test_therapy_support import graph_activation

from cardiotwin.cli import main
from cardiotwin.errors import ConfigError
from cardiotwin.pipeline import load_recipe, run_pipeline


def test_shipped_recipes_parse():
    for name, modality in (("crt_ct", "CT"), ("crt_mri", "MR")):
        r = load_recipe(f"pipelines/{name}.yaml")
        assert r.name == name and r.modality == modality
        assert [s for s, _ in r.stages] == ["segment", "mesh", "fibers", "calibrate", "crt"]
    twin = load_recipe("pipelines/twin_mri.yaml")
    assert [s for s, _ in twin.stages] == ["segment", "mesh", "fibers", "calibrate"]


def test_recipe_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - segment: {}\n  - simulate_everything: {}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*unknown stage 'simulate_everything'"):
        load_recipe(bad)
    bad.write_text("stages: []\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        load_recipe(bad)
    bad.write_text("stages: [mesh]\nreport: yes\n")
    with pytest.raises(ConfigError, match="'report' must be a mapping"):
        load_recipe(bad)
    bad.write_text("stages: [mesh]\nquestion_of_interest: q\nreprot: {}\n")
    with pytest.raises(ConfigError, match="unknown key.*reprot"):
        load_recipe(bad)
    bad.write_text("stages: [mesh]\nmodality: PET\n")
    with pytest.raises(ConfigError, match="CT or MR"):
        load_recipe(bad)
    # stage options are the keys of the stage's config class, validated and unit-converted on load
    bad.write_text("stages:\n  - mesh: {edge_mm: '5 mm', edge_size: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: stages\[0\] \(mesh\).*unknown (key|option).*edge_size"):
        load_recipe(bad)
    bad.write_text("stages:\n  - mesh: {edge_mm: '5 kPa'}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*edge_mm"):
        load_recipe(bad)
    bad.write_text("stages:\n  - mesh: {edge_mm: '0.4 cm'}\n  - ep: {dt: '0.00002 s'}\n")
    (_, mesh_cfg), (_, ep_cfg) = load_recipe(bad).stages
    assert mesh_cfg.edge_mm == pytest.approx(4.0) and ep_cfg.dt == pytest.approx(0.02)


def test_cli_run_refuses_a_missing_scan(tmp_path):
    assert main(["run", "pipelines/crt_ct.yaml", "--scan", str(tmp_path / "none.nii.gz"), "--out", str(tmp_path / "c")]) != 0


def test_pipeline_end_to_end_from_labels(small_ct_phantom, tmp_path):
    from cardiotwin.io.scans import write_labels, write_scan

    scan = write_scan(small_ct_phantom.scan, tmp_path / "scan.nii.gz")
    labels = write_labels(small_ct_phantom.labels, tmp_path / "labels.nii.gz")
    recipe_path = tmp_path / "crt_test.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "name": "crt_test", "modality": "CT",
        "stages": [{"segment": {}}, {"mesh": {"edge_mm": "5 mm"}}, {"fibers": {}}, {"calibrate": {}},
                   {"crt": {"uq": {"samples": 2}, "em_top_k": 0, "protocols": {"timing_top_k": 1}}}],
        "report": {"question_of_interest": "Which LV lead site shortens activation most?", "model_influence": "medium"},
        "measurements": {"qrs_ms": 160},
    }))
    case = tmp_path / "case"
    ctx = run_pipeline(load_recipe(recipe_path), scan_path=scan, out=case, labels_path=labels, workers=0,
                       solver=graph_activation)
    assert list(ctx.timings_s) == ["segment", "mesh", "fibers", "calibrate", "crt"]
    ranking = json.loads((case / "therapy" / "ranking.json").read_text())
    manifest = json.loads((case / "manifest.json").read_text())
    assert {"segment", "mesh", "fibers", "therapy"} <= set(manifest["stages"])
    # no ES phase and no measured EF: calibration skipped, and the manifest says the CRT used population values
    assert "calibrate" not in manifest["stages"]
    assert manifest["stages"]["therapy"]["metrics"]["calibration"]["calibrated"] is False
    cands = ranking["candidates"]
    assert ranking["best"] == cands[0]["name"] and cands[0]["recommended"]
    assert [c["rank"] for c in cands] == list(range(1, len(cands) + 1))
    rec = [c for c in cands if c["recommended"]]
    changes = [c["metrics"]["tat_change_pct"] for c in rec]
    assert changes == sorted(changes)  # best first
    assert changes[0] < 0.0  # the best protocol shortens the LBBB activation
    for f in ("ranking.csv", "uq.json", "bullseye_activation.png", "bullseye_response.png", "activation_maps.png",
              "activation.vtu", f"activation/{ranking['best']}.vtu"):
        assert (case / "therapy" / f).is_file(), f
    # the recipe is kept with the case, where `cardiotwin report` reads its context of use
    from cardiotwin.report.casedata import find_pipeline, pipeline_context

    assert (case / "pipeline.yaml").read_bytes() == recipe_path.read_bytes()
    assert manifest["inputs"]["pipeline"]["path"] == "pipeline.yaml"
    assert manifest["inputs"]["pipeline"]["source_name"] == "crt_test.yaml"
    data, source, missing = find_pipeline(case, manifest, None)
    assert missing is None and source == "pipeline.yaml"
    assert pipeline_context(data) == {"question_of_interest": "Which LV lead site shortens activation most?",
                                      "model_influence": "medium", "measurements": {"qrs_ms": 160}}
    # a rerun with unchanged inputs skips every stage and keeps the result
    again = run_pipeline(load_recipe(recipe_path), scan_path=scan, out=case, labels_path=labels, workers=0,
                         solver=graph_activation)
    assert "crt" not in again.results
    assert json.loads((case / "therapy" / "ranking.json").read_text()) == ranking
