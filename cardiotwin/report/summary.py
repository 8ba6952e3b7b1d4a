"""The clinical summary: one A4 page for the implanting cardiologist (summary.html and .pdf).

What the page holds, in clinical words and units only (no file keys or protocol identifiers):

- the recommendation: pacing mode, LV lead target (AHA segment name and number), RV lead, AV and
  VV delays; the predicted acute LV dP/dt max rise with its interval and the probability of an
  acute response (rise >= 10 %); the electrical resynchronisation (total activation time, QRS);
  the runner-up; the latest-activated segment and the lead's concordance with it (TARGET);
- one sentence where the electrical screen (shortest activation time) and the ranking's first
  protocol differ, and the ranking rule as the CRT stage applied it (``ranking.json``
  ``metadata.ranking_rule``);
- the best protocols (at most ``MAX_ROWS``), the baseline and paced activation maps, the AHA
  bullseye, the LV pressure-volume loops;
- the calibration fit (``CASE/calibrate/calibration.json`` of the calibrate stage: measured vs
  twin volumes and ejection fractions, the properties fitted; without it the page says that
  population parameters were used);
- at most three caveats.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cardiotwin.anatomy import AHA_SEGMENT_NAMES
from cardiotwin.report import casedata, figures
from cardiotwin.report.context import ReportContext
from cardiotwin.therapy.outputs import clinical_label

log = logging.getLogger(__name__)

MAX_ROWS = 5
RESPONDER_PCT = 10.0

_CSS = """
@page { size: A4; margin: 8mm 9mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 8pt; color: #111; margin: 0; }
h1 { font-size: 13pt; margin: 0 0 1pt 0; } h2 { font-size: 9pt; margin: 4pt 0 2pt 0; border-bottom: 1px solid #999; }
.meta { color: #444; font-size: 7pt; margin: 0 0 3pt 0; }
.rec { border: 2px solid #176117; padding: 3pt 5pt; margin: 2pt 0 3pt 0; }
.rec .head { font-size: 10.5pt; font-weight: bold; margin: 0 0 2pt 0; }
table { border-collapse: collapse; width: 100%; }
.kv td { padding: 1pt 3pt; vertical-align: top; border: none; }
.kv td.k { width: 33mm; color: #333; font-weight: bold; }
.grid td, .grid th { border: 1px solid #bbb; padding: 1pt 3pt; text-align: left; font-size: 7.3pt; }
.grid th { background: #eef; }
.note { background: #fff3cd; border-left: 3px solid #d39e00; padding: 2pt 4pt; margin: 2pt 0; }
.missing { background: #fff3cd; border-left: 3px solid #d39e00; padding: 2pt 4pt; margin: 2pt 0; }
.rule { font-size: 7pt; color: #333; margin: 2pt 0; }
.figs { display: table; width: 100%; table-layout: fixed; margin-top: 2pt; }
.figs > div { display: table-cell; vertical-align: top; }
.figs .maps { width: 63%; } .figs .side { width: 37%; padding-left: 3mm; }
figure { margin: 0 0 2pt 0; } figure img { width: 100%; display: block; }
.maps img { max-height: 96mm; object-fit: contain; } .side img { max-height: 45mm; object-fit: contain; }
.grid td.n { width: 7mm; } .grid td.proto { width: 62mm; }
figcaption { font-size: 6.8pt; color: #444; }
ul.caveats { margin: 1pt 0 0 12pt; padding: 0; } ul.caveats li { margin: 0 0 1pt 0; }
.calibration { border: 1px dashed #777; padding: 2pt 4pt; margin: 2pt 0; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="cardiotwin {{ version }}">
<title>CRT planning summary</title><style>{{ css|safe }}</style></head>
<body>
<h1>CRT planning summary</h1>
<p class="meta">{{ subtitle }}</p>
<section id="recommendation" class="rec">
{% if rec %}<p class="head">{{ rec.head }}</p>
<table class="kv">{% for k, v in rec.rows %}<tr><td class="k">{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{% if rec.disagreement %}<p class="note" data-disagreement="1">{{ rec.disagreement }}</p>{% endif %}
{% else %}<p class="missing" data-missing="1">Not available: {{ missing_rec }}</p>{% endif %}
</section>
{% if rule %}<p class="rule" id="ranking-rule"><b>Ranking rule:</b> {{ rule }}</p>{% endif %}
{% if rows %}<section id="protocols"><h2>Best pacing protocols</h2>
<table class="grid"><thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in rows %}<tr>{% for c in r %}<td{% if loop.index == 1 %} class="n"{% elif loop.index == 2 %} class="proto"{% endif %}>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% if more %}<p class="rule">{{ more }}</p>{% endif %}</section>{% endif %}
<div class="figs"><div class="maps">
{% if maps %}<figure data-figure="activation"><img alt="{{ maps.caption }}" src="{{ maps.src }}">
<figcaption>{{ maps.caption }}</figcaption></figure>{% else %}<p class="missing" data-missing="1">Not available: {{ missing_maps }}</p>{% endif %}
</div><div class="side">
{% for f in side %}<figure data-figure="{{ f.name }}"><img alt="{{ f.caption }}" src="{{ f.src }}">
<figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}
{% for m in side_missing %}<p class="missing" data-missing="1">Not available: {{ m }}</p>{% endfor %}
</div></div>
<section id="calibration" class="calibration"><h2>Calibration to this patient</h2>
{% if calibration.rows %}<table class="grid"><thead><tr><th>Measurement</th><th>Measured</th><th>Twin</th></tr></thead>
<tbody>{% for r in calibration.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>{% endif %}
<p>{{ calibration.text }}</p></section>
<section id="caveats"><h2>Caveats</h2><ul class="caveats">{% for c in caveats %}<li>{{ c }}</li>{% endfor %}</ul></section>
</body></html>
"""


def _num(x: Any) -> float | None:
    return casedata.finite(x)


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def _plain(x: float, digits: int = 0) -> str:
    return f"{x:.{digits}f}".replace("-", "\u2212")


def _label(c: dict[str, Any]) -> str:
    proto = c.get("protocol")
    if isinstance(proto, dict):
        return clinical_label(proto)
    return str(c.get("clinical_label") or c.get("label") or "unnamed protocol")


def _interval(u: dict[str, Any], key: str) -> tuple[float, float] | None:
    v = u.get(key)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
        return float(v[0]), float(v[1])
    return None


def _rv_text(c: dict[str, Any]) -> str:
    rv = (c.get("protocol") or {}).get("rv_site") if isinstance(c.get("protocol"), dict) else None
    if not isinstance(rv, dict):
        return "none (LV-only pacing)"
    return {"RV_apex": "RV apex", "RV_septum": "RV mid septum"}.get(str(rv.get("name")), "RV endocardium")


def _lv_text(c: dict[str, Any]) -> str:
    lv = (c.get("protocol") or {}).get("lv_site") if isinstance(c.get("protocol"), dict) else None
    if not isinstance(lv, dict):
        return "none"
    seg = int(lv.get("aha_segment") or 0)
    where = {"epi": "epicardial (coronary vein)", "endo": "endocardial"}.get(str(lv.get("surface")), "")
    name = AHA_SEGMENT_NAMES.get(seg, "")
    return f"{name} (AHA segment {seg})" + (f", {where}" if where else "") if name else (where or "LV site")


def _timing_text(c: dict[str, Any]) -> str:
    proto = c.get("protocol") if isinstance(c.get("protocol"), dict) else {}
    av, vv = _num(proto.get("av_delay_ms")), _num(proto.get("vv_delay_ms"))
    if av is None:
        return "not stated"
    text = f"AV delay {av:g} ms"
    if vv is not None and proto.get("lv_site") and proto.get("rv_site"):
        text += ", VV delay " + ("0 ms (simultaneous)" if vv == 0 else f"{abs(vv):g} ms, {'LV' if vv > 0 else 'RV'} first")
    return text


def _response_text(ctx: ReportContext, c: dict[str, Any]) -> str:
    m = c.get("metrics") if isinstance(c.get("metrics"), dict) else {}
    u = c.get("uq") if isinstance(c.get("uq"), dict) else {}
    dpdt = _num(m.get("dpdt_change_pct"))
    if dpdt is None:
        return "LV dP/dt max not simulated for this protocol (electrical prediction only)"
    ctx.record("summary.dpdt_change_pct", dpdt)
    text = f"LV dP/dt max {_signed(dpdt)} % vs intrinsic rhythm"
    ci = _interval(u, "dpdt_change_pct_ci95")
    prob = _num(u.get("responder_probability"))
    if ci is not None:
        ctx.record("summary.dpdt_change_pct_ci95", list(ci))
        text += f" (95 % interval {_signed(ci[0])} to {_signed(ci[1])} % over myocardial stiffness)"
    if prob is not None:
        ctx.record("summary.responder_probability", prob)
        text += f"; probability of an acute response (rise of at least {RESPONDER_PCT:g} %): {100 * prob:.0f} %"
    else:
        text += (f"; {'a responder' if dpdt >= RESPONDER_PCT else 'below the responder threshold'} "
                 f"(rise of at least {RESPONDER_PCT:g} %) at nominal stiffness, probability not quantified "
                 "(no stiffness samples)")
    return text


def _electrical_text(ctx: ReportContext, c: dict[str, Any], baseline: dict[str, Any]) -> str:
    m = c.get("metrics") if isinstance(c.get("metrics"), dict) else {}
    u = c.get("uq") if isinstance(c.get("uq"), dict) else {}
    tat, base = _num(m.get("tat_ms")), _num(baseline.get("tat_ms"))
    if tat is None:
        return "not available"
    text = f"total activation time {_plain(tat)} ms"
    if base is not None:
        text += f" vs {_plain(base)} ms intrinsic"
    change = _num(m.get("tat_change_pct"))
    if change is not None:
        ctx.record("summary.tat_change_pct", change)
        text += f" ({_signed(change)} %"
        ci = _interval(u, "tat_change_pct_ci95")
        text += (f"; 95 % interval {_signed(ci[0])} to {_signed(ci[1])} % over conduction uncertainty)" if ci else ")")
    qrs, base_qrs = _num(m.get("qrs_ms")), _num(baseline.get("qrs_ms"))
    if qrs is not None:
        text += f"; QRS duration {_plain(qrs)} ms" + (f" vs {_plain(base_qrs)} ms" if base_qrs is not None else "")
    pbest = _num(u.get("probability_best"))
    if pbest is not None:
        text += f"; probability of the shortest activation time among the sampled protocols {100 * pbest:.0f} %"
    return text


def disagreement_sentence(ranking: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> str:
    """One sentence when the electrical screen and the ranking's first protocol differ ("" if not)."""
    d = (ranking.get("metadata") or {}).get("ranking_disagreement")
    if not isinstance(d, dict):
        return ""
    e, f = d.get("electrical_best") or {}, d.get("ranked_first") or {}
    if e.get("name") not in by_name or f.get("name") not in by_name:
        return ""
    e_tat, f_tat = _num(e.get("tat_change_pct")), _num(f.get("tat_change_pct"))
    e_dp, f_dp = _num(e.get("dpdt_change_pct")), _num(f.get("dpdt_change_pct"))
    e_txt = f"activation time {_signed(e_tat)} %" if e_tat is not None else "the shortest activation time"
    e_txt += f", LV dP/dt max {_signed(e_dp)} %" if e_dp is not None else ", LV dP/dt max not simulated"
    f_txt = f"LV dP/dt max {_signed(f_dp)} %" if f_dp is not None else "the ranking endpoint"
    f_txt += f", activation time {_signed(f_tat)} %" if f_tat is not None else ""
    return (f"The electrical and haemodynamic criteria disagree: the shortest activation time comes with "
            f"{_label(by_name[e['name']])} ({e_txt}), the recommendation {_label(by_name[f['name']])} ({f_txt}) "
            "follows the ranking rule below.")


def _table_rows(cands: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for c in cands[:MAX_ROWS]:
        m = c.get("metrics") if isinstance(c.get("metrics"), dict) else {}
        dpdt, tat, change = _num(m.get("dpdt_change_pct")), _num(m.get("tat_ms")), _num(m.get("tat_change_pct"))
        resp = ("not simulated" if dpdt is None else _signed(dpdt) + (" (responder)" if dpdt >= RESPONDER_PCT else ""))
        rows.append([str(c.get("rank", "")), _label(c), resp, _plain(tat) if tat is not None else "—",
                     _signed(change) if change is not None else "—", str(c.get("concordance") or "—")])
    return rows


def _pv_figure(ctx: ReportContext, names: dict[str, str]) -> dict[str, Any] | None:
    em = ctx.cache.get("em_metrics")
    beats = ctx.cache.get("crt_beats")
    loops = []
    if isinstance(beats, dict) and beats:
        for n in sorted(beats, key=lambda n: (n != "baseline", n)):
            b = beats[n]
            if isinstance(b, dict) and b.get("lv_volume_ml"):
                label = "intrinsic rhythm (LBBB)" if n == "baseline" else names.get(n, "paced")
                loops.append((label, np.asarray(b["lv_volume_ml"], float), np.asarray(b["lv_pressure_kpa"], float)))
        source = "the CRT stage's beats"
    elif isinstance(em, dict) and em.get("lv_volume_ml"):
        loops = [("LV", np.asarray(em["lv_volume_ml"], float), np.asarray(em["lv_pressure_kpa"], float))]
        source = "the electromechanics stage"
    if not loops:
        return None
    png = figures.pv_loops(loops, legend_below=True, size=(3.6, 3.3))
    return {"name": "pv_loops", "src": figures.data_uri(png),
            "caption": f"LV pressure-volume loops, one simulated beat each ({source})."}


def _bullseye_figure(ctx: ReportContext, latest: int, lead_segment: int) -> dict[str, Any] | None:
    seg = ctx.cache.get("aha_means") or {}
    if not seg:
        return None
    marks = {latest: "*"} if latest else {}
    if lead_segment:
        marks[lead_segment] = marks.get(lead_segment, "") + " L"
    png = figures.bullseye(seg, label="activation time at baseline (ms)", marks=marks, size=(3.4, 2.6))
    return {"name": "bullseye", "src": figures.data_uri(png),
            "caption": "Mean baseline activation time per AHA segment (anterior up, septum left); "
                       "* latest-activated segment, L recommended LV lead."}


def _maps_figure(ctx: ReportContext) -> dict[str, Any] | None:
    acts = ctx.cache.get("activation_maps")
    if acts is None or acts.baseline is None:
        return None
    from cardiotwin.report.activation import summary_figure

    maps = [acts.baseline] + ([acts.best] if acts.best is not None else [])
    png = summary_figure(maps)
    titles = " and ".join(("intrinsic rhythm (LBBB)" if m is acts.baseline else "recommended pacing") for m in maps)
    return {"name": "activation", "src": figures.data_uri(png),
            "caption": f"Activation time on the heart surface, {titles}, one colour scale (ms after QRS onset; "
                       "grey: not activated); left anterior oblique view (top) and posterolateral view (bottom)."}


# calibration.json "measured" / "simulated" keys -> (clinical name, unit, factor to the unit shown)
CALIBRATION_QUANTITIES = {
    "lv_ef": ("LV ejection fraction", "%", 100.0),
    "lv_edv_ml": ("LV end-diastolic volume", "mL", 1.0),
    "lv_esv_ml": ("LV end-systolic volume", "mL", 1.0),
    "rv_ef": ("RV ejection fraction", "%", 100.0),
    "rv_edv_ml": ("RV end-diastolic volume", "mL", 1.0),
    "rv_esv_ml": ("RV end-systolic volume", "mL", 1.0),
}
# calibrated parameters -> clinical name
CALIBRATED_PARAMETERS = {
    "passive_stiffness_factor": "myocardial stiffness",
    "peak_active_tension": "contractility (peak active tension)",
    "conduction_speed_scale": "conduction speed",
    "windkessel": "arterial load",
}


def _calibration(ctx: ReportContext) -> dict[str, Any]:
    """Measured vs calibrated-twin values of ``CASE/calibrate/calibration.json`` (the calibrate
    stage), and which properties were fitted."""
    path = ctx.root / "calibrate" / "calibration.json"
    if not path.is_file():
        return {"rows": [], "text": "Not calibrated: the twin uses population tissue properties; a calibration to "
                                    "this patient's measurements will be shown here."}
    data = casedata.read_json(path)
    data = data if isinstance(data, dict) else {}
    measured = data.get("measured") if isinstance(data.get("measured"), dict) else {}
    simulated = data.get("simulated") if isinstance(data.get("simulated"), dict) else {}
    rows = []
    for key, (name, unit, factor) in CALIBRATION_QUANTITIES.items():
        m, t = _num(measured.get(key)), _num(simulated.get(key))
        if m is not None and t is not None:
            rows.append([name, f"{m * factor:.0f} {unit}", f"{t * factor:.0f} {unit}"])
            ctx.record(f"summary.calibration.{key}", [m, t])
    params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
    fitted = [CALIBRATED_PARAMETERS.get(k, k.replace("_", " ")) for k in params]
    text = ("Fitted to this patient's measurements: " + ", ".join(fitted) + "." if fitted else
            "A calibration is stored with this case; its details are in the evidence report.")
    return {"rows": rows, "text": text}


def _caveats(ctx: ReportContext, ranking: dict[str, Any], calibrated: bool) -> list[str]:
    out = ["Decision support only: a model prediction on this patient's anatomy. Confirm at implant (electrical "
           "delay at the lead, capture threshold, phrenic nerve stimulation, venous access)."]
    modality = str(((ctx.manifest.get("inputs") or {}).get("scan") or {}).get("modality", "")).upper()
    tissue = [] if calibrated else ["tissue properties are population averages, not fitted to this patient"]
    if modality == "CT" and not ranking.get("scar_segments"):
        tissue.append("CT shows no scar, so the heart is modelled without scar")
    if tissue:
        text = "; ".join(tissue)
        out.append(text[0].upper() + text[1:] + ".")
    below = [f for f in ctx.cache.get("factors", []) if not f.meets_goal]
    if ctx.cache.get("factors") is not None:
        out.append(f"Model credibility (ASME V&V 40): {len(below)} of {len(ctx.cache['factors'])} evidence factors "
                   "are below their goal; see the evidence report.")
    return out[:3]


def summary_page(ctx: ReportContext, *, subtitle: str) -> tuple[str, dict[str, str]]:
    """The summary as one self-contained HTML page, and the status of its parts
    (part -> "complete" / "missing") for ``report.json``."""
    import jinja2

    from cardiotwin import __version__

    cands = list(ctx.cache.get("ranking") or [])
    rk = ctx.root / "therapy" / "ranking.json"
    ranking = casedata.read_json(rk) if rk.is_file() else {}
    ranking = ranking if isinstance(ranking, dict) else {}
    baseline = ranking.get("baseline") if isinstance(ranking.get("baseline"), dict) else {}
    by_name = {str(c.get("name")): c for c in cands if c.get("name")}
    usable = [c for c in cands if not c.get("excluded_reason")]
    status: dict[str, str] = {}
    rec = None
    latest = int(_num(ranking.get("latest_segment")) or 0)
    lead_segment = 0
    if usable:
        best = usable[0]
        lv = (best.get("protocol") or {}).get("lv_site") if isinstance(best.get("protocol"), dict) else None
        lead_segment = int(lv.get("aha_segment") or 0) if isinstance(lv, dict) else 0
        mode = {"BiV": "Biventricular pacing", "LV only": "LV-only pacing", "RV only": "RV-only pacing"}
        head = "Recommended: " + (mode.get(_label(best).split(",")[0], "pacing") + ", LV lead " + _lv_text(best).split(",")[0]
                                  if isinstance(lv, dict) else _label(best))
        rows = [("LV lead target", _lv_text(best)), ("RV lead", _rv_text(best)), ("Timing", _timing_text(best)),
                ("Predicted response", _response_text(ctx, best)),
                ("Resynchronisation", _electrical_text(ctx, best, baseline))]
        if len(usable) > 1:
            r = usable[1]
            rm = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
            dp, tc = _num(rm.get("dpdt_change_pct")), _num(rm.get("tat_change_pct"))
            what = [f"LV dP/dt max {_signed(dp)} %" if dp is not None else "LV dP/dt max not simulated"]
            if tc is not None:
                what.append(f"activation time {_signed(tc)} %")
            rows.append(("Runner-up", f"{_label(r)} ({', '.join(what)})"))
        if latest:
            seg_ms = _num(((ranking.get("metadata") or {}).get("segment_activation_ms") or {}).get(str(latest)))
            conc = str(best.get("concordance") or "")
            text = f"{AHA_SEGMENT_NAMES.get(latest, '')} (AHA segment {latest})"
            text += f", activated {_plain(seg_ms)} ms after QRS onset at baseline" if seg_ms is not None else ""
            if conc:
                text += (f"; the recommended LV lead is {conc} to it (TARGET trial: concordant or adjacent leads "
                         "respond better)")
            rows.append(("Latest-activated segment", text))
        rec = {"head": head, "rows": rows, "disagreement": disagreement_sentence(ranking, by_name)}
        ctx.record("summary.recommended", best.get("name"))
        ctx.record("summary.disagreement", bool(rec["disagreement"]))
        status["recommendation"] = "complete"
    else:
        status["recommendation"] = "missing"
        ctx.note_missing("summary", ctx.cache.get("ranking_missing") or "no eligible lead candidate")
    names = {str(c.get("name")): _label(c) for c in cands}
    rule = ((ranking.get("metadata") or {}).get("ranking_rule") or {}).get("text", "")
    if cands and not rule:
        rule = ("ranked by the change of total activation time (this case's CRT results predate the stated rule: "
                "rerun the CRT stage for the dP/dt max ranking).")
    maps = _maps_figure(ctx)
    side, side_missing = [], []
    for name, fig, why in (("bullseye", _bullseye_figure(ctx, latest, lead_segment), "no AHA segment activation times"),
                           ("pv_loops", _pv_figure(ctx, names), ctx.cache.get("em_missing") or "no pressure-volume loops")):
        status[name] = "complete" if fig else "missing"
        if fig:
            side.append(fig)
        else:
            side_missing.append(why)
            ctx.note_missing("summary", why)
    status["activation"] = "complete" if maps else "missing"
    if not maps:
        ctx.note_missing("summary", ctx.cache.get("activation_missing", "no activation map"))
    calibration = _calibration(ctx)
    status["calibration"] = "complete" if (ctx.root / "calibrate" / "calibration.json").is_file() else "missing"
    more = (f"{len(cands) - MAX_ROWS} further protocols are listed in the evidence report."
            if len(cands) > MAX_ROWS else "")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(_PAGE).render(
        version=__version__, css=_CSS, subtitle=subtitle, rec=rec,
        missing_rec=ctx.cache.get("ranking_missing") or "no eligible lead candidate in the CRT results.",
        rule=rule, columns=["Rank", "Pacing protocol", "LV dP/dt max change (%)", "Total activation time (ms)",
                            "Activation time change (%)", "LV lead vs latest segment"],
        rows=_table_rows(cands), more=more, maps=maps,
        missing_maps=ctx.cache.get("activation_missing", "no activation map."), side=side,
        side_missing=side_missing, calibration=calibration, caveats=_caveats(ctx, ranking, status["calibration"] == "complete"))
    return html, status
