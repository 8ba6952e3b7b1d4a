"""Evidence report sections 1-7: question and context of use, model risk, model description,
code verification, calculation verification, use error, validation (ASME V&V 40 structure)."""

from __future__ import annotations

import logging

import numpy as np

from cardiotwin.report import figures
from cardiotwin.report.casedata import finite, first_number, scalar_items, stage_file
from cardiotwin.report.context import ReportContext, Section, figure, fmt, p, pre, table
from cardiotwin.report.credibility import DEFAULT_CONSEQUENCE, DEFAULT_INFLUENCE, LEVELS, goal_for_risk, risk_level

log = logging.getLogger(__name__)

EQUATIONS = """Electrophysiology (ep stage)
  eikonal:     sqrt(grad T . D grad T) = 1 / c0,  T = t_pace at lead / Purkinje sources      [T in ms]
  monodomain:  chi (Cm dV/dt + I_ion(V, s)) = div(sigma grad V) + I_stim,  ds/dt = g(V, s)
               P1 finite elements in space, operator splitting in time, sigma = sigma_t I + (sigma_l - sigma_t) f0 f0^T
Mechanics (em stage)
  balance:     div P = 0 in Omega_0,  P N = -p_cav J F^-T N on the endocardia,  u = 0 (or springs) at the base
  passive:     W = C/2 (exp(Q) - 1) + kappa (J - 1)^2,  Q = b_f E_ff^2 + b_t (E_ss^2 + E_nn^2 + E_sn^2 + E_ns^2)
                   + b_fs (E_fs^2 + E_sf^2 + E_fn^2 + E_nf^2)            (Guccione et al. 1991)
  active:      S_a = T_a(t - T_act(x)) f0 (x) f0, twitch driven by the EP activation time
Circulation (0D)
  dV_i/dt = sum_in Q - sum_out Q,  Q = (p_up - p_down) / R,  p = (V - V0) / C or E(t) (V - V0),
  coupled to the cavity volumes of the 3D model (backward Euler)."""

# Parameter sources by (substring of) configuration key; first match wins.
PARAMETER_SOURCES: tuple[tuple[str, str], ...] = (
    ("b_f", "Guccione et al. 1991, J Biomech Eng 113:42; Land et al. 2015"),
    ("b_t", "Guccione et al. 1991; Land et al. 2015"),
    ("b_fs", "Guccione et al. 1991; Land et al. 2015"),
    ("stiffness", "Guccione et al. 1991; Land et al. 2015"),
    ("conductivit", "Niederer et al. 2011 (Clerc 1976 values)"),
    ("diffusiv", "Niederer et al. 2011"),
    ("velocity", "Taggart et al. 2000, J Mol Cell Cardiol 32:621 (human conduction velocities)"),
    ("speed", "Taggart et al. 2000, J Mol Cell Cardiol 32:621"),
    ("tension", "Land et al. 2017, J Physiol 595:4085 (human active tension)"),
    ("resist", "Regazzoni et al. 2022, J Comput Phys 457:111083"),
    ("compliance", "Regazzoni et al. 2022"),
    ("elastance", "Regazzoni et al. 2022"),
    ("edge", "meshing choice (see calculation verification)"),
    ("dt", "time-step choice (see calculation verification)"),
)


def _source(key: str) -> str:
    low = key.lower()
    return next((src for sub, src in PARAMETER_SOURCES if sub in low), "cardiotwin default / pipeline configuration")


def question_section(ctx: ReportContext) -> Section:
    s = Section("question", "1. Question of interest and context of use")
    c = ctx.context
    if ctx.pipeline is not None:
        s.blocks.append(p(f"Source: pipeline configuration {ctx.pipeline_source}."))
    for key, title in (("question_of_interest", "Question of interest"), ("context_of_use", "Context of use"),
                       ("intended_population", "Intended population")):
        value = c.get(key)
        if isinstance(value, str) and value.strip():
            s.blocks.append(p(f"{title}: {value.strip()}"))
        elif key != "intended_population":
            reason = ctx.pipeline_missing or f"the pipeline YAML ({ctx.pipeline_source}) has no '{key}' entry"
            s.blocks.append(ctx.note_missing("question", f"{title} not stated: {reason}."))
    return s


