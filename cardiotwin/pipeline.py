"""Run a YAML recipe (``pipelines/*.yaml``): an ordered list of stages with their options.

A recipe is data only::

    name: crt_ct
    modality: CT                 # the scan's expected modality (checked, not converted)
    stages:
      - segment: {}
      - mesh: {edge_mm: "5 mm"}
      - fibers: {}
      - crt: {uq: {samples: 8}, em_top_k: 3}

Each stage's options are the keys of its config class, validated and converted to the code's
units once, when the recipe is loaded (``load_recipe``): ``segment`` -> ``SegStageConfig``,
``mesh`` -> ``MeshConfig``, ``fibers`` -> ``FiberConfig``, ``ep`` -> ``EPStageConfig``,
``em`` -> ``EMConfig``, ``crt`` -> ``CRTConfig``. ``run_pipeline`` calls the stage functions
(``segment_case``, ``mesh_case``, ``fibers_case``, ``ep_case``, ``em_case``,
``crt_case_stage``) on the case in order; each is cached by the case (inputs and config
unchanged: skipped). Nothing in a recipe is evaluated.

Besides ``stages`` a recipe may carry the evidence report's regulatory context, under ``report``
or at the top level (``question_of_interest``, ``context_of_use``, ``model_influence``,
``decision_consequence``, ``measurements``, ... : ``report.casedata.CONTEXT_KEYS``).
``run_pipeline`` copies the recipe into the case as ``CASE/pipeline.yaml`` and records it in the
manifest as the input ``pipeline`` (path, sha256, source name), where ``cardiotwin report`` finds it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardiotwin.config import config_to_dict, load_config, read_yaml
from cardiotwin.electrophysiology.stage import EPStageConfig, ep_case
from cardiotwin.errors import ConfigError, ScanError
from cardiotwin.fibers.stage import FiberConfig, fibers_case
from cardiotwin.meshing.stage import MeshConfig, mesh_case
from cardiotwin.segmentation.stage import SegStageConfig, segment_case, store_labels_case
from cardiotwin.therapy.stage import CRTConfig

if TYPE_CHECKING:
    from distributed import Client

    from cardiotwin.cases import Case
    from cardiotwin.report.build import ReportConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: name, expected modality (or None) and (stage, typed config) in order."""

    name: str
    modality: str | None
    stages: tuple[tuple[str, Any], ...]
    source: str = ""


