"""Segmentation network and synthetic-data generator: shapes, validation, determinism, one training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiotwin.anatomy import Label
from cardiotwin.segmentation.network import NetworkSpec, build_network
from cardiotwin.segmentation.synth import (CODE_TO_CLASS, CT_WINDOW_HU, DISTRACTORS, PAPILLARY, add_distractors,
                                           make_label_volume, normalise_intensities, synth_batch, synth_sample)


@pytest.fixture(scope="module")
def volume():
    return make_label_volume(5, size=48, spacing_mm=4.0)


def test_network_output_shape():
    spec = NetworkSpec(channels=(4, 8, 16), strides=(2, 2))
    net = build_network(spec)
    out = net(torch.zeros(2, 1, 32, 32, 32))
    assert out.shape == (2, 9, 32, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strides": (2, 2)}, "len(strides)"),
        ({"channels": (8,)}, "at least two"),
        ({"type": "torchvision.ResNet"}, "not supported"),
        ({"in_channels": 3}, "in_channels"),
        ({"strides": (2, 3, 2, 2)}, "strides must be 1 or 2"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_network_spec_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NetworkSpec(**kwargs).validate()


def test_network_spec_from_dict_rejects_unknown_key():
    with pytest.raises(ValueError, match="unknown network key"):
        NetworkSpec.from_dict({"type": "monai.UNet", "chanels": [8, 16]})


def test_label_volume_is_deterministic_and_complete(volume):
    again = make_label_volume(5, size=48, spacing_mm=4.0)
    assert np.array_equal(volume.codes, again.codes)
    present = set(np.unique(volume.codes).tolist())
    # every heart label 1-8 is drawn (4 mm grid, 192 mm cube around the heart)
    assert {1, 2, 3, 4, 5, 6, 7, 8} <= present
    assert abs(np.linalg.norm(volume.long_axis) - 1.0) < 1e-9
    other = make_label_volume(6, size=48, spacing_mm=4.0)
    assert not np.array_equal(volume.codes, other.codes)


def test_papillary_muscles_count_as_lv_blood():
    assert CODE_TO_CLASS[PAPILLARY] == Label.LV_BLOOD
    assert CODE_TO_CLASS[int(Label.SCAR)] == Label.LV_MYO
    assert all(CODE_TO_CLASS[c] == 0 for c in range(20, 25))


@pytest.mark.parametrize("mode", ["ct", "mr", "random"])
def test_synth_sample_shapes_ranges_and_fov(volume, mode):
    gen = torch.Generator().manual_seed(1)
    img, cls = synth_sample(volume, gen, patch=32, mode=mode)
    assert img.shape == (1, 32, 32, 32) and img.dtype == torch.float32
    assert cls.shape == (32, 32, 32) and cls.dtype == torch.int64
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert int(cls.max()) <= 8 and int(cls.min()) >= 0
    # voxels outside the simulated acquisition (image exactly 0 from padding) carry no label there
    assert (cls > 0).any()


def test_synth_sample_deterministic_in_generator(volume):
    a = synth_sample(volume, torch.Generator().manual_seed(3), patch=32)
    b = synth_sample(volume, torch.Generator().manual_seed(3), patch=32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_normalisation_ct_window_and_percentiles():
    img = torch.linspace(-1000, 1000, 1000).reshape(10, 10, 10)
    fov = torch.ones_like(img, dtype=torch.bool)
    ct = normalise_intensities(img, fov, modality="CT")
    lo, hi = CT_WINDOW_HU
    centre_hu = (lo + hi) / 2
    i = int(torch.argmin((img - centre_hu).abs()))
    assert abs(float(ct.flatten()[i]) - 0.5) < 0.01
    mr = normalise_intensities(img, fov, modality="MR")
    assert float(mr.min()) == 0.0 and float(mr.max()) == 1.0
    fov[0] = False
    assert float(normalise_intensities(img, fov, modality="MR")[0].abs().max()) == 0.0


def test_one_training_step_lowers_the_loss(volume):
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    net = build_network(NetworkSpec(channels=(8, 16, 32), strides=(2, 2)))
    images, targets = synth_batch([volume], torch.Generator().manual_seed(0), batch=2, patch=32)
    assert images.shape == (2, 1, 32, 32, 32) and targets.shape == (2, 1, 32, 32, 32)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(loss_fn(net(images), targets))
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn(net(images), targets)
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(net(images), targets)) < first - 0.05


def test_resume_accepts_runtime_settings_and_a_new_end_but_not_other_changes(tmp_path):
    import dataclasses

    from cardiotwin.errors import ConfigError
    from cardiotwin.segmentation.train import TrainConfig, train

    cfg = TrainConfig(n_label_volumes=1, label_volume_size=24, spacing_mm=4.0, patch=16, batch=1, steps=2,
                      val_every=1000, n_val_per_modality=0, threads=1, workers=0, cache_dir=str(tmp_path / "cache"),
                      network={"type": "monai.UNet", "channels": [4, 8], "strides": [2]})
    run = tmp_path / "run"
    assert train(cfg, out_dir=run, progress=False)["steps"] == 2
    more = dataclasses.replace(cfg, steps=4, threads=2, max_minutes=5.0)
    summary = train(more, out_dir=run, resume=True, progress=False)
    assert summary["steps"] == 4
    assert summary["schedule_changes"] == [{"at_step": 2, "steps_from": 2, "steps_to": 4}]
    with pytest.raises(ConfigError, match="lr"):
        train(dataclasses.replace(more, lr=1e-4), out_dir=run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="larger"):
        train(dataclasses.replace(more, steps=3), out_dir=run, resume=True, progress=False)


def test_distractors_change_the_background_appearance_but_never_the_classes(volume):
    # SynthSeg-style extra labels (Billot et al. 2023): random non-cardiac structures belong to the
    # background class, and painting them may only replace thorax tissue, never a heart label.
    assert all(CODE_TO_CLASS[c] == 0 for c in DISTRACTORS)
    codes = torch.from_numpy(volume.codes[8:40, 8:40, 8:40].astype(np.int64))
    ax = (torch.arange(32, dtype=torch.float32) - 15.5) * 4.0
    u = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)
    out = add_distractors(codes, u, torch.Generator().manual_seed(0), n=7)
    changed = out != codes
    assert changed.any()  # something was painted
    assert set(torch.unique(out[changed]).tolist()) <= set(DISTRACTORS)
    assert torch.equal(torch.from_numpy(CODE_TO_CLASS)[out], torch.from_numpy(CODE_TO_CLASS)[codes])
    assert (codes[changed] >= 20).all() and (codes[changed] <= 24).all()


def test_synth_sample_with_distractors_keeps_labels(volume):
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    img, cls = synth_sample(volume, gen_a, patch=32, mode="mr", p_distractors=1.0, p_trabeculae=1.0)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 and int(cls.max()) <= 8
    img2, cls2 = synth_sample(volume, gen_b, patch=32, mode="mr", p_distractors=1.0, p_trabeculae=1.0)
    assert torch.equal(img, img2) and torch.equal(cls, cls2)


def test_train_config_checks_sampling_settings_and_init_weights(tmp_path):
    from cardiotwin.errors import ConfigError
    from cardiotwin.segmentation.train import TrainConfig, load_init_weights

    with pytest.raises(ValueError, match="mode_weights"):
        TrainConfig(mode_weights=(0.5, -0.1, 0.6)).validate()
    with pytest.raises(ValueError, match="p_distractors"):
        TrainConfig(p_distractors=1.5).validate()
    with pytest.raises(ValueError, match="p_reflect"):
        TrainConfig(p_reflect=-0.1).validate()
    with pytest.raises(ValueError, match="scale_range"):
        TrainConfig(scale_range=(1.2, 0.8)).validate()
    with pytest.raises(ValueError, match="dim_range"):
        TrainConfig(dim_range=(0.5, 1.5)).validate()
    with pytest.raises(ValueError, match="p_pericardium"):
        TrainConfig(p_pericardium=2.0).validate()
    with pytest.raises(ValueError, match="log_gamma_range"):
        TrainConfig(log_gamma_range=(0.3, -0.3)).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        load_init_weights(tmp_path / "missing.pt")


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    """A run with init_weights starts from exactly those weights (the first step is from them, not random)."""
    from safetensors.torch import save_file

    from cardiotwin.errors import ConfigError
    from cardiotwin.segmentation.train import TrainConfig, train

    net_cfg = {"type": "monai.UNet", "channels": [4, 8], "strides": [2]}
    torch.manual_seed(123)
    source = build_network(NetworkSpec.from_dict(net_cfg))
    weights = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    cfg = TrainConfig(n_label_volumes=1, label_volume_size=24, spacing_mm=4.0, patch=16, batch=1, steps=1, lr=1e-12,
                      val_every=1000, n_val_per_modality=0, threads=1, workers=0, cache_dir=str(tmp_path / "cache"),
                      network=net_cfg, init_weights=str(weights), p_distractors=0.5)
    train(cfg, out_dir=tmp_path / "run", progress=False)
    trained = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k, v in source.state_dict().items():
        assert torch.allclose(trained[k].float(), v.float(), atol=1e-6), k  # lr 1e-12: one step moves nothing
    import dataclasses

    wrong = dataclasses.replace(cfg, network={"type": "monai.UNet", "channels": [4, 16], "strides": [2]})
    with pytest.raises(ConfigError, match="does not fit"):
        train(wrong, out_dir=tmp_path / "run2", progress=False)


def test_off_centre_patches_with_mirrored_thorax_have_no_heart_beyond_the_cube(volume):
    """Patches far off the heart: the thorax is mirrored beyond the label cube, hearts there are removed,
    so no heart label appears outside the label cube."""
    from cardiotwin.segmentation.synth import SynthLabels

    # a cube that is all heart: anything sampled beyond it must become background (soft tissue)
    allheart = SynthLabels(codes=np.full((24, 24, 24), int(Label.LV_BLOOD), dtype=np.uint8), long_axis=(0.0, 0.0, 1.0),
                           spacing_mm=4.0, seed=0)
    n_beyond = 0
    for seed in range(6):
        gen = torch.Generator().manual_seed(seed)
        img, cls = synth_sample(allheart, gen, patch=32, mode="ct", p_off_centre=1.0, off_centre_mm=200.0,
                                p_reflect=1.0)
        n_beyond += int((cls == 0).sum())
        assert int(cls.max()) <= int(Label.LV_BLOOD)
    assert n_beyond > 0  # shifted by up to 200 mm: part of some patch lies beyond the 96 mm cube


def test_trabeculae_only_turn_lv_blood_next_to_the_wall_into_blood_class_tissue():
    """Trabeculae (Sunnybrook/ACDC convention: inside the endocardial contour, labelled blood pool)
    appear only in the LV blood pool within depth_vox voxels of the LV myocardium, and keep class 1."""
    from cardiotwin.segmentation.synth import add_trabeculae

    codes = torch.zeros((32, 32, 32), dtype=torch.int64)
    codes[4:28, 4:28, 4:28] = int(Label.LV_MYO)
    codes[8:24, 8:24, 8:24] = int(Label.LV_BLOOD)
    out = add_trabeculae(codes, torch.Generator().manual_seed(0), depth_vox=2)
    changed = out != codes
    assert changed.any()
    assert (codes[changed] == int(Label.LV_BLOOD)).all() and (out[changed] == PAPILLARY).all()
    assert not changed[10:22, 10:22, 10:22].any()  # deeper than 2 voxels from the wall: untouched
    cls = torch.from_numpy(CODE_TO_CLASS)
    assert torch.equal(cls[out], cls[codes])


def test_texture_negatives_are_all_background(volume):
    from cardiotwin.segmentation.synth import texture_negative

    img, cls = texture_negative(torch.Generator().manual_seed(2), patch=32)
    assert img.shape == (1, 32, 32, 32) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0.05 and int(cls.abs().sum()) == 0
    img, cls = synth_sample(volume, torch.Generator().manual_seed(2), patch=32, p_negative=1.0)
    assert int(cls.abs().sum()) == 0
    _, cls = synth_sample(volume, torch.Generator().manual_seed(2), patch=32, p_negative=0.0)
    assert (cls > 0).any()


def test_pericardium_replaces_only_thorax_tissue_next_to_the_outer_wall():
    """add_pericardium paints PERICARDIUM only over thorax codes within depth_vox voxels of the
    LV/RV myocardium: heart labels, deeper tissue and the classes stay as they were."""
    from cardiotwin.segmentation.synth import FAT, LUNG, PERICARDIUM, add_pericardium

    codes = torch.full((32, 32, 32), FAT, dtype=torch.int64)
    codes[:, :, 24:] = LUNG
    codes[8:24, 8:24, 8:24] = int(Label.LV_MYO)
    codes[12:20, 12:20, 12:20] = int(Label.LV_BLOOD)
    out = add_pericardium(codes, torch.Generator().manual_seed(0), depth_vox=2)
    changed = out != codes
    assert changed.any() and (out[changed] == PERICARDIUM).all()
    assert ((codes[changed] == FAT) | (codes[changed] == LUNG)).all()
    dist = torch.zeros_like(codes)  # Chebyshev distance to the myocardium block
    idx = torch.arange(32)
    d1 = torch.clamp(torch.maximum(8 - idx, idx - 23), min=0)
    dist = torch.maximum(torch.maximum(d1[:, None, None], d1[None, :, None]), d1[None, None, :])
    assert int(dist[changed].max()) <= 2
    cls = torch.from_numpy(CODE_TO_CLASS)
    assert torch.equal(cls[out], cls[codes])


def test_dimmed_mr_samples_stay_below_the_dim_factor(volume):
    """dim_range scales MR-normalised patches (whole-scan normalisation puts blood well below 1)."""
    img, _ = synth_sample(volume, torch.Generator().manual_seed(5), patch=32, mode="mr", dim_range=(0.3, 0.3))
    ref, _ = synth_sample(volume, torch.Generator().manual_seed(5), patch=32, mode="mr")
    assert float(img.max()) <= 0.3 + 1e-6 and float(ref.max()) > 0.9
    ct, _ = synth_sample(volume, torch.Generator().manual_seed(5), patch=32, mode="ct", dim_range=(0.3, 0.3))
    assert float(ct.max()) > 0.3  # CT is windowed in absolute HU: never dimmed


def test_dark_fat_gives_fat_a_myocardium_like_signal_in_mr_only():
    """p_dark_fat=1: MR fat within 0.4-1.3x the LV myocardium's signal (no bright shell round the wall);
    0 keeps bSSFP fat bright and draws no extra random number (older configs give the same data)."""
    from cardiotwin.segmentation.synth import FAT, _intensity_table

    for seed in range(20):
        t = _intensity_table(torch.Generator().manual_seed(seed), "mr", p_dark_fat=1.0)
        assert 0.4 * float(t[int(Label.LV_MYO)]) / 1.15 - 1e-9 <= float(t[FAT]) <= 1.3 * float(t[int(Label.LV_MYO)]) / 0.85
        bright = _intensity_table(torch.Generator().manual_seed(seed), "mr")
        assert float(bright[FAT]) >= 0.5
        assert torch.equal(_intensity_table(torch.Generator().manual_seed(seed), "mr", p_dark_fat=0.0), bright)
        ct = _intensity_table(torch.Generator().manual_seed(seed), "ct", p_dark_fat=1.0)
        assert -130.0 <= float(ct[FAT]) <= -60.0


def test_train_config_checks_dark_fat_ramp_and_pericardium_depth(volume):
    from cardiotwin.segmentation.train import TrainConfig

    with pytest.raises(ValueError, match="p_dark_fat"):
        TrainConfig(p_dark_fat=1.5).validate()
    with pytest.raises(ValueError, match="p_endo_ramp"):
        TrainConfig(p_endo_ramp=-0.1).validate()
    with pytest.raises(ValueError, match="pericardium_depth_vox"):
        TrainConfig(pericardium_depth_vox=0).validate()
    kw = TrainConfig(p_dark_fat=0.5, pericardium_depth_vox=6, p_endo_ramp=1.0).sample_kwargs()
    img, cls = synth_sample(volume, torch.Generator().manual_seed(2), patch=32, **kw)
    assert img.shape == (1, 32, 32, 32) and cls.shape == (32, 32, 32)


def test_endocardial_ramp_darkens_only_lv_blood_next_to_the_wall_most_at_the_wall():
    """add_endocardial_ramp: LV blood within depth voxels of the LV myocardium moves towards the
    myocardium's signal, linearly less with distance; nothing else changes (classes are untouched)."""
    from cardiotwin.segmentation.synth import add_endocardial_ramp

    codes = torch.full((24, 24, 24), 23, dtype=torch.int64)  # soft tissue
    codes[4:20, 4:20, 4:20] = int(Label.LV_MYO)
    codes[8:16, 8:16, 8:16] = int(Label.LV_BLOOD)
    img = torch.where(codes == int(Label.LV_BLOOD), torch.tensor(1.0), torch.tensor(0.2))
    out = add_endocardial_ramp(img, codes, torch.Generator().manual_seed(0), depth_vox=2, myo_value=0.2)
    changed = out != img
    assert bool((codes[changed] == int(Label.LV_BLOOD)).all())
    wall_row = out[8:16, 12, 12]  # across the cavity: darkest at both walls, untouched in the middle
    assert float(wall_row[0]) < float(wall_row[1]) < float(wall_row[3]) == 1.0
    assert float(wall_row[7]) == float(wall_row[0]) and 0.2 < float(wall_row[0]) < 0.8
    assert torch.equal(out[10:14, 10:14, 10:14], img[10:14, 10:14, 10:14])


