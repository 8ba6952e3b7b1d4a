"""Typed configuration with units.

Configs are frozen dataclasses. A field declared with ``quantity(default, "kPa")`` accepts a
number (taken in the declared unit) or a string with a unit ("75 mmHg", "0.1 cm") that is
converted once, here, at the boundary. Unknown keys, wrong types, incompatible units, strings
longer than ``MAX_STRING_CHARS`` and non-finite numbers raise ``ConfigError`` naming the key and
the source. Configs are data: nothing is ever evaluated. YAML files are read with the safe loader,
at most ``MAX_YAML_BYTES`` long, and aliases (``*name``) are refused before anything is built, so
an alias bomb cannot expand.

    @dataclass(frozen=True)
    class MeshConfig:
        edge_mm: float = quantity(1.5, "mm")

    cfg = load_config(MeshConfig, {"edge_mm": "1.2 mm"}, source="crt_ct.yaml:mesh")
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cardiotwin.errors import ConfigError

T = TypeVar("T")

# unit -> (dimension, factor to the dimension's base unit). Base units: mm, ms, kPa, mL, mV, deg ...
_UNITS: dict[str, tuple[str, float]] = {
    # length (mm)
    "um": ("length", 1e-3), "mm": ("length", 1.0), "cm": ("length", 10.0), "m": ("length", 1000.0),
    # time (ms)
    "ms": ("time", 1.0), "s": ("time", 1000.0), "min": ("time", 60000.0),
    # pressure / stress (kPa)
    "Pa": ("pressure", 1e-3), "kPa": ("pressure", 1.0), "MPa": ("pressure", 1e3),
    "mmHg": ("pressure", 0.133322387415),
    # volume (mL)
    "mL": ("volume", 1.0), "ml": ("volume", 1.0), "L": ("volume", 1000.0), "mm^3": ("volume", 1e-3),
    # voltage (mV)
    "mV": ("voltage", 1.0), "V": ("voltage", 1000.0),
    # velocity (mm/ms = m/s)
    "mm/ms": ("velocity", 1.0), "m/s": ("velocity", 1.0), "cm/s": ("velocity", 0.01), "mm/s": ("velocity", 1e-3),
    # diffusivity (mm^2/ms)
    "mm^2/ms": ("diffusivity", 1.0), "cm^2/s": ("diffusivity", 0.1), "m^2/s": ("diffusivity", 1000.0),
    # conductivity (S/m)
    "S/m": ("conductivity", 1.0), "mS/cm": ("conductivity", 0.1), "mS/mm": ("conductivity", 1000.0),
    # angle (deg)
    "deg": ("angle", 1.0), "rad": ("angle", 180.0 / math.pi),
    # frequency / rate (1/min, i.e. bpm)
    "bpm": ("rate", 1.0), "Hz": ("rate", 60.0), "1/min": ("rate", 1.0),
    # mass (g)
    "g": ("mass", 1.0), "kg": ("mass", 1000.0),
    # compliance (mL/kPa), resistance (kPa.ms/mL), elastance (kPa/mL)
    "mL/kPa": ("compliance", 1.0), "mL/mmHg": ("compliance", 1.0 / 0.133322387415),
    "kPa*ms/mL": ("resistance", 1.0), "mmHg*s/mL": ("resistance", 0.133322387415 * 1000.0),
    "kPa/mL": ("elastance", 1.0), "mmHg/mL": ("elastance", 0.133322387415),
    # dimensionless
    "": ("dimensionless", 1.0), "1": ("dimensionless", 1.0), "%": ("dimensionless", 0.01),
}

MAX_STRING_CHARS = 4096
MAX_YAML_BYTES = 1 << 20
MAX_ITEMS = 10_000  # entries in one list or mapping of a config
MAX_DEPTH = 16  # nesting of lists and mappings
# Option keys that would let a recipe or config choose where a stage writes: a case is written
# only by its own stages, inside its folder.
OUTPUT_KEYS = frozenset({"out", "output", "out_dir", "output_dir", "export", "export_only", "dest", "destination",
                         "case", "case_dir", "work_dir", "force"})

_QUANTITY_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` between two units of one dimension."""
    try:
        dim_from, f_from = _UNITS[from_unit]
        dim_to, f_to = _UNITS[to_unit]
    except KeyError as exc:
        raise ConfigError(f"unknown unit {exc.args[0]!r} (known: {', '.join(sorted(u for u in _UNITS if u))})") from None
    if dim_from != dim_to:
        raise ConfigError(f"cannot convert {from_unit!r} ({dim_from}) to {to_unit!r} ({dim_to})")
    return value * f_from / f_to


def parse_quantity(text: str | float | int, unit: str, *, where: str = "value") -> float:
    """'10 kPa' -> 10.0 in ``unit``; a bare number is taken in ``unit``."""
    if isinstance(text, bool):
        raise ConfigError(f"{where}: expected a quantity in {unit or 'no unit'}, got a boolean")
    if isinstance(text, (int, float)):
        if not math.isfinite(float(text)):
            raise ConfigError(f"{where}: {text!r} is not a finite quantity")
        return float(text)
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a number or a string like '1.5 {unit}', got {type(text).__name__}")
    if len(text) > 100:
        raise ConfigError(f"{where}: a quantity of {len(text)} characters (e.g. '1.5 {unit}')")
    m = _QUANTITY_RE.match(text)
    if not m:
        raise ConfigError(f"{where}: cannot read {text!r} as a quantity (e.g. '1.5 {unit}')")
    number, given = float(m.group(1)), m.group(2)
    try:
        value = convert(number, given, unit) if given else number
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {text!r} is not a finite quantity")
    return value


