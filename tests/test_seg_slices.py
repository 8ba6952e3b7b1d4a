"""The slice network for thick-slice MR stacks: synthetic thick slices, slice-wise inference in the
stack's own geometry, training and bundle export of a 2D network."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cardiotwin.anatomy import Label
from cardiotwin.segmentation.bundle import DEFAULT_BUNDLE, BundleError, SliceModel, export_slice_model, load_bundle
from cardiotwin.segmentation.inference import predict_slices, refine_thick_slices, slice_axis
from cardiotwin.segmentation.network import NetworkSpec, build_network
from cardiotwin.segmentation.synth import make_label_volume, synth_batch, synth_slice
from cardiotwin.segmentation.train import TrainConfig, train
from cardiotwin.types import ImageGeometry, Scan

TINY_2D = {"type": "monai.UNet", "spatial_dims": 2, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


@pytest.fixture(scope="module")
def volume():
    return make_label_volume(11, size=64, spacing_mm=2.5)


class Threshold(torch.nn.Module):
    """A stand-in 2D 'network': class 1 where the normalised intensity is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-(x - 0.5) * 40.0, (x - 0.5) * 40.0], dim=1)


def _rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _stack_with_disc(axis: int, *, radius_mm: float = 20.0):
    """A thick-slice stack (1.37 mm pixels, 10 mm slices along ``axis``, oblique direction) holding a
    cylinder of radius ``radius_mm`` across the slices; returns the scan, the disc mask and its centre."""
    spacing = [1.37, 1.37, 1.37]
    spacing[axis] = 10.0
    shape = [70, 70, 70]
    shape[axis] = 9
    geometry = ImageGeometry(shape=tuple(shape), spacing_mm=tuple(spacing), origin_mm=(5.0, -20.0, 30.0),
                             direction=tuple(_rotation(axis).ravel()))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = geometry.index_to_world(idx)
    centre = geometry.index_to_world(np.asarray(shape, dtype=float) / 2.0 - 0.5)
    normal = geometry.direction_matrix[:, axis]
    rel = world - centre
    in_plane = rel - (rel @ normal)[..., None] * normal
    disc = np.linalg.norm(in_plane, axis=-1) <= radius_mm
    voxels = np.where(disc, 1.0, 0.1).astype(np.float32)
    scan = Scan(voxels=voxels, geometry=geometry, modality="MR", sha256="", source="test-stack")
    return scan, disc, centre


def test_synth_slice_shapes_ranges_and_determinism(volume):
    img, cls = synth_slice(volume, torch.Generator().manual_seed(3), patch=48)
    assert img.shape == (1, 48, 48) and cls.shape == (48, 48)
    assert img.dtype == torch.float32 and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert int(cls.min()) >= 0 and int(cls.max()) <= 8
    again = synth_slice(volume, torch.Generator().manual_seed(3), patch=48)
    assert torch.equal(img, again[0]) and torch.equal(cls, again[1])


def test_synth_slices_cut_the_lv_across_its_long_axis(volume):
    """Most slices near the short axis through the ventricles show an LV ring: myocardium around blood,
    the blood pool's area larger than in oblique slices would make it elongated (not checked), and a
    share of slices (below the apex, at the atria) without LV blood."""
    gen = torch.Generator().manual_seed(0)
    with_lv = 0
    for _ in range(24):
        _, cls = synth_slice(volume, gen, patch=64, p_oblique=0.0, p_reflect=1.0)
        blood, myo = cls == int(Label.LV_BLOOD), cls == int(Label.LV_MYO)
        if blood.sum() > 20:
            with_lv += 1
            grown = torch.nn.functional.max_pool2d(blood[None, None].float(), 3, 1, 1)[0, 0] > 0
            edge = grown & ~blood  # pixels just outside the blood pool
            # the blood pool borders mostly myocardium (papillary muscles count as blood)
            assert float((myo & edge).sum()) >= 0.4 * float(edge.sum())
    assert 6 <= with_lv <= 22


def test_slice_batches_for_a_2d_network(volume):
    images, targets = synth_batch([volume], torch.Generator().manual_seed(1), batch=3, patch=32, spatial_dims=2)
    assert images.shape == (3, 1, 32, 32) and targets.shape == (3, 1, 32, 32)


def test_slice_axis_is_the_thick_one_only_when_it_is_much_thicker():
    geo = lambda sp: ImageGeometry(shape=(4, 4, 4), spacing_mm=sp, origin_mm=(0.0, 0.0, 0.0))  # noqa: E731
    assert slice_axis(geo((1.4, 1.4, 10.0)), min_ratio=2.5) == 2
    assert slice_axis(geo((8.0, 1.3, 1.3)), min_ratio=2.5) == 0
    assert slice_axis(geo((1.5, 1.5, 1.5)), min_ratio=2.5) is None
    assert slice_axis(geo((1.0, 2.0, 4.0)), min_ratio=2.5) is None


