"""The review of a case that holds what `make demo` makes: the CRT stage's outputs, no em / ep stage.

The case is built by the CRT stage itself (``therapy.stage.run_crt`` + ``therapy.outputs.write_outputs``)
on the idealised biventricle with LDRB fibres: activation from the graph test double of the
eikonal (test_therapy_support), the 12-lead pseudo-ECG of every kept activation map
(``therapy.solver.paced_ecg``) and real electromechanical beats (dolfinx mechanics + 0D
circulation, 20 ms steps, 350 ms) of the baseline and the best protocol, as in test_crt_em.py.
The page must show the PV loops and ECG that ``therapy/beats.json`` and ``therapy/ecg.json`` hold,
name candidates as the clinical summary does, and open in the LAO view.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file
from test_viewer_browser import CHROMIUM, changed_fraction, open_page, shot

from cardiotwin.viewer.scene import build_scene

LEADS = {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}


def build_crt_case(root: Path) -> Path:
    from cardiotwin.cases import Case
    from cardiotwin.therapy.outputs import write_outputs
    from cardiotwin.therapy.protocols import ProtocolConfig
    from cardiotwin.therapy.solver import paced_ecg
    from cardiotwin.therapy.stage import CRTConfig, run_crt
    from cardiotwin.therapy.uq import UQConfig

    case = Case.create(root)
    mesh = biventricle_with_fibres(4.0)
    with case.stage("fibers", inputs={}, config={"char_length_mm": 4.0}) as st:
        write_mesh_file(mesh, st.dir)
    path = root / "fibers" / "mesh.vtu"
    cfg = CRTConfig(uq=UQConfig(samples=0, stiffness_samples=0), em_top_k=1, protocols=ProtocolConfig(timing_top_k=0),
                    electromechanics={"dt": "20 ms", "beat_duration": "350 ms"})
    with case.stage("therapy", inputs={"mesh": path}, config=cfg) as st:
        result, maps, beats = run_crt(mesh, mesh_path=path, cfg=cfg, work_dir=root / "therapy_tasks",
                                      solver=graph_activation, ecg=paced_ecg)
        write_outputs(result, st.dir, mesh=mesh, maps=maps, beats=beats)
    return root


@pytest.fixture(scope="module")
def crt_case(tmp_path_factory) -> Path:
    return build_crt_case(tmp_path_factory.mktemp("crt_review") / "demo_like")


def test_scene_takes_pv_loops_and_ecg_from_the_crt_stage(crt_case: Path) -> None:
    scene = build_scene(crt_case)
    assert not {"pv_loops", "ecg"} & set(scene["absent"]), scene["absent"]
    assert {"crt_pv", "crt_ecg", "candidates", "configurations"} <= set(scene["present"])
    best = next(c for c in scene["candidates"] if c["rank"] == 1)
    # baseline and the best protocol each have a beat and an ECG, tied to their configurations
    assert [b["id"] for b in scene["crt_pv"]] == ["baseline", best["id"]]
    assert [b["configuration"] for b in scene["crt_pv"]] == ["baseline", f"candidate:{best['id']}"]
    for b in scene["crt_pv"]:
        lv = b["cavities"]["LV"]
        assert len(lv["pressure_mmhg"]) == len(lv["volume_ml"]) > 10 and max(lv["pressure_mmhg"]) > 20
    assert [e["id"] for e in scene["crt_ecg"]] == ["baseline", best["id"]]
    assert all(set(e["leads"]) == LEADS and e["qrs_ms"] > 0 for e in scene["crt_ecg"])
    # clinical names; the identifier only in the details
    assert re.fullmatch(r"BiV, LV [a-z ]+, AV 120 / VV 0 ms", best["label"]), best["label"]
    assert scene["crt_pv"][1]["label"] == best["label"] and scene["crt_pv"][0]["label"].startswith("intrinsic")
    assert ["identifier", best["id"]] in best["details"]
    names = [k for k, _ in best["details"]]
    assert "total activation time change" in names and "tat_change_pct" not in names


@pytest.mark.browser
def test_review_page_shows_the_crt_beats_ecg_and_clinical_views(crt_case: Path, tmp_path_factory) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make setup installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_viewer_browser import CHROMIUM_ARGS, TIMEOUT_MS

    from cardiotwin.viewer.app import start_background

    with start_background(crt_case) as srv, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS,
                                    env={"HOME": str(tmp_path_factory.mktemp("chromium-home"))})
        page = open_page(browser, srv.url)
        scene = page.evaluate("window.cardiotwinViewer.state.scene.candidates.map(c => [c.id, c.label, c.rank])")
        best_id, best_label, _ = next(c for c in scene if c[2] == 1)
        # PV loops and ECG panels present; nothing the case holds listed as not available
        assert page.locator("#panel-pv").is_visible() and page.locator("#panel-ecg").is_visible()
        assert page.locator("#panel-pv polyline[data-beat]").count() == 2
        assert page.locator("#panel-ecg polyline").count() == 12  # baseline shown: its own 12 leads
        absent = page.inner_text("#absent-list")
        assert "pv_loops" not in absent and "ecg:" not in absent
        assert "intrinsic rhythm" in page.inner_text("#panel-pv") and best_label in page.inner_text("#panel-pv")
        # candidates named as in the summary; choosing one overlays its ECG on the baseline's
        table = page.inner_text("#candidate-table")
        assert best_label in table and best_id not in table and "_" not in table
        page.locator(f"#candidate-table tr[data-id='{best_id}']").click()
        assert page.get_attribute("#panel-ecg", "data-ecg") == best_id
        assert page.locator("#panel-ecg polyline").count() == 24
        assert page.locator(f"#panel-pv polyline[data-beat='{best_id}']").get_attribute("stroke-width") == "3.2"
        details = page.inner_text("#candidate-details")
        assert "identifier" in details and best_id in details and "QRS duration (pseudo-ECG)" in details
        # opens in LAO 40 (superior up); the view buttons move the camera and come back
        assert page.get_attribute("body", "data-view") == "LAO 40"
        lao = shot(page, "#pane-0 canvas")
        page.click("#view-buttons button[data-view='RAO 30']")
        assert page.get_attribute("body", "data-view") == "RAO 30"
        assert changed_fraction(lao, shot(page, "#pane-0 canvas")) > 0.03
        page.click("#view-buttons button[data-view='LAO 40']")
        assert changed_fraction(lao, shot(page, "#pane-0 canvas")) < 0.01
        assert np.asarray(lao).std() > 20
        assert page.errors == []
        browser.close()


def test_malformed_crt_files_name_the_file(tmp_path: Path) -> None:
    from cardiotwin.errors import CaseError
    from cardiotwin.viewer.scene import crt_ecg_section, crt_pv_section

    bad = tmp_path / "beats.json"
    bad.write_text('{"baseline": [1, 2]}')
    with pytest.raises(CaseError, match="beats.json: expected a mapping of protocol name -> beat"):
        crt_pv_section(bad, {}, set())
    ecg = tmp_path / "ecg.json"
    ecg.write_text('{"baseline": {"leads": {"I": [0]}}}')
    with pytest.raises(CaseError, match="ecg.json: ECG 'baseline' needs times_ms and leads"):
        crt_ecg_section(ecg, {}, set())
