"""`cardiotwin bench mesh` runs its resolution sweep in pieces: each case's rows are kept as files in a
folder per mesher code, a rerun measures only what is missing, and the section is built from every row
kept (the rest listed as not run)."""

from __future__ import annotations

import json

from cardiotwin.bench.mesh import bench_mesh
from cardiotwin.bench.mesh_sweep import check_row, mesher_fingerprint, row_path, sweep, sweep_cases
from cardiotwin.cli import main

CASE = "phantom typical 3x3x3 mm"


def test_a_piece_of_the_sweep_is_kept_and_not_run_again(tmp_path):
    rows = sweep(quick=True, rows_dir=tmp_path, select=["3x3x3"], edges=(5.0,))
    folder = tmp_path / mesher_fingerprint()
    path = row_path(folder, CASE, 5.0)
    row = json.loads(path.read_text())
    assert row["case"] == CASE and row["voxel_mm"] == [3.0, 3.0, 3.0]
    assert check_row(row) == [], row  # the mesh meets every target (time on CPU seconds)
    assert row["steps_s"]["tetgen"] > 0 and row["meshes_at_a_time"] == 1
    measured = [r for r in rows if not r.get("not_run")]
    assert measured == [row]
    assert len(rows) == 3 * len(sweep_cases(quick=True))  # every case and edge, the others not run
    stamp = path.stat().st_mtime_ns
    again = sweep(quick=True, rows_dir=tmp_path, select=["3x3x3"], edges=(5.0,))
    assert path.stat().st_mtime_ns == stamp and [r for r in again if not r.get("not_run")] == [row]
    # the section is built from the kept rows without running anything
    section = bench_mesh(quick=True, run=False, rows_dir=tmp_path)
    assert f"| {CASE} | 3x3x3 | 5 | " in section and "1 of 1 meshes meet every target." in section
    assert f"{CASE} at 3 mm" in section.split("Not run")[1]
    assert "not measured by this mesher code yet" in section


def test_rows_of_other_mesher_code_are_not_shown(tmp_path):
    old = tmp_path / "0123456789abcdef"
    old.mkdir()
    (old / "x@5mm.json").write_text(json.dumps({"case": CASE, "edge_mm": 5.0, "code": "0123456789abcdef",
                                                 "time_s": 1.0}))
    rows = sweep(quick=True, rows_dir=tmp_path, run_missing=False)
    assert all(r.get("not_run") for r in rows)


def test_a_damaged_row_counts_as_not_run(tmp_path, caplog):
    folder = tmp_path / mesher_fingerprint()
    folder.mkdir()
    row_path(folder, CASE, 5.0).write_text('{"case": "' + CASE + '", "edge_')  # a hand edit cut short
    rows = sweep(quick=True, rows_dir=tmp_path, run_missing=False)
    assert all(r.get("not_run") for r in rows)
    assert "unreadable benchmark row" in caplog.text


def test_mesh_options_only_for_bench_mesh(tmp_path, capsys):
    out = tmp_path / "B.md"
    assert main(["bench", "ep", "--cases", "ACDC", "--file", str(out)]) == 2
    assert "options of `bench mesh`" in capsys.readouterr().err and not out.exists()
