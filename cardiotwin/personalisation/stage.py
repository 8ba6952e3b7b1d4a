"""The ``calibrate`` stage: a case with the fibres stage -> CASE/calibrate/.

Steps: measurements (ED / ES label maps of the case, clinical values from YAML or FHIR) ->
passive stiffness against the Klotz EDPVR, with the unloaded reference geometry at every
evaluation -> systemic Windkessel from cuff pressures, heart rate and stroke volume ->
conduction speed scale from the QRS duration -> peak active tension against the LV ejection
fraction and end-systolic volume, one electromechanical beat per evaluation
(``therapy.response.run_beat_task``, on the unloaded mesh, from the intrinsic LBBB activation the
CRT stage uses as its baseline).

Outputs: ``calibration.json`` (``measured``, ``simulated``, ``parameters`` name -> value, unit,
interval, every evaluation, the unloading residuals, ``em_config``: the EMConfig keys the later
stages use, ``conduction_scale``), ``validation.json`` (quantities the fit did not use),
``unloaded_mesh.vtu`` (the fibres-stage mesh on the unloaded reference) and ``fit.png``.
Beats are cached in ``CASE/calibrate_tasks/`` (outside the atomically replaced stage folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiotwin.config import config_to_dict, quantity
from cardiotwin.errors import StageError
from cardiotwin.personalisation.calibration import (
    MMHG_KPA,
    Fit1D,
    conduction_scale,
    gauss_newton_1d,
    klotz_edpvr,
    windkessel_estimate,
)
from cardiotwin.personalisation.beats import (
    TensionBeats,
    beat_values,
    calibrated_em_config,
    end_of_ejection,
    solve_along_beat,
)
from cardiotwin.personalisation.measurements import COMPARED, measured_values
from cardiotwin.personalisation.unloading import UnloadConfig
from cardiotwin.therapy.conduction import ConductionConfig

if TYPE_CHECKING:
    from cardiotwin.cases import Case
    from cardiotwin.types import HeartMesh, LabelMap

log = logging.getLogger(__name__)

CALIBRATION_JSON = "calibration.json"
UNLOADED_MESH = "unloaded_mesh.vtu"
END_SYSTOLIC_MESH = "end_systolic_mesh.vtu"


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration stage settings. ``electromechanics``: EMConfig keys (units as strings) of the
    calibration beats, on which the calibrated values are set; the CRT stage's beats get the same
    calibrated values."""

    electromechanics: dict[str, Any] = field(default_factory=lambda: {"dt": "20 ms", "diastolic_dt": "40 ms",
                                                                      "beat_duration": "600 ms"})
    conduction: ConductionConfig = ConductionConfig()
    unloading: UnloadConfig = UnloadConfig(tol_mm=0.1, max_iterations=25)
    population_lvedp: float = quantity(10.0, "mmHg", doc="LV end-diastolic pressure when none is measured")
    population_rvedp: float = quantity(5.0, "mmHg", doc="RV end-diastolic pressure")
    edpvr_fractions: tuple[float, ...] = (0.5, 1.0)
    passive_evaluations: int = 5
    tension_evaluations: int = 4
    fit_tension: bool = True
    # normal springs on the epicardium (Pfaller et al., Biomech Model Mechanobiol 18:503, 2019), in
    # the unloading, the calibration beats and (through the calibrated em_config) the CRT beats,
    # unless ``electromechanics`` sets mechanics.epi_spring_kpa_per_mm itself. Without them a thin,
    # locally flat RV free wall has no unloaded shape that reinflates onto the imaged one (docs/personalisation.md)
    pericardium_kpa_per_mm: float = 0.1
    sigma_volume_rel: float = quantity(0.05, "", doc="1-sd of image volumes (and of the Klotz prediction)")
    sigma_ef: float = quantity(0.03, "", doc="1-sd of the measured ejection fraction")
    sigma_cuff: float = quantity(5.0, "mmHg", doc="1-sd of a cuff pressure")
    sigma_qrs: float = quantity(10.0, "ms", doc="1-sd of the QRS duration")

    def validate(self) -> None:
        self.conduction.validate()
        self.unloading.validate()
        if not self.edpvr_fractions or not all(0 < f <= 1 for f in self.edpvr_fractions):
            raise ValueError("edpvr_fractions must be fractions in (0, 1]")
        if self.passive_evaluations < 2 or self.tension_evaluations < 2:
            raise ValueError("passive_evaluations and tension_evaluations must be >= 2")
        if not (self.population_lvedp > 0 and self.population_rvedp > 0):
            raise ValueError("population end-diastolic pressures must be > 0")
        if not self.pericardium_kpa_per_mm >= 0:
            raise ValueError(f"pericardium_kpa_per_mm must be >= 0, got {self.pericardium_kpa_per_mm}")

    def em_base(self) -> dict[str, Any]:
        """``electromechanics`` with the pericardial springs (unless it sets them)."""
        mech = dict(self.electromechanics.get("mechanics") or {})
        mech.setdefault("epi_spring_kpa_per_mm", self.pericardium_kpa_per_mm)
        return {**self.electromechanics, "mechanics": mech}


