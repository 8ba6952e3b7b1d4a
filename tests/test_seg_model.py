"""The shipped model end to end on CPU: regression against stored outputs, accuracy against the
phantoms' ground truth, "no heart found", and the `cardiotwin segment` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.errors import StageError
from cardiotwin.io.scans import read_labels, read_scan, write_scan
from cardiotwin.segmentation.bundle import load_bundle
from cardiotwin.segmentation.inference import segment
from cardiotwin.types import Scan

from conftest import SAMPLE_SCANS


@pytest.fixture(scope="module")
def model():
    return load_bundle()


@pytest.fixture(scope="module")
def predictions(model):
    out = {}
    for name in ("ct", "mr"):
        scan = read_scan(SAMPLE_SCANS / f"{name}_sample.nii.gz")
        out[name] = (scan, segment(scan, model))
    return out


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / s if s else 1.0


@pytest.mark.parametrize("name", ["ct", "mr"])
def test_shipped_model_reproduces_stored_reference(predictions, name):
    """CPU regression (nnU-Net practice): the shipped weights give the stored output again.

    Stored reference: sample_scans/<name>_sample_pred_reference.nii.gz, written by the shipped
    model (regenerate with scripts in MODEL_CARD.md whenever new weights ship).
    """
    scan, pred = predictions[name]
    ref = read_labels(SAMPLE_SCANS / f"{name}_sample_pred_reference.nii.gz")
    assert pred.geometry.same_space(scan.geometry) and ref.geometry.same_space(scan.geometry)
    for k in range(1, 9):
        if (ref.labels == k).any() or (pred.labels == k).any():
            assert _dice(pred.labels == k, ref.labels == k) >= 0.98, f"label {k}"


# Issue targets (docs/BENCHMARKS.md "Segmentation"): mean Dice LV blood >= 0.92, LV myocardium
# >= 0.85, RV blood >= 0.90 on phantoms. heart_seg_v1 1.4.2 (MODEL_CARD.md) meets them on the CT
# sample (0.968 / 0.925 / 0.957) but not on the thick-slice short-axis MR sample (0.863 / 0.865 /
# 0.888): strict xfail there, so it turns into a failure when a retrained bundle passes.
TARGETS = {1: 0.92, 2: 0.85, 3: 0.90}


@pytest.mark.parametrize("name", [
    "ct",
    pytest.param("mr", marks=pytest.mark.xfail(strict=True, reason="MR sample below target (MODEL_CARD.md)")),
])
def test_accuracy_against_phantom_ground_truth(predictions, name):
    scan, pred = predictions[name]
    truth = read_labels(SAMPLE_SCANS / f"{name}_sample_labels.nii.gz").labels.copy()
    truth[truth == 9] = 2
    for k, target in TARGETS.items():
        assert _dice(pred.labels == k, truth == k) >= target, f"label {k}"


def test_blank_image_is_no_heart_found(model, small_ct_phantom):
    blank = Scan(voxels=np.zeros(small_ct_phantom.scan.geometry.shape, np.float32),
                 geometry=small_ct_phantom.scan.geometry, modality="CT", sha256="0", source="blank.nii.gz")
    with pytest.raises(StageError, match="no heart found"):
        segment(blank, model)


def test_non_cardiac_image_is_no_heart_found(model):
    """Smooth random texture (no anatomy): the model must not return a label map."""
    from scipy import ndimage

    from cardiotwin.types import ImageGeometry

    rng = np.random.default_rng(0)
    vox = ndimage.gaussian_filter(rng.normal(0, 1, (80, 80, 80)), 3).astype(np.float32) * 1000
    geom = ImageGeometry(shape=(80, 80, 80), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(0.0, 0.0, 0.0))
    with pytest.raises(StageError, match="no heart found|implausible"):
        from cardiotwin.segmentation.qc import quality_report, raise_on_errors

        labels = segment(Scan(voxels=vox, geometry=geom, modality="MR", sha256="1", source="noise"), model)
        raise_on_errors(quality_report(labels), source="noise")


def test_cli_segment_to_file_keeps_input_geometry(tmp_path):
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(SAMPLE_SCANS / "ct_sample.nii.gz"), "--out", str(out)]) == 0
    labels = read_labels(out)
    assert labels.geometry.same_space(read_scan(SAMPLE_SCANS / "ct_sample.nii.gz").geometry)
    assert (labels.labels == 1).any()


def test_cli_segment_into_case_with_reference_and_skip(tmp_path):
    case = tmp_path / "case"
    args = ["segment", str(SAMPLE_SCANS / "ct_sample.nii.gz"), "--out", str(case),
            "--reference", str(SAMPLE_SCANS / "ct_sample_labels.nii.gz")]
    assert main(args) == 0
    seg = case / "segment"
    qc = json.loads((seg / "qc.json").read_text())
    assert {"volumes_ml", "lv_myocardial_mass_g", "lv_wall_thickness_mm", "warnings", "reference"} <= set(qc)
    assert set(qc["reference"]["metrics"]["lv_blood"]) == {"dice", "hd95_mm", "assd_mm"}
    assert sorted(p.name for p in seg.glob("overlay_*.png")) == ["overlay_i.png", "overlay_j.png", "overlay_k.png"]
    manifest = json.loads((case / "manifest.json").read_text())
    assert manifest["stages"]["segment"]["status"] == "ok"
    mtime = (seg / "labels.nii.gz").stat().st_mtime_ns
    assert main(args) == 0  # unchanged: skipped
    assert (seg / "labels.nii.gz").stat().st_mtime_ns == mtime


def test_cli_blank_scan_exits_nonzero(tmp_path, capsys, small_ct_phantom):
    blank = Scan(voxels=np.full(small_ct_phantom.scan.geometry.shape, -1000.0, np.float32),
                 geometry=small_ct_phantom.scan.geometry, modality="CT", sha256="0")
    path = write_scan(blank, tmp_path / "blank.nii.gz")
    assert main(["segment", str(path), "--out", str(tmp_path / "l.nii.gz")]) != 0
    assert "no heart found" in capsys.readouterr().err
    assert not (tmp_path / "l.nii.gz").exists()


def test_cli_dicom_input_writes_anonymous_dicom_seg(tmp_path):
    import pydicom

    from cardiotwin.io.dicom import write_dicom_series

    scan = read_scan(SAMPLE_SCANS / "ct_sample.nii.gz")
    folder = write_dicom_series(scan.voxels, scan.geometry, tmp_path / "dcm", modality="CT")
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(folder), "--out", str(out)]) == 0
    seg = pydicom.dcmread(tmp_path / "labels_seg.dcm")
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert str(seg.PatientName) == "ANONYMOUS" and seg.PatientID == "ANONYMOUS"
    labels = read_labels(out).labels
    n_segments = len(seg.SegmentSequence)
    assert n_segments == int(labels.max())
    assert int(seg.NumberOfFrames) == labels.shape[2] * n_segments
    # every segment holds as many voxels as the NIfTI label map has of that label
    frames = np.asarray(seg.pixel_array)
    per_frame_segment = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
                         for f in seg.PerFrameFunctionalGroupsSequence]
    for k in range(1, n_segments + 1):
        in_seg = frames[[i for i, s in enumerate(per_frame_segment) if s == k]]
        assert int(in_seg.astype(bool).sum()) == int((labels == k).sum()), f"segment {k}"
