"""End to end (slow): the electromechanics demo beat reviewed in the browser.

Runs `cardiotwin simulate em --demo ellipsoid` (the real 3D-0D beat on the Land ellipsoid with a
point-source activation, a few minutes on 2 cores), puts its inputs and outputs in a case
(``ep/activation.vtu`` = the demo's mesh and activation, ``em/`` = its outputs), and checks that
the page shows the PV loop and animates the deformation with the time slider.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_viewer_browser import browser, changed_fraction, open_page, shot  # noqa: F401 (browser is a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def em_case(tmp_path_factory) -> Path:
    pytest.importorskip("h5py")
    from cardiotwin.cases import Case
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.mechanics.demo import EPI_RL
    from cardiotwin.meshing.analytic import land_ellipsoid

    tmp = tmp_path_factory.mktemp("em")
    subprocess.run([sys.executable, "-m", "cardiotwin", "-q", "simulate", "em", "--demo", "ellipsoid",
                    "--out", str(tmp / "em_out")], check=True, timeout=1500)
    root = tmp / "p001"
    Case.create(root)
    mesh = land_ellipsoid(char_length_mm=4.0)  # the demo's mesh (deterministic gmsh)
    act = np.linalg.norm(mesh.points - np.array([0.0, 0.0, -EPI_RL]), axis=1) / 0.6  # the demo's activation
    (root / "ep").mkdir()
    write_mesh(mesh.with_fields(point_data={"activation_time_ms": act}), root / "ep" / "activation.vtu")
    shutil.copytree(tmp / "em_out", root / "em")
    return root


def test_em_beat_scene_has_deformation_and_pv(em_case: Path) -> None:
    from cardiotwin.viewer.scene import build_scene, decode_array

    scene = build_scene(em_case)
    assert {"deformation", "pv", "configurations"} <= set(scene["present"])
    disp = decode_array(scene["deformation"]["displacement_mm"])
    assert disp.shape[1] == decode_array(scene["mesh"]["vertices"]).shape[0]
    assert 0.5 < scene["deformation"]["max_mm"] < 50.0  # the ventricle moves, by millimetres


def test_time_slider_animates_the_deformation(browser, em_case: Path) -> None:
    from cardiotwin.viewer.app import start_background

    with start_background(em_case) as srv:
        page = open_page(browser, srv.url)
        assert page.locator("#panel-pv polyline").count() == 1
        page.select_option("#field-select", "none")  # grey heart: only the shape can change
        page.locator("#time-slider").fill("0")
        early = shot(page, "#pane-0 canvas")
        page.locator("#time-slider").fill("450")
        late = shot(page, "#pane-0 canvas")
        assert changed_fraction(early, late) > 0.01
        assert page.locator("#panel-pv .pv-now").get_attribute("visibility") == "visible"
        page.close()
