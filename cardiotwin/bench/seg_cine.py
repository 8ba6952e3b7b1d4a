"""Cine MRI part of `cardiotwin bench seg`: the fixed ACDC validation split, orientation robustness and cine speed.

- ACDC (``../shared/data/acdc``, CC BY-NC-SA 4.0): the 20 validation patients of
  ``configs/acdc_split.json`` (4 per pathology group, fixed before any training, never trained on),
  ED and ES. Dice and HD95 (3D, mm, on the nominal 1.5625 x 1.5625 x 10 mm grid) of LV blood pool,
  LV myocardium and RV blood pool, mean and per group; LV and RV ejection fraction from the
  predicted ED and ES blood pools against the expert's (exact despite the nominal spacing).
- The same stacks with a random rotation written into the header (the voxels unchanged): a
  segmenter that does not depend on the header gives the same scores.
- Speed: one frame, and every frame of a 20-frame 4D cine (``cine.segment_cine``), fresh process.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from cardiotwin.anatomy import LABEL_NAMES
from cardiotwin.bench import sources_fingerprint
from cardiotwin.errors import StageError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SPLIT_FILE = REPO / "configs" / "acdc_split.json"
ACDC = REPO.parent / "shared" / "data" / "acdc"
STRUCTURES = {1: "LV blood", 2: "LV myo", 3: "RV blood"}
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")

_TIMING_SCRIPT = """
import json, sys, time, tempfile
from pathlib import Path
import numpy as np, SimpleITK as sitk, torch
from cardiotwin.segmentation.bundle import load_bundle
from cardiotwin.segmentation.cine import segment_cine
from cardiotwin.segmentation.inference import segment
model = load_bundle(sys.argv[1])
ed = sitk.ReadImage(sys.argv[2]); es = sitk.ReadImage(sys.argv[3])
frames = [ed if abs(t - 10) > 5 else es for t in range(20)]
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    t0 = time.perf_counter()
    res = segment_cine(path, lambda scan: segment(scan, model))
    total = time.perf_counter() - t0
print(json.dumps({"total_s": total, "per_frame_s": res.seconds, "ed": res.ed_frame, "es": res.es_frame,
                  "threads": torch.get_num_threads(), "shape": list(ed.GetSize())}))
"""


def load_split(path: Path = SPLIT_FILE) -> dict:
    return json.loads(Path(path).read_text())


def random_rotation(seed: int) -> np.ndarray:
    """A uniformly random proper rotation matrix (QR of a Gaussian matrix), deterministic in ``seed``."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


def _ef(ed: float, es: float) -> float:
    return (ed - es) / ed if ed > 0 else float("nan")


def scores_fingerprint(model) -> str:
    """sha256 (16 hex digits) of what a stack's scores depend on: the bundle's weights and inference.json and the
    segmentation package's sources."""
    return sources_fingerprint("segmentation", seed=model.metadata["weights"]["sha256"].encode(),
                               extra=(model.root / "inference.json",))


def default_rows_dir() -> Path:
    """Where the ACDC scores are kept, one JSON file per stack in a folder per ``scores_fingerprint``, so a slow
    model's split (the default's pose search: about 2 min a stack here) is measured in pieces."""
    return REPO / ".cache" / "bench-seg-acdc"


def _row_from_json(text: str) -> dict:
    """A kept row; ValueError when the file is not one (damaged or edited by hand)."""
    row = json.loads(text)
    if not isinstance(row, dict) or not isinstance(row.get("patient"), str):
        raise ValueError("not a benchmark row")
    for key in ("dice", "hd95", "ml"):
        if key in row:
            row[key] = {int(k): (tuple(v) if isinstance(v, list) else v) for k, v in row[key].items()}
    return row


