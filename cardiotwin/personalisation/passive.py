"""Passive twin: unloading and the end-diastolic pressure-volume relation (EDPVR) as a function
of a passive stiffness factor, and its calibration against a target EDPVR (Klotz, or a twin's own).

The stiffness factor multiplies the strain energy of the configured material (``ScaledMaterial``);
it is a dolfinx Constant, so one compiled problem serves every evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx
import ufl
from petsc4py import PETSc

from cardiotwin.errors import StageError
from cardiotwin.mechanics.electromechanics import EMConfig
from cardiotwin.mechanics.materials import Material
from cardiotwin.personalisation.calibration import Fit1D, gauss_newton_1d
from cardiotwin.personalisation.unloading import UnloadConfig, UnloadResult, passive_mechanics, unload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaledMaterial:
    """``base`` with its strain energy times ``scale`` (a dolfinx Constant): every stress scale of
    the law multiplied, exponents kept (as ``therapy.response.scale_stiffness`` does)."""

    base: Material
    scale: Any

    def validate(self) -> None:
        self.base.validate()

    def strain_energy(self, F, f0, s0, n0, *, isochoric: bool):  # noqa: ANN001, ANN201 - UFL
        return self.scale * self.base.strain_energy(F, f0, s0, n0, isochoric=isochoric)

    def shear_modulus(self):  # noqa: ANN201 - UFL scalar (the mechanics' pressure stabilisation scales with it)
        return self.scale * self.base.shear_modulus()


class PassiveTwin:
    """The passive mechanics of a twin whose mesh holds the imaged (loaded) ED geometry."""

    def __init__(self, mesh: dolfinx.mesh.Mesh, facet_tags: dolfinx.mesh.MeshTags,
                 fibres: tuple[ufl.core.expr.Expr, ufl.core.expr.Expr, ufl.core.expr.Expr],
                 em_cfg: EMConfig, *, unload_cfg: UnloadConfig = UnloadConfig()) -> None:
        self.mesh = mesh
        self.scale = dolfinx.fem.Constant(mesh, PETSc.ScalarType(1.0))
        base = em_cfg.guccione if em_cfg.material == "guccione" else em_cfg.holzapfel_ogden
        self.mech = passive_mechanics(mesh, facet_tags, fibres, em_cfg, material=ScaledMaterial(base, self.scale))
        self.cavities = list(self.mech.boundaries.cavities)
        self.imaged = mesh.geometry.x.copy()
        self.unload_cfg = unload_cfg
        self.last_unload: UnloadResult | None = None
        self.references: dict[float, np.ndarray] = {}  # stiffness factor -> unloaded reference

    def evaluate(self, factor: float, pressures_kpa: Mapping[str, float], fractions: tuple[float, ...]) -> dict[str, Any]:
        """Unload at stiffness ``factor`` (starting from the unloaded reference of the nearest
        factor evaluated before) and reinflate in load steps ``fractions`` of the ED pressures. Returns {"volumes_ml": {cavity: [V at 0, V at each fraction]}, "unloading": summary}.
        The mesh is left on the unloaded reference."""
        self.scale.value = float(factor)
        start = self.references.get(min(self.references, key=lambda f: abs(np.log(f / factor)))) if self.references else None
        self.mesh.geometry.x[:] = self.imaged
        try:
            res = unload(self.mech, cfg=self.unload_cfg, pressures_kpa=pressures_kpa, initial_reference_mm=start)
        except StageError:
            if start is None:
                raise
            log.info("unloading from the neighbouring reference failed; starting from the imaged mesh")
            res = unload(self.mech, cfg=self.unload_cfg, pressures_kpa=pressures_kpa)
        self.references[float(factor)] = res.reference_mm
        self.last_unload = res
        m = self.mech
        m.state.x.array[:] = 0.0
        m.state.x.scatter_forward()
        for c in m.pressures_kpa.values():
            c.value = 0.0
        vols = {c: [m.cavity_volume_ml(c)] for c in self.cavities}
        for f in fractions:
            m.solve_to(pressures_kpa={c: f * pressures_kpa[c] for c in self.cavities}, label=f"EDPVR at {f:g} x EDP",
                       initial_fraction=0.5)
            for c in self.cavities:
                vols[c].append(m.cavity_volume_ml(c))
        return {"volumes_ml": vols, "unloading": {k: v for k, v in res.summary().items() if k != "iterations"},
                "unloading_iterations": len(res.iterations)}

    def restore_imaged(self) -> None:
        self.mesh.geometry.x[:] = self.imaged


def fit_passive_stiffness(
    twin: PassiveTwin,
    *,
    pressures_kpa: Mapping[str, float],
    fractions: tuple[float, ...],
    target_lv_ml: Callable[[np.ndarray], np.ndarray] | np.ndarray,
    sigma_ml: float,
    x0: float = 0.0,
    max_evaluations: int = 6,
    data: str = "",
) -> tuple[Fit1D, dict[str, Any]]:
    """Fit the stiffness factor so that the LV volumes of the unloaded twin at 0 and at
    ``fractions`` of the ED pressures match ``target_lv_ml`` (a function of pressure in kPa, or the
    volumes themselves). Returns (fit, the EDPVR of the best evaluation) with the mesh left on the
    best evaluation's unloaded reference."""
    p_lv = np.array([0.0, *fractions]) * pressures_kpa["LV"]
    target = np.asarray(target_lv_ml(p_lv) if callable(target_lv_ml) else target_lv_ml, dtype=float)
    last: dict[float, dict[str, Any]] = {}

    t_start = time.perf_counter()

    def evaluate(factor: float) -> tuple[np.ndarray, dict[str, Any]]:
        out = twin.evaluate(factor, pressures_kpa, fractions)
        last[factor] = out
        log.info("calibrate: passive evaluation %d, stiffness x%.3g -> LV volume at %s kPa: %s mL (target %s), "
                 "unloading %d iterations; %.0f s elapsed", len(last), factor, np.round(p_lv, 2).tolist(),
                 np.round(out["volumes_ml"]["LV"], 1).tolist(), np.round(target, 1).tolist(),
                 out["unloading_iterations"], time.perf_counter() - t_start)
        return np.asarray(out["volumes_ml"]["LV"]) - target, {"volumes_ml": out["volumes_ml"],
                                                               "unloading": out["unloading"]}

    # the imaged ED point is reproduced by construction: its residual carries no information
    sigma = np.full(len(p_lv), sigma_ml)
    fit = gauss_newton_1d(evaluate, name="passive_stiffness_factor", unit="", x0=x0, sigma=sigma,
                          max_evaluations=max_evaluations, bounds=(np.log(0.05), np.log(20.0)), max_step=0.5, data=data)
    if fit.value not in last or twin.last_unload is None or not np.isclose(twin.scale.value, fit.value):
        out = twin.evaluate(fit.value, pressures_kpa, fractions)
        last[fit.value] = out
    edpvr = {"pressures_kpa": p_lv.tolist(), "target_lv_ml": target.tolist(), **last[fit.value]}
    return fit, edpvr
