"""Lead-site candidates: RV apex / septum, LV sites per AHA segment, a finer LV grid, user sites.

LV sites lie on the LV epicardium (where a coronary-sinus lead sits). Septal segments (2, 3, 8,
9, 14) have no free epicardium (the RV covers them), so their site is the LV septal endocardium
(``surface="endo"``), the position of an endocardial LV lead. Scar segments (scar fraction of
the segment's nodes >= ``scar_segment_fraction``) get no site; user sites inside scar are kept,
flagged ``in_scar`` (they capture nothing) and are never recommended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cardiotwin.anatomy import FacetTag
from cardiotwin.config import quantity
from cardiotwin.errors import ConfigError
from cardiotwin.therapy.baseline import long_axis_height, lv_nodes, require_coordinates, septal_rv_nodes, surface_nodes
from cardiotwin.therapy.conduction import scar_core_cells
from cardiotwin.types import HeartMesh, LeadSite

log = logging.getLogger(__name__)

SEPTAL_SEGMENTS: frozenset[int] = frozenset({2, 3, 8, 9, 14})


@dataclass(frozen=True)
class CandidateConfig:
    """Which lead sites to test. ``user_sites_mm``: LPS points; ``user_sites_uvc``: (apicobasal
    0-1, rotational 0-1) pairs on the LV epicardium; ``grid_spacing`` 0 disables the finer grid."""

    rv_lead: str = "apex"  # "apex" or "septum"
    aha_segments: bool = True
    grid_spacing: float = quantity(0.0, "mm", doc="spacing of the finer LV epicardial grid (0: off)")
    user_sites_mm: tuple[tuple[float, float, float], ...] = ()
    user_sites_uvc: tuple[tuple[float, float], ...] = ()
    scar_segment_fraction: float = quantity(0.25, "", doc="segment counts as scar from this scar node fraction")

    def validate(self) -> None:
        if self.rv_lead not in ("apex", "septum"):
            raise ValueError(f"rv_lead must be 'apex' or 'septum', got {self.rv_lead!r}")
        if self.grid_spacing < 0:
            raise ValueError("grid_spacing must be >= 0")
        for ab, rot in self.user_sites_uvc:
            if not (0.0 <= ab <= 1.0 and 0.0 <= rot <= 1.0):
                raise ValueError(f"UVC site ({ab}, {rot}) must have both coordinates within [0, 1]")


def scar_nodes(mesh: HeartMesh) -> np.ndarray:
    """(N,) bool: points that touch only scar-core cells (pacing there captures nothing)."""
    core = scar_core_cells(mesh)
    conducting = np.zeros(mesh.n_points, dtype=bool)
    conducting[np.unique(mesh.cells[~core])] = True
    return ~conducting


def segment_scar_fraction(mesh: HeartMesh) -> dict[int, float]:
    """AHA segment (1-17) -> fraction of its nodes touching a scar-core cell."""
    touch = np.zeros(mesh.n_points, dtype=bool)
    core = scar_core_cells(mesh)
    if core.any():
        touch[np.unique(mesh.cells[core])] = True
    aha = np.asarray(mesh.point_data["aha"]).astype(int)
    return {s: float(touch[aha == s].mean()) for s in range(1, 18) if np.any(aha == s)}


def scar_segments(mesh: HeartMesh, *, fraction: float) -> tuple[int, ...]:
    """AHA segments whose scar fraction is at least ``fraction`` (and > 0)."""
    return tuple(s for s, f in segment_scar_fraction(mesh).items() if f > 0 and f >= fraction)


def _site(mesh: HeartMesh, name: str, chamber: str, node: int, surface: str, in_scar: np.ndarray) -> LeadSite:
    aha = int(mesh.point_data["aha"][node]) if chamber == "LV" else 0
    return LeadSite(name=name, chamber=chamber, node=int(node),  # type: ignore[arg-type]
                    position_mm=tuple(float(v) for v in mesh.points[node]),  # type: ignore[arg-type]
                    aha_segment=aha, surface=surface, in_scar=bool(in_scar[node]))


def lv_epicardial_nodes(mesh: HeartMesh) -> np.ndarray:
    """LV free-wall epicardial nodes (EPI facets, LV cells, AHA 1-17), not on the base plane."""
    epi = surface_nodes(mesh, FacetTag.EPI)
    base = surface_nodes(mesh, FacetTag.BASE)
    aha = np.asarray(mesh.point_data["aha"]).astype(int)
    keep = lv_nodes(mesh)[epi] & (aha[epi] > 0) & ~np.isin(epi, base)
    return epi[keep]


def rv_lead_site(mesh: HeartMesh, *, position: str) -> LeadSite:
    """RV lead: ``apex`` (RV endocardial node nearest the apex) or ``septum`` (mid septal RV node)."""
    in_scar = scar_nodes(mesh)
    ab = long_axis_height(mesh)
    if position == "apex":
        rv = surface_nodes(mesh, FacetTag.RV_ENDO)
        rv = rv[~in_scar[rv]] if np.any(~in_scar[rv]) else rv
        return _site(mesh, "RV_apex", "RV", int(rv[np.argmin(ab[rv])]), "rv_endo", in_scar)
    if position == "septum":
        sept = septal_rv_nodes(mesh)
        sept = sept[~in_scar[sept]] if np.any(~in_scar[sept]) else sept
        return _site(mesh, "RV_septum", "RV", int(sept[np.argmin(np.abs(ab[sept] - 0.6))]), "rv_endo", in_scar)
    raise ConfigError(f"unknown RV lead position {position!r} (apex or septum)")


def aha_segment_sites(mesh: HeartMesh, *, exclude: Sequence[int] = ()) -> list[LeadSite]:
    """One LV site per AHA segment 1-17 not in ``exclude``: the surface node nearest the mean of
    the segment's surface nodes (epicardium, or LV endocardium for septal segments)."""
    in_scar = scar_nodes(mesh)
    aha = np.asarray(mesh.point_data["aha"]).astype(int)
    epi = lv_epicardial_nodes(mesh)
    endo = surface_nodes(mesh, FacetTag.LV_ENDO)
    sites = []
    for seg in range(1, 18):
        if seg in exclude:
            continue
        pool, surface = epi[aha[epi] == seg], "epi"
        if seg in SEPTAL_SEGMENTS or pool.size < 3:
            pool, surface = endo[aha[endo] == seg], "endo"
        pool = pool[~in_scar[pool]]
        if pool.size == 0:
            continue
        centre = mesh.points[pool].mean(axis=0)
        node = int(pool[np.argmin(np.linalg.norm(mesh.points[pool] - centre, axis=1))])
        sites.append(_site(mesh, f"LV_AHA{seg:02d}", "LV", node, surface, in_scar))
    return sites


