"""The review page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Checks what a cardiologist sees: the 3D canvas is not blank (pixel variance), switching the
field or the candidate changes the picture, clicking a lead marker shows its metrics, the
compare view shows two panes with linked cameras, slices scroll, and the static export renders
like the served app without any network request.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_viewer_scene import build_review_case

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# Waiting on a selector, not wait_for_function: polling a JS predicate uses eval, which the
# served page's Content-Security-Policy forbids (script-src 'self').
READY = "body[data-ready='1'], body[data-error]"
TIMEOUT_MS = 180_000  # generous: software WebGL on a loaded 2-core machine can be slow
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # WebGL without a GPU: ANGLE on SwiftShader (software), which Chromium only enables on request.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make setup installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS,
                              env={"HOME": str(tmp_path_factory.mktemp("chromium-home"))})
        yield b
        b.close()


CALIBRATION = {  # the shape `cardiotwin calibrate` writes (calibrate/calibration.json), values of the CT demo
    "measured": {"lv_edv_ml": 110.1, "lv_esv_ml": 71.5, "lv_ef": 0.35, "rv_edv_ml": 109.0, "rv_esv_ml": None,
                 "rv_ef": None},
    "simulated": {"lv_edv_ml": 108.6, "lv_esv_ml": 70.6, "lv_ef": 0.35, "rv_edv_ml": 105.8, "rv_esv_ml": 53.5,
                  "rv_ef": 0.494},
    "parameters": {"peak_active_tension": {"value": 49.0, "unit": "kPa", "interval": [45.3, 53.0]}},
}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    import json

    from PIL import Image

    root = build_review_case(tmp_path_factory.mktemp("browser") / "p001")
    (root / "calibrate").mkdir()
    (root / "calibrate" / "calibration.json").write_text(json.dumps(CALIBRATION), encoding="utf-8")
    Image.new("RGB", (60, 20), (40, 90, 200)).save(root / "calibrate" / "fit.png")
    return root


@pytest.fixture(scope="module")
def server(case: Path):
    from cardiotwin.viewer.app import start_background

    with start_background(case) as srv:
        yield srv


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector(READY, state="attached", timeout=TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.error || ''") == ""
    page.errors = errors  # type: ignore[attr-defined]
    return page


def shot(page, selector: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"), dtype=float)


def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose colour differs by more than 12 (of 255) in any channel."""
    return float(np.mean(np.abs(a - b).max(axis=2) > 12))


@pytest.fixture(scope="module")
def page(browser, server):
    pg = open_page(browser, server.url)
    yield pg
    pg.close()


def test_page_loads_with_a_non_blank_3d_view(page) -> None:
    img = shot(page, "#pane-0 canvas")
    assert img.std() > 20, "3D canvas is blank"
    # the heart covers a good part of the view and is coloured (not only grey shading)
    saturation = img.max(axis=2) - img.min(axis=2)
    assert np.mean(saturation > 60) > 0.05
    assert page.locator("#candidate-table tr").count() == 3
    # the EP stage's 12-lead pseudo-ECG is drawn, one trace per lead
    assert page.locator("#panel-ecg polyline").count() == 12
    assert page.errors == []


def test_the_calibration_fit_is_shown_next_to_the_prediction(page) -> None:
    """A calibrated case shows measured vs twin volumes and EF, the calibrated parameters with
    their intervals, and the fit figure served from the case."""
    panel = page.locator("#panel-calibration")
    assert panel.is_visible()
    ef = panel.locator("tr[data-key='lv_ef'] td")
    assert [ef.nth(i).inner_text() for i in range(3)] == ["LV ejection fraction", "35.0 %", "35.0 %"]
    edv = panel.locator("tr[data-key='lv_edv_ml'] td")
    assert [edv.nth(i).inner_text() for i in (1, 2)] == ["110.1 mL", "108.6 mL"]
    assert panel.locator("tr[data-key='rv_esv_ml'] td").nth(1).inner_text() == "n/a"  # not measured: shown so
    assert "49.0 kPa [45.3, 53.0]" in panel.locator("tr[data-parameter='peak_active_tension']").inner_text()
    img = panel.locator("img")
    img.wait_for(state="attached")
    for _ in range(100):  # polled here: wait_for_function would need eval, which the page's CSP forbids
        if img.evaluate("i => i.complete && i.naturalWidth") == 60:
            break
        page.wait_for_timeout(100)
    assert img.evaluate("i => i.complete && i.naturalWidth") == 60  # the fit figure loaded from /case/
    assert page.errors == []


