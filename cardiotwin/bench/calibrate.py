"""`cardiotwin bench calibrate`: the personalised twin on real patients.

For each patient of ``../shared/data`` (3 Sunnybrook heart-failure patients, one ACDC patient per
pathology group; ACDC is CC BY-NC-SA: used here only to benchmark, nothing of it is shipped) the
recipe ``pipelines/twin_mri.yaml`` runs from the patient's expert ED labels (segment -> mesh ->
fibres) and calibrates to the patient's expert ED and ES labels (``--es-labels``): the base plane
of the mesh is set from the labels (``short_axis_base_plane``: short-axis stacks have no atria).

Measured values are the label volumes below that base plane (the twin's domain; the whole-label
volumes are listed too). Calibration targets: LV EDV (reproduced by the unloaded reference at the
ED pressure), LV ESV / EF (peak tension). Held out (not used by any fit): the end-systolic LV
cavity against the ES labels (Dice, endocardial surface distance), the RV volumes and EF where the
labels have an RV (ACDC), and AHA systolic thickening where the ES labels hold myocardium.

Each patient runs in a child process and writes one JSON row into the rows folder
(``CARDIOTWIN_BENCH_CALIBRATE_DIR``, default ``$TMPDIR/cardiotwin-bench-calibrate``); a patient
with a row is not run again (resumable). ``CARDIOTWIN_BENCH_PATIENTS`` (comma-separated ids)
limits which patients run now; the others are tabled from their rows or listed as not run.
``quick``: one patient (SCD0000201).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cardiotwin.machine import machine_description

SUNNYBROOK = ("SCD0000101", "SCD0000201", "SCD0000301")
ACDC = {"DCM": "patient001", "HCM": "patient021", "MINF": "patient041", "NOR": "patient061", "RV": "patient081"}
QUICK = ("SCD0000201",)
TARGET_VOLUME_REL, TARGET_EF, TARGET_WALL_S = 0.05, 0.03, 20 * 60


def _data_root() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def patients() -> list[tuple[str, str, Path]]:
    """(id, group, source folder) of the benchmark's patients."""
    root = _data_root()
    out = [(p, "SC-HF-I", root / "sunnybrook" / p) for p in SUNNYBROOK]
    out += [(p, g, root / "acdc" / p) for g, p in ACDC.items()]
    return out


def rows_dir() -> Path:
    return Path(os.environ.get("CARDIOTWIN_BENCH_CALIBRATE_DIR") or Path(tempfile.gettempdir()) / "cardiotwin-bench-calibrate")


def run_patient(pid: str, group: str, src: Path, work: Path) -> dict[str, Any]:
    """Run the twin recipe on one patient into ``work/case``; returns the benchmark row."""
    import yaml

    from cardiotwin.io.scans import read_labels
    from cardiotwin.personalisation.measurements import short_axis_base_plane
    from cardiotwin.pipeline import load_recipe, run_pipeline

    repo = Path(__file__).resolve().parents[2]
    recipe = yaml.safe_load((repo / "pipelines" / "twin_mri.yaml").read_text())
    point, normal = short_axis_base_plane(read_labels(src / "ed_labels.nii.gz"))
    for stage in recipe["stages"]:
        if isinstance(stage, dict) and "mesh" in stage:
            stage["mesh"] = {**(stage["mesh"] or {}), "base_point_mm": list(point), "base_normal": list(normal)}
    work.mkdir(parents=True, exist_ok=True)
    recipe_path = work / "twin_mri_bench.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0, c0 = time.perf_counter(), time.process_time()
    ctx = run_pipeline(load_recipe(recipe_path), scan_path=src / "ed_image.nii.gz", out=work / "case",
                       labels_path=src / "ed_labels.nii.gz", es_labels_path=src / "es_labels.nii.gz", workers=0)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    case = work / "case"
    cal = json.loads((case / "calibrate" / "calibration.json").read_text())
    val = json.loads((case / "calibrate" / "validation.json").read_text())
    q = json.loads((case / "mesh" / "quality.json").read_text())
    return {"patient": pid, "group": group, "wall_s": wall, "cpu_s": cpu, "stage_wall_s": dict(ctx.timings_s),
            "calibration_wall_s": float(cal["timings_s"]["total_s"]), "mesh": {k: q.get(k) for k in (
                "n_points", "n_cells", "lv_cavity_ml", "label_lv_cavity_ml", "rv_cavity_ml", "min_dihedral_deg")},
            "measured": cal["measured"], "simulated": cal["simulated"],
            "parameters": {k: {"value": v["value"], "interval": v.get("interval")} for k, v in cal["parameters"].items()},
            "unloading": {k: v for k, v in cal["unloading"].items() if k != "iterations"},
            "timings_s": cal["timings_s"], "validation": val, "load_average_start": os.getloadavg()[0]}


