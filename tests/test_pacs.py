"""PACS round trip against a real Orthanc (DICOMweb plugin): pull a phantom study into a case, run a
recipe, push SEG + PDFs + TID 1500 SR back, read them back over DICOMweb and check them, export FHIR.

Skips only when the Orthanc binary is absent (scripts/setup_system.sh installs it). The uploaded
study carries a made-up hospital identity (``pacs_support.IDENTITY``): it must reach every pushed
object and no file of the case.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from pacs_support import IDENTITY, PASSWORD, USER, client, hospital_series, orthanc_binary, running_orthanc, upload

from cardiotwin.cli import main

pytestmark = pytest.mark.skipif(orthanc_binary() is None,
                                reason="Orthanc is not installed (scripts/setup_system.sh installs orthanc, "
                                       "orthanc-dicomweb)")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def pacs_env(monkeypatch):
    for name in ("TOKEN", "TOKEN_FILE", "PASSWORD_FILE"):
        monkeypatch.delenv(f"CARDIOTWIN_DICOMWEB_{name}", raising=False)
    monkeypatch.setenv("CARDIOTWIN_DICOMWEB_USER", USER)
    monkeypatch.setenv("CARDIOTWIN_DICOMWEB_PASSWORD", PASSWORD)


@pytest.fixture(scope="module")
def study(pacs, small_ct_phantom, tmp_path_factory):
    """The phantom CT uploaded as a hospital study: (study UID, series UID, labels path, instances)."""
    from cardiotwin.io.scans import write_labels

    folder = tmp_path_factory.mktemp("hospital")
    datasets = hospital_series(small_ct_phantom.scan.voxels, small_ct_phantom.scan.geometry, folder / "ct")
    study_uid = upload(pacs, datasets)
    labels = write_labels(small_ct_phantom.labels, folder / "labels.nii.gz")
    return study_uid, str(datasets[0].SeriesInstanceUID), labels, len(datasets)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _identity_strings() -> list[bytes]:
    return [v.encode() for k, v in IDENTITY.items() if len(v) >= 6]


def _identity_found(data: bytes) -> list[bytes]:
    """The identity strings in ``data``; a digits-only one (a date, a time) counts only as a number of its
    own, not as digits inside another number (a mesh file's 0.1015003 is no StudyTime 101500)."""
    found = []
    for s in _identity_strings():
        if s.isdigit():
            if re.search(rb"(?<![0-9.])" + s + rb"(?![0-9.])", data):
                found.append(s)
        elif s in data:
            found.append(s)
    return found


def _content_items(ds, out=None):
    """(value type, concept code, value) of every SR content item, depth first."""
    out = [] if out is None else out
    for item in getattr(ds, "ContentSequence", []) or []:
        name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else None
        if item.ValueType == "NUM":
            mv = item.MeasuredValueSequence[0]
            out.append(("NUM", name, (float(mv.NumericValue), mv.MeasurementUnitsCodeSequence[0].CodeValue)))
        elif item.ValueType == "CODE":
            out.append(("CODE", name, item.ConceptCodeSequence[0].CodeValue))
        _content_items(item, out)
    return out


def _study_instances(server, study_uid: str) -> dict[str, list]:
    c = client(server)
    by_modality: dict[str, list] = {}
    for row in c.search_for_instances(study_instance_uid=study_uid, fields=["Modality"]):
        series, sop = row["0020000E"]["Value"][0], row["00080018"]["Value"][0]
        by_modality.setdefault(row["00080060"]["Value"][0], []).append((series, sop))
    return by_modality


def _dciodvfy(ds, tmp_path: Path) -> str:
    """dciodvfy's report on ``ds`` ('' when dicom3tools is absent); fails on any Error line."""
    if shutil.which("dciodvfy") is None:
        return ""
    path = tmp_path / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert not errors, f"dciodvfy {ds.Modality}:\n{text}"
    return text


def _check_seg(seg, case: Path) -> None:
    """Every SEG frame equals its segment's mask on its slice of the case's label map."""
    from cardiotwin.io.scans import read_labels

    labels = read_labels(case / "segment" / "labels.nii.gz")
    geo = labels.geometry
    frames = seg.pixel_array
    assert frames.shape[0] == len(seg.PerFrameFunctionalGroupsSequence) == int(labels.labels.max()) * geo.shape[2]
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pos = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = int(round(float(geo.world_to_index(pos)[2])))
        expected = (labels.labels[:, :, k] == number).T
        assert np.array_equal(frames[i].astype(bool), expected), (number, k)


def test_round_trip_pull_run_push_read_back_and_fhir(pacs, pacs_env, study, tmp_path, capsys):
    from pypdf import PdfReader
    from test_therapy_support import graph_activation

    from cardiotwin.interop.results import key_numbers
    from cardiotwin.io import fhir
    from cardiotwin.pipeline import load_recipe, run_pipeline

    study_uid, series_uid, labels, n_ct = study
    case = tmp_path / "case"
    stages = [{"segment": {}}, {"mesh": {"edge_mm": "5 mm"}}, {"fibers": {}}]
    recipe = tmp_path / "pacs_test.yaml"
    recipe.write_text(yaml.safe_dump({"name": "pacs_test", "modality": "CT", "stages": stages}))
    assert main(["run", str(recipe), "--dicomweb", pacs.url, "--study", study_uid, "--labels", str(labels),
                 "--out", str(case), "--workers", "0"]) == 0
    src = json.loads((case / "manifest.json").read_text())["inputs"]["scan"]["dicomweb"]
    assert (src["url"], src["study_uid"], src["series_uid"], src["instances"]) == (pacs.url, study_uid, series_uid, n_ct)
    # the virtual CRT on the same case with the cheap test activation solver (stages above are cached)
    crt = tmp_path / "pacs_crt.yaml"
    crt.write_text(yaml.safe_dump({"name": "pacs_crt", "modality": "CT", "stages": stages + [
        {"crt": {"uq": {"samples": 2}, "em_top_k": 0, "protocols": {"timing_top_k": 1}}}]}))
    run_pipeline(load_recipe(crt), scan_path=case / "inputs" / "dicom", out=case, labels_path=labels, workers=0,
                 solver=graph_activation)
    assert main(["report", str(case), "--no-verify", "--no-calc-verification"]) == 0
    capsys.readouterr()

    assert main(["push", str(case), "--dicomweb", pacs.url]) == 0
    kinds = ("evidence", "seg", "sr", "summary")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] and line.split()[0] in kinds]
    assert sorted(line.split()[0] for line in lines) == list(kinds)
    assert all(" stored " in line for line in lines)
    found = _study_instances(pacs, study_uid)
    assert {m: len(v) for m, v in found.items()} == {"CT": n_ct, "SEG": 1, "DOC": 2, "SR": 1}
    c = client(pacs)
    pushed = {m: c.retrieve_instance(study_uid, *found[m][0]) for m in ("SEG", "SR")}
    docs = [c.retrieve_instance(study_uid, *s) for s in found["DOC"]]
    for ds in [*pushed.values(), *docs]:
        for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID"):
            assert str(ds.get(key)) == IDENTITY[key], (ds.Modality, key)
        assert ds.StudyInstanceUID == study_uid
    # SEG: frames equal the case's labels; it references the pulled series
    seg = pushed["SEG"]
    _check_seg(seg, case)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    # PDFs: the case's report documents, readable
    by_title = {d.DocumentTitle: d for d in docs}
    for name, title in (("summary.pdf", "CRT planning summary"),
                        ("evidence.pdf", "In-silico evidence report (ASME V&V 40)")):
        d = by_title[title]
        data = bytes(d.EncapsulatedDocument)[: int(d.EncapsulatedDocumentLength)]
        assert data == (case / "report" / name).read_bytes()
        reader = PdfReader(io.BytesIO(data))
        assert len(reader.pages) >= 1 and reader.pages[0].extract_text().strip()
    # SR: every key number of the case, the recommended AHA segment and its predicted response
    numbers = key_numbers(case)
    items = _content_items(pushed["SR"])
    nums = [(code, v) for kind, code, v in items if kind == "NUM"]
    for n in numbers.numbers():
        assert any(code == n.code[1] and v[1] == n.unit and v[0] == pytest.approx(n.value, rel=1e-6)
                   for code, v in nums), n
    ranking = json.loads((case / "therapy" / "ranking.json").read_text())
    best = next(c for c in ranking["candidates"] if c["recommended"])
    rec = numbers.recommendation
    assert rec["aha_segment"] == best["lv_site"]["aha_segment"]
    assert ("CODE", "121075", rec["segment_code"][1]) in items
    assert ("NUM", "TAT-CHANGE", (pytest.approx(best["metrics"]["tat_change_pct"], rel=1e-6), "%")) in items
    reports = {m: _dciodvfy(ds, tmp_path) for m, ds in pushed.items()} | {"DOC": _dciodvfy(docs[0], tmp_path)}
    with capsys.disabled():  # what dciodvfy says (warnings) shows with pytest -s
        print("".join(f"\ndciodvfy {m}:\n{text}" for m, text in reports.items()))
    # the case holds no identifier of the source
    for path in case.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not _identity_found(data), path

    # a rerun pushes nothing new
    before = _tree(case)
    assert main(["push", str(case), "--dicomweb", pacs.url]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.split()[:1] and line.split()[0] in kinds]
    assert len(lines) == 4 and all(" already present " in line for line in lines)
    assert {m: len(v) for m, v in _study_instances(pacs, study_uid).items()} == {"CT": n_ct, "SEG": 1, "DOC": 2, "SR": 1}
    assert {k for k, v in _tree(case).items() if before.get(k) != v} <= {"manifest.json", "push/pushed.json"}

    # FHIR: a valid transaction bundle with the report, its PDFs and the coded numbers
    bundle_path = tmp_path / "bundle.json"
    assert main(["export-fhir", str(case), "--out", str(bundle_path), "--subject", "Patient/example"]) == 0
    data = json.loads(bundle_path.read_text())
    fhir.validate_bundle(data, bundle_path)
    resources = [e["resource"] for e in data["entry"]]
    report = next(r for r in resources if r["resourceType"] == "DiagnosticReport")
    assert report["conclusionCode"][0]["coding"][0]["code"] == rec["segment_code"][1]
    assert f"AHA {rec['aha_segment']}" in report["conclusion"]
    import base64

    forms = {f["title"]: base64.b64decode(f["data"]) for f in report["presentedForm"]}
    assert forms["CRT planning summary"] == (case / "report" / "summary.pdf").read_bytes()
    assert len(report["result"]) == len(resources) - 1
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    values = [(o["code"]["coding"][0]["code"], o.get("valueQuantity", {}).get("value")) for o in observations]
    for n in numbers.numbers():
        assert any(code == n.code[1] and v == pytest.approx(n.value, rel=1e-5) for code, v in values), n
    assert not _identity_found(bundle_path.read_bytes())


