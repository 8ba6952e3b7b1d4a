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
    with case.stage("ep", inputs={"labels": case.stage_dir("segment")}, config={"dt": "0.05 ms", "ksp_rtol": 1e-8}) as st:
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
    with case.stage("em", inputs={"ep": case.stage_dir("ep")}, config={"newton_rtol": 1e-9}) as st:
        write_outputs(result, st.dir)
    ranking = {"candidates": [
        {"id": "lv-lat-bas", "label": "LV basal lateral", "rank": 1, "position_mm": [1, 2, 3],
         "metrics": {"tat_change_pct": -23.4, "qrs_ms": 112.0}, "concordance": "concordant",
         "uq": {"probability_best": 0.72, "tat_change_pct": [-27.0, -18.5]}},
        {"id": "lv-post-mid", "label": "LV mid posterior", "rank": 2, "position_mm": [4, 5, 6],
         "metrics": {"tat_change_pct": -17.9}, "uq": {"probability_best": 0.21}},
        {"id": "lv-ant-api", "label": "LV apical anterior", "rank": 3, "position_mm": [7, 8, 9],
         "metrics": {"tat_change_pct": -6.2}, "uq": {"probability_best": 0.07}},
    ]}
    with case.stage("therapy", inputs={"ep": case.stage_dir("ep")}, config={"n_samples": 64}) as st:
        st.output("ranking.json").write_text(json.dumps(ranking))
    return {"act": act, "ranking": ranking}


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
    assert n["ep.tat_ms"] == pytest.approx(facts["act"].max() - facts["act"].min())
    assert n["ep.qrs_ms"] == 131.5
    assert n["uq.LV basal lateral.probability_best"] == 0.72
    assert n["validation.qrs_ms.simulated"] == 131.5
    # model risk: medium influence x high consequence = 4 (V&V 40 5-level matrix)
    assert n["model_risk_level"] == 4
    ver = json.loads(Path(data["verification_results"]).read_text())
    land = next(c for c in ver["checks"] if c["name"] == "land_1")
    assert n["verify.land_1.beam_point_z_mm"] == land["quantities"][0]["value"]
    for key in ("em.ejection_fraction.LV", "ep.tat_ms", "verify.land_1.beam_point_z_mm",
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
    assert "Recommended: LV basal lateral (probability of being the best site 72 %)" in html
    assert "runner-up: LV mid posterior" in html
    for fig in ("activation", "bullseye", "pv_loops"):
        assert f'data-figure="{fig}"' in html
    assert "Caveats" in html and "131.5" in html
    pages = _pdf_pages(root / "report" / "summary.pdf", tmp_path)
    assert len(pages) == 1 and _png_not_blank(pages[0].read_bytes())


def test_identifiers_withheld_by_default_and_escaped_when_included(demo_case, tmp_path):
    root, _ = demo_case
    for name in ("evidence.html", "summary.html"):
        text = (root / "report" / name).read_text()
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
