"""Stimulation protocols: boxes, spheres or points, with start times, durations, strengths and
pacing trains. Strength is a source on dV/dt in mV/ms (Niederer: 50,000 uA/cm^3 / (chi Cm) = 35.71)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    # Which tets make up the region for the FE source (``load_mm3``): "centroid" (centroid inside) or
    # "all_vertices" (every vertex inside, as dolfinx.mesh.locate_entities tags cells).
    cells_by: Literal["centroid", "all_vertices"] = "centroid"

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

    def contains(self, points_mm: np.ndarray) -> np.ndarray:
        """(K,) bool: which of ``points_mm`` (K, 3) lie in the region (box with a 1e-9 mm margin,
        sphere, or the ball of ``radius_mm`` about a point stimulus; a point with radius 0 holds none)."""
        pts = np.asarray(points_mm)
        if self.kind == "box":
            eps = 1e-9
            return np.all((pts >= np.asarray(self.lo_mm) - eps) & (pts <= np.asarray(self.hi_mm) + eps), axis=1)
        if self.kind in ("sphere", "point"):
            return np.linalg.norm(pts - np.asarray(self.centre_mm), axis=1) <= self.radius_mm
        raise ConfigError(f"unknown stimulus kind {self.kind!r}; use box, sphere or point")

    def load_mm3(self, points_mm: np.ndarray, cells: np.ndarray, lumped_mass_mm3: np.ndarray,
                 cell_mask: np.ndarray | None = None) -> np.ndarray:
        """(N,) FE source weights int_{Omega_s} phi_i dx (mm^3) of the stimulated region Omega_s.

        Omega_s is the union of the P1 tets ``cells`` (M, 4) whose centroid (``cells_by``
        "centroid") or all of whose vertices ("all_vertices") lie in the region (restricted to
        ``cell_mask`` when given, e.g. conducting cells), so a source of
        ``strength`` mV/ms contributes ``strength * load`` to the right-hand side of
        M dV/dt = ..., as in a P1 FE code that integrates the stimulus over tagged cells
        (fenicsx-beat, Niederer 2011). On a grid-aligned box this is exactly the box. Where no
        centroid lies in the region (a point stimulus, a region smaller than one tet) the
        stimulated nodes of ``nodes`` get their lumped mass instead. Raises ConfigError if the
        region holds no mesh node."""
        idx = self.nodes(points_mm)
        pts = np.asarray(points_mm, dtype=float)
        cells = np.asarray(cells)
        if self.cells_by == "centroid":
            inside = self.contains(pts[cells].mean(axis=1))
        elif self.cells_by == "all_vertices":
            inside = self.contains(pts[cells].reshape(-1, 3)).reshape(cells.shape).all(axis=1)
        else:
            raise ConfigError(f"unknown stimulus cells_by {self.cells_by!r}; use centroid or all_vertices")
        if cell_mask is not None:
            inside &= np.asarray(cell_mask, dtype=bool)
        load = np.zeros(pts.shape[0])
        if inside.any():
            c = cells[inside]
            p = pts[c]
            vol = np.abs(np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0])) / 6.0
            np.add.at(load, c.ravel(), np.repeat(vol / 4.0, 4))  # int_T phi_i = |T| / 4 for P1
        else:
            load[idx] = np.asarray(lumped_mass_mm3)[idx]
        return load

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
    """Niederer 2011: 35.71 mV/ms for 2 ms from t = 0 in the cube [0, 1.5]^3 mm.

    The source covers the tets with all vertices in the cube, as the fenicsx-beat P1 reference of
    shared/BENCHMARKS.md tags them (dolfinx.mesh.locate_entities). On grids that do not resolve 1.5 mm
    (dx 0.2) that is [0, 1.4]^3; tets by centroid instead gave 3.58 instead of 2.74 mm^3 and moved P5
    / P9 0.7 / 0.9 ms earlier than the reference."""
    return Stimulus(kind="box", lo_mm=(0.0, 0.0, 0.0), hi_mm=(1.5, 1.5, 1.5), duration_ms=2.0, strength_mv_per_ms=35.71,
                    cells_by="all_vertices")


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