def test_myocardial_heterogeneity_changes_only_the_wall_and_brightens_the_outer_lv_wall_most():
    """add_myocardial_heterogeneity: only LV / RV myocardium voxels change (classes untouched); with
    an outer band, the LV wall's outermost layer is brighter than its inner layer, as the grey outer
    layer of a real cine-MRI wall (Sunnybrook SCD0000201) that heart_seg_v1 1.3.0 called background."""
    from cardiotwin.segmentation.synth import add_myocardial_heterogeneity

    codes = torch.full((24, 24, 24), 23, dtype=torch.int64)  # soft tissue
    codes[4:20, 4:20, 4:20] = int(Label.LV_MYO)
    codes[8:16, 8:16, 8:16] = int(Label.LV_BLOOD)
    img = torch.where(codes == int(Label.LV_BLOOD), torch.tensor(1.0), torch.tensor(0.2))
    img = torch.where(codes == 23, torch.tensor(0.4), img)
    for seed in range(5):
        out = add_myocardial_heterogeneity(img, codes, torch.Generator().manual_seed(seed), myo_value=0.2,
                                           epi_depth_vox=3)
        changed = out != img
        assert bool((codes[changed] == int(Label.LV_MYO)).all()) and bool(changed.any())
        row = out[4:8, 12, 12]  # wall from the epicardium (index 0) to the endocardium (index 3)
        assert float(row[0]) > float(row[3])
        assert float(out[codes == int(Label.LV_MYO)].min()) > 0.0  # multiplicative: the signal stays positive
    flat = add_myocardial_heterogeneity(img, torch.full_like(codes, 23), torch.Generator().manual_seed(0),
                                        myo_value=0.2, epi_depth_vox=3)
    assert torch.equal(flat, img)  # no myocardium: nothing to do


