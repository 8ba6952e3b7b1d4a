"""Calculation verification: time-step refinement of the patient's baseline electromechanical beat.

The CRT stage simulates the baseline (LBBB) beat on the case's mesh with its ``electromechanics``
configuration (``therapy.response.run_beat_task``). This study repeats that beat with both time
steps (``dt`` while a twitch is active, ``diastolic_dt`` during filling) divided by 2 (and by 4
with three levels) and reports LV ejection fraction, dP/dt_max, stroke volume and stroke work at
each step with their GCI (Celik et al. 2008; time integration is backward Euler, formal order 1,
so two levels use p = 1 and Fs = 3).

The beat at the stage's own step is reused from ``CASE/therapy_tasks/em_baseline.json`` when its
digest matches (same mesh, activation map and configuration: read only); other levels are written
to ``CASE/calcver_tasks/`` (outside the atomically replaced stage folder), so an interrupted study
resumes. The eikonal activation solve has no time step: activation time and TAT are covered by
the mesh-refinement study.

Cost: each level costs about the stage's beat time multiplied by its refinement factor (the beat's
wall time is in ``therapy_tasks/em_baseline.json``), so the study is opt-in
(``cardiotwin report CASE --timestep-study``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiotwin.verification.gci import refinement_table

if TYPE_CHECKING:
    from cardiotwin.cases import Case

log = logging.getLogger(__name__)

TASK_DIR = "calcver_tasks"
QUANTITIES = ("ejection_fraction", "dpdt_max_kpa_per_ms", "stroke_volume_ml", "stroke_work_mj")


def study_inputs(case: "Case") -> tuple[dict[str, Any] | None, str]:
    """What the study needs from the case (mesh, baseline map, EM configuration) or why it cannot run."""
    rec = case.stage_record("therapy") or {}
    cfg = rec.get("config") if rec.get("status") == "ok" else None
    if not isinstance(cfg, dict):
        return None, "no successful CRT stage (therapy) in this case: run `cardiotwin crt`"
    em = cfg.get("electromechanics")
    if not isinstance(em, dict) or int(cfg.get("em_top_k", 0) or 0) < 1:
        return None, "the CRT stage ran without electromechanics (em_top_k 0)"
    mesh = case.root / "fibers" / "mesh.vtu"
    act = case.root / "therapy" / "activation" / "baseline.vtu"
    for path, cmd in ((mesh, "fibers"), (act, "crt")):
        if not path.is_file():
            return None, f"{path.relative_to(case.root)} is missing (run `cardiotwin {cmd}`)"
    return {"mesh": mesh, "activation": act, "electromechanics": em}, ""


def baseline_beat_seconds(case: "Case") -> float | None:
    """Wall time (s) of the CRT stage's baseline beat, from ``therapy_tasks/em_baseline.json``."""
    import json

    try:
        data = json.loads((case.root / "therapy_tasks" / "em_baseline.json").read_text())
    except (OSError, ValueError):
        return None
    v = data.get("seconds")
    return float(v) if isinstance(v, (int, float)) else None


def refined_config(em: dict[str, Any], factor: int, *, source: str) -> dict[str, Any]:
    """The EM configuration with ``dt`` and ``diastolic_dt`` divided by ``factor`` (unit strings)."""
    from cardiotwin.config import load_config
    from cardiotwin.mechanics.electromechanics import EMConfig

    if factor == 1:
        return dict(em)
    cfg = load_config(EMConfig, em, source=source)
    return {**em, "dt": f"{cfg.dt / factor:g} ms", "diastolic_dt": f"{cfg.diastolic_dt / factor:g} ms"}


