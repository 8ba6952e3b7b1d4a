"""`cardiotwin bench calibrate`: resumable rows per patient, targets judged per row, patients
without a row listed (the calibrations themselves run in `cardiotwin bench calibrate`)."""

from __future__ import annotations

import json

from cardiotwin.bench.calibrate import bench_calibrate, patients


def _row(pid: str, edv_sim: float) -> dict:
    return {"patient": pid, "group": "SC-HF-I", "wall_s": 900.0, "cpu_s": 1500.0, "calibration_wall_s": 780.0,
            "mesh": {"n_points": 3454},
            "measured": {"lv_edv_ml": 200.0, "lv_esv_ml": 150.0, "lv_ef": 0.25,
                         "whole_labels": {"lv_edv_ml": 230.0, "lv_esv_ml": 170.0}},
            "simulated": {"lv_edv_ml": edv_sim, "lv_esv_ml": 151.0, "lv_ef": 1 - 151.0 / edv_sim},
            "parameters": {"passive_stiffness_factor": {"value": 0.8}, "peak_active_tension": {"value": 70.0}},
            "unloading": {"n_iterations": 6, "mean_distance_mm": 0.02},
            "validation": {"quantities": {"rv_ef": {"measured": 0.5, "simulated": 0.4}},
                           "end_systole": {"lv_cavity_dice": 0.85, "lv_cavity_compared_slices": 7,
                                           "lv_endo_surface_distance_mm": {"mean": 2.0, "max": 6.0}}}}


def test_rows_are_reused_judged_and_missing_patients_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIOTWIN_BENCH_CALIBRATE_DIR", str(tmp_path))
    monkeypatch.setenv("CARDIOTWIN_BENCH_PATIENTS", "none-now")  # run nothing: table from the rows only
    ids = [p[0] for p in patients()]
    assert len([i for i in ids if i.startswith("SCD")]) == 3 and len(ids) == 8
    (tmp_path / f"{ids[0]}.json").write_text(json.dumps(_row(ids[0], 201.0)))  # EDV +0.5 %, EF +0.0 -> met
    (tmp_path / f"{ids[1]}.json").write_text(json.dumps(_row(ids[1], 230.0)))  # EDV +15 %, EF +0.09 -> not met
    text = bench_calibrate(quick=False)
    fit_rows = [line for line in text.splitlines() if line.startswith(f"| {ids[0]} ") or line.startswith(f"| {ids[1]} ")]
    assert len(fit_rows) == 4  # a fit row and a held-out row each
    assert "| yes |" in fit_rows[0] and "| no |" in fit_rows[1]
    assert "+15.0 %" in fit_rows[1]
    for pid in ids[2:]:
        assert f"- {pid} " in text and "not run" in text
    assert not list(tmp_path.glob("*.log"))  # no child process was started
