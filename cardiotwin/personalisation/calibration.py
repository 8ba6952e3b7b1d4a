"""Calibration of a small, identifiable parameter set against the patient's measurements.

Parameters and the data that identify them (every fit is one-dimensional, in the log of the
parameter, so a parameter can never change sign):

- passive stiffness factor (multiplies Guccione C, or the Holzapfel-Ogden stress scales): the
  end-diastolic pressure-volume relation of the unloaded twin against the Klotz et al. 2006
  EDPVR (Am J Physiol Heart 291:H403) predicted from the measured EDV and EDP;
- peak active tension: the LV ejection fraction of the beat against the measured one;
- systemic Windkessel peripheral resistance and compliance: closed form from the cuff pressures,
  heart rate and stroke volume (R = (MAP - P_ven) / CO, C = SV / PP, Chemla et al. 1998);
- conduction speed scale: the eikonal activation time is inversely proportional to a common
  scale of all speeds, so the scale is the simulated total activation time over the measured QRS.

The fit (``gauss_newton_1d``) is Gauss-Newton with a secant (finite-difference) derivative and
records every evaluation. Its uncertainty is the Gauss-Newton (Jacobian) estimate
sigma_x^2 = 1 / (J^T W J), W = diag(1 / sigma_data^2), reported as a 95 % interval; a parameter
whose interval spans more than a factor ``UNIDENTIFIABLE_RATIO`` is flagged as not identified by
the data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cardiotwin.errors import StageError

log = logging.getLogger(__name__)

MMHG_KPA = 0.133322387415
KLOTZ_AN_MMHG = 27.78
KLOTZ_BN = 2.76
UNIDENTIFIABLE_RATIO = 4.0  # upper / lower end of the 95 % interval


def klotz_edpvr(edv_ml: float, edp_mmhg: float) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """The Klotz single-beat EDPVR through (EDV, EDP): (V(p in mmHg) in mL, V0 in mL).

    V0 = EDV (0.6 - 0.006 EDP); V30 = V0 + (EDV - V0) / (EDP / An)^(1 / Bn);
    V(p) = V0 + (V30 - V0) (p / An)^(1 / Bn), An = 27.78 mmHg, Bn = 2.76 (Klotz et al. 2006).
    """
    if not edv_ml > 0 or not edp_mmhg > 0:
        raise ValueError("EDV and EDP must be > 0")
    v0 = edv_ml * (0.6 - 0.006 * edp_mmhg)
    v30 = v0 + (edv_ml - v0) / (edp_mmhg / KLOTZ_AN_MMHG) ** (1.0 / KLOTZ_BN)

    def volume(p_mmhg: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p_mmhg, dtype=float), 0.0, None)
        return v0 + (v30 - v0) * (p / KLOTZ_AN_MMHG) ** (1.0 / KLOTZ_BN)

    return volume, v0


@dataclass
class Fit1D:
    """Result of a one-parameter fit in x = log(parameter)."""

    name: str
    unit: str
    value: float
    sigma_log: float
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False
    residual: list[float] = field(default_factory=list)
    data: str = ""

    @property
    def interval(self) -> tuple[float, float]:
        if not math.isfinite(self.sigma_log):
            return (0.0, math.inf)
        return (self.value * math.exp(-1.96 * self.sigma_log), self.value * math.exp(1.96 * self.sigma_log))

    @property
    def identifiable(self) -> bool:
        lo, hi = self.interval
        return lo > 0 and hi / lo <= UNIDENTIFIABLE_RATIO

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"value": self.value, "unit": self.unit, "interval": [lo, hi if math.isfinite(hi) else None],
                "sigma_log": self.sigma_log if math.isfinite(self.sigma_log) else None,
                "identifiable": self.identifiable, "converged": self.converged, "data": self.data,
                "method": "Gauss-Newton (secant derivative) in log(parameter)",
                "n_evaluations": len(self.evaluations), "residual": self.residual}


def gauss_newton_1d(
    evaluate: Callable[[float], tuple[np.ndarray, dict[str, Any]]],
    *,
    name: str,
    unit: str,
    x0: float,
    sigma: np.ndarray,
    first_step: float = 0.2,
    bounds: tuple[float, float] = (-5.0, 5.0),
    max_evaluations: int = 6,
    tol: float = 0.01,
    max_step: float = 1.0,
    increasing: bool | None = None,
    retreat: tuple[float, ...] = (),
    data: str = "",
) -> Fit1D:
    """Fit x = log(parameter) so that ``evaluate(exp(x))[0]`` (residuals, data units) vanishes in
    the least-squares sense weighted by ``sigma`` (data units). Failed evaluations (StageError)
    shrink the step towards the best point. Stops when the step is below ``tol`` (converged) or
    after ``max_evaluations``. Every evaluation is recorded. ``increasing``: the residuals' sum is
    known to grow with the parameter (True) or to fall (False): the first step then goes towards
    zero residual instead of always by ``+first_step``. ``retreat``: offsets of x0 (log units) to
    start from, in order, when the evaluation at x0 fails (e.g. a beat that does not converge at the
    population tension); they count as evaluations."""
    sigma = np.asarray(sigma, dtype=float)
    evals: list[tuple[float, np.ndarray]] = []
    records: list[dict[str, Any]] = []

    def run(x: float) -> np.ndarray | None:
        t0 = time.perf_counter()
        try:
            r, info = evaluate(math.exp(x))
        except StageError as exc:
            records.append({"parameter": math.exp(x), "error": str(exc), "seconds": round(time.perf_counter() - t0, 2)})
            log.info("calibration %s = %.4g: evaluation failed (%s)", name, math.exp(x), exc)
            return None
        r = np.atleast_1d(np.asarray(r, dtype=float))
        records.append({"parameter": math.exp(x), "residual": r.tolist(),
                        "cost": float(np.sum((r / sigma) ** 2)), "seconds": round(time.perf_counter() - t0, 2), **info})
        log.info("calibration %s = %.4g: residual %s", name, math.exp(x), np.round(r, 4))
        evals.append((x, r))
        return r

    def cost(r: np.ndarray) -> float:
        return float(np.sum((r / sigma) ** 2))

    x = float(np.clip(x0, *bounds))
    starts = [x, *(float(np.clip(x0 + d, *bounds)) for d in retreat)]
    while run(starts[0]) is None:
        starts.pop(0)
        if not starts or len(records) >= max_evaluations:
            raise StageError(f"calibration of {name}: the first evaluation at {records[0]['parameter']:.4g} {unit} "
                             f"failed: {records[0]['error']}" + (f" (and {len(records) - 1} other start(s))"
                                                                 if len(records) > 1 else ""))
        log.info("calibration %s: starting again from %.4g %s", name, math.exp(starts[0]), unit)
    step, converged = first_step, False
    if increasing is not None and float(np.sum(evals[0][1])) != 0.0:
        step = -abs(first_step) * math.copysign(1.0, float(np.sum(evals[0][1]))) * (1.0 if increasing else -1.0)
    slope = None
    while len(records) < max_evaluations:
        best_x, best_r = min(evals, key=lambda e: cost(e[1]))
        if slope is not None:
            jw = slope / sigma
            step = -float(jw @ (best_r / sigma)) / float(jw @ jw) if float(jw @ jw) > 0 else first_step
            step = float(np.clip(step, -max_step, max_step))
        x_new = float(np.clip(best_x + step, *bounds))
        if abs(x_new - best_x) < tol and slope is not None:
            converged = True
            break
        r_new = run(x_new)
        if r_new is None:
            step *= 0.5
            slope = None if len(evals) < 2 else slope
            continue
        # secant derivative from the new point and the nearest other evaluation
        others = [e for e in evals[:-1]]
        x_o, r_o = min(others, key=lambda e: abs(e[0] - x_new))
        if abs(x_new - x_o) > 1e-9:
            slope = (r_new - r_o) / (x_new - x_o)
        if abs(x_new - best_x) < tol:
            converged = True
            break
    best_x, best_r = min(evals, key=lambda e: cost(e[1]))
    if slope is not None and len(evals) >= 2:
        jw = slope / sigma
        info_x = float(jw @ jw)
        sigma_log = 1.0 / math.sqrt(info_x) if info_x > 0 else math.inf
    else:
        sigma_log = math.inf
    return Fit1D(name=name, unit=unit, value=math.exp(best_x), sigma_log=sigma_log, evaluations=records,
                 converged=converged, residual=best_r.tolist(), data=data)


def windkessel_estimate(
    *, systolic_mmhg: float, diastolic_mmhg: float, heart_rate_bpm: float, stroke_volume_ml: float,
    venous_pressure_kpa: float, characteristic_fraction: float, sigma_cuff_mmhg: float = 5.0,
    sigma_sv_rel: float = 0.1,
) -> dict[str, dict[str, Any]]:
    """Peripheral resistance (kPa*ms/mL) and compliance (mL/kPa) from cuff pressures, heart rate
    and stroke volume, with first-order (delta method) 95 % intervals from the data's sigmas.

    MAP = DBP + PP / 3, CO = SV HR; total resistance (MAP - P_ven) / CO, split into the
    characteristic (``characteristic_fraction``) and peripheral parts; C = SV / PP.
    """
    pp = systolic_mmhg - diastolic_mmhg
    if pp <= 0:
        raise StageError(f"pulse pressure {pp:g} mmHg is not positive")
    mean = diastolic_mmhg + pp / 3.0
    co_ml_per_ms = stroke_volume_ml * heart_rate_bpm / 60000.0
    r_total = (mean * MMHG_KPA - venous_pressure_kpa) / co_ml_per_ms
    if r_total <= 0:
        raise StageError(f"mean arterial pressure {mean:.0f} mmHg is below the venous pressure")
    r_p = r_total * (1.0 - characteristic_fraction)
    compliance = stroke_volume_ml / (pp * MMHG_KPA)
    # relative sigmas: MAP has sigma_cuff (sqrt((2/3)^2 + (1/3)^2) ~ 0.75 x); PP sqrt(2) sigma_cuff
    s_map = 0.75 * sigma_cuff_mmhg * MMHG_KPA / (mean * MMHG_KPA - venous_pressure_kpa)
    s_r = math.hypot(s_map, sigma_sv_rel)
    s_c = math.hypot(math.sqrt(2.0) * sigma_cuff_mmhg / pp, sigma_sv_rel)

    def entry(value: float, s_log: float, unit: str, data: str) -> dict[str, Any]:
        lo, hi = value * math.exp(-1.96 * s_log), value * math.exp(1.96 * s_log)
        return {"value": value, "unit": unit, "interval": [lo, hi], "sigma_log": s_log,
                "identifiable": hi / lo <= UNIDENTIFIABLE_RATIO, "converged": True, "data": data,
                "method": "closed form (delta-method interval)", "n_evaluations": 0}

    return {
        "peripheral_resistance": entry(r_p, s_r, "kPa*ms/mL", "cuff MAP, heart rate, stroke volume"),
        "compliance": entry(compliance, s_c, "mL/kPa", "stroke volume / cuff pulse pressure"),
        "initial_arterial_pressure": {"value": diastolic_mmhg * MMHG_KPA, "unit": "kPa", "interval": None,
                                      "data": "cuff diastolic pressure", "method": "set to the measurement"},
    }


def conduction_scale(tat_ms: float, qrs_ms: float, *, sigma_qrs_ms: float = 10.0) -> dict[str, Any]:
    """Scale of all conduction speeds that makes the simulated total activation time ``tat_ms``
    equal the measured QRS duration (eikonal times scale as 1 / speed)."""
    if not (tat_ms > 0 and qrs_ms > 0):
        raise StageError(f"cannot scale conduction: activation time {tat_ms} ms, QRS {qrs_ms} ms")
    s = tat_ms / qrs_ms
    s_log = sigma_qrs_ms / qrs_ms
    lo, hi = s * math.exp(-1.96 * s_log), s * math.exp(1.96 * s_log)
    return {"value": s, "unit": "", "interval": [lo, hi], "sigma_log": s_log, "identifiable": hi / lo <= UNIDENTIFIABLE_RATIO,
            "converged": True, "data": "QRS duration", "method": "eikonal scaling (activation time ~ 1 / speed)",
            "n_evaluations": 1}
