"""`report` stage: CASE/report/evidence.html|.pdf (ASME V&V 40 evidence) and summary.html|.pdf.

``build_report`` reads every stage output that exists, runs the code-verification CI suite into
the case when no results are stored, runs the calculation-verification study when its solvers
and inputs are available, and writes the four documents plus ``report.json`` (every number shown,
and what is missing) through the case's atomic stage commit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.report import casedata
from cardiotwin.report.context import ReportContext, Section
from cardiotwin.report.render import render_html, write_html, write_pdf
from cardiotwin.report.summary import summary_page
from cardiotwin.report.sections_results import (
    activation_figure,
    applicability_section,
    credibility_section,
    provenance_section,
    results_section,
    summary_numbers,
    uq_section,
)
from cardiotwin.report.sections_vv import (
    calculation_verification_section,
    code_verification_section,
    model_section,
    question_section,
    risk_section,
    simulated_quantities,
    use_error_section,
    validation_section,
)

log = logging.getLogger(__name__)

REPORT_STAGE = "report"
OUTPUTS = ("evidence.html", "evidence.pdf", "summary.html", "summary.pdf", "report.json")
_INPUT_STAGES = ("segment", "mesh", "fibers", "ep", "em", "therapy", "verify", "calcver")


@dataclass(frozen=True)
class ReportConfig:
    """Options of the report stage. include_identifiers: show case name and source file names.
    The others are carried out before the report by ``pipeline.report_case`` (through
    ``verification.stage.verify_case``): run_verification: run the CI code-verification suite into
    the case when no results are stored; calc_verification: run the mesh refinement study when
    possible; timestep_study: also refine the time step of the baseline electromechanical beat at
    ``timestep_levels`` (2: dt, dt/2; 3: also dt/4) steps (minutes: opt-in); em_mesh_study: also
    repeat that beat on re-meshed levels of the patient at target edges x / em_mesh_factors
    (``verification.em_mesh``; minutes: opt-in)."""

    include_identifiers: bool = False
    calc_verification: bool = True
    run_verification: bool = True
    timestep_study: bool = False
    timestep_levels: int = 2
    em_mesh_study: bool = False
    em_mesh_factors: tuple[float, ...] = (1.5, 2.25)


def _load(ctx: ReportContext, *, reference_labels: Path | None) -> None:
    """Fill ``ctx.cache`` from the case's stage outputs (absences recorded as reasons)."""
    root, c = ctx.root, ctx.cache
    labels_path, why = casedata.stage_file(root, "segment", "labels.nii.gz", "segment")
    labels = None
    if labels_path is not None:
        from cardiotwin.io.scans import read_labels
        from cardiotwin.report.use_error import perturbation_spread

        labels = read_labels(labels_path)
        c["perturbation"] = perturbation_spread(labels)
        qc_path, _ = casedata.stage_file(root, "segment", "qc.json", "segment")
        if qc_path is not None:
            c["seg_qc"], c["seg_qc_source"] = casedata.read_json(qc_path), "segment/qc.json"
        else:  # labels imported (pipeline --labels): the segment stage ran no QC, so the report runs it
            from cardiotwin.segmentation.qc import quality_report

            c["seg_qc"] = quality_report(labels)
            c["seg_qc_source"] = ("computed by the report from segment/labels.nii.gz "
                                  "(cardiotwin.segmentation.qc.quality_report; the segment stage stored no qc.json)")
    ref = reference_labels
    if ref is None and isinstance(ctx.context.get("reference_labels"), str):
        ref = Path(ctx.context["reference_labels"])
        ref = ref if ref.is_absolute() else root / ref
    inputs = ctx.manifest.get("inputs") or {}
    if ref is None and isinstance(inputs.get("reference_labels"), dict):
        ref = root / inputs["reference_labels"]["path"]
    if ref is not None and labels is not None:
        from cardiotwin.io.scans import read_labels
        from cardiotwin.report.use_error import dice_scores

        try:
            c["dice"] = dice_scores(labels, read_labels(ref))
            c["dice_reference"] = ref.name if ctx.include_identifiers else "(reference label map)"
        except ValueError as exc:
            c["dice_missing"] = f"reference {ref.name}: {exc}"
    else:
        c["dice_missing"] = ("no reference segmentation given (pipeline key 'reference_labels' or "
                             "`--reference-labels`)" if labels is not None else f"segmentation: {why}")
    ep_json, why = casedata.stage_file(root, "ep", "ep.json", "simulate ep")
    c["ep_json"] = casedata.read_json(ep_json) if ep_json else None
    c["ep_missing"] = None if ep_json else f"ECG: {why}"
    em, why = casedata.stage_file(root, "em", "metrics.json", "simulate em")
    c["em_metrics"] = casedata.read_json(em) if em else None
    c["em_missing"] = None if em else f"PV loops: {why}"
    beats, _ = casedata.stage_file(root, "therapy", "beats.json", "crt")
    c["crt_beats"] = casedata.read_json(beats) if beats else None
    rk, why = casedata.stage_file(root, "therapy", "ranking.json", "crt")
    c["ranking"] = casedata.read_ranking(rk) if rk else None
    raw = casedata.read_json(rk) if rk else None
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    rule = meta.get("ranking_rule") if isinstance(meta, dict) else None
    c["ranking_rule"] = rule.get("text") if isinstance(rule, dict) else None
    c["ranking_missing"] = None if rk else f"lead ranking and its uncertainty: {why}"
    uq, _ = casedata.stage_file(root, "therapy", "uq.json", "crt")
    c["therapy_uq"] = casedata.read_json(uq) if uq else None
    best = summary_numbers(ctx)
    if best.get("best") is not None:
        c["best_name"] = best["best_name"]
    from cardiotwin.report.activation import load_case_activation

    acts = load_case_activation(root, ranking=casedata.read_json(rk) if rk else None, best=best.get("best"),
                                best_name=best.get("best_name", ""))
    c["activation_maps"] = acts
    if acts.baseline is None:
        c["activation_missing"] = "; ".join(acts.missing)
    else:
        c["activation"] = acts.baseline.field
        c["tat_ms"] = acts.baseline.tat_ms
        c["aha_means"] = acts.segment_means_ms
    if acts.best is not None:
        c["best_activation"] = acts.best.field
    c["simulated"] = simulated_quantities(ctx)


