"""`cardiotwin simulate ep` on a case (the ep stage the viewer, report and `simulate em` read) and
monodomain Vm snapshots as a VTU time series (issue 5, outputs)."""

from __future__ import annotations

import json

import meshio
import numpy as np
import pytest

from cardiotwin.cases import Case
from cardiotwin.cli import main
from cardiotwin.io.meshes import write_mesh


@pytest.fixture(scope="module")
def fibre_case(tmp_path_factory):  # noqa: ANN201
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.meshing.analytic import idealised_biventricle

    mesh, _ = compute_fibers(idealised_biventricle(char_length_mm=3.0))
    case = Case.create(tmp_path_factory.mktemp("ep") / "case")
    with case.stage("fibers", inputs={}, config={}) as st:
        write_mesh(mesh, st.dir / "mesh.vtu")
    return case.root


def test_simulate_ep_on_a_case_writes_the_ep_stage(fibre_case) -> None:  # noqa: ANN001
    assert main(["simulate", "ep", str(fibre_case)]) == 0
    ep = fibre_case / "ep"
    act = meshio.read(ep / "activation.vtu").point_data["activation_time_ms"]
    info = json.loads((ep / "ep.json").read_text())
    # sinus-like breakthrough: several endocardial sites, the whole biventricle activated; an
    # idealised (~4 cm) biventricle activates in tens of ms at 0.6 / 0.22 mm/ms
    assert len(info["stimuli"]) >= 10 and info["activation_ms"]["not_activated"] == 0
    assert np.nanmin(act) == pytest.approx(0.0) and 15.0 < np.nanmax(act) < 120.0
    assert (ep / "ecg.hea").is_file() and info["qrs_duration_ms"] > 0
    manifest = json.loads((fibre_case / "manifest.json").read_text())
    assert "ep" in manifest["stages"]
    # unchanged inputs and options: cached, the outputs untouched
    mtime = (ep / "activation.vtu").stat().st_mtime_ns
    assert main(["simulate", "ep", str(fibre_case)]) == 0
    assert (ep / "activation.vtu").stat().st_mtime_ns == mtime


def test_paced_activation_starts_at_the_site(fibre_case, tmp_path) -> None:  # noqa: ANN001
    pts = meshio.read(fibre_case / "fibers" / "mesh.vtu").points
    site = pts[np.argmax(pts[:, 0])]
    out = tmp_path / "paced"
    assert main(["simulate", "ep", str(fibre_case), "--pace", ",".join(f"{v:.3f}" for v in site),
                 "--out", str(out)]) == 0
    m = meshio.read(out / "activation.vtu")
    act = m.point_data["activation_time_ms"]
    d = np.linalg.norm(m.points - site, axis=1)
    # earliest at the site, later with distance (rank correlation strongly positive)
    assert act[np.argmin(d)] < 1.0
    from scipy.stats import spearmanr

    assert spearmanr(d, act).statistic > 0.8


def test_monodomain_vm_snapshots_as_vtu_series(tmp_path) -> None:
    from cardiotwin.meshing.analytic import niederer_slab

    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    write_mesh(niederer_slab(dx_mm=1.0, size_mm=(6.0, 2.0, 1.0)), mesh_dir / "mesh.vtu")
    out = tmp_path / "ep"
    assert main(["simulate", "ep", str(mesh_dir), "--model", "monodomain", "--pace", "0,0,0", "--t-end", "10",
                 "--dt", "0.05", "--snapshot-interval", "2", "--ionic", "ms", "--out", str(out)]) == 0
    import xml.etree.ElementTree as ET

    sets = ET.parse(out / "vm.pvd").getroot().iter("DataSet")
    frames = [(float(d.get("timestep")), meshio.read(out / d.get("file"))) for d in sets]
    assert [t for t, _ in frames] == pytest.approx([2.0, 4.0, 6.0, 8.0, 10.0])
    points = frames[0][1].points
    vm = np.stack([m.point_data["vm_mV"] for _, m in frames])
    assert vm.shape == (5, len(points))
    # frames agree with the activation map (first 0 mV upstroke crossing): depolarised (plateau)
    # behind the front, below 0 mV ahead of it, and part of the slab still at rest in early frames
    act = meshio.read(out / "activation.vtu").point_data["activation_time_ms"]
    for k, (t, _) in enumerate(frames):
        behind, ahead = act < t - 1.0, act > t + 0.1
        assert behind.any()
        assert np.all(vm[k, behind] > -40.0) and np.all(vm[k, ahead] < 0.0)
    assert np.sum(vm[0] < -80.0) > 0.5 * vm.shape[1]
    # the eikonal model has no Vm to write: a clear error, non-zero exit
    assert main(["simulate", "ep", str(mesh_dir), "--pace", "0,0,0", "--snapshot-interval", "2",
                 "--out", str(tmp_path / "bad")]) != 0