def test_switching_field_and_candidate_changes_the_picture(page) -> None:
    base = shot(page, "#pane-0 canvas")
    page.select_option("#field-select", "aha")
    aha = shot(page, "#pane-0 canvas")
    assert changed_fraction(base, aha) > 0.03
    page.select_option("#field-select", "activation")
    again = shot(page, "#pane-0 canvas")
    assert changed_fraction(base, again) < 0.01  # same state, same picture
    page.select_option("#config-a", "candidate:lv-lateral")
    lateral = shot(page, "#pane-0 canvas")
    assert changed_fraction(base, lateral) > 0.03
    page.select_option("#config-a", "candidate:lv-apical")
    assert changed_fraction(lateral, shot(page, "#pane-0 canvas")) > 0.01
    page.select_option("#config-a", "baseline")


def test_time_slider_shows_the_wavefront(page) -> None:
    full = shot(page, "#pane-0 canvas")
    page.locator("#time-slider").fill("300")  # 30 % of the activation range: most of the heart not yet activated
    assert page.inner_text("#time-label").startswith("t = ")
    early = shot(page, "#pane-0 canvas")
    grey = lambda img: np.mean((img.max(axis=2) - img.min(axis=2) < 12) & (img.mean(axis=2) > 60))  # noqa: E731
    assert grey(early) > grey(full) + 0.05  # not-yet-activated tissue is drawn grey
    page.locator("#time-slider").fill("1000")
    assert changed_fraction(full, shot(page, "#pane-0 canvas")) < 0.01


def test_clicking_a_marker_shows_its_metrics(page) -> None:
    pos = page.evaluate("window.cardiotwinViewer.markerScreenPosition('lv-anterior')")
    page.mouse.click(pos["x"], pos["y"])
    details = page.locator("#candidate-details")
    assert details.get_attribute("data-candidate") == "lv-anterior"
    assert "total activation time change" in details.inner_text()  # clinical names, the identifier last
    assert "identifier" in details.inner_text() and "tat_change_pct" not in details.inner_text()
    assert page.input_value("#config-a") == "candidate:lv-anterior"  # the pane shows that candidate
    page.select_option("#config-a", "baseline")