def grid_sites(mesh: HeartMesh, *, spacing_mm: float, exclude_segments: Sequence[int] = ()) -> list[LeadSite]:
    """LV epicardial sites at least ``spacing_mm`` apart (greedy farthest-point sampling,
    deterministic: starts at the node nearest the epicardial centroid)."""
    in_scar = scar_nodes(mesh)
    aha = np.asarray(mesh.point_data["aha"]).astype(int)
    pool = lv_epicardial_nodes(mesh)
    pool = pool[~in_scar[pool] & ~np.isin(aha[pool], list(exclude_segments))]
    if pool.size == 0:
        return []
    xyz = mesh.points[pool]
    chosen = [int(np.argmin(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1)))]
    dmin = np.linalg.norm(xyz - xyz[chosen[0]], axis=1)
    while True:
        nxt = int(np.argmax(dmin))
        if dmin[nxt] < spacing_mm:
            break
        chosen.append(nxt)
        dmin = np.minimum(dmin, np.linalg.norm(xyz - xyz[nxt], axis=1))
    return [_site(mesh, f"LV_grid{i:03d}", "LV", int(pool[c]), "epi", in_scar) for i, c in enumerate(chosen)]


def user_sites(
    mesh: HeartMesh,
    *,
    points_mm: Sequence[Sequence[float]] = (),
    uvc: Sequence[Sequence[float]] = (),
) -> list[LeadSite]:
    """LV sites at the epicardial nodes nearest given LPS points, or nearest given (apicobasal,
    rotational) ventricular coordinates (rotational distance taken on the circle)."""
    in_scar = scar_nodes(mesh)
    epi = lv_epicardial_nodes(mesh)
    sites = []
    for i, p in enumerate(points_mm):
        d = np.linalg.norm(mesh.points[epi] - np.asarray(p, dtype=float), axis=1)
        sites.append(_site(mesh, f"LV_user{i + 1}", "LV", int(epi[np.argmin(d)]), "epi", in_scar))
    ab = np.asarray(mesh.point_data["uvc_apicobasal"], dtype=float)[epi]
    rot = np.asarray(mesh.point_data["uvc_rotational"], dtype=float)[epi]
    for i, (a, r) in enumerate(uvc):
        dr = np.abs(rot - r)
        d = np.hypot(ab - a, np.minimum(dr, 1.0 - dr))
        sites.append(_site(mesh, f"LV_uvc{i + 1}", "LV", int(epi[np.argmin(d)]), "epi", in_scar))
    return sites


def candidate_sites(mesh: HeartMesh, cfg: CandidateConfig) -> tuple[LeadSite, list[LeadSite], tuple[int, ...]]:
    """(RV lead site, LV sites, scar segments) for ``mesh`` under ``cfg``."""
    require_coordinates(mesh)
    cfg.validate()
    scar = scar_segments(mesh, fraction=cfg.scar_segment_fraction)
    lv: list[LeadSite] = []
    if cfg.aha_segments:
        lv += aha_segment_sites(mesh, exclude=scar)
    if cfg.grid_spacing > 0:
        lv += grid_sites(mesh, spacing_mm=cfg.grid_spacing, exclude_segments=scar)
    lv += user_sites(mesh, points_mm=cfg.user_sites_mm, uvc=cfg.user_sites_uvc)
    if not lv:
        raise ConfigError("no LV lead candidates: enable aha_segments, a grid or give user sites")
    log.info("CRT candidates: RV %s, %d LV sites, scar segments %s", cfg.rv_lead, len(lv), list(scar) or "none")
    return rv_lead_site(mesh, position=cfg.rv_lead), lv, scar
