"""Cine MRI: licence rules of bundles, 4D frame selection, wall QC, and the ACDC research bundle on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.anatomy import Label
from cardiotwin.errors import StageError
from cardiotwin.segmentation import bundle as bundle_mod
from cardiotwin.segmentation.bundle import DEFAULT_BUNDLE, BundleError, load_bundle, resolve_bundle
from cardiotwin.segmentation.cine import pick_ed_es, segment_cine, write_cine_outputs
from cardiotwin.segmentation.qc import lv_wall_plausibility
from cardiotwin.types import ImageGeometry, LabelMap

ACDC_BUNDLE = DEFAULT_BUNDLE.parent / "heart_seg_cine_acdc"


@pytest.fixture()
def nc_bundle(tmp_path):
    """A copy of the default bundle relabelled as a CC BY-NC-SA 4.0 research bundle."""
    dst = tmp_path / "research_acdc"
    shutil.copytree(DEFAULT_BUNDLE, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["licence"] = "CC-BY-NC-SA-4.0"
    (dst / "metadata.json").write_text(json.dumps(meta))
    (dst / "LICENSE").write_text("Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International\n")
    (dst / "MODEL_CARD.md").write_text("# research model\n\nNon-commercial research only.\n")
    return dst


def test_non_commercial_bundle_loads_only_when_asked(nc_bundle, monkeypatch):
    model = load_bundle(nc_bundle)
    assert model.non_commercial and model.licence == "CC-BY-NC-SA-4.0"
    monkeypatch.setattr(bundle_mod, "DEFAULT_BUNDLE", nc_bundle)
    with pytest.raises(BundleError, match="never the default"):
        load_bundle()  # as the default it is refused


def test_bundle_without_licence_file_is_refused(nc_bundle):
    (nc_bundle / "LICENSE").unlink()
    with pytest.raises(BundleError, match="missing LICENSE"):
        load_bundle(nc_bundle)


def test_licence_file_must_match_metadata(nc_bundle):
    (nc_bundle / "LICENSE").write_text("Apache License, Version 2.0\n")
    with pytest.raises(BundleError, match="does not hold the CC-BY-NC-SA-4.0 licence"):
        load_bundle(nc_bundle)


def test_non_commercial_bundle_needs_a_model_card_saying_so(nc_bundle):
    (nc_bundle / "MODEL_CARD.md").write_text("# research model\n\nTrained on ACDC.\n")
    with pytest.raises(BundleError, match="must say it is for non-commercial research only"):
        load_bundle(nc_bundle)
    (nc_bundle / "MODEL_CARD.md").unlink()
    with pytest.raises(BundleError, match="needs a MODEL_CARD.md"):
        load_bundle(nc_bundle)


def test_default_is_the_permissive_bundle_and_names_resolve_to_models():
    model = load_bundle()
    assert model.root == DEFAULT_BUNDLE and model.licence == "Apache-2.0" and not model.non_commercial
    assert resolve_bundle(None) == DEFAULT_BUNDLE
    assert resolve_bundle("heart_seg_v1") == DEFAULT_BUNDLE


@pytest.mark.skipif(not (ACDC_BUNDLE / "model.safetensors").is_file(), reason="research bundle not built")
def test_shipped_research_bundle_is_licensed_and_never_default():
    model = load_bundle("heart_seg_cine_acdc")
    assert "acdc" in model.root.name and model.non_commercial and model.stack is not None
    assert "Attribution-NonCommercial-ShareAlike 4.0" in (ACDC_BUNDLE / "LICENSE").read_text(encoding="utf-8")
    card = (ACDC_BUNDLE / "MODEL_CARD.md").read_text(encoding="utf-8").lower()
    assert "non-commercial research only" in card and "acdc" in card
    validation = set(model.metadata["training"]["validation_patients_never_trained_on"])
    assert validation.isdisjoint(model.metadata["training"]["train_patients"])
    assert (ACDC_BUNDLE / "model.safetensors").stat().st_size < 8 * 2**20
    assert load_bundle().root != model.root


def test_pick_ed_es_skips_failed_frames():
    assert pick_ed_es([100.0, 140.0, float("nan"), 60.0, 90.0]) == (1, 3)
    with pytest.raises(StageError, match="at least two"):
        pick_ed_es([float("nan"), 50.0])


def _synthetic_cine(n_frames: int = 12):
    """A 4D short-axis stack (x, y, z, t): an LV ring whose cavity radius follows a known cycle.

    Cavity radius r(t) = 18 + 6 cos(2 pi t / T) mm (ED at t = 0, ES at T / 2), wall 8 mm; bright
    blood (1000), myocardium 300, background 50."""
    sp = (1.5, 1.5, 8.0)
    shape = (96, 96, 8)
    ii, jj = np.meshgrid((np.arange(shape[0]) - 47.5) * sp[0], (np.arange(shape[1]) - 47.5) * sp[1], indexing="ij")
    rr = np.hypot(ii, jj)[..., None].repeat(shape[2], axis=2)
    frames, truth = [], []
    for t in range(n_frames):
        r = 18.0 + 6.0 * np.cos(2 * np.pi * t / n_frames)
        img = np.full(shape, 50.0, dtype=np.float32)
        img[rr < r + 8.0] = 300.0
        img[rr < r] = 1000.0
        frames.append(img)
        truth.append(float((rr < r).sum()) * np.prod(sp) / 1000.0)
    geo = ImageGeometry(shape=shape, spacing_mm=sp, origin_mm=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return np.stack(frames, axis=-1), geo, truth


def _threshold_segmenter(scan):
    lab = np.zeros(scan.voxels.shape, dtype=np.uint8)
    lab[scan.voxels > 150] = int(Label.LV_MYO)
    lab[scan.voxels > 600] = int(Label.LV_BLOOD)
    return LabelMap(labels=lab, geometry=scan.geometry)


@pytest.mark.parametrize("container", ["nifti", "dicom"])
def test_cine_frames_give_the_known_volume_curve_and_ed_es(tmp_path, container):
    import SimpleITK as sitk

    from cardiotwin.io.scans import to_sitk

    vox4d, geo, truth = _synthetic_cine()
    if container == "nifti":
        path = tmp_path / "cine.nii.gz"
        sitk.WriteImage(sitk.JoinSeries([to_sitk(vox4d[..., t], geo) for t in range(vox4d.shape[-1])]), str(path))
    else:
        from cardiotwin.io.dicom import write_dicom_series

        path = write_dicom_series(vox4d, geo, tmp_path / "cine_dicom", modality="MR",
                                  frame_times_ms=[40.0 * t for t in range(vox4d.shape[-1])])
    res = segment_cine(path, _threshold_segmenter)
    assert len(res.labels) == 12
    np.testing.assert_allclose(res.volumes_ml["lv_blood_ml"], truth, rtol=1e-6)
    assert (res.ed_frame, res.es_frame) == (0, 6)
    s = res.summary()
    assert s["lv_ef"] == pytest.approx((truth[0] - truth[6]) / truth[0], abs=1e-4)
    out = write_cine_outputs(res, tmp_path / "out")
    saved = json.loads(out["volumes_json"].read_text())
    assert saved["ed_frame"] == 0 and saved["es_frame"] == 6
    assert out["volumes_png"].stat().st_size > 1000 and out["es_labels"].is_file()


def test_all_frames_refuses_a_3d_scan(tmp_path):
    import SimpleITK as sitk

    from cardiotwin.io.scans import to_sitk

    vox4d, geo, _ = _synthetic_cine(2)
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(to_sitk(vox4d[..., 0], geo), str(path))
    with pytest.raises(StageError, match="needs a 4D cine"):
        segment_cine(path, _threshold_segmenter)


def _ring(wall_px: int, gap: bool = False) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(80) - 39.5, np.arange(80) - 39.5, indexing="ij")
    rr = np.hypot(ii, jj)
    lab = np.zeros((80, 80, 9), dtype=np.uint8)
    lab[rr < 14 + wall_px] = int(Label.LV_MYO)
    lab[rr < 14] = int(Label.LV_BLOOD)
    if gap:  # a quarter of the wall missing in every slice
        lab[((ii > 0) & (jj > 0))[..., None] & (lab == int(Label.LV_MYO))] = 0
    return lab


def test_wall_qc_flags_thin_and_open_myocardium():
    spacing = (1.5, 1.5, 10.0)
    normal = lv_wall_plausibility(_ring(6), spacing)  # 9 mm wall
    assert normal["flags"] == [] and 7.0 < np.median(list(normal["segment_median_thickness_mm"].values())) < 10.0
    thin = lv_wall_plausibility(_ring(1), spacing)  # 1.5 mm wall
    assert any("thin over segment" in f for f in thin["flags"])
    thick = lv_wall_plausibility(_ring(20), spacing)  # 30 mm wall
    assert any("thick over segment" in f for f in thick["flags"])
    open_ring = lv_wall_plausibility(_ring(6, gap=True), spacing)
    assert any("not closed" in f for f in open_ring["flags"]) and open_ring["mid_open_fraction"] > 0.15


def test_implausible_wall_is_a_qc_warning_and_a_report_row():
    """The flags reach qc.json (``quality_report`` warnings, written by the segment stage) and the evidence
    report's segmentation QC table (``segmentation_qc_rows``)."""
    from cardiotwin.report.use_error import segmentation_qc_rows
    from cardiotwin.segmentation.qc import quality_report

    geo = ImageGeometry(shape=(80, 80, 9), spacing_mm=(1.5, 1.5, 10.0), origin_mm=(0.0, 0.0, 0.0))
    thin = quality_report(LabelMap(labels=_ring(1), geometry=geo))
    assert any(w.startswith("implausible myocardium:") and "thin over segment" in w for w in thin["warnings"])
    rows = {r[0]: r[1] for r in segmentation_qc_rows(thin)}
    assert rows["LV wall thinnest segment (median)"] < 2.0
    assert "implausible myocardium" in rows["warnings"]
    normal = quality_report(LabelMap(labels=_ring(6), geometry=geo))
    assert not any("implausible myocardium" in w for w in normal["warnings"])