def acdc_scores(model, patients: dict[str, str], *, rotate: bool = False, rows_dir: Path | None = None) -> list[dict]:
    """Per patient and phase: Dice, HD95 per structure and blood pool volumes (pred, ref); ``rotate``: header
    rotated (a random rotation seeded by the patient number). Each stack's row is written to ``rows_dir`` /
    ``scores_fingerprint(model)`` as it is measured and read from there when present (a stopped run loses
    nothing; another model, inference setting or segmentation code measures afresh)."""
    from cardiotwin.io.atomic import write_text_atomic
    from cardiotwin.io.scans import read_labels, read_scan
    from cardiotwin.segmentation.inference import segment
    from cardiotwin.segmentation.qc import compare
    from cardiotwin.types import LabelMap

    folder = (rows_dir or default_rows_dir()) / scores_fingerprint(model)
    rows = []
    for pid, group in sorted(patients.items()):
        for phase in ("ed", "es"):
            cached = folder / f"{pid}_{phase}{'_rotated' if rotate else ''}.json"
            if cached.is_file():
                try:
                    rows.append(_row_from_json(cached.read_text()))
                    continue
                except (ValueError, AttributeError) as exc:  # damaged by hand (rows are written atomically)
                    log.warning("%s: unreadable benchmark row (%s); measuring the stack again", cached, exc)
            scan = read_scan(ACDC / pid / f"{phase}_image.nii.gz", modality="MR")
            ref = read_labels(ACDC / pid / f"{phase}_labels.nii.gz")
            if rotate:
                seed = 1000 + int("".join(c for c in pid if c.isdigit()) or 0)
                geo = replace(scan.geometry, direction=tuple(float(v) for v in random_rotation(seed).ravel()))
                scan = replace(scan, geometry=geo)
            row = {"patient": pid, "group": group, "phase": phase}
            try:
                pred = segment(scan, model).labels
            except StageError as exc:
                row["error"] = str(exc)
            else:
                m = compare(LabelMap(labels=pred, geometry=ref.geometry), ref, labels=tuple(STRUCTURES))
                row["dice"] = {k: m.get(LABEL_NAMES[k], {}).get("dice", 0.0) for k in STRUCTURES}
                row["hd95"] = {k: m.get(LABEL_NAMES[k], {}).get("hd95_mm", float("inf")) for k in STRUCTURES}
                v = ref.geometry.voxel_volume_ml
                row["ml"] = {k: (float((pred == k).sum()) * v, float((ref.labels == k).sum()) * v) for k in (1, 3)}
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cached, json.dumps(row))
            rows.append(row)
    return rows