@pytest.mark.parametrize("axis", [2, 0])
def test_predict_slices_works_in_each_slice_and_returns_to_the_stack_geometry(axis):
    scan, disc, centre = _stack_with_disc(axis)
    probs, inside = predict_slices(Threshold(), scan.voxels, scan.geometry, axis=axis, centre_mm=centre,
                                   spacing_mm=1.25, size=48)
    assert probs.shape == (2, *scan.voxels.shape) and inside.shape == scan.voxels.shape
    # the window is 48 x 1.25 = 60 mm wide in every slice, centred on the disc: it holds the whole disc
    assert inside[disc].all() and 0.2 < inside.mean() < 0.8
    np.testing.assert_allclose(probs.sum(0)[inside], 1.0, atol=1e-4)
    assert np.all(probs[:, ~inside] == 0.0)
    pred = probs.argmax(0) == 1
    dice = 2 * (pred & disc).sum() / (pred.sum() + disc.sum())
    assert dice > 0.97


class Threshold9(torch.nn.Module):
    """Threshold with the bundle's nine classes: LV blood pool (1) where bright, else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], 9, *x.shape[2:]), -20.0)
        logits[:, 0:1] = -(x - 0.5) * 40.0
        logits[:, 1:2] = (x - 0.5) * 40.0
        return logits


def _one_hot(labels: np.ndarray, n: int = 9) -> np.ndarray:
    return np.moveaxis(np.eye(n, dtype=np.float32)[labels], -1, 0)


def test_refine_thick_slices_averages_in_the_window_of_a_thick_stack_only():
    scan, disc, centre = _stack_with_disc(2, radius_mm=15.0)
    raw = np.zeros(scan.voxels.shape, dtype=np.uint8)
    raw[disc] = int(Label.LV_MYO)  # the 3D pass found the "heart" here, labelled myocardium
    raw[0, 0, :] = int(Label.AORTA)  # far outside the window: kept
    spec = NetworkSpec(spatial_dims=2)
    model = lambda w: SliceModel(network=Threshold9(), spec=spec, spacing_mm=1.25, window=32,  # noqa: E731
                                 min_slice_ratio=2.5, weight=w)
    out = refine_thick_slices(_one_hot(raw), scan, model(1.0))
    assert np.all(out[disc] == int(Label.LV_BLOOD))  # the slice network alone decides inside its window
    assert np.all(out[0, 0, :] == int(Label.AORTA))
    # weighted 0.3, the slice network is outvoted where the 3D network is certain
    assert np.array_equal(refine_thick_slices(_one_hot(raw), scan, model(0.3)), raw)
    # an isotropic scan is not a thick-slice stack: the 3D labels
    iso = Scan(voxels=scan.voxels, geometry=ImageGeometry(shape=scan.geometry.shape, spacing_mm=(1.5, 1.5, 1.5),
                                                          origin_mm=(0.0, 0.0, 0.0)), modality="MR", sha256="", source="iso")
    assert np.array_equal(refine_thick_slices(_one_hot(raw), iso, model(1.0)), raw)


def test_train_config_for_a_slice_network():
    cfg = TrainConfig(network=TINY_2D, patch=32)
    assert cfg.spatial_dims == 2 and "p_negative" not in cfg.sample_kwargs()
    assert TrainConfig().spatial_dims == 3 and "p_negative" in TrainConfig().sample_kwargs()
    with pytest.raises(ValueError, match="p_negative"):
        TrainConfig(network=TINY_2D, p_negative=0.1).validate()
    with pytest.raises(ValueError, match="spatial_dims"):
        NetworkSpec.from_dict({**TINY_2D, "spatial_dims": 4})
    net = build_network(NetworkSpec.from_dict(TINY_2D))
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 9, 32, 32)


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("slice_run")
    cfg = TrainConfig(seed=0, n_label_volumes=2, label_volume_size=48, spacing_mm=2.5, patch=32, batch=2, steps=2,
                      val_every=2, n_val_per_modality=1, workers=0, threads=1, network=TINY_2D, lr=1e-3,
                      cache_dir=str(out / "cache"))
    summary = train(cfg, out_dir=out, progress=False)
    return out, summary


def test_slice_network_trains_and_is_validated_on_mr_stacks(slice_run):
    out, summary = slice_run
    assert summary["steps"] == 2 and (out / "best.pt").is_file()
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and 0.0 <= last["val_mean"] <= 1.0
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert set(ck["val"]["per_case"]) == {"MR-typical-700000", "MR-dilated-700001"}


def test_slice_network_export_joins_a_bundle_and_is_checked_on_load(slice_run, tmp_path):
    out, _ = slice_run
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (bundle / "slice_model.safetensors").unlink(missing_ok=True)
    before = json.loads((bundle / "metadata.json").read_text())
    export_slice_model(out, bundle)
    meta = json.loads((bundle / "metadata.json").read_text())
    assert {k: v for k, v in meta.items() if k != "slice_model"} == {k: v for k, v in before.items() if k != "slice_model"}
    model = load_bundle(bundle)
    assert model.slice is not None and model.slice.spec.spatial_dims == 2
    assert model.slice.spacing_mm == 2.5 and model.slice.window == 32
    # a 3D network is not a slice network
    with pytest.raises(BundleError, match="not a slice network"):
        ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        ck["network"]["spatial_dims"] = 3
        bad = tmp_path / "bad_run"
        bad.mkdir()
        torch.save(ck, bad / "best.pt")
        export_slice_model(bad, bundle)
    assert model.slice.weight == 0.5
    # its classes must be the 3D network's (their probabilities are averaged)
    bad_meta = json.loads(json.dumps(meta))
    bad_meta["slice_model"]["network"]["out_channels"] = 4
    (bundle / "metadata.json").write_text(json.dumps(bad_meta))
    with pytest.raises(BundleError, match="slice network has 4 outputs"):
        load_bundle(bundle)
    meta["slice_model"]["weight"] = 0.0
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="weight must be a number in"):
        load_bundle(bundle)
    meta["slice_model"]["weight"] = 0.5
    (bundle / "metadata.json").write_text(json.dumps(meta))
    # replaced slice weights fail the checksum
    (bundle / "slice_model.safetensors").write_bytes((bundle / "model.safetensors").read_bytes())
    with pytest.raises(BundleError, match="slice_model.safetensors does not match the sha256"):
        load_bundle(bundle)


class Constant(torch.nn.Module):
    """A stand-in 2D 'network' that calls every pixel ``label``."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 9, *x.shape[2:])
        logits[:, self.label] = 10.0
        return logits