@pytest.mark.skipif(not (ACDC_BUNDLE / "model.safetensors").is_file(), reason="research bundle not built")
def test_research_bundle_accuracy_on_two_acdc_validation_patients(shared_data):
    """Regression on two validation patients (never trained on; configs/acdc_split.json) at ED: Dice floors per
    structure (LV blood / LV myo / RV blood) and identical labels under a random header rotation. The shipped
    version's scores are in its model card and docs/BENCHMARKS.md (bench:seg:heart_seg_cine_acdc)."""
    from dataclasses import replace

    from cardiotwin.io.scans import read_labels, read_scan
    from cardiotwin.bench.seg_cine import random_rotation
    from cardiotwin.segmentation.inference import segment

    model = load_bundle("heart_seg_cine_acdc")
    for pid in ("patient002", "patient053"):
        scan = read_scan(shared_data / "acdc" / pid / "ed_image.nii.gz", modality="MR")
        ref = read_labels(shared_data / "acdc" / pid / "ed_labels.nii.gz").labels
        pred = segment(scan, model).labels
        for k, floor in ((1, 0.92), (2, 0.76), (3, 0.87)):
            a, b = pred == k, ref == k
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > floor, (pid, k)
        rotated = replace(scan, geometry=replace(scan.geometry, direction=tuple(random_rotation(5).ravel())))
        assert np.array_equal(segment(rotated, model).labels, pred)  # the header's orientation is not used


