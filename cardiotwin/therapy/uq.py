"""Uncertainty of the CRT ranking: quasi-Monte Carlo inputs, probability of being best, intervals,
sensitivity indices.

Uncertain inputs (uniform, around the nominal ``ConductionConfig``): fibre and cross-fibre
conduction speeds +-``cv_rel`` (20 %), fibre angle +-``fibre_angle_deg`` (10 deg, rotation about
the transmural axis) and the scar border-zone width +-``border_zone_rel``. Points come from a
scrambled Sobol sequence (``scipy.stats.qmc``, Owen scrambling, seeded: deterministic). The same
points are run for the lead sites and for the timing-sweep winner of each top site.

Passive stiffness does not change activation, so it is no input of the activation ranking: it is
sampled separately, for the electromechanics of the best protocols (``stiffness_samples`` points
of a 1D scrambled Sobol sequence, the material's stress scale (Guccione C, or every Holzapfel-
Ogden ``a``) times 1 +- ``stiffness_rel``). Why +-30 % by default: patient-specific estimates of
the Guccione scale from clinical pressure and image data are weakly identifiable and scatter by
tens of per cent (Xi et al., Med Image Anal 2013;17:133; Asner et al., Biomech Model Mechanobiol
2016;15:1121); a uniform scale at fixed exponents keeps the shape of the law and scales passive
stress linearly. Each sample needs its own baseline beat (dP/dt change is relative to the LBBB
beat at the same stiffness): (1 + em_top_k) beats per sample.

Sensitivity: first-order indices S_i = Var(E[Y | X_i]) / Var(Y), estimated from the same QMC
points by binning X_i into equiprobable bins (the "given data" estimator of Plischke et al.,
Eur J Oper Res 2013;226:536), for Y = the TAT change of the nominal best protocol and
Y = 1{nominal best is still best}.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import qmc

from cardiotwin.config import quantity
from cardiotwin.therapy.conduction import ConductionConfig

log = logging.getLogger(__name__)

INPUT_NAMES: tuple[str, ...] = ("cv_fibre", "cv_cross", "fibre_angle_offset", "border_zone_mm")


@dataclass(frozen=True)
class UQConfig:
    """Quasi-Monte Carlo design. ``samples`` 0 disables the activation UQ (nominal only);
    ``stiffness_samples`` 0 disables the stiffness UQ of the electromechanics (each sample costs
    1 + em_top_k beats, about 2 min each on the 5 mm CT twin on this 2-core CPU)."""

    samples: int = 16
    seed: int = 0
    cv_rel: float = quantity(0.2, "", doc="relative half-range of both conduction speeds")
    fibre_angle_deg: float = quantity(10.0, "deg", doc="half-range of the fibre rotation")
    border_zone_rel: float = quantity(0.5, "", doc="relative half-range of the border-zone width")
    stiffness_samples: int = 2
    stiffness_rel: float = quantity(0.3, "", doc="relative half-range of the passive stiffness scale")

    def validate(self) -> None:
        if self.samples < 0 or self.stiffness_samples < 0:
            raise ValueError("samples and stiffness_samples must be >= 0")
        if not 0.0 <= self.cv_rel < 1.0 or not 0.0 <= self.border_zone_rel < 1.0 or not 0.0 <= self.stiffness_rel < 1.0:
            raise ValueError("relative half-ranges must lie in [0, 1)")


def design(cfg: UQConfig) -> np.ndarray:
    """(samples, 4) points in [0, 1)^4 from a scrambled, seeded Sobol sequence."""
    cfg.validate()
    if cfg.samples == 0:
        return np.zeros((0, len(INPUT_NAMES)))
    sampler = qmc.Sobol(d=len(INPUT_NAMES), scramble=True, seed=cfg.seed)
    m = math.ceil(math.log2(cfg.samples))
    return sampler.random_base2(m)[: cfg.samples]


def stiffness_factors(cfg: UQConfig) -> np.ndarray:
    """(stiffness_samples,) multipliers of the passive stress scale in [1 - rel, 1 + rel), from a
    scrambled, seeded 1D Sobol sequence (seed offset from the activation design's)."""
    cfg.validate()
    if cfg.stiffness_samples == 0:
        return np.zeros(0)
    sampler = qmc.Sobol(d=1, scramble=True, seed=cfg.seed + 7919)
    m = math.ceil(math.log2(cfg.stiffness_samples))
    u = sampler.random_base2(m)[: cfg.stiffness_samples, 0]
    return 1.0 + cfg.stiffness_rel * (2.0 * u - 1.0)


def sample_conduction(nominal: ConductionConfig, unit_row: Sequence[float], cfg: UQConfig) -> ConductionConfig:
    """Map one design row in [0, 1)^4 to a ConductionConfig around ``nominal``."""
    u = 2.0 * np.asarray(unit_row, dtype=float) - 1.0  # [-1, 1)
    cv_f = nominal.cv_fibre * (1.0 + cfg.cv_rel * u[0])
    cv_c = min(nominal.cv_cross * (1.0 + cfg.cv_rel * u[1]), cv_f)
    return dataclasses.replace(
        nominal,
        cv_fibre=float(cv_f),
        cv_cross=float(cv_c),
        fibre_angle_offset=float(nominal.fibre_angle_offset + cfg.fibre_angle_deg * u[2]),
        border_zone_mm=float(nominal.border_zone_mm * (1.0 + cfg.border_zone_rel * u[3])),
    )


def input_values(conductions: Sequence[ConductionConfig]) -> np.ndarray:
    """(S, 4) physical input values of sampled configs, in the order of INPUT_NAMES."""
    return np.array([[getattr(c, n) for n in INPUT_NAMES] for c in conductions], dtype=float)


def probability_best(scores: Mapping[int, Mapping[str, float]], eligible: Sequence[str], *,
                     tie_tol: float = 1e-6) -> dict[str, float]:
    """Fraction of samples in which each eligible protocol has the lowest score.

    scores: sample -> protocol name -> score (lower is better, e.g. TAT change %). Protocols within
    ``tie_tol`` of a sample's lowest score share that sample's win equally: timings that pace well
    before the intrinsic breakthrough give the same activation pattern, shifted in time, so their
    scores differ by round-off only.
    """
    wins = {name: 0.0 for name in eligible}
    n = 0
    for per in scores.values():
        cand = {k: per[k] for k in eligible if k in per and np.isfinite(per[k])}
        if not cand:
            continue
        n += 1
        low = min(cand.values())
        tied = [k for k, v in cand.items() if v <= low + tie_tol]
        for k in tied:
            wins[k] += 1.0 / len(tied)
    return {k: (v / n if n else float("nan")) for k, v in wins.items()}


def interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval (2.5 %, 97.5 % at level 0.95) of finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return (float("nan"), float("nan"))
    lo = 100.0 * (1.0 - level) / 2.0
    return (float(np.percentile(v, lo)), float(np.percentile(v, 100.0 - lo)))


def first_order_indices(x: np.ndarray, y: np.ndarray, *, bins: int | None = None) -> np.ndarray:
    """(d,) first-order sensitivity indices of y (S,) on the columns of x (S, d), given-data
    estimator with equiprobable bins (default ~sqrt(S), at least 2). 0 when y is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    s = y.size
    var = float(np.var(y))
    if s < 4 or var <= 1e-15:
        return np.zeros(x.shape[1])
    nb = bins or max(2, int(round(math.sqrt(s))))
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        groups = np.array_split(order, nb)
        means = np.array([y[g].mean() for g in groups if g.size])
        sizes = np.array([g.size for g in groups if g.size])
        out[j] = float(np.sum(sizes * (means - y.mean()) ** 2) / s / var)
    return np.clip(out, 0.0, 1.0)
