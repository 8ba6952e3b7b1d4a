"""Case directories: manifest, stage cache, --force, lock, interrupted and killed stages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from cardiotwin.cases import Case
from cardiotwin.config import quantity
from cardiotwin.errors import CaseError


@dataclass(frozen=True)
class _Cfg:
    edge_mm: float = quantity(1.5, "mm")


def _run_stage(case: Case, src, cfg=_Cfg(), *, force=False, content="v1") -> bool:
    with case.stage("mesh", inputs={"labels": src}, config=cfg, force=force) as st:
        if st.skipped:
            return False
        st.output("mesh.txt").write_text(content)
        st.output("sub/quality.json").write_text("{}")
        st.metrics["n_cells"] = 42
    return True


def test_manifest_records_inputs_outputs_versions(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c1", case_id="p001")
    assert _run_stage(case, src)
    m = json.loads((case.root / "manifest.json").read_text())
    assert m["case_id"] == "p001"
    rec = m["stages"]["mesh"]
    assert rec["status"] == "ok"
    assert rec["inputs"]["labels"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert rec["config"] == {"edge_mm": "1.5 mm"}
    assert set(rec["outputs"]) == {"mesh.txt", "sub/quality.json"}
    assert rec["metrics"] == {"n_cells": 42}
    assert "numpy" in rec["software"] and "cardiotwin" in rec["software"]
    assert rec["started"] <= rec["ended"]
    assert (case.root / "mesh" / "mesh.txt").read_text() == "v1"
    assert not any((case.root / ".staging").iterdir())


def test_cache_skip_force_and_invalidation(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c")
    assert _run_stage(case, src)
    assert not _run_stage(case, src), "unchanged inputs and config must skip"
    assert _run_stage(case, src, force=True), "--force must rerun"
    assert _run_stage(case, src, _Cfg(edge_mm=1.0)), "changed config must rerun"
    assert not _run_stage(case, src, _Cfg(edge_mm=1.0))
    src.write_bytes(b"abcd")
    assert _run_stage(case, src), "changed input must rerun"
    (case.root / "mesh" / "mesh.txt").write_text("tampered")
    assert _run_stage(case, src), "a changed output must rerun"


def test_failed_stage_keeps_previous_outputs(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c")
    _run_stage(case, src, content="good")
    with pytest.raises(RuntimeError, match="solver blew up"):
        with case.stage("mesh", inputs={"labels": src}, config=_Cfg(), force=True) as st:
            st.output("mesh.txt").write_text("half written")
            raise RuntimeError("solver blew up")
    assert (case.root / "mesh" / "mesh.txt").read_text() == "good"
    rec = case.stage_record("mesh")
    assert rec["status"] == "ok" and rec["last_attempt"]["status"] == "failed"
    assert "solver blew up" in rec["last_attempt"]["error"]
    assert not _run_stage(case, src), "the last good run is still valid for the cache"


def test_lock_stops_a_second_run(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c")
    other = Case.open(case.root)
    with case.stage("mesh", inputs={"labels": src}, config=_Cfg()) as st:
        st.output("mesh.txt").write_text("x")
        with pytest.raises(CaseError, match="locked by pid"):
            _run_stage(other, src)
    assert _run_stage(other, src, force=True)  # released afterwards


def test_lock_across_processes(tmp_path):
    case = Case.create(tmp_path / "c")
    code = textwrap.dedent(
        f"""
        import sys, time
        from cardiotwin.cases import Case
        with Case.open({str(case.root)!r}).lock():
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(CaseError, match="locked"):
            with case.lock():
                pass
    finally:
        proc.communicate("done\n", timeout=30)
    with case.lock():
        pass


def test_killed_stage_leaves_previous_outputs(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c")
    _run_stage(case, src, content="good")
    code = textwrap.dedent(
        f"""
        import os
        from cardiotwin.cases import Case
        case = Case.open({str(case.root)!r})
        with case.stage("mesh", inputs={{"labels": {str(src)!r}}}, config={{"edge_mm": "1 mm"}}, force=True) as st:
            st.output("mesh.txt").write_text("partial")
            os._exit(9)  # killed mid-stage: no cleanup runs
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (case.root / "mesh" / "mesh.txt").read_text() == "good"
    assert any((case.root / ".staging").iterdir()), "the killed run left its work folder"
    assert not _run_stage(case, src), "previous result still valid"
    assert not any((case.root / ".staging").iterdir()), "leftovers are cleaned at the next lock"


def test_recovery_after_kill_between_renames(tmp_path):
    src = tmp_path / "labels.bin"
    src.write_bytes(b"abc")
    case = Case.create(tmp_path / "c")
    _run_stage(case, src, content="good")
    # Simulate a kill after the old outputs were parked but before the new ones moved in.
    (case.root / "mesh").rename(case.root / ".staging" / "old-mesh-deadbeef")
    assert not _run_stage(case, src)
    assert (case.root / "mesh" / "mesh.txt").read_text() == "good"


def test_create_refuses_existing_and_open_requires_manifest(tmp_path):
    case = Case.create(tmp_path / "c")
    with pytest.raises(CaseError, match="already exists"):
        Case.create(case.root)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("user file")
    with pytest.raises(CaseError, match="not empty"):
        Case.create(tmp_path / "d")
    with pytest.raises(CaseError, match="not a case directory"):
        Case.open(tmp_path / "d")
    (case.root / "manifest.json").write_text("{broken")
    with pytest.raises(CaseError, match="not valid JSON"):
        Case.open(case.root)
    with pytest.raises(CaseError, match="has not been run"):
        Case.create(tmp_path / "e").require_stage("segment")
