"""`cardiotwin bench mesh`: the resolution sweep (``bench.mesh_sweep``: phantoms at 0.5-3 mm voxels, thick-slice
MR, the real CT crop, ACDC and Sunnybrook stacks at 1.5, 3 and 5 mm edges) against the meshing targets; the
sample CT phantom labels -> 1.5 mm mesh in detail; fibres + coordinates time for ~100k tetrahedra.

Every measurement is kept as a JSON file in a folder per mesher code (``mesh_sweep.default_rows_dir``), so the
sweep runs in pieces (``cases``) and the section is built from all the rows of the current code."""

from __future__ import annotations

import json
import time
from pathlib import Path


def _detail(rows_dir: Path) -> dict:
    """The sample CT labels meshed at 1.5 mm (time, steps, quality) and fibres on its 3 mm mesh,
    kept in ``rows_dir`` like the sweep's rows."""
    from cardiotwin.bench.mesh_sweep import mesher_fingerprint
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.scans import read_labels
    from cardiotwin.machine import machine_description
    from cardiotwin.meshing.quality import mesh_quality
    from cardiotwin.meshing.volume import MeshConfig, mesh_labels

    path = rows_dir / mesher_fingerprint() / "detail.json"
    if path.is_file():
        return json.loads(path.read_text())
    import os

    labels = read_labels(Path(__file__).resolve().parents[2] / "sample_scans" / "ct_sample_labels.nii.gz")
    load = os.getloadavg()[0]
    t = time.perf_counter()
    mesh, base, closed, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=1.5))
    t_mesh = time.perf_counter() - t
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    fmesh, _, _, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=3.0))
    t = time.perf_counter()
    compute_fibers(fmesh)
    detail = {"mesh_s": t_mesh, "n_cells": mesh.n_cells, "timings": timings, "quality": q,
              "fibres_s": time.perf_counter() - t, "fibre_mesh": [fmesh.n_cells, fmesh.n_points],
              "machine": machine_description(), "load_1min": [load, os.getloadavg()[0]],
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, detail)
    return detail


def bench_mesh(*, quick: bool, cases: list[str] | None = None, jobs: int = 1, run: bool = True,
               rows_dir: Path | None = None) -> str:
    """Run the meshing benchmark and return its markdown section. ``cases``: run only the sweep cases whose
    name contains one of these texts (the others' rows measured earlier by the same mesher code are kept, the
    rest listed as not run); ``jobs``: sweep meshes at a time; ``run`` False: run nothing, build the section."""
    from cardiotwin.bench.mesh_sweep import default_rows_dir, sweep, sweep_markdown

    rows_dir = rows_dir or default_rows_dir()
    sweep_rows = sweep(quick=quick, rows_dir=rows_dir, select=cases, jobs=jobs, run_missing=run)
    lines = ["## mesh", "", f"Command: `cardiotwin bench mesh{' --quick' if quick else ''}` (in pieces: "
             "`--cases TEXT`; the rows of the current mesher code are kept in "
             f"`{rows_dir.name}/` under `.cache/` and this section is built from all of them)  "]
    from cardiotwin.bench.mesh_sweep import mesher_fingerprint

    detail_file = rows_dir / mesher_fingerprint() / "detail.json"
    if run and not cases or detail_file.is_file():
        d = _detail(rows_dir)
        q = d["quality"]
        dist = q["min_dihedral_per_cell_deg"]
        steps = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in d["timings"].items() if k.endswith("_s") and k != "total_s")
        rows = [
            ("labels -> mesh, edge 1.5 mm (target <= 180 s)", f"{d['mesh_s']:.1f} s", f"{d['n_cells']} tets; {steps}"),
            ("mesh volume error (target within 5 %)", f"{100 * q['volume_error']:+.2f} %",
             f"{q['mesh_volume_ml']:.1f} vs {q['label_myocardium_ml']:.1f} mL"),
            ("wall built by the mesher (blood pools touching the background)", f"{q['built_wall_ml']:.2f} mL",
             f"volume against labels + built wall {100 * q['volume_error_closed']:+.2f} %"),
            ("LV cavity (LV_ENDO) error", f"{100 * q['lv_cavity_error']:+.2f} %",
             f"{q['lv_cavity_ml']:.1f} vs {q['label_lv_cavity_ml']:.1f} mL"),
            ("min dihedral angle (target >= 5 deg)", f"{q['min_dihedral_deg']:.2f} deg",
             "cells per min-dihedral bin " + ", ".join(f"{a:g}-{b:g}: {c}" for a, b, c in
                                                        zip(dist["bin_edges_deg"][:-1], dist["bin_edges_deg"][1:], dist["cells"]))),
            ("mean edge (target within 30 % of 1.5 mm)", f"{q['edge_length_mm']['mean']:.2f} mm", ""),
            ("boundary genus (target 0)", f"{q['boundary_genus']:g}", ""),
            ("fibres + coordinates + AHA, 3 mm mesh", f"{d['fibres_s']:.1f} s", f"{d['fibre_mesh'][0]} tets, {d['fibre_mesh'][1]} nodes"),
        ]
        lines += [f"Machine: {d['machine']}; measured {d['started_utc']} UTC, 1-minute load average "
                  f"{d['load_1min'][0]:.1f} before, {d['load_1min'][1]:.1f} after  ",
                  "Input: `sample_scans/ct_sample_labels.nii.gz`", "",
                  "| measure | value | detail |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows]]
    else:
        lines += ["", "The sample CT labels' 1.5 mm mesh in detail: not measured by this mesher code yet (run "
                  "`cardiotwin bench mesh` without `--cases`)."]
    lines += [
        "",
        f"### Resolution sweep{' (representative subset, --quick)' if quick else ''}",
        "",
        "Targets: every case meshes; 5 mm within 60 s, 3 mm within 120 s, 1.5 mm within 180 s; min dihedral "
        ">= 5 deg; myocardial volume within 5 % of the labels' and the wall the mesher built where a blood pool "
        "touches the background (`MeshConfig.built_wall_mm`; the RV wall of labels without RV myocardium: the "
        "volume against the labels alone is shown beside it), LV cavity within 5 % of the labels below the base "
        "plane; boundary genus 0; mean tet edge within 30 % of the requested edge. The time targets are checked on "
        "the mesh's CPU time (its process and the tet mesher's; one thread, so about the wall time on an idle "
        "machine) where the row has it: on a shared machine the wall time also measures the other jobs. Each case "
        "runs in its own process (labels made once, then meshed at each edge; making them is not timed).",
        "",
        *sweep_markdown(sweep_rows),
    ]
    return "\n".join(lines) + "\n"