@dataclass
class PipelineContext:
    """What stages share during one run."""

    case: "Case"
    scan_path: Path
    labels_path: Path | None
    force: bool
    client_factory: Callable[[], Any]
    solver: Any = None
    es_scan_path: Path | None = None
    es_labels_path: Path | None = None
    measurements_path: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe file; ConfigError naming the file on any problem."""
    path = Path(path)
    from cardiotwin.report.casedata import CONTEXT_KEYS

    data = read_yaml(path)
    allowed = ("name", "modality", "stages", "description", "report", *CONTEXT_KEYS)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if data.get("report") is not None and not isinstance(data["report"], dict):
        raise ConfigError(f"{path}: 'report' must be a mapping (question_of_interest, context_of_use, ...)")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list")
    stages = []
    for i, entry in enumerate(stages_raw):
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{path}: stages[{i}] must be a stage name or a mapping {{name: options}}")
        (name, options), = entry.items()
        if name not in STAGES:
            raise ConfigError(f"{path}: stages[{i}]: unknown stage {name!r}; known: {', '.join(STAGES)}")
        where = f"{path}: stages[{i}] ({name})"
        stages.append((name, load_config(STAGES[name].config_class(), _stage_options(name, options, where=where), source=where)))
    modality = data.get("modality")
    if modality is not None and modality not in ("CT", "MR"):
        raise ConfigError(f"{path}: modality must be CT or MR, got {modality!r}")
    return Recipe(name=str(data.get("name") or path.stem), modality=modality, stages=tuple(stages), source=str(path))


@dataclass(frozen=True)
class StageSpec:
    """A recipe stage: its config class (the recipe's options are its keys) and how it runs on
    the case with that config."""

    config_class: Callable[[], type]
    run: Callable[[PipelineContext, Any], None]
    flat: bool = True  # options are scalars or short lists (False: nested mappings, e.g. crt.uq)


def _stage_options(name: str, options: Any, *, where: str) -> dict[str, Any]:
    """A stage's options before they become its config: a mapping of plain data; a flat stage's
    options are its config's keys with scalar or short list values, none naming an output location
    (a case is written only by its own stages); nested ones are checked by their config class."""
    from cardiotwin.config import check_options, check_plain_data

    spec = STAGES[name]
    if spec.flat:
        allowed = {f.name for f in dataclasses.fields(spec.config_class())}
        return check_options(options, allowed=allowed, where=where)
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a mapping, got {type(options).__name__}")
    check_plain_data(options, where=where)
    return options


def _run_segment(ctx: PipelineContext, cfg: SegStageConfig) -> None:
    ctx.results["segment_config"] = cfg  # the calibrate stage segments the ES scan alike
    if ctx.labels_path is None:
        segment_case(ctx.case, ctx.scan_path, cfg, force=ctx.force)
        return
    # given labels (tests, or a segmentation made elsewhere) are stored as the segment stage
    given = {k: v for k, v in config_to_dict(cfg).items() if v is not None}
    store_labels_case(ctx.case, ctx.scan_path, ctx.labels_path, config=given, force=ctx.force)


def _em_config() -> type:
    from cardiotwin.mechanics.stage import EMConfig  # dolfinx: imported when a recipe has the stage

    return EMConfig


def _run_em(ctx: PipelineContext, cfg: Any) -> None:
    from cardiotwin.mechanics.stage import em_case

    em_case(ctx.case, cfg, force=ctx.force)


def _run_crt(ctx: PipelineContext, cfg: CRTConfig) -> None:
    from cardiotwin.therapy.solver import eikonal_solver, paced_ecg
    from cardiotwin.therapy.stage import crt_case_stage

    with ctx.client_factory() as client:
        result = crt_case_stage(ctx.case, cfg=cfg, solver=ctx.solver or eikonal_solver, client=client,
                                force=ctx.force, ecg=None if ctx.solver else paced_ecg)
    if result is not None:
        ctx.results["crt"] = result


def _calibrate_config() -> type:
    from cardiotwin.personalisation.stage import CalibrationConfig

    return CalibrationConfig


def _run_calibrate(ctx: PipelineContext, cfg: Any) -> None:
    from cardiotwin.personalisation.stage import calibrate_recipe_stage

    seg_cfg = ctx.results.get("segment_config") or SegStageConfig()

    def segment(scan: Path, out: Path) -> None:
        segment_case(Path(out), scan, seg_cfg)

    ctx.results["calibrate"] = calibrate_recipe_stage(
        ctx.case, cfg, es_scan=ctx.es_scan_path, es_labels=ctx.es_labels_path, measurements=ctx.measurements_path,
        segment=segment, segment_config={k: v for k, v in config_to_dict(seg_cfg).items() if v is not None},
        solver=ctx.solver, force=ctx.force)


RECIPE_IN_CASE = "pipeline.yaml"


def record_recipe(case: "Case", recipe: Recipe) -> Path | None:
    """Copy the recipe file into the case (``CASE/pipeline.yaml``) and record it as the input
    ``pipeline``; the evidence report reads its context of use there. None for a recipe built in code."""
    import hashlib

    from cardiotwin.io.atomic import write_bytes_atomic

    src = Path(recipe.source) if recipe.source else None
    if src is None or not src.is_file():
        return None
    data = src.read_bytes()
    dest = case.root / RECIPE_IN_CASE
    if not dest.is_file() or dest.read_bytes() != data:
        write_bytes_atomic(dest, data)
    case.record_input("pipeline", dest, source_sha256=hashlib.sha256(data).hexdigest(), source_name=src.name,
                      recipe=recipe.name)
    return dest


STAGES: dict[str, StageSpec] = {
    "segment": StageSpec(lambda: SegStageConfig, _run_segment),
    "mesh": StageSpec(lambda: MeshConfig, lambda ctx, cfg: mesh_case(ctx.case, cfg, force=ctx.force)),
    "fibers": StageSpec(lambda: FiberConfig, lambda ctx, cfg: fibers_case(ctx.case, cfg, force=ctx.force)),
    "ep": StageSpec(lambda: EPStageConfig, lambda ctx, cfg: ep_case(ctx.case, cfg, force=ctx.force)),
    "em": StageSpec(_em_config, _run_em, flat=False),
    "calibrate": StageSpec(_calibrate_config, _run_calibrate, flat=False),
    "crt": StageSpec(lambda: CRTConfig, _run_crt, flat=False),
}


def run_pipeline(
    recipe: Recipe,
    *,
    scan_path: Path,
    out: Path,
    labels_path: Path | None = None,
    force: bool = False,
    scheduler: str | None = None,
    workers: int = 2,
    client: "Client | None" = None,
    solver: Any = None,
    es_scan_path: Path | None = None,
    es_labels_path: Path | None = None,
    measurements_path: Path | None = None,
) -> PipelineContext:
    """Run every stage of ``recipe`` on the case ``out`` (created when absent); returns the
    context with per-stage wall times (s) and the crt result when the stage ran.

    Sweeps run on ``client`` when given, else on a Dask cluster (``scheduler`` or an embedded one
    with ``workers`` workers; ``workers=0`` runs them in this process). ``solver`` replaces the
    electrophysiology eikonal binding (an ``ActivationSolver``; tests). ``es_scan_path`` /
    ``es_labels_path`` (end-systolic scan or labels) and ``measurements_path`` (YAML or FHIR
    bundle of clinical values) feed the ``calibrate`` stage.
    """
    import contextlib

    from cardiotwin.cases import Case
    from cardiotwin.distributed import dask_client
    from cardiotwin.io.scans import read_scan

    if not Path(scan_path).exists():
        raise ScanError(scan_path, "no such scan file or folder")
    if recipe.modality is not None:
        scan = read_scan(scan_path)
        if scan.modality not in (recipe.modality, "unknown"):
            raise ScanError(scan_path, f"recipe {recipe.name} expects a {recipe.modality} scan, this is {scan.modality}")
    case = Case.open_or_create(out)

    def client_factory() -> Any:
        if client is not None or (workers == 0 and not scheduler):
            return contextlib.nullcontext(client)
        return dask_client(scheduler=scheduler, n_workers=workers)

    ctx = PipelineContext(case=case, scan_path=Path(scan_path), labels_path=Path(labels_path) if labels_path else None,
                          force=force, client_factory=client_factory, solver=solver,
                          es_scan_path=Path(es_scan_path) if es_scan_path else None,
                          es_labels_path=Path(es_labels_path) if es_labels_path else None,
                          measurements_path=Path(measurements_path) if measurements_path else None)
    for name, cfg in recipe.stages:
        t0 = time.perf_counter()
        log.info("pipeline %s: stage %s", recipe.name, name)
        STAGES[name].run(ctx, cfg)
        if not ctx.timings_s:  # recorded once a stage has succeeded: a failed run leaves the case as it was
            record_recipe(case, recipe)
        ctx.timings_s[name] = round(time.perf_counter() - t0, 2)
    return ctx


def report_case(
    case_root: str | Path,
    *,
    config: "ReportConfig",
    pipeline: Path | None = None,
    verification: Path | None = None,
    reference_labels: Path | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Verify a case (``verification.stage.verify_case``: the code-verification suite when the case
    stores none and no ``verification`` file is given, and the refinement studies ``config`` asks
    for), then write its evidence report and clinical summary (``report.build.build_report``)."""
    from cardiotwin.cases import Case
    from cardiotwin.report.build import build_report
    from cardiotwin.verification.stage import VerificationConfig, verify_case

    vcfg = VerificationConfig(run_suite=config.run_verification and verification is None,
                              calc_verification=config.calc_verification, timestep_study=config.timestep_study,
                              timestep_levels=config.timestep_levels, em_mesh_study=config.em_mesh_study,
                              em_mesh_factors=config.em_mesh_factors)
    reasons = verify_case(Case.open(case_root), vcfg)
    return build_report(case_root, config=config, pipeline=pipeline, verification=verification,
                        reference_labels=reference_labels, force=force, calcver_reasons=reasons)
