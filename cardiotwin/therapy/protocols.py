"""Pacing protocols: lead sites + AV / VV timing, fused with the intrinsic (LBBB) conduction.

All times are ms from the atrial event. The LV lead fires at the AV delay, the RV lead VV later
(VV > 0: LV first), and the intrinsic breakthrough keeps arriving at the patient's intrinsic AV
time, so the eikonal minimum over all sources is the fused wavefront. A lead whose node touches
no conducting cell (scar core) captures nothing and contributes no source.

The right bundle is intact in LBBB, so a captured RV lead also engages the RV Purkinje network
retrogradely: every RV endocardial node gets a source at ``t_RV + |x - x_lead| / purkinje_cv``
(the earlier of this and the intrinsic delay wins), as the fast RV endocardial layer of
eikonal CRT models does (Lee et al., Europace 2019; Strocchi et al., PLoS ONE 2020).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cardiotwin.therapy.baseline import rv_endocardial_nodes
from cardiotwin.therapy.conduction import ConductionConfig, Source
from cardiotwin.types import HeartMesh, LeadSite, PacingProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProtocolConfig:
    """Timing of the sweep (ms). Phase 1 tests every LV site at ``av_delay_ms`` / ``vv_delay_ms``
    (plus RV-only pacing); phase 2 sweeps ``av_delays_ms`` x ``vv_delays_ms`` for the best
    ``timing_top_k`` LV sites."""

    av_delay_ms: float = 120.0
    vv_delay_ms: float = 0.0
    include_rv_only: bool = True
    av_delays_ms: tuple[float, ...] = (100.0, 140.0, 170.0, 200.0)
    vv_delays_ms: tuple[float, ...] = (-20.0, 0.0, 20.0, 40.0)
    timing_top_k: int = 3

    def validate(self) -> None:
        if self.av_delay_ms < 0 or any(a < 0 for a in self.av_delays_ms):
            raise ValueError("AV delays must be >= 0 ms")
        if self.timing_top_k < 0:
            raise ValueError("timing_top_k must be >= 0")


def baseline_protocol() -> PacingProtocol:
    """Intrinsic rhythm (no pacing)."""
    return PacingProtocol(name="baseline")


def site_protocols(rv: LeadSite, lv_sites: Sequence[LeadSite], cfg: ProtocolConfig) -> list[PacingProtocol]:
    """Phase 1: RV-only pacing (when enabled) and biventricular pacing for each LV site."""
    out = []
    if cfg.include_rv_only:
        out.append(PacingProtocol(name=f"RVonly_{rv.name}", rv_site=rv, av_delay_ms=cfg.av_delay_ms))
    for lv in lv_sites:
        out.append(PacingProtocol(name=f"BiV_{lv.name}", lv_site=lv, rv_site=rv, av_delay_ms=cfg.av_delay_ms,
                                  vv_delay_ms=cfg.vv_delay_ms))
    return out


def timing_protocols(rv: LeadSite, lv_sites: Sequence[LeadSite], cfg: ProtocolConfig) -> list[PacingProtocol]:
    """Phase 2: AV x VV grid for the given LV sites (the nominal timing itself is left out)."""
    out = []
    for lv in lv_sites:
        for av in cfg.av_delays_ms:
            for vv in cfg.vv_delays_ms:
                if av == cfg.av_delay_ms and vv == cfg.vv_delay_ms:
                    continue
                out.append(PacingProtocol(name=f"BiV_{lv.name}_AV{av:g}_VV{vv:+g}", lv_site=lv, rv_site=rv,
                                          av_delay_ms=float(av), vv_delay_ms=float(vv)))
    return out


def protocol_sources(
    protocol: PacingProtocol,
    *,
    mesh: HeartMesh,
    conduction: ConductionConfig,
    intrinsic: Sequence[Source],
    conducting_points: np.ndarray,
) -> tuple[list[Source], dict[str, bool]]:
    """Sources of ``protocol`` (intrinsic ones included) and which leads captured.

    conducting_points: (N,) bool from ``conduction.conducting_points``.
    """
    sources = list(intrinsic)
    captured: dict[str, bool] = {}
    leads = ((protocol.lv_site, protocol.av_delay_ms), (protocol.rv_site, protocol.av_delay_ms + protocol.vv_delay_ms))
    for site, t_ms in leads:
        if site is None:
            continue
        ok = bool(conducting_points[site.node])
        captured[site.chamber] = ok
        if ok:
            sources.append(Source(nodes=np.array([site.node], dtype=np.int64), delays_ms=np.array([float(t_ms)]),
                                  label=f"{site.chamber} lead {site.name}"))
            if site.chamber == "RV":
                rv = rv_endocardial_nodes(mesh)
                dist = np.linalg.norm(mesh.points[rv] - mesh.points[site.node], axis=1)
                sources.append(Source(nodes=rv.astype(np.int64), delays_ms=float(t_ms) + dist / conduction.purkinje_cv,
                                      label="RV Purkinje, retrograde from the RV lead"))
        else:
            log.info("%s: %s lead at %s lies in scar and captures nothing", protocol.name, site.chamber, site.name)
    return sources, captured
