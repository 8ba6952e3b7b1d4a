"""Scan input: round trips through every format, validation errors, DICOM series selection."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.errors import ScanError
from cardiotwin.io.dicom import list_series, write_dicom_series
from cardiotwin.io.scans import read_labels, read_scan, to_sitk, write_labels, write_scan
from cardiotwin.types import ImageGeometry, Scan


def _assert_same_image(a: Scan, b: Scan, *, atol_geom: float = 1e-5) -> None:
    assert a.geometry.shape == b.geometry.shape
    np.testing.assert_allclose(a.geometry.spacing_mm, b.geometry.spacing_mm, atol=atol_geom)
    np.testing.assert_allclose(a.geometry.origin_mm, b.geometry.origin_mm, atol=1e-3)
    np.testing.assert_allclose(a.geometry.direction, b.geometry.direction, atol=atol_geom)
    np.testing.assert_array_equal(a.voxels, b.voxels)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("which", ["ct", "mr"])
def test_round_trip_file_formats(tmp_path, small_ct_phantom, small_mr_phantom, suffix, which):
    phantom = small_ct_phantom if which == "ct" else small_mr_phantom
    path = write_scan(phantom.scan, tmp_path / f"scan{suffix}")
    back = read_scan(path)
    _assert_same_image(phantom.scan, back)
    assert back.modality == phantom.scan.modality  # guessed from intensities (air in CT)
    lab_path = write_labels(phantom.labels, tmp_path / f"labels{suffix}")
    labels = read_labels(lab_path)
    assert labels.geometry.same_space(phantom.labels.geometry)
    np.testing.assert_array_equal(labels.labels, phantom.labels.labels)
    assert not list(tmp_path.glob(".tmp-*")), "atomic writes must not leave temporary files"


@pytest.mark.parametrize("which", ["ct", "mr"])
def test_round_trip_dicom_series(tmp_path, small_ct_phantom, small_mr_phantom, which):
    phantom = small_ct_phantom if which == "ct" else small_mr_phantom  # mr: oblique short-axis stack
    folder = write_dicom_series(phantom.scan.voxels, phantom.scan.geometry, tmp_path / "dcm", modality=phantom.scan.modality)
    back = read_scan(folder)
    assert back.modality == phantom.scan.modality  # from the DICOM Modality tag
    _assert_same_image(phantom.scan, back, atol_geom=1e-5)


def test_dicom_series_selection_and_cine_frames(tmp_path, small_mr_phantom):
    scan = small_mr_phantom.scan
    folder = tmp_path / "mixed"
    write_dicom_series(scan.voxels, scan.geometry, folder, modality="MR", series_uid="1.2.3.1")
    write_dicom_series(scan.voxels + 7, scan.geometry, folder / "second", modality="MR", series_uid="1.2.3.2")
    assert list_series(folder) == {"1.2.3.1": scan.geometry.shape[2], "1.2.3.2": scan.geometry.shape[2]}
    with pytest.raises(ScanError, match="choose one with --series-uid"):
        read_scan(folder)
    second = read_scan(folder, series_uid="1.2.3.2")
    np.testing.assert_array_equal(second.voxels, scan.voxels + 7)
    with pytest.raises(ScanError, match="no series with UID"):
        read_scan(folder, series_uid="9.9")

    cine = np.stack([scan.voxels, scan.voxels * 0 + 5, scan.voxels + 3], axis=3)
    cine_dir = write_dicom_series(cine, scan.geometry, tmp_path / "cine", modality="MR", frame_times_ms=[0.0, 40.0, 80.0])
    with pytest.raises(ScanError, match="4D cine with 3 frames"):
        read_scan(cine_dir)
    np.testing.assert_array_equal(read_scan(cine_dir, frame=2).voxels, scan.voxels + 3)
    np.testing.assert_array_equal(read_scan(cine_dir, frame=1).voxels, np.full_like(scan.voxels, 5))
    with pytest.raises(ScanError, match="out of range"):
        read_scan(cine_dir, frame=3)


def test_4d_file_needs_a_frame(tmp_path):
    import SimpleITK as sitk

    arr = np.random.default_rng(0).normal(size=(3, 20, 20, 20)).astype(np.float32)  # (t, z, y, x)
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(path))
    with pytest.raises(ScanError, match="is 4D with 3 frames"):
        read_scan(path)
    np.testing.assert_array_equal(read_scan(path, frame=1).voxels, np.transpose(arr[1], (2, 1, 0)))


def _write_raw(path, arr, spacing=(1.0, 1.0, 1.0)):
    import SimpleITK as sitk

    image = to_sitk(arr, ImageGeometry(shape=arr.shape, spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0.0, 0.0, 0.0)))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(tmp_path, small_ct_phantom):
    good = write_scan(small_ct_phantom.scan, tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"this is not an image" * 10)
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    flat = tmp_path / "flat.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.float32)), str(flat))
    nan = np.zeros((20, 20, 20), np.float32)
    nan[3, 4, 5] = np.nan
    inf = np.zeros((20, 20, 20), np.float32)
    inf[1, 1, 1] = np.inf
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    not_dicom_dir = tmp_path / "notes"
    not_dicom_dir.mkdir()
    (not_dicom_dir / "readme.txt").write_text("no images here")
    return {
        "truncated": (truncated, "unreadable or truncated"),
        "garbage": (garbage, "unreadable or truncated"),
        "empty file": (empty, "file is empty"),
        "2D": (flat, "is 2D"),
        "NaN": (_write_raw(tmp_path / "nan.nii.gz", nan), "NaN/Inf"),
        "Inf": (_write_raw(tmp_path / "inf.nii.gz", inf), "NaN/Inf"),
        "spacing 0.01": (_write_raw(tmp_path / "tiny.nrrd", np.zeros((20, 20, 20), np.float32), (0.01, 1, 1)), "outside"),
        "spacing 20": (_write_raw(tmp_path / "coarse.mha", np.zeros((20, 20, 20), np.float32), (1, 1, 20.0)), "outside"),
        "too small": (_write_raw(tmp_path / "small.nii.gz", np.zeros((3, 30, 30), np.float32)), "too small"),
        "empty folder": (empty_dir, "empty folder"),
        "no dicom": (not_dicom_dir, "no readable DICOM"),
        "missing": (tmp_path / "nope.nii.gz", "no such file"),
        "wrong type": (not_dicom_dir / "readme.txt", "unsupported file type"),
    }


def test_bad_inputs_raise_scan_error_naming_file(tmp_path, small_ct_phantom):
    for name, (path, message) in _bad_inputs(tmp_path, small_ct_phantom).items():
        with pytest.raises(ScanError) as info:
            read_scan(path)
            pytest.fail(f"{name}: no ScanError")
        assert message in str(info.value), f"{name}: {info.value}"
        assert str(path) in str(info.value), f"{name}: message must name the file"


def test_cli_bad_inputs_exit_nonzero_and_leave_case_intact(tmp_path, small_ct_phantom, capsys):
    bad = _bad_inputs(tmp_path, small_ct_phantom)
    case_dir = tmp_path / "case"
    assert main(["case", "new", str(case_dir), "--scan", str(tmp_path / "good.nii.gz")]) == 0
    before = {p.name: p.read_bytes() for p in case_dir.rglob("*") if p.is_file()}
    for name, (path, message) in bad.items():
        assert main(["info", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert str(path) in err and message in err, f"{name}: {err}"
        assert main(["case", "new", str(case_dir), "--scan", str(path)]) == 2
        assert main(["case", "new", str(tmp_path / f"new-{name}"), "--scan", str(path)]) == 2
        assert not (tmp_path / f"new-{name}").exists(), "a failed import must not leave a half-made case"
    after = {p.name: p.read_bytes() for p in case_dir.rglob("*") if p.is_file()}
    assert after == before


def test_patient_identifiers_never_reach_outputs(tmp_path, small_ct_phantom):
    import pydicom

    folder = write_dicom_series(small_ct_phantom.scan.voxels, small_ct_phantom.scan.geometry, tmp_path / "dcm")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientName = "DOE^JOHNATHAN"
        ds.PatientID = "MRN-99887766"
        ds.PatientBirthDate = "19491231"
        ds.save_as(f)
    case_dir = tmp_path / "case"
    assert main(["case", "new", str(case_dir), "--scan", str(folder)]) == 0
    assert main(["info", str(folder), "--json"]) == 0
    for p in case_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".gz":
                data = gzip.decompress(data)
            for secret in (b"DOE^JOHN", b"MRN-99887766", b"19491231"):
                assert secret not in data, f"{secret!r} leaked into {p}"


def test_sunnybrook_dicom_matches_nifti(shared_data):
    case = shared_data / "sunnybrook" / "SCD0000301"
    from_dicom = read_scan(case / "ed_dicom")
    from_nifti = read_scan(case / "ed_image.nii.gz")
    assert from_dicom.modality == "MR"
    assert from_dicom.geometry.shape == from_nifti.geometry.shape
    np.testing.assert_allclose(from_dicom.geometry.spacing_mm, from_nifti.geometry.spacing_mm, atol=1e-3)
    np.testing.assert_allclose(from_dicom.geometry.origin_mm, from_nifti.geometry.origin_mm, atol=1e-3)
    np.testing.assert_allclose(from_dicom.geometry.direction, from_nifti.geometry.direction, atol=1e-4)
    np.testing.assert_array_equal(from_dicom.voxels, from_nifti.voxels)
    meta = json.loads((case / "meta.json").read_text())
    assert list(from_dicom.geometry.shape) == meta["ed"]["shape_xyz"]
    np.testing.assert_allclose(from_dicom.geometry.origin_mm, meta["ed"]["origin_lps_mm"], atol=1e-3)


def test_real_ct_crop_is_ct(shared_data):
    scan = read_scan(shared_data / "real_ct" / "ct_aorta_crop.nii.gz")
    assert scan.modality == "CT"
    assert scan.geometry.shape == (120, 126, 164)
    np.testing.assert_allclose(scan.geometry.spacing_mm, (1.5, 1.5, 1.5), atol=1e-4)


def test_all_sunnybrook_images_read(shared_data):
    # Their 10 mm slice spacing is stored as 10.000004 mm (float32 header): it must be accepted.
    for case in sorted((shared_data / "sunnybrook").iterdir()):
        for phase in ("ed", "es"):
            scan = read_scan(case / f"{phase}_image.nii.gz")
            labels = read_labels(case / f"{phase}_labels.nii.gz")
            assert scan.modality == "MR"
            assert labels.geometry.same_space(scan.geometry)
