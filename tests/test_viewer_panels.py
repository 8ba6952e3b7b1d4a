"""Readers behind the deformation, PV-loop, ECG and candidate panels (no browser).

The deformation reader is checked on a file written by dolfinx itself (``XDMFFile.write_mesh`` +
``write_function`` of a P1 vector field, as the electromechanics stage writes
``displacement.xdmf``) holding a known field, so the values read back are known exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.errors import CaseError
from cardiotwin.viewer.scene import _ecg_section, _pv_section, decode_array
from cardiotwin.viewer.therapy import read_candidates

MMHG_PER_KPA = 7.500615758  # 1 mmHg = 133.322387415 Pa (ISO 80000-4 conventional value)


def _write_dolfinx_series(path: Path, times_ms: list[float]) -> np.ndarray:
    from mpi4py import MPI

    import dolfinx

    mesh = dolfinx.mesh.create_box(MPI.COMM_SELF, [np.zeros(3), np.array([10.0, 6.0, 4.0])], [4, 3, 2],
                                   dolfinx.mesh.CellType.tetrahedron)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (3,)))
    u = dolfinx.fem.Function(V, name="displacement_mm")
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(path), "w") as f:
        f.write_mesh(mesh)
        for t in times_ms:
            # u(x, t) = (0.01 t x, -0.02 t y, 0.5 sin(z))  (P1 interpolates the linear parts exactly)
            u.interpolate(lambda x, t=t: np.vstack([0.01 * t * x[0], -0.02 * t * x[1], 0.5 * np.sin(x[2])]))
            f.write_function(u, t)
    return mesh.geometry.x.copy()


def test_displacement_series_from_dolfinx_xdmf(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    from cardiotwin.viewer.deformation import read_displacement_series

    times = [0.0, 100.0, 250.0]
    points = _write_dolfinx_series(tmp_path / "displacement.xdmf", times)
    rng = np.random.default_rng(0)
    surface = points[rng.choice(points.shape[0], 40, replace=False)]  # any order: matched by position
    out = read_displacement_series(tmp_path / "displacement.xdmf", surface)
    assert out["times_ms"] == times
    disp = decode_array(out["displacement_mm"])
    assert disp.shape == (3, 40, 3)
    for k, t in enumerate(times):
        expected = np.column_stack([0.01 * t * surface[:, 0], -0.02 * t * surface[:, 1], 0.5 * np.sin(surface[:, 2])])
        np.testing.assert_allclose(disp[k], expected, atol=1e-5)
    # a surface that is not this mesh is refused rather than shown wrongly
    with pytest.raises(CaseError, match="does not match"):
        read_displacement_series(tmp_path / "displacement.xdmf", surface + 3.0)


def test_pv_section_converts_to_mmhg_and_keeps_the_loop(tmp_path: Path) -> None:
    from cardiotwin.mechanics.outputs import result_to_dict
    from cardiotwin.types import MechResult

    t = np.linspace(0.0, 800.0, 81)
    p_kpa = 8.0 + 7.0 * np.sin(2 * np.pi * t / 800.0)
    v_ml = 120.0 - 40.0 * np.sin(2 * np.pi * t / 800.0 + 1.0)
    res = MechResult(times_ms=t, lv_pressure_kpa=p_kpa, lv_volume_ml=v_ml, rv_pressure_kpa=np.array([]),
                     rv_volume_ml=np.array([]), edv_ml={"LV": 160.0}, esv_ml={"LV": 80.0},
                     stroke_volume_ml={"LV": 80.0}, ejection_fraction={"LV": 0.5},
                     dpdt_max_kpa_per_ms={"LV": 0.1}, stroke_work_mj={"LV": 1.0}, aha_fibre_strain={5: -0.12})
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(result_to_dict(res)))  # the electromechanics stage's own serialisation
    pv = _pv_section(path)
    assert set(pv["cavities"]) == {"LV"}  # no RV curves for an LV-only beat
    np.testing.assert_allclose(pv["cavities"]["LV"]["pressure_mmhg"], p_kpa * MMHG_PER_KPA, rtol=1e-6)
    assert pv["cavities"]["LV"]["volume_ml"] == pytest.approx(v_ml.tolist())
    assert pv["cavities"]["LV"]["ejection_fraction"] == 0.5
    assert pv["aha_fibre_strain"] == {"5": -0.12}


def test_ecg_section_keeps_complete_leads(tmp_path: Path) -> None:
    path = tmp_path / "ep.json"
    path.write_text(json.dumps({"ecg": {"times_ms": [0, 1, 2], "leads": {"I": [0, 0.5, 0], "II": [0, 1]}}}))
    assert _ecg_section(path) == {"times_ms": [0.0, 1.0, 2.0], "leads": {"I": [0.0, 0.5, 0.0]}}
    path.write_text(json.dumps({"tat_ms": 100}))
    assert _ecg_section(path) is None


def test_ecg_from_a_wfdb_record(tmp_path: Path) -> None:
    """The EP stage stores its 12-lead pseudo-ECG as a WFDB record (ep/ecg.hea + .dat, 1 kHz)."""
    import wfdb

    fs = 1000.0
    t = np.arange(600) / fs
    sig = np.column_stack([np.sin(2 * np.pi * 2 * t), 0.5 * np.cos(2 * np.pi * 3 * t)])
    wfdb.wrsamp("ecg", fs=fs, units=["mV", "mV"], sig_name=["I", "V1"], p_signal=sig, fmt=["16", "16"],
                write_dir=str(tmp_path))
    ecg = _ecg_section(tmp_path / "ecg.hea")
    assert list(ecg["leads"]) == ["I", "V1"]
    times = np.asarray(ecg["times_ms"])
    assert times[0] == 0.0 and np.allclose(np.diff(times), 1.0)  # 1 kHz -> 1 ms
    # 16-bit storage: values back within the quantisation step of the record's gain
    np.testing.assert_allclose(ecg["leads"]["I"], sig[:, 0], atol=2e-3)
    np.testing.assert_allclose(ecg["leads"]["V1"], sig[:, 1], atol=2e-3)


def test_candidates_from_a_serialised_therapy_result(tmp_path: Path) -> None:
    from cardiotwin.types import CandidateResult, LeadSite, PacingProtocol, TherapyResult

    rv = LeadSite(name="rv-apex", chamber="RV", node=3, position_mm=(-20.0, 0.0, -15.0), surface="rv_endo")
    lv = LeadSite(name="lv-aha-5", chamber="LV", node=7, position_mm=(18.0, 2.0, -4.0), aha_segment=5)
    good = CandidateResult(protocol=PacingProtocol(name="biv-aha5", lv_site=lv, rv_site=rv), rank=1, recommended=True,
                           excluded_reason="", metrics={"tat_ms": 90.0, "tat_change_pct": -18.0, "lvat_change_pct": -25.0,
                                                        "captured": True, "qrs_ms": None},
                           concordance="concordant", uq={"probability_best": 0.7})
    rv_only = CandidateResult(protocol=PacingProtocol(name="rv-only", rv_site=rv), rank=2, recommended=False,
                              excluded_reason="no LV lead", metrics={"tat_change_pct": -2.0})
    result = TherapyResult(baseline={"tat_ms": 110.0}, candidates=(good, rv_only), latest_segment=5, scar_segments=())
    (tmp_path / "therapy").mkdir()
    path = tmp_path / "therapy" / "ranking.json"
    path.write_text(json.dumps(dataclasses.asdict(result)))
    cands = read_candidates(path, case_root=tmp_path)
    assert [c.id for c in cands] == ["biv-aha5", "rv-only"]
    assert cands[0].position_mm == (18.0, 2.0, -4.0)  # marker at the LV lead
    assert cands[1].position_mm == (-20.0, 0.0, -15.0)  # no LV lead: at the RV lead
    # rv-only has no LVAT change: both are coloured by the total activation time reduction (-tat_change_pct)
    assert (cands[0].response, cands[1].response) == (18.0, 2.0)
    assert {c.response_name for c in cands} == {"total activation time reduction (%)"}
    assert cands[0].metrics["concordance"] == "concordant" and cands[0].metrics["probability_best"] == 0.7
    assert cands[1].metrics["excluded_reason"] == "no LV lead"
    assert "qrs_ms" not in cands[0].metrics  # None is not a number to show


def test_candidate_activation_paths_must_stay_in_the_case(tmp_path: Path) -> None:
    (tmp_path / "case" / "therapy").mkdir(parents=True)
    (tmp_path / "outside.vtu").write_text("x")
    path = tmp_path / "case" / "therapy" / "ranking.json"
    path.write_text(json.dumps({"candidates": [{"id": "a", "position_mm": [0, 0, 0], "activation": "../../outside.vtu"}]}))
    assert read_candidates(path, case_root=tmp_path / "case")[0].activation_path is None
    path.write_text(json.dumps({"candidates": [{"id": "a", "position_mm": [1.0, 2.0]}]}))
    with pytest.raises(CaseError, match="3-vector"):
        read_candidates(path, case_root=tmp_path / "case")


def test_candidates_from_the_crt_stage_writer(tmp_path: Path) -> None:
    """ranking.json as cardiotwin.therapy.outputs writes it: one response scale for all candidates."""
    from cardiotwin.therapy.outputs import result_to_dict
    from cardiotwin.types import CandidateResult, LeadSite, PacingProtocol, TherapyResult

    rv = LeadSite(name="RV_apex", chamber="RV", node=3, position_mm=(-20.0, 0.0, -15.0), surface="rv_endo")
    lv5 = LeadSite(name="LV_AHA5", chamber="LV", node=7, position_mm=(18.0, 2.0, -4.0), aha_segment=5)
    lv11 = LeadSite(name="LV_AHA11", chamber="LV", node=9, position_mm=(17.0, 1.0, -14.0), aha_segment=11)
    cands = (
        CandidateResult(protocol=PacingProtocol(name="BiV_LV_AHA5", lv_site=lv5, rv_site=rv), rank=1, recommended=True,
                        excluded_reason="", metrics={"tat_change_pct": -20.0, "lvat_change_pct": -30.0,
                                                     "dpdt_change_pct": 15.0, "qrs_ms": float("nan")}),
        CandidateResult(protocol=PacingProtocol(name="BiV_LV_AHA11", lv_site=lv11, rv_site=rv), rank=2, recommended=True,
                        excluded_reason="", metrics={"tat_change_pct": -10.0, "lvat_change_pct": -12.0}),
        CandidateResult(protocol=PacingProtocol(name="intrinsic"), rank=3, recommended=False,
                        excluded_reason="no leads", metrics={"tat_change_pct": 0.0, "lvat_change_pct": 0.0}),
    )
    result = TherapyResult(baseline={"tat_ms": 120.0}, candidates=cands, latest_segment=5, scar_segments=())
    (tmp_path / "therapy").mkdir()
    path = tmp_path / "therapy" / "ranking.json"
    path.write_text(json.dumps(result_to_dict(result)))
    got = {c.id: c for c in read_candidates(path, case_root=tmp_path)}
    # dP/dt exists for the best protocol only: the shared scale is the total activation-time
    # reduction, the quantity the CRT ranking orders by (cardiotwin.therapy.ranking)
    assert {c.response_name for c in got.values()} == {"total activation time reduction (%)"}
    assert got["BiV_LV_AHA5"].response == 20.0 and got["BiV_LV_AHA11"].response == 10.0
    assert got["BiV_LV_AHA5"].position_mm == (18.0, 2.0, -4.0)
    assert got["intrinsic"].position_mm is None  # listed, but no marker
    assert got["BiV_LV_AHA5"].metrics["dpdt_change_pct"] == 15.0 and "qrs_ms" not in got["BiV_LV_AHA5"].metrics