def _run_child(pid: str, group: str, src: Path, rows: Path) -> None:
    log_path = rows / f"{pid}.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.run([sys.executable, "-m", "cardiotwin.bench.calibrate", pid, group, str(src), str(rows)],
                              stdout=log_fh, stderr=subprocess.STDOUT, timeout=3 * 3600)
    if proc.returncode != 0 and not (rows / f"{pid}.json").is_file():
        tail = log_path.read_text().strip().splitlines()[-3:]
        (rows / f"{pid}.failed.json").write_text(json.dumps({"patient": pid, "returncode": proc.returncode,
                                                             "log": str(log_path), "tail": tail}))


def _pct(sim: float | None, meas: float | None) -> str:
    return "-" if sim is None or not meas else f"{100 * (sim - meas) / meas:+.1f} %"


def _unloading_md(u: dict[str, Any]) -> str:
    vol = ", ".join(f"{c} {100 * e:+.2f} %" for c, e in (u.get("volume_rel_error") or {}).items())
    return (f"{u.get('n_iterations', '-')} its, mean / max {u.get('mean_distance_mm', float('nan')):.3f} / "
            f"{u.get('max_distance_mm', float('nan')):.2f} mm, volumes {vol}")


def _row_md(r: dict[str, Any]) -> tuple[str, str]:
    m, s, v = r["measured"], r["simulated"], r["validation"]
    d_ef = s["lv_ef"] - m["lv_ef"]
    ok = (abs(s["lv_edv_ml"] - m["lv_edv_ml"]) <= TARGET_VOLUME_REL * m["lv_edv_ml"]
          and abs(s["lv_esv_ml"] - m["lv_esv_ml"]) <= TARGET_VOLUME_REL * m["lv_esv_ml"] and abs(d_ef) <= TARGET_EF)
    fit = (f"| {r['patient']} | {r['group']} | {r['mesh']['n_points']} | {m['lv_edv_ml']:.1f} / {s['lv_edv_ml']:.1f} "
           f"({_pct(s['lv_edv_ml'], m['lv_edv_ml'])}) | {m['lv_esv_ml']:.1f} / {s['lv_esv_ml']:.1f} "
           f"({_pct(s['lv_esv_ml'], m['lv_esv_ml'])}) | {m['lv_ef']:.3f} / {s['lv_ef']:.3f} ({d_ef:+.3f}) | "
           f"{'yes' if ok else 'no'} | " + ", ".join(f"{k} {p['value']:.3g}" for k, p in r["parameters"].items())
           + (f" (LV peak pressure {s['lv_peak_pressure_mmhg']:.0f} mmHg)" if s.get("lv_peak_pressure_mmhg") else "")
           + f" | {_unloading_md(r['unloading'])}"
           f" | {r['calibration_wall_s'] / 60:.1f} / {r['wall_s'] / 60:.1f} / {r['cpu_s'] / 60:.1f} |")
    es = v.get("end_systole", {})
    q = v.get("quantities", {})
    whole = m.get("whole_labels", {})
    rv = " / ".join(f"{k[3:]} {q[k]['measured']:.3g} vs {q[k]['simulated']:.3g}" for k in ("rv_edv_ml", "rv_esv_ml", "rv_ef")
                    if k in q) or "no RV labels"
    sd = es.get("lv_endo_surface_distance_mm", {})
    geometry = (f"ES state not solved: {es['error'][:200]} | - | " if "error" in es else
                f"{es.get('lv_cavity_dice', float('nan')):.3f} ({es.get('lv_cavity_compared_slices', 0)} slices) | "
                f"{sd.get('mean', float('nan')):.1f} / {sd.get('max', float('nan')):.1f} | ")
    held = (f"| {r['patient']} | {geometry}"
            + (f"{es['systolic_thickening_mean_abs_error']:.3f}" if "systolic_thickening_mean_abs_error" in es
               else "no ES myocardium labels") + f" | {rv} | "
            f"{whole.get('lv_edv_ml', float('nan')):.1f} / {whole.get('lv_esv_ml', float('nan')):.1f} |")
    return fit, held