def risk_section(ctx: ReportContext) -> Section:
    s = Section("risk", "2. Model risk")
    c = ctx.context
    infl = str(c.get("model_influence") or DEFAULT_INFLUENCE[0]).lower()
    cons = str(c.get("decision_consequence") or DEFAULT_CONSEQUENCE[0]).lower()
    infl_why = c.get("model_influence_rationale") or DEFAULT_INFLUENCE[1]
    cons_why = c.get("decision_consequence_rationale") or DEFAULT_CONSEQUENCE[1]
    if infl not in LEVELS or cons not in LEVELS:
        s.blocks.append(ctx.note_missing("risk", f"model influence / decision consequence must be low, medium or high "
                                                 f"(pipeline gives {infl!r}, {cons!r}); default assessment used."))
        infl, cons = DEFAULT_INFLUENCE[0], DEFAULT_CONSEQUENCE[0]
    risk = risk_level(infl, cons)
    ctx.record("model_risk_level", risk)
    ctx.evidence["risk"] = risk
    src = "pipeline YAML" if c.get("model_influence") else "cardiotwin default assessment (override in the pipeline YAML)"
    s.blocks.append(table(["Element", "Level", "Rationale"], [
        ["Model influence", infl, str(infl_why)], ["Decision consequence", cons, str(cons_why)],
        ["Model risk (1-5)", risk, f"influence + consequence - 1 on the V&V 40 5-level matrix; goal level for every "
                                   f"credibility factor: {goal_for_risk(risk)}"]], caption=f"Assessment source: {src}."))
    return s


def model_section(ctx: ReportContext) -> Section:
    s = Section("model", "3. Model description")
    s.blocks.append(pre(EQUATIONS))
    rows = []
    for stage, rec in ctx.manifest.get("stages", {}).items():
        if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict):
            continue
        for key, value in scalar_items(rec["config"]):
            rows.append([stage, key, value, _source(key)])
    if rows:
        s.blocks.append(table(["Stage", "Parameter", "Value (with unit)", "Source"], rows,
                              caption="Parameters exactly as recorded in manifest.json for each stage's run."))
    else:
        s.blocks.append(ctx.note_missing("model", "no stage of this case has recorded a configuration in manifest.json "
                                                  "(no stage has run), so no parameters can be listed."))
    sw = ctx.manifest.get("software") or {}
    versions: dict[str, str] = dict(sw)
    for rec in ctx.manifest.get("stages", {}).values():
        if isinstance(rec, dict) and isinstance(rec.get("software"), dict):
            versions.update(rec["software"])
    s.blocks.append(table(["Package", "Version"], [[k, v] for k, v in sorted(versions.items())],
                          caption="Software versions recorded in the case manifest (case creation and stage runs)."))
    return s


def code_verification_section(ctx: ReportContext) -> Section:
    s = Section("code-verification", "4. Code verification")
    res = ctx.verification
    if res is None:
        s.blocks.append(ctx.note_missing("code-verification", "no verification results were found "
                                         f"({ctx.verification_path}); run `cardiotwin verify --case CASE`."))
        ctx.evidence["code_checks"] = {}
        return s
    from cardiotwin.verification.registry import summary_counts

    counts = summary_counts(res)
    ctx.evidence["code_checks"] = counts
    ctx.evidence["code_suite"] = res.get("suite")
    sw = res.get("software", {})
    s.blocks.append(p(f"Results file {ctx.verification_path.name if ctx.verification_path else ''}: suite "
                      f"'{res.get('suite')}', run {res.get('created')} on {res.get('machine')}, cardiotwin "
                      f"{sw.get('cardiotwin')}, dolfinx {sw.get('fenics-dolfinx', '—')}, torch {sw.get('torch', '—')}. "
                      f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
                      f"{counts['unavailable']} unavailable."))
    rows = []
    for rec in res["checks"]:
        ctx.record(f"verify.{rec['name']}.status", rec["status"])
        if not rec.get("quantities"):
            rows.append([rec["title"], rec["status"], "—", "—", "—", rec.get("message", ""), rec["reference"]])
        for q in rec.get("quantities", []):
            ctx.record(f"verify.{rec['name']}.{q['name']}", q["value"])
            target = (f"[{fmt(q['range'][0])}, {fmt(q['range'][1])}]" if "range" in q
                      else f"{fmt(q.get('expected'))} ± {fmt(q.get('tolerance'))}" if "tolerance" in q else "—")
            rows.append([rec["title"], rec["status"], q["name"], q["value"], target + (f" {q['unit']}" if q["unit"] else ""),
                         rec.get("message", ""), rec["reference"]])
    s.blocks.append(table(["Check", "Status", "Quantity", "Value", "Acceptance", "Note", "Reference"], rows))
    mms = next((r for r in res["checks"] if r["name"] == "mms_diffusion" and r["status"] in ("pass", "fail")), None)
    if mms and mms.get("details", {}).get("h"):
        d = mms["details"]
        s.blocks.append(figure("mms_convergence", figures.code_verification_orders(d["h"], d["l2_error"],
                               name="L2 error", order=2.0), "Manufactured-solution L2 error against mesh size "
                               "(P1 theory: slope 2)."))
    return s


