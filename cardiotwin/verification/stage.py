"""Verification of a case before its report: the code-verification suite (when the case holds no
results) and the calculation-verification studies on the patient, both written into the case."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cardiotwin.cases import Case

log = logging.getLogger(__name__)

SWITCHED_OFF = "the calculation-verification study was switched off (--no-calc-verification)."


@dataclass(frozen=True)
class VerificationConfig:
    """``run_suite``: run the CI code-verification suite into the case when it stores no results;
    ``calc_verification``: run the refinement studies whose inputs exist (``verification.calcver``);
    ``timestep_study`` / ``em_mesh_study``: also the opt-in electromechanics studies (minutes)."""

    run_suite: bool = True
    calc_verification: bool = True
    timestep_study: bool = False
    timestep_levels: int = 2
    em_mesh_study: bool = False
    em_mesh_factors: tuple[float, ...] = (1.5, 2.25)


def verify_case(case: Case, cfg: VerificationConfig) -> list[str]:
    """Run what ``cfg`` asks into the case (``verify/`` and ``calcver/`` stages); returns the
    calculation-verification studies that could not run and why."""
    from cardiotwin.verification.calcver import run_calcver_stage
    from cardiotwin.verification.store import case_results, run_and_store

    if cfg.run_suite and case_results(case.root)[0] is None:
        log.info("%s: no stored code-verification results; running the CI suite into the case", case.root.name)
        run_and_store(suite="ci", case=case.root)
    if not cfg.calc_verification:
        return [SWITCHED_OFF]
    return run_calcver_stage(case, timestep_study=cfg.timestep_study, timestep_levels=cfg.timestep_levels,
                             em_mesh_study=cfg.em_mesh_study, em_mesh_factors=cfg.em_mesh_factors)
