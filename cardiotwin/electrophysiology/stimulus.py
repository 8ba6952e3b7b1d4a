"""Stimulation protocols: boxes, spheres or points, with start times, durations, strengths and
pacing trains. Strength is a source on dV/dt in mV/ms (Niederer: 50,000 uA/cm^3 / (chi Cm) = 35.71)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cardiotwin.errors import ConfigError


@dataclass(frozen=True)
class Stimulus:
    """One stimulated region. kind: "box" (lo, hi corners, mm), "sphere" (centre, radius_mm) or
    "point" (centre, snapped to the nearest node, radius_mm ignored unless > 0).
    start_ms, duration_ms, strength_mv_per_ms; period_ms > 0 and count > 1 give a pacing train."""

    kind: str
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius_mm: float = 0.0
    lo_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hi_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    start_ms: float = 0.0
    duration_ms: float = 2.0
    strength_mv_per_ms: float = 35.71
    period_ms: float = 0.0
    count: int = 1

    def nodes(self, points_mm: np.ndarray, *, tol_mm: float | None = None) -> np.ndarray:
        """Indices of the stimulated nodes; ConfigError if the region holds none (outside the mesh)."""
        pts = np.asarray(points_mm)
        if self.kind == "box":
            eps = 1e-9
            mask = np.all((pts >= np.asarray(self.lo_mm) - eps) & (pts <= np.asarray(self.hi_mm) + eps), axis=1)
            idx = np.flatnonzero(mask)
        elif self.kind == "sphere":
            idx = np.flatnonzero(np.linalg.norm(pts - np.asarray(self.centre_mm), axis=1) <= self.radius_mm)
        elif self.kind == "point":
            d = np.linalg.norm(pts - np.asarray(self.centre_mm), axis=1)
            k = int(np.argmin(d))
            if tol_mm is not None and d[k] > tol_mm:
                raise ConfigError(f"stimulus point {self.centre_mm} mm lies {d[k]:.2f} mm from the nearest mesh "
                                  f"node (more than {tol_mm:.2f} mm): outside the mesh")
            idx = np.flatnonzero(d <= max(self.radius_mm, d[k]))
        else:
            raise ConfigError(f"unknown stimulus kind {self.kind!r}; use box, sphere or point")
        if idx.size == 0:
            raise ConfigError(f"stimulus {self.describe()} holds no mesh node: outside the mesh")
        return idx

    def onsets_ms(self) -> list[float]:
        return [self.start_ms + k * self.period_ms for k in range(max(1, self.count))]

    def active(self, t_ms: float) -> bool:
        """True when ``t_ms`` falls into one of the pulses [onset, onset + duration)."""
        return any(t0 <= t_ms < t0 + self.duration_ms for t0 in self.onsets_ms())

    def describe(self) -> str:
        where = (f"box {self.lo_mm}-{self.hi_mm}" if self.kind == "box" else f"{self.kind} at {self.centre_mm}"
                 + (f" r={self.radius_mm}" if self.radius_mm else ""))
        train = f", x{self.count} every {self.period_ms} ms" if self.count > 1 else ""
        return f"{where} mm @ {self.start_ms} ms for {self.duration_ms} ms, {self.strength_mv_per_ms} mV/ms{train}"


def niederer_stimulus() -> Stimulus:
    """Niederer 2011: 35.71 mV/ms for 2 ms from t = 0 in the cube [0, 1.5]^3 mm."""
    return Stimulus(kind="box", lo_mm=(0.0, 0.0, 0.0), hi_mm=(1.5, 1.5, 1.5), duration_ms=2.0, strength_mv_per_ms=35.71)


def parse_pace(text: str, *, radius_mm: float = 1.5, duration_ms: float = 2.0,
               strength_mv_per_ms: float = 50.0) -> Stimulus:
    """``"X,Y,Z"`` or ``"X,Y,Z@T"`` (mm, ms) -> a sphere stimulus at that point and delay."""
    try:
        where, _, when = text.partition("@")
        xyz = tuple(float(v) for v in where.split(","))
        t = float(when) if when else 0.0
    except ValueError as exc:
        raise ConfigError(f"--pace {text!r}: expected X,Y,Z or X,Y,Z@T in mm and ms") from exc
    if len(xyz) != 3:
        raise ConfigError(f"--pace {text!r}: expected three coordinates X,Y,Z")
    return Stimulus(kind="point", centre_mm=xyz, radius_mm=radius_mm, start_ms=t, duration_ms=duration_ms,
                    strength_mv_per_ms=strength_mv_per_ms)
