"""`cardiotwin bench em`: one beat's cost, and scaling with degrees of freedom and MPI ranks.

Beat: idealised biventricle (``meshing.analytic``) with analytic fibres and apex-source
activation, Windkessel per ventricle, P1 penalty formulation. Scaling: the end-diastolic
inflation plus ten beat steps at three mesh sizes, serially and with ``mpirun -n 2``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cardiotwin.bench import machine_description


def _beat(h: float, duration_ms: float, dt_ms: float) -> dict[str, float]:
    from mpi4py import MPI

    from cardiotwin.mechanics.demo import analytic_beat_inputs
    from cardiotwin.mechanics.electromechanics import EMConfig, simulate_beat

    t0 = time.perf_counter()
    inputs = analytic_beat_inputs(geometry="biventricle", char_length_mm=h)
    n_cells = inputs.mesh.comm.allreduce(inputs.mesh.topology.index_map(3).size_local, op=MPI.SUM)
    t1 = time.perf_counter()
    r = simulate_beat(inputs, EMConfig(dt=dt_ms, beat_duration=duration_ms))
    t2 = time.perf_counter()
    m = r.metadata
    return {"h_mm": h, "tets": n_cells, "dofs": m["n_dofs"], "ranks": m["mpi_ranks"], "setup_s": t1 - t0,
            "solve_s": t2 - t1, "steps": m["n_steps"], "newton_its": m["newton_iterations"],
            "solves": m["newton_solves"], "lv_ef": r.ejection_fraction["LV"], "lv_sv_ml": r.stroke_volume_ml["LV"]}


def _mpi(h: float, duration_ms: float, dt_ms: float, ranks: int) -> dict[str, float]:
    mpirun = Path(sys.executable).parent / "mpirun"
    code = (f"import json; from cardiotwin.mechanics.bench import _beat; r = _beat({h}, {duration_ms}, {dt_ms}); "
            "from mpi4py import MPI; MPI.COMM_WORLD.rank == 0 and print('RESULT', json.dumps(r))")
    out = subprocess.run([str(mpirun), "-n", str(ranks), sys.executable, "-c", code], check=True,
                         capture_output=True, text=True, timeout=3600).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])


def bench_em(*, quick: bool) -> str:
    """Markdown section: one beat, then dof and rank scaling."""
    beat_h, sizes, dt = (4.0, (5.0, 4.0, 3.0), 20.0) if quick else (2.0, (4.0, 3.0, 2.0), 10.0)
    beat = _mpi(beat_h, 800.0, dt, 1)
    rows = []
    for h in sizes:
        for ranks in (1, 2):
            rows.append(_mpi(h, 10 * dt, dt, ranks))
    cmd = "cardiotwin bench em" + (" --quick" if quick else "")
    lines = [
        "## em: one electromechanical beat", "",
        f"Command: `{cmd}`. Machine: {machine_description()}.", "",
        "Idealised biventricle (not the sample CT twin: the segmentation -> mesh -> fibres -> EP chain "
        "was not available to this benchmark), analytic fibres, apex-source activation (0.6 mm/ms), "
        "P1 penalty Guccione, Windkessel per ventricle, MUMPS Newton.", "",
        "| mesh h (mm) | tets | dofs | ranks | steps (dt ms) | wall time of beat (s) | s/step | Newton its | LV EF | LV SV (mL) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {beat['h_mm']:g} | {beat['tets']} | {beat['dofs']} | 1 | {beat['steps']} ({dt:g}) | "
        f"{beat['solve_s']:.1f} | {beat['solve_s'] / beat['steps']:.2f} | {beat['newton_its']} | "
        f"{beat['lv_ef']:.2f} | {beat['lv_sv_ml']:.2f} |", "",
        "Scaling (end-diastolic inflation + 10 beat steps):", "",
        "| mesh h (mm) | tets | dofs | ranks | wall time (s) | s/step | Newton its |", "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['h_mm']:g} | {r['tets']} | {r['dofs']} | {r['ranks']} | {r['solve_s']:.1f} | "
                     f"{r['solve_s'] / r['steps']:.2f} | {r['newton_its']} |")
    return "\n".join(lines) + "\n"