def test_myo_hetero_draws_nothing_when_off(volume):
    """p_myo_hetero=0 (the default) draws no random number, so configs written before it existed give
    exactly their old samples: a tiny positive probability draws one (and never applies it), which shifts
    the random stream and changes the sample; 0 must not."""
    a, ca = synth_sample(volume, torch.Generator().manual_seed(3), patch=32, mode="mr", p_endo_ramp=0.7)
    b, cb = synth_sample(volume, torch.Generator().manual_seed(3), patch=32, mode="mr", p_endo_ramp=0.7,
                         p_myo_hetero=1e-12)
    assert not torch.equal(a, b)  # the draw alone changes the sample
    c, cc = synth_sample(volume, torch.Generator().manual_seed(3), patch=32, mode="mr", p_endo_ramp=0.7,
                         p_myo_hetero=1.0)
    assert not torch.equal(c, a)


def test_train_config_vessels_option_and_its_own_label_volume_cache(tmp_path):
    """vessels: "short" keeps the cache names of earlier runs; "thoracic" label volumes are cached
    under their own names (a stale short-vessel volume must never be reused for a thoracic run)."""
    from cardiotwin.segmentation.train import TrainConfig, _SynthStream

    with pytest.raises(ValueError, match="vessels"):
        TrainConfig(vessels="long").validate()
    short = _SynthStream(TrainConfig(cache_dir=str(tmp_path)), 0)._cache_file(7)
    thoracic = _SynthStream(TrainConfig(cache_dir=str(tmp_path), vessels="thoracic"), 0)._cache_file(7)
    assert short.name == "vol_80_2.5mm_000007.npz" and thoracic != short
    cfg = TrainConfig(cache_dir=str(tmp_path), vessels="thoracic", label_volume_size=32, spacing_mm=7.5)
    vol = _SynthStream(cfg, 0)._volume(3)
    assert _SynthStream(cfg, 0)._cache_file(3).is_file()
    assert int((vol.codes == int(Label.AORTA)).sum()) > 0