@pytest.mark.skipif(not (ACDC_BUNDLE / "model.safetensors").is_file(), reason="research bundle not built")
def test_acdc_benchmark_keeps_each_stack_and_reads_it_back(shared_data, tmp_path, monkeypatch):
    """`bench seg` / `seg_acdc` keep one row per stack under the model's fingerprint, so a slow model's split is
    measured in pieces: a second call segments nothing and gives the same rows; another inference setting
    measures afresh."""
    import cardiotwin.segmentation.inference as inference
    from cardiotwin.bench import seg_cine

    model = load_bundle("heart_seg_cine_acdc")
    first = seg_cine.acdc_scores(model, {"patient002": "DCM"}, rows_dir=tmp_path)
    folder = tmp_path / seg_cine.scores_fingerprint(model)
    assert sorted(p.name for p in folder.iterdir()) == ["patient002_ed.json", "patient002_es.json"]
    assert first[0]["dice"][1] > 0.9 and first[0]["ml"][1][1] > 0

    def no_segmentation(*args, **kwargs):
        raise AssertionError("segmented again")

    (folder / "patient002_es.json").write_text('{"patient": "patient002", "dice": {')  # damaged by hand
    again = seg_cine.acdc_scores(model, {"patient002": "DCM"}, rows_dir=tmp_path)  # measured again, rewritten
    assert again == first and json.loads((folder / "patient002_es.json").read_text())["phase"] == "es"
    monkeypatch.setattr(inference, "segment", no_segmentation)
    assert seg_cine.acdc_scores(model, {"patient002": "DCM"}, rows_dir=tmp_path) == first
    other = shutil.copytree(model.root, tmp_path / "bundle")
    cfg = json.loads((other / "inference.json").read_text())
    cfg["slice_stack"]["tta"] = 1
    (other / "inference.json").write_text(json.dumps(cfg))
    assert seg_cine.scores_fingerprint(load_bundle(other)) != seg_cine.scores_fingerprint(model)


