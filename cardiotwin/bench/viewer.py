"""`cardiotwin bench viewer`: how long a cardiologist waits for the review, and how big the export is.

The case is made by the pipeline from the shipped sample CT (reference labels -> mesh ->
fibres); measured: scene build (what `cardiotwin view` does before it listens), static export
size, server start, and, when Chromium and Playwright are present, time until the page has drawn
its first frame (software WebGL) and the time to switch the field.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parents[2] / "sample_scans"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _make_case(root: Path, *, edge_mm: float) -> dict[str, float]:
    from cardiotwin.cases import Case
    from cardiotwin.config import load_config
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.io.scans import read_labels, read_scan, write_labels
    from cardiotwin.meshing.volume import MeshConfig, mesh_labels

    case = Case.create(root)
    scan_path = case.import_scan(read_scan(SAMPLE / "ct_sample.nii.gz"))
    labels = read_labels(SAMPLE / "ct_sample_labels.nii.gz")
    with case.stage("segment", inputs={"scan": scan_path}, config={"source": "reference labels"}) as st:
        write_labels(labels, st.output("labels.nii.gz"))
    cfg = load_config(MeshConfig, {"edge_mm": f"{edge_mm} mm"}, source="bench viewer")
    mesh, _, _, _ = mesh_labels(labels, cfg=cfg)
    mesh, _ = compute_fibers(mesh)
    with case.stage("fibers", inputs={"labels": case.stage_dir("segment") / "labels.nii.gz"}, config=cfg) as st:
        write_mesh(mesh, st.output("mesh.vtu"))
    return {"points": float(mesh.n_points), "tets": float(mesh.n_cells)}


def _browser_times(url: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=180_000)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(url)
        # a selector, not wait_for_function: polling a JS predicate needs eval, which the page's CSP forbids
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=180_000)
        ready = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.select_option("#field-select", "uvc_transmural")
        page.evaluate("new Promise(r => requestAnimationFrame(() => r(1)))")
        switch = time.perf_counter() - t0
        browser.close()
    return {"page_ready_s": ready, "field_switch_s": switch}


def run_bench(*, quick: bool) -> str:
    """Markdown section for docs/BENCHMARKS.md."""
    from cardiotwin.machine import machine_description
    from cardiotwin.viewer.app import start_background
    from cardiotwin.viewer.export import export_review
    from cardiotwin.viewer.scene import build_scene

    edge_mm = 3.0 if quick else 1.5
    tmp = Path(tempfile.mkdtemp(prefix="cardiotwin-bench-viewer-"))
    try:
        size = _make_case(tmp / "case", edge_mm=edge_mm)
        t0 = time.perf_counter()
        build_scene(tmp / "case")
        scene_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = export_review(tmp / "case", tmp / "review.html")
        export_s = time.perf_counter() - t0
        export_mb = out.stat().st_size / 1e6
        t0 = time.perf_counter()
        with start_background(tmp / "case") as srv:
            start_s = time.perf_counter() - t0
            browser = {}
            if CHROMIUM.exists():
                try:
                    browser = _browser_times(srv.url)
                except ImportError:
                    log.warning("playwright is not installed: browser timings left out")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("case", f"sample CT, reference labels, mesh at {edge_mm:g} mm ({size['points']:.0f} points, "
                 f"{size['tets']:.0f} tets) + fibres"),
        ("scene build (s)", f"{scene_s:.2f}"),
        ("static export: time (s) / size (MB)", f"{export_s:.2f} / {export_mb:.1f}"),
        ("server start, scene included (s)", f"{start_s:.2f}"),
    ]
    if browser:
        rows += [("headless Chromium, page ready incl. first frame (s)", f"{browser['page_ready_s']:.2f}"),
                 ("field switch, recolour + redraw (s)", f"{browser['field_switch_s']:.3f}")]
    else:
        rows.append(("browser timings", "not measured (no /usr/bin/chromium or playwright)"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"## viewer\n\n`cardiotwin bench viewer{' --quick' if quick else ''}` on {machine_description()}; "
            "software WebGL (SwiftShader), so a desktop GPU browser is faster.\n\n"
            f"| quantity | value |\n| --- | --- |\n{table}\n")