class _CaseTwin:
    """The fibres-stage mesh as a dolfinx passive twin (serial)."""

    def __init__(self, mesh: "HeartMesh", em_config: dict[str, Any], unload_cfg: UnloadConfig) -> None:
        from mpi4py import MPI  # noqa: I001 - before dolfinx

        from cardiotwin.config import load_config
        from cardiotwin.fibers.quadrature import rule_point_data
        from cardiotwin.mechanics.electromechanics import EMConfig
        from cardiotwin.mechanics.outputs import beat_fibres
        from cardiotwin.meshing.fem import to_dolfinx
        from cardiotwin.personalisation.passive import PassiveTwin

        self.mesh = mesh
        self.heart = to_dolfinx(mesh, MPI.COMM_SELF)
        if "f0" not in mesh.point_data:
            raise StageError(f"{mesh.name or 'mesh'}: no fibre field f0: run the fibers stage first")
        # the beats' own fibres (therapy.response.run_beat_task): an unloaded reference found with
        # other fibres is not the one the beats inflate back to the imaged mesh
        fibres = beat_fibres(self.heart, np.asarray(mesh.point_data["f0"], dtype=float), rule_point_data(mesh))
        self.em_cfg = load_config(EMConfig, em_config, source="calibrate.electromechanics")
        self.passive = PassiveTwin(self.heart.mesh, self.heart.facet_tags, fibres, self.em_cfg, unload_cfg=unload_cfg)

    def unloaded_mesh(self) -> "HeartMesh":
        points = np.array(self.mesh.points, dtype=float, copy=True)
        points[self.heart.original_point_index] = self.heart.mesh.geometry.x
        return dataclasses.replace(self.mesh, points=points)

    def end_systolic_mesh(self, activation_ms: np.ndarray, em_config: dict[str, Any],
                          beat: dict[str, Any]) -> tuple["HeartMesh", dict[str, float]]:
        """The mesh at the beat's end of ejection (``beats.end_of_ejection``): the equilibrium under
        that instant's cavity pressures and active tension (the beat is quasi-static), reached from
        the current (end-diastolic) state of the passive twin at the calibrated stiffness along the
        beat's own path (``beats.solve_along_beat``). Raises StageError naming the step that failed."""
        from cardiotwin.config import load_config
        from cardiotwin.mechanics.electromechanics import EMConfig
        from cardiotwin.meshing.fem import point_field_to_function
        from cardiotwin.personalisation.unloading import NodalDisplacement

        r = beat["result"]
        i_es = end_of_ejection(r["lv_volume_ml"])
        t_es = float(r["times_ms"][i_es])
        act = np.asarray(activation_ms, dtype=float).copy()
        act[~np.isfinite(act)] = np.nanmax(act[np.isfinite(act)])
        mech = self.passive.mech
        act_values = point_field_to_function(self.heart, act, mech.scalar_space).x.array.copy()
        twitch = load_config(EMConfig, em_config, source="calibrate.electromechanics").twitch
        solve_along_beat(mech, r, lambda t: twitch.tension_kpa(t, act_values), end=i_es, cavities=self.passive.cavities)
        x = self.heart.mesh.geometry.x + NodalDisplacement(mech).displacement()
        points = np.array(self.mesh.points, dtype=float, copy=True)
        points[self.heart.original_point_index] = x
        check = {"t_es_ms": t_es, "lv_volume_ml": mech.cavity_volume_ml("LV"), "beat_lv_esv_ml": float(r["lv_volume_ml"][i_es])}
        return dataclasses.replace(self.mesh, points=points), check


