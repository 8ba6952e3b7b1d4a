"""`cardiotwin bench crt`: the demo pipeline's time per stage, and Dask scaling of the sweep.

1. ``cardiotwin run pipelines/crt_ct.yaml --scan sample_scans/ct_sample.nii.gz`` into a fresh
   case (what ``make demo`` runs: the shipped network segments the scan, or the sample's reference
   labels with ``DEMO_LABELS=reference``; target <= 15 min on the 2-core CPU), time of each stage and of each
   step of the crt stage.
2. The phase-1 sweep (baseline + every lead site, nominal + QMC samples, the recipe's crt config)
   of that case on an embedded LocalCluster with 1 and with 2 workers, each from an empty task
   folder.

``quick``: the same pipeline with 2 QMC samples and no electromechanics, to check the bench runs.
The section records the 1-minute load average before the run: other jobs on the machine slow it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cardiotwin.machine import machine_description

TARGET_DEMO_S = 15 * 60


def _run_demo(case: Path, recipe: Path, scan: Path, labels: Path | None) -> tuple[float, dict]:
    # the console script (not `python -m cardiotwin`): Dask's spawned workers must not re-run the entry point
    cmd = [str(Path(sys.executable).parent / "cardiotwin"), "-q", "run", str(recipe), "--scan", str(scan),
           "--out", str(case)]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=3 * 3600)
    return time.perf_counter() - t0, json.loads((case / "pipeline.json").read_text())


def _crt_options(recipe: Path) -> dict:
    import yaml

    data = yaml.safe_load(recipe.read_text())
    return next((dict(stage["crt"] or {}) for stage in data["stages"] if isinstance(stage, dict) and "crt" in stage), {})


def _sweep_time(case: Path, n_workers: int, crt_options: dict) -> tuple[float, int]:
    from cardiotwin.therapy.stage import load_crt_config
    from cardiotwin.distributed import dask_client
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.io.meshes import read_mesh
    from cardiotwin.therapy.candidates import candidate_sites
    from cardiotwin.therapy.protocols import baseline_protocol, site_protocols
    from cardiotwin.therapy.solver import eikonal_solver
    from cardiotwin.therapy.sweep import SweepTask, run_sweep
    from cardiotwin.therapy.uq import design, sample_conduction

    cfg = load_crt_config(crt_options, source="bench crt recipe")
    mesh_path = case / "fibers" / "mesh.vtu"
    mesh = read_mesh(mesh_path)
    rv, lv, _ = candidate_sites(mesh, cfg.candidates)
    protocols = [baseline_protocol(), *site_protocols(rv, lv, cfg.protocols)]
    confs = [cfg.conduction] + [sample_conduction(cfg.conduction, r, cfg.uq) for r in design(cfg.uq)]
    tasks = [SweepTask(sample=s, conduction=c, protocol=p) for s, c in enumerate(confs) for p in protocols]
    work = Path(tempfile.mkdtemp(prefix=f"crt_sweep_{n_workers}w_"))
    try:
        with dask_client(n_workers=n_workers) as client:
            client.run(lambda: None)  # workers up before timing
            t0 = time.perf_counter()
            run_sweep(tasks, mesh_path=mesh_path, mesh_sha256=sha256_file(mesh_path), work_dir=work,
                      solver=eikonal_solver, client=client)
            return time.perf_counter() - t0, len(tasks)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_crt(*, quick: bool) -> str:
    """Markdown section: demo pipeline stage times and sweep scaling over 1 / 2 Dask workers."""
    repo = Path(__file__).resolve().parents[2]
    scan = repo / "sample_scans" / "ct_sample.nii.gz"
    # as scripts/demo.sh: the network's labels unless DEMO_LABELS=reference
    reference = os.environ.get("DEMO_LABELS", "network") == "reference"
    labels = repo / "sample_scans" / "ct_sample_labels.nii.gz" if reference else None
    recipe = repo / "pipelines" / "crt_ct.yaml"
    root = Path(tempfile.mkdtemp(prefix="crt_bench_"))
    load_1min = os.getloadavg()[0]
    try:
        if quick:
            import yaml

            data = yaml.safe_load(recipe.read_text())
            for stage in data["stages"]:
                if isinstance(stage, dict) and "crt" in stage:
                    uq = dict(stage["crt"].get("uq") or {})
                    uq.update({"samples": 2, "stiffness_samples": 0})
                    stage["crt"].update({"uq": uq, "em_top_k": 0})
            recipe = root / "crt_ct_quick.yaml"
            recipe.write_text(yaml.safe_dump(data, sort_keys=False))
        case = root / "case"
        total_s, info = _run_demo(case, recipe, scan, labels)
        crt_options = _crt_options(recipe)
        samples = int((crt_options.get("uq") or {}).get("samples", 16))
        scaling = [(w, *_sweep_time(case, w, crt_options)) for w in (1, 2)]
    finally:
        keep = os.environ.get("CARDIOTWIN_BENCH_KEEP")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    cmd = "cardiotwin bench crt" + (" --quick" if quick else "")
    ok = "meets" if total_s <= TARGET_DEMO_S else "misses"
    lines = [
        "## crt: virtual CRT demo pipeline and sweep scaling", "",
        f"Command: `{cmd}`. Machine: {machine_description()}; 1-min load average {load_1min:.1f} before the run "
        "(above 0 when other jobs share the CPU).", "",
        "Pipeline: `cardiotwin run pipelines/crt_ct.yaml --scan "
        "sample_scans/ct_sample.nii.gz`"
        + (" with `--labels sample_scans/ct_sample_labels.nii.gz` (DEMO_LABELS=reference)" if labels
           else " (segmented by the shipped network, as `make demo`)")
        + (" (quick: pipelines/crt_ct.yaml with 2 QMC samples and no electromechanics)" if quick else "") + ".", "",
        f"Total wall time {total_s:.0f} s" + (" (quick recipe: not comparable with the 15 min target)" if quick
                                              else f": {ok} the 15 min target") + ".", "",
        "| stage | wall time (s) |", "|---|---|",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in info["wall_s"].items()]
    lines += ["", "Steps of the crt stage:", "", "| step | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in info.get("therapy_steps_s", {}).items()]
    lines += ["", f"Sweep scaling (phase 1: baseline + all lead sites x (1 + {samples}) QMC samples, eikonal; "
              "fresh task folder each; LocalCluster worker processes, 1 thread each):", "",
              "| workers | tasks | wall time (s) | tasks/s | speed-up |", "|---|---|---|---|---|"]
    t1 = scaling[0][1]
    lines += [f"| {w} | {n} | {s:.1f} | {n / s:.2f} | {t1 / s:.2f} |" for w, s, n in scaling]
    return "\n".join(lines) + "\n"


def bench_crt_real(*, quick: bool) -> str:
    """Markdown section: the CRT recipe on the real contrast CT crop of ``../shared/data/real_ct``
    (segmented by the shipped network), as a user would run it: stage times, the twin's mesh, the
    LBBB baseline beat and the best protocol. ``quick``: no electromechanics, 2 QMC samples."""
    return _bench_recipe_on_real_scan(
        name="crt_real", title="the CRT recipe on a real contrast CT", recipe_name="crt_ct.yaml",
        scan_parts=("real_ct", "ct_aorta_crop.nii.gz"), quick=quick)


def bench_crt_real_mr(*, quick: bool) -> str:
    """Markdown section: the MR CRT recipe on a real short-axis cine stack (Sunnybrook SCD0000201,
    end-diastole, 10 mm slices; ``../shared/data/sunnybrook``), segmented by the shipped network, as
    a user would run it; the same table as ``bench_crt_real`` plus the mesh's boundary genus."""
    return _bench_recipe_on_real_scan(
        name="crt_real_mr", title="the MR CRT recipe on a real cine MRI stack", recipe_name="crt_mri.yaml",
        scan_parts=("sunnybrook", "SCD0000201", "ed_image.nii.gz"), quick=quick)


