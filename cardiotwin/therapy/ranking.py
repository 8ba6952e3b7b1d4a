"""Ranking of pacing protocols and lead-position concordance as in the TARGET trial.

TARGET (Khan et al., J Am Coll Cardiol 2012;59:1509) classified the LV lead position against the
latest-activated non-scarred segment: *concordant* (at that segment), *adjacent* (a segment that
shares a border with it in the 17-segment bullseye) or *remote*. Concordant or adjacent leads
had better response. Here the latest segment comes from the twin's baseline activation.

Screening (``rank_key``): recommendable protocols first (all leads captured, LV lead outside scar
segments), ordered by the change of total activation time vs baseline (most negative first), then
by LVAT change, then by name (deterministic ties). The eikonal sweep uses it to choose the timing
grid's sites and the protocols that get electromechanical beats.

Final ranking (``RankingRule``, recipe key ``crt.ranking``): by default the recommendable protocols
with a beat are ordered by the predicted acute LV dP/dt_max change (the accepted acute surrogate of
CRT response: Auricchio et al., Circulation 1999;99:2993), with the activation-time change as the
tie-breaker; recommendable protocols without a beat follow in screening order; excluded protocols
come last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cardiotwin.config import quantity
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


RESPONDER_DPDT_PCT = 10.0  # acute responder: LV dP/dt max rise of at least 10 % (therapy.response)

ENDPOINT_TEXT = {
    "dpdt_change": "largest predicted acute rise of LV dP/dt max",
    "responder_probability": "highest probability of an acute response (LV dP/dt max rise of at least 10 %)",
    "activation_time": "largest reduction of total activation time",
}


@dataclass(frozen=True)
class RankingRule:
    """How the CRT stage orders its protocols (recipe key ``crt.ranking``).

    endpoint: ``dpdt_change`` (predicted acute LV dP/dt max change of the electromechanical beat),
    ``responder_probability`` (fraction of stiffness samples with a change >= 10 %, then the
    change), or ``activation_time`` (total activation time change of the eikonal screen only).
    tie_pct: endpoint changes within this many percentage points of the best of their group count
    as equal and are ordered by activation-time change (0: exact ties only).
    """

    endpoint: Literal["dpdt_change", "responder_probability", "activation_time"] = "dpdt_change"
    tie_pct: float = quantity(1.0, "", doc="dP/dt max changes closer than this (percentage points) are ties")

    def validate(self) -> None:
        if self.endpoint not in ENDPOINT_TEXT:
            raise ValueError(f"ranking.endpoint must be one of {sorted(ENDPOINT_TEXT)}, got {self.endpoint!r}")
        if not (self.tie_pct >= 0 and math.isfinite(self.tie_pct)):
            raise ValueError(f"ranking.tie_pct must be >= 0, got {self.tie_pct}")

    def describe(self) -> str:
        """The rule in one plain sentence (printed in the report and the summary)."""
        screen = ("Every lead site and timing is screened by simulated activation time; ")
        if self.endpoint == "activation_time":
            return screen + "protocols are ranked by the " + ENDPOINT_TEXT[self.endpoint] + "."
        ties = (f"differences under {self.tie_pct:g} percentage point{'s' if self.tie_pct != 1 else ''} count as "
                "equal and are decided by the shorter activation time" if self.tie_pct > 0 else
                "equal values are decided by the shorter activation time")
        return (screen + "the best are simulated beat by beat and ranked by the " + ENDPOINT_TEXT[self.endpoint]
                + f" ({ties}); protocols without a simulated beat follow, ranked by activation time.")


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def endpoint_value(rule: RankingRule, metrics: Mapping[str, Any], uq: Mapping[str, Any]) -> float | None:
    """The quantity the rule ranks by (higher is better), None when the protocol has no beat."""
    dpdt = _finite(metrics.get("dpdt_change_pct"))
    if rule.endpoint == "activation_time" or dpdt is None:
        return None
    if rule.endpoint == "responder_probability":
        prob = _finite(uq.get("responder_probability"))
        # without stiffness samples the one nominal beat decides: responder or not
        return prob if prob is not None else float(dpdt >= RESPONDER_DPDT_PCT)
    return dpdt


def rank_order(rule: RankingRule, entries: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any], str]]) -> list[int]:
    """Indices of ``entries`` (name, metrics, uq, excluded_reason) in ranked order under ``rule``.

    Groups: recommendable with a beat (by the endpoint, ties within ``tie_pct`` of the best of
    their group decided by ``rank_key``), recommendable without a beat (``rank_key``), excluded
    (``rank_key``). For ``responder_probability`` the tie tolerance applies to the dP/dt change
    among protocols of equal probability.
    """
    rule.validate()

    def screen(i: int) -> tuple[int, float, float, str]:
        name, metrics, _, why = entries[i]
        return rank_key(name, metrics, why)

    with_beat = [i for i, (_, m, u, why) in enumerate(entries) if not why and endpoint_value(rule, m, u) is not None]
    rest = sorted((i for i in range(len(entries)) if i not in set(with_beat)), key=screen)
    if rule.endpoint == "responder_probability":
        prob = {i: endpoint_value(rule, entries[i][1], entries[i][2]) for i in with_beat}
        levels = sorted(set(prob.values()), reverse=True)  # type: ignore[arg-type]
        ordered: list[int] = []
        for level in levels:
            ordered += _tie_groups([i for i in with_beat if prob[i] == level],
                                   lambda i: float(entries[i][1]["dpdt_change_pct"]), rule.tie_pct, screen)
        return ordered + rest
    value = {i: endpoint_value(rule, entries[i][1], entries[i][2]) for i in with_beat}
    return _tie_groups(with_beat, lambda i: value[i], rule.tie_pct, screen) + rest  # type: ignore[arg-type,return-value]


def _tie_groups(idx: list[int], value: Any, tol: float, screen: Any) -> list[int]:
    """Order by ``value`` (descending); walking down, indices within ``tol`` of their group's first
    (largest) value form a group ordered by ``screen`` (activation time)."""
    by_value = sorted(idx, key=lambda i: (-value(i), screen(i)))
    out: list[int] = []
    while by_value:
        top = value(by_value[0])
        group = [i for i in by_value if top - value(i) <= tol]
        by_value = [i for i in by_value if i not in set(group)]
        out += sorted(group, key=screen)
    return out


def disagreement(entries: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any], str]],
                 order: Sequence[int]) -> dict[str, Any] | None:
    """Where the electrical screen (shortest activation time among recommendable protocols) and the
    ranking's first protocol differ: their names and both criteria's values; None when they agree."""
    ok = [i for i in range(len(entries)) if not entries[i][3]]
    if not ok or not order:
        return None
    electrical = min(ok, key=lambda i: rank_key(entries[i][0], entries[i][1], entries[i][3]))
    first = order[0]
    if entries[first][3] or electrical == first:
        return None

    def values(i: int) -> dict[str, Any]:
        m = entries[i][1]
        return {"name": entries[i][0], "tat_change_pct": _finite(m.get("tat_change_pct")),
                "dpdt_change_pct": _finite(m.get("dpdt_change_pct"))}

    return {"electrical_best": values(electrical), "ranked_first": values(first)}