def test_segment_runs_a_bundles_slice_network_on_thick_mr_stacks_unless_switched_off():
    import dataclasses

    from cardiotwin.phantom import make_phantom
    from cardiotwin.segmentation.inference import SegConfig, predict_raw_labels

    model = load_bundle()
    assert model.slice is None  # heart_seg_v1 ships without one (MODEL_CARD.md)
    scan = make_phantom(seed=900051, modality="MR").scan  # short-axis stack, 1.5 x 1.5 x 8 mm
    with_slices = dataclasses.replace(model, slice=SliceModel(network=Constant(int(Label.AORTA)),
                                                              spec=NetworkSpec(spatial_dims=2), spacing_mm=1.25,
                                                              window=64, min_slice_ratio=2.5, weight=0.6))
    plain = predict_raw_labels(scan, model, cfg=SegConfig())
    out = predict_raw_labels(scan, with_slices, cfg=SegConfig())
    changed = out != plain  # weighted 0.6, the stand-in's aorta wins in its window, nothing changes elsewhere
    assert changed.any() and np.all(out[changed] == int(Label.AORTA))
    # the window is 80 mm wide in every slice: far fewer voxels than the 180 mm stack
    assert 0.05 < float((out == int(Label.AORTA)).mean()) < 0.4
    off = predict_raw_labels(scan, with_slices, cfg=SegConfig(slice_network=False))
    assert np.array_equal(off, plain)


def test_train_seg_exports_a_volume_bundle_and_keeps_its_slice_network_on_re_export(slice_run, tmp_path):
    """`train-seg --export-only --export DIR` writes a 3D run as a bundle that loads; a 2D run's export
    joins it; exporting the 3D run again keeps the slice network (its entry and weights)."""
    import yaml

    from cardiotwin.cli import main

    run3d = tmp_path / "run3d"
    cfg3d = {"seed": 0, "n_label_volumes": 2, "label_volume_size": 48, "patch": 32, "batch": 1, "steps": 1,
             "val_every": 1, "n_val_per_modality": 1, "workers": 0, "threads": 1, "cache_dir": str(tmp_path / "cache"),
             "network": {"type": "monai.UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}}
    (tmp_path / "cfg3d.yaml").write_text(yaml.safe_dump(cfg3d))
    bundle = tmp_path / "bundle"
    assert main(["train-seg", "--config", str(tmp_path / "cfg3d.yaml"), "--out", str(run3d), "--no-progress",
                 "--export", str(bundle)]) == 0
    assert load_bundle(bundle).slice is None
    slice_out, _ = slice_run
    cfg2d = json.loads(torch.load(slice_out / "best.pt", map_location="cpu", weights_only=True)["config_json"])
    (tmp_path / "cfg2d.yaml").write_text(yaml.safe_dump(cfg2d))
    assert main(["train-seg", "--config", str(tmp_path / "cfg2d.yaml"), "--out", str(slice_out), "--export-only",
                 "--export", str(bundle)]) == 0
    entry = json.loads((bundle / "metadata.json").read_text())["slice_model"]
    assert entry["training"]["command"].startswith("cardiotwin train-seg") and entry["window"] == 32
    assert main(["train-seg", "--config", str(tmp_path / "cfg3d.yaml"), "--out", str(run3d), "--export-only",
                 "--export", str(bundle)]) == 0
    assert json.loads((bundle / "metadata.json").read_text())["slice_model"] == entry
    model = load_bundle(bundle)
    assert model.slice is not None and model.spec.spatial_dims == 3
