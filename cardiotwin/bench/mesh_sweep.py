"""Resolution sweep of the mesher (part of `cardiotwin bench mesh`): label maps at many voxel sizes
meshed at 1.5, 3 and 5 mm, each checked against the meshing targets.

Cases: phantom ground-truth labels (``cardiotwin.phantom.heart_labels_at``) rendered on grids around
the heart at 0.5-3 mm, isotropic and anisotropic, typical and dilated LV, with scar; a thick-slice
MR phantom stack and the MR sample; the shipped network's labels of the real CT crop; expert labels
of ACDC (patients 001-010 and the small MINF LV of 041) and Sunnybrook short-axis stacks
(``../shared/data``; ventricles only, so the base plane is their most basal LV slice,
``surface.stack_base_plane``). Each mesh runs in a child process, so a crash or a time-out is a
failed case, not a failed sweep.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiotwin.bench import sources_fingerprint
from cardiotwin.types import ImageGeometry, LabelMap

log = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_scans"
EDGES_MM = (1.5, 3.0, 5.0)
TARGET_TIME_S = {1.5: 180.0, 3.0: 120.0, 5.0: 60.0}  # 3 mm: between the 1.5 and 5 mm targets
PHANTOM_SPACINGS = ((0.5, 0.5, 0.5), (0.625, 0.625, 0.625), (0.8, 0.8, 0.8), (1.0, 1.0, 1.0), (1.5, 1.5, 1.5),
                    (3.0, 3.0, 3.0), (1.0, 1.0, 0.625), (0.83, 0.83, 1.25), (0.99, 0.99, 2.0))


@dataclass(frozen=True)
class SweepCase:
    """One label map of the sweep: ``kind`` says how ``make`` builds it from ``arg``."""

    name: str
    kind: str  # "phantom", "phantom_mr", "file", "sunnybrook", "real_ct"
    arg: str


def phantom_labels(*, seed: int, spacing_mm: tuple[float, float, float], lv: str = "typical",
                   scar: bool = False) -> LabelMap:
    """Ground-truth labels of phantom ``seed`` on an axis-aligned grid of ``spacing_mm`` around the
    ventricles (10 mm margin, atria and great vessels inside the grid where they are near)."""
    from cardiotwin.phantom import heart_labels_at, sample_heart_params

    params = sample_heart_params(np.random.default_rng(seed), scar=scar, lv=lv)  # type: ignore[arg-type]
    coarse = _box_points(np.asarray(params.base_centre_lps_mm) - 150.0, np.full(3, 300.0), 3.0)
    lab = heart_labels_at(coarse, params)
    inside = coarse[np.isin(lab, (1, 2, 3, 4, 9))]
    lo, hi = inside.min(axis=0) - 12.0, inside.max(axis=0) + 12.0
    sp = np.asarray(spacing_mm, dtype=float)
    shape = tuple(int(v) for v in np.ceil((hi - lo) / sp) + 1)
    geometry = ImageGeometry(shape=shape, spacing_mm=tuple(float(v) for v in sp),  # type: ignore[arg-type]
                             origin_mm=tuple(float(v) for v in lo))  # type: ignore[arg-type]
    labels = np.zeros(shape, dtype=np.uint8)
    for i0 in range(0, shape[0], 16):  # slabs: bounded memory at 0.5 mm
        i1 = min(i0 + 16, shape[0])
        idx = np.stack(np.meshgrid(np.arange(i0, i1), np.arange(shape[1]), np.arange(shape[2]), indexing="ij"),
                       axis=-1).reshape(-1, 3)
        labels[i0:i1] = heart_labels_at(geometry.index_to_world(idx), params).reshape(i1 - i0, shape[1], shape[2])
    spacing_txt = "x".join(f"{v:g}" for v in sp)
    return LabelMap(labels=labels, geometry=geometry,
                    source=f"phantom seed {seed} {lv}{' scar' if scar else ''} {spacing_txt} mm")


def _box_points(lo: np.ndarray, size: np.ndarray, step: float) -> np.ndarray:
    axes = [np.arange(lo[d], lo[d] + size[d], step) for d in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def sweep_cases(*, quick: bool) -> list[SweepCase]:
    """The sweep's label maps; ``quick``: the representative subset named in docs/BENCHMARKS.md."""
    cases: list[SweepCase] = []
    spacings = PHANTOM_SPACINGS if not quick else ((0.5, 0.5, 0.5), (1.0, 1.0, 0.625), (0.99, 0.99, 2.0),
                                                   (3.0, 3.0, 3.0))
    for sp in spacings:
        cases.append(SweepCase(f"phantom typical {'x'.join(f'{v:g}' for v in sp)} mm", "phantom",
                               json.dumps({"seed": 1, "spacing_mm": sp})))
    for lv, scar, seed in (("dilated", False, 2), ("typical", True, 3)):
        for sp in ((0.8, 0.8, 0.8), (1.0, 1.0, 0.625)) if not quick else ((0.83, 0.83, 1.25),):
            cases.append(SweepCase(f"phantom {lv}{' scar' if scar else ''} {'x'.join(f'{v:g}' for v in sp)} mm",
                                   "phantom", json.dumps({"seed": seed, "spacing_mm": sp, "lv": lv, "scar": scar})))
    cases.append(SweepCase("phantom MR stack 1.5x1.5x8 mm", "phantom_mr", "5"))
    cases.append(SweepCase("MR sample labels (8 mm slices)", "file", str(SAMPLES / "mr_sample_labels.nii.gz")))
    if (SHARED_DATA / "real_ct").is_dir():
        cases.append(SweepCase("real CT crop, network labels (1.5 mm)", "real_ct",
                               str(SHARED_DATA / "real_ct" / "ct_aorta_crop.nii.gz")))
    acdc = sorted((SHARED_DATA / "acdc").glob("patient*/ed_labels.nii.gz"))[: 3 if quick else 10]
    small_lv = SHARED_DATA / "acdc" / "patient041" / "ed_labels.nii.gz"  # MINF, 69 mL LV: bench calibrate's
    if not quick and small_lv.is_file():
        acdc.append(small_lv)
    cases += [SweepCase(f"ACDC {p.parent.name} ED (expert)", "file", str(p)) for p in acdc]
    sunny = sorted((SHARED_DATA / "sunnybrook").glob("SCD*/ed_labels.nii.gz"))[: 1 if quick else 3]
    cases += [SweepCase(f"Sunnybrook {p.parent.name} ED (expert, LV only)", "sunnybrook", str(p)) for p in sunny]
    return cases


