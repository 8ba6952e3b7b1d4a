"""A stage that fails leaves its case byte-identical: every stage command, made to fail inside its
stage (its solver raises), on a case that already holds outputs; and a failed `segment` of another
scan keeps the case's scan. The failure is noted only in the hidden ``.attempts.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from robustness_support import probe, small_scan, snapshot

from cardiotwin.cases import ATTEMPTS, Case
from cardiotwin.cli import main
from cardiotwin.errors import StageError
from cardiotwin.io.meshes import write_mesh
from cardiotwin.io.scans import write_labels, write_scan
from cardiotwin.types import HeartMesh, LabelMap


def _tiny_mesh() -> HeartMesh:
    """Five tetrahedra filling a cube of 10 mm, with fibre fields: enough for the readers."""
    pts = np.array([[x, y, z] for z in (0, 10) for y in (0, 10) for x in (0, 10)], dtype=float)
    cells = np.array([[0, 1, 2, 4], [1, 2, 3, 7], [1, 4, 5, 7], [2, 4, 6, 7], [1, 2, 4, 7]], dtype=np.int64)
    facets = np.array([[0, 1, 2], [1, 3, 2]], dtype=np.int64)
    n = len(pts)
    frame = {"f0": np.tile([1.0, 0, 0], (n, 1)), "s0": np.tile([0, 1.0, 0], (n, 1)), "n0": np.tile([0, 0, 1.0], (n, 1))}
    return HeartMesh(points=pts, cells=cells, cell_tags=np.ones(5, np.int32), facets=facets,
                     facet_tags=np.ones(2, np.int32), point_data={**frame, "aha": np.ones(n)})


@pytest.fixture()
def full_case(tmp_path) -> Path:
    """A case with ok outputs for segment, mesh, fibers and ep (small synthetic data)."""
    scan = small_scan()
    write_scan(scan, tmp_path / "scan.nii.gz")
    lab = np.zeros(scan.geometry.shape, np.uint8)
    lab[8:16, 8:16, 6:14] = 2
    lab[10:14, 10:14, 8:12] = 1
    write_labels(LabelMap(labels=lab, geometry=scan.geometry), tmp_path / "labels.nii.gz")
    (tmp_path / "recipe.yaml").write_text("stages:\n  - segment: {}\n")
    root = tmp_path / "case"
    assert main(["-q", "run", str(tmp_path / "recipe.yaml"), "--scan", str(tmp_path / "scan.nii.gz"),
                 "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(root)]) == 0
    case = Case.open(root)
    mesh = _tiny_mesh()
    for stage, name in (("mesh", "mesh.vtu"), ("fibers", "mesh.vtu"), ("ep", "activation.vtu")):
        with case.stage(stage, inputs={}, config={"made_by": "test"}) as st:
            fields = {"activation_time_ms": mesh.points[:, 0] * 2.0} if stage == "ep" else {}
            write_mesh(mesh.with_fields(point_data=fields), st.output(name))
            (st.dir / f"{stage}.json").write_text("{}")
    return root


def _blow_up(*args, **kwargs):
    raise StageError("solver blew up")


# (command line, the function inside the stage that fails, the manifest's stage name)
STAGE_FAILURES = [
    (["segment", "{other}", "--out", "{case}", "--force"], "cardiotwin.segmentation.inference.segment", "segment"),
    (["mesh", "{case}", "--force"], "cardiotwin.meshing.volume.mesh_labels", "mesh"),
    (["fibers", "{case}", "--force"], "cardiotwin.fibers.coordinates.compute_fibers", "fibers"),
    (["simulate", "ep", "{case}", "--pace=1,1,1", "--force"], "cardiotwin.electrophysiology.eikonal.simulate_eikonal", "ep"),
    (["simulate", "em", "{case}", "--force"], "cardiotwin.mechanics.outputs.read_em_mesh", "em"),
    (["crt", "{case}", "--workers", "0", "--samples", "0", "--force"], "cardiotwin.therapy.stage.run_crt", "therapy"),
    (["report", "{case}", "--no-verify", "--no-calc-verification", "--force"], "cardiotwin.report.build.render_html",
     "report"),
]


@pytest.mark.parametrize("argv,target,stage", STAGE_FAILURES, ids=[s for _, _, s in STAGE_FAILURES])
def test_failed_stage_leaves_the_case_byte_identical(full_case, tmp_path, capsys, monkeypatch, argv, target, stage):
    import importlib

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, _blow_up)
    other = write_scan(small_scan(seed=5, spacing=(1.5, 1.5, 2.0)), tmp_path / "other_scan.nii.gz")
    manifest = (full_case / "manifest.json").read_bytes()
    argv = [a.format(case=full_case, other=other) for a in argv]
    probe(capsys, argv, protect=[full_case, other], match="solver blew up")
    assert (full_case / "manifest.json").read_bytes() == manifest
    assert not any((full_case / ".staging").iterdir())
    attempt = json.loads((full_case / ATTEMPTS).read_text())[stage]
    assert attempt["status"] == "failed" and "solver blew up" in attempt["error"]
    # the failure shows in the case's status, and the previous outputs still count as ok
    assert Case.open(full_case).stage_record(stage)["last_attempt"]["status"] == "failed"


def test_failed_segment_of_another_scan_keeps_the_case_scan(full_case, tmp_path, capsys, monkeypatch):
    """The sweep's finding: the new scan replaced the case's scan while the old labels still read ok."""
    import cardiotwin.segmentation.inference as inference

    monkeypatch.setattr(inference, "segment", _blow_up)
    scan_before = (full_case / "inputs" / "scan.nii.gz").read_bytes()
    other = write_scan(small_scan(seed=9, shape=(30, 30, 24)), tmp_path / "other.nii.gz")
    probe(capsys, ["segment", other, "--out", full_case], protect=[full_case], match="solver blew up")
    assert (full_case / "inputs" / "scan.nii.gz").read_bytes() == scan_before
    rec = Case.open(full_case).manifest["inputs"]["scan"]
    assert rec["source_name"] == "scan.nii.gz" and rec["shape"] == [24, 24, 20]


def test_successful_segment_replaces_scan_and_labels_together(full_case, tmp_path, capsys, monkeypatch):
    import cardiotwin.segmentation.inference as inference
    import cardiotwin.segmentation.qc as qc

    other_scan = small_scan(seed=9, shape=(30, 30, 24))
    lab = np.zeros(other_scan.geometry.shape, np.uint8)
    lab[10:20, 10:20, 8:16] = 1
    monkeypatch.setattr(inference, "segment", lambda scan, model, cfg: LabelMap(labels=lab, geometry=scan.geometry))
    monkeypatch.setattr(qc, "raise_on_errors", lambda report, source: None)
    other = write_scan(other_scan, tmp_path / "other.nii.gz")
    assert main(["segment", str(other), "--out", str(full_case)]) == 0
    m = Case.open(full_case).manifest
    assert m["inputs"]["scan"]["source_name"] == "other.nii.gz" and m["inputs"]["scan"]["shape"] == [30, 30, 24]
    assert m["stages"]["segment"]["inputs"]["scan"] == m["inputs"]["scan"]["sha256"]
    assert "last_attempt" not in m["stages"]["segment"]
    assert not any((full_case / ".staging").iterdir())


def test_commit_that_fails_halfway_puts_everything_back(full_case, tmp_path, capsys, monkeypatch):
    """Outputs computed, the new scan already moved in, then the stage folder cannot be replaced:
    the previous scan and stage folder come back."""
    import errno
    import os

    import cardiotwin.cases as cases
    import cardiotwin.segmentation.inference as inference
    import cardiotwin.segmentation.qc as qc

    other_scan = small_scan(seed=9, shape=(30, 30, 24))
    monkeypatch.setattr(inference, "segment", lambda scan, model, cfg: LabelMap(
        labels=np.ones(scan.geometry.shape, np.uint8), geometry=scan.geometry))
    monkeypatch.setattr(qc, "raise_on_errors", lambda report, source: None)
    real_replace = os.replace
    failed = []

    def replace(src, dst):
        if Path(dst) == full_case / "segment" and Path(src).name.startswith("segment-") and not failed:
            failed.append(src)  # the work folder cannot be moved in (once)
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(cases.os, "replace", replace)
    other = write_scan(other_scan, tmp_path / "other.nii.gz")
    before = snapshot([full_case])
    probe(capsys, ["segment", other, "--out", full_case, "--force"], protect=[full_case],
          match=r"case/segment: Input/output error")
    assert failed and snapshot([full_case]) == before
