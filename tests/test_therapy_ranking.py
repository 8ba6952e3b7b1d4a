"""The CRT ranking rule: screen by activation time, rank beats by acute dP/dt max change.

The handmade ranking mirrors the demo case reported in issue 26: the protocol with the shortest
activation time predicts a dP/dt max rise below the 10 % responder threshold of Auricchio et al.
(Circulation 1999;99:2993), another one with a nearly equal activation time predicts +17.4 %.
"""

from __future__ import annotations

import pytest

from cardiotwin.config import load_config
from cardiotwin.errors import ConfigError
from cardiotwin.therapy.ranking import RankingRule, disagreement, rank_order
from cardiotwin.therapy.stage import CRTConfig

# name, metrics, uq, excluded reason
HANDMADE = [
    ("BiV_LV_AHA05_AV120_VV+0", {"tat_change_pct": -31.0, "lvat_change_pct": -30.0, "dpdt_change_pct": 8.7}, {}, ""),
    ("BiV_LV_AHA11_AV170_VV+0", {"tat_change_pct": -30.2, "lvat_change_pct": -29.0, "dpdt_change_pct": 17.4}, {}, ""),
    ("BiV_LV_AHA06_AV120_VV+0", {"tat_change_pct": -30.8, "lvat_change_pct": -31.0, "dpdt_change_pct": 12.0}, {}, ""),
    ("BiV_LV_AHA04", {"tat_change_pct": -33.0, "lvat_change_pct": -32.0}, {}, ""),  # no beat: screened only
    ("BiV_LV_AHA12", {"tat_change_pct": -10.0, "lvat_change_pct": -9.0, "dpdt_change_pct": 40.0}, {},
     "LV lead in a scar segment"),
]


def names(order: list[int], entries=HANDMADE) -> list[str]:
    return [entries[i][0] for i in order]


def test_default_rule_ranks_beats_by_dpdt_then_unbeaten_then_excluded() -> None:
    order = rank_order(RankingRule(), HANDMADE)
    assert names(order) == ["BiV_LV_AHA11_AV170_VV+0", "BiV_LV_AHA06_AV120_VV+0", "BiV_LV_AHA05_AV120_VV+0",
                            "BiV_LV_AHA04", "BiV_LV_AHA12"]
    d = disagreement(HANDMADE, order)
    # the electrical screen's best (shortest activation time) is a protocol without a beat here
    assert d["electrical_best"]["name"] == "BiV_LV_AHA04"
    assert d["ranked_first"] == {"name": "BiV_LV_AHA11_AV170_VV+0", "tat_change_pct": -30.2, "dpdt_change_pct": 17.4}


def test_disagreement_between_two_beaten_protocols_and_agreement() -> None:
    beaten = HANDMADE[:3]
    order = rank_order(RankingRule(), beaten)
    assert names(order, beaten)[0] == "BiV_LV_AHA11_AV170_VV+0"
    d = disagreement(beaten, order)
    assert d["electrical_best"]["name"] == "BiV_LV_AHA05_AV120_VV+0" and d["electrical_best"]["dpdt_change_pct"] == 8.7
    tat_rule = RankingRule(endpoint="activation_time")
    order = rank_order(tat_rule, beaten)
    assert names(order, beaten) == ["BiV_LV_AHA05_AV120_VV+0", "BiV_LV_AHA06_AV120_VV+0", "BiV_LV_AHA11_AV170_VV+0"]
    assert disagreement(beaten, order) is None


def test_activation_time_breaks_dpdt_ties_within_the_tolerance() -> None:
    entries = [("a", {"tat_change_pct": -20.0, "dpdt_change_pct": 15.0}, {}, ""),
               ("b", {"tat_change_pct": -25.0, "dpdt_change_pct": 14.4}, {}, ""),   # within 1 point of a: tie
               ("c", {"tat_change_pct": -30.0, "dpdt_change_pct": 13.9}, {}, "")]   # 1.1 below a: next group
    assert names(rank_order(RankingRule(), entries), entries) == ["b", "a", "c"]
    assert names(rank_order(RankingRule(tie_pct=0.0), entries), entries) == ["a", "b", "c"]
    assert names(rank_order(RankingRule(tie_pct=2.0), entries), entries) == ["c", "b", "a"]


def test_responder_probability_rule_uses_the_stiffness_samples() -> None:
    entries = [("a", {"tat_change_pct": -20.0, "dpdt_change_pct": 14.0}, {"responder_probability": 0.5}, ""),
               ("b", {"tat_change_pct": -25.0, "dpdt_change_pct": 11.0}, {"responder_probability": 1.0}, ""),
               ("c", {"tat_change_pct": -30.0, "dpdt_change_pct": 9.0}, {}, "")]  # no samples: 0 (nominal < 10 %)
    assert names(rank_order(RankingRule(endpoint="responder_probability"), entries), entries) == ["b", "a", "c"]


def test_rule_is_a_recipe_key_with_a_stated_default() -> None:
    cfg = load_config(CRTConfig, {"ranking": {"endpoint": "activation_time", "tie_pct": 0.5}}, source="recipe")
    assert cfg.ranking == RankingRule(endpoint="activation_time", tie_pct=0.5)
    text = CRTConfig().ranking.describe()
    assert "dP/dt max" in text and "1 percentage point" in text and "activation time" in text
    with pytest.raises(ConfigError, match="endpoint"):
        load_config(CRTConfig, {"ranking": {"endpoint": "qrs"}}, source="recipe")
    with pytest.raises(ConfigError, match="tie_pct"):
        load_config(CRTConfig, {"ranking": {"tie_pct": -1}}, source="recipe").validate()