def ef_errors(rows: list[dict]) -> list[dict]:
    """Per patient: LV and RV EF predicted and expert, and the absolute errors."""
    by = {}
    for r in rows:
        by.setdefault(r["patient"], {})[r["phase"]] = r
    out = []
    for pid, ph in sorted(by.items()):
        if "ml" not in ph.get("ed", {}) or "ml" not in ph.get("es", {}):
            out.append({"patient": pid, "group": ph.get("ed", ph.get("es"))["group"], "error": "a phase failed"})
            continue
        rec = {"patient": pid, "group": ph["ed"]["group"]}
        for k, name in ((1, "lv"), (3, "rv")):
            pred = _ef(ph["ed"]["ml"][k][0], ph["es"]["ml"][k][0])
            ref = _ef(ph["ed"]["ml"][k][1], ph["es"]["ml"][k][1])
            rec[f"{name}_ef"] = (pred, ref)
            rec[f"{name}_ef_abs_err"] = abs(pred - ref)
        out.append(rec)
    return out


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Mean Dice / HD95 per structure over all stacks and per group (a failed stack counts as Dice 0), EF errors."""
    def block(sel: list[dict]) -> dict:
        return {"n": len(sel), "failed": sum("error" in r for r in sel),
                "dice": {k: _mean([r["dice"][k] if "dice" in r else 0.0 for r in sel]) for k in STRUCTURES},
                "hd95": {k: _mean([r["hd95"][k] for r in sel if "hd95" in r]) for k in STRUCTURES}}

    efs = ef_errors(rows)
    ok = [e for e in efs if "error" not in e]
    return {"all": block(rows), "groups": {g: block([r for r in rows if r["group"] == g]) for g in GROUPS},
            "ef": efs,
            "lv_ef_abs_err_median": float(np.median([e["lv_ef_abs_err"] for e in ok])) if ok else float("nan"),
            "rv_ef_abs_err_median": float(np.median([e["rv_ef_abs_err"] for e in ok])) if ok else float("nan"),
            "lv_ef_abs_err_mean": _mean([e["lv_ef_abs_err"] for e in ok]),
            "rv_ef_abs_err_mean": _mean([e["rv_ef_abs_err"] for e in ok])}


def _f(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{x:.{nd}f}"


def acdc_section(model, *, quick: bool, rotated: bool = True) -> list[str]:
    """Markdown: ACDC validation split scores, with the header as stored (identity) and (``rotated``) randomly
    rotated. quick: one patient per group."""
    split = load_split()
    patients = split["validation"]
    if quick:  # one patient per group
        firsts = {}
        for pid, g in sorted(patients.items()):
            firsts.setdefault(g, pid)
        patients = {pid: patients[pid] for pid in firsts.values()}
    as_is = summarise(acdc_scores(model, patients))
    rot = summarise(acdc_scores(model, patients, rotate=True)) if rotated else None
    lines = ["### ACDC cine MRI, fixed validation split (real, expert labels; CC BY-NC-SA 4.0 data)", "",
             f"{len(patients)} patients (`configs/acdc_split.json`, 4 per pathology group, chosen before any training "
             "and never trained on or used to pick checkpoints), ED and ES. Dice and HD95 (3D, mm, nominal "
             "1.5625 x 1.5625 x 10 mm grid) per structure; a failed stack counts as Dice 0. Headers as stored "
             "(identity direction), and with a random rotation written into the header (voxels unchanged). Each stack's "
             "row is kept in `.cache/bench-seg-acdc/<fingerprint of weights, inference.json and segmentation code>/` "
             "and reused while those are unchanged.", "",
             "| stacks | header | n | LV blood Dice | LV myo Dice | RV blood Dice | LV blood HD95 | LV myo HD95 "
             "| RV blood HD95 | failed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, res in (("as stored", as_is), ("random rotation", rot)):
        if res is None:
            continue
        for name, b in [("all", res["all"])] + [(g, res["groups"][g]) for g in GROUPS]:
            if b["n"] == 0 or (label != "as stored" and name != "all"):
                continue
            bold = "**" if name == "all" else ""
            lines.append(f"| {bold}{name}{bold} | {label} | {b['n']} | "
                         + " | ".join(f"{bold}{_f(b['dice'][k])}{bold}" for k in STRUCTURES) + " | "
                         + " | ".join(_f(b["hd95"][k], 1) for k in STRUCTURES) + f" | {b['failed']} |")
    lines += ["", f"Ejection fraction from the predicted vs the expert ED and ES blood pools (headers as stored): "
              f"LV median |error| **{_f(as_is['lv_ef_abs_err_median'])}** (mean {_f(as_is['lv_ef_abs_err_mean'])}), "
              f"RV median |error| **{_f(as_is['rv_ef_abs_err_median'])}** (mean {_f(as_is['rv_ef_abs_err_mean'])})"
              + (f"; with the rotated headers LV {_f(rot['lv_ef_abs_err_median'])}, RV "
                 f"{_f(rot['rv_ef_abs_err_median'])}" if rot else "") + ".", "",
              "| patient | group | LV EF pred / expert | RV EF pred / expert |", "|---|---|---|---|"]
    for e in as_is["ef"]:
        if "error" in e:
            lines.append(f"| {e['patient']} | {e['group']} | {e['error']} | |")
        else:
            lines.append(f"| {e['patient']} | {e['group']} | {_f(e['lv_ef'][0], 2)} / {_f(e['lv_ef'][1], 2)} "
                         f"| {_f(e['rv_ef'][0], 2)} / {_f(e['rv_ef'][1], 2)} |")
    lines += ["", "Targets (research bundle): LV blood >= 0.93, LV myocardium >= 0.86, RV blood >= 0.88 mean Dice, "
              "median |LV EF error| <= 0.04. The permissive default: LV myocardium >= 0.70 is the aim.", ""]
    return lines


def cine_timing(bundle_root: Path, patient: str = "patient001") -> dict:
    """Fresh process: segment a 20-frame 4D NIfTI made of an ACDC patient's ED (frames 0-4, 16-19) and ES stacks."""
    args = [sys.executable, "-c", _TIMING_SCRIPT, str(bundle_root), str(ACDC / patient / "ed_image.nii.gz"),
            str(ACDC / patient / "es_image.nii.gz")]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing_section(bundle_root: Path) -> list[str]:
    t = cine_timing(bundle_root)
    per = t["per_frame_s"]
    return ["### Cine inference time (20-frame 4D NIfTI from ACDC patient001 ED / ES, fresh process, CPU)", "",
            f"- all 20 frames {t['total_s']:.1f} s including reading (target <= 90 s); per frame median "
            f"{float(np.median(per)):.2f} s, max {max(per):.2f} s, first {per[0]:.2f} s (target <= 5 s); "
            f"{t['threads']} torch thread(s); stack {t['shape']} voxels",
            f"- frames picked: ED {t['ed']}, ES {t['es']} (ED stack in frames 0-4 and 16-19, ES in 5-15)", ""]


def run_stack_bench(bundle, *, quick: bool, command: str, sunnybrook, t0: float) -> str:
    """Markdown section of `bench seg` for a short-axis stack bundle: cine speed, ACDC split, Sunnybrook."""
    import time

    from cardiotwin.machine import machine_description
    from cardiotwin.segmentation.bundle import model_record

    rec = model_record(bundle)
    lines = [f"## Segmentation, short-axis cine bundle (`{command}`)", "",
             f"Model `{bundle.name}` (`models/{bundle.root.name}`, version {rec['version']}, weights sha256 "
             f"{rec['weights_sha256'][:12]}...), licence **{rec['licence']}**: {rec['use']}, never the default. "
             f"Machine: {machine_description()}.", ""]
    if ACDC.is_dir():
        lines += timing_section(bundle.root)
        lines += acdc_section(bundle, quick=quick)
    if (ACDC.parent / "sunnybrook").is_dir():
        lines += sunnybrook(bundle)
        lines += ["Sunnybrook target for this bundle: LV myocardium >= 0.75 (never trained on).", ""]
    lines.append(f"Total benchmark time {time.perf_counter() - t0:.0f} s.")
    return "\n".join(lines)
