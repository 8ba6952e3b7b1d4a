"""Property-based tests (Hypothesis) of the readers and config parsers: whatever the bytes, they
return a valid object or raise the one error type the CLI turns into a line, never anything else."""

from __future__ import annotations

import dataclasses

import gzip
import json
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustness_support import small_scan

from cardiotwin.cases import Case
from cardiotwin.config import OUTPUT_KEYS, load_config, parse_quantity, parse_yaml
from cardiotwin.errors import CaseError, ConfigError, ScanError
from cardiotwin.io.scans import read_scan, write_scan
from cardiotwin.viewer.security import PathRefused, check_request_path, resolve_inside

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="ct21-props-"))
GOOD_NII = gzip.decompress(write_scan(small_scan(), WORK / "good.nii.gz").read_bytes())
GOOD_MHA = write_scan(small_scan(), WORK / "good.mha").read_bytes()


def _check_scan_or_scan_error(path: Path) -> None:
    try:
        scan = read_scan(path)
    except ScanError as exc:
        assert str(path) in str(exc)
        return
    spacing = np.asarray(scan.geometry.spacing_mm)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)
    assert np.all(np.isfinite(scan.voxels))


@PROPS
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=8))
def test_nifti_with_mutated_header_reads_or_scan_error(edits):
    raw = bytearray(GOOD_NII)
    for offset, value in edits:
        raw[offset] = value
    path = WORK / "mut.nii"
    path.write_bytes(bytes(raw))
    _check_scan_or_scan_error(path)


@PROPS
@given(st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=32),
                 st.floats(allow_nan=True, allow_infinity=True, width=32),
                 st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_nifti_pixdim_is_taken_exactly_or_refused(pixdim):
    raw = bytearray(GOOD_NII)
    raw[80:92] = struct.pack("<3f", *pixdim)
    path = WORK / "pix.nii"
    path.write_bytes(bytes(raw))
    try:
        scan = read_scan(path)
    except ScanError:
        assert not all(math.isfinite(v) and v > 0 for v in pixdim) or not all(0.1 <= v <= 10.001 for v in pixdim)
        return
    np.testing.assert_allclose(scan.geometry.spacing_mm, pixdim, rtol=1e-6)  # never silently 1 mm


HEADER_LINE = st.sampled_from(["ElementSpacing", "DimSize", "NDims", "ElementType", "TransformMatrix", "Offset",
                               "CompressedDataSize", "ElementNumberOfChannels"])
VALUES = st.lists(st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True).map(repr),
                            st.sampled_from(["nan", "inf", "", "MET_FLOAT", "-0", "1e400"])), max_size=5)


@PROPS
@given(HEADER_LINE, VALUES)
def test_metaimage_with_mutated_header_reads_or_scan_error(key, values):
    head, sep, data = GOOD_MHA.partition(b"ElementDataFile = LOCAL\n")
    lines = [ln for ln in head.decode().splitlines() if not ln.startswith(key + " ")]
    lines.insert(2, f"{key} = {' '.join(values)}")
    path = WORK / "mut.mha"
    path.write_bytes(("\n".join(lines) + "\n").encode() + sep + data)
    _check_scan_or_scan_error(path)


@PROPS
@given(st.text(max_size=400))
def test_yaml_text_parses_or_config_error(text):
    try:
        data = parse_yaml(text, source="probe.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("probe.yaml")
        assert "\n" not in str(exc).strip() or "invalid YAML" in str(exc)
        return
    json.dumps(data, default=str)  # plain data only


@PROPS
@given(st.integers(1, 12), st.integers(2, 12))
def test_yaml_aliases_never_expand(depth, width):
    lines = ["l0: &l0 [x]"]
    for i in range(1, depth + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    with pytest.raises(ConfigError, match="aliases"):
        parse_yaml("\n".join(lines), source="bomb.yaml")


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["1 mm", "5 mm", "-1 cm", "1e400 mm", "nan mm", "3 kPa"]))
JSONLIKE = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                        max_leaves=12)
STAGE_KEYS = st.sampled_from(["segment", "mesh", "fibers", "crt", "simulate", "nope"])
OPTION_KEYS = st.one_of(st.sampled_from(sorted(OUTPUT_KEYS | {"edge_mm", "base_point", "model", "rv_myocardium",
                                                              "alpha_endo", "uq", "em_top_k", "frame"})),
                        st.text(max_size=12))


@PROPS
@given(st.lists(st.one_of(STAGE_KEYS, st.dictionaries(STAGE_KEYS, st.one_of(
    JSONLIKE, st.dictionaries(OPTION_KEYS, JSONLIKE, max_size=3)), min_size=1, max_size=1)), max_size=4),
       st.dictionaries(st.sampled_from(["name", "modality", "report", "question_of_interest", "x"]), JSONLIKE,
                       max_size=3))
def test_recipes_load_or_config_error(stages, top):
    from cardiotwin.pipeline import load_recipe

    path = WORK / "recipe.yaml"
    path.write_text(yaml.safe_dump({**top, "stages": stages}))
    try:
        recipe = load_recipe(path)
    except ConfigError as exc:
        assert str(path) in str(exc) or "recipe" in str(exc)
        return
    for _, config in recipe.stages:  # typed stage configs: none has a field naming where a stage writes
        fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set(config)
        assert not fields & OUTPUT_KEYS


@PROPS
@given(st.dictionaries(st.sampled_from(["overlap", "centred_windows_mm", "sw_batch_size", "largest_component",
                                        "lv_component", "rv_myocardium", "rv_wall_mm", "threads", "junk"]),
                       SCALARS, max_size=5))
def test_typed_configs_load_or_config_error(data):
    from cardiotwin.segmentation.inference import SegConfig

    try:
        cfg = load_config(SegConfig, data, source="probe")
    except ConfigError as exc:
        assert str(exc).startswith("probe")
        return
    assert 0.0 <= cfg.overlap < 1.0 and math.isfinite(cfg.rv_wall_mm) and cfg.rv_wall_mm > 0


@PROPS
@given(st.one_of(st.text(max_size=60), st.floats(allow_nan=True), st.integers(), st.booleans(), st.none()))
def test_quantities_are_finite_or_config_error(value):
    try:
        q = parse_quantity(value, "mm", where="probe")
    except ConfigError:
        return
    assert math.isfinite(q)


URL_CHARS = st.sampled_from(list("ab./\\%2e5cf0%00:") + ["%2e%2e", "..", "%252e", "%ff", "\x00", "é", "a" * 300])


@PROPS
@given(st.lists(URL_CHARS, max_size=12).map(lambda parts: "/case/" + "".join(parts)))
def test_request_paths_are_confined_or_refused(target):
    root = WORK / "served"
    root.mkdir(exist_ok=True)
    (root / "a").write_text("inside")
    try:
        decoded = check_request_path(target)
        path = resolve_inside(root, decoded[len("/case/"):])
    except (PathRefused, FileNotFoundError, NotADirectoryError):
        return
    assert path.resolve().is_relative_to(root.resolve())


@PROPS
@given(JSONLIKE)
def test_manifests_open_or_case_error(data):
    root = WORK / "case"
    root.mkdir(exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(data, default=str))
    try:
        case = Case.open(root)
        for name in ("segment", "mesh"):
            case.stage_record(name)
        case.input_path("scan")
    except CaseError:
        return
