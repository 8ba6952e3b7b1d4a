"""The clinical summary: one A4 page in clinical language, ranked on the haemodynamic endpoint.

The CRT results are written as the CRT stage writes them (``therapy.outputs.result_to_dict`` of a
``TherapyResult`` ranked by ``therapy.ranking.rank_order``), on a slab mesh whose activation is
the analytic eikonal solution T = |x - x0| / c. The handmade ranking mirrors issue 26's demo case:
the shortest activation time (AHA 5 at AV 120 ms) predicts a dP/dt max rise of +8.7 %, below the
10 % responder threshold (Auricchio et al., Circulation 1999;99:2993); AHA 11 at AV 170 ms has a
nearly equal activation time and predicts +17.4 %.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main

CODE_IDENTIFIERS = re.compile(r"_ms|_pct|dpdt_|[A-Za-z0-9]_[A-Za-z0-9]")


def _pdfinfo_pages(pdf: Path) -> tuple[int, str]:
    if shutil.which("pdfinfo") is None:
        pytest.skip("pdfinfo (poppler-utils) not installed: run scripts/setup_system.sh")
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    size = re.search(r"^Page size:\s+(.*)$", info, re.M).group(1)
    return pages, size


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout


def _site(seg: int, chamber: str = "LV"):
    from cardiotwin.types import LeadSite

    if chamber == "RV":
        return LeadSite(name="RV_apex", chamber="RV", node=0, position_mm=(0.0, 0.0, 0.0), surface="rv_endo")
    return LeadSite(name=f"LV_AHA{seg:02d}", chamber="LV", node=seg, position_mm=(float(seg), 1.0, 1.0),
                    aha_segment=seg, surface="epi")


def _crt_case(root: Path, *, n_extra: int, calibration: bool = False) -> dict:
    """A case with a CRT stage: ranking.json (3 protocols with beats + ``n_extra`` screened ones),
    baseline and best activation maps, beats.json."""
    import meshio

    from cardiotwin.cases import Case
    from cardiotwin.meshing.analytic import niederer_slab
    from cardiotwin.therapy.outputs import result_to_dict
    from cardiotwin.therapy.ranking import RankingRule, disagreement, rank_order
    from cardiotwin.types import CandidateResult, PacingProtocol, TherapyResult

    rv = _site(0, "RV")
    rows = [  # LV segment, AV, TAT change %, dP/dt change % (None: no beat), responder probability
        (5, 120.0, -31.0, 8.7, 0.0),
        (11, 170.0, -30.2, 17.4, 1.0),
        (6, 120.0, -30.8, 12.0, 0.5),
    ] + [(1 + (k % 16), 100.0 + 10 * (k % 4), -29.0 + 0.5 * k, None, None) for k in range(n_extra)]
    entries, protos = [], []
    for seg, av, tat, dpdt, prob in rows:
        p = PacingProtocol(name=f"BiV_LV_AHA{seg:02d}_AV{av:g}_VV+0", lv_site=_site(seg), rv_site=rv, av_delay_ms=av)
        m = {"tat_ms": 140.0 * (1 + tat / 100), "tat_change_pct": tat, "lvat_change_pct": tat, "qrs_ms": 130.0}
        u = {"probability_best": 0.3, "tat_change_pct_ci95": [tat - 3, tat + 2]}
        if dpdt is not None:
            m.update({"dpdt_change_pct": dpdt, "responder": dpdt >= 10, "stroke_volume_ml": 60.0})
            u.update({"dpdt_change_pct_ci95": [dpdt - 2.5, dpdt + 3.0], "responder_probability": prob})
        protos.append(p)
        entries.append((p.name, m, u, ""))
    rule = RankingRule()
    order = rank_order(rule, entries)
    cands = tuple(CandidateResult(protocol=protos[i], rank=r, recommended=True, excluded_reason="",
                                  metrics=entries[i][1], concordance="concordant" if protos[i].lv_site.aha_segment == 11
                                  else "adjacent", uq=entries[i][2]) for r, i in enumerate(order, start=1))
    result = TherapyResult(baseline={"tat_ms": 140.0, "qrs_ms": 165.0}, candidates=cands, latest_segment=11,
                           scar_segments=(),
                           metadata={"segment_activation_ms": {str(s): 5.0 * s for s in range(1, 18)},
                                     "ranking_rule": {**dataclasses.asdict(rule), "text": rule.describe()},
                                     "ranking_disagreement": disagreement(entries, order)})
    data = result_to_dict(result)
    best = data["candidates"][0]["name"]
    data["candidates"][0]["activation"] = f"activation/{best}.vtu"

    case = Case.create(root, case_id="p26")
    slab = niederer_slab(dx_mm=2.0, size_mm=(40.0, 30.0, 20.0))
    act = np.linalg.norm(slab.points, axis=1) / 0.6
    paced = np.minimum(act, np.linalg.norm(slab.points - slab.points.max(axis=0), axis=1) / 0.6)
    point_aha = np.clip((slab.points[:, 0] / 40.0 * 17).astype(int) + 1, 1, 17)
    t = np.linspace(0.0, 600.0, 31)
    v = 120.0 - 50.0 * np.sin(np.pi * t / 600.0) ** 2
    p = 1.0 + 14.0 * np.sin(np.pi * t / 600.0) ** 4
    beats = {n: {"times_ms": t.tolist(), "lv_volume_ml": (v * s).tolist(), "lv_pressure_kpa": (p * s).tolist()}
             for n, s in (("baseline", 1.0), (best, 1.08))}
    with case.stage("therapy", inputs={}, config={}) as st:
        st.output("ranking.json").write_text(json.dumps(data))
        st.output("beats.json").write_text(json.dumps(beats))
        (st.dir / "activation").mkdir()
        for name, values in (("baseline", act), (best, paced)):
            meshio.write(st.dir / "activation" / f"{name}.vtu", meshio.Mesh(
                slab.points, [("tetra", slab.cells)], point_data={"activation_time_ms": values, "aha": point_aha}))
    if calibration:
        (root / "calibrate").mkdir()
        (root / "calibrate" / "calibration.json").write_text(json.dumps({  # the calibrate stage's layout
            "measured": {"lv_edv_ml": 210.0, "lv_esv_ml": 153.0, "lv_ef": 0.271, "rv_edv_ml": None},
            "simulated": {"lv_edv_ml": 204.2, "lv_esv_ml": 145.0, "lv_ef": 0.29, "rv_edv_ml": 150.0},
            "parameters": {"passive_stiffness_factor": {"value": 1.3, "unit": ""},
                           "peak_active_tension": {"value": 85.0, "unit": "kPa"}}}))
    assert main(["report", str(root), "--no-verify", "--no-calc-verification"]) == 0
    return data


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary") / "few"
    return root, _crt_case(root, n_extra=2)


def test_summary_recommends_the_dpdt_winner_and_states_the_disagreement(few) -> None:
    root, data = few
    html = (root / "report" / "summary.html").read_text()
    assert data["candidates"][0]["name"] == "BiV_LV_AHA11_AV170_VV+0"
    head = re.search(r'<p class="head">(.*?)</p>', html).group(1)
    assert head == "Recommended: Biventricular pacing, LV lead mid inferolateral (AHA segment 11)"
    assert "RV apex" in html and "AV delay 170 ms, VV delay 0 ms (simultaneous)" in html
    assert "LV dP/dt max +17.4 % vs intrinsic rhythm (95 % interval +14.9 to +20.4 % over myocardial stiffness)" in html
    assert "probability of an acute response (rise of at least 10 %): 100 %" in html
    # runner-up: AHA 6 (+12.0 %), then AHA 5 (+8.7 %) although AHA 5 has the shortest activation time
    assert "Runner-up</td><td>BiV, LV basal anterolateral, AV 120 / VV 0 ms (LV dP/dt max +12.0 %" in html
    assert "mid inferolateral (AHA segment 11), activated 55 ms after QRS onset" in html and "concordant" in html
    sentence = re.search(r'<p class="note" data-disagreement="1">(.*?)</p>', html, re.S).group(1)
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert "disagree" in sentence and "BiV, LV basal inferolateral, AV 120 / VV 0 ms" in sentence
    assert "LV dP/dt max +8.7 %" in sentence and "LV dP/dt max +17.4 %" in sentence
    assert "Ranking rule:</b> Every lead site and timing is screened by simulated activation time" in html
    assert "LV dP/dt max" in html[html.index('id="ranking-rule"'):]
    for fig in ("activation", "bullseye", "pv_loops"):
        assert f'data-figure="{fig}"' in html
    assert html.count("<li>") <= 3  # caveats
    assert 'id="calibration"' in html and "Not calibrated" in html
    assert "Ranking rule: Every lead site and timing is screened" in (root / "report" / "evidence.html").read_text()
    numbers = json.loads((root / "report" / "report.json").read_text())["numbers"]
    assert numbers["summary.dpdt_change_pct"] == 17.4 and numbers["summary.disagreement"] is True


def test_summary_pdf_is_one_a4_page_without_code_identifiers(few, tmp_path) -> None:
    root, _ = few
    pages, size = _pdfinfo_pages(root / "report" / "summary.pdf")
    assert pages == 1
    w, h = (float(x) for x in re.match(r"([\d.]+) x ([\d.]+) pts", size).groups())
    assert (w, h) == pytest.approx((595.3, 841.9), abs=1.0)  # A4 in points
    text = _pdf_text(root / "report" / "summary.pdf")
    assert "basal inferolateral" in text and "LV dP/dt max" in text
    assert not CODE_IDENTIFIERS.search(text), CODE_IDENTIFIERS.findall(text)
    html = (root / "report" / "summary.html").read_text()
    visible = re.sub(r"<style>.*?</style>|<[^>]+>|src=\"[^\"]*\"", " ", html, flags=re.S)
    assert not CODE_IDENTIFIERS.search(visible), CODE_IDENTIFIERS.findall(visible)
    # the activation maps are rendered large (>= 900 px wide, shown over 63 % of the page width)
    import base64
    import io

    from PIL import Image

    b64 = re.search(r'data-figure="activation"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html).group(1)
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert img.width >= 900 and np.asarray(img.convert("L"), dtype=float).std() > 5


def test_many_candidates_and_a_calibration_still_fit_one_page(tmp_path) -> None:
    root = tmp_path / "many"
    data = _crt_case(root, n_extra=60, calibration=True)
    assert len(data["candidates"]) == 63
    pages, _ = _pdfinfo_pages(root / "report" / "summary.pdf")
    assert pages == 1
    html = (root / "report" / "summary.html").read_text()
    assert html.count("<tr>") <= 5 + 1 + 8 + 4  # best 5 + header, key-value rows, calibration rows
    assert "58 further protocols are listed in the evidence report" in html
    cal = html[html.index('id="calibration"'):html.index('id="caveats"')]
    assert "LV ejection fraction</td><td>27 %</td><td>29 %" in cal and "LV end-diastolic volume</td><td>210 mL" in cal
    assert "RV end-diastolic volume" not in cal  # not measured: no row
    assert "Fitted to this patient&#39;s measurements: myocardial stiffness, contractility" in cal
    text = _pdf_text(root / "report" / "summary.pdf")
    assert not CODE_IDENTIFIERS.search(text), CODE_IDENTIFIERS.findall(text)
