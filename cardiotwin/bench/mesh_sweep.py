"""Resolution sweep of the mesher (part of `cardiotwin bench mesh`): label maps at many voxel sizes
meshed at 1.5, 3 and 5 mm, each checked against the meshing targets.

Cases: phantom ground-truth labels (``cardiotwin.phantom.heart_labels_at``) rendered on grids around
the heart at 0.5-3 mm, isotropic and anisotropic, typical and dilated LV, with scar; a thick-slice
MR phantom stack and the MR sample; the shipped network's labels of the real CT crop; expert labels
of ACDC and Sunnybrook short-axis stacks (``../shared/data``; ventricles only, so the base plane is
their most basal LV slice, ``surface.stack_base_plane``). Each mesh runs in a child process, so a
crash or a time-out is a failed case, not a failed sweep.
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


def _run_one(case_json: str, edge_mm: float, time_limit_s: float) -> dict:
    """Child process body: mesh one case at one edge, return the measured row."""
    from cardiotwin.errors import StageError
    from cardiotwin.meshing.quality import mesh_quality
    from cardiotwin.meshing.volume import MeshConfig, mesh_labels

    case = SweepCase(**json.loads(case_json))
    labels = make_labels(case)
    row: dict = {"case": case.name, "edge_mm": edge_mm, "voxel_mm": [round(v, 3) for v in labels.geometry.spacing_mm]}
    t, cpu = time.perf_counter(), _cpu_s()
    try:
        mesh, base, closed, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=edge_mm, time_limit_s=time_limit_s))
    except StageError as exc:
        row.update(error=str(exc), time_s=time.perf_counter() - t, cpu_s=_cpu_s() - cpu)
        return row
    row["time_s"], row["cpu_s"] = time.perf_counter() - t, _cpu_s() - cpu
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    row.update(n_cells=mesh.n_cells, min_dihedral_deg=q["min_dihedral_deg"], volume_error=q["volume_error"],
               volume_error_closed=q["volume_error_closed"], built_wall_ml=q["built_wall_ml"],
               lv_cavity_error=q["lv_cavity_error"], genus=q["boundary_genus"],
               mean_edge_mm=q["edge_length_mm"]["mean"], ftetwild=bool(timings.get("mesher_ftetwild", 0.0)))
    return row


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the tet meshers): on a shared machine
    the wall time says more about the other jobs than about the mesher."""
    import resource

    return time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def run_case(case: SweepCase, edge_mm: float, *, time_limit_s: float) -> dict:
    """Mesh ``case`` at ``edge_mm`` in a child process (OMP_NUM_THREADS=1); a crash is a failed row."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="cardiotwin-sweep-") as tmp:
        out = Path(tmp) / "row.json"
        script = ("import json, sys; from cardiotwin.bench.mesh_sweep import _run_one; "
                  "json.dump(_run_one(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])), open(sys.argv[4], 'w'))")
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", script, json.dumps(case.__dict__), str(edge_mm),
                                   str(time_limit_s), str(out)], env=env, capture_output=True, text=True,
                                  timeout=time_limit_s + 300, check=False)
        except subprocess.TimeoutExpired:
            return {"case": case.name, "edge_mm": edge_mm, "error": "child did not finish", "time_s": time.perf_counter() - t}
        if not out.is_file():
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            return {"case": case.name, "edge_mm": edge_mm, "error": f"exit {proc.returncode}: {tail}",
                    "time_s": time.perf_counter() - t}
        return json.loads(out.read_text())


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
    import hashlib

    h = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "meshing").glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def default_rows_path(*, quick: bool) -> Path:
    """Where `cardiotwin bench mesh` keeps the sweep's rows, so an interrupted sweep resumes."""
    return Path(tempfile.gettempdir()) / f"cardiotwin-mesh-sweep-{'quick' if quick else 'full'}.jsonl"


def sweep(*, quick: bool, rows_path: Path | None = None, time_limit_s: float = 600.0,
          run_missing: bool = True) -> list[dict]:
    """Run the sweep; rows are appended to ``rows_path`` (JSON lines) as they come, and a case/edge
    already there from the same mesher code (``mesher_fingerprint``) is not run again. With
    ``run_missing`` False only the rows already there are returned, the others as ``not_run``."""
    code = mesher_fingerprint()
    done: dict[tuple[str, float], dict] = {}
    if rows_path is not None and rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("code") == code:
                    done[(r["case"], float(r["edge_mm"]))] = r
    rows = []
    for edge in sorted(EDGES_MM, reverse=True):  # every case at the coarse edge first
        for case in sweep_cases(quick=quick):
            row = done.get((case.name, edge))
            if row is None and not run_missing:
                row = {"case": case.name, "edge_mm": edge, "not_run": True}
            elif row is None:
                row = {**run_case(case, edge, time_limit_s=time_limit_s), "code": code}
                log.info("sweep: %s at %g mm: %s", case.name, edge, row.get("error") or f"{row['time_s']:.1f} s")
                if rows_path is not None:
                    with rows_path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


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
    if not_run:
        lines += ["", f"Not run ({len(not_run)}): " + "; ".join(f"{r['case']} at {r['edge_mm']:g} mm" for r in not_run)]
    return lines
