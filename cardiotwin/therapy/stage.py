"""The ``crt`` stage: HeartMesh (with fibres, UVC, AHA) -> TherapyResult.

Steps: candidate sites -> phase 1 (baseline + every site at the nominal timing, for the nominal
inputs and every quasi-Monte Carlo sample) -> nominal ranking -> phase 2 (AV x VV grid for the
best LV sites, nominal inputs; then the best timing of each of those sites for every QMC sample)
-> ranking with TARGET concordance and uncertainty (lead sites and timing winners alike) ->
electromechanics of the baseline and of the best protocol at each of the best ``em_top_k`` LV
sites, at nominal stiffness and at each stiffness sample -> TherapyResult.
All solves are idempotent tasks (``sweep``, ``response``) run on the given Dask client.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiotwin.io.atomic import sha256_file
from cardiotwin.progress import progress
from cardiotwin.therapy import uq
from cardiotwin.therapy.candidates import CandidateConfig, candidate_sites
from cardiotwin.therapy.conduction import ActivationSolver, ConductionConfig
from cardiotwin.therapy.metrics import change_vs_baseline
from cardiotwin.therapy.protocols import ProtocolConfig, baseline_protocol, site_protocols, timing_protocols
from cardiotwin.therapy.ranking import (
    RankingRule,
    concordance,
    disagreement,
    exclusion_reason,
    latest_segment,
    rank_key,
    rank_order,
)
from cardiotwin.therapy.response import (
    beat_digest,
    haemodynamic_response,
    lv_beat_metrics,
    read_progress,
    run_beat_task,
    scale_stiffness,
    stiffness_response_uq,
)
from cardiotwin.therapy.outputs import clinical_label
from cardiotwin.therapy.sweep import SweepTask, run_sweep, solve_protocol
from cardiotwin.types import CandidateResult, HeartMesh, LeadSite, PacingProtocol, TherapyResult

if TYPE_CHECKING:
    from distributed import Client

    from cardiotwin.cases import Case

log = logging.getLogger(__name__)

LARGE_MESH_POINTS = 20_000

METRIC_KEYS = ("tat_ms", "lvat_ms", "t90_ms", "tat_change_pct", "lvat_change_pct", "t90_change_pct")


@dataclass(frozen=True)
class CRTConfig:
    """Configuration of the virtual CRT stage. ``electromechanics``: EMConfig keys (units as
    strings) for the beats of the best ``em_top_k`` protocols; ``em_top_k`` 0 skips them;
    ``ranking``: the rule that orders the protocols (``therapy.ranking.RankingRule``)."""

    conduction: ConductionConfig = ConductionConfig()
    candidates: CandidateConfig = CandidateConfig()
    protocols: ProtocolConfig = ProtocolConfig()
    uq: uq.UQConfig = uq.UQConfig()
    em_top_k: int = 3
    electromechanics: dict[str, Any] = field(default_factory=lambda: {"dt": "20 ms", "beat_duration": "600 ms"})
    ranking: RankingRule = RankingRule()

    def validate(self) -> None:
        self.ranking.validate()
        self.conduction.validate()
        self.candidates.validate()
        self.protocols.validate()
        self.uq.validate()
        if self.em_top_k < 0:
            raise ValueError("em_top_k must be >= 0")


@dataclass
class StageTimer:
    """Wall time of each step (s), in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(now - t0, 3)
        return now


