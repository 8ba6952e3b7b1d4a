"""Run a YAML recipe (``pipelines/*.yaml``): an ordered list of stages with their options.

A recipe is data only::

    name: crt_ct
    modality: CT                 # the scan's expected modality (checked, not converted)
    stages:
      - segment: {}
      - mesh: {edge_mm: "5 mm"}
      - fibers: {}
      - crt: {uq: {samples: 8}, em_top_k: 3}

Stage names map to the functions in ``STAGES``. ``segment``, ``mesh`` and ``fibers`` run their
``cardiotwin`` commands on the case (options become the commands' flags: ``edge_mm`` ->
``--edge-mm``), so a recipe does exactly what the commands do; ``crt`` runs
``therapy.stage.crt_case_stage`` with its options as a ``CRTConfig``. Every stage is cached by
the case (inputs and config unchanged: skipped). Nothing in a recipe is evaluated.

Besides ``stages`` a recipe may carry the evidence report's regulatory context, under ``report``
or at the top level (``question_of_interest``, ``context_of_use``, ``model_influence``,
``decision_consequence``, ``measurements``, ... : ``report.casedata.CONTEXT_KEYS``).
``run_pipeline`` copies the recipe into the case as ``CASE/pipeline.yaml`` and records it in the
manifest as the input ``pipeline`` (path, sha256, source name), where ``cardiotwin report`` finds it.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardiotwin.config import read_yaml
from cardiotwin.errors import ConfigError, ScanError

if TYPE_CHECKING:
    from distributed import Client

    from cardiotwin.cases import Case

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: name, expected modality (or None) and (stage, options) in order."""

    name: str
    modality: str | None
    stages: tuple[tuple[str, dict[str, Any]], ...]
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
        options = _check_stage_options(name, options, where=f"{path}: stages[{i}] ({name})")
        stages.append((name, options))
    modality = data.get("modality")
    if modality is not None and modality not in ("CT", "MR"):
        raise ConfigError(f"{path}: modality must be CT or MR, got {modality!r}")
    return Recipe(name=str(data.get("name") or path.stem), modality=modality, stages=tuple(stages), source=str(path))


def _check_stage_options(name: str, options: Any, *, where: str) -> dict[str, Any]:
    """Validate a stage's options before anything runs: crt and calibrate options as their typed
    configs, the others against their command's options (none that names an output location)."""
    from cardiotwin.config import check_options, check_plain_data

    if name in ("crt", "calibrate"):  # typed: every key and value checked by load_config
        from cardiotwin.commands.crt import load_crt_config
        from cardiotwin.personalisation.stage import load_calibration_config

        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: options must be a mapping, got {type(options).__name__}")
        check_plain_data(options, where=where)
        (load_crt_config if name == "crt" else load_calibration_config)(options, source=where)
        return options
    import importlib

    module = importlib.import_module(f"cardiotwin.commands.{name}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    allowed = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    return check_options(options, allowed=allowed, where=where)


def options_to_flags(options: Mapping[str, Any]) -> list[str]:
    """{"edge_mm": "5 mm", "force": True, "base_point": [1, 2, 3]} -> ["--edge-mm", "5 mm", ...]."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            raise ConfigError(f"option {key!r}: nested mappings are not command options")
        else:
            argv += [flag, str(value)]
    return argv


def _run_command(module_name: str, argv: list[str]) -> int:
    """Parse ``argv`` with a command's own parser and run it (exactly what the CLI does)."""
    import importlib

    module = importlib.import_module(f"cardiotwin.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"cardiotwin {module.NAME}", exit_on_error=False)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ConfigError(f"{module.NAME}: invalid options {argv}: {exc}") from None
    rc = int(module.run(args) or 0)
    if rc != 0:
        raise ConfigError(f"stage {module.NAME} exited with status {rc}")
    return rc


def _stage_segment(ctx: PipelineContext, options: dict[str, Any]) -> None:
    ctx.results["segment_options"] = dict(options)
    if ctx.labels_path is None:
        _run_command("segment", [str(ctx.scan_path), "--out", str(ctx.case.root), *options_to_flags(options),
                                 *(["--force"] if ctx.force else [])])
        return
    # Given reference labels (tests, or a segmentation made elsewhere): store them as the segment stage.
    from cardiotwin.io.scans import read_labels, read_scan, write_labels

    scan = read_scan(ctx.scan_path)
    labels = read_labels(ctx.labels_path)
    if not labels.geometry.same_space(scan.geometry):
        raise ScanError(ctx.labels_path, f"label map is not on the grid of the scan {ctx.scan_path}")
    with ctx.case.stage("segment", inputs={"labels": ctx.labels_path}, scans={"scan": scan},
                        config={"source": "label map given with --labels", **options}, force=ctx.force) as st:
        if not st.skipped:
            write_labels(labels, st.dir / "labels.nii.gz")


def _stage_mesh(ctx: PipelineContext, options: dict[str, Any]) -> None:
    _run_command("mesh", [str(ctx.case.root), *options_to_flags(options), *(["--force"] if ctx.force else [])])


def _stage_fibers(ctx: PipelineContext, options: dict[str, Any]) -> None:
    _run_command("fibers", [str(ctx.case.root), *options_to_flags(options), *(["--force"] if ctx.force else [])])


def _stage_crt(ctx: PipelineContext, options: dict[str, Any]) -> None:
    from cardiotwin.commands.crt import load_crt_config
    from cardiotwin.therapy.solver import eikonal_solver, paced_ecg
    from cardiotwin.therapy.stage import crt_case_stage

    cfg = load_crt_config(options, source="recipe stage crt")
    with ctx.client_factory() as client:
        result = crt_case_stage(ctx.case, cfg=cfg, solver=ctx.solver or eikonal_solver, client=client,
                                force=ctx.force, ecg=None if ctx.solver else paced_ecg)
    if result is not None:
        ctx.results["crt"] = result


def _stage_calibrate(ctx: PipelineContext, options: dict[str, Any]) -> None:
    from cardiotwin.personalisation.stage import calibrate_recipe_stage, load_calibration_config

    seg_options = ctx.results.get("segment_options", {})

    def segment(scan: Path, out: Path) -> None:
        _run_command("segment", [str(scan), "--out", str(out), *options_to_flags(seg_options)])

    ctx.results["calibrate"] = calibrate_recipe_stage(
        ctx.case, load_calibration_config(options, source="recipe stage calibrate"), es_scan=ctx.es_scan_path,
        es_labels=ctx.es_labels_path, measurements=ctx.measurements_path, segment=segment,
        segment_config=seg_options, solver=ctx.solver, force=ctx.force)


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


STAGES: dict[str, Callable[[PipelineContext, dict[str, Any]], None]] = {
    "segment": _stage_segment,
    "mesh": _stage_mesh,
    "fibers": _stage_fibers,
    "calibrate": _stage_calibrate,
    "crt": _stage_crt,
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
    for name, options in recipe.stages:
        t0 = time.perf_counter()
        log.info("pipeline %s: stage %s", recipe.name, name)
        STAGES[name](ctx, options)
        if not ctx.timings_s:  # recorded once a stage has succeeded: a failed run leaves the case as it was
            record_recipe(case, recipe)
        ctx.timings_s[name] = round(time.perf_counter() - t0, 2)
    return ctx
