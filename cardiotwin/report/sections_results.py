"""Evidence report sections 8-12: uncertainty quantification, applicability and limitations,
credibility factors, results, provenance. Also the figures the clinical summary reuses."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cardiotwin.anatomy import AHA_SEGMENT_NAMES
from cardiotwin.report import figures
from cardiotwin.report.casedata import candidate_confidence, candidate_name, finite, first_number, scalar_items
from cardiotwin.report.context import ReportContext, Section, crt_pv_loops, figure, fmt, p, table
from cardiotwin.report.credibility import credibility_factors

log = logging.getLogger(__name__)

LIMITATIONS = (
    "The ventricles are modelled without the His-Purkinje network: LBBB baseline activation starts from an RV "
    "breakthrough and paced activation from the lead site.",
    "Tissue parameters (conductivities, stiffness, active tension) are population values from the literature, not "
    "calibrated on this patient unless a measured QRS duration was used for calibration in the pipeline.",
    "Fibre directions are rule-based (LDRB), not measured (no DTI).",
    "Scar and border zone come from the segmentation; CT does not show scar, so CT cases assume none unless labelled.",
    "Predictions concern acute electrical and haemodynamic response; long-term remodelling is outside the model.",
)


def _uq_cells(uq: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(intervals "key: [lo, hi]", other scalar entries "key: value") of one candidate's UQ entry."""
    intervals, others = [], []
    for k, v in uq.items():
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(finite(x) is not None for x in v):
            intervals.append(f"{k}: [{fmt(v[0])}, {fmt(v[1])}]")
        elif k not in ("probability_best", "p_best", "prob_best", "confidence") and not isinstance(v, (dict, list)):
            others.append(f"{k}: {fmt(v)}")
    return intervals, others


def uq_section(ctx: ReportContext) -> Section:
    """Every protocol of ranking.json with a non-empty ``uq`` entry (lead sites, timing-sweep winners,
    any other), the uncertain inputs and the first-order sensitivity indices of therapy/uq.json."""
    s = Section("uq", "8. Uncertainty quantification")
    cands = ctx.cache.get("ranking")
    rows = []
    for i, c in enumerate(cands or []):
        uq = c.get("uq") if isinstance(c.get("uq"), dict) else {}
        if not uq:
            continue
        name = candidate_name(c, i)
        conf = candidate_confidence(c)
        intervals, others = _uq_cells(uq)
        if conf:
            ctx.record(f"uq.{name}.probability_best", conf[1])
        for k, v in uq.items():
            if isinstance(v, (list, tuple)) and len(v) == 2 and all(finite(x) is not None for x in v):
                ctx.record(f"uq.{name}.{k}", [float(v[0]), float(v[1])])
        rows.append([c.get("rank", i + 1), name, conf[1] if conf else None, "; ".join(intervals) or "—",
                     "; ".join(others) or "—"])
    extra = ctx.cache.get("therapy_uq")
    if rows:
        ctx.evidence["uq"] = True
        ctx.record("uq.protocols_with_uq", len(rows))
        s.blocks.append(table(["Rank", "Protocol", "P(best)", "95 % intervals", "Other UQ entries"], rows,
                              caption=f"Every protocol of therapy/ranking.json with an uncertainty entry ({len(rows)} of "
                                      f"{len(cands or [])}), best first (quasi-Monte Carlo over the uncertain inputs)."))
    if isinstance(extra, dict):
        ctx.evidence["uq"] = True
        inputs = extra.get("inputs") if isinstance(extra.get("inputs"), dict) else {}
        in_rows = []
        for k, v in inputs.items():
            vals = np.asarray([x for x in (v if isinstance(v, list) else []) if finite(x) is not None], dtype=float)
            if vals.size:
                in_rows.append([k, vals.size, float(vals.min()), float(vals.max()), float(vals.mean())])
        if in_rows:
            s.blocks.append(table(["Uncertain input", "samples", "min", "max", "mean"], in_rows,
                                  caption="Sampled inputs (therapy/uq.json 'inputs')."))
        sens = extra.get("sensitivity_first_order") if isinstance(extra.get("sensitivity_first_order"), dict) else {}
        names = sorted({k for d in sens.values() if isinstance(d, dict) for k in d})
        if sens and names:
            s.blocks.append(table(["Output"] + names, [[out] + [(d or {}).get(n) for n in names] for out, d in sens.items()
                                                       if isinstance(d, dict)],
                                  caption="First-order sensitivity indices (therapy/uq.json)."))
        known = {"inputs", "sensitivity_first_order", "candidates"}
        rest = [[k, v] for k, v in scalar_items({k: v for k, v in extra.items() if k not in known}, depth=3)]
        if rest:
            s.blocks.append(table(["UQ item", "Value"], rest, caption="therapy/uq.json"))
    if not rows and not isinstance(extra, dict):
        s.blocks.append(ctx.note_missing("uq", ctx.cache.get("ranking_missing") or
                                         "the therapy results carry no uncertainty quantification (no 'uq' entries)."))
    return s