def make_labels(case: SweepCase) -> LabelMap:
    """The label map of ``case``."""
    from cardiotwin.io.scans import read_labels

    if case.kind == "phantom":
        kw = json.loads(case.arg)
        return phantom_labels(seed=kw["seed"], spacing_mm=tuple(kw["spacing_mm"]), lv=kw.get("lv", "typical"),
                              scar=kw.get("scar", False))
    if case.kind == "phantom_mr":
        from cardiotwin.phantom import make_phantom

        return make_phantom(seed=int(case.arg), modality="MR").labels
    if case.kind == "real_ct":
        from cardiotwin.io.scans import read_scan
        from cardiotwin.segmentation.bundle import load_bundle
        from cardiotwin.segmentation.inference import segment

        labels = segment(read_scan(case.arg, modality="CT"), load_bundle())
        return LabelMap(labels=labels.labels, geometry=labels.geometry, source=case.name)
    labels = read_labels(case.arg)
    if case.kind == "sunnybrook":  # 255: slice without contours -> background
        lab = np.where(labels.labels == 255, 0, labels.labels).astype(np.uint8)
        labels = LabelMap(labels=lab, geometry=labels.geometry, source=labels.source)
    return labels


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in name).strip("_")


def row_path(rows_dir: Path, case_name: str, edge_mm: float) -> Path:
    """File of one sweep row: ``rows_dir/<case>@<edge>mm.json``."""
    return rows_dir / f"{_slug(case_name)}@{edge_mm:g}mm.json"