def test_train_config_dilated_fraction_spreads_dilated_volumes_with_their_own_cache(tmp_path):
    """dilated_fraction: that share of the label volumes, spread evenly over the seeds, is drawn
    with a dilated LV and cached under its own name; 0 (the default) keeps earlier runs' volumes."""
    from cardiotwin.segmentation.train import TrainConfig, _SynthStream

    with pytest.raises(ValueError, match="dilated_fraction"):
        TrainConfig(dilated_fraction=1.5).validate()
    cfg = TrainConfig(cache_dir=str(tmp_path), dilated_fraction=0.35, n_label_volumes=120)
    shapes = [cfg.lv_shape(i) for i in range(120)]
    assert shapes.count("dilated") == 42 and "dilated" in shapes[:3] and "dilated" in shapes[-3:]
    assert {TrainConfig().lv_shape(i) for i in range(50)} == {"typical"}
    stream = _SynthStream(cfg, 0)
    assert stream._cache_file(1).name == "vol_80_2.5mm_000001.npz"
    assert stream._cache_file(2).name == "vol_80_2.5mm_dilated_000002.npz"
    small = TrainConfig(cache_dir=str(tmp_path), dilated_fraction=1.0, label_volume_size=32, spacing_mm=5.0)
    dil = _SynthStream(small, 0)._volume(3)
    typ = make_label_volume(3, size=32, spacing_mm=5.0)
    assert (dil.codes == int(Label.LV_BLOOD)).sum() > (typ.codes == int(Label.LV_BLOOD)).sum()