def calculation_verification_section(ctx: ReportContext) -> Section:
    s = Section("calculation-verification", "5. Calculation verification on this patient")
    cv = ctx.calcver
    from cardiotwin.report.solver_settings import solver_settings

    tol_rows = solver_settings(ctx.manifest)
    if cv is None:
        for reason in ctx.cache.get("calcver_reasons") or ["no refinement study stored (calcver/calcver.json)."]:
            s.blocks.append(ctx.note_missing("calculation-verification", reason))
    else:
        if cv.get("unavailable"):
            for reason in cv["unavailable"]:
                s.blocks.append(ctx.note_missing("calculation-verification", reason))
        worst = None
        for study in cv.get("studies", []):
            rows, plots = [], []
            for qname, g in study["quantities"].items():
                ctx.record(f"calcver.{study['name']}.{qname}.gci_fine", g["gci_fine"])
                gci_pct = None if g["gci_fine"] is None else 100.0 * g["gci_fine"]
                # levels outside the asymptotic range (an observed order far from the formal one, or
                # oscillation): the studies add the two finer levels' GCI at the formal order, and the
                # larger of the two is the uncertainty that counts
                two = g.get("gci_two_finest")
                two_pct = None if two is None else 100.0 * two
                if two is not None:
                    ctx.record(f"calcver.{study['name']}.{qname}.gci_two_finest", two)
                for v in (gci_pct, two_pct):
                    if v is not None:
                        worst = v if worst is None else max(worst, v)
                rows.append([qname, g["sizes"], g["values"], g["observed_order"], g["extrapolated"], gci_pct,
                             two_pct, g["convergence"]])
                plots.append((qname, g["sizes"], g["values"], g["extrapolated"]))
            s.blocks.append(p(f"{study['title']}: {study.get('description', '')} Wall time {fmt(study.get('seconds'))} s."))
            if study.get("levels"):
                cols = [k for k in study["levels"][0] if isinstance(study["levels"][0][k], (int, float, bool))]
                s.blocks.append(table(cols, [[lvl.get(k) for k in cols] for lvl in study["levels"]],
                                      caption=f"{study['title']}: every level as run."))
            for note in study.get("notes") or []:
                s.blocks.append(p(note))
            for qname, g in study["quantities"].items():
                for key in ("stage_dt_error_percent", "stage_mesh_error_percent"):
                    if g.get(key) is not None:
                        ctx.record(f"calcver.{study['name']}.{qname}.{key}", g[key])
            s.blocks.append(table(["Quantity", f"sizes: {study['size_label']}", "values", "observed order p", "extrapolated",
                                   "GCI fine (%)", "GCI two finer levels (%)", "convergence"],
                                  rows, caption="GCI after Celik et al. 2008 (J Fluids Eng 130:078001), Fs = 1.25 "
                                                "(three levels) or 3 (two levels); 'two finer levels': p = formal "
                                                "order, Fs = 3, given where three levels are not in the asymptotic "
                                                "range (the larger GCI counts)."))
            s.blocks.append(figure(f"convergence_{study['name']}", figures.convergence(plots, xlabel=study["size_label"]),
                                   f"{study['title']}: outputs against {study['size_label']}."))
        ctx.evidence["gci_max_percent"] = worst
        # the weakest study decides: "three-level" must hold for every refinement shown
        ctx.evidence["calc_runs"] = min((len(g["sizes"]) for st in cv.get("studies", [])
                                         for g in st["quantities"].values()), default=0)
        ctx.evidence["calc_studies"] = [st["name"] for st in cv.get("studies", []) if st.get("quantities")]
    stages = ctx.manifest.get("stages") or {}
    therapy, em_stage = stages.get("therapy") or {}, stages.get("em") or {}
    # EF and dP/dt_max are outputs of this case: their refinement studies count for the credibility factor
    ctx.evidence["em_outputs"] = bool(
        (therapy.get("status") == "ok" and int((therapy.get("config") or {}).get("em_top_k", 0) or 0) > 0)
        or em_stage.get("status") == "ok")
    if tol_rows:
        ctx.evidence["solver_tolerances"] = True
        for stage, solver, name, value, _unit, _src in tol_rows:
            ctx.record(f"solver.{stage}.{solver.split(' (')[0]}.{name}", value)
        s.blocks.append(table(["Stage", "Solver", "Setting", "Value", "Unit", "Source"], tol_rows,
                              caption="Solver tolerances and time steps as run: each stage's recorded configuration "
                                      "loaded into the configuration class the stage used (its defaults fill what the "
                                      "stage did not set)."))
    else:
        s.blocks.append(ctx.note_missing("calculation-verification", "no solver tolerances recorded in the stage "
                                         "configurations of this case."))
    return s