def em_timestep_study(case: "Case", inputs: dict[str, Any], *, levels: int = 2) -> dict[str, Any]:
    """Baseline beat at dt, dt/2 (, dt/4): LV EF, dP/dt_max, SV, stroke work and their GCI.

    Raises StageError when a beat diverges (the study then has no result to report).
    """
    from cardiotwin.config import load_config
    from cardiotwin.errors import StageError
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.mechanics.electromechanics import EMConfig
    from cardiotwin.therapy.response import beat_digest, lv_beat_metrics, run_beat_task
    from cardiotwin.therapy.sweep import read_task_result

    if levels not in (2, 3):
        raise ValueError(f"levels must be 2 or 3, got {levels}")
    t0 = time.perf_counter()
    mesh_path: Path = inputs["mesh"]
    mesh_sha = sha256_file(mesh_path)
    raw = read_activation_ms(inputs["activation"])
    act = np.where(raw < 0.0, np.nan, raw)  # -1 marks never-activated points, stored as NaN by the stage
    source = f"{case.root / 'manifest.json'}:stages.therapy.config.electromechanics"
    per_level = []
    for k in range(levels):
        factor = 2**k
        em = refined_config(inputs["electromechanics"], factor, source=source)
        cfg = load_config(EMConfig, em, source=source)
        t1 = time.perf_counter()
        beat = read_task_result(case.root / "therapy_tasks" / "em_baseline.json", beat_digest(mesh_sha, act, em))
        reused = beat is not None
        if beat is None:
            log.info("time-step study: baseline beat at dt %g / diastolic %g ms", cfg.dt, cfg.diastolic_dt)
            beat = run_beat_task(f"baseline_dt{cfg.dt:g}ms", act, mesh_path=str(mesh_path), mesh_sha256=mesh_sha,
                                 em_config=em, work_dir=str(case.root / TASK_DIR))
        if "error" in beat:
            raise StageError(f"time-step study: the baseline beat at dt {cfg.dt:g} ms diverged: {beat['error']}")
        m = lv_beat_metrics(beat)
        per_level.append({"dt_ms": cfg.dt, "diastolic_dt_ms": cfg.diastolic_dt, **{q: float(m[q]) for q in QUANTITIES},
                          "seconds": float(beat.get("seconds", 0.0)), "reused_from_crt_stage": reused,
                          "wall_s_here": round(time.perf_counter() - t1, 2)})
    dts = [lvl["dt_ms"] for lvl in per_level]

    def error_note(q: str, err: float) -> str:
        return f"LV {q} at the CRT stage's dt {dts[0]:g} ms differs from the dt {dts[-1]:g} ms value by {err:+.3g} %."

    def outside(g: dict[str, Any]) -> str | None:
        p_obs = g.get("observed_order")
        if isinstance(p_obs, float) and p_obs > 2.0:  # formal order 1 (backward Euler)
            return (f"observed order {p_obs:.2g} far above the formal order 1: the coarsest step ({dts[0]:g} ms) "
                    "lies outside the asymptotic range")
        return None

    # the CRT stage's own result is the coarsest level (index 0)
    quantities, notes = refinement_table(dts, per_level, QUANTITIES, stage_index=0, error_key="stage_dt_error_percent",
                                         error_note=error_note, outside_asymptotic=outside)
    return {"name": "timestep_em", "title": "Time-step refinement of the baseline beat (electromechanics)",
            "description": f"{levels} levels, dt {', '.join(f'{d:g}' for d in dts)} ms (diastolic dt halved with it), "
                           "LBBB baseline activation of the CRT stage (therapy/activation/baseline.vtu), the CRT "
                           "stage's electromechanics configuration otherwise unchanged.",
            "size_label": "dt (ms)", "levels": per_level, "quantities": quantities, "notes": notes,
            "seconds": round(time.perf_counter() - t0, 2)}


def read_activation_ms(path: Path) -> np.ndarray:
    """Point data ``activation_time_ms`` of an activation .vtu as floats (CaseError if unusable)."""
    import meshio

    from cardiotwin.electrophysiology.stage import ACTIVATION_FIELD
    from cardiotwin.errors import CaseError

    try:
        m = meshio.read(path)
    except Exception as exc:  # meshio raises many types
        raise CaseError(f"{path}: cannot read mesh ({exc})") from None
    if ACTIVATION_FIELD not in m.point_data:
        raise CaseError(f"{path}: no point data '{ACTIVATION_FIELD}'")
    return np.asarray(m.point_data[ACTIVATION_FIELD], dtype=float).ravel()
