"""Land et al. 2015 mechanics benchmark (Proc R Soc A 471:20150641; shared/BENCHMARKS.md).

Published values (11 codes agreed to ~0.5% at high resolution): Problem 1 beam point z about
4.17 mm; Problem 2 apex z endo about -26.5, epi about -28.2 mm; Problem 3 apex z endo -12.0 to
-12.5, epi -15.2 to -15.5 mm. Coarse meshes run by default and must move towards these values as
the mesh is refined; the finer ones are `slow`.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI  # noqa: I001 - before dolfinx

import dolfinx
import ufl

from cardiotwin.anatomy import FacetTag
from cardiotwin.cli import main
from cardiotwin.mechanics.land import REFERENCE, land_ellipsoid_mesh, solve_land, solve_land_default_element
from cardiotwin.meshing.analytic import land_ellipsoid_prolate
from cardiotwin.meshing.tets import signed_volumes

P1_REF = 4.17
P2_REF = {"endo_apex_z_mm": -26.5, "epi_apex_z_mm": -28.2}


def test_problem1_beam_converges():
    z = [solve_land(1, resolution=n).outputs_mm["beam_point_z_mm"] for n in (1, 2)]
    assert abs(z[1] - P1_REF) < abs(z[0] - P1_REF)  # refinement approaches the reference
    assert abs(z[1] - P1_REF) < 0.05  # 1.2% at 2 x 2 x 20 Taylor-Hood cells


@pytest.mark.slow
def test_problem1_beam_fine():
    z = solve_land(1, resolution=4).outputs_mm["beam_point_z_mm"]
    assert abs(z - P1_REF) < 0.02


@pytest.mark.parametrize("n", [2, 4])
def test_problem1_beam_with_the_default_twin_element(n):
    # the twins' element (nodal-pressure P1/P1 with its pressure stabilisation; kappa 1e4 kPa = 5000
    # shear moduli, nearly incompressible like the benchmark) lands in the published range at 2 and 4
    # elements across (measured 4.159 / 4.222 mm; 4.200 at 6). The stabilisation sets it: sized by the
    # circumsphere diameter with alpha 0.1 the beam came out 4.53 / 4.44 mm, without it 2.60 / 3.73 (locking)
    z = solve_land(1, resolution=n, formulation="nodal_pressure", bulk_modulus=1e4).outputs_mm["beam_point_z_mm"]
    lo, hi = REFERENCE[1]["beam_point_z_mm"]
    assert lo <= z <= hi


def _in_range(problem: int, outputs: dict[str, float]) -> dict[str, bool]:
    return {key: lo <= outputs[key] <= hi for key, (lo, hi) in REFERENCE[problem].items()}


def test_problem2_default_element_is_stiff_on_two_cells_and_approaches_the_range():
    # Land et al. 2015 Problem 2 (published endo -26.9 .. -26.1, epi -28.6 .. -27.8 mm): with about two
    # linear cells across the 3 mm wall the twins' element is too stiff (measured -25.74 / -27.00 at
    # 2.5 mm, -25.97 / -27.31 at 2.0 mm: 1.4 / 2.9 % short at 2.5 mm) and moves down towards the range
    coarse, fine = (solve_land_default_element(2, resolution=h).outputs_mm for h in (2.5, 2.0))
    for key, (lo, hi) in REFERENCE[2].items():
        assert hi < coarse[key] and fine[key] < coarse[key], key  # short of the range, moving into it
        assert coarse[key] - hi < 0.035 * abs(hi), key  # stiff by less than 3.5 %


@pytest.mark.slow
def test_problem2_default_element_inside_the_published_range_from_1p5_mm():
    # measured -26.52 / -27.91 at 1.5 mm (the resolution `verify land` states), -26.86 / -28.32 at
    # 1.0 mm; Taylor-Hood P2/P1 on the 1.5 mm mesh: -26.71 / -28.42 (docs/mechanics.md)
    outs = [solve_land_default_element(2, resolution=h).outputs_mm for h in (1.5, 1.0)]
    for out in outs:
        assert all(_in_range(2, out).values()), out
    assert outs[1]["epi_apex_z_mm"] < outs[0]["epi_apex_z_mm"]  # still moving towards the P2/P1 value


@pytest.mark.slow
def test_problem3_default_element_inside_the_published_range():
    # Land et al. 2015 Problem 3 (endo -12.5 .. -12.0, epi -15.5 .. -15.2 mm) with the default element
    # on its stated mesh, prolate 8x32x48 (55k dofs, about 5 min): measured -12.124 / -15.444. With the
    # stabilisation sized by mu + T_a, prolate 4x16x24 / 6x24x32 / 8x32x48 gave endo -11.80 / -11.97 /
    # -12.12, epi -15.36 / -15.42 / -15.44, towards the Taylor-Hood P2/P1 -12.23 / -15.49 (4x16x24)
    result = solve_land_default_element(3)
    assert result.mesh == "prolate 8x32x48" and result.stabilisation_active_tension
    assert all(result.in_range().values()), result.outputs_mm


def test_problem3_stabilisation_sized_by_the_active_tension_keeps_the_epicardial_apex_in_range():
    # default element on prolate 3x12x16: the stabilisation sized by the 2 kPa passive shear modulus
    # alone lets the wall compress under the 60 kPa active stress: epi apex -15.98 mm, beyond Land et
    # al. 2015's -15.5 .. -15.2; sized by mu + T_a (the default): -15.37 (measured; docs/mechanics.md)
    scaled, plain = (solve_land_default_element(3, prolate_grid=(3, 12, 16), stabilisation_active_tension=flag)
                     for flag in (True, False))
    lo, hi = REFERENCE[3]["epi_apex_z_mm"]
    assert plain.outputs_mm["epi_apex_z_mm"] < lo <= scaled.outputs_mm["epi_apex_z_mm"] <= hi
    assert not plain.to_dict()["stabilisation_active_tension"] and "passive modulus only" in plain.element()
    assert scaled.element() == "nodal-pressure P1/P1 (kappa 10000 kPa)"


def _cap_volume_mm3(r_s: float, r_l: float, base_z: float = 5.0) -> float:
    """Volume of x^2/r_s^2 + y^2/r_s^2 + z^2/r_l^2 <= 1 below z = base_z: pi r_s^2 int (1 - z^2/r_l^2) dz."""
    return math.pi * r_s**2 * ((base_z + r_l) - (base_z**3 + r_l**3) / (3 * r_l**2))


def _volumes(mesh, ft) -> tuple[float, float]:
    """(wall volume, cavity volume closed by the plane z = 5) in mm^3 of a Land mesh."""
    dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": 6})
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=ft, metadata={"quadrature_degree": 6})
    x, n = ufl.SpatialCoordinate(mesh), ufl.FacetNormal(mesh)
    cavity = -1.0 / 3.0 * ufl.inner(x - ufl.as_vector((0.0, 0.0, 5.0)), n) * ds(int(FacetTag.LV_ENDO))
    return tuple(float(mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(f)), op=MPI.SUM))
                 for f in (1.0 * dx, cavity))


def test_curved_geometry_recovers_the_ellipsoid_volumes():
    # Land 2015 geometry: endo r_s 7, r_l 17; epi r_s 10, r_l 20; base z = 5 (mm)
    wall_exact, cavity_exact = _cap_volume_mm3(10, 20) - _cap_volume_mm3(7, 17), _cap_volume_mm3(7, 17)
    errors = {}
    for degree in (1, 2):
        mesh, ft = land_ellipsoid_mesh(char_length_mm=4.0, geometry_degree=degree)
        assert {int(t) for t in ft.values} == {int(FacetTag.BASE), int(FacetTag.LV_ENDO), int(FacetTag.EPI)}
        wall, cavity = _volumes(mesh, ft)
        errors[degree] = (abs(wall / wall_exact - 1), abs(cavity / cavity_exact - 1))
    # straight facets cut the convex surfaces: 1 % of the wall, 5 % of the cavity at 4 mm (measured)
    assert errors[1][1] > 0.03
    assert errors[2][0] < 5e-4 and errors[2][1] < 1e-3  # quadratic faces: O(h^3) instead of O(h^2)


def test_prolate_grid_mesh():
    mesh = land_ellipsoid_prolate(n_wall=2, n_long=6, n_circ=8)
    assert signed_volumes(mesh.points, mesh.cells).min() > 0  # the collapsed apex hexahedra leave no flat tets
    tags = np.bincount(mesh.facet_tags)
    # 2 triangles per surface quad except the apex fan (one per sector); base: 2 per wall quad
    assert tags[int(FacetTag.LV_ENDO)] == tags[int(FacetTag.EPI)] == 2 * 6 * 8 - 8
    assert tags[int(FacetTag.BASE)] == 2 * 2 * 8
    dmesh, ft = land_ellipsoid_mesh(char_length_mm=1.0, geometry_degree=2, prolate_grid=(2, 6, 8))
    wall, cavity = _volumes(dmesh, ft)
    assert abs(wall / (_cap_volume_mm3(10, 20) - _cap_volume_mm3(7, 17)) - 1) < 0.01
    assert abs(cavity / _cap_volume_mm3(7, 17) - 1) < 0.01


def test_problem2_inflation_curved():
    # curved (quadratic) surfaces: within 0.1 mm (0.4 %) of the published apex positions already at
    # 4 mm; straight tetrahedra were 0.45 / 0.34 mm short there and 0.16 / 0.14 mm at 2.5 mm
    for h in (4.0, 2.5):
        out = solve_land(2, resolution=h).outputs_mm
        for key, ref in P2_REF.items():
            assert abs(out[key] - ref) < 0.1, (h, key)


@pytest.mark.slow
def test_problem2_inflation_fine():
    # measured -26.71 / -28.42 at 1.5 mm (curved): 0.8 % past the quoted "about" values, the
    # direction of more transmural resolution (see the land.py docstring); 1 % tolerance
    out = solve_land(2, resolution=1.5).outputs_mm
    for key, ref in P2_REF.items():
        assert abs(out[key] - ref) < 0.01 * abs(ref), key


def test_problem3_contraction_converges_into_published_range():
    # the apex of Problem 3 needs elements across the 3 mm wall: structured prolate grids
    coarse, fine = (solve_land(3, prolate_grid=g).outputs_mm for g in ((2, 8, 12), (3, 12, 16)))
    assert fine["endo_apex_z_mm"] < coarse["endo_apex_z_mm"] < -11.8  # moves down towards -12.0 .. -12.5
    for key, (lo, hi) in REFERENCE[3].items():  # published consensus (Land et al. 2015, fig. 8)
        assert lo <= fine[key] <= hi, key


@pytest.mark.slow
def test_problem3_contraction_fine():
    out = solve_land(3, prolate_grid=(4, 16, 24)).outputs_mm
    for key, (lo, hi) in REFERENCE[3].items():
        assert lo <= out[key] <= hi, key
    assert out["endo_apex_z_mm"] < -12.15  # finer than 3 x 12 x 16 (-12.04): still moving down


def test_verify_land_cli_writes_json(tmp_path):
    out = tmp_path / "p1.json"
    assert main(["verify", "land", "--problem", "1", "--resolution", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["problem"] == 1 and 3.9 < data["beam_point_z_mm"] < 4.3
    assert data["element"] == "Taylor-Hood P2/P1 (incompressible)"
    # next to it the twins' default element at its stated resolution (2 elements across), in range
    default = data["default_element"]
    assert default["element"].startswith("nodal-pressure P1/P1") and default["mesh"] == "beam 20x2x2"
    assert default["in_range"] == {"beam_point_z_mm": True}
    assert 4.10 <= default["beam_point_z_mm"] <= 4.25


def test_verify_land_cli_grid_and_geometry_degree(tmp_path):
    out = tmp_path / "p3.json"
    assert main(["verify", "land", "--problem", "3", "--grid", "1x8x12", "--element", "taylor-hood",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["mesh"] == "prolate 1x8x12" and data["geometry_degree"] == 2 and "default_element" not in data
    assert -12.5 < data["endo_apex_z_mm"] < -11.0 and -16.0 < data["epi_apex_z_mm"] < -15.0
    assert data["reference_range_mm"]["endo_apex_z_mm"] == [-12.5, -12.0]
    assert main(["verify", "land", "--problem", "1", "--grid", "2x8x12"]) != 0
    assert main(["verify", "land", "--problem", "3", "--grid", "2x8"]) != 0
    assert main(["verify", "land", "--problem", "3", "--element", "default", "--default-resolution", "-1"]) != 0
    assert main(["verify", "land", "--problem", "1", "--element", "default", "--default-grid", "2x8x12"]) != 0


def test_verify_land_cli_default_element_only(tmp_path):
    out = tmp_path / "p3.json"
    assert main(["verify", "land", "--problem", "3", "--element", "default", "--default-resolution", "2.5",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "endo_apex_z_mm" not in data  # no Taylor-Hood run
    default = data["default_element"]
    assert default["mesh"] == "gmsh h=2.5" and default["bulk_modulus_kpa"] == 1e4
    # at 2.5 mm (about 2 cells across the 3 mm wall) the endo apex is short of the range (-11.56 mm
    # measured, published -12.5 .. -12.0; docs/mechanics.md); the flag says so
    assert default["in_range"]["endo_apex_z_mm"] is False and -12.0 < default["endo_apex_z_mm"] < -11.0
    assert default["stabilisation_active_tension"] is True


def test_verify_land_cli_passive_stabilisation_flag(tmp_path):
    # --no-active-tension-stabilisation reaches the element; on the beam (no active tension) it
    # changes nothing, as T_a = 0 there
    outs = {}
    for flag in ("--active-tension-stabilisation", "--no-active-tension-stabilisation"):
        out = tmp_path / f"{flag}.json"
        assert main(["verify", "land", "--problem", "1", "--element", "default", flag, "--json", str(out)]) == 0
        outs[flag] = json.loads(out.read_text())["default_element"]
    assert outs["--active-tension-stabilisation"]["stabilisation_active_tension"] is True
    assert outs["--no-active-tension-stabilisation"]["stabilisation_active_tension"] is False
    assert outs["--no-active-tension-stabilisation"]["beam_point_z_mm"] == pytest.approx(
        outs["--active-tension-stabilisation"]["beam_point_z_mm"], abs=1e-9)


def test_mpirun_two_ranks_matches_serial(tmp_path):
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.exists() and shutil.which("mpirun") is None:
        pytest.skip("mpirun not available")
    cmd = [str(mpirun if mpirun.exists() else shutil.which("mpirun")), "-n", "2", sys.executable, "-m",
           "cardiotwin", "-q", "verify", "land", "--problem", "2", "--resolution", "4", "--json",
           str(tmp_path / "par.json")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    par = json.loads((tmp_path / "par.json").read_text())
    ser = solve_land(2, resolution=4.0).outputs_mm
    assert par["mpi_ranks"] == 2
    for key, value in ser.items():
        assert abs(par[key] - value) < 1e-6, key  # same mesh, exact (LU) linear solves, Newton rtol 1e-9
