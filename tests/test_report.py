"""`cardiotwin report CASE`: evidence report and clinical summary (HTML + PDF).

The demo case is assembled from files in the formats the stages write (labels and QC of the
segmentation, ``ep/activation.vtu`` + ``ep/ep.json``, ``em/metrics.json`` written by
``cardiotwin.mechanics.outputs.write_outputs``, ``therapy/ranking.json``), because the report
must reproduce exactly what those files hold. The activation field is the analytic eikonal
solution of a point source in a homogeneous medium, T = |x - x0| / c.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.report.context import fmt

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("question", "risk", "model", "code-verification", "calculation-verification", "use-error", "validation",
            "uq", "applicability", "credibility", "results", "provenance")
NAME = "<script>alert(1)</script>Doe^John"
SOURCE = "Doe_John_chest.nii.gz"


def _png_not_blank(png: bytes) -> bool:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return img.std() > 5.0 and (img < 200).mean() > 0.01


def _pdf_pages(pdf: Path, tmp: Path) -> list[Path]:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed: run scripts/setup_system.sh")
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp / pdf.stem)], check=True)
    return sorted(tmp.glob(f"{pdf.stem}*.png"))


def _pdf_text(pdf: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    return subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout


def _write_demo_stages(case, tmp: Path) -> dict:
    import meshio

    from cardiotwin.io.scans import read_labels, write_labels
    from cardiotwin.mechanics.outputs import write_outputs
    from cardiotwin.meshing.analytic import niederer_slab
    from cardiotwin.types import MechResult

    lab = read_labels(REPO / "sample_scans" / "ct_sample_labels.nii.gz")
    with case.stage("segment", inputs={"scan": case.input_path("scan")}, config={"model": "reference"}) as st:
        write_labels(lab, st.output("labels.nii.gz"))
        st.output("qc.json").write_text(json.dumps({"lv_blood_volume_ml": lab.volume_ml(1), "passed": True}))
    slab = niederer_slab(dx_mm=1.0)
    x0, cv = np.zeros(3), 0.6
    act = np.linalg.norm(slab.points - x0, axis=1) / cv  # analytic eikonal, ms
    centroid_x = slab.points[slab.cells].mean(axis=1)[:, 0]
    aha = np.clip((centroid_x / 20.0 * 17).astype(int) + 1, 1, 17)
    t = np.linspace(0.0, 200.0, 201)
    leads = {n: (k + 1) * 0.3 * np.exp(-((t - 60.0 - 5 * k) / 12.0) ** 2) for k, n in enumerate(("I", "II", "V1", "V6"))}
    with case.stage("ep", inputs={"labels": case.stage_dir("segment")}, config={"dt": "0.05 ms", "cg_rtol": 1e-8}) as st:
        meshio.write(st.output("activation.vtu"), meshio.Mesh(slab.points, [("tetra", slab.cells)],
                                                              point_data={"activation_time_ms": act},
                                                              cell_data={"aha": [aha]}))
        st.output("ep.json").write_text(json.dumps({"qrs_ms": 131.5, "ecg": {"times_ms": t.tolist(),
                                                    "leads": {k: v.tolist() for k, v in leads.items()}}}))
    phase = np.linspace(0.0, 2 * np.pi, 120)
    vol = 120.0 - 30.0 * (1 - np.cos(phase)) / 2
    pres = 1.0 + 14.0 * np.clip(np.sin(phase), 0, None)
    result = MechResult(times_ms=np.linspace(0, 800, 120), lv_pressure_kpa=pres, lv_volume_ml=vol,
                        rv_pressure_kpa=np.array([]), rv_volume_ml=np.array([]),
                        edv_ml={"LV": 120.0}, esv_ml={"LV": 90.0}, stroke_volume_ml={"LV": 30.0},
                        ejection_fraction={"LV": 0.25}, dpdt_max_kpa_per_ms={"LV": 0.1371},
                        stroke_work_mj={"LV": 321.7})
    with case.stage("em", inputs={"ep": case.stage_dir("ep")}, config={"dt": "10 ms", "mechanics": {"snes_atol": 1e-6}}) as st:
        write_outputs(result, st.dir)
    # CRT-stage maps (therapy.outputs layout: point "aha", -1 where never activated): paced from the
    # far corner as well, so the best map differs from the baseline and from the EP stage's map
    crt_base = act + 5.0
    crt_base[:3] = -1.0
    crt_best = np.minimum(act, np.linalg.norm(slab.points - slab.points.max(axis=0), axis=1) / cv)
    point_aha = np.clip((slab.points[:, 0] / 20.0 * 17).astype(int) + 1, 1, 17)
    ranking = {"baseline": {"tat_ms": 41.25}, "metadata": {"segment_activation_ms": {str(k): 2.0 * k for k in range(1, 18)}},
               "candidates": [
        {"id": "lv-lat-bas", "name": "lv-lat-bas", "label": "LV basal lateral", "rank": 1, "position_mm": [1, 2, 3],
         "activation": "activation/lv-lat-bas.vtu",
         "metrics": {"tat_change_pct": -23.4, "qrs_ms": 112.0, "tat_ms": 31.6}, "concordance": "concordant",
         "uq": {"probability_best": 0.72, "tat_change_pct": [-27.0, -18.5]}},
        {"id": "lv-lat-bas-av140", "label": "LV basal lateral, AV 140 / VV +20 ms", "rank": 4,
         "metrics": {"tat_change_pct": -22.0},
         "uq": {"probability_best": 0.0, "samples": 16, "dpdt_change_pct_ci95": [8.5, 14.25],
                "stiffness_kpa": [1.5, 2.5]}},
        {"id": "lv-post-mid", "label": "LV mid posterior", "rank": 2, "position_mm": [4, 5, 6],
         "metrics": {"tat_change_pct": -17.9}, "uq": {"probability_best": 0.21}},
        {"id": "lv-ant-api", "label": "LV apical anterior", "rank": 3, "position_mm": [7, 8, 9],
         "metrics": {"tat_change_pct": -6.2}, "uq": {"probability_best": 0.07}},
    ]}
    therapy_cfg = {"em_top_k": 1, "electromechanics": {"dt": "5 ms", "beat_duration": "700 ms",
                                                       "mechanics": {"snes_rtol": 1e-7}}}
    with case.stage("therapy", inputs={"ep": case.stage_dir("ep")}, config=therapy_cfg) as st:
        st.output("ranking.json").write_text(json.dumps(ranking))
        for name, values in (("baseline", crt_base), ("lv-lat-bas", crt_best)):
            (st.dir / "activation").mkdir(exist_ok=True)
            meshio.write(st.dir / "activation" / f"{name}.vtu", meshio.Mesh(
                slab.points, [("tetra", slab.cells)], point_data={"activation_time_ms": values, "aha": point_aha}))
    return {"act": act, "ranking": ranking, "therapy_config": therapy_cfg}


@pytest.fixture(scope="module")
def verification_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "verification.json"
    assert main(["verify", "--check", "circulation_rc", "--check", "land_1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def demo_case(tmp_path_factory, verification_json):
    from cardiotwin.cases import Case
    from cardiotwin.io.scans import read_scan

    root = tmp_path_factory.mktemp("cases") / "demo"
    case = Case.create(root, case_id=NAME)
    scan = read_scan(REPO / "sample_scans" / "ct_sample.nii.gz")
    from dataclasses import replace

    case.import_scan(replace(scan, source=f"/data/{SOURCE}"))
    facts = _write_demo_stages(case, root)
    (root / "pipeline.yaml").write_text(
        "question_of_interest: 'Which LV lead site <b>maximises</b> acute resynchronisation?'\n"
        "context_of_use: CRT planning as decision support for the implanting cardiologist\n"
        "model_influence: medium\ndecision_consequence: high\n"
        "measurements:\n  qrs_ms: 150\n  ejection_fraction: 0.28\n")
    assert main(["report", str(root), "--verification", str(verification_json)]) == 0
    return root, facts


def test_report_writes_all_sections_with_numbers_from_results(demo_case, tmp_path):
    root, facts = demo_case
    out = root / "report"
    for name in ("evidence.html", "evidence.pdf", "summary.html", "summary.pdf", "report.json"):
        assert (out / name).stat().st_size > 1000, name
    html = (out / "evidence.html").read_text()
    data = json.loads((out / "report.json").read_text())
    for sid in SECTIONS:
        assert f'<section id="{sid}"' in html, sid
    assert set(data["sections"]) == set(SECTIONS)
    for sid in ("risk", "model", "code-verification", "use-error", "uq", "results", "credibility", "provenance"):
        assert data["sections"][sid] == "complete", (sid, data["missing"].get(sid))
    # numbers equal the stage results
    metrics = json.loads((root / "em" / "metrics.json").read_text())
    n = data["numbers"]
    assert n["em.ejection_fraction.LV"] == metrics["ejection_fraction"]["LV"]
    assert n["em.dpdt_max_mmhg_per_s.LV"] == pytest.approx(metrics["dpdt_max_mmhg_per_s"]["LV"])
    # activation maps from the CRT stage's outputs (not ep/), with the stage's own TATs and segment means
    assert n["activation.sources"] == ["therapy/activation/baseline.vtu", "therapy/activation/lv-lat-bas.vtu"]
    assert n["therapy.baseline.tat_ms"] == facts["ranking"]["baseline"]["tat_ms"]
    assert n["therapy.best.tat_ms"] == facts["ranking"]["candidates"][0]["metrics"]["tat_ms"]
    assert "ep.tat_ms" not in n
    assert n["activation.aha.7"] == facts["ranking"]["metadata"]["segment_activation_ms"]["7"]
    assert n["activation.renderer"].startswith("pyvista")
    assert n["ep.qrs_ms"] == 131.5
    assert n["uq.LV basal lateral.probability_best"] == 0.72
    # UQ of every protocol that has one, whatever its entries (timing-sweep winner, stiffness input)
    assert n["uq.protocols_with_uq"] == 4
    assert n["uq.LV basal lateral, AV 140 / VV +20 ms.dpdt_change_pct_ci95"] == [8.5, 14.25]
    assert n["uq.LV basal lateral, AV 140 / VV +20 ms.stiffness_kpa"] == [1.5, 2.5]
    uq_html = html[html.index('<section id="uq"'):html.index('<section id="applicability"')]
    assert "stiffness_kpa: [1.5, 2.5]" in uq_html and "samples: 16" in uq_html
    assert n["validation.qrs_ms.simulated"] == 131.5
    # model risk: medium influence x high consequence = 4 (V&V 40 5-level matrix)
    assert n["model_risk_level"] == 4
    ver = json.loads(Path(data["verification_results"]).read_text())
    land = next(c for c in ver["checks"] if c["name"] == "land_1")
    assert n["verify.land_1.beam_point_z_mm"] == land["quantities"][0]["value"]
    for key in ("em.ejection_fraction.LV", "therapy.baseline.tat_ms", "verify.land_1.beam_point_z_mm",
                "uq.LV basal lateral.probability_best"):
        assert re.search(rf"[>\s]{re.escape(fmt(n[key]))}[<\s]", html), key
    assert html.count('class="missing"') == sum(len(v) for k, v in data["missing"].items() if k != "summary")
    # the 13 V&V 40 credibility factors
    cred = html[html.index('<section id="credibility"'):html.index('<section id="results"')]
    assert cred.count("<tr>") == 13 + 1
    # figures exist and are not blank
    imgs = re.findall(r'data-figure="([a-z_]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    names = {name for name, _ in imgs}
    assert {"activation", "bullseye", "ecg", "pv_loops", "ranking"} <= names
    assert all(_png_not_blank(base64.b64decode(b64)) for _, b64 in imgs)
    # no external resources: self-contained
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    # PDF pages rendered are not blank
    pages = _pdf_pages(out / "evidence.pdf", tmp_path)
    assert len(pages) >= 4
    assert all(_png_not_blank(pg.read_bytes()) for pg in pages)
    assert "Credibility factors" in _pdf_text(out / "evidence.pdf")


def test_clinical_summary_is_one_page_with_recommendation(demo_case, tmp_path):
    root, facts = demo_case
    html = (root / "report" / "summary.html").read_text()
    assert '<p class="head">Recommended: LV basal lateral</p>' in html
    assert "Runner-up</td><td>LV mid posterior" in html
    assert "probability of the shortest activation time among the sampled protocols 72 %" in html
    for fig in ("activation", "bullseye", "pv_loops"):
        assert f'data-figure="{fig}"' in html
    assert "Caveats" in html and "QRS duration 112 ms" in html
    pages = _pdf_pages(root / "report" / "summary.pdf", tmp_path)
    assert len(pages) == 1 and _png_not_blank(pages[0].read_bytes())


def test_identifiers_withheld_by_default_and_escaped_when_included(demo_case, tmp_path):
    root, _ = demo_case
    for name in ("evidence.html", "summary.html"):
        text = re.sub(r'src="data:image/png;base64,[^"]*"', "", (root / "report" / name).read_text())  # random letters
        assert "Doe" not in text and "alert(1)" not in text
        assert "<script" not in text.lower()
        assert "&lt;b&gt;maximises&lt;/b&gt;" in text or name == "summary.html"  # YAML text escaped
    assert "Doe" not in _pdf_text(root / "report" / "evidence.pdf")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert main(["report", str(copy), "--include-identifiers", "--no-calc-verification",
                 "--verification", str(root.parent.parent / "x.json")]) == 2  # missing results file: CaseError
    assert main(["report", str(copy), "--include-identifiers", "--no-calc-verification"]) == 0
    text = (copy / "report" / "evidence.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;Doe^John" in text
    assert SOURCE in text
    assert "<script" not in text.lower()
    assert "Doe^John" in _pdf_text(copy / "report" / "evidence.pdf")


def test_missing_stages_are_reported_not_crashed(tmp_path):
    from cardiotwin.cases import Case

    root = tmp_path / "empty"
    Case.create(root)
    assert main(["report", str(root), "--no-verify"]) == 0
    data = json.loads((root / "report" / "report.json").read_text())
    html = (root / "report" / "evidence.html").read_text()
    for sid in ("question", "code-verification", "calculation-verification", "uq", "results"):
        assert data["sections"][sid] == "missing", sid
    for expected in ("stage &#39;ep&#39; has not been run", "stage &#39;em&#39; has not been run",
                     "stage &#39;therapy&#39; has not been run", "run `cardiotwin verify --case CASE`",
                     "no fibers/mesh.vtu"):
        assert expected in html, expected
    summary = (root / "report" / "summary.html").read_text()
    assert "Not available" in summary
    # report is itself a stage: unchanged inputs -> skipped, outputs untouched
    before = (root / "report" / "evidence.pdf").stat().st_mtime_ns
    assert main(["report", str(root), "--no-verify"]) == 0
    assert (root / "report" / "evidence.pdf").stat().st_mtime_ns == before


def test_solver_tolerance_table_equals_the_case_configs(demo_case):
    """Section 5 lists the tolerances and time steps each stage ran with: the recorded values where the
    stage set them, the defaults of the configuration class it loaded them into otherwise."""
    from cardiotwin.electrophysiology.eikonal import EikonalConfig
    from cardiotwin.mechanics.newton import DEFAULT_KSP_OPTIONS
    from cardiotwin.mechanics.problem import MechanicsConfig

    root, facts = demo_case
    n = json.loads((root / "report" / "report.json").read_text())["numbers"]
    em = facts["therapy_config"]["electromechanics"]
    assert n["solver.therapy.electromechanics time stepping.dt"] == float(em["dt"].split()[0]) == 5.0
    assert n["solver.therapy.electromechanics time stepping.beat_duration"] == 700.0
    assert n["solver.therapy.mechanics Newton.snes_rtol"] == em["mechanics"]["snes_rtol"]
    assert n["solver.therapy.mechanics Newton.snes_atol"] == MechanicsConfig().snes_atol  # not set: class default
    assert n["solver.therapy.mechanics linear solver.pc_factor_mat_solver_type"] == \
        DEFAULT_KSP_OPTIONS["pc_factor_mat_solver_type"]
    assert n["solver.therapy.eikonal.tolerance"] == EikonalConfig().tolerance
    assert n["solver.ep.monodomain.dt"] == 0.05 and n["solver.ep.monodomain.cg_rtol"] == 1e-8
    assert n["solver.em.electromechanics time stepping.dt"] == 10.0
    assert n["solver.em.mechanics Newton.snes_atol"] == 1e-6
    html = (root / "report" / "evidence.html").read_text()
    calc = html[html.index('<section id="calculation-verification"'):html.index('<section id="use-error"')]
    for text in ("snes_rtol", "1e-07", "mumps", "cg_rtol", "diastolic_dt"):
        assert text in calc, text
    # the studies not run say so, with the reason
    assert "time-step refinement of the monodomain activation on this patient: not done" in calc


def test_activation_maps_prefer_crt_outputs_and_fall_back_to_ep(tmp_path):
    import meshio

    from cardiotwin.meshing.analytic import niederer_slab
    from cardiotwin.report.activation import load_case_activation

    slab = niederer_slab(dx_mm=2.0)
    act = slab.points[:, 0] / 0.6  # plane wave along x at 0.6 mm/ms: TAT = 20 mm / 0.6 mm/ms

    def write(rel: str, values: np.ndarray) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        meshio.write(tmp_path / rel, meshio.Mesh(slab.points, [("tetra", slab.cells)],
                                                 point_data={"activation_time_ms": values}))

    write("ep/activation.vtu", act)
    acts = load_case_activation(tmp_path, ranking=None, best=None)
    assert acts.baseline.source == "ep/activation.vtu" and acts.best is None
    assert acts.baseline.tat_ms == pytest.approx(20.0 / 0.6)
    crt = act.copy()
    crt[slab.points[:, 0] > 19.0] = -1.0  # never activated (scar core): excluded, not a time of -1 ms
    write("therapy/activation/baseline.vtu", crt)
    write("therapy/activation/p1.vtu", act / 2.0)
    acts = load_case_activation(tmp_path, ranking={"candidates": []}, best={"name": "p1"}, best_name="p1")
    assert acts.baseline.source == "therapy/activation/baseline.vtu"
    assert acts.baseline.tat_ms == pytest.approx(act[slab.points[:, 0] <= 19.0].max())
    assert np.isnan(acts.baseline.field.values[slab.points[:, 0] > 19.0]).all()
    assert acts.best.source == "therapy/activation/p1.vtu"
    assert acts.best.tat_ms == pytest.approx(20.0 / 1.2)


def test_shipped_pipelines_state_question_and_context_of_use():
    from cardiotwin.config import read_yaml
    from cardiotwin.pipeline import load_recipe
    from cardiotwin.report.casedata import pipeline_context

    for name in ("crt_ct", "crt_mri"):
        path = REPO / "pipelines" / f"{name}.yaml"
        load_recipe(path)  # the runner accepts the keys
        ctx = pipeline_context(read_yaml(path))
        assert len(ctx["question_of_interest"]) > 100 and "LV lead" in ctx["question_of_interest"]
        assert len(ctx["context_of_use"]) > 300 and "decision support" in ctx["context_of_use"]


def test_case_from_given_labels_has_question_and_use_error_numbers(tmp_path):
    """`cardiotwin run ... --labels` imports the labels as the segment stage without QC: the report
    computes the QC itself, says where the labels came from, and shows the recipe's question of
    interest and context of use (escaped: the shipped text contains '<=' and an apostrophe)."""
    from markupsafe import escape

    from cardiotwin.config import read_yaml
    from cardiotwin.io.scans import read_labels
    from cardiotwin.pipeline import load_recipe, run_pipeline
    from cardiotwin.segmentation.qc import quality_report

    shipped = read_yaml(REPO / "pipelines" / "crt_ct.yaml")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(json.dumps({"name": "labels_only", "modality": "CT", "stages": ["segment"],
                                       "question_of_interest": shipped["question_of_interest"],
                                       "context_of_use": shipped["context_of_use"]}))
    root = tmp_path / "case"
    labels = REPO / "sample_scans" / "ct_sample_labels.nii.gz"
    run_pipeline(load_recipe(recipe_path), scan_path=REPO / "sample_scans" / "ct_sample.nii.gz", out=root,
                 labels_path=labels, workers=0)
    assert not (root / "segment" / "qc.json").exists()
    assert main(["report", str(root), "--no-verify"]) == 0
    html = (root / "report" / "evidence.html").read_text()
    data = json.loads((root / "report" / "report.json").read_text())
    assert data["sections"]["question"] == "complete"
    for key in ("question_of_interest", "context_of_use"):
        assert str(escape(shipped[key])) in html, key
    assert "LVEF &lt;= 35 %" in html
    assert data["sections"]["use-error"] == "complete", data["missing"].get("use-error")
    qc = quality_report(read_labels(labels))
    n = data["numbers"]
    assert n["segment.qc.volume lv_blood"] == qc["volumes_ml"]["lv_blood"] > 0
    assert n["segment.qc.LV myocardial mass"] == qc["lv_myocardial_mass_g"]
    assert n["segment.qc.LV wall thickness median"] == qc["lv_wall_thickness_mm"]["median"]
    assert n["segment.qc.connected components lv_myo"] == qc["components"]["lv_myo"]
    use = html[html.index('<section id="use-error"'):html.index('<section id="validation"')]
    assert "label map given with --labels" in use and "computed by the report" in use


def test_em_timestep_study_reuses_the_stage_beat_and_extrapolates(tmp_path, monkeypatch):
    """dt / (dt/2) study of the baseline beat: the beat at the stage's dt is reused from
    therapy_tasks (digest match), the refined one is run with both steps halved, and the two-level
    Richardson extrapolation with the formal order 1 of backward Euler (Celik et al. 2008) recovers
    the dt -> 0 limit of an output whose error is exactly linear in dt."""
    import meshio

    import cardiotwin.therapy.response as response
    from cardiotwin.cases import Case
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.meshing.analytic import niederer_slab
    from cardiotwin.verification.timestep import em_timestep_study, study_inputs

    slab = niederer_slab(dx_mm=2.0)
    case = Case.create(tmp_path / "c")
    with case.stage("fibers", inputs={}, config={}) as st:
        meshio.write(st.dir / "mesh.vtu", meshio.Mesh(slab.points, [("tetra", slab.cells)]))
    act = slab.points[:, 0] / 0.6
    em = {"dt": "20 ms", "beat_duration": "600 ms"}
    with case.stage("therapy", inputs={}, config={"em_top_k": 1, "electromechanics": em}) as st:
        (st.dir / "activation").mkdir()
        meshio.write(st.dir / "activation" / "baseline.vtu", meshio.Mesh(
            slab.points, [("tetra", slab.cells)], point_data={"activation_time_ms": act}))

    def beat(dt_ms: float) -> dict:  # outputs with an error exactly linear in dt
        return {"result": {"ejection_fraction": {"LV": 0.5 + 0.004 * dt_ms}, "dpdt_max_kpa_per_ms": {"LV": 0.2 - 0.001 * dt_ms},
                           "stroke_volume_ml": {"LV": 60.0 + 0.1 * dt_ms}, "stroke_work_mj": {"LV": 800.0}},
                "seconds": 100.0 / dt_ms}

    inputs, why = study_inputs(case)
    assert inputs is not None, why
    digest = response.beat_digest(sha256_file(inputs["mesh"]), act, em)
    (case.root / "therapy_tasks").mkdir()
    (case.root / "therapy_tasks" / "em_baseline.json").write_text(json.dumps({"digest": digest, **beat(20.0)}))
    calls = []

    def fake_beat(name, activation_times_ms, *, mesh_path, mesh_sha256, em_config, work_dir):
        calls.append(em_config)
        np.testing.assert_allclose(activation_times_ms, act)
        return beat(float(em_config["dt"].split()[0]))

    monkeypatch.setattr(response, "run_beat_task", fake_beat)
    study = em_timestep_study(case, inputs, levels=2)
    assert calls == [{"dt": "10 ms", "beat_duration": "600 ms", "diastolic_dt": "20 ms"}]  # diastolic 40 ms halved
    assert [lvl["dt_ms"] for lvl in study["levels"]] == [20.0, 10.0]
    assert [lvl["reused_from_crt_stage"] for lvl in study["levels"]] == [True, False]
    ef = study["quantities"]["ejection_fraction"]
    assert ef["extrapolated"] == pytest.approx(0.5)
    assert study["quantities"]["dpdt_max_kpa_per_ms"]["extrapolated"] == pytest.approx(0.2)
    # GCI_fine = Fs |e_a| / (r^p - 1), Fs 3, r 2, p 1 (Celik et al. 2008, two levels)
    assert ef["gci_fine"] == pytest.approx(3.0 * abs((0.54 - 0.58) / 0.54))
    assert study["quantities"]["stroke_work_mj"]["convergence"] == "identical"
    # the error of the stage's own result (dt 20 ms) against the finest step, stated in the notes
    assert ef["stage_dt_error_percent"] == pytest.approx(100.0 * (0.58 - 0.54) / 0.54)
    assert any("ejection_fraction at the CRT stage's dt 20 ms differs" in note for note in study["notes"])


def test_pv_loops_come_from_the_crt_beats_without_an_em_stage(tmp_path):
    """A CRT-only case (no em/ stage): the summary and the results show the CRT stage's baseline vs
    best PV loops from therapy/beats.json, with its numbers, instead of 'not available'."""
    from cardiotwin.cases import Case

    root = tmp_path / "crt_only"
    case = Case.create(root)
    t = np.linspace(0.0, 600.0, 31)
    v = 120.0 - 50.0 * np.sin(np.pi * t / 600.0) ** 2
    p = 1.0 + 14.0 * np.sin(np.pi * t / 600.0) ** 4
    beats = {name: {"times_ms": t.tolist(), "lv_volume_ml": (v * s).tolist(), "lv_pressure_kpa": (p * s).tolist(),
                    "ejection_fraction": {"LV": ef}, "dpdt_max_mmhg_per_s": {"LV": dpdt}}
             for name, s, ef, dpdt in (("baseline", 1.0, 0.41, 900.0), ("BiV_LV_AHA06", 1.05, 0.47, 1010.0))}
    ranking = {"candidates": [{"name": "BiV_LV_AHA06", "rank": 1, "metrics": {"tat_change_pct": -20.0}}]}
    with case.stage("therapy", inputs={}, config={}) as st:
        st.output("ranking.json").write_text(json.dumps(ranking))
        st.output("beats.json").write_text(json.dumps(beats))
    assert main(["report", str(root), "--no-verify"]) == 0
    summary = (root / "report" / "summary.html").read_text()
    assert 'data-figure="pv_loops"' in summary and "the CRT stage&#39;s beats" in summary
    assert "stage &#39;em&#39; has not been run" not in summary
    recorded = json.loads((root / "report" / "report.json").read_text())["numbers"]
    assert recorded["crt_beats.baseline.ejection_fraction"] == pytest.approx(0.41)
    assert recorded["crt_beats.BiV_LV_AHA06.dpdt_max_mmhg_per_s"] == pytest.approx(1010.0)
