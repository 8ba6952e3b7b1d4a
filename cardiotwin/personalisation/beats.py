"""The calibration's electromechanical beats: their EMConfig keys, the beats by peak tension (with
the retry at finer time steps), the values read off a beat, and the twin's state at a beat's end
of ejection (the held-out end-systolic geometry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cardiotwin.errors import StageError
from cardiotwin.personalisation.calibration import MMHG_KPA

log = logging.getLogger(__name__)


def calibrated_em_config(base: dict[str, Any], *, stiffness: float, edp_kpa: dict[str, float], windkessel: dict[str, Any] | None,
                         heart_rate_bpm: float | None, tension_kpa: float | None) -> dict[str, Any]:
    """EMConfig keys of a calibration beat: ``base`` with the stiffness factor, ED pressures (which
    are also each side's filling pressure, whatever ``base`` says), the systemic Windkessel
    estimate, beat length from the heart rate and the peak tension set."""
    from cardiotwin.therapy.response import scale_stiffness

    out = scale_stiffness(base, stiffness)
    out["lv_end_diastolic_pressure"] = f"{edp_kpa['LV']:.6g} kPa"
    out["rv_end_diastolic_pressure"] = f"{edp_kpa['RV']:.6g} kPa"
    lv_wk = dict(out.get("lv_windkessel") or {})
    lv_wk["filling_pressure"] = f"{edp_kpa['LV']:.6g} kPa"
    if windkessel is not None:
        for key in ("peripheral_resistance", "compliance", "initial_arterial_pressure"):
            lv_wk[key] = f"{windkessel[key]['value']:.6g} {windkessel[key]['unit']}"
    out["lv_windkessel"] = lv_wk
    out["rv_windkessel"] = {**(base.get("rv_windkessel") or {}), "filling_pressure": f"{edp_kpa['RV']:.6g} kPa"}
    if heart_rate_bpm:
        out["beat_duration"] = f"{60000.0 / heart_rate_bpm:.6g} ms"
    if tension_kpa is not None:
        twitch = dict(out.get("twitch") or {})
        twitch["peak_tension"] = f"{tension_kpa:.6g} kPa"
        out["twitch"] = twitch
    return out


class TensionBeats:
    """The calibration's beats by peak tension (kPa), each run once. A beat that diverges is run again
    at half the time steps, and so is every later beat (the recipe's steps suit most hearts; a weakly
    contracting one may need finer ones); ``notes`` records it. ``run(name, em_config)`` runs one beat
    and returns its task result (``{"error": ...}`` when it diverged); ``em_config(tension)`` gives
    the beat's EMConfig keys at the recipe's steps."""

    def __init__(self, run: Callable[[str, dict[str, Any]], dict[str, Any]],
                 em_config: Callable[[float | None], dict[str, Any]], *, dt_ms: float, diastolic_dt_ms: float,
                 notes: list[str]) -> None:
        self._run, self._em_config, self.notes = run, em_config, notes
        self.dt_ms, self.diastolic_dt_ms = dt_ms, diastolic_dt_ms
        self.step_scale = 1.0
        self.done: dict[float, dict[str, Any]] = {}

    def em_config(self, tension: float | None) -> dict[str, Any]:
        out = self._em_config(tension)
        if self.step_scale != 1.0:
            out["dt"] = f"{self.dt_ms * self.step_scale:.6g} ms"
            out["diastolic_dt"] = f"{self.diastolic_dt_ms * self.step_scale:.6g} ms"
        return out

    def __call__(self, tension: float) -> dict[str, Any]:
        if tension in self.done:
            return self.done[tension]
        suffix = "" if self.step_scale == 1.0 else f"_dt{self.dt_ms * self.step_scale:g}ms"
        b = self._run(f"calibrate_T{tension:.4f}{suffix}", self.em_config(tension))
        if "error" in b:
            systole = self._systole_only(tension, b.get("failed_at_ms"))
            if systole is not None:
                b = systole
            elif self.step_scale == 1.0:
                self.step_scale = 0.5
                self.done.clear()  # the fit's later beats, and the final one, all at the finer steps
                log.warning("calibrate: the beat at %.1f kPa did not converge (%s); this and every later beat at half "
                            "the time steps (%g / %g ms)", tension, b["error"], 0.5 * self.dt_ms, 0.5 * self.diastolic_dt_ms)
                self.notes.append(f"a beat diverged at dt {self.dt_ms:g} ms; the calibration's later beats ran at "
                                  f"{0.5 * self.dt_ms:g} / {0.5 * self.diastolic_dt_ms:g} ms")
                return self(tension)
            else:
                raise StageError(b["error"])
        self.done[tension] = b
        return b

    def _systole_only(self, tension: float, t_fail: float | None) -> dict[str, Any] | None:
        """A beat that diverged, run again up to its last converged step: returned when its ejection
        had ended by then (the fit reads only the end-diastolic state and the end of ejection; on
        ACDC patient081 beats diverged in isovolumic relaxation, where the collapsed RV reopens, at
        20 and at 10 ms steps alike), else None."""
        dt = self.dt_ms * self.step_scale
        if t_fail is None or t_fail - dt <= 0:
            return None
        end = t_fail - dt
        em = {**self.em_config(tension), "beat_duration": f"{end:.6g} ms"}
        b = self._run(f"calibrate_T{tension:.4f}_dt{dt:g}ms_to{end:g}ms", em)
        if "error" in b or not ejection_ended(b["result"]["lv_volume_ml"]):
            log.info("calibrate: the beat at %.1f kPa up to %g ms %s", tension, end,
                     "diverged too" if "error" in b else "had not finished ejecting")
            return None
        log.warning("calibrate: the beat at %.1f kPa diverged at t = %g ms after its ejection had ended; its systole "
                    "(up to %g ms) is used", tension, t_fail, end)
        self.notes.append(f"the beat at {tension:.1f} kPa diverged at t = {t_fail:g} ms, after the end of ejection; "
                          f"the fit used its systole (run to {end:g} ms, EDV = its initial volume)")
        return b


def ejection_ended(lv_volume_ml: Any, *, steps: int = 2) -> bool:
    """True when the LV has ejected (its volume fell by over 1 %) and the volume has stayed on its
    minimum plateau for ``steps`` steps after the end of ejection (the outflow valve has closed), so
    a beat cut there has its end-systolic volume."""
    v = np.asarray(lv_volume_ml, dtype=float)
    i = end_of_ejection(v)
    return bool(v.min() < 0.99 * v[0] and i + steps <= len(v) - 1 and np.all(v[i:] <= v.min() * (1.0 + 1e-3)))


def beat_values(beat: dict[str, Any]) -> dict[str, float | None]:
    """LV / RV EDV, ESV, EF and the LV peak pressure (mmHg) of a beat's task result."""
    r = beat["result"]
    out: dict[str, float | None] = {}
    for side, key in (("lv", "LV"), ("rv", "RV")):
        have = key in r["edv_ml"]
        out[f"{side}_edv_ml"] = float(r["edv_ml"][key]) if have else None
        out[f"{side}_esv_ml"] = float(r["esv_ml"][key]) if have else None
        out[f"{side}_ef"] = float(r["ejection_fraction"][key]) if have else None
    out["lv_peak_pressure_mmhg"] = float(np.max(r["lv_pressure_kpa"])) / MMHG_KPA
    return out


def end_of_ejection(lv_volume_ml: np.ndarray, *, rel_tol: float = 1e-3) -> int:
    """Index of the end of ejection: the first time the LV volume comes within ``rel_tol`` of its
    minimum. The volume then stays on that plateau through isovolumic relaxation, where a bare
    argmin would pick any of its steps by round-off, with the tension already falling."""
    v = np.asarray(lv_volume_ml, dtype=float)
    return int(np.flatnonzero(v <= v.min() * (1.0 + rel_tol))[0])


def solve_along_beat(mech: Any, result: Mapping[str, Any], tension_kpa: Callable[[float], np.ndarray], *,
                     end: int, cavities: tuple[str, ...] | list[str]) -> None:
    """Bring ``mech`` (at the beat's end-diastolic state) to the beat's state at time index ``end``
    along the beat's own path: one pressure-controlled solve per beat time step, to that step's
    cavity pressures and tension (each step halved as ``solve_to`` needs). The beat is quasi-static,
    so this passes through the equilibria it converged at; one long ramp from end-diastole to the
    end-systolic loads can leave that path (it diverged on ACDC patient081 at load fraction 0.59).
    Raises StageError naming the step that failed."""
    times = np.asarray(result["times_ms"], dtype=float)
    p = {"LV": np.asarray(result["lv_pressure_kpa"], dtype=float), "RV": np.asarray(result.get("rv_pressure_kpa", []), dtype=float)}
    for i in range(1, end + 1):
        mech.solve_to(pressures_kpa={c: float(p[c][i]) for c in cavities}, active_tension_kpa=tension_kpa(float(times[i])),
                      label=f"end-systolic state, beat step {i} of {end} (t = {times[i]:g} ms)")