def applicability_section(ctx: ReportContext) -> Section:
    s = Section("applicability", "9. Applicability and limitations")
    inputs = ctx.manifest.get("inputs", {})
    scan = inputs.get("scan") if isinstance(inputs, dict) else None
    if isinstance(scan, dict):
        s.blocks.append(p(f"Input: {scan.get('modality', 'unknown')} scan, grid {fmt(scan.get('shape'))}, spacing "
                          f"{fmt(scan.get('spacing_mm'))} mm."))
    s.blocks.append(p("Applicable to adult hearts with a segmentable LV and RV, sinus rhythm with LBBB-type "
                      "conduction delay, as in the CRT indication (ESC 2021 pacing guideline); other conduction "
                      "disorders, congenital anatomy and atrial fibrillation are outside the validated domain."))
    for item in LIMITATIONS:
        s.blocks.append(p("Limitation: " + item))
    return s


def credibility_section(ctx: ReportContext) -> Section:
    s = Section("credibility", "10. Credibility factors (ASME V&V 40)")
    risk = int(ctx.evidence.get("risk", 3))
    ev = dict(ctx.evidence)
    ev["software_recorded"] = bool(ctx.manifest.get("software"))
    factors = credibility_factors(risk=risk, evidence=ev)
    ctx.cache["factors"] = factors
    rows = [[f.group, f.name, f.goal, f.achieved, "yes" if f.meets_goal else "no", f.rationale, f"section {f.evidence}"]
            for f in factors]
    ctx.record("credibility.factors_meeting_goal", sum(f.meets_goal for f in factors))
    s.blocks.append(table(["Group", "Factor", "Goal", "Achieved", "Meets goal", "Rationale", "Evidence"], rows,
                          caption="Achieved levels follow the rules in cardiotwin.report.credibility from the evidence "
                                  "in this report."))
    return s


def activation_figure(ctx: ReportContext, *, best: bool) -> dict[str, Any] | None:
    """Figure block of the baseline (and, with ``best``, the recommended protocol's) activation maps,
    or None when the case has no activation map. Records the TATs and the files shown."""
    acts = ctx.cache.get("activation_maps")
    if acts is None or acts.baseline is None:
        return None
    from cardiotwin.report.activation import activation_figure as render, tat_change_pct

    maps = [acts.baseline] + ([acts.best] if best and acts.best is not None else [])
    key = f"activation_png_{len(maps)}"  # evidence and summary show the same maps: render once
    if key not in ctx.cache:
        ctx.cache[key] = render(maps)
    png, renderer = ctx.cache[key]
    ctx.record("activation.renderer", renderer)
    parts = []
    for m in maps:
        name = f" {ctx.cache.get('best_name', '')}" if m is acts.best else ""
        parts.append(f"{m.title}{name}: {m.source} (TAT {fmt(m.tat_ms)} ms from {m.tat_source})")
    if len(maps) == 2:
        change = tat_change_pct(maps[0], maps[1])
        if change is not None:
            parts.append(f"TAT change {fmt(ctx.record('activation.best_tat_change_pct', change))} %")
    ctx.record("activation.sources", [m.source for m in maps])
    return figure("activation", png, "Activation maps on the ventricular surface, anterior and posterior views, shared "
                  f"colour scale, grey: never activated; rendered by {renderer}. " + "; ".join(parts) + ".")


