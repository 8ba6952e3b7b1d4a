"""Typed configs: unit conversion at the boundary, clear errors for bad keys and values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from cardiotwin.config import config_to_dict, convert, load_config, parse_quantity, quantity, read_yaml
from cardiotwin.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    pressure_kpa: float = quantity(10.0, "kPa")


@dataclass(frozen=True)
class Outer:
    edge_mm: float = quantity(1.5, "mm")
    solver: Literal["cg", "mumps"] = "cg"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    sites: tuple[float, ...] = ()


def test_unit_conversion():
    assert parse_quantity("75 mmHg", "kPa") == pytest.approx(9.99918, rel=1e-5)  # 1 mmHg = 133.322 Pa
    assert parse_quantity("0.1 cm", "mm") == pytest.approx(1.0)
    assert parse_quantity("1 m/s", "mm/ms") == pytest.approx(1.0)
    assert parse_quantity("0.1333 S/m", "S/m") == pytest.approx(0.1333)
    assert parse_quantity(3, "ms") == 3.0
    assert convert(1.0, "cm^2/s", "mm^2/ms") == pytest.approx(0.1)
    assert convert(90.0, "deg", "rad") == pytest.approx(1.5707963, rel=1e-6)


def test_load_nested_and_round_trip():
    cfg = load_config(Outer, {"edge_mm": "2 mm", "inner": {"pressure_kpa": "15 mmHg"}, "sites": [1, 2.5]}, source="x.yaml")
    assert cfg.edge_mm == 2.0 and cfg.inner.pressure_kpa == pytest.approx(2.0, rel=1e-3)
    assert cfg.sites == (1.0, 2.5)
    again = load_config(Outer, config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"edge_mn": 1}, "unknown key(s) edge_mn"),
        ({"edge_mm": "1.5 kPa"}, "cannot convert 'kPa'"),
        ({"edge_mm": "one"}, "cannot read 'one'"),
        ({"solver": "lu"}, "is not one of"),
        ({"steps": 2.5}, "expected an integer"),
        ({"inner": {"pressure_kpa": "3 furlongs"}}, "unknown unit"),
        ({"inner": 5}, "expected a mapping"),
    ],
)
def test_bad_config_names_key_and_source(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(Outer, data, source="pipeline.yaml:mesh")
    assert message in str(info.value)
    assert "pipeline.yaml:mesh" in str(info.value)


def test_yaml_is_data_only(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("a: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(p)
    with pytest.raises(ConfigError, match="no such config"):
        read_yaml(tmp_path / "missing.yaml")


def test_a_partial_nested_mapping_completes_the_fields_own_default():
    """EMConfig's RV Windkessel defaults to pulmonary values, WindkesselConfig() to systemic ones: a
    recipe that sets only the RV filling pressure keeps the pulmonary resistance and pressure."""
    from cardiotwin.mechanics.electromechanics import EMConfig

    cfg = load_config(EMConfig, {"rv_windkessel": {"filling_pressure": "6 mmHg"}})
    pulmonary = EMConfig().rv_windkessel
    assert cfg.rv_windkessel.filling_pressure == pytest.approx(0.8, rel=1e-3)
    for key in ("peripheral_resistance", "compliance", "initial_arterial_pressure"):
        assert getattr(cfg.rv_windkessel, key) == pytest.approx(getattr(pulmonary, key))
    assert cfg.rv_windkessel.initial_arterial_pressure != EMConfig().lv_windkessel.initial_arterial_pressure