def _metrics_with_change(raw: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    out = {k: raw[k] for k in ("tat_ms", "lvat_ms", "t90_ms", "unreached_fraction")}
    out.update(change_vs_baseline(raw, baseline))
    return out


def run_crt(
    mesh: HeartMesh,
    *,
    mesh_path: Path,
    cfg: CRTConfig,
    work_dir: Path,
    solver: ActivationSolver,
    client: "Client | None" = None,
    qrs: Callable[[HeartMesh, np.ndarray], float | None] | None = None,
    em_mesh_path: Path | None = None,
    ecg: Callable[[HeartMesh, np.ndarray], dict[str, Any] | None] | None = None,
) -> tuple[TherapyResult, dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Run the virtual CRT study on ``mesh`` (read from ``mesh_path``; tasks reload it there).
    The electromechanical beats run on ``em_mesh_path`` (the same mesh on another reference
    geometry, e.g. the calibrated unloaded one) when given.

    Returns (result, activation maps in ms from QRS onset of "baseline" and the best protocols,
    electromechanical beats by protocol name). ``qrs`` maps an activation map to a QRS duration
    (ms) from a pseudo-ECG; None leaves ``qrs_ms`` empty. ``ecg`` (instead of ``qrs``) maps it to the
    pseudo-ECG (``therapy.solver.paced_ecg``): its leads are kept in ``result.ecgs``, its QRS duration
    is ``qrs_ms``.
    """
    cfg.validate()
    timer = StageTimer()
    t = time.perf_counter()
    mesh_sha = sha256_file(mesh_path)
    if mesh.n_points > LARGE_MESH_POINTS:
        log.warning("%s: %d points; every sweep task solves the eikonal on all of them (about 2 s per 3k points "
                    "on one core here), and each electromechanical beat scales worse: consider a coarser mesh",
                    mesh_path, mesh.n_points)
    rv, lv_sites, scar = candidate_sites(mesh, cfg.candidates)
    design = uq.design(cfg.uq)
    conductions = [cfg.conduction] + [uq.sample_conduction(cfg.conduction, row, cfg.uq) for row in design]
    phase1 = [baseline_protocol(), *site_protocols(rv, lv_sites, cfg.protocols)]
    t = timer.add("candidates", t)

    tasks = [SweepTask(sample=s, conduction=c, protocol=p) for s, c in enumerate(conductions) for p in phase1]
    sweep = dict(mesh_path=mesh_path, mesh_sha256=mesh_sha, work_dir=work_dir, solver=solver, client=client)
    res = _sweep(tasks, sweep, "activation sweep: lead sites")
    t = timer.add("sweep_sites", t)
    table: dict[int, dict[str, dict[str, Any]]] = {}
    for r in res.values():
        table.setdefault(r["sample"], {})[r["protocol"]] = r["metrics"]

    base0 = table[0]["baseline"]
    seg_times = {int(k): v for k, v in base0["segment_ms"].items()}
    latest = latest_segment(seg_times, exclude=scar)

    def evaluate(protocol: PacingProtocol, raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
        metrics = _metrics_with_change(raw, base0)
        metrics["captured"] = all(raw["captured"].values()) if raw["captured"] else False
        return metrics, exclusion_reason(protocol, raw["captured"], scar)

    nominal: dict[str, tuple[PacingProtocol, dict[str, Any], str]] = {}
    for p in phase1[1:]:
        m, why = evaluate(p, table[0][p.name])
        nominal[p.name] = (p, m, why)

    # phase 2: timing grid for the best LV sites (nominal inputs)
    ordered = sorted(nominal.values(), key=lambda v: rank_key(v[0].name, v[1], v[2]))
    top_sites = [p.lv_site for p, _, why in ordered if not why and p.lv_site is not None][: cfg.protocols.timing_top_k]
    phase2 = timing_protocols(rv, top_sites, cfg.protocols)
    if phase2:
        res2 = _sweep([SweepTask(sample=0, conduction=cfg.conduction, protocol=p) for p in phase2], sweep,
                      "activation sweep: AV/VV timings")
        for p in phase2:
            table[0][p.name] = res2[f"s000_{p.name}"]["metrics"]
            m, why = evaluate(p, table[0][p.name])
            nominal[p.name] = (p, m, why)
    t = timer.add("sweep_timing", t)

    # the timing winner of each top site gets the QMC samples too, so the protocols the ranking puts
    # first carry P(best) and intervals like the lead sites
    winners = timing_winners(top_sites, phase2, nominal)
    if winners and len(conductions) > 1:
        res3 = _sweep([SweepTask(sample=s, conduction=c, protocol=p) for s, c in enumerate(conductions)
                       if s > 0 for p in winners], sweep, "activation sweep: uncertainty of the best timings")
        for r in res3.values():
            table[r["sample"]][r["protocol"]] = r["metrics"]
    t = timer.add("sweep_timing_uq", t)

    # uncertainty over the phase-1 protocols and the timing winners
    uq_protocols = [*phase1[1:], *winners]
    samples = sorted(s for s in table if s > 0)
    scores = {s: {name: 100.0 * (table[s][name]["tat_ms"] - table[s]["baseline"]["tat_ms"]) / table[s]["baseline"]["tat_ms"]
                  for name in table[s] if name != "baseline"} for s in samples}
    eligible = [p.name for p in uq_protocols if not nominal[p.name][2]]
    p_best = uq.probability_best(scores, eligible) if samples else {}
    uq_by_name: dict[str, dict[str, Any]] = {}
    for p in uq_protocols:
        if not samples:
            break
        entry: dict[str, Any] = {"probability_best": p_best.get(p.name, 0.0), "samples": len(samples)}
        for key in ("tat_ms", "lvat_ms", "t90_ms"):
            entry[f"{key}_ci95"] = list(uq.interval([table[s][p.name][key] for s in samples]))
        entry["tat_change_pct_ci95"] = list(uq.interval([scores[s][p.name] for s in samples]))
        uq_by_name[p.name] = entry
    sensitivity: dict[str, dict[str, float]] = {}
    ranked_names = [v[0].name for v in sorted(nominal.values(), key=lambda v: rank_key(v[0].name, v[1], v[2]))]
    best_sampled = next((n for n in ranked_names if n in eligible), None)
    if samples and best_sampled:
        x = uq.input_values(conductions[1:])
        outputs = {
            "best_tat_change_pct": np.array([scores[s][best_sampled] for s in samples]),
            "best_is_still_best": np.array([float(scores[s][best_sampled] <= min(scores[s][k] for k in eligible) + 1e-6)
                                            for s in samples]),
            "baseline_tat_ms": np.array([table[s]["baseline"]["tat_ms"] for s in samples]),
        }
        for out_name, y in outputs.items():
            sensitivity[out_name] = dict(zip(uq.INPUT_NAMES, map(float, uq.first_order_indices(x, y))))
    t = timer.add("uncertainty", t)

    # activation maps of the baseline and the best protocols (nominal; cheap to recompute)
    ranked = sorted(nominal.values(), key=lambda v: rank_key(v[0].name, v[1], v[2]))
    recommended = [v for v in ranked if not v[2]]
    # the best protocol of each of the best distinct LV sites (timings of one site give near-identical maps)
    best_per_site: list[PacingProtocol] = []
    for p, _, _ in recommended:
        if p.lv_site is not None and all(q.lv_site.name != p.lv_site.name for q in best_per_site):  # type: ignore[union-attr]
            best_per_site.append(p)
    maps: dict[str, np.ndarray] = {}
    maps["baseline"], _ = solve_protocol(mesh, baseline_protocol(), cfg.conduction, solver=solver)
    for p in best_per_site[: max(cfg.em_top_k, 1)]:
        maps[p.name], _ = solve_protocol(mesh, p, cfg.conduction, solver=solver)
    ecgs = {name: e for name, t in maps.items() if (e := ecg(mesh, t)) is not None} if ecg is not None else {}

    def qrs_of(name: str) -> float | None:
        if ecg is not None:
            return ecgs[name]["qrs_ms"] if name in ecgs else None
        return qrs(mesh, maps[name]) if qrs is not None and name in maps else None

    base_qrs = qrs_of("baseline")
    t = timer.add("activation_maps", t)

    beats: dict[str, dict[str, Any]] = {}
    sample_beats: list[dict[str, dict[str, Any]]] = []
    em_uq: dict[str, Any] = {}
    if cfg.em_top_k > 0:
        names = ["baseline"] + [p.name for p in best_per_site[: cfg.em_top_k]]
        factors = uq.stiffness_factors(cfg.uq)
        # nominal beats first, then (1 + em_top_k) beats per stiffness sample, all in one batch
        jobs = {n: (n, cfg.electromechanics) for n in names}
        for j, factor in enumerate(factors, start=1):
            scaled = scale_stiffness(cfg.electromechanics, float(factor))
            jobs.update({f"{n}__stiffness{j:02d}": (n, scaled) for n in names})
        em_path = em_mesh_path or mesh_path
        labels = {p.name: clinical_label(p) for p in best_per_site} | {"baseline": "intrinsic rhythm"}
        done = run_beats(jobs, maps, mesh_path=em_path, mesh_sha256=sha256_file(em_path), work_dir=work_dir,
                         client=client, labels=labels)
        beats = {n: done[n] for n in names}
        sample_beats = [{n: done[f"{n}__stiffness{j:02d}"] for n in names} for j in range(1, len(factors) + 1)]
        if len(factors):
            em_uq = stiffness_response_uq(sample_beats, names[1:])
            em_uq["stiffness_factors"] = [float(f) for f in factors]
            em_uq["stiffness_rel"] = cfg.uq.stiffness_rel
    t = timer.add("electromechanics", t)

    failed = {n: b["error"] for n, b in beats.items() if "error" in b}
    beats = {n: b for n, b in beats.items() if "error" not in b}
    base_em = lv_beat_metrics(beats["baseline"]) if "baseline" in beats else None
    em_by_name: dict[str, dict[str, Any]] = em_uq.pop("candidates", {})
    entries = []
    for p, m, why in ranked:
        metrics: dict[str, Any] = dict(m)
        metrics["qrs_ms"] = qrs_of(p.name)
        if base_em is not None and p.name in beats:
            metrics.update(haemodynamic_response(lv_beat_metrics(beats[p.name]), base_em))
        elif p.name in failed or (p.name in maps and "baseline" in failed):
            metrics["em_error"] = failed.get(p.name) or f"baseline beat failed: {failed['baseline']}"
        entries.append((p, metrics, why, {**uq_by_name.get(p.name, {}), **em_by_name.get(p.name, {})}))
    keyed = [(p.name, metrics, u, why) for p, metrics, why, u in entries]
    order = rank_order(cfg.ranking, keyed)
    candidates = []
    for rank, i in enumerate(order, start=1):
        p, metrics, why, u = entries[i]
        conc = concordance(p.lv_site.aha_segment, latest) if p.lv_site is not None else ""
        candidates.append(CandidateResult(protocol=p, rank=rank, recommended=not why, excluded_reason=why,
                                          metrics=metrics, concordance=conc, uq=u))
    baseline_metrics: dict[str, Any] = {k: base0[k] for k in ("tat_ms", "lvat_ms", "t90_ms", "unreached_fraction")}
    baseline_metrics["qrs_ms"] = base_qrs
    if base_em is not None:
        baseline_metrics.update(base_em)
    result = TherapyResult(
        baseline=baseline_metrics,
        candidates=tuple(candidates),
        latest_segment=latest,
        scar_segments=tuple(scar),
        sensitivity=sensitivity,
        ecgs=ecgs,
        metadata={"n_sites": len(lv_sites), "rv_site": dataclasses.asdict(rv), "n_samples": len(samples),
                  "n_tasks": len(tasks) + len(phase2) + len(winners) * len(samples), "segment_activation_ms": seg_times,
                  "timings_s": timer.seconds, "mesh_sha256": mesh_sha, "em_failures": failed,
                  "timing_winners": [p.name for p in winners], "em_uq": em_uq,
                  "ranking_rule": {**dataclasses.asdict(cfg.ranking), "text": cfg.ranking.describe()},
                  "ranking_disagreement": disagreement(keyed, order),
                  "uq_inputs": {n: list(map(float, col)) for n, col in zip(uq.INPUT_NAMES, uq.input_values(conductions[1:]).T)}
                  if samples else {}},
    )
    return result, maps, beats


def _sweep(tasks: list[SweepTask], kw: dict[str, Any], title: str) -> dict[str, dict[str, Any]]:
    with progress(title, len(tasks), unit="tasks") as bar:
        return run_sweep(tasks, **kw, progress=lambda done, total: bar.set_done(done))


def timing_winners(
    top_sites: list[LeadSite],
    phase2: list[PacingProtocol],
    nominal: dict[str, tuple[PacingProtocol, dict[str, Any], str]],
) -> list[PacingProtocol]:
    """The best phase-2 (AV x VV) protocol of each top LV site under the nominal inputs, in site order."""
    out = []
    for site in top_sites:
        own = [p for p in phase2 if p.lv_site is not None and p.lv_site.name == site.name]
        if own:
            out.append(min(own, key=lambda p: rank_key(p.name, nominal[p.name][1], nominal[p.name][2])))
    return out


def run_beats(
    jobs: dict[str, tuple[str, dict[str, Any]]],
    maps: dict[str, np.ndarray],
    *,
    mesh_path: Path,
    mesh_sha256: str,
    work_dir: Path,
    client: "Client | None" = None,
    labels: dict[str, str] | None = None,
    poll_s: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Run (or reuse) electromechanical beats: job name -> (activation map name, EMConfig mapping).
    Returns job name -> beat (``{"error": ...}`` for a diverged one). On Dask, one task per beat.
    Progress: beats done of all, and the simulated time of the running ones (``labels``: map name
    -> name shown)."""
    kw = dict(mesh_path=str(mesh_path), mesh_sha256=mesh_sha256, work_dir=str(work_dir))
    labels = labels or {}

    def name(job: str) -> str:
        base, _, sample = job.partition("__stiffness")
        return labels.get(base, base) + (f" (stiffness sample {int(sample)})" if sample else "")

    out: dict[str, dict[str, Any]] = {}
    with progress("electromechanics", len(jobs), unit="beats") as bar:
        if client is None:
            for job, (m, em) in jobs.items():
                def step(t: float, end: float, job: str = job) -> None:
                    bar.status(f"beat {len(out) + 1} of {len(jobs)}: {name(job)}, t = {t:.0f} / {end:.0f} ms")

                out[job] = run_beat_task(job, maps[m], em_config=em, **kw, on_step=step)
                bar.advance(detail=f"{name(job)} done")
            return out
        futs = {job: client.submit(run_beat_task, job, maps[m], em_config=em, **kw, retries=1, pure=False,
                                   key=f"crt-em-{job}-{beat_digest(mesh_sha256, maps[m], em)[:12]}")
                for job, (m, em) in jobs.items()}
        pending = dict(futs)
        while pending:
            for job in [j for j, f in pending.items() if f.done()]:
                out[job] = pending.pop(job).result()
                bar.advance(detail=f"{name(job)} {'failed' if 'error' in out[job] else 'done'}")
            running = [(job, read_progress(work_dir, job)) for job in pending]
            bar.status("; ".join(f"{name(j)} t = {p[0]:.0f} / {p[1]:.0f} ms" for j, p in running if p))
            if pending:
                time.sleep(poll_s)
    return {job: out[job] for job in jobs}


def crt_case_stage(
    case: "Case",
    *,
    cfg: CRTConfig,
    solver: ActivationSolver,
    client: "Client | None" = None,
    force: bool = False,
    qrs: Callable[[HeartMesh, np.ndarray], float | None] | None = None,
    ecg: Callable[[HeartMesh, np.ndarray], dict[str, Any] | None] | None = None,
) -> TherapyResult | None:
    """Run the ``therapy`` stage of a case whose ``fibers`` stage is done.

    Task results live in ``CASE/therapy_tasks/`` (outside the atomically replaced stage folder),
    so an interrupted stage resumes where it stopped. Returns None when the stage was unchanged.
    """
    from cardiotwin.io.meshes import read_mesh
    from cardiotwin.therapy.outputs import write_outputs

    mesh_path = case.require_stage("fibers") / "mesh.vtu"
    mesh = read_mesh(mesh_path)
    inputs: dict[str, Path] = {"mesh": mesh_path}
    calibration = calibrated_inputs(case)
    em_mesh_path = None
    if calibration is not None:
        cfg = apply_calibration(cfg, calibration["data"])
        em_mesh_path = calibration["unloaded_mesh"]
        inputs.update({"calibration": calibration["json"], "unloaded_mesh": em_mesh_path})
    with case.stage("therapy", inputs=inputs, config=cfg, force=force) as st:
        if st.skipped:
            return None
        result, maps, beats = run_crt(mesh, mesh_path=mesh_path, cfg=cfg, work_dir=case.root / "therapy_tasks",
                                      solver=solver, client=client, qrs=qrs, ecg=ecg, em_mesh_path=em_mesh_path)
        result.metadata["calibration"] = calibration_record(calibration)
        st.metrics["calibration"] = result.metadata["calibration"]
        write_outputs(result, st.dir, mesh=mesh, maps=maps, beats=beats)
        best = next((c for c in result.candidates if c.recommended), None)
        st.metrics.update({"timings_s": result.metadata["timings_s"], "n_tasks": result.metadata["n_tasks"],
                           "best": best.protocol.name if best else None,
                           "best_tat_change_pct": best.metrics["tat_change_pct"] if best else None,
                           "best_dpdt_change_pct": best.metrics.get("dpdt_change_pct") if best else None})
    return result


# EMConfig keys the calibrate stage sets; the CRT beats take them from CASE/calibrate/calibration.json
CALIBRATED_EM_KEYS = ("material", "guccione", "holzapfel_ogden", "twitch", "lv_windkessel", "rv_windkessel",
                      "lv_end_diastolic_pressure", "rv_end_diastolic_pressure", "beat_duration")
# boundary conditions of the calibrated twin (the unloaded mesh was found with them); the CRT keeps
# its own solver settings of ``mechanics``
CALIBRATED_MECHANICS_KEYS = ("epi_spring_kpa_per_mm",)


def calibrated_inputs(case: "Case") -> dict[str, Any] | None:
    """The case's calibration (``calibrate`` stage: calibration.json and the unloaded mesh), or None."""
    import json

    rec = case.stage_record("calibrate")
    path = case.stage_dir("calibrate") / "calibration.json"
    if not rec or rec.get("status") != "ok" or not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {"json": path, "data": data, "unloaded_mesh": case.stage_dir("calibrate") / data["unloaded_mesh"]}


def apply_calibration(cfg: CRTConfig, calibration: dict[str, Any]) -> CRTConfig:
    """``cfg`` with the calibrated electromechanics (stiffness, twitch, circulation, ED pressures,
    beat length, pericardial springs) and conduction speeds scaled by the calibrated factor."""
    em = dict(cfg.electromechanics)
    em.update({k: v for k, v in calibration["em_config"].items() if k in CALIBRATED_EM_KEYS})
    mech = {k: v for k, v in (calibration["em_config"].get("mechanics") or {}).items() if k in CALIBRATED_MECHANICS_KEYS}
    if mech:
        em["mechanics"] = {**(em.get("mechanics") or {}), **mech}
    s = float(calibration.get("conduction_speed_scale", 1.0))
    c = cfg.conduction
    conduction = dataclasses.replace(c, cv_fibre=c.cv_fibre * s, cv_cross=c.cv_cross * s, purkinje_cv=c.purkinje_cv * s)
    return dataclasses.replace(cfg, electromechanics=em, conduction=conduction)


def calibration_record(calibration: dict[str, Any] | None) -> dict[str, Any]:
    """What the manifest and the therapy outputs say about the parameters the CRT stage used."""
    if calibration is None:
        return {"calibrated": False, "parameters": "population defaults (no calibrate stage in this case)"}
    data = calibration["data"]
    return {"calibrated": True, "calibration": str(calibration["json"]), "unloaded_mesh": str(calibration["unloaded_mesh"]),
            "parameters": {k: {"value": v["value"], "unit": v["unit"], "interval": v.get("interval")}
                           for k, v in data["parameters"].items()},
            "conduction_speed_scale": data.get("conduction_speed_scale", 1.0)}


def load_crt_config(mapping: dict[str, Any] | None, *, source: str, samples: int | None = None,
                    em_top_k: int | None = None, stiffness_samples: int | None = None) -> CRTConfig:
    """CRTConfig from a mapping (a recipe's ``crt`` options, a ``--config`` file) with the
    command line's overrides; ConfigError naming ``source`` on a bad key, type or unit."""
    from cardiotwin.config import load_config

    cfg = load_config(CRTConfig, mapping or {}, source=source)
    if samples is not None:
        cfg = dataclasses.replace(cfg, uq=dataclasses.replace(cfg.uq, samples=samples))
    if stiffness_samples is not None:
        cfg = dataclasses.replace(cfg, uq=dataclasses.replace(cfg.uq, stiffness_samples=stiffness_samples))
    if em_top_k is not None:
        cfg = dataclasses.replace(cfg, em_top_k=em_top_k)
    cfg.validate()
    return cfg