def results_section(ctx: ReportContext) -> Section:
    s = Section("results", "11. Results")
    acts = ctx.cache.get("activation_maps")
    block = activation_figure(ctx, best=True)
    if block is None:
        s.blocks.append(ctx.note_missing("results", ctx.cache.get("activation_missing", "no activation map.")))
    else:
        key = "therapy.baseline.tat_ms" if acts.baseline.source.startswith("therapy/") else "ep.tat_ms"
        tat = ctx.record(key, acts.baseline.tat_ms)
        s.blocks.append(p(f"Baseline total activation time (latest - earliest, {acts.baseline.tat_source}): "
                          f"{fmt(tat)} ms."))
        if acts.best is not None:
            ctx.record("therapy.best.tat_ms", acts.best.tat_ms)
            s.blocks.append(p(f"Recommended protocol {ctx.cache.get('best_name', '')}: total activation time "
                              f"{fmt(acts.best.tat_ms)} ms ({acts.best.tat_source})."))
        for reason in acts.missing:
            s.blocks.append(ctx.note_missing("results", reason + "."))
        s.blocks.append(block)
        seg = ctx.cache.get("aha_means") or {}
        if seg:
            s.blocks.append(figure("bullseye", figures.bullseye(seg, label="mean activation (ms)"),
                                   f"Mean baseline activation time per AHA segment ({acts.segment_source})."))
            s.blocks.append(table(["AHA segment", "mean activation (ms)"],
                                  [[f"{k} {AHA_SEGMENT_NAMES[k]}", ctx.record(f"activation.aha.{k}", v)]
                                   for k, v in sorted(seg.items())]))
        else:
            s.blocks.append(ctx.note_missing("results", f"no AHA segment field ('aha') on {acts.baseline.source}: "
                                                        "no bullseye."))
    ep = ctx.cache.get("ep_json")
    ecg = ep.get("ecg") if isinstance(ep, dict) else None
    if isinstance(ecg, dict) and isinstance(ecg.get("leads"), dict) and ecg.get("times_ms"):
        qrs = first_number(ep, ("qrs_duration_ms", "qrs_ms"))
        if qrs:
            ctx.record("ep.qrs_ms", qrs[1])
            s.blocks.append(p(f"QRS duration (ep/ep.json {qrs[0]}): {fmt(qrs[1])} ms."))
        leads = {k: np.asarray(v, dtype=float) for k, v in ecg["leads"].items()}
        s.blocks.append(figure("ecg", figures.ecg(np.asarray(ecg["times_ms"], dtype=float), leads), "Pseudo-ECG (mV)."))
    else:
        s.blocks.append(ctx.note_missing("results", ctx.cache.get("ep_missing") or "ep/ep.json carries no ECG ('ecg')."))
    em = ctx.cache.get("em_metrics")
    if isinstance(em, dict) and em.get("lv_volume_ml"):
        loops = [("LV", np.asarray(em["lv_volume_ml"]), np.asarray(em["lv_pressure_kpa"]))]
        if em.get("rv_volume_ml"):
            loops.append(("RV", np.asarray(em["rv_volume_ml"]), np.asarray(em["rv_pressure_kpa"])))
        s.blocks.append(figure("pv_loops", figures.pv_loops(loops), "Pressure-volume loops (em/metrics.json)."))
        rows = []
        for key in ("edv_ml", "esv_ml", "stroke_volume_ml", "ejection_fraction", "dpdt_max_mmhg_per_s", "stroke_work_mj"):
            for cav, v in (em.get(key) or {}).items():
                if finite(v) is not None:
                    rows.append([key, cav, ctx.record(f"em.{key}.{cav}", float(v))])
        s.blocks.append(table(["Metric", "Cavity", "Value"], rows, caption="em/metrics.json"))
    elif isinstance(ctx.cache.get("crt_beats"), dict) and ctx.cache["crt_beats"]:
        s.blocks.append(figure("pv_loops", figures.pv_loops(crt_pv_loops(ctx)),
                               "LV pressure-volume loops of the CRT stage's beats (therapy/beats.json)."))
        rows = []
        for name, beat in ctx.cache["crt_beats"].items():
            for key in ("edv_ml", "esv_ml", "stroke_volume_ml", "ejection_fraction", "dpdt_max_mmhg_per_s", "stroke_work_mj"):
                v = finite((beat.get(key) or {}).get("LV")) if isinstance(beat.get(key), dict) else finite(beat.get(key))
                if v is not None:
                    rows.append([name, key, ctx.record(f"crt_beats.{name}.{key}", v)])
        s.blocks.append(table(["Beat", "Metric (LV)", "Value"], rows, caption="therapy/beats.json"))
    else:
        s.blocks.append(ctx.note_missing("results", ctx.cache.get("em_missing", "no PV loops.")))
    cands = ctx.cache.get("ranking")
    if cands:
        rows, names, vals = [], [], []
        metric_key = next((k for k in ("tat_change_pct", "tat_ms", "predicted_response", "score")
                           if finite((cands[0].get("metrics") or {}).get(k, cands[0].get(k))) is not None), None)
        for i, c in enumerate(cands):
            m = c.get("metrics") if isinstance(c.get("metrics"), dict) else {}
            name = candidate_name(c, i)
            conf = candidate_confidence(c)
            val = finite(m.get(metric_key, c.get(metric_key))) if metric_key else None
            rows.append([c.get("rank", i + 1), name, val, conf[1] if conf else None, c.get("concordance", "—"),
                         c.get("excluded_reason") or "—"])
            if val is not None:
                ctx.record(f"therapy.{name}.{metric_key}", val)
                names.append(name)
                vals.append(val)
        rule = ctx.cache.get("ranking_rule") or ("not stated in therapy/ranking.json (results of an earlier version: "
                                                  "ranked by the change of total activation time)")
        s.blocks.append(p(f"Ranking rule: {rule}"))
        for i, c in enumerate(cands):
            dpdt = finite((c.get("metrics") or {}).get("dpdt_change_pct"))
            rows[i].insert(3, dpdt)
        s.blocks.append(table(["Rank", "Candidate", metric_key or "metric", "dpdt_change_pct", "P(best)", "Concordance",
                               "Excluded"], rows, caption="therapy/ranking.json, best first."))
        if vals:
            s.blocks.append(figure("ranking", figures.ranking_bars(names[:15], vals[:15], label=str(metric_key)),
                                   "Candidate ranking (best on top)."))
    else:
        s.blocks.append(ctx.note_missing("results", ctx.cache.get("ranking_missing", "no therapy ranking.")))
    return s