def evidence_sections(ctx: ReportContext) -> list[Section]:
    """The twelve sections, in V&V 40 order (credibility after the evidence it scores)."""
    built = [question_section(ctx), risk_section(ctx), model_section(ctx), code_verification_section(ctx),
             calculation_verification_section(ctx), use_error_section(ctx), validation_section(ctx), uq_section(ctx),
             applicability_section(ctx)]
    cred = credibility_section(ctx)
    return built + [cred, results_section(ctx), provenance_section(ctx)]


def build_report(case_root: str | os.PathLike[str], *, config: ReportConfig = ReportConfig(),
                 pipeline: Path | None = None, verification: Path | None = None,
                 reference_labels: Path | None = None, force: bool = False,
                 calcver_reasons: list[str] | None = None) -> dict[str, Path]:
    """Write evidence.html/.pdf, summary.html/.pdf and report.json into CASE/report/ from what the
    case holds (``verification.stage.verify_case`` runs the verification first). ``calcver_reasons``:
    the calculation-verification studies that could not run and why (default: those stored in
    calcver/calcver.json)."""
    from cardiotwin.cases import Case, redact
    from cardiotwin.verification.registry import load_results
    from cardiotwin.verification.store import case_results

    case = Case.open(case_root)
    root = case.root
    calc = root / "calcver" / "calcver.json"
    if calcver_reasons is None:
        stored = casedata.read_json(calc) if calc.is_file() else None
        calcver_reasons = list((stored or {}).get("unavailable") or
                               ["the calculation-verification studies have not been run on this case."])
    calc_reasons = calcver_reasons
    manifest = case.manifest
    ctx = ReportContext(root=root, manifest=manifest, include_identifiers=config.include_identifiers)
    ctx.pipeline, ctx.pipeline_source, ctx.pipeline_missing = casedata.find_pipeline(root, manifest, pipeline)
    ctx.context = casedata.pipeline_context(ctx.pipeline)
    ctx.cache["calcver_reasons"] = calc_reasons
    if verification is not None:
        ctx.verification, ctx.verification_path = load_results(verification), Path(verification)
    else:
        ctx.verification, ctx.verification_path = case_results(root)
    ctx.calcver = casedata.read_json(calc) if calc.is_file() else None
    inputs = {s: root / s for s in _INPUT_STAGES if (root / s).is_dir()}
    if pipeline is None and (root / "pipeline.yaml").is_file():
        inputs["pipeline"] = root / "pipeline.yaml"  # the recipe `cardiotwin run` copied into the case
    for extra in (pipeline, verification, reference_labels):
        if extra is not None:
            inputs[f"file_{Path(extra).name}"] = Path(extra)
    with case.stage(REPORT_STAGE, inputs=inputs, config=config, force=force) as st:
        if st.skipped:
            return {name: root / REPORT_STAGE / name for name in OUTPUTS}
        _load(ctx, reference_labels=reference_labels)
        evidence = evidence_sections(ctx)
        sm_html, summary_status = summary_page(ctx, subtitle=f"{ctx.label} · for the implanting cardiologist · "
                                               f"cardiotwin {(manifest.get('software') or {}).get('cardiotwin', '')}")
        sub = (f"{ctx.label} · report generated by cardiotwin "
               f"{(manifest.get('software') or {}).get('cardiotwin', '')} · structured by ASME V&V 40-2018 and the "
               "FDA guidance 'Assessing the Credibility of Computational Modeling and Simulation in Medical Device "
               "Submissions' (2023)")
        ev_html = render_html(title="In-silico evidence report", subtitle=sub, sections=evidence, toc=True)
        if not config.include_identifiers:  # no case folder name or path in any output, wherever a section put it
            ev_html, sm_html = redact(ev_html, case), redact(sm_html, case)
        write_html(st.output("evidence.html"), ev_html)
        write_pdf(st.output("evidence.pdf"), ev_html)
        write_html(st.output("summary.html"), sm_html)
        write_pdf(st.output("summary.pdf"), sm_html)
        data: dict[str, Any] = {
            "case": ctx.label, "numbers": ctx.numbers, "missing": ctx.missing,
            "sections": {s.id: s.status for s in evidence},
            "summary_sections": summary_status,
            "figures": [b["name"] for s in evidence for b in s.blocks if b["kind"] == "figure"]
            + [f"summary.{k}" for k, v in summary_status.items() if v == "complete"],
            "verification_results": str(ctx.verification_path.relative_to(root)) if ctx.verification_path
            and ctx.verification_path.is_relative_to(root) else (str(ctx.verification_path) if ctx.verification_path else None),
        }
        write_json_atomic(st.output("report.json"), data if config.include_identifiers else redact(data, case))
        st.metrics.update({"sections_complete": sum(s.status == "complete" for s in evidence)})
    return {name: root / REPORT_STAGE / name for name in OUTPUTS}
