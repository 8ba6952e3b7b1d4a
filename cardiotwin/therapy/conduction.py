"""Conduction parameters, tissue model and the activation-solver protocol of the CRT sweep.

The sweep never solves the eikonal equation itself: it asks an ``ActivationSolver`` (a callable
``(mesh, *, sources, tissue) -> activation_times_ms``) for the activation map of each pacing
protocol. ``cardiotwin.therapy.solver.eikonal_solver`` binds it to the electrophysiology stage's
eikonal solver; tests may pass any callable with the same signature.

Tissue: transversely isotropic conduction (speed ``cv_fibre`` along ``f0``, ``cv_cross`` across),
an endocardial layer (cells with a face on LV_ENDO or RV_ENDO) conducting isotropically at
``endocardial_cv_factor * cv_fibre`` (the distal Purkinje network, intact in LBBB once reached;
the "fast endocardial conduction" of Lee et al., Europace 2019;21:1 and Strocchi et al., PLoS ONE
2020;15:e0235145), scar core cells (``CellTag.SCAR``) do not conduct, border-zone cells (within
``border_zone_mm`` of the core) conduct at ``border_zone_cv_factor`` times the healthy speeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.spatial import cKDTree

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.config import quantity
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConductionConfig:
    """Nominal conduction of the ventricles (speeds mm/ms = m/s, times ms, lengths mm).

    Defaults: myocardial speeds 0.6 / 0.24 mm/ms along / across fibres (anisotropy 2.5, within
    the 2-3 range used by Lee et al. 2019 and Strocchi et al. 2020), a fast right-ventricular
    endocardial layer (Purkinje) at 2.0 mm/ms that carries the LBBB breakthrough, and an intrinsic
    atrio-ventricular conduction time of 180 ms (PR of a typical CRT candidate).
    """

    cv_fibre: float = quantity(0.6, "mm/ms")
    cv_cross: float = quantity(0.24, "mm/ms")
    purkinje_cv: float = quantity(2.0, "mm/ms", doc="fast RV endocardial conduction (LBBB: right bundle only)")
    intrinsic_av_delay: float = quantity(180.0, "ms", doc="atrial event -> first RV endocardial breakthrough")
    border_zone_mm: float = quantity(3.0, "mm", doc="slow zone around the non-conducting scar core")
    border_zone_cv_factor: float = quantity(0.5, "", doc="border-zone speed / healthy speed")
    fibre_angle_offset: float = quantity(0.0, "deg", doc="rotation of f0 about the transmural axis (UQ)")
    endocardial_cv_factor: float = quantity(1.0, "", doc="isotropic speed of the endocardial layer / cv_fibre")

    def validate(self) -> None:
        if not (self.cv_fibre > 0 and self.cv_cross > 0 and self.purkinje_cv > 0):
            raise ValueError("conduction velocities must be > 0")
        if self.cv_cross > self.cv_fibre:
            raise ValueError(f"cv_cross ({self.cv_cross}) must not exceed cv_fibre ({self.cv_fibre})")
        if self.endocardial_cv_factor < 1.0:
            raise ValueError(f"endocardial_cv_factor must be >= 1, got {self.endocardial_cv_factor}")
        if not 0.0 < self.border_zone_cv_factor <= 1.0:
            raise ValueError(f"border_zone_cv_factor must lie in (0, 1], got {self.border_zone_cv_factor}")
        if self.border_zone_mm < 0 or self.intrinsic_av_delay < 0:
            raise ValueError("border_zone and intrinsic_av_delay must be >= 0")


@dataclass(frozen=True)
class Source:
    """Stimulated nodes: ``nodes`` (K,) int64 mesh point indices, each activated at ``delays_ms`` (K,)."""

    nodes: np.ndarray
    delays_ms: np.ndarray
    label: str = ""


@dataclass(frozen=True)
class Tissue:
    """Conduction field of one mesh.

    fibres: (N, 3) unit fibre direction per point; cv_fibre_mm_per_ms / cv_cross_mm_per_ms: (M,)
    per cell; blocked_cells: (M,) bool, cells that do not conduct (scar core).
    """

    fibres: np.ndarray
    cv_fibre_mm_per_ms: np.ndarray
    cv_cross_mm_per_ms: np.ndarray
    blocked_cells: np.ndarray


class ActivationSolver(Protocol):
    """Maps (mesh, sources with delays, tissue) to (N,) activation times in ms (inf: never activated)."""

    def __call__(self, mesh: HeartMesh, *, sources: Sequence[Source], tissue: Tissue) -> np.ndarray: ...


def conducting_points(mesh: HeartMesh, tissue: Tissue) -> np.ndarray:
    """(N,) bool: points that belong to at least one conducting (non-blocked) cell."""
    ok = np.zeros(mesh.n_points, dtype=bool)
    ok[np.unique(mesh.cells[~tissue.blocked_cells])] = True
    return ok


def scar_core_cells(mesh: HeartMesh) -> np.ndarray:
    """(M,) bool: cells tagged SCAR."""
    return np.asarray(mesh.cell_tags) == int(CellTag.SCAR)


def border_zone_cells(mesh: HeartMesh, *, width_mm: float) -> np.ndarray:
    """(M,) bool: non-scar cells whose centroid lies within ``width_mm`` of a scar-cell centroid."""
    core = scar_core_cells(mesh)
    if not core.any() or width_mm <= 0:
        return np.zeros(mesh.n_cells, dtype=bool)
    centroids = mesh.points[mesh.cells].mean(axis=1)
    dist, _ = cKDTree(centroids[core]).query(centroids[~core], distance_upper_bound=width_mm)
    bz = np.zeros(mesh.n_cells, dtype=bool)
    bz[np.flatnonzero(~core)[np.isfinite(dist)]] = True
    return bz


def transmural_axis(mesh: HeartMesh) -> np.ndarray:
    """(N, 3) unit transmural direction: gradient of ``uvc_transmural`` (or n0 when absent)."""
    if "uvc_transmural" in mesh.point_data:
        from cardiotwin.fibers.ldrb import nodal_gradients

        g = nodal_gradients(mesh.points, mesh.cells, np.asarray(mesh.point_data["uvc_transmural"], dtype=float))
    else:
        g = np.asarray(mesh.point_data["n0"], dtype=float)
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    return np.divide(g, norm, out=np.zeros_like(g), where=norm > 1e-12)


def rotate_fibres(fibres: np.ndarray, axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate (N, 3) unit fibres about (N, 3) unit axes by ``angle_deg`` (Rodrigues' formula)."""
    if angle_deg == 0.0:
        return fibres
    a = np.deg2rad(angle_deg)
    k = axis
    rotated = (fibres * np.cos(a) + np.cross(k, fibres) * np.sin(a)
               + k * np.einsum("ij,ij->i", k, fibres)[:, None] * (1.0 - np.cos(a)))
    norm = np.linalg.norm(rotated, axis=1, keepdims=True)
    return np.divide(rotated, norm, out=fibres.copy(), where=norm > 1e-12)