def _write_row(rows_dir: Path, row: dict) -> None:
    from cardiotwin.io.atomic import write_json_atomic

    rows_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(row_path(rows_dir, row["case"], row["edge_mm"]), row)


def _run_one(case_json: str, edges: list[float], time_limit_s: float, rows_dir: str, jobs: int) -> None:
    """Child process body: make the case's labels once, mesh them at each edge, write each row."""
    from cardiotwin.errors import StageError
    from cardiotwin.machine import machine_description
    from cardiotwin.meshing.quality import mesh_quality
    from cardiotwin.meshing.volume import MeshConfig, mesh_labels

    case = SweepCase(**json.loads(case_json))
    t = time.perf_counter()
    labels = make_labels(case)
    labels_s = time.perf_counter() - t
    for edge_mm in edges:
        row: dict = {"case": case.name, "edge_mm": edge_mm, "code": mesher_fingerprint(),
                     "voxel_mm": [round(v, 3) for v in labels.geometry.spacing_mm], "labels_made_s": labels_s,
                     "machine": machine_description(), "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                     "load_1min_before": os.getloadavg()[0], "meshes_at_a_time": jobs}
        t, cpu = time.perf_counter(), _cpu_s()
        try:
            mesh, base, closed, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=edge_mm, time_limit_s=time_limit_s))
        except StageError as exc:
            row.update(error=str(exc), time_s=time.perf_counter() - t, cpu_s=_cpu_s() - cpu)
            _write_row(Path(rows_dir), row)
            continue
        row["time_s"], row["cpu_s"] = time.perf_counter() - t, _cpu_s() - cpu
        q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
        row.update(n_cells=mesh.n_cells, min_dihedral_deg=q["min_dihedral_deg"], volume_error=q["volume_error"],
                   volume_error_closed=q["volume_error_closed"], built_wall_ml=q["built_wall_ml"],
                   lv_cavity_error=q["lv_cavity_error"], genus=q["boundary_genus"],
                   mean_edge_mm=q["edge_length_mm"]["mean"], ftetwild=bool(timings.get("mesher_ftetwild", 0.0)),
                   steps_s={k[:-2]: round(v, 2) for k, v in timings.items() if k.endswith("_s")},
                   load_1min_after=os.getloadavg()[0])
        _write_row(Path(rows_dir), row)


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the tet meshers): on a shared machine
    the wall time says more about the other jobs than about the mesher."""
    import resource

    return time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def run_case(case: SweepCase, edges: list[float], *, rows_dir: Path, time_limit_s: float, jobs: int = 1) -> list[dict]:
    """Mesh ``case`` at each of ``edges`` in one child process (OMP_NUM_THREADS=1, the labels made
    once); each row is written to ``rows_dir`` as it is measured. A crash or a time-out is a failed
    row for the edges left. Returns the rows."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    script = ("import json, sys; from cardiotwin.bench.mesh_sweep import _run_one; "
              "_run_one(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]))")
    code = mesher_fingerprint()
    for edge in edges:  # a row left from an earlier run of these edges must not pass for this one's
        row_path(rows_dir, case.name, edge).unlink(missing_ok=True)
    t = time.perf_counter()
    limit = len(edges) * time_limit_s + 300
    try:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(case.__dict__), json.dumps(list(edges)),
                               str(time_limit_s), str(rows_dir), str(jobs)], env=env, capture_output=True, text=True,
                              timeout=limit, check=False)
        failure = None if proc.returncode == 0 else f"exit {proc.returncode}: " + \
            (proc.stderr.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        failure = f"child did not finish within {limit:.0f} s"
    rows = []
    for edge in edges:
        path = row_path(rows_dir, case.name, edge)
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        row = {"case": case.name, "edge_mm": edge, "code": code, "error": failure or "no row written",
               "time_s": time.perf_counter() - t}
        _write_row(rows_dir, row)
        rows.append(row)
        t = time.perf_counter()
    return rows


def check_row(row: dict) -> list[str]:
    """Names of the targets ``row`` misses (empty: all met)."""
    if "error" in row:
        return ["meshes"]
    missed = []
    if row.get("cpu_s", row["time_s"]) > TARGET_TIME_S.get(row["edge_mm"], 180.0):
        missed.append("time")
    if row["min_dihedral_deg"] < 5.0:
        missed.append("dihedral")
    if abs(row.get("volume_error_closed", row["volume_error"])) > 0.05:  # labels + the wall the mesher built
        missed.append("volume")
    if row["lv_cavity_error"] is None or abs(row["lv_cavity_error"]) > 0.05:
        missed.append("LV cavity")
    if row["genus"] != 0:
        missed.append("genus")
    if abs(row["mean_edge_mm"] / row["edge_mm"] - 1.0) > 0.30:
        missed.append("edge")
    return missed


def mesher_fingerprint() -> str:
    """sha256 (16 hex digits) of the meshing package's sources."""
    return sources_fingerprint("meshing")


def default_rows_dir() -> Path:
    """Where `cardiotwin bench mesh` keeps the sweep's rows (one JSON file per case and edge, in a
    folder per mesher code), so the sweep runs in pieces and the section is built from all of them."""
    return Path(__file__).resolve().parents[2] / ".cache" / "bench-mesh"


def load_rows(rows_dir: Path) -> dict[tuple[str, float], dict]:
    """Rows measured by the current mesher code (``mesher_fingerprint``), by (case, edge)."""
    code = mesher_fingerprint()
    rows = {}
    for path in sorted((rows_dir / code).glob("*@*mm.json")):
        try:
            r = json.loads(path.read_text())
        except ValueError as exc:  # a damaged row (rows are written atomically): the sweep runs it again
            log.warning("%s: unreadable benchmark row (%s); treated as not run", path, exc)
            continue
        if isinstance(r, dict) and r.get("code") == code:
            rows[(r["case"], float(r["edge_mm"]))] = r
    return rows


def sweep(*, quick: bool, rows_dir: Path | None = None, select: list[str] | None = None,
          edges: tuple[float, ...] = EDGES_MM, time_limit_s: float = 600.0, jobs: int = 1,
          run_missing: bool = True) -> list[dict]:
    """Run the sweep's missing rows and return all of them (every case and edge of the sweep; one
    not measured by the current mesher code is ``not_run``). Rows go to ``rows_dir / <code>`` as
    they are measured; one there already is not run again. ``select``: run only cases whose name
    contains one of these texts; ``edges``: only these edges; ``jobs``: meshes at a time (each one
    thread); ``run_missing`` False: run nothing."""
    rows_dir = (rows_dir or default_rows_dir()) / mesher_fingerprint()
    cases = sweep_cases(quick=quick)
    done = load_rows(rows_dir.parent)
    todo = [(c, [e for e in sorted(edges, reverse=True) if (c.name, e) not in done]) for c in cases
            if run_missing and (not select or any(s.lower() in c.name.lower() for s in select))]
    todo = [(c, e) for c, e in todo if e]
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[SweepCase, list[float]]) -> None:
            case, case_edges = item
            log.info("sweep: %s at %s mm", case.name, ", ".join(f"{e:g}" for e in case_edges))
            for row in run_case(case, case_edges, rows_dir=rows_dir, time_limit_s=time_limit_s, jobs=jobs):
                log.info("sweep: %s at %g mm: %s", case.name, row["edge_mm"],
                         row.get("error") or f"{row['time_s']:.1f} s, missed: {', '.join(check_row(row)) or '-'}")

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, todo))
        done = load_rows(rows_dir.parent)
    return [done.get((c.name, e), {"case": c.name, "edge_mm": e, "not_run": True})
            for e in sorted(EDGES_MM, reverse=True) for c in cases]