def _bench_recipe_on_real_scan(*, name: str, title: str, recipe_name: str, scan_parts: tuple[str, ...],
                               quick: bool) -> str:
    import csv

    import yaml

    repo = Path(__file__).resolve().parents[2]
    scan = repo.parent.joinpath("shared", "data", *scan_parts)
    cmd = f"cardiotwin bench {name}" + (" --quick" if quick else "")
    head = [f"## {name}: {title}", "",
            f"Command: `{cmd}`. Machine: {machine_description()}; 1-min load average {os.getloadavg()[0]:.1f} "
            "before the run.", ""]
    if not scan.is_file():
        return "\n".join(head + [f"Not run: `{scan}` is absent (real data stay outside the repository)."]) + "\n"
    recipe = repo / "pipelines" / recipe_name
    root = Path(tempfile.mkdtemp(prefix=f"{name}_bench_"))
    try:
        if quick:
            data = yaml.safe_load(recipe.read_text())
            for stage in data["stages"]:
                if isinstance(stage, dict) and "crt" in stage:
                    stage["crt"].update({"uq": {**(stage["crt"].get("uq") or {}), "samples": 2}, "em_top_k": 0})
            recipe = root / f"{recipe.stem}_quick.yaml"
            recipe.write_text(yaml.safe_dump(data, sort_keys=False))
        case = root / "case"
        total_s, info = _run_demo(case, recipe, scan, None)
        n_beats = 0 if quick else 1 + int(_crt_options(recipe).get("em_top_k", 3))
        q = json.loads((case / "mesh" / "quality.json").read_text())
        seg = json.loads((case / "segment" / "qc.json").read_text())["volumes_ml"]
        beats_path = case / "therapy" / "beats.json"
        beats = json.loads(beats_path.read_text()) if beats_path.is_file() else {}
        with open(case / "therapy" / "ranking.csv", newline="") as fh:
            best = next(csv.DictReader(fh))
    finally:
        if not os.environ.get("CARDIOTWIN_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    lines = head + [
        f"Pipeline: `cardiotwin run pipelines/{recipe_name} --scan ../{scan.relative_to(repo.parent)}` (segmented by "
        "the shipped network)" + (" (quick: 2 QMC samples, no electromechanics)" if quick else "") + f". Total wall "
        f"time {total_s:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in info["wall_s"].items()) + ").", "",
        "| measure | value |", "|---|---|",
        f"| label map: LV blood / LV wall / RV blood / RV wall (mL) | {seg['lv_blood']:.1f} / {seg['lv_myo']:.1f} / "
        f"{seg['rv_blood']:.1f} / {seg['rv_myo']:.1f} |",
        f"| mesh: points / tets / min dihedral (deg) / boundary genus | {q['n_points']} / {q['n_cells']} / "
        f"{q['min_dihedral_deg']:.1f} / {q.get('boundary_genus', float('nan')):g} |",
        f"| mesh: LV / RV cavity (mL), LV cavity error against the labels | {q['lv_cavity_ml']:.1f} / "
        f"{q['rv_cavity_ml']:.1f}, {100 * q['lv_cavity_error']:+.1f} % |",
    ]
    base = beats.get("baseline")
    if base:
        lines.append(f"| LBBB baseline beat: LV EDV / ESV (mL), LV EF, RV EF | {base['edv_ml']['LV']:.0f} / "
                     f"{base['esv_ml']['LV']:.0f}, {base['ejection_fraction']['LV']:.2f}, "
                     f"{base['ejection_fraction']['RV']:.2f} |")
    lines.append(f"| best protocol | {best['name']} (TAT {float(best['tat_change_pct']):+.1f} %"
                 + (f", dP/dt {float(best['dpdt_change_pct']):+.1f} %" if best.get("dpdt_change_pct") else "") + ") |")
    lines.append(f"| electromechanical beats converged (beats.json holds converged ones only) | {len(beats)} of {n_beats} |")
    return "\n".join(lines) + "\n"
