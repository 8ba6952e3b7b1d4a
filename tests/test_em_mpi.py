"""A beat on 2 MPI ranks agrees with the serial beat within the solver tolerances, and the rank
launcher (``mechanics.ranks``) falls back or fails clearly when MPI is missing.

Same analytic inputs (``simulate em --demo ellipsoid``), same mesh, exact (MUMPS LU) linear
solves; only the partition, the parallel ordering and so the rounding differ. The coupled
Newton stops when the cavity volumes match the 0D ones within ``CoupledCirculation``'s
tolerance (max(tol_ml, rtol V)), so volumes and pressures may differ by about that much.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.errors import ConfigError, StageError
from cardiotwin.mechanics import ranks as rk
from cardiotwin.mechanics.electromechanics import EMConfig

CONFIG = "dt: 20 ms\ndiastolic_dt: 40 ms\nbeat_duration: 400 ms\n"


def _mpirun() -> str:
    found = rk.find_mpiexec()
    if found is None:
        pytest.skip("mpiexec not available")
    return found


def _compare(par: dict, ser: dict) -> None:
    assert par["metadata"]["mpi_ranks"] == 2 and ser["metadata"]["mpi_ranks"] == 1
    v_ser, v_par = np.array(ser["lv_volume_ml"]), np.array(par["lv_volume_ml"])
    p_ser, p_par = np.array(ser["lv_pressure_kpa"]), np.array(par["lv_pressure_kpa"])
    assert len(v_ser) == len(v_par)
    assert p_ser.max() > 5.0  # the beat ejects: a real comparison, not two resting states
    # coupling tolerance 0.1 % of the cavity volume per step (circulation.simulate)
    assert np.max(np.abs(v_par - v_ser) / v_ser) < 2e-3
    assert np.max(np.abs(p_par - p_ser)) < 2e-3 * p_ser.max()
    assert abs(par["ejection_fraction"]["LV"] - ser["ejection_fraction"]["LV"]) < 2e-3


def test_two_rank_beat_matches_serial(tmp_path):
    """`--ranks 2` (the launcher: a child mpiexec) and `mpirun -n 2 cardiotwin ...` against `--ranks 1`."""
    cfg = tmp_path / "em.yaml"
    cfg.write_text(CONFIG)
    args = ["-q", "simulate", "em", "--demo", "ellipsoid", "--demo-mesh-mm", "6", "--config", str(cfg)]
    assert main([*args, "--ranks", "2", "--out", str(tmp_path / "par")]) == 0
    assert main([*args, "--ranks", "1", "--out", str(tmp_path / "ser")]) == 0
    par = json.loads((tmp_path / "par" / "metrics.json").read_text())
    ser = json.loads((tmp_path / "ser" / "metrics.json").read_text())
    assert (tmp_path / "par" / "displacement.xdmf").exists() and (tmp_path / "par" / "pv_loops.png").exists()
    _compare(par, ser)
    # started under mpirun itself: the beat uses those ranks and launches nothing more
    subprocess.run([_mpirun(), "-n", "2", sys.executable, "-m", "cardiotwin", *args, "--out", str(tmp_path / "ext")],
                   check=True, capture_output=True, timeout=600)
    ext = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    _compare(ext, ser)


def test_default_rank_count(monkeypatch):
    monkeypatch.delenv(rk.RANKS_ENV, raising=False)
    monkeypatch.setattr(rk, "usable_cores", lambda: 16)
    assert rk.resolve_ranks(None) == (rk.MAX_AUTO_RANKS, False)
    monkeypatch.setattr(rk, "usable_cores", lambda: 2)
    assert rk.resolve_ranks(None) == (2, False) and rk.resolve_ranks("auto") == (2, False)
    assert rk.resolve_ranks("1") == (1, True) and rk.resolve_ranks(3) == (3, True)
    monkeypatch.setenv(rk.RANKS_ENV, "1")
    assert rk.resolve_ranks(None) == (1, True) and rk.resolve_ranks("2") == (2, True)
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="rank"):
            rk.resolve_ranks(bad)


@pytest.mark.parametrize("launcher", [None, "/bin/false"], ids=["no mpiexec", "mpiexec fails to start"])
def test_ranks_fall_back_visibly_or_fail_clearly(tmp_path, monkeypatch, caplog, launcher):
    monkeypatch.setattr(rk, "find_mpiexec", lambda: launcher)
    job = rk.BeatJob(cfg=EMConfig(), out_dir=tmp_path, demo="ellipsoid")
    with caplog.at_level(logging.WARNING):
        assert rk.run_beat(job, 2, explicit=False) is None  # the caller runs the beat on 1 rank
    assert "runs on 1 rank" in caplog.text
    with pytest.raises(ConfigError, match="--ranks 1"):
        rk.run_beat(job, 2, explicit=True)


def test_a_failing_beat_on_ranks_names_the_file(tmp_path):
    _mpirun()
    bad = tmp_path / "activation.vtu"
    bad.write_text("not a mesh")
    with pytest.raises(StageError, match=str(bad)):
        rk.run_beat(rk.BeatJob(cfg=EMConfig(), out_dir=tmp_path / "em", vtu=bad), 2, explicit=True)


def test_calibration_beats_on_two_ranks_match_serial_and_keep_their_own_end_diastole(tmp_path):
    """The calibration's beat task (``therapy.response.run_beat_task``) on 2 ranks in a child mpiexec
    agrees with the in-process beat within the coupling tolerance; the end-diastolic inflation is
    stored per rank count (a 1-rank snapshot is not read by 2 ranks) and shared by the 2-rank beats."""
    _mpirun()
    from test_therapy_support import biventricle_with_fibres

    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.therapy.response import run_beat_task

    mesh = biventricle_with_fibres(6.0)
    path = write_mesh(mesh, tmp_path / "mesh.vtu")
    act = 0.3 * np.linalg.norm(mesh.points - mesh.points[0], axis=1)  # a wave from one node, ~0.3 ms/mm
    em = {"dt": "20 ms", "diastolic_dt": "40 ms", "beat_duration": "400 ms"}
    kw = {"mesh_path": str(path), "mesh_sha256": sha256_file(path), "work_dir": str(tmp_path)}
    ser = run_beat_task("ser", act, em_config=em, ranks=1, **kw)["result"]
    par = run_beat_task("par", act, em_config=em, ranks=2, **kw)["result"]
    assert not par["metadata"]["end_diastole_reused"]  # the serial snapshot is not the 2 ranks'
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("em_end_diastole_*.npz")) == [
        "2ranks.rank0.npz", "2ranks.rank1.npz", "npz"]
    _compare(par, ser)
    assert par["lv_volume_ml"][0] == pytest.approx(ser["lv_volume_ml"][0], rel=1e-6)  # same inflation
    stronger = run_beat_task("par2", act, em_config={**em, "twitch": {"peak_tension": "120 kPa"}}, ranks=2, **kw)
    r2 = stronger["result"]
    assert r2["metadata"]["end_diastole_reused"] and r2["metadata"]["mpi_ranks"] == 2
    assert r2["lv_volume_ml"][0] == par["lv_volume_ml"][0]
    assert r2["ejection_fraction"]["LV"] > par["ejection_fraction"]["LV"] + 0.02