@pytest.mark.skipif(not (ACDC_BUNDLE / "model.safetensors").is_file(), reason="research bundle not built")
def test_research_bundle_picks_ed_and_es_of_a_real_cine(shared_data, tmp_path):
    """A 4-frame cine (ES, ED, ED, ES stacks of validation patient 074): ED is frame 1, ES frame 0, and the
    EF from the curve is close to the expert's (info.json: from the expert labels)."""
    import SimpleITK as sitk

    from cardiotwin.segmentation.inference import segment

    root = shared_data / "acdc" / "patient074"
    ed, es = (sitk.ReadImage(str(root / f"{p}_image.nii.gz")) for p in ("ed", "es"))
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([es, ed, ed, es]), str(path))
    model = load_bundle("heart_seg_cine_acdc")
    res = segment_cine(path, lambda scan: segment(scan, model))
    assert (res.ed_frame, res.es_frame) == (1, 0)
    expert = json.loads((root / "info.json").read_text())["lv_ef"]
    assert abs(res.summary()["lv_ef"] - expert) < 0.08


def test_report_names_the_model_and_its_licence():
    from cardiotwin.report.use_error import label_origin

    manifest = {"stages": {"segment": {"config": {"model": "heart_seg_cine_acdc", "model_weights_sha256": "ab" * 32,
                                                  "model_licence": "CC-BY-NC-SA-4.0"}}}}
    text = label_origin(manifest)
    assert "heart_seg_cine_acdc" in text and "CC-BY-NC-SA-4.0 (non-commercial research only)" in text
    manifest["stages"]["segment"]["config"]["model_licence"] = "Apache-2.0"
    assert "non-commercial" not in label_origin(manifest)


def _basal_stack(base_first: bool = True):
    """Labels and RV probability of a 6-slice short-axis stack whose heart tapers from the base (slice 0) to
    the apex: LV blood disc in a myocardial ring and an RV blood pool beside it on every slice."""
    nz = 6
    lab = np.zeros((48, 48, nz), np.uint8)
    p_rv = np.zeros(lab.shape, np.float32)
    yy, xx = np.mgrid[:48, :48]
    for z in range(nz):
        r = 10 - z
        d = np.hypot(yy - 24, xx - 20)
        lab[..., z][d < r + 3] = 2
        lab[..., z][d < r] = 1
        rv = (np.hypot(yy - 24, xx - 38) < 8 - z) & (lab[..., z] == 0)
        lab[..., z][rv] = 3
        p_rv[..., z][rv] = 0.95
    return (lab, p_rv) if base_first else (lab[..., ::-1].copy(), p_rv[..., ::-1].copy())


@pytest.mark.parametrize("base_first", [True, False])
def test_basal_rv_rule_clears_the_atrial_slice_and_stops_at_the_ventricle(base_first):
    """The most basal slice's RV goes when the network is unsure of it (the right atrium above the tricuspid
    valve, as ACDC's experts leave it unlabelled at end-systole); the next slice, confident and as large as the
    one after it, is kept and ends the search. The stack's index order does not matter (the base is found from
    the heart's area)."""
    from cardiotwin.segmentation.slicenet import trim_basal_rv

    lab, p_rv = _basal_stack()
    p_rv[..., 0][lab[..., 0] == 3] = 0.6
    if not base_first:
        lab, p_rv = lab[..., ::-1].copy(), p_rv[..., ::-1].copy()
    out = trim_basal_rv(lab, p_rv, 2, confidence=0.8, ratio=0.8)
    rv = [(out[..., z] == 3).sum() for z in range(6)]
    base, nxt = (0, 1) if base_first else (5, 4)
    assert rv[base] == 0 and rv[nxt] == (lab[..., nxt] == 3).sum() > 0
    assert np.array_equal(out[lab != 3], lab[lab != 3])  # nothing but basal RV changed
    assert (out == 3).sum() == (lab == 3).sum() - (lab[..., base] == 3).sum()