def bench_calibrate(*, quick: bool) -> str:
    """Markdown section: the calibration of the twin on each patient (fit targets and held-out
    validation, two tables), with the wall and CPU time of each calibration."""
    chosen = [p for p in patients() if not quick or p[0] in QUICK]
    only = {s.strip() for s in os.environ.get("CARDIOTWIN_BENCH_PATIENTS", "").split(",") if s.strip()}
    rows = rows_dir()
    rows.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    for pid, group, src in chosen:
        if (rows / f"{pid}.json").is_file() or (only and pid not in only) or not src.is_dir():
            continue
        _run_child(pid, group, src, rows)
    cmd = "cardiotwin bench calibrate" + (" --quick" if quick else "")
    lines = [f"## calibrate: the personalised twin reproduces its patient", "",
             f"Command: `{cmd}` (rows kept in `{rows}`; `CARDIOTWIN_BENCH_PATIENTS=ID,...` runs only those patients "
             f"now, rows of earlier runs are reused). Machine: {machine_description()}; 1-min load average "
             f"{load0:.1f} before this invocation (each row records its own).", "",
             "Recipe `pipelines/twin_mri.yaml` from the patient's **expert** ED labels (segment -> 5 mm mesh -> fibres "
             "-> calibrate with the expert ES labels). Measured = label volumes below the mesh's base plane (the twin's "
             "domain); whole-label volumes in the second table. Targets: LV EDV and ESV within 5 %, LV EF within 0.03, "
             "one calibration within 20 min; unloading: reinflated LV and RV volumes within 2 % of the imaged mesh's, mean "
             "nodal distance below 0.5 mm. Calibrated: passive stiffness (Klotz EDPVR with the unloaded reference), "
             "peak active tension (LV EF and ESV, weighted by their sigmas); ED pressures population values (no LVEDP "
             "measured); the twin's epicardium on the pericardial springs of `calibrate: pericardium_kpa_per_mm` "
             "(docs/personalisation.md).", "",
             "| patient | group | mesh points | LV EDV meas / sim (mL) | LV ESV meas / sim (mL) | LV EF meas / sim | "
             "targets met | calibrated parameters | unloading | calibration / whole recipe wall / CPU (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    held_lines = ["", "Held-out validation (no fit used these data): the twin's end-systolic LV cavity against the ES "
                  "labels, AHA systolic thickening (where the ES labels have myocardium), RV volumes and EF (the RV "
                  "shares the LV's calibrated stiffness and tension; RV EDV comes from the unloading at the population "
                  "RV EDP).", "",
                  "| patient | ES LV cavity Dice | ES endocardial distance mean / max (mm) | thickening mean abs error | "
                  "RV measured vs simulated | whole-label LV EDV / ESV (mL) |", "|---|---|---|---|---|---|"]
    missing = []
    for pid, group, src in chosen:
        path = rows / f"{pid}.json"
        if path.is_file():
            fit, held = _row_md(json.loads(path.read_text()))
            lines.append(fit)
            held_lines.append(held)
        else:
            failed = rows / f"{pid}.failed.json"
            quality = rows / pid / "case" / "mesh" / "quality.json"
            mesh = ""
            if quality.is_file():
                q = json.loads(quality.read_text())
                mesh = (f" (mesh: {q['n_points']} points, myocardium volume error {100 * q['volume_error']:+.0f} %, "
                        f"LV cavity error {100 * q['lv_cavity_error']:+.0f} %)")
            why = (f"failed{mesh}: {json.loads(failed.read_text())['tail'][-1][:300]}" if failed.is_file()
                   else "data absent" if not src.is_dir() else "not run (benchmark time budget)")
            missing.append(f"- {pid} ({group}): {why}")
    out = lines + held_lines
    if missing:
        out += ["", "Patients without a row:", *missing]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    """Child process: ``python -m cardiotwin.bench.calibrate PID GROUP SRC ROWS``."""
    import logging
    import shutil

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pid, group, src, rows = argv[0], argv[1], Path(argv[2]), Path(argv[3])
    work = rows / pid
    shutil.rmtree(work, ignore_errors=True)
    row = run_patient(pid, group, src, work)
    tmp = rows / f"{pid}.json.tmp"
    tmp.write_text(json.dumps(row, indent=1, default=float))
    tmp.replace(rows / f"{pid}.json")
    (rows / f"{pid}.failed.json").unlink(missing_ok=True)
    print(json.dumps({k: row[k] for k in ("measured", "simulated", "wall_s", "cpu_s")}, default=float)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
