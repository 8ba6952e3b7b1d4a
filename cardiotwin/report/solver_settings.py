"""Solver tolerances and time steps a case actually ran with, read from its stage configurations.

Each stage's configuration is recorded in ``manifest.json`` (``stages.<name>.config``); the
values it does not set are the defaults of the configuration class the stage loaded it into, so
both are read here through the same classes (``load_config``), never restated:

- ``therapy`` (CRT): the eikonal solver of the sweep (``therapy.solver`` builds an
  ``electrophysiology.eikonal.EikonalConfig`` with the stage's speeds: tolerance and sweep limit
  are that class's values) and, when ``em_top_k`` > 0, the electromechanical beats
  (``electromechanics`` -> ``mechanics.electromechanics.EMConfig``: time steps, Newton rtol / atol
  / iteration limit; linear solver ``mechanics.newton.DEFAULT_KSP_OPTIONS``; 3D-0D volume
  consistency ``circulation.simulate.CoupledCirculation``);
- ``ep``: a monodomain (``MonodomainConfig``: dt, CG rtol / iterations) or eikonal configuration;
- ``em``: an ``EMConfig``;
- any other stage: recorded keys that name a tolerance, iteration limit or time step, as recorded.

A configuration that no longer loads (renamed keys) is listed as recorded, with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from cardiotwin.errors import ConfigError
from cardiotwin.report.casedata import scalar_items

log = logging.getLogger(__name__)

# Columns: stage, solver, setting, value, unit, where the value comes from.
Row = list[Any]
_GENERIC_TOKENS = frozenset(("tol", "rtol", "atol", "tolerance", "dt", "newton", "ksp", "snes"))


def _unit(cls: type, name: str) -> str:
    f = {x.name: x for x in dataclasses.fields(cls)}.get(name)
    return str(f.metadata.get("unit", "")) if f is not None else ""


def _row(stage: str, solver: str, cfg: Any, name: str, source: str) -> Row:
    return [stage, solver, name, getattr(cfg, name), _unit(type(cfg), name), source]


def eikonal_rows(stage: str, data: dict[str, Any] | None, *, source: str) -> list[Row]:
    """Tolerance and sweep limit of the eikonal solver (``EikonalConfig`` loaded from ``data``)."""
    from cardiotwin.config import load_config
    from cardiotwin.electrophysiology.eikonal import EikonalConfig

    cfg = load_config(EikonalConfig, data or {}, source=source)
    where = source if data else f"EikonalConfig defaults ({source} sets only the speeds)"
    names = [k for k in ("backend", "tolerance", "max_sweeps", "factor_radius", "device") if hasattr(cfg, k)]
    return [_row(stage, "eikonal", cfg, k, where) for k in names]


def em_rows(stage: str, data: dict[str, Any], *, source: str) -> list[Row]:
    """Time steps, Newton and linear-solver settings of an electromechanical beat."""
    from cardiotwin.circulation.simulate import CoupledCirculation
    from cardiotwin.config import load_config
    from cardiotwin.mechanics.electromechanics import EMConfig
    from cardiotwin.mechanics.newton import DEFAULT_KSP_OPTIONS

    cfg = load_config(EMConfig, data, source=source)
    where = f"{source} (EMConfig defaults where not set)"
    rows = [_row(stage, "electromechanics time stepping", cfg, k, where)
            for k in ("dt", "diastolic_dt", "adaptive_dt", "beat_duration")]
    mech = cfg.mechanics
    rows += [_row(stage, "mechanics Newton", mech, k, where)
             for k in ("snes_rtol", "snes_atol", "snes_max_it", "jacobian_contraction", "min_load_fraction")]
    rows.append([stage, "mechanics Newton", "quadrature_degree", mech.quadrature(), "", where])
    rows += [[stage, "mechanics linear solver (KSP, prefix-overridable by PETSC_OPTIONS)", k, v, "",
              "mechanics.newton.DEFAULT_KSP_OPTIONS"] for k, v in DEFAULT_KSP_OPTIONS.items()]
    defaults = {f.name: f.default for f in dataclasses.fields(CoupledCirculation) if f.name in ("tol_ml", "rtol")}
    rows += [[stage, "3D-0D coupling (volume consistency)", k, v, "mL" if k == "tol_ml" else "",
              "circulation.simulate.CoupledCirculation defaults"] for k, v in defaults.items()]
    return rows


def monodomain_rows(stage: str, data: dict[str, Any], *, source: str) -> list[Row]:
    from cardiotwin.config import load_config
    from cardiotwin.electrophysiology.monodomain import MonodomainConfig

    cfg = load_config(MonodomainConfig, data, source=source)
    where = f"{source} (MonodomainConfig defaults where not set)"
    return [_row(stage, "monodomain", cfg, k, where) for k in ("dt", "theta", "splitting", "mass", "cg_rtol",
                                                                 "cg_max_iterations", "precision")]


def _generic_rows(stage: str, config: dict[str, Any], *, source: str, note: str = "") -> list[Row]:
    return [[stage, "as recorded" + (f" ({note})" if note else ""), k, v, "", source]
            for k, v in scalar_items(config, depth=3) if _is_solver_key(k)]


def _is_solver_key(key: str) -> bool:
    """A recorded key naming a tolerance, an iteration limit or a time step (``ksp_rtol``, ``em.dt``...)."""
    tokens = set(re.split(r"[._]", key.lower()))
    return bool(tokens & _GENERIC_TOKENS) or "max_it" in key.lower() or "max_sweeps" in key.lower()


def solver_settings(manifest: dict[str, Any]) -> list[Row]:
    """Rows (stage, solver, setting, value, unit, source) for every successful stage of a case."""
    rows: list[Row] = []
    for stage, rec in (manifest.get("stages") or {}).items():
        if not isinstance(rec, dict) or rec.get("status") != "ok" or not isinstance(rec.get("config"), dict):
            continue
        config = rec["config"]
        source = f"manifest.json stages.{stage}.config"
        try:
            if stage == "therapy":
                rows += eikonal_rows(stage, config.get("eikonal"), source=source)
                em = config.get("electromechanics")
                if int(config.get("em_top_k", 0) or 0) > 0 and isinstance(em, dict):
                    rows += em_rows(stage, em, source=f"{source}.electromechanics")
            elif stage == "em":
                rows += em_rows(stage, config, source=source)
            elif stage == "ep":
                if "v_l" in config or "max_sweeps" in config:
                    rows += eikonal_rows(stage, config, source=source)
                else:
                    rows += monodomain_rows(stage, config, source=source)
            elif stage != "report":
                rows += _generic_rows(stage, config, source=source)
        except (ConfigError, TypeError, ValueError) as exc:
            log.info("%s: configuration does not load (%s); listing it as recorded", source, exc)
            rows += _generic_rows(stage, config, source=source, note=f"does not load into its class: {exc}")
    return rows
