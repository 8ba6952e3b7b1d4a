"""Grid convergence index (GCI) for calculation verification.

Procedure of Celik et al. 2008, "Procedure for estimation and reporting of uncertainty due to
discretization in CFD applications", J Fluids Eng 130:078001 (the ASME V&V 20 recommendation,
after Roache 1994): three systematically refined solutions phi_1 (finest) .. phi_3 (coarsest)
with representative sizes h_1 < h_2 < h_3 give the observed order p, the Richardson
extrapolation phi_ext and GCI_fine = 1.25 e_a / (r^p - 1). With only two solutions the formal
order of the method is assumed and Roache's safety factor 3 is used instead of 1.25.

The same formulae serve time-step refinement (h = dt) and non-nested (re-meshed) grids with
non-constant refinement ratios r21 != r32 (Celik 2008 eqs. 4-6, h = (V / N)^(1/3) in 3D).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GCIResult:
    """Discretisation-uncertainty estimate of one output quantity.

    sizes: representative sizes (finest first, any unit: mm or ms); values: the output at each
    size; observed_order: p (None if the three solutions oscillate or do not converge);
    extrapolated: Richardson value phi_ext (None when p is None); rel_error_fine: e_a between
    the two finest solutions (fraction); gci_fine: GCI of the finest solution (fraction, None if
    not computable); converged: ``"monotone"``, ``"oscillatory"``, ``"divergent"``,
    ``"two-level"`` or ``"identical"``; safety_factor: 1.25 (three levels) or 3.0 (two).
    """

    sizes: tuple[float, ...]
    values: tuple[float, ...]
    observed_order: float | None
    extrapolated: float | None
    rel_error_fine: float
    gci_fine: float | None
    converged: str
    safety_factor: float

    def to_dict(self) -> dict[str, object]:
        return {
            "sizes": list(self.sizes), "values": list(self.values), "observed_order": self.observed_order,
            "extrapolated": self.extrapolated, "rel_error_fine": self.rel_error_fine, "gci_fine": self.gci_fine,
            "convergence": self.converged, "safety_factor": self.safety_factor,
        }


def _rel(a: float, b: float) -> float:
    scale = abs(a) if a != 0.0 else max(abs(b), 1e-300)
    return abs(a - b) / scale


def _order_equation(p: float, r21: float, r32: float) -> float:
    """ln(r21^p (r32^p - 1) / (r21^p - 1)): ln(e32 / e21) of an exact power law e ~ h^p (p > 0)."""
    return p * math.log(r21) + math.log(math.expm1(p * math.log(r32))) - math.log(math.expm1(p * math.log(r21)))


def observed_order(sizes: tuple[float, float, float], values: tuple[float, float, float]) -> tuple[float, int]:
    """Observed order p and sign s of Celik 2008 eqs. (4)-(6); sizes finest first.

    Celik's equation p = |ln|e32/e21| + q(p)| / ln r21 with q(p) = ln((r21^p - s)/(r32^p - s)).
    For monotone convergence (s = +1) it is the same as r21^p (r32^p - 1) / (r21^p - 1) = e32/e21,
    whose left side increases strictly with p (from ln r32 / ln r21 at p -> 0), so it is solved
    by bisection, which always converges (q = 0 and p = ln(e32/e21) / ln r for a constant ratio);
    oscillatory sequences (s = -1) keep the fixed-point iteration of the paper.
    """
    h1, h2, h3 = sizes
    f1, f2, f3 = values
    r21, r32 = h2 / h1, h3 / h2
    e21, e32 = f2 - f1, f3 - f2
    s = 1 if e32 / e21 >= 0 else -1
    ratio = abs(e32 / e21)
    if s == 1 and ratio > math.log(r32) / math.log(r21):
        target = math.log(ratio)
        lo, hi = 0.0, 1.0
        while _order_equation(hi, r21, r32) < target and hi < 1e3:
            lo, hi = hi, 2.0 * hi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _order_equation(mid, r21, r32) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13 * max(1.0, hi):
                break
        return 0.5 * (lo + hi), s
    p = abs(math.log(ratio)) / math.log(r21)
    for _ in range(200):
        q = math.log((r21**p - s) / (r32**p - s))
        p_new = abs(math.log(ratio) + q) / math.log(r21)
        if abs(p_new - p) < 1e-12:
            p = p_new
            break
        p = p_new
    return p, s


def grid_convergence(sizes: list[float] | tuple[float, ...], values: list[float] | tuple[float, ...], *,
                     formal_order: float = 2.0) -> GCIResult:
    """GCI of an output computed at 2 or 3 sizes (any order; sorted finest first here).

    sizes: mesh sizes (mm) or time steps (ms), all > 0 and distinct; values: the output at each.
    formal_order: the method's theoretical order, used when only two levels are given.
    """
    if len(sizes) != len(values) or len(sizes) not in (2, 3):
        raise ValueError(f"need 2 or 3 (size, value) pairs, got {len(sizes)} sizes and {len(values)} values")
    pairs = sorted(zip((float(h) for h in sizes), (float(v) for v in values)))
    hs = tuple(h for h, _ in pairs)
    vs = tuple(v for _, v in pairs)
    if any(h <= 0 for h in hs) or len(set(hs)) != len(hs):
        raise ValueError(f"sizes must be positive and distinct, got {hs}")
    if not all(math.isfinite(v) for v in vs):
        raise ValueError(f"values must be finite, got {vs}")
    e_a = _rel(vs[0], vs[1])
    if vs[0] == vs[1] and (len(vs) == 2 or vs[1] == vs[2]):
        return GCIResult(hs, vs, None, vs[0], 0.0, 0.0, "identical", 1.25 if len(vs) == 3 else 3.0)
    r21 = hs[1] / hs[0]
    if len(vs) == 2:
        p = formal_order
        ext = (r21**p * vs[0] - vs[1]) / (r21**p - 1.0)
        return GCIResult(hs, vs, None, ext, e_a, 3.0 * e_a / (r21**p - 1.0), "two-level", 3.0)
    e21, e32 = vs[1] - vs[0], vs[2] - vs[1]
    if e21 == 0.0:
        return GCIResult(hs, vs, None, None, e_a, None, "divergent", 1.25)
    if e32 / e21 < 0:
        # Oscillatory convergence: no meaningful order; report the spread as the uncertainty.
        spread = (max(vs) - min(vs)) / 2.0
        return GCIResult(hs, vs, None, None, e_a, abs(spread / vs[0]) if vs[0] else None, "oscillatory", 1.25)
    # A positive order exists only when e32/e21 exceeds ln r32 / ln r21 (its p -> 0 limit; 1 for a
    # constant ratio, where this is |e32| > |e21|): otherwise the differences do not shrink as the
    # grid is refined fast enough for any p > 0: not in the asymptotic range.
    if e32 / e21 <= math.log(hs[2] / hs[1]) / math.log(r21):
        return GCIResult(hs, vs, None, None, e_a, None, "divergent", 1.25)
    p, _ = observed_order(hs, vs)  # type: ignore[arg-type]
    ext = (r21**p * vs[0] - vs[1]) / (r21**p - 1.0)
    return GCIResult(hs, vs, p, ext, e_a, 1.25 * e_a / (r21**p - 1.0), "monotone", 1.25)


def refinement_table(sizes: list[float], levels: list[dict], quantities: tuple[str, ...] | list[str], *,
                     stage_index: int, error_key: str, error_note: Callable[[str, float], str],
                     outside_asymptotic: Callable[[dict], str | None]) -> tuple[dict[str, dict], list[str]]:
    """GCI (formal order 1) of each quantity over refinement levels, as a study table.

    sizes: the level sizes (mm or ms); levels: one dict per level holding each quantity's value;
    stage_index: the level the stage itself ran at: its error against the finest level is stored
    under ``error_key`` and described by ``error_note(quantity, percent)``.
    outside_asymptotic(gci_dict) gives a reason when three levels are not in the asymptotic range
    (None otherwise); the two finer levels alone (p = 1, Fs = 3) then also give ``gci_two_finest``.
    Quantities with a non-finite value at some level are left out. Returns (table, notes).
    """
    table: dict[str, dict] = {}
    notes: list[str] = []
    finest = min(range(len(sizes)), key=lambda i: sizes[i])
    for q in quantities:
        vals = [float(lvl[q]) for lvl in levels]
        if not all(math.isfinite(v) for v in vals):
            continue
        g = grid_convergence(sizes, vals, formal_order=1.0).to_dict()
        table[q] = g
        if stage_index != finest and vals[finest] != 0.0:
            err = 100.0 * (vals[stage_index] - vals[finest]) / abs(vals[finest])
            g[error_key] = err
            notes.append(error_note(q, err))
        why = outside_asymptotic(g) if len(levels) == 3 else None
        if why:
            two = sorted(range(3), key=lambda i: sizes[i])[:2]
            fine = grid_convergence([sizes[i] for i in two], [vals[i] for i in two], formal_order=1.0)
            g["gci_two_finest"] = fine.gci_fine
            gci_txt = f"{100.0 * fine.gci_fine:.2g} %" if fine.gci_fine is not None else "not defined"
            notes.append(f"{q}: {why}; the two finer levels alone (p = 1, Fs = 3) give GCI {gci_txt}.")
    return table, notes