def test_compare_view_shows_two_panes_with_linked_cameras(page) -> None:
    page.check("#compare-toggle")
    assert page.locator("#pane-1").is_visible()
    page.select_option("#config-a", "baseline")
    page.select_option("#config-b", "baseline")
    a, b = shot(page, "#pane-0 canvas"), shot(page, "#pane-1 canvas")
    assert a.std() > 20 and b.std() > 20
    assert changed_fraction(a, b) < 0.01  # same configuration, same camera: same picture
    box = page.locator("#pane-0 canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 40, steps=8)
    page.mouse.up()
    a2, b2 = shot(page, "#pane-0 canvas"), shot(page, "#pane-1 canvas")
    assert changed_fraction(b, b2) > 0.03  # dragging the left pane turned the right one too
    assert changed_fraction(a2, b2) < 0.01
    page.select_option("#config-b", "candidate:lv-lateral")
    assert changed_fraction(a2, shot(page, "#pane-1 canvas")) > 0.03
    assert page.locator("#panel-bullseye figure").count() == 2
    page.uncheck("#compare-toggle")
    assert not page.locator("#pane-1").is_visible()


def test_slices_scroll_and_show_the_overlay(page) -> None:
    canvas = page.locator("#slice-2")
    before = shot(page, "#slice-2")
    label = page.locator("#slice-2 + input + .caption span")
    start = label.inner_text()
    canvas.hover()
    for _ in range(8):
        page.mouse.wheel(0, 120)
    assert label.inner_text() != start
    after = shot(page, "#slice-2")
    assert changed_fraction(before, after) > 0.01
    # overlay: the label colours (LV blood pool red) appear in the mid-axial slice
    red = (before[..., 0] > before[..., 1] + 40)
    assert red.mean() > 0.01


def test_static_export_renders_like_the_app(browser, case: Path, server, tmp_path: Path) -> None:
    from cardiotwin.cli import main

    out = tmp_path / "review.html"
    assert main(["view", str(case), "--export", str(out)]) == 0
    html = out.read_text()
    assert "http://" not in html.split("<script", 1)[0] and 'src="' not in html  # nothing loaded from elsewhere
    served = open_page(browser, server.url)
    exported = browser.new_page(viewport={"width": 1400, "height": 1000})
    exported.set_default_timeout(TIMEOUT_MS)
    requests: list[str] = []
    exported.on("request", lambda r: requests.append(r.url))
    exported.goto(out.as_uri())
    exported.wait_for_selector(READY, state="attached", timeout=TIMEOUT_MS)
    assert exported.evaluate("document.body.dataset.error || ''") == ""
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    for pg in (served, exported):
        pg.select_option("#config-a", "candidate:lv-lateral")
        pg.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    a, b = shot(served, "#pane-0 canvas"), shot(exported, "#pane-0 canvas")
    assert b.std() > 20
    assert a.shape == b.shape and changed_fraction(a, b) < 0.01, (a.shape, b.shape, changed_fraction(a, b))
    exported.select_option("#field-select", "aha")
    assert changed_fraction(b, shot(exported, "#pane-0 canvas")) > 0.03
    served.close()
    exported.close()


@pytest.fixture(scope="module")
def crt_case(tmp_path_factory) -> Path:
    """A case whose therapy/ stage is the CRT stage's own output (run_crt + write_outputs), with the
    CRT tests' graph shortest-path activation solver standing in for the EP eikonal solver."""
    from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file

    from cardiotwin.cases import Case
    from cardiotwin.therapy.outputs import write_outputs
    from cardiotwin.therapy.stage import CRTConfig, run_crt
    from cardiotwin.therapy.uq import UQConfig

    root = tmp_path_factory.mktemp("crt") / "p001"
    Case.create(root)
    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, root / "fibers")
    result, maps, beats = run_crt(mesh, mesh_path=path, cfg=CRTConfig(uq=UQConfig(samples=0), em_top_k=0),
                                  work_dir=root.parent / "tasks", solver=graph_activation)
    write_outputs(result, root / "therapy", mesh=mesh, maps=maps, beats=beats)
    return root


def test_crt_stage_output_is_reviewable(browser, crt_case: Path) -> None:
    import json

    from cardiotwin.viewer.app import start_background

    ranking = json.loads((crt_case / "therapy" / "ranking.json").read_text())
    sites = {tuple(np.round(c["position_mm"], 2)) for c in ranking["candidates"] if c["position_mm"]}
    with start_background(crt_case) as srv:
        page = open_page(browser, srv.url)
        assert page.locator("#candidate-table tr").count() == len(ranking["candidates"])
        n_markers = page.evaluate("window.cardiotwinViewer.state.panes[0].layers.candidates.children.length")
        assert n_markers == len(sites)  # one marker per lead site (AV/VV variants share it)
        options = page.locator("#config-a option").all_inner_texts()
        assert options[0] == "Baseline" and len(options) >= 2  # baseline + the mapped best protocol(s)
        base = shot(page, "#pane-0 canvas")
        assert base.std() > 20
        page.locator("#candidate-table tr").first.click()
        assert page.locator("#candidate-details").get_attribute("data-candidate") == ranking["best"]
        details = page.inner_text("#candidate-details")
        assert "total activation time change" in details and f"identifier\t{ranking['best']}" in details
        assert page.input_value("#config-a") == f"candidate:{ranking['best']}"
        assert changed_fraction(base, shot(page, "#pane-0 canvas")) > 0.03
        page.close()