def build_tissue(mesh: HeartMesh, cfg: ConductionConfig) -> Tissue:
    """Tissue of ``mesh`` under ``cfg``: needs point data ``f0`` (fibres stage)."""
    cfg.validate()
    if "f0" not in mesh.point_data:
        raise ValueError(f"{mesh.name or 'mesh'}: no f0 fibres (run the fibers stage first)")
    f0 = np.asarray(mesh.point_data["f0"], dtype=float)
    if cfg.fibre_angle_offset != 0.0:
        f0 = rotate_fibres(f0, transmural_axis(mesh), cfg.fibre_angle_offset)
    core = scar_core_cells(mesh)
    factor = np.where(border_zone_cells(mesh, width_mm=cfg.border_zone_mm), cfg.border_zone_cv_factor, 1.0)
    cv_f, cv_c = cfg.cv_fibre * factor, cfg.cv_cross * factor
    endo = endocardial_cells(mesh) & ~core
    cv_f = np.where(endo, cfg.endocardial_cv_factor * cv_f, cv_f)
    cv_c = np.where(endo, cv_f, cv_c)
    return Tissue(fibres=f0, cv_fibre_mm_per_ms=cv_f, cv_cross_mm_per_ms=cv_c, blocked_cells=core)


def endocardial_cells(mesh: HeartMesh) -> np.ndarray:
    """(M,) bool: cells with a face on the LV or RV endocardium (3 of their nodes on it)."""
    tags = np.isin(mesh.facet_tags, (int(FacetTag.LV_ENDO), int(FacetTag.RV_ENDO)))
    on = np.zeros(mesh.n_points, dtype=bool)
    on[np.unique(mesh.facets[tags])] = True
    return on[mesh.cells].sum(axis=1) >= 3
