"""`cardiotwin bench em`: one beat of the sample CT twin, and scaling with dofs and MPI ranks.

Beat: ``sample_scans/ct_sample_labels.nii.gz`` -> mesh (3 mm edges, ~34k tets) -> fibres ->
sinus-like eikonal activation (``twin.sinus_sources``) -> ``simulate_beat`` with the default
``EMConfig`` (P1 penalty Guccione, Windkessel per ventricle, MUMPS Newton, dt 10 ms in systole,
40 ms once every twitch has ended). Scaling: end-diastolic inflation plus ten 10 ms beat steps
(the start of systole) on the twin meshed at three edge lengths, with 1 and 2 MPI ranks.
Every run is a fresh process (``mpirun -n R python -c ...``) so JIT caches are warm but no
Python state is shared; the wall times exclude mesh generation and reading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cardiotwin.bench import machine_description

LABELS = Path(__file__).resolve().parents[2] / "sample_scans" / "ct_sample_labels.nii.gz"


def _beat(vtu: str, duration_ms: float, dt_ms: float) -> dict[str, float]:
    """Run under mpirun: read the twin, simulate, return figures (rank 0 prints them)."""
    from mpi4py import MPI

    from cardiotwin.commands.simulate_em import _inputs_from_file
    from cardiotwin.mechanics.electromechanics import EMConfig, simulate_beat

    t0 = time.perf_counter()
    inputs = _inputs_from_file(Path(vtu))
    n_cells = inputs.mesh.comm.allreduce(inputs.mesh.topology.index_map(3).size_local, op=MPI.SUM)
    t1 = time.perf_counter()
    r = simulate_beat(inputs, EMConfig(dt=dt_ms, beat_duration=duration_ms))
    t2 = time.perf_counter()
    m = r.metadata
    its = [int(i) for i in m["newton_iterations_per_step"]]
    return {"tets": n_cells, "dofs": m["n_dofs"], "ranks": m["mpi_ranks"], "setup_s": t1 - t0,
            "solve_s": t2 - t1, "steps": m["n_steps"], "newton_its": m["newton_iterations"],
            "max_its_step": max(its) if its else 0, "fallbacks": m["coupling_fallbacks"],
            "step_seconds": m["step_seconds"],
            **{f"{c}_{k}": getattr(r, attr)[c] for c in m["cavities"]
               for k, attr in (("edv", "edv_ml"), ("esv", "esv_ml"), ("sv", "stroke_volume_ml"),
                               ("ef", "ejection_fraction"), ("dpdt", "dpdt_max_kpa_per_ms"))},
            "lv_peak_kpa": float(r.lv_pressure_kpa.max())}


def _mpi(vtu: Path, duration_ms: float, dt_ms: float, ranks: int) -> dict[str, float]:
    mpirun = Path(sys.executable).parent / "mpirun"
    code = (f"import json; from cardiotwin.mechanics.bench import _beat; r = _beat({str(vtu)!r}, {duration_ms}, "
            f"{dt_ms}); from mpi4py import MPI; MPI.COMM_WORLD.rank == 0 and print('RESULT', json.dumps(r))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(mpirun), "-n", str(ranks), sys.executable, "-c", code], check=True,
                         capture_output=True, text=True, timeout=3600, env=env).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def bench_em(*, quick: bool) -> str:
    """Markdown section: one beat of the sample CT twin, then dof and rank scaling."""
    from cardiotwin.mechanics.twin import prepare_twin

    beat_edge, sizes, dt = (3.0, (5.0, 4.0), 10.0) if quick else (3.0, (5.0, 4.0, 3.0), 10.0)
    mmhg = 0.133322387415
    with tempfile.TemporaryDirectory(prefix="bench_em_") as tmp:
        twins = {e: prepare_twin(LABELS, Path(tmp) / f"edge{e:g}", edge_mm=e) for e in sorted({beat_edge, *sizes})}
        load_before = _load()
        beat = _mpi(twins[beat_edge], 800.0, dt, 1)
        rows = [(e, _mpi(twins[e], 10 * dt, dt, ranks)) for e in sizes for ranks in (1, 2)]
        load_after = _load()
    cmd = "cardiotwin bench em" + (" --quick" if quick else "")
    sec = beat["step_seconds"]
    lines = [
        "## em: one electromechanical beat of the sample CT twin", "",
        f"Command: `{cmd}`. Machine: {machine_description()}. Load average (1/5/15 min) before the beat "
        f"{load_before}, after the scaling runs {load_after} (the 2 cores are shared with other jobs, so "
        "wall times are upper bounds).", "",
        "Twin: `sample_scans/ct_sample_labels.nii.gz` -> `cardiotwin mesh --edge-mm 3` -> `cardiotwin fibers` -> "
        "eikonal activation from endocardial breakthrough sites (`mechanics.twin.sinus_sources`) -> "
        "`simulate_beat` with the default `EMConfig`: P1 penalty Guccione (C 2 kPa), fixed base, twitch peak "
        "90 kPa, 3-element Windkessel per ventricle, one Newton loop for displacement and cavity pressures "
        "(MUMPS, forms compiled once), dt 10 ms while any twitch is active and 40 ms after.", "",
        "| tets | dofs | ranks | steps | beat wall time (s) | s/step mean (max) | Newton its total (max/step) "
        "| LV EDV / ESV (mL) | LV EF | RV EF | LV peak (mmHg) | LV dP/dt max (mmHg/s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {beat['tets']} | {beat['dofs']} | 1 | {beat['steps']} | {beat['solve_s']:.1f} | "
        f"{sum(sec) / max(len(sec), 1):.2f} ({max(sec, default=0.0):.2f}) | {beat['newton_its']} "
        f"({beat['max_its_step']}) | {beat['LV_edv']:.1f} / {beat['LV_esv']:.1f} | {beat['LV_ef']:.2f} | "
        f"{beat.get('RV_ef', float('nan')):.2f} | {beat['lv_peak_kpa'] / mmhg:.0f} | "
        f"{beat['LV_dpdt'] / mmhg * 1000:.0f} |", "",
        f"Coupling fallbacks to load stepping: {beat['fallbacks']}. The beat's wall time excludes reading the "
        f"mesh ({beat['setup_s']:.1f} s) and includes the end-diastolic inflation and form compilation.", "",
        "Scaling (end-diastolic inflation + 10 systolic steps of 10 ms):", "",
        "| edge (mm) | tets | dofs | ranks | wall time (s) | s/step | Newton its |", "|---|---|---|---|---|---|---|",
    ]
    for e, r in rows:
        lines.append(f"| {e:g} | {r['tets']} | {r['dofs']} | {r['ranks']} | {r['solve_s']:.1f} | "
                     f"{r['solve_s'] / r['steps']:.2f} | {r['newton_its']} |")
    return "\n".join(lines) + "\n"
