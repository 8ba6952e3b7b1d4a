"""Acute haemodynamic response of the best protocols: one electromechanical beat each.

The activation map of a protocol (ms from QRS onset) drives ``mechanics.simulate_beat`` (active
stress + 0D circulation) on the twin's mesh. Response = change of LV dP/dt max vs the baseline
(LBBB) beat; a responder gains >= 10 % (acute haemodynamic response threshold used by Auricchio
et al., Circulation 1999;99:2993 and the CRT simulation studies of Lee et al. 2019). Each beat is
an idempotent task: its metrics JSON carries a digest of mesh, activation map and config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.errors import BeatDiverged, StageError
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.therapy.ranking import RESPONDER_DPDT_PCT
from cardiotwin.therapy.sweep import read_task_result

log = logging.getLogger(__name__)

EM_UQ_KEYS = ("dpdt_change_pct", "stroke_volume_ml", "ejection_fraction", "stroke_work_mj")
BASELINE_EM_KEYS = ("dpdt_max_kpa_per_ms", "stroke_volume_ml", "ejection_fraction", "stroke_work_mj")


def beat_digest(mesh_sha256: str, activation_times_ms: np.ndarray, em_config: dict[str, Any]) -> str:
    """Identity of a beat task: mesh, activation map and the RESOLVED electromechanics configuration
    (``em_config`` with every default filled in), so a changed code default invalidates stored beats
    (hashing the recipe's mapping as written once reused a beat computed with an old twitch peak)."""
    from cardiotwin.config import config_to_dict, load_config
    from cardiotwin.mechanics.electromechanics import EMConfig

    resolved = config_to_dict(load_config(EMConfig, em_config, source="crt.electromechanics"))
    h = hashlib.sha256()
    h.update(mesh_sha256.encode())
    h.update(np.ascontiguousarray(np.round(activation_times_ms, 6), dtype=np.float64).tobytes())
    h.update(json.dumps(resolved, sort_keys=True, default=str).encode())
    return h.hexdigest()


def run_beat_task(
    name: str,
    activation_times_ms: np.ndarray,
    *,
    mesh_path: str,
    mesh_sha256: str,
    em_config: dict[str, Any],
    work_dir: str,
    on_step: Callable[[float, float], None] | None = None,
    ranks: int | str | None = 1,
) -> dict[str, Any]:
    """Simulate (or reuse) one beat; writes ``work_dir/em_<name>.json`` and ``em_<name>/`` outputs.
    A beat whose mechanics or coupling diverges returns ``{"error": message, "failed_at_ms": time of
    the failed step or None}`` and stores nothing.
    While it runs, the simulated time goes to ``on_step(t_ms, end_ms)``, or (None, e.g. on a Dask
    worker, and always on several ranks) to ``work_dir/em_<name>.progress`` (``progress_path``) for
    the client to show.

    activation_times_ms: (N,) per mesh point, ms from QRS onset (non-finite values, i.e. scar
    core, are set to the latest finite time: those points never contract actively in a useful way,
    and the twitch model needs a number).
    ranks: MPI ranks of the beat (``mechanics.ranks.resolve_ranks``: an integer, "auto" or None for
    the machine's default); more than 1 runs it in a child ``mpiexec`` (1 rank when that cannot
    start and the count was not explicit). Beats of the twin with the same passive mechanics share the
    end-diastolic inflation, one snapshot per rank count.
    """
    from mpi4py import MPI  # noqa: I001 - before dolfinx

    from cardiotwin.config import load_config
    from cardiotwin.io.meshes import read_mesh
    from cardiotwin.mechanics.electromechanics import EMConfig, passive_digest, simulate_beat
    from cardiotwin.mechanics.outputs import beat_inputs_from_mesh, result_to_dict, write_outputs
    from cardiotwin.mechanics.ranks import BeatJob, progress_writer, resolve_ranks, run_beat

    out = Path(work_dir) / f"em_{name}.json"
    digest = beat_digest(mesh_sha256, activation_times_ms, em_config)
    done = read_task_result(out, digest)
    if done is not None:
        return done
    t0 = time.perf_counter()
    cfg = load_config(EMConfig, em_config, source="crt.electromechanics")
    n_ranks, explicit = resolve_ranks(ranks)
    end_diastole = Path(work_dir) / f"em_end_diastole_{passive_digest(mesh_sha256, cfg)[:16]}.npz"
    progress = progress_path(work_dir, name)
    mesh = read_mesh(mesh_path) if n_ranks == 1 else None
    try:
        result = None
        if n_ranks > 1:
            job = BeatJob(cfg=cfg, out_dir=None, mesh_file=Path(mesh_path),
                          activation_ms=np.asarray(activation_times_ms, dtype=float), end_diastole=end_diastole,
                          progress=progress)
            result = run_beat(job, n_ranks, explicit=explicit)
        if result is None:
            inputs = beat_inputs_from_mesh(mesh or read_mesh(mesh_path), activation_times_ms, MPI.COMM_SELF,
                                           source=str(mesh_path))
            result = simulate_beat(inputs, cfg, out_dir=None, end_diastole=end_diastole,
                                   on_step=on_step or progress_writer(progress))
    except StageError as exc:  # a diverged beat is reported, not stored: a rerun tries again
        log.warning("electromechanics of %s failed: %s", name, exc)
        return {"name": name, "digest": digest, "error": str(exc), "seconds": round(time.perf_counter() - t0, 2),
                "failed_at_ms": exc.time_ms if isinstance(exc, BeatDiverged) else None}
    finally:
        progress.unlink(missing_ok=True)
    write_outputs(result, Path(work_dir) / f"em_{name}")
    data = {"name": name, "digest": digest, "seconds": round(time.perf_counter() - t0, 2),
            "result": result_to_dict(result)}
    write_json_atomic(out, data)
    return data


def progress_path(work_dir: str | Path, name: str) -> Path:
    """Where a running beat task writes its simulated time: ``{"t_ms", "end_ms"}``."""
    return Path(work_dir) / f"em_{name}.progress"


def read_progress(work_dir: str | Path, name: str) -> tuple[float, float] | None:
    """(simulated time, beat end) in ms of a running beat task, None before its first step."""
    try:
        d = json.loads(progress_path(work_dir, name).read_text())
        return float(d["t_ms"]), float(d["end_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def scale_stiffness(em_config: dict[str, Any], factor: float) -> dict[str, Any]:
    """``em_config`` (EMConfig keys) with the active material's stress-scale parameters times
    ``factor``: Guccione ``C``, or Holzapfel-Ogden ``a``, ``a_f``, ``a_s``, ``a_fs`` (exponents kept,
    so passive stress scales linearly at a given strain). Other keys are kept as given."""
    import dataclasses

    from cardiotwin.config import config_to_dict, load_config
    from cardiotwin.mechanics.electromechanics import EMConfig

    if not factor > 0:
        raise ValueError(f"stiffness factor must be > 0, got {factor}")
    cfg = load_config(EMConfig, em_config, source="crt.electromechanics")
    out = dict(em_config)
    if cfg.material == "guccione":
        out["guccione"] = config_to_dict(dataclasses.replace(cfg.guccione, C=cfg.guccione.C * factor))
    else:
        ho = cfg.holzapfel_ogden
        out["holzapfel_ogden"] = config_to_dict(dataclasses.replace(
            ho, a=ho.a * factor, a_f=ho.a_f * factor, a_s=ho.a_s * factor, a_fs=ho.a_fs * factor))
    return out


def lv_beat_metrics(beat: dict[str, Any]) -> dict[str, float]:
    """LV dP/dt max (kPa/ms), SV (mL), stroke work (mJ), EF of a stored beat, plus the p-V curves."""
    r = beat["result"]

    def lv(key: str) -> float:
        v = r[key]
        return float(v["LV"] if isinstance(v, dict) else v)

    return {"dpdt_max_kpa_per_ms": lv("dpdt_max_kpa_per_ms"), "stroke_volume_ml": lv("stroke_volume_ml"),
            "stroke_work_mj": lv("stroke_work_mj"), "ejection_fraction": lv("ejection_fraction")}


def haemodynamic_response(paced: dict[str, float], baseline: dict[str, float]) -> dict[str, float | bool]:
    """dpdt_change_pct (vs baseline), responder (>= 10 %), and the paced LV metrics."""
    b = baseline["dpdt_max_kpa_per_ms"]
    change = 100.0 * (paced["dpdt_max_kpa_per_ms"] - b) / b if b > 0 else float("nan")
    return {**paced, "dpdt_change_pct": change, "responder": bool(change >= RESPONDER_DPDT_PCT)}


def stiffness_response_uq(sample_beats: Sequence[dict[str, dict[str, Any]]], names: Sequence[str]) -> dict[str, Any]:
    """Intervals of the electromechanical metrics over stiffness samples.

    sample_beats: one mapping per stiffness sample, beat name -> stored beat (or ``{"error": ...}``),
    holding "baseline" and every name in ``names``. A protocol's response in a sample is taken
    against the baseline beat of the same sample; samples where either beat failed are left out.

    Returns ``{"candidates": {name: {"stiffness_samples": n, "<key>_ci95": [lo, hi] for EM_UQ_KEYS,
    "responder_probability": fraction}}, "baseline": {"<key>_ci95": ...}, "failures": {beat: error}}``
    (central 95 % percentile intervals; with 2 samples they span nearly the sampled range).
    """
    from cardiotwin.therapy.uq import interval

    failures = {f"{n}__stiffness{j:02d}": b["error"] for j, per in enumerate(sample_beats, start=1)
                for n, b in per.items() if "error" in b}
    base = [lv_beat_metrics(per["baseline"]) if "error" not in per["baseline"] else None for per in sample_beats]
    ok_base = [b for b in base if b is not None]
    out: dict[str, Any] = {"baseline": {"stiffness_samples": len(ok_base),
                                        **{f"{k}_ci95": list(interval([b[k] for b in ok_base])) for k in BASELINE_EM_KEYS}},
                           "candidates": {}, "failures": failures}
    for name in names:
        responses = [haemodynamic_response(lv_beat_metrics(per[name]), b) for per, b in zip(sample_beats, base)
                     if b is not None and "error" not in per[name]]
        entry: dict[str, Any] = {"stiffness_samples": len(responses)}
        entry.update({f"{k}_ci95": list(interval([float(r[k]) for r in responses])) for k in EM_UQ_KEYS})
        entry["responder_probability"] = (sum(bool(r["responder"]) for r in responses) / len(responses)
                                          if responses else float("nan"))
        out["candidates"][name] = entry
    return out
