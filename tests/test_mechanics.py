"""Mechanics physics checks, parameter validation, divergence handling, and one coupled beat."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx

from cardiotwin.anatomy import FacetTag
from cardiotwin.cli import main
from cardiotwin.config import load_config
from cardiotwin.errors import ConfigError, StageError
from cardiotwin.mechanics.active import TwitchConfig
from cardiotwin.mechanics.demo import analytic_beat_inputs
from cardiotwin.mechanics.electromechanics import EMConfig, beat_metrics
from cardiotwin.mechanics.materials import Guccione, HolzapfelOgden
from cardiotwin.mechanics.problem import Boundaries, CardiacMechanics, MechanicsConfig


def _ellipsoid_mech(material=None, cfg=None, h=4.0):
    inp = analytic_beat_inputs(geometry="ellipsoid", char_length_mm=h)
    mech = CardiacMechanics(
        inp.mesh, inp.facet_tags, material=material or Guccione(), fibres=inp.fibres,
        boundaries=Boundaries(fixed=(int(FacetTag.BASE),), cavities={"LV": int(FacetTag.LV_ENDO)},
                              base=int(FacetTag.BASE)),
        cfg=cfg or MechanicsConfig(), prefix="test_mech_",
    )
    return inp, mech


@pytest.fixture(scope="module")
def ellipsoid():
    return _ellipsoid_mech()


def _cell_stretch(mech):
    Q = dolfinx.fem.functionspace(mech.mesh, ("DG", 0))
    lam = dolfinx.fem.Function(Q)
    lam.interpolate(dolfinx.fem.Expression(mech.fibre_stretch(), Q.element.interpolation_points))
    n = mech.mesh.topology.index_map(3).size_local
    mid = dolfinx.mesh.compute_midpoints(mech.mesh, 3, np.arange(n, dtype=np.int32))
    return lam.x.array[:n], mid


def test_reference_cavity_volume_matches_analytic(ellipsoid):
    # Truncated ellipsoid r_s 7, r_l 17 cut at z = 5 (Land 2015):
    # V = pi r_s^2 int_{-17}^{5} (1 - z^2 / r_l^2) dz.
    _, mech = ellipsoid
    exact = math.pi * 49.0 * ((5 - 125 / (3 * 289)) - (-17 + 17**3 / (3 * 289))) / 1000.0
    v = mech.cavity_volume_ml("LV")
    assert 0.93 * exact < v <= exact  # flat facets inscribed in the curved endocardium


def test_volume_increases_under_passive_pressure(ellipsoid):
    _, mech = ellipsoid
    start = mech.snapshot()
    v0 = mech.cavity_volume_ml("LV")
    mech.solve_to(pressures_kpa={"LV": 0.5}, label="test")
    v1 = mech.cavity_volume_ml("LV")
    mech.solve_to(pressures_kpa={"LV": 1.0}, label="test")
    v2 = mech.cavity_volume_ml("LV")
    mech.restore(start)
    assert v0 < v1 < v2


def test_activation_shortens_fibres(ellipsoid):
    _, mech = ellipsoid
    start = mech.snapshot()
    v0 = mech.cavity_volume_ml("LV")
    mech.solve_to(active_tension_kpa=20.0, label="test")
    lam, _ = _cell_stretch(mech)
    v1 = mech.cavity_volume_ml("LV")
    mech.restore(start)
    mean = mech.comm.allreduce(lam.sum(), op=MPI.SUM) / mech.comm.allreduce(lam.size, op=MPI.SUM)
    assert mean < 0.98 and v1 < v0


def test_earlier_activation_contracts_earlier(ellipsoid):
    inp, mech = ellipsoid
    start = mech.snapshot()
    # activation spreads from the apex at 0.6 mm/ms (demo inputs): apex ~0 ms, base ~40 ms
    twitch = TwitchConfig()
    mech.solve_to(active_tension_kpa=twitch.tension_kpa(60.0, inp.activation.x.array), label="test")
    lam, mid = _cell_stretch(mech)
    mech.restore(start)
    apex, base = lam[mid[:, 2] < -10.0], lam[mid[:, 2] > 0.0]
    assert apex.mean() < base.mean() - 0.01


def test_holzapfel_ogden_inflates(ellipsoid):
    _, mech = _ellipsoid_mech(material=HolzapfelOgden(), cfg=MechanicsConfig(bulk_modulus=200.0), h=5.0)
    v0 = mech.cavity_volume_ml("LV")
    mech.solve_to(pressures_kpa={"LV": 1.0}, initial_fraction=0.25, label="test")
    assert mech.cavity_volume_ml("LV") > v0


def test_divergence_reports_step_and_load_and_keeps_state():
    _, mech = _ellipsoid_mech(cfg=MechanicsConfig(snes_max_it=2, min_load_fraction=0.25), h=5.0)
    before = mech.snapshot()
    saved = {}
    with pytest.raises(StageError, match=r"diverged at time step 7 .*load fraction .*p_LV"):
        mech.solve_to(pressures_kpa={"LV": 50.0}, label="time step 7 (t = 70 ms)",
                      on_failure=lambda m: saved.setdefault("state", m.snapshot()["state"].copy()))
    np.testing.assert_array_equal(saved["state"], mech.state.x.array)  # last converged state kept
    assert float(mech.pressures_kpa["LV"].value) < 50.0
    assert np.all(np.isfinite(mech.state.x.array)) and before["state"].shape == mech.state.x.array.shape


def test_a_first_step_that_never_converges_points_at_the_mesh(monkeypatch):
    from cardiotwin.mechanics.newton import NewtonDiverged

    _, mech = _ellipsoid_mech(cfg=MechanicsConfig(min_load_fraction=0.1), h=5.0)
    mech.solve_to(pressures_kpa={"LV": 0.2}, label="test")  # a converged, loaded state

    def never(self):
        raise NewtonDiverged("stand-in")

    monkeypatch.setattr(CardiacMechanics, "_newton", never)
    with pytest.raises(StageError, match="could not advance") as loaded:
        mech.solve_to(pressures_kpa={"LV": 0.4}, label="test")
    assert "near-mechanism" not in str(loaded.value)  # it got somewhere before: no mesh hint
    mech.pressures_kpa["LV"].value = 0.0
    mech.state.x.array[:] = 0.0
    with pytest.raises(StageError, match="near-mechanism.*quality.json"):
        mech.solve_to(pressures_kpa={"LV": 0.4}, label="end-diastolic inflation")


def test_bad_parameters_refused_up_front():
    with pytest.raises(ConfigError, match="C must be > 0"):
        load_config(EMConfig, {"guccione": {"C": "-2 kPa"}}, source="em.yaml")
    with pytest.raises(ConfigError, match="peak_tension"):
        load_config(EMConfig, {"twitch": {"peak_tension": -5}}, source="em.yaml")
    with pytest.raises(ValueError, match="a_f must be > 0"):
        _ellipsoid_mech(material=HolzapfelOgden(a_f=0.0), h=6.0)


def test_quadrature_degree_with_a_negative_weight_refused():
    # basix's default degree-3 tetrahedron rule (Keast's 5 points) weights the centroid -2/15 of the
    # reference volume: the assembled tangent can turn indefinite (a twin beat diverged at t = 50 ms)
    with pytest.raises(ConfigError, match=r"em.yaml.mechanics: quadrature_degree 3: .*negative weight \(-0.133\).*1, 2, 4, 5, 6"):
        load_config(EMConfig, {"mechanics": {"quadrature_degree": 3}}, source="em.yaml")
    for degree in (7, 8):  # the same holds for basix's degree 7 and 8 rules
        with pytest.raises(ValueError, match=f"quadrature_degree {degree}: .*negative weight"):
            MechanicsConfig(quadrature_degree=degree).validate()
    for degree in (None, 1, 2, 4, 5, 6):
        MechanicsConfig(quadrature_degree=degree).validate()


def test_beat_metrics_of_a_rectangular_loop():
    # Ideal loop: fill 50->120 mL at 1 kPa, eject at 16 kPa: SV 70, EF 70/120, work (16-1)*70 = 1050 mJ
    v = np.array([120, 120, 50, 50, 120.0])
    p = np.array([1, 16, 16, 1, 1.0])
    m = beat_metrics(np.arange(5.0) * 10, p, v)
    assert m["stroke_volume_ml"] == 70 and m["ejection_fraction"] == pytest.approx(70 / 120)
    assert m["stroke_work_mj"] == pytest.approx(1050.0) and m["dpdt_max_kpa_per_ms"] == pytest.approx(1.5)


def test_simulate_em_demo_beat(tmp_path):
    cfg = tmp_path / "em.yaml"
    cfg.write_text("dt: 20 ms\nbeat_duration: 600 ms\n")
    out = tmp_path / "em"
    assert main(["simulate", "em", "--demo", "ellipsoid", "--demo-mesh-mm", "5", "--config", str(cfg),
                 "--out", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert (out / "pv_loops.png").stat().st_size > 1000 and (out / "displacement.xdmf").exists()
    p, v = np.array(data["lv_pressure_kpa"]), np.array(data["lv_volume_ml"])
    assert data["stroke_volume_ml"]["LV"] > 0.1 and 0.05 < data["ejection_fraction"]["LV"] < 0.8
    assert p.max() > 5.0  # ejection needs the LV above the Windkessel pressure (~10.7 kPa at start)
    assert v[0] == pytest.approx(v.max(), rel=3e-3)  # starts at end diastole (coupling tolerance 0.1%)
    assert data["stroke_work_mj"]["LV"] > 0


# -- fast beat machinery: monolithic 3D-0D coupling, time grid, twin activation ---------------

def test_coupled_newton_matches_pressure_volume_consistency():
    """The bordered Newton for (u, p) lands on the state the slow path would find.

    Check of the coupling (Regazzoni et al., J Comput Phys 457:111083, 2022, sec. 2.3: the 3D
    cavity volume must equal the 0D volume at the cavity pressure): after ``solve_coupled`` with
    20 kPa of active tension in isovolumic contraction (Windkessel valves shut), (a) V3D equals
    V0D(p) within the coupling tolerance, and (b) a plain load-stepped 3D solve at that p from the
    same start gives the same cavity volume, i.e. the pressure unknown is the true cavity pressure.
    """
    from cardiotwin.circulation.models import WindkesselConfig, initial_volumes, windkessel_network
    from cardiotwin.circulation.simulate import CoupledCirculation

    # both solves converged far below the 1e-5 mL compared (the default snes_rtol 1e-3 leaves ~1e-4 mL)
    _, mech = _ellipsoid_mech(h=5.0, cfg=MechanicsConfig(snes_rtol=1e-7))
    mech.solve_to(pressures_kpa={"LV": 1.0}, label="test")
    net, init = windkessel_network(WindkesselConfig(), chamber="LV")
    v0 = initial_volumes(net, {**init, "LV": mech.cavity_volume_ml("LV")})
    coupled = CoupledCirculation(net, v0, ("LV",), {"LV": 1.0})
    start = mech.snapshot()
    tol = coupled.volume_tolerance()
    mech.solve_coupled(active_tension_kpa=20.0, volume_tol_ml=tol,
                       volumes_0d=lambda p: coupled.volumes_for(p, 10.0, 10.0))
    p = float(mech.pressures_kpa["LV"].value)
    v3d = mech.cavity_volume_ml("LV")
    v0d, _ = coupled.volumes_for(np.array([p]), 10.0, 10.0)
    assert abs(v3d - v0d[0]) <= tol
    assert p > 1.5  # contraction against shut valves raises the pressure
    mech.restore(start)
    mech.solve_to(pressures_kpa={"LV": p}, active_tension_kpa=20.0, label="test")
    assert mech.cavity_volume_ml("LV") == pytest.approx(v3d, abs=1e-5)


def test_beat_time_grid_refines_systole_only():
    from cardiotwin.mechanics.electromechanics import beat_times_ms

    cfg = EMConfig(dt=10.0, diastolic_dt=40.0, beat_duration=800.0)
    t = beat_times_ms(cfg, np.array([0.0, 50.0, np.nan]))  # twitch 400 ms -> active until 450 ms
    steps = np.diff(t)
    assert t[0] == 0.0 and t[-1] == 800.0
    assert np.all(steps[t[1:] <= 450.0] == 10.0)
    assert np.all(steps[t[:-1] >= 450.0] <= 40.0) and steps.max() == 40.0
    assert len(t) - 1 == 45 + 9  # 45 steps of 10 ms, then 350 ms in 40 ms steps (last one 30 ms)


def test_sinus_sources_sit_on_the_endocardium():
    from cardiotwin.mechanics.twin import sinus_sources
    from cardiotwin.types import HeartMesh

    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5], [6, 5, 5]], dtype=float)
    mesh = HeartMesh(points=pts, cells=np.array([[0, 1, 2, 3]]), cell_tags=np.array([1], dtype=np.int32),
                     facets=np.zeros((0, 3), dtype=np.int64), facet_tags=np.zeros(0, dtype=np.int32),
                     point_data={"uvc_transmural": np.array([0, 0, 0.5, 1, 0, 0.0]),
                                 "uvc_ventricle": np.array([0, 0, 0, 0, 1, 1.0]),
                                 "uvc_apicobasal": np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.8]),
                                 "aha": np.array([3, 9, 9, 9, 0, 0])})
    src = sinus_sources(mesh)
    starts = {xyz: t for xyz, t in src}
    assert starts[(0.0, 0.0, 0.0)] == 10.0  # basal segment 3 breaks through later
    assert starts[(1.0, 0.0, 0.0)] == 0.0  # mid segment 9, the only endocardial node of it
    # the RV endocardial nodes at 5 ms: one apical, one basal (the mid third of the RV has no node)
    assert sorted(xyz for xyz, t in src if t == 5.0) == [(5.0, 5.0, 5.0), (6.0, 5.0, 5.0)]
    with pytest.raises(ValueError, match="uvc_transmural"):
        sinus_sources(HeartMesh(points=pts, cells=mesh.cells, cell_tags=mesh.cell_tags, facets=mesh.facets,
                                facet_tags=mesh.facet_tags))


def test_aha_point_data_becomes_cell_data(tmp_path):
    import meshio

    from cardiotwin.mechanics.outputs import read_em_mesh

    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=float)
    tets = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    m = meshio.Mesh(pts, [("tetra", tets), ("triangle", np.array([[0, 1, 2]]))],
                    point_data={"activation_time_ms": np.zeros(5), "f0": np.tile([1.0, 0, 0], (5, 1)),
                                "aha": np.array([7, 7, 7, 8, 8.0])},
                    cell_data={"facet_tags": [np.zeros(2, dtype=np.int32), np.array([1], dtype=np.int32)]})
    m.write(tmp_path / "a.vtu")
    hm, _ = read_em_mesh(tmp_path / "a.vtu")
    assert hm.cell_data["aha"].tolist() == [7, 7]  # majority of (7,7,7,8) and (7,7,8,8) -> median 7


@pytest.mark.slow
def test_ct_twin_beat_is_physiological(tmp_path):
    """One beat of the sample CT twin (5 mm edges): adult volumes and a positive ejection.

    Ranges: LV EDV 100-200 mL for an adult heart at 7.5 mmHg filling pressure (Maceira et al.,
    J Cardiovasc Magn Reson 8:417, 2006: 77-195 mL in men); peak LV pressure above the 80 mmHg
    diastolic aortic pressure the Windkessel starts at (the aortic valve must open).
    """
    from cardiotwin.mechanics.stage import beat_inputs_from_file as _inputs_from_file
    from cardiotwin.bench.em import LABELS
    from cardiotwin.mechanics.electromechanics import simulate_beat
    from cardiotwin.mechanics.twin import prepare_twin

    vtu = prepare_twin(LABELS, tmp_path, edge_mm=5.0)
    r = simulate_beat(_inputs_from_file(vtu), EMConfig())
    assert 100.0 < r.edv_ml["LV"] < 200.0
    assert r.lv_pressure_kpa.max() / 0.133322387415 > 80.0
    assert r.ejection_fraction["LV"] > 0.2 and r.metadata["coupling_fallbacks"] <= 2


# -- closed-loop circulation coupled to the 3D biventricle; base springs --------------------------

def test_closed_loop_beat_on_the_biventricle_conserves_blood():
    """Issue 6: closed loop (systemic + pulmonary, atria as elastances) coupled to both 3D cavities.

    The 0D network conserves volume exactly (tests/test_circulation.py); coupled to the 3D cavities,
    blood = 0D compartments outside the cavities + 3D cavity volumes may drift only by the
    pressure-volume consistency tolerance (1e-3 of the cavity volume per step). Both ventricles
    must eject (volume falls during systole, pressure rises above end diastole)."""
    from cardiotwin.mechanics.electromechanics import simulate_beat

    inputs = analytic_beat_inputs(geometry="biventricle", char_length_mm=5.0)
    cfg = load_config(EMConfig, {"circulation": "closed_loop", "dt": "20 ms", "diastolic_dt": "40 ms",
                                 "beat_duration": "400 ms"}, source="test")
    res = simulate_beat(inputs, cfg)
    blood = np.array(res.metadata["blood_volume_ml"])
    n = len(res.times_ms) - 1
    tol = 1e-3 * max(res.lv_volume_ml.max(), res.rv_volume_ml.max())
    assert np.max(np.abs(blood - blood[0])) <= n * tol
    for cav, p, v in (("LV", res.lv_pressure_kpa, res.lv_volume_ml), ("RV", res.rv_pressure_kpa, res.rv_volume_ml)):
        assert res.stroke_volume_ml[cav] > 0.05 * res.edv_ml[cav], cav
        assert p.max() > p[0] + 0.5, cav
    assert res.lv_pressure_kpa.max() > res.rv_pressure_kpa.max()  # systemic vs pulmonary afterload


def test_base_springs_let_the_base_move_and_stiffen_towards_fixed():
    """Robin springs on the base (k u.v ds): under the same passive pressure the cavity grows more
    than with a fixed base, the base moves, and a stiffer spring approaches the fixed base."""
    base = int(FacetTag.BASE)

    def inflate(k: float | None) -> tuple[float, float]:
        inp = analytic_beat_inputs(geometry="ellipsoid", char_length_mm=5.0)
        spring = k is not None
        mech = CardiacMechanics(
            inp.mesh, inp.facet_tags, material=Guccione(), fibres=inp.fibres,
            boundaries=Boundaries(fixed=() if spring else (base,), base_springs=(base,) if spring else (),
                                  cavities={"LV": int(FacetTag.LV_ENDO)}, base=base),
            cfg=MechanicsConfig(base_bc="spring" if spring else "fixed", base_spring_kpa_per_mm=k or 1.0),
            prefix=f"test_spring_{k}_",
        )
        mech.solve_to(pressures_kpa={"LV": 1.5}, label="spring test")
        facets = inp.facet_tags.find(base)
        u = mech.displacement()
        dofs = dolfinx.fem.locate_dofs_topological(u.function_space, 2, facets)
        moved = float(np.max(np.linalg.norm(u.x.array.reshape(-1, 3)[dofs], axis=1))) if len(dofs) else 0.0
        return mech.cavity_volume_ml("LV"), moved

    v_fixed, m_fixed = inflate(None)
    v_soft, m_soft = inflate(0.5)
    v_stiff, m_stiff = inflate(50.0)
    assert m_fixed < 1e-12 and m_soft > 0.05 and m_stiff < m_soft
    assert v_soft > v_stiff > v_fixed * 0.999
    assert abs(v_stiff - v_fixed) < 0.5 * abs(v_soft - v_fixed)


def test_modified_newton_reaches_the_full_newton_state_with_fewer_jacobians():
    # reusing the factorised Jacobian (chord steps) changes the path, not the converged state:
    # both stop at ||R|| <= rtol ||R0|| (1e-9), so the cavity volumes agree to ~1e-6 relative
    out = {}
    for reuse in (False, True):
        _, mech = _ellipsoid_mech(cfg=MechanicsConfig(jacobian_reuse=reuse, snes_rtol=1e-9), h=5.0)
        mech.solve_to(pressures_kpa={"LV": 1.0}, label="test", initial_fraction=0.25)
        mech.solve_to(active_tension_kpa=30.0, label="test", initial_fraction=0.5)
        out[reuse] = (mech.cavity_volume_ml("LV"), sum(mech.monitor.jacobians), sum(mech.monitor.iterations))
    (v_full, jac_full, its_full), (v_chord, jac_chord, its_chord) = out[False], out[True]
    assert v_chord == pytest.approx(v_full, rel=1e-6)
    assert jac_full == its_full  # full Newton: one Jacobian per iteration
    assert jac_chord < jac_full and its_chord >= its_full


def test_beats_of_one_twin_share_the_end_diastolic_inflation(tmp_path):
    """A beat reads the end-diastolic state another beat of the same passive problem stored and
    lands on the same beat (within the Newton and coupling tolerances); a stiffer material has
    another passive digest and inflates again."""
    from cardiotwin.mechanics.electromechanics import passive_digest, simulate_beat

    inp = analytic_beat_inputs(geometry="ellipsoid", char_length_mm=5.0)
    cfg = EMConfig(dt=20.0, beat_duration=300.0)
    path = tmp_path / f"ed_{passive_digest('mesh', cfg)[:16]}.npz"
    cold = simulate_beat(inp, cfg, end_diastole=path)
    assert path.is_file() and not cold.metadata["end_diastole_reused"]
    warm = simulate_beat(inp, EMConfig(dt=20.0, beat_duration=300.0, twitch=TwitchConfig(peak_tension=60.0)),
                         end_diastole=path)
    assert warm.metadata["end_diastole_reused"]
    assert warm.lv_volume_ml[0] == pytest.approx(cold.lv_volume_ml[0], rel=1e-9)  # the stored state itself
    again = simulate_beat(inp, cfg, end_diastole=path)
    assert again.metadata["end_diastole_reused"]
    assert np.allclose(again.lv_volume_ml, cold.lv_volume_ml, rtol=2e-3)
    assert again.ejection_fraction["LV"] == pytest.approx(cold.ejection_fraction["LV"], abs=2e-3)
    stiffer = EMConfig(dt=20.0, beat_duration=300.0, guccione=Guccione(C=3.0, bf=8.0, bt=2.0, bfs=4.0))
    assert passive_digest("mesh", stiffer) != passive_digest("mesh", cfg)
    assert passive_digest("mesh", stiffer) != passive_digest("other mesh", stiffer)
    assert passive_digest("mesh", cfg) == passive_digest("mesh", EMConfig(dt=10.0, twitch=TwitchConfig(peak_tension=60.0)))


def test_adaptive_steps_grow_where_the_beat_is_smooth():
    """With ``adaptive_dt`` the active-phase step grows beyond ``dt`` (up to ``diastolic_dt``) where
    cavity pressures and volumes follow a straight line, so the beat takes fewer steps; the beat
    itself stays close to the fixed-step one (sample CT twin: LV EF -0.4 %, docs/mechanics.md)."""
    from cardiotwin.mechanics.electromechanics import simulate_beat

    inp = analytic_beat_inputs(geometry="ellipsoid", char_length_mm=5.0)
    fixed = simulate_beat(inp, EMConfig(dt=10.0, beat_duration=500.0))
    adaptive = simulate_beat(inp, EMConfig(dt=10.0, beat_duration=500.0, adaptive_dt=True,
                                           step_pressure_tol=0.3, step_volume_tol=0.2))
    steps = np.diff(adaptive.times_ms)
    assert adaptive.metadata["n_steps"] < fixed.metadata["n_steps"]
    assert steps.min() >= 10.0 - 1e-9 and steps.max() <= 40.0 + 1e-9 and np.any(steps > 10.0 + 1e-9)
    assert adaptive.ejection_fraction["LV"] == pytest.approx(fixed.ejection_fraction["LV"], rel=0.01)  # 47 -> 27 steps, EF -0.2 %
    assert adaptive.edv_ml["LV"] == pytest.approx(fixed.edv_ml["LV"], rel=0.01)
