"""The shipped model bundle: metadata, safe loading, and clear errors for broken bundles."""

from __future__ import annotations

import json
import shutil

import pytest

from cardiotwin.anatomy import LABEL_NAMES
from cardiotwin.errors import CardiotwinError
from cardiotwin.segmentation.bundle import DEFAULT_BUNDLE, BundleError, load_bundle


@pytest.fixture()
def bundle_copy(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    return dst


def _edit_metadata(root, fn):
    path = root / "metadata.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_shipped_bundle_metadata_is_complete():
    model = load_bundle()
    meta = model.metadata
    assert model.label_table == {k: LABEL_NAMES[k] for k in range(9)}
    assert model.predicted_labels == (1, 2, 3, 4, 5, 6, 7, 8)
    assert meta["licence"] == "Apache-2.0" and (DEFAULT_BUNDLE / "LICENSE").is_file()
    assert (DEFAULT_BUNDLE / "MODEL_CARD.md").is_file()
    assert meta["inputs"]["target_spacing_mm"] == model.spacing_mm
    assert set(meta["inputs"]["intensity_normalisation"]) == {"CT", "MR"}
    training = meta["training"]
    assert training["label_volume_seeds"][1] < 900000  # held-out seeds never used
    assert training["command"].startswith("cardiotwin train-seg")
    assert 0.0 < meta["validation"]["mean_dice"] <= 1.0
    # weights stay small enough for git
    assert (DEFAULT_BUNDLE / meta["weights"]["file"]).stat().st_size < 8 * 2**20


def test_missing_weights_is_a_clear_error(bundle_copy):
    (bundle_copy / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="missing model.safetensors"):
        load_bundle(bundle_copy)


def test_wrong_label_table_is_a_clear_error(bundle_copy):
    def swap(meta):
        meta["outputs"]["label_table"]["1"], meta["outputs"]["label_table"]["3"] = "rv_blood", "lv_blood"

    _edit_metadata(bundle_copy, swap)
    with pytest.raises(BundleError, match="wrong label table: label 1 is 'rv_blood'"):
        load_bundle(bundle_copy)


def test_label_table_must_match_output_channels(bundle_copy):
    def drop_pa(meta):
        meta["outputs"]["label_table"].pop("8")
        meta["outputs"]["predicted_labels"].remove(8)

    _edit_metadata(bundle_copy, drop_pa)
    with pytest.raises(BundleError, match="network has 9 outputs but the label table has 8"):
        load_bundle(bundle_copy)


def test_replaced_weights_fail_the_checksum(bundle_copy):
    path = bundle_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the sha256"):
        load_bundle(bundle_copy)


def test_weights_that_do_not_fit_the_spec(bundle_copy):
    def smaller(meta):
        meta["network"]["channels"] = [8, 16, 32, 64, 128]
        meta["weights"].pop("sha256")

    _edit_metadata(bundle_copy, smaller)
    with pytest.raises(BundleError, match="weights do not fit the network spec"):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(CardiotwinError, match="missing"):
        load_bundle(tmp_path)


def test_weights_are_loaded_without_pickle():
    """safetensors holds tensors only; the bundle has no pickle-based weight file."""
    names = {p.name for p in DEFAULT_BUNDLE.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".pt", ".pth", ".pkl", ".ckpt")) for n in names)