def use_error_section(ctx: ReportContext) -> Section:
    s = Section("use-error", "6. Use error")
    from cardiotwin.report.use_error import label_origin, segmentation_qc_rows

    qc = ctx.cache.get("seg_qc")
    if not isinstance(qc, dict):
        _, why = stage_file(ctx.root, "segment", "labels.nii.gz", "segment")
        s.blocks.append(ctx.note_missing("use-error", f"segmentation QC: no label map ({why})."))
    else:
        ctx.evidence["seg_qc"] = True
        source = ctx.cache.get("seg_qc_source", "")
        s.blocks.append(p(f"Label map origin: {label_origin(ctx.manifest)}. Segmentation QC source: {source}."))
        ctx.record("segment.qc.source", source)
        if "volumes_ml" in qc:
            rows = segmentation_qc_rows(qc)
            for item, value, _unit in rows:
                if finite(value) is not None:
                    ctx.record(f"segment.qc.{item}", value)
            s.blocks.append(table(["QC item", "Value", "Unit"], rows, caption=source))
        else:  # a qc.json in another layout: show its scalar entries as stored
            items = scalar_items(qc)
            for k, v in items:
                if finite(v) is not None:
                    ctx.record(f"segment.qc.{k}", v)
            s.blocks.append(table(["QC item", "Value"], [[k, v] for k, v in items], caption=source))
        if qc.get("errors"):
            s.blocks.append(ctx.note_missing("use-error", "segmentation QC errors: " + "; ".join(map(str, qc["errors"]))))
    pert = ctx.cache.get("perturbation")
    if pert is None:
        s.blocks.append(ctx.note_missing("use-error", "segmentation perturbation: no segment/labels.nii.gz in this case."))
    else:
        ctx.evidence["perturbation"] = True
        rows = []
        for q, v in pert["summary"].items():
            ctx.record(f"perturbation.{q}.spread_percent", v["spread_percent"])
            rows.append([q, v["nominal"], v["min"], v["max"], v["spread_percent"]])
        s.blocks.append(table(["Quantity", "nominal", "min", "max", "spread (%)"], rows,
                              caption="Endocardial and epicardial contours moved by one voxel "
                                      f"({fmt(pert['spacing_mm'])} mm) in and out (cardiotwin.report.use_error)."))
    uq = ctx.cache.get("therapy_uq")
    if isinstance(uq, dict) and any("segment" in k for k, _ in scalar_items(uq)):
        s.blocks.append(table(["UQ item (segmentation)", "Value"], [[k, v] for k, v in scalar_items(uq) if "segment" in k]))
    return s


def validation_section(ctx: ReportContext) -> Section:
    s = Section("validation", "7. Validation")
    dice = ctx.cache.get("dice")
    if dice is None:
        s.blocks.append(ctx.note_missing("validation", ctx.cache.get("dice_missing", "no reference segmentation given.")))
    else:
        for k, v in dice.items():
            ctx.record(f"validation.dice.{k}", v)
        ctx.evidence["dice_mean"] = float(np.mean(list(dice.values()))) if dice else None
        s.blocks.append(table(["Label", "Dice"], [[k, v] for k, v in dice.items()],
                              caption=f"Segmentation against the reference {ctx.cache.get('dice_reference', '')}. "
                                      "Published CT reference: TotalSegmentator v1, myocardium 0.937, LV 0.955."))
    meas = ctx.context.get("measurements")
    sim = ctx.cache.get("simulated", {})
    rows = []
    if isinstance(meas, dict):
        for key, value in meas.items():
            mv = finite(value)
            sv = sim.get(key)
            if mv is None:
                continue
            if sv is None:
                rows.append([key, mv, "not simulated in this case", "—"])
            else:
                ctx.record(f"validation.{key}.simulated", sv)
                rows.append([key, mv, sv, 100.0 * (sv - mv) / mv if mv else None])
    ctx.evidence["measured_comparisons"] = sum(1 for r in rows if r[3] != "—")
    if rows:
        s.blocks.append(table(["Quantity", "measured", "simulated", "difference (%)"], rows,
                              caption="Measurements from the pipeline YAML ('measurements')."))
    else:
        s.blocks.append(ctx.note_missing("validation", "no measured QRS duration or volumes were given "
                                         "(pipeline YAML key 'measurements', e.g. qrs_ms, edv_ml, esv_ml, "
                                         "ejection_fraction)."))
    s.blocks.extend(calibration_blocks(ctx))
    return s