def provenance_section(ctx: ReportContext) -> Section:
    s = Section("provenance", "12. Provenance")
    m = ctx.manifest
    s.blocks.append(p(f"Case {ctx.label}; manifest created {m.get('created')}; report built by cardiotwin "
                      f"{(m.get('software') or {}).get('cardiotwin', '')}."))
    rows = []
    for name, rec in (m.get("inputs") or {}).items():
        if not isinstance(rec, dict):
            continue
        src = rec.get("source_name", "") if ctx.include_identifiers else "(withheld: use --include-identifiers)"
        rows.append([name, rec.get("path"), rec.get("sha256"), rec.get("source_sha256"), src])
    if rows:
        s.blocks.append(table(["Input", "Path", "sha256", "source sha256", "source name"], rows))
    else:
        s.blocks.append(ctx.note_missing("provenance", "no inputs recorded in manifest.json."))
    srows = []
    for name, rec in (m.get("stages") or {}).items():
        if not isinstance(rec, dict):
            continue
        srows.append([name, rec.get("status"), rec.get("started"), rec.get("duration_s"),
                      (rec.get("config_sha256") or "")[:16], len(rec.get("outputs") or {}),
                      "; ".join(f"{k}={str(v)[:12]}" for k, v in (rec.get("inputs") or {}).items())])
        last = rec.get("last_attempt")
        if isinstance(last, dict):
            srows.append([f"{name} (last attempt)", last.get("status"), last.get("started"), last.get("duration_s"),
                          "", "", str(last.get("error", ""))[:200]])
    if srows:
        s.blocks.append(table(["Stage", "Status", "Started", "Duration (s)", "config sha256", "outputs", "input hashes"],
                              srows))
    for stage, rec in (m.get("stages") or {}).items():
        if isinstance(rec, dict) and rec.get("config"):
            s.blocks.append(table([f"{stage} configuration", "value"], [[k, v] for k, v in scalar_items(rec["config"])]))
    return s


def summary_numbers(ctx: ReportContext) -> dict[str, Any]:
    """Best candidate and its confidence for the clinical summary (None entries when absent)."""
    cands = ctx.cache.get("ranking") or []
    usable = [c for c in cands if not c.get("excluded_reason")]
    if not usable:
        return {"best": None}
    best = usable[0]
    conf = candidate_confidence(best)
    return {"best": best, "best_name": candidate_name(best, cands.index(best)),
            "confidence": conf[1] if conf else None,
            "runner_up": candidate_name(usable[1], cands.index(usable[1])) if len(usable) > 1 else None}