def baseline_activation(mesh: "HeartMesh", conduction: ConductionConfig, *,
                        solver: Any) -> tuple[np.ndarray, dict[str, Any], str]:
    """Intrinsic activation of the calibration beats: (times (N,) ms from QRS onset, metrics,
    description). A biventricular mesh gets the CRT stage's LBBB baseline; an LV-only mesh (short-axis
    stacks with LV contours only) has no RV to break through from, so the LV endocardium is the
    Purkinje source, fired from its most apical node at ``purkinje_cv``."""
    from cardiotwin.anatomy import FacetTag
    from cardiotwin.therapy.baseline import long_axis_height, surface_nodes
    from cardiotwin.therapy.conduction import Source
    from cardiotwin.therapy.metrics import activation_metrics
    from cardiotwin.therapy.protocols import baseline_protocol
    from cardiotwin.therapy.sweep import solve_protocol, twin_context

    if surface_nodes(mesh, FacetTag.RV_ENDO).size:
        act, metrics = solve_protocol(mesh, baseline_protocol(), conduction, solver=solver)
        return act, metrics, "LBBB baseline (RV septal breakthrough), as the CRT stage"
    ctx = twin_context(mesh, conduction)
    lv = surface_nodes(mesh, FacetTag.LV_ENDO)
    apex = int(lv[np.argmin(long_axis_height(mesh)[lv])])
    delays = np.linalg.norm(mesh.points[lv] - mesh.points[apex], axis=1) / conduction.purkinje_cv
    t = np.asarray(solver(mesh, sources=[Source(nodes=lv.astype(np.int64), delays_ms=delays, label="lv_purkinje")],
                          tissue=ctx.tissue), dtype=float)
    t = np.where(ctx.conducting, t, np.inf)
    metrics = activation_metrics(t, conducting=ctx.conducting, lv_mask=ctx.lv_mask, volumes_mm3=ctx.volumes_mm3)
    return t - metrics["onset_ms"], metrics, "LV endocardial Purkinje from the apex (LV-only mesh: no RV)"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def tension_residuals(simulated: dict[str, Any] | None, measured: dict[str, Any],
                      cfg: CalibrationConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """Residuals of the tension fit (None without ``simulated``) and their sigmas: LV EF, and the LV
    ESV (mL) where it is measured, signed so that both grow with the tension. The twin's EDV is its
    mesh's (a 5 mm mesh's LV cavity lies 2-5 % below the labels'): EF alone puts that error on the
    ESV, ESV alone on the EF; fitting both weighs it by their sigmas."""
    esv = measured.get("lv_esv_ml")
    sigma = np.array([cfg.sigma_ef] + ([cfg.sigma_volume_rel * esv] if esv else []))
    if simulated is None:
        return None, sigma
    r = [simulated["lv_ef"] - measured["lv_ef"]] + ([esv - simulated["lv_esv_ml"]] if esv else [])
    return np.array(r), sigma


def calibrate(
    mesh: "HeartMesh",
    *,
    measured: dict[str, Any],
    cfg: CalibrationConfig,
    work_dir: Path,
    out_dir: Path,
    solver: Any,
) -> dict[str, Any]:
    """Calibrate the twin ``mesh`` (fibres stage) to ``measured``; writes the unloaded mesh and
    the beats' cache; returns the content of calibration.json (without writing it)."""
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.therapy.response import run_beat_task

    cfg.validate()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if measured.get("lv_ef") is None and cfg.fit_tension:
        raise StageError("calibration needs the LV ejection fraction (ES labels, or lv_ef / lv_esv_ml in the "
                         "measurements file)")
    edp_mmhg = float(measured.get("lvedp_mmhg", cfg.population_lvedp))
    edp_kpa = {"LV": edp_mmhg * MMHG_KPA, "RV": cfg.population_rvedp * MMHG_KPA}
    notes = [] if "lvedp_mmhg" in measured else [
        f"no measured LVEDP: population value {cfg.population_lvedp:g} mmHg (RV {cfg.population_rvedp:g} mmHg)"]

    # 1. passive stiffness and unloaded reference against the Klotz EDPVR in the mesh's volume frame
    t = time.perf_counter()
    em_base = cfg.em_base()
    twin = _CaseTwin(mesh, em_base, cfg.unloading)
    imaged = {c: twin.passive.mech.cavity_volume_ml(c) for c in twin.passive.cavities}
    klotz, v0 = klotz_edpvr(imaged["LV"], edp_mmhg)
    from cardiotwin.personalisation.passive import fit_passive_stiffness

    passive, edpvr = fit_passive_stiffness(
        twin.passive, pressures_kpa={c: edp_kpa[c] for c in twin.passive.cavities}, fractions=cfg.edpvr_fractions,
        target_lv_ml=lambda p_kpa: klotz(p_kpa / MMHG_KPA), sigma_ml=cfg.sigma_volume_rel * imaged["LV"],
        max_evaluations=cfg.passive_evaluations,
        data=f"Klotz EDPVR through the imaged LV volume and EDP {edp_mmhg:g} mmHg")
    unloading = twin.passive.last_unload.summary() if twin.passive.last_unload else {}
    unloaded_path = write_mesh(twin.unloaded_mesh(), out_dir / UNLOADED_MESH)
    timings["passive_s"] = round(time.perf_counter() - t, 2)

    # 2. circulation
    parameters: dict[str, Any] = {"passive_stiffness_factor": passive.to_dict()}
    windkessel = None
    sv = measured.get("lv_sv_ml") or (measured["lv_edv_ml"] * measured["lv_ef"]
                                      if "lv_edv_ml" in measured and "lv_ef" in measured else None)
    if {"systolic_bp_mmhg", "diastolic_bp_mmhg", "heart_rate_bpm"} <= set(measured) and sv:
        from cardiotwin.circulation.models import WindkesselConfig

        wk0 = WindkesselConfig()
        windkessel = windkessel_estimate(
            systolic_mmhg=measured["systolic_bp_mmhg"], diastolic_mmhg=measured["diastolic_bp_mmhg"],
            heart_rate_bpm=measured["heart_rate_bpm"], stroke_volume_ml=sv, venous_pressure_kpa=wk0.venous_pressure,
            characteristic_fraction=wk0.characteristic_resistance / (wk0.characteristic_resistance + wk0.peripheral_resistance),
            sigma_cuff_mmhg=cfg.sigma_cuff, sigma_sv_rel=cfg.sigma_volume_rel * math.sqrt(2.0))
        parameters.update({f"lv_windkessel.{k}": v for k, v in windkessel.items()})
    else:
        notes.append("no cuff pressures / heart rate: the systemic Windkessel keeps its population values "
                     "(not identified)")

    # 3. conduction and the baseline activation
    t = time.perf_counter()
    conduction = cfg.conduction
    act, metrics, activation_kind = baseline_activation(mesh, conduction, solver=solver)
    tat_nominal = float(metrics["tat_ms"])
    cv_scale = None
    if "qrs_duration_ms" in measured:
        cv_scale = conduction_scale(tat_nominal, measured["qrs_duration_ms"], sigma_qrs_ms=cfg.sigma_qrs)
        s = cv_scale["value"]
        conduction = dataclasses.replace(conduction, cv_fibre=conduction.cv_fibre * s, cv_cross=conduction.cv_cross * s,
                                         purkinje_cv=conduction.purkinje_cv * s)
        act, metrics, activation_kind = baseline_activation(mesh, conduction, solver=solver)
        cv_scale["simulated_tat_ms"] = float(metrics["tat_ms"])
        cv_scale["nominal_tat_ms"] = tat_nominal
        parameters["conduction_speed_scale"] = cv_scale
    else:
        notes.append("no QRS duration: conduction speeds keep their population values (not identified)")
    timings["activation_s"] = round(time.perf_counter() - t, 2)

    # 4. peak active tension against the LV EF (and ESV), one beat per evaluation
    t = time.perf_counter()
    mesh_sha = sha256_file(unloaded_path)
    beats = TensionBeats(
        # one beat at a time: each on the machine's default MPI ranks (mechanics.ranks)
        lambda name, em: run_beat_task(name, act, em_config=em, mesh_path=str(unloaded_path), mesh_sha256=mesh_sha,
                                       work_dir=str(work_dir), ranks=None),
        lambda tension: calibrated_em_config(em_base, stiffness=passive.value, edp_kpa=edp_kpa,
                                    windkessel=windkessel, heart_rate_bpm=measured.get("heart_rate_bpm"),
                                    tension_kpa=tension),
        dt_ms=twin.em_cfg.dt, diastolic_dt_ms=twin.em_cfg.diastolic_dt, notes=notes)

    def evaluate(tension: float) -> tuple[np.ndarray, dict[str, Any]]:
        v = beat_values(beats(tension))
        log.info("calibrate: beat %d, peak tension %.1f kPa, stiffness x%.3g -> LV EDV %.1f (measured %s) mL, "
                 "ESV %.1f (%s) mL, EF %.3f (target %.3f); %.0f s elapsed", len(beats.done), tension, passive.value,
                 v["lv_edv_ml"], _fmt(measured.get("lv_edv_ml")), v["lv_esv_ml"], _fmt(measured.get("lv_esv_ml")),
                 v["lv_ef"], measured["lv_ef"], time.perf_counter() - t_start)
        return tension_residuals(v, measured, cfg)[0], {"simulated": v}

    tension_fit: Fit1D | None = None
    if cfg.fit_tension:
        esv_measured = bool(measured.get("lv_esv_ml"))
        sigma = tension_residuals(None, measured, cfg)[1]
        t0 = twin.em_cfg.twitch.peak_tension
        tension_fit = gauss_newton_1d(evaluate, name="peak_active_tension", unit="kPa", x0=math.log(t0),
                                      sigma=np.array(sigma), first_step=0.3, increasing=True, retreat=(-0.4, 0.3),
                                      max_evaluations=cfg.tension_evaluations, bounds=(math.log(5.0), math.log(500.0)),
                                      tol=0.02, data="LV ejection fraction" + (" and end-systolic volume" if esv_measured else ""))
        parameters["peak_active_tension"] = tension_fit.to_dict()
        final_tension = tension_fit.value
    else:
        final_tension = twin.em_cfg.twitch.peak_tension
    final = beats(final_tension)
    timings["tension_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    es_name: str | None = END_SYSTOLIC_MESH
    try:
        es_mesh, es_check = twin.end_systolic_mesh(act, beats.em_config(final_tension), final)
        write_mesh(es_mesh, out_dir / END_SYSTOLIC_MESH)
    except StageError as exc:  # the calibration stands; only its held-out geometry check is missing
        log.warning("calibrate: the end-systolic state of the final beat was not solved: %s", exc)
        es_name, es_check = None, {"error": str(exc)}
        notes.append(f"no end-systolic geometry for the held-out validation: {exc}")
    timings["end_systole_s"] = round(time.perf_counter() - t, 2)
    simulated = beat_values(final)
    not_identified = [name for name, p in parameters.items() if p.get("identifiable") is False]
    fixed = ["passive exponents (Guccione bf, bt, bfs / Holzapfel-Ogden b's): no data on the shape of the EDPVR "
             "beyond Klotz", "RV parameters (shared twitch and stiffness with the LV)", "twitch time course"]
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    return {
        "measured": {k: measured.get(k) for k in COMPARED} | {k: v for k, v in measured.items()
                                                              if k not in COMPARED and k not in ("sources",)},
        "measured_sources": measured.get("sources", {}),
        "simulated": {k: simulated.get(k) for k in COMPARED} | {"lv_peak_pressure_mmhg": simulated["lv_peak_pressure_mmhg"],
                                                                "lv_edv_mesh_imaged_ml": imaged["LV"]},
        "parameters": parameters,
        "not_identified": not_identified,
        "fixed_at_population_values": fixed,
        "notes": notes,
        "end_diastolic_pressures_kpa": edp_kpa,
        "klotz": {"v0_ml": v0, "edv_ml": imaged["LV"], "edp_mmhg": edp_mmhg},
        "edpvr": edpvr,
        "unloading": unloading,
        "em_config": beats.em_config(final_tension),
        "conduction": config_to_dict(conduction),
        "activation": activation_kind,
        "conduction_speed_scale": cv_scale["value"] if cv_scale else 1.0,
        "final_beat": {"name": final["name"], "result": {k: final["result"][k] for k in (
            "times_ms", "lv_pressure_kpa", "lv_volume_ml", "rv_pressure_kpa", "rv_volume_ml")}},
        "unloaded_mesh": UNLOADED_MESH,
        "end_systolic_mesh": es_name,
        "end_systolic_check": es_check,
        "timings_s": timings,
    }


def calibrate_case_stage(
    case: "Case",
    *,
    cfg: CalibrationConfig,
    clinical: dict[str, float] | None = None,
    clinical_path: Path | None = None,
    es_labels: Path | None = None,
    solver: Any = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """Run the ``calibrate`` stage of a case whose ``fibers`` stage is done.

    Measurements: the case's ED labels (``segment`` stage) and ES labels (``es_labels``, or
    ``case_es_labels``: the ``segment_es`` stage, or a 4D cine's ES frame), plus ``clinical`` values (read from
    ``clinical_path``, a YAML or FHIR file, by the caller). A changed measurement, mesh or config
    reruns the stage. Returns calibration.json's content, None when the stage was unchanged.
    """
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import read_mesh
    from cardiotwin.io.scans import read_labels
    from cardiotwin.personalisation.outputs import fit_plot, validation

    mesh_path = case.require_stage("fibers") / "mesh.vtu"
    inputs: dict[str, Path] = {"mesh": mesh_path}
    ed_path = case.stage_dir("segment") / "labels.nii.gz"
    rec = case.stage_record("segment")
    ed = None
    if rec and rec.get("status") == "ok" and ed_path.is_file():
        inputs["ed_labels"] = ed_path
    if es_labels is None:
        es_labels = case_es_labels(case)
    if es_labels is not None:
        inputs["es_labels"] = Path(es_labels)
    if clinical_path is not None:
        inputs["measurements"] = Path(clinical_path)
    if solver is None:
        from cardiotwin.therapy.solver import eikonal_solver as solver
    config = {"calibration": cfg, "clinical": dict(sorted((clinical or {}).items()))}
    with case.stage("calibrate", inputs=inputs, config=config, force=force) as st:
        if st.skipped:
            return None
        ed = read_labels(inputs["ed_labels"]) if "ed_labels" in inputs else None
        es = read_labels(inputs["es_labels"]) if "es_labels" in inputs else None
        quality = case.stage_dir("mesh") / "quality.json"
        base_plane = json.loads(quality.read_text(encoding="utf-8")).get("base_plane") if quality.is_file() else None
        measured = measured_values(ed, es, clinical, base_plane=base_plane)
        result = calibrate(read_mesh(mesh_path), measured=measured, cfg=cfg, work_dir=case.root / "calibrate_tasks",
                           out_dir=st.dir, solver=solver)
        write_json_atomic(st.output(CALIBRATION_JSON), result)
        checks = validation(result)
        if es is not None:
            from cardiotwin.personalisation.validation import es_validation

            checks["end_systole"] = (
                es_validation(read_mesh(mesh_path), read_mesh(st.dir / END_SYSTOLIC_MESH).points, es,
                              measured_thickening=measured.get("systolic_thickening"))
                if result["end_systolic_mesh"] else {"error": result["end_systolic_check"]["error"]})
        write_json_atomic(st.output("validation.json"), checks)
        fit_plot(result, st.output("fit.png"))
        st.metrics.update({"simulated": result["simulated"], "timings_s": result["timings_s"],
                           "parameters": {k: v["value"] for k, v in result["parameters"].items()},
                           "not_identified": result["not_identified"]})
    return result


def read_clinical(path: Path | None) -> dict[str, float] | None:
    """Clinical measurements from a YAML file or a FHIR R4 Bundle (``.json``), or None."""
    from cardiotwin.personalisation.measurements import read_measurements_fhir, read_measurements_yaml

    if path is None:
        return None
    return read_measurements_fhir(path) if Path(path).suffix.lower() == ".json" else read_measurements_yaml(path)


def load_calibration_config(mapping: dict[str, Any] | None, *, source: str) -> CalibrationConfig:
    """CalibrationConfig from a mapping (recipe stage options or a YAML file), validated."""
    from cardiotwin.config import load_config
    from cardiotwin.errors import ConfigError

    cfg = load_config(CalibrationConfig, mapping or {}, source=source)
    try:
        cfg.validate()
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


ES_STAGE = "segment_es"
CINE_ES_LABELS = "cine_es_labels.nii.gz"  # segmentation.cine.write_cine_outputs(stem="cine") in the segment stage


def store_es_labels(case: "Case", labels_path: Path, *, scan_path: Path | None = None, force: bool = False) -> Path:
    """Store an end-systolic label map made elsewhere as the case's ``segment_es`` stage (checked
    against the ES scan's grid when given). Returns the stored labels path."""
    from cardiotwin.errors import ScanError
    from cardiotwin.io.scans import read_labels, read_scan, write_labels

    inputs = {"labels": Path(labels_path), **({"scan": Path(scan_path)} if scan_path else {})}
    with case.stage(ES_STAGE, inputs=inputs, config={"source": "ES label map given"}, force=force) as st:
        if not st.skipped:
            labels = read_labels(labels_path)
            if scan_path is not None and not labels.geometry.same_space(read_scan(scan_path).geometry):
                raise ScanError(labels_path, f"label map is not on the grid of the ES scan {scan_path}")
            write_labels(labels, st.dir / "labels.nii.gz")
    return case.stage_dir(ES_STAGE) / "labels.nii.gz"


def segment_es_scan(case: "Case", scan_path: Path, segment: Any, *, config: Any, force: bool = False) -> Path:
    """Segment the end-systolic scan into the case's ``segment_es`` stage with ``segment(scan,
    labels_out)`` (the segmentation stage's function, same model and options as the ED scan)."""
    with case.stage(ES_STAGE, inputs={"scan": Path(scan_path)}, config=config, force=force) as st:
        if not st.skipped:
            segment(Path(scan_path), st.dir / "labels.nii.gz")
    return case.stage_dir(ES_STAGE) / "labels.nii.gz"


def case_es_labels(case: "Case") -> Path | None:
    """The case's end-systolic label map: the ``segment_es`` stage's, else the ES frame that
    ``segment --all-frames`` picked from a 4D cine's LV volume curve (``segment/cine_es_labels.nii.gz``),
    else None."""
    from cardiotwin.segmentation.stage import LABELS_FILE

    for stage, name in ((ES_STAGE, LABELS_FILE), ("segment", CINE_ES_LABELS)):
        path = case.stage_dir(stage) / name
        if (case.stage_record(stage) or {}).get("status") == "ok" and path.is_file():
            return path
    return None


def calibrate_recipe_stage(
    case: "Case",
    cfg: CalibrationConfig,
    *,
    es_scan: Path | None,
    es_labels: Path | None,
    measurements: Path | None,
    segment: Any,
    segment_config: Any,
    solver: Any = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """The ``calibrate`` stage of a recipe: store the ES labels (``es_labels``) or segment the ES
    scan with ``segment(scan, labels_out)``, read the clinical measurements (YAML or FHIR), and
    calibrate. Without an end-systolic phase and without a measured LV EF / ESV the stage is
    skipped with a warning (the twin keeps its population parameters); returns None then."""
    es = None
    if es_labels is not None:
        es = store_es_labels(case, es_labels, scan_path=es_scan, force=force)
    elif es_scan is not None:
        es = segment_es_scan(case, es_scan, segment, config=segment_config, force=force)
    else:
        es = case_es_labels(case)
    clinical = read_clinical(measurements)
    if cfg.fit_tension and es is None and not (clinical and {"lv_ef", "lv_esv_ml"} & set(clinical)):
        log.warning("calibrate: no end-systolic scan or labels (--es-scan, --es-labels) and no measured LV EF or ESV "
                    "(--measurements, --fhir): the twin keeps its population parameters")
        return None
    return calibrate_case_stage(case, cfg=cfg, clinical=clinical, clinical_path=measurements, es_labels=es,
                                solver=solver, force=force)
