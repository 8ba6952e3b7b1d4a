"""What the calculation-verification studies take from a case: the CRT stage's activation solver
and the conduction configuration its ``therapy`` stage ran with."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cardiotwin.cases import Case
    from cardiotwin.therapy.conduction import ConductionConfig


def find_activation_solver() -> tuple[Callable[..., np.ndarray] | None, str]:
    """The CRT stage's activation solver (the binding the pipeline and `cardiotwin crt` pass to
    ``crt_case_stage``) and its name; (None, why) where a study cannot have one."""
    from cardiotwin.therapy.solver import eikonal_solver

    return eikonal_solver, "cardiotwin.therapy.solver.eikonal_solver"


def case_conduction(case: "Case") -> tuple["ConductionConfig", str]:
    """The conduction configuration the case's ``therapy`` stage ran with (nominal when it has not run)."""
    from cardiotwin.config import load_config
    from cardiotwin.therapy.conduction import ConductionConfig

    rec = case.stage_record("therapy") or {}
    data = (rec.get("config") or {}).get("conduction") if rec.get("status") == "ok" else None
    if isinstance(data, dict):
        return load_config(ConductionConfig, data, source=f"{case.root}/manifest.json:stages.therapy.config"), \
            "therapy stage"
    return ConductionConfig(), "nominal (no therapy stage)"