def _error(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0, argv
    assert err.count("cardiotwin: error:") == 1 and "Traceback" not in err, err
    return err


def test_server_and_study_errors_are_clear_and_leave_the_case_as_it_was(pacs, pacs_env, study, tmp_path, capsys,
                                                                        monkeypatch):
    from pacs_support import free_port

    study_uid, series_uid, _, n_ct = study
    case = tmp_path / "case"
    assert main(["case", "new", str(case), "--dicomweb", pacs.url, "--study", study_uid]) == 0
    manifest = json.loads((case / "manifest.json").read_text())
    assert manifest["inputs"]["scan"]["dicomweb"]["series_uid"] == series_uid
    assert len(list((case / "inputs" / "dicom").iterdir())) == n_ct
    before = _tree(case)
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    for argv, words in [
        (["segment", "--dicomweb", down, "--study", study_uid, "--out", str(case)], "cannot connect"),
        (["push", str(case), "--dicomweb", down], "cannot connect"),
        (["segment", "--dicomweb", pacs.root + "/not-dicomweb", "--study", study_uid, "--out", str(case)], "HTTP 404"),
        (["segment", "--dicomweb", pacs.url, "--study", "1.2.826.0.1.3680043.2.1125.404", "--out", str(case)],
         "study 1.2.826.0.1.3680043.2.1125.404 not found"),
        (["segment", "--dicomweb", pacs.url, "--study", study_uid, "--series", "1.2.3.4", "--out", str(case)],
         "has no series 1.2.3.4; its series: "),
        (["segment", "--dicomweb", pacs.url, "--study", study_uid, "--series", "1.2.3.4", "--out", str(case)],
         f"{series_uid} (CT 'CT heart phantom', {n_ct} instances, body part CHEST)"),
        (["case", "new", str(case), "--dicomweb", pacs.url, "--study", study_uid], "a case already exists"),
    ]:
        assert words in _error(argv, capsys), argv
        assert _tree(case) == before, argv
    # a case is not even created when the pull fails
    assert "cannot connect" in _error(["case", "new", str(tmp_path / "new"), "--dicomweb", down, "--study", study_uid],
                                      capsys)
    assert not (tmp_path / "new").exists()
    # 401: the password is wrong and is repeated neither in the message nor in debug logs
    monkeypatch.setenv("CARDIOTWIN_DICOMWEB_PASSWORD", "wrong-password-123")
    for argv in (["segment", "--dicomweb", pacs.url, "--study", study_uid, "--out", str(case)],
                 ["push", str(case), "--dicomweb", pacs.url]):
        rc = main(["-v", "-v", *argv])
        out, err = capsys.readouterr()
        assert rc != 0 and "refused access (HTTP 401" in err, err
        assert "wrong-password-123" not in out + err
        assert _tree(case) == before
    monkeypatch.delenv("CARDIOTWIN_DICOMWEB_PASSWORD")
    monkeypatch.delenv("CARDIOTWIN_DICOMWEB_USER")
    assert "set CARDIOTWIN_DICOMWEB_TOKEN" in _error(["push", str(case), "--dicomweb", pacs.url], capsys)


def test_series_choice_and_non_heart_series(pacs, pacs_env, tmp_path, capsys):
    """A study with two CT series is ambiguous (candidates listed; --series picks one); a head scan is refused."""
    import pydicom

    from cardiotwin.io.scans import read_scan
    from cardiotwin.types import ImageGeometry

    geo = ImageGeometry(shape=(32, 32, 8), spacing_mm=(2.0, 2.0, 4.0), origin_mm=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    vox = np.random.default_rng(3).normal(40.0, 10.0, geo.shape)
    first = hospital_series(vox, geo, tmp_path / "a")
    second = hospital_series(vox + 5.0, geo, tmp_path / "b")
    for ds in second:  # same study, another series
        ds.StudyInstanceUID = first[0].StudyInstanceUID
    study_uid = upload(pacs, first + second)
    err = _error(["case", "new", str(tmp_path / "c"), "--dicomweb", pacs.url, "--study", study_uid], capsys)
    assert "has 2 CT or MR series; choose one with --series" in err
    assert first[0].SeriesInstanceUID in err and second[0].SeriesInstanceUID in err
    assert not (tmp_path / "c").exists()
    assert main(["case", "new", str(tmp_path / "c"), "--dicomweb", pacs.url, "--study", study_uid,
                 "--series", str(second[0].SeriesInstanceUID)]) == 0
    scan = read_scan(tmp_path / "c" / "inputs" / "scan.nii.gz")
    assert scan.geometry.shape == geo.shape
    assert np.allclose(scan.voxels, np.round(vox + 5.0))
    kept = pydicom.dcmread(next((tmp_path / "c" / "inputs" / "dicom").iterdir()))
    assert kept.PatientName == "" and kept.PatientID == "" and "InstitutionName" not in kept
    assert kept.SeriesInstanceUID == second[0].SeriesInstanceUID

    head = hospital_series(vox, geo, tmp_path / "head", body_part="HEAD")
    head_study = upload(pacs, head)
    err = _error(["case", "new", str(tmp_path / "h"), "--dicomweb", pacs.url, "--study", head_study], capsys)
    assert "is a scan of the HEAD (BodyPartExamined), not of the heart" in err
    assert not (tmp_path / "h").exists()


@pytest.mark.slow
def test_full_recipe_from_the_pacs_and_back(pacs, pacs_env, tmp_path, capsys):
    """The CT recipe's stages through the CLI on a pulled phantom study: the shipped segmentation network,
    mesh, fibres, virtual CRT (eikonal sweep); then report, push, read back (minutes)."""
    from cardiotwin.interop.results import key_numbers
    from cardiotwin.phantom import make_phantom

    ph = make_phantom(seed=27, modality="CT", spacing_mm=(2.0, 2.0, 2.0), fov_mm=128.0)
    study_uid = upload(pacs, hospital_series(ph.scan.voxels, ph.scan.geometry, tmp_path / "ct"))
    recipe = tmp_path / "crt_pacs.yaml"
    recipe.write_text(yaml.safe_dump({"name": "crt_pacs", "modality": "CT", "stages": [
        {"segment": {}}, {"mesh": {"edge_mm": "5 mm"}}, {"fibers": {}},
        {"crt": {"uq": {"samples": 2}, "em_top_k": 0, "protocols": {"timing_top_k": 1}}}]}))
    case = tmp_path / "case"
    assert main(["run", str(recipe), "--dicomweb", pacs.url, "--study", study_uid, "--out", str(case),
                 "--workers", "0"]) == 0
    assert main(["report", str(case), "--no-verify", "--no-calc-verification"]) == 0
    assert main(["push", str(case), "--dicomweb", pacs.url]) == 0
    capsys.readouterr()
    found = _study_instances(pacs, study_uid)
    assert {m: len(v) for m, v in found.items() if m != "CT"} == {"SEG": 1, "DOC": 2, "SR": 1}
    c = client(pacs)
    seg = c.retrieve_instance(study_uid, *found["SEG"][0])
    _check_seg(seg, case)
    sr = c.retrieve_instance(study_uid, *found["SR"][0])
    items = _content_items(sr)
    numbers = key_numbers(case)
    keys = {n.key for n in numbers.numbers()}
    assert {"lv_blood_ml", "qrs_duration_ms", "tat_change_pct"} <= keys, numbers.missing
    for n in numbers.numbers():
        assert ("NUM", n.code[1], (pytest.approx(n.value, rel=1e-6), n.unit)) in items, n
    assert ("CODE", "121075", numbers.recommendation["segment_code"][1]) in items
    with capsys.disabled():
        print("".join(f"\ndciodvfy {ds.Modality}:\n{_dciodvfy(ds, tmp_path)}" for ds in (seg, sr)))
