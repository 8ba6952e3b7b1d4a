"""Outputs of the calibrate stage: the fit plot and the validation against data the fit did not use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.personalisation.calibration import MMHG_KPA


def validation(calibration: dict[str, Any]) -> dict[str, Any]:
    """Simulated vs measured quantities that no calibrated parameter was fitted to.

    The calibration targets are the LV EDV (the unloaded reference reinflated to the ED pressure
    reproduces the imaged mesh), the Klotz EDPVR through it (passive stiffness), the LV EF and so
    the ESV (tension), cuff pressures (Windkessel, closed form) and QRS (conduction). Not used: the
    RV volumes and EF (the RV shares the LV's parameters), and the peak LV pressure against the cuff
    systolic pressure.
    """
    m, s = calibration["measured"], calibration["simulated"]
    rows: dict[str, Any] = {}
    for key in ("rv_edv_ml", "rv_esv_ml", "rv_ef"):
        if m.get(key) is not None and s.get(key) is not None:
            err = s[key] - m[key]
            rows[key] = {"measured": m[key], "simulated": s[key], "error": err,
                         "relative_error": err / m[key] if m[key] else None,
                         "source": calibration.get("measured_sources", {}).get(key, "")}
    if m.get("systolic_bp_mmhg") is not None:
        rows["lv_peak_pressure_vs_cuff_systolic_mmhg"] = {
            "measured": m["systolic_bp_mmhg"], "simulated": s["lv_peak_pressure_mmhg"],
            "error": s["lv_peak_pressure_mmhg"] - m["systolic_bp_mmhg"]}
    return {"comparator": "the patient's own measurements not used by the fit", "quantities": rows}


def fit_plot(calibration: dict[str, Any], path: Path) -> Path:
    """Three panels: EDPVR (Klotz target vs unloaded twin), PV loop and volume-time curve of the
    calibrated beat with the measured EDV / ESV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    e = calibration["edpvr"]
    p = np.asarray(e["pressures_kpa"]) / MMHG_KPA
    ax[0].plot(e["target_lv_ml"], p, "k--o", label="Klotz EDPVR (target)")
    ax[0].plot(e["volumes_ml"]["LV"], p, "C0-s", label="calibrated twin")
    ax[0].set(xlabel="LV volume (mL)", ylabel="pressure (mmHg)", title="passive filling")
    ax[0].legend()
    b = calibration["final_beat"]["result"]
    m = calibration["measured"]
    ax[1].plot(b["lv_volume_ml"], np.asarray(b["lv_pressure_kpa"]) / MMHG_KPA, "C0-", label="simulated LV")
    if b.get("rv_volume_ml"):
        ax[1].plot(b["rv_volume_ml"], np.asarray(b["rv_pressure_kpa"]) / MMHG_KPA, "C3-", label="simulated RV")
    for key, style in (("lv_edv_ml", "k:"), ("lv_esv_ml", "k-.")):
        if m.get(key):
            ax[1].axvline(m[key], color="k", ls=style[1:], label=f"measured {key[3:6].upper()}")
            ax[2].axhline(m[key], color="k", ls=style[1:], label=f"measured {key[3:6].upper()}")
    ax[1].set(xlabel="volume (mL)", ylabel="pressure (mmHg)", title="pressure-volume loop")
    ax[1].legend(fontsize=8)
    ax[2].plot(b["times_ms"], b["lv_volume_ml"], "C0-", label="simulated LV")
    ax[2].set(xlabel="time (ms)", ylabel="volume (mL)", title="LV volume over the beat")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