def calibration_blocks(ctx: ReportContext) -> list[dict]:
    """The calibrate stage's fit (measured vs simulated, parameters with intervals) and its
    validation on the patient's data the fit did not use (CASE/calibrate/*.json)."""
    import json

    cal_path, why = stage_file(ctx.root, "calibrate", "calibration.json", "calibrate")
    if cal_path is None:
        return [ctx.note_missing("validation", f"no calibration: {why}")]
    cal = json.loads(cal_path.read_text())
    blocks = []
    rows = []
    for k in ("lv_edv_ml", "lv_esv_ml", "lv_ef"):
        m, sim = cal["measured"].get(k), cal["simulated"].get(k)
        rows.append([k, m, sim, None if m is None or sim is None else sim - m])
    frame = cal["measured"].get("volume_frame")
    blocks.append(table(["Calibration target", "measured", "simulated (calibrated twin)", "error"], rows,
                        caption="Calibration targets: the data the fit used (CASE/calibrate/calibration.json)"
                                + (f"; volumes: {frame}." if frame else ".")))
    prow = []
    for name, par in cal.get("parameters", {}).items():
        iv = par.get("interval") or [None, None]
        prow.append([name, par.get("value"), par.get("unit") or "-", iv[0], iv[1],
                     "yes" if par.get("identifiable", True) else "no", par.get("data", "")])
        ctx.record(f"calibration.{name}", par.get("value"))
    blocks.append(table(["Parameter", "value", "unit", "95 % low", "95 % high", "identified", "data"], prow,
                        caption="Calibrated parameters; not calibrated (population values): "
                                + "; ".join(cal.get("fixed_at_population_values", []))))
    val_path, _ = stage_file(ctx.root, "calibrate", "validation.json", "calibrate")
    if val_path is not None:
        val = json.loads(val_path.read_text())
        vrows = [[k, q.get("measured"), q.get("simulated"), q.get("error")] for k, q in val.get("quantities", {}).items()]
        es = val.get("end_systole", {})
        if "error" in es:
            vrows.append(["ES geometry vs ES labels", "-", "not solved: " + es["error"], "-"])
        if "lv_cavity_dice" in es:
            vrows.append(["ES LV cavity Dice vs ES labels", "-", es["lv_cavity_dice"], "-"])
            ctx.record("validation.es_lv_cavity_dice", es["lv_cavity_dice"])
        if "lv_endo_surface_distance_mm" in es:
            vrows.append(["ES LV endocardium mean distance (mm)", "-", es["lv_endo_surface_distance_mm"]["mean"], "-"])
        if "systolic_thickening_mean_abs_error" in es:
            vrows.append(["systolic thickening, mean |error| over AHA segments", "-", "-",
                          es["systolic_thickening_mean_abs_error"]])
        blocks.append(table(["Held-out quantity (not used by the calibration)", "measured", "simulated", "error"],
                            vrows, caption="Validation against the patient's own images and measurements that "
                                           "no fit used (CASE/calibrate/validation.json)."))
    return blocks


def simulated_quantities(ctx: ReportContext) -> dict[str, float]:
    """Simulated values keyed like the YAML measurements (qrs_ms, edv_ml, esv_ml, ejection_fraction...)."""
    out: dict[str, float] = {}
    ep = ctx.cache.get("ep_json")
    hit = first_number(ep, ("qrs_duration_ms", "qrs_ms"))
    if hit:
        out["qrs_ms"] = hit[1]
    tat = ctx.cache.get("tat_ms")
    if tat is not None:
        out["tat_ms"] = tat
    em = ctx.cache.get("em_metrics")
    if isinstance(em, dict):
        for key, name in (("edv_ml", "edv_ml"), ("esv_ml", "esv_ml"), ("ejection_fraction", "ejection_fraction"),
                          ("stroke_volume_ml", "stroke_volume_ml"), ("dpdt_max_mmhg_per_s", "dpdt_max_mmhg_per_s")):
            v = em.get(key)
            if isinstance(v, dict) and finite(v.get("LV")) is not None:
                out[name] = float(v["LV"])
    return out
