"""Pseudo-ECG checks (Gima & Rudy 2002 lead field)."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.electrophysiology.ecg import (
    ELECTRODES, electrode_positions, lead_field, leads_from_electrodes, qrs_duration_ms, reaction_eikonal_vm, write_ecg)
from cardiotwin.meshing.analytic import niederer_slab


@pytest.fixture(scope="module")
def slab():  # noqa: ANN201
    return niederer_slab(dx_mm=0.5, size_mm=(20.0, 4.0, 2.0))


def test_uniform_vm_gives_no_signal(slab) -> None:  # noqa: ANN001
    # phi = int D grad Vm . grad(1/r): zero for a uniform Vm (no current dipoles).
    L = lead_field(slab, d_l=0.1, d_t=0.01, electrodes=electrode_positions(slab.points))
    assert L.shape == (len(ELECTRODES), slab.n_points)
    assert np.max(np.abs(L @ np.full(slab.n_points, -85.0))) < 1e-9 * np.max(np.abs(L))


def test_approaching_wavefront_is_positive(slab) -> None:  # noqa: ANN001
    # Gima & Rudy 2002 / classic dipole theory: a depolarisation front moving towards an
    # electrode gives a positive deflection there, moving away a negative one.
    x = slab.points[:, 0]
    act = x / 0.5  # front along +x at 0.5 mm/ms
    ahead = {"P": np.array([60.0, 2.0, 1.0]), "B": np.array([-40.0, 2.0, 1.0])}
    elec = {name: ahead["P"] for name in ELECTRODES}
    elec["LA"] = ahead["B"]
    L = lead_field(slab, d_l=0.1, d_t=0.01, electrodes=elec)
    vm = reaction_eikonal_vm(act, 20.0)
    phi = L @ vm
    assert phi[ELECTRODES.index("V1")] > 0 > phi[ELECTRODES.index("LA")]


def test_qrs_duration_matches_activation_spread_and_wfdb(slab, tmp_path) -> None:  # noqa: ANN001
    import wfdb

    from cardiotwin.electrophysiology.ecg import ecg_from_activation

    act = slab.points[:, 0] / 0.5  # 40 ms total activation
    times, leads = ecg_from_activation(slab, act, d_l=0.1, d_t=0.01, t_end_ms=400.0, dt_ms=0.5)
    qrs = qrs_duration_ms(times, leads)
    assert qrs == pytest.approx(40.0, rel=0.2)
    write_ecg(tmp_path, times, leads)
    rec = wfdb.rdrecord(str(tmp_path / "ecg"))
    assert rec.sig_name[:3] == ["I", "II", "III"] and rec.fs == 1000
    assert len(leads_from_electrodes(np.zeros((9, 3)))) == 12
