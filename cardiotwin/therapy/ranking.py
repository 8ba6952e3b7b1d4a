"""Ranking of pacing protocols and lead-position concordance as in the TARGET trial.

TARGET (Khan et al., J Am Coll Cardiol 2012;59:1509) classified the LV lead position against the
latest-activated non-scarred segment: *concordant* (at that segment), *adjacent* (a segment that
shares a border with it in the 17-segment bullseye) or *remote*. Concordant or adjacent leads
had better response. Here the latest segment comes from the twin's baseline activation.

Ranking: recommendable protocols first (all leads captured, LV lead outside scar segments),
ordered by the change of total activation time vs baseline (most negative first), then by LVAT
change, then by name (deterministic ties).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cardiotwin.types import PacingProtocol


def _aha_adjacency() -> dict[int, frozenset[int]]:
    """Segments sharing an edge in the AHA-17 bullseye (Cerqueira et al., Circulation 2002)."""
    pairs: set[tuple[int, int]] = set()
    for ring in ((1, 2, 3, 4, 5, 6), (7, 8, 9, 10, 11, 12), (13, 14, 15, 16)):
        for i, s in enumerate(ring):
            pairs.add((s, ring[(i + 1) % len(ring)]))
    for s in range(1, 7):  # basal sector above the mid sector at the same angle
        pairs.add((s, s + 6))
    # mid 60-degree sectors onto apical 90-degree sectors (13 ant, 14 sept, 15 inf, 16 lat)
    for mid, apical in ((7, 13), (8, 13), (8, 14), (9, 14), (9, 15), (10, 15), (11, 15), (11, 16), (12, 16), (12, 13)):
        pairs.add((mid, apical))
    for s in (13, 14, 15, 16):
        pairs.add((s, 17))
    adj: dict[int, set[int]] = {s: set() for s in range(1, 18)}
    for a, b in pairs:
        adj[a].add(b)
        adj[b].add(a)
    return {s: frozenset(v) for s, v in adj.items()}


AHA_ADJACENT: dict[int, frozenset[int]] = _aha_adjacency()


def concordance(lead_segment: int, latest_segment: int) -> str:
    """"concordant", "adjacent" or "remote" (TARGET), "" when either segment is unknown (0)."""
    if lead_segment <= 0 or latest_segment <= 0:
        return ""
    if lead_segment == latest_segment:
        return "concordant"
    return "adjacent" if lead_segment in AHA_ADJACENT[latest_segment] else "remote"


def latest_segment(segment_times_ms: Mapping[int, float], *, exclude: Iterable[int] = ()) -> int:
    """Latest-activated AHA segment (largest mean activation time), scar segments excluded."""
    excluded = set(exclude)
    times = {s: t for s, t in segment_times_ms.items() if s not in excluded}
    if not times:
        return 0
    return max(sorted(times), key=lambda s: times[s])


def exclusion_reason(protocol: PacingProtocol, captured: Mapping[str, bool], scar_segments: Iterable[int]) -> str:
    """Why a protocol must not be recommended ("" when it may be)."""
    if protocol.lv_site is None:
        return "no LV lead"
    if protocol.lv_site.in_scar or not captured.get("LV", False):
        return "LV lead in scar: no capture"
    if protocol.lv_site.aha_segment in set(scar_segments):
        return "LV lead in a scar segment"
    if protocol.rv_site is not None and not captured.get("RV", False):
        return "RV lead in scar: no capture"
    return ""


def rank_key(name: str, metrics: Mapping[str, float], excluded_reason: str) -> tuple[int, float, float, str]:
    """Sort key: recommendable first, then TAT change, LVAT change, name."""
    tat = metrics.get("tat_change_pct", float("inf"))
    lvat = metrics.get("lvat_change_pct", float("inf"))
    return (1 if excluded_reason else 0, float(tat), float(lvat), name)