def quantity(default: float, unit: str, *, doc: str = "") -> Any:
    """A dataclass field holding a float in ``unit`` that accepts unit strings in configs."""
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}")
    return field(default=float(default), metadata={"unit": unit, "doc": doc})


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, f.type)


def load_config(cls: type[T], data: dict[str, Any] | None, *, source: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, validating keys, types and units."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(f"{source}: missing required key {name!r}")
            continue
        value, typ = data[name], _field_type(cls, f)
        if isinstance(value, dict) and dataclasses.is_dataclass(typ):
            # a partial mapping completes the field's own default, not the class's (EMConfig's RV
            # Windkessel defaults to pulmonary values, WindkesselConfig() to systemic ones)
            default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                value = {**config_to_dict(default), **value}
        kwargs[name] = _coerce(value, typ, f, where=f"{source}.{name}")
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return cfg


def _coerce(value: Any, typ: Any, f: dataclasses.Field | None, *, where: str) -> Any:
    unit = f.metadata.get("unit") if f is not None else None
    if unit is not None:
        return parse_quantity(value, unit, where=where)
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _coerce(value, a, None, where=where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(typ):
        return load_config(typ, value, source=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item_types = args if origin is tuple and args and args[-1] is not Ellipsis else (args[0] if args else Any,) * len(value)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        items = [_coerce(v, t, None, where=f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        check_plain_data(value, where=where)
        return dict(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {_short(value)}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        _check_string(value, where)
        return value
    if typ is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {_short(value)}")
        _check_string(str(value), where)
        return Path(value)
    check_plain_data(value, where=where)
    return value


def _short(value: Any) -> str:
    """repr of a value for a message, cut to one short line."""
    text = repr(value) if not isinstance(value, (dict, list, tuple)) else f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_string(value: str, where: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise ConfigError(f"{where}: a string of {len(value)} characters (at most {MAX_STRING_CHARS})")
    if "\x00" in value:
        raise ConfigError(f"{where}: a string holding a NUL character")


def check_plain_data(value: Any, *, where: str, depth: int = 0) -> None:
    """Refuse config data that is not plain (str, number, bool, date, None, lists and mappings of
    those), too deep, too long, or holds an over-long string or a non-finite number."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, datetime.date)):
        return
    if isinstance(value, str):
        _check_string(value, where)
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"{where}: a list of {len(value)} items (at most {MAX_ITEMS})")
        for i, v in enumerate(value):
            check_plain_data(v, where=f"{where}[{i}]", depth=depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"{where}: a mapping of {len(value)} entries (at most {MAX_ITEMS})")
        for k, v in value.items():
            if not isinstance(k, (str, int, float)):
                raise ConfigError(f"{where}: key {_short(k)} is not a string or number")
            _check_string(str(k), where)
            check_plain_data(v, where=f"{where}.{k}", depth=depth + 1)
    else:
        raise ConfigError(f"{where}: unsupported value of type {type(value).__name__}")


def check_options(options: Any, *, allowed: typing.Collection[str], where: str) -> dict[str, Any]:
    """Validate a stage's option mapping: a mapping of known keys (none naming an output
    location) to plain scalars or flat lists of scalars. Returns it unchanged."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a mapping, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: option key {_short(key)} is not a string")
        if key in OUTPUT_KEYS:
            raise ConfigError(f"{where}: option {key!r} is not allowed: a case is written only by its own stages, "
                              "inside its folder")
        if key not in allowed:
            raise ConfigError(f"{where}: unknown option {_short(key)}; allowed: {', '.join(sorted(allowed)) or 'none'}")
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) > 16:
            raise ConfigError(f"{where}.{key}: a list of {len(items)} values (at most 16)")
        for v in items:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ConfigError(f"{where}.{key}: expected a number, string or true/false, got {_short(v)}")
            check_plain_data(v, where=f"{where}.{key}")
    return options


def config_to_dict(cfg: Any) -> Any:
    """Dataclass -> plain data, quantities written with their unit ("1.5 mm")."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            unit = f.metadata.get("unit")
            out[f.name] = f"{v!r} {unit}".strip() if unit is not None else config_to_dict(v)
        return out
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse YAML text safely: no Python objects, no evaluation, no aliases, bounded size."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters of YAML (at most {MAX_YAML_BYTES})")
    try:
        # Events only (nothing is built yet): an alias would make one node appear many times,
        # which is how "billion laughs" documents explode; configs never need them.
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ConfigError(f"{source}: line {mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
                                  "in configs; write the value out")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    check_plain_data(data, where=source)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (no Python objects, no evaluation, no aliases, bounded size)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes (a config is at most {MAX_YAML_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    data = parse_yaml(text, source=str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data