def _built(row: dict) -> str:
    if "volume_error_closed" not in row:
        return "n/a | n/a"
    return f"{row['built_wall_ml']:.1f} | {100 * row['volume_error_closed']:+.1f} %"


def _cpu(row: dict) -> str:
    return f"{row['cpu_s']:.1f}" if "cpu_s" in row else "n/a"


def sweep_markdown(rows: list[dict]) -> list[str]:
    """Markdown lines: one row per case and edge, and the count of rows meeting every target."""
    lines = ["| case | voxel (mm) | edge (mm) | wall time (s) | CPU time (s) | tets | min dihedral (deg) | volume vs labels "
             "| built wall (mL) | volume vs labels + built wall | LV cavity | genus | mean edge (mm) | mesher | targets missed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    not_run = [r for r in rows if r.get("not_run")]
    rows = [r for r in rows if not r.get("not_run")]
    for r in rows:
        vox = "x".join(f"{v:g}" for v in r.get("voxel_mm", []))
        if "error" in r:
            lines.append(f"| {r['case']} | {vox} | {r['edge_mm']:g} | {r['time_s']:.0f} | {_cpu(r)} | | | | | | | | | | "
                         f"fails: {r['error'][:160]} |")
            continue
        lv = "n/a" if r["lv_cavity_error"] is None else f"{100 * r['lv_cavity_error']:+.1f} %"
        lines.append(f"| {r['case']} | {vox} | {r['edge_mm']:g} | {r['time_s']:.1f} | {_cpu(r)} | {r['n_cells']} | "
                     f"{r['min_dihedral_deg']:.1f} | {100 * r['volume_error']:+.1f} % | {_built(r)} | {lv} | {r['genus']:g} | "
                     f"{r['mean_edge_mm']:.2f} | {'fTetWild' if r['ftetwild'] else 'TetGen'} | "
                     f"{', '.join(check_row(r)) or '-'} |")
    met = sum(1 for r in rows if not check_row(r))
    lines += ["", f"{met} of {len(rows)} meshes meet every target."]
    summary = []
    for edge in sorted({r["edge_mm"] for r in rows}, reverse=True):
        ok = [r for r in rows if r["edge_mm"] == edge and "error" not in r]
        n = sum(1 for r in rows if r["edge_mm"] == edge)
        if not ok:
            summary.append(f"| {edge:g} | 0 of {n} | | | | | | |")
            continue
        lv = [abs(r["lv_cavity_error"]) for r in ok if r["lv_cavity_error"] is not None]
        summary.append(
            f"| {edge:g} | {sum(1 for r in ok if not check_row(r))} of {n} | {max(r.get('cpu_s', r['time_s']) for r in ok):.1f} "
            f"(target {TARGET_TIME_S.get(edge, 180.0):.0f}) | {max(r['time_s'] for r in ok):.1f} | "
            f"{min(r['min_dihedral_deg'] for r in ok):.1f} | "
            f"{100 * max(abs(r.get('volume_error_closed', r['volume_error'])) for r in ok):.1f} % | "
            f"{100 * max(lv):.1f} % | {max(abs(r['mean_edge_mm'] / edge - 1.0) for r in ok) * 100:.0f} % |")
    lines += ["", "| edge (mm) | meet every target | max CPU time (s) | max wall time (s) | min dihedral (deg) | "
              "max volume error (labels + built wall) | max LV cavity error | max mean-edge deviation |",
              "|---|---|---|---|---|---|---|---|", *summary]
    started = sorted(r["started_utc"] for r in rows if "started_utc" in r)
    if started:
        loads = [r[k] for r in rows for k in ("load_1min_before", "load_1min_after") if k in r]
        at_once = sorted({r.get("meshes_at_a_time", 1) for r in rows if "started_utc" in r})
        machines = sorted({r["machine"] for r in rows if "machine" in r})
        lines += ["", f"Measured {started[0]} to {started[-1]} UTC on {'; '.join(machines)}; "
                  f"{' or '.join(str(j) for j in at_once)} mesh(es) at a time, one thread each; 1-minute load average "
                  f"{min(loads):.1f}-{max(loads):.1f} around the meshes."]
    if not_run:
        lines += ["", f"Not run ({len(not_run)}): " + "; ".join(f"{r['case']} at {r['edge_mm']:g} mm" for r in not_run)]
    return lines