def test_contrast_mixing_changes_only_the_right_heart_of_ct_patches(volume, monkeypatch):
    """add_contrast_mixing: RA and RV blood blend between their enhanced value and unenhanced blood
    (class unchanged); every other tissue keeps its value; in synth_sample it acts on CT-like patches
    only."""
    from cardiotwin.segmentation.synth import add_contrast_mixing

    codes = torch.from_numpy(volume.codes[:32, :32, :32].astype(np.int64))
    codes[:16, :, :8] = int(Label.RV_BLOOD)
    codes[16:, :, :8] = int(Label.RA)
    img = torch.full(codes.shape, 400.0)
    img[codes == int(Label.LV_MYO)] = 100.0
    out = add_contrast_mixing(img, codes, torch.Generator().manual_seed(0), unenhanced=40.0)
    right = (codes == int(Label.RV_BLOOD)) | (codes == int(Label.RA))
    assert torch.equal(out[~right], img[~right])
    assert out[right].min() >= 40.0 - 1e-3 and out[right].max() <= 400.0 + 1e-3
    assert out[right].std() > 30.0  # swirls, not one value
    # synth_sample mixes CT-like patches when switched on, never MR-like ones, and not when off
    import cardiotwin.segmentation.synth as synth

    calls = []
    monkeypatch.setattr(synth, "add_contrast_mixing", lambda img, *a, **k: calls.append(1) or img)
    for mode, p, expected in (("ct", 1.0, 1), ("mr", 1.0, 0), ("random", 1.0, 0), ("ct", 0.0, 0)):
        calls.clear()
        synth_sample(volume, torch.Generator().manual_seed(3), patch=32, mode=mode, p_contrast_mixing=p)
        assert len(calls) == expected, (mode, p)
