"""Model risk and the 13 credibility factors of ASME V&V 40-2018.

Model risk (V&V 40 sec. 5, fig. 5): model influence x decision consequence, each low / medium /
high, combined on the 5-level scale ``risk = influence + consequence - 1`` (1 = lowest). The goal
level of every credibility factor follows the risk (low for risk 1-2, medium for 3, high for
4-5); the achieved level is assessed from the evidence in this report by the rules below, each
with its rationale, so a reviewer can disagree with a specific rule rather than a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LEVELS = ("low", "medium", "high")

# Default assessment for the cardiotwin context of use (CRT lead-site recommendation as one input
# to the implanting team): the pipeline YAML overrides both values and rationales.
DEFAULT_INFLUENCE = ("medium", "The twin's lead-site ranking is one input to the implanting physician, "
                     "next to imaging (scar, venous anatomy), electrical measurements at implant and clinical judgement.")
DEFAULT_CONSEQUENCE = ("medium", "A suboptimal LV lead site can leave the patient a CRT non-responder; implantation "
                       "itself follows the standard of care, so an incorrect recommendation does not directly cause injury.")


def risk_level(influence: str, consequence: str) -> int:
    """1-5 model risk from two of 'low', 'medium', 'high'."""
    try:
        return LEVELS.index(influence.lower()) + LEVELS.index(consequence.lower()) + 1
    except ValueError:
        raise ValueError(f"model influence and decision consequence must be low/medium/high, got "
                         f"{influence!r}, {consequence!r}") from None


def goal_for_risk(risk: int) -> str:
    return "low" if risk <= 2 else "medium" if risk == 3 else "high"


@dataclass(frozen=True)
class Factor:
    """One credibility factor: its V&V 40 group, goal and achieved level, rationale and the report
    section (anchor) holding the evidence."""

    group: str
    name: str
    goal: str
    achieved: str
    rationale: str
    evidence: str

    @property
    def meets_goal(self) -> bool:
        return LEVELS.index(self.achieved) >= LEVELS.index(self.goal) if self.achieved in LEVELS else False


def credibility_factors(*, risk: int, evidence: dict[str, Any]) -> list[Factor]:
    """The 13 factors with achieved levels from ``evidence`` (facts gathered by the report):

    code_checks: {'pass', 'fail', 'error', 'unavailable'} counts; code_suite: 'ci'|'full'|None;
    gci_max_percent: largest GCI over patient outputs or None; calc_runs: fewest refinement levels of
    a study; calc_studies: names of the studies with results ('mesh_activation', 'timestep_em',
    'mesh_em'); em_outputs: the case has EF / dP/dt_max outputs; solver_tolerances: bool; seg_qc: bool; perturbation: bool; dice_mean: float|None;
    measured_comparisons: int; uq: bool; software_recorded: bool; tests_exist: bool.
    """
    g = goal_for_risk(risk)
    e = evidence
    cc = e.get("code_checks") or {}
    n_pass, n_bad, n_unavail = cc.get("pass", 0), cc.get("fail", 0) + cc.get("error", 0), cc.get("unavailable", 0)
    if not cc:
        code = ("low", "No code-verification results are stored with this case.")
    elif n_bad:
        code = ("low", f"{n_bad} verification check(s) failed or errored.")
    elif n_unavail == 0 and e.get("code_suite") == "full":
        code = ("high", f"All {n_pass} checks passed at benchmark sizes (MMS orders, community benchmarks).")
    else:
        code = ("medium", f"{n_pass} checks passed ({e.get('code_suite')} suite); {n_unavail} unavailable in this "
                          "installation.")
    gci = e.get("gci_max_percent")
    studies = set(e.get("calc_studies") or ())
    # EF and dP/dt_max (the response metric) need their own mesh and time-step studies where the case has them
    gaps = [what for name, what in (("mesh_em", "mesh refinement of EF / dP/dt_max"),
                                    ("timestep_em", "time-step refinement of EF / dP/dt_max"))
            if e.get("em_outputs") and name not in studies]
    gap_txt = f" Not covered: {'; '.join(gaps)}." if gaps else ""
    if gci is None:
        disc = ("low", "No mesh / time-step refinement on this patient is available.")
    elif e.get("calc_runs", 0) >= 3 and gci <= 5.0 and not gaps:
        disc = ("high", f"Three-level refinement in every study; largest GCI {gci:.3g} % (<= 5 %).")
    elif gci <= 10.0:
        disc = ("medium", f"Largest GCI {gci:.3g} % (<= 10 %); fewest refinement levels in a study: "
                          f"{e.get('calc_runs')}.{gap_txt}")
    else:
        disc = ("low", f"Largest GCI {gci:.3g} % exceeds 10 %.{gap_txt}")
    solver = (("medium", "Linear/nonlinear solver tolerances recorded with each stage's configuration; "
                         "solves error out when not converged (ksp_error_if_not_converged).")
              if e.get("solver_tolerances") else ("low", "Solver tolerances are not recorded for this case."))
    if e.get("seg_qc") and e.get("perturbation"):
        use = ("medium", "Segmentation QC recorded and result spread under one-voxel contour perturbation quantified.")
    elif e.get("seg_qc") or e.get("perturbation"):
        use = ("low", "Only part of the use-error evidence (segmentation QC or perturbation spread) is available.")
    else:
        use = ("low", "No segmentation QC or perturbation analysis for this case.")
    dice = e.get("dice_mean")
    n_meas = int(e.get("measured_comparisons", 0))
    comparator = ("medium" if (dice is not None or n_meas) else "low",
                  (f"Segmentation compared with a reference (mean Dice {dice:.3f}). " if dice is not None else "")
                  + (f"{n_meas} simulated output(s) compared with measurements." if n_meas else
                     "No patient measurements (QRS duration, volumes) were given for comparison."))
    output_cmp = ("medium" if n_meas >= 2 else "low",
                  f"{n_meas} output comparison(s) with measured data on this patient; no prospective clinical "
                  "validation of CRT response is part of this report.")
    uq = (("medium", "Input uncertainty propagated through the therapy sweep (probability of being best, intervals).")
          if e.get("uq") else ("low", "No uncertainty quantification results in this case."))
    sqa = (("medium", "Versioned software (recorded per stage), automated test suite in CI, atomic outputs with sha256.")
           if e.get("software_recorded") else ("low", "Software versions are not recorded."))
    return [
        Factor("Verification / code", "Software quality assurance", g, *sqa, "provenance"),
        Factor("Verification / code", "Numerical code verification", g, *code, "code-verification"),
        Factor("Verification / calculation", "Discretization error", g, *disc, "calculation-verification"),
        Factor("Verification / calculation", "Numerical solver error", g, *solver, "calculation-verification"),
        Factor("Verification / calculation", "Use error", g, *use, "use-error"),
        Factor("Validation / model", "Model form", g, "medium",
               "Established formulations (eikonal / monodomain EP, Guccione hyperelasticity, active stress, "
               "Windkessel circulation) with published parameters; verified against Land 2015 and Niederer 2011.",
               "model"),
        Factor("Validation / model", "Model inputs", g, *uq[:1],
               "Patient geometry from the scan; tissue parameters from literature (table in section 3); "
               + uq[1], "model"),
        Factor("Validation / comparator", "Test samples", g, comparator[0],
               "This case only (n = 1): " + comparator[1], "validation"),
        Factor("Validation / comparator", "Test conditions", g, "low" if not n_meas else "medium",
               "Measured comparator data are baseline (intrinsic rhythm) only; paced conditions are not measured.",
               "validation"),
        Factor("Validation / assessment", "Equivalency of input parameters", g, "low",
               "Comparator inputs are not independently characterised for this patient.", "validation"),
        Factor("Validation / assessment", "Output comparison", g, *output_cmp, "validation"),
        Factor("Applicability", "Relevance of the quantities of interest", g, "medium",
               "Activation times, QRS duration and LV dP/dt_max are the quantities used to judge CRT response "
               "in the clinic and in the trials cited in section 9.", "applicability"),
        Factor("Applicability", "Relevance of the validation activities to the COU", g, "low",
               "Validation here is per patient and at baseline; the COU (paced response) is not validated on a cohort.",
               "applicability"),
    ]