def test_basal_rv_rule_drops_a_small_basal_rv_and_is_off_by_default():
    from cardiotwin.segmentation.slicenet import StackConfig, stack_labels, trim_basal_rv

    lab, p_rv = _basal_stack()
    small = (lab[..., 0] == 3) & (np.arange(48)[None, :] > 40)  # a sliver of RV, confident, at the base
    lab[..., 0][(lab[..., 0] == 3) & ~small] = 0
    assert 0 < small.sum() < 0.8 * (lab[..., 1] == 3).sum()
    assert (trim_basal_rv(lab, p_rv, 2, confidence=0.8, ratio=0.8)[..., 0] == 3).sum() == 0
    assert np.array_equal(trim_basal_rv(lab, p_rv, 2, confidence=0.8, ratio=0.0), lab)  # ratio off: kept
    probs = np.stack([(lab == k).astype(np.float32) for k in range(4)])
    probs[3] = np.where(lab == 3, p_rv, 0.0)
    assert np.array_equal(stack_labels(probs, 2, StackConfig()), lab)
    trimmed = stack_labels(probs, 2, StackConfig(basal_rv_confidence=0.8, basal_rv_ratio=0.8))
    assert (trimmed[..., 0] == 3).sum() == 0


def test_bundle_refuses_basal_rv_thresholds_out_of_range(tmp_path):
    dst = tmp_path / "acdc_copy"
    shutil.copytree(ACDC_BUNDLE, dst)
    inf = json.loads((dst / "inference.json").read_text())
    inf["slice_stack"]["basal_rv_confidence"] = 1.5
    (dst / "inference.json").write_text(json.dumps(inf))
    with pytest.raises(BundleError, match="basal_rv_confidence must be 0-1"):
        load_bundle(dst)


def _apical_stack() -> np.ndarray:
    """LV blood pool discs tapering to the apex (z 0), each ringed by wall; the apical ring is too small to
    overlap the next slice's ring in plane (a separate 3D component of wall), but it surrounds the apical
    cavity, which is connected to the rest of the cavity."""
    lab = np.zeros((40, 40, 4), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    d = np.hypot(yy - 20, xx - 20)
    for z, r in enumerate((3, 10, 10, 10)):
        lab[..., z][d < r + 3] = 2
        lab[..., z][d < r] = 1
    return lab


def test_stack_cleanup_keeps_the_wall_around_the_apical_cavity_and_drops_stray_wall():
    """Thick slices (5-10 mm) break the wall into 3D components at the apex: the wall of a slice is kept when it
    touches the kept LV blood pool in its own plane; a stray piece of wall elsewhere, or one touching the cavity
    only through the next slice, goes (the rule before kept the largest wall component only)."""
    from cardiotwin.segmentation.slicenet import clean_stack_labels

    lab = _apical_stack()
    lab[2:5, 2:5, 2] = 2  # stray wall in a mid slice
    over_next_cavity = (np.hypot(*np.mgrid[-20:20, -20:20]) >= 8) & (np.hypot(*np.mgrid[-20:20, -20:20]) < 9)
    lab[..., 0][over_next_cavity] = 2  # apical slice: apart from its own ring, over the next slice's cavity only
    out = clean_stack_labels(lab, 2)
    apical_ring = _apical_stack()[..., 0] == 2
    assert (out[..., 0][apical_ring] == 2).all()
    assert (out[2:5, 2:5, 2] == 0).all() and (out[..., 0][over_next_cavity] == 0).all()
    assert np.array_equal(out[..., 1:3][lab[..., 1:3] == 1], lab[..., 1:3][lab[..., 1:3] == 1])  # cavity unchanged


def test_stack_bundle_must_leave_components_to_the_slice_aware_cleanup(tmp_path):
    dst = tmp_path / "acdc_copy"
    shutil.copytree(ACDC_BUNDLE, dst)
    assert load_bundle(dst).default_config.largest_component is False
    inf = json.loads((dst / "inference.json").read_text())
    inf["largest_component"] = True
    (dst / "inference.json").write_text(json.dumps(inf))
    with pytest.raises(BundleError, match="largest_component must be false"):
        load_bundle(dst)
