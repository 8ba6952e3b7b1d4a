"""Analytic verification geometries and their dolfinx conversion.

Reference volumes: truncated ellipsoid, V = pi r_s^2 r_l (2/3 + t - t^3/3) with t = z_base / r_l
(integral of the circular cross-sections pi r_s^2 (1 - z^2 / r_l^2) from -r_l to z_base);
geometry of Land et al. 2015, Proc R Soc A 471:20150641 (endo 7/17 mm, epi 10/20 mm, base z = 5 mm);
slab of Niederer et al. 2011, Phil Trans R Soc A 369:4331 ([0,20]x[0,7]x[0,3] mm).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.meshing.analytic import idealised_biventricle, land_ellipsoid, niederer_slab
from cardiotwin.meshing.tets import boundary_facets, dihedral_angles_deg, enclosed_volume_mm3, signed_volumes


def truncated_ellipsoid_volume(r_s: float, r_l: float, z_base: float) -> float:
    t = z_base / r_l
    return float(np.pi * r_s**2 * r_l * (2.0 / 3.0 + t - t**3 / 3.0))


LAND_CAVITY_MM3 = truncated_ellipsoid_volume(7.0, 17.0, 5.0)
LAND_WALL_MM3 = truncated_ellipsoid_volume(10.0, 20.0, 5.0) - LAND_CAVITY_MM3


@pytest.fixture(scope="module")
def land():
    return land_ellipsoid(char_length_mm=2.0)


@pytest.fixture(scope="module")
def biv():
    return idealised_biventricle(char_length_mm=2.5)


def test_slab_exact_volume_and_fibres():
    m = niederer_slab(dx_mm=0.5)
    vol = signed_volumes(m.points, m.cells)
    assert vol.min() > 0
    assert vol.sum() == pytest.approx(20.0 * 7.0 * 3.0, rel=1e-12)
    assert m.points.min(axis=0) == pytest.approx([0, 0, 0]) and m.points.max(axis=0) == pytest.approx([20, 7, 3])
    # boundary area of the cuboid: 2 (20*7 + 20*3 + 7*3) = 442 mm^2
    p = m.points[m.facets]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1).sum()
    assert area == pytest.approx(442.0, rel=1e-12)
    assert np.allclose(m.point_data["f0"], [1, 0, 0]) and np.allclose(m.point_data["n0"], [0, 0, 1])
    assert np.all(m.cell_tags == CellTag.LV_MYO)


def test_land_ellipsoid_volumes_and_tags(land):
    vol = signed_volumes(land.points, land.cells)
    assert vol.min() > 0, "inverted tetrahedra"
    assert vol.sum() == pytest.approx(LAND_WALL_MM3, rel=0.02)
    endo = land.facets[land.facet_tags == FacetTag.LV_ENDO]
    assert enclosed_volume_mm3(land.points, endo) == pytest.approx(LAND_CAVITY_MM3, rel=0.03)
    base = land.facets[land.facet_tags == FacetTag.BASE]
    assert np.allclose(land.points[base][:, :, 2], 5.0)
    assert set(np.unique(land.facet_tags)) == {FacetTag.LV_ENDO, FacetTag.EPI, FacetTag.BASE}
    # apex positions (Land 2015): endo (0, 0, -17), epi (0, 0, -20)
    assert land.points[:, 2].min() == pytest.approx(-20.0, abs=0.05)
    assert land.points[np.unique(endo)][:, 2].min() == pytest.approx(-17.0, abs=0.05)
    assert dihedral_angles_deg(land.points, land.cells).min() > 5.0
    # facets are exactly the boundary of the cells
    assert len(boundary_facets(land.cells)[0]) == len(land.facets)


def test_idealised_biventricle_tags(biv):
    assert signed_volumes(biv.points, biv.cells).min() > 0
    assert set(np.unique(biv.facet_tags)) == {FacetTag.LV_ENDO, FacetTag.RV_ENDO, FacetTag.EPI, FacetTag.BASE}
    assert set(np.unique(biv.cell_tags)) == {CellTag.LV_MYO, CellTag.RV_MYO}
    lv_vol = signed_volumes(biv.points, biv.cells[biv.cell_tags == CellTag.LV_MYO]).sum()
    assert lv_vol == pytest.approx(LAND_WALL_MM3, rel=0.03)
    # RV cavity lies on the -x side (patient right in LPS) of the LV.
    rv = biv.facets[biv.facet_tags == FacetTag.RV_ENDO]
    assert biv.points[np.unique(rv)][:, 0].mean() < -5.0


def test_to_dolfinx_round_trip(land):
    import dolfinx.fem as fem
    import ufl

    from cardiotwin.meshing.fem import function_to_point_field, point_field_to_function, to_dolfinx

    heart = to_dolfinx(land, MPI.COMM_SELF)
    ds = ufl.Measure("ds", domain=heart.mesh, subdomain_data=heart.facet_tags)
    dx = ufl.Measure("dx", domain=heart.mesh, subdomain_data=heart.cell_tags)
    p = land.points[land.facets]
    areas = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    for tag in (FacetTag.LV_ENDO, FacetTag.EPI, FacetTag.BASE):
        a = fem.assemble_scalar(fem.form(1.0 * ds(int(tag))))
        assert a == pytest.approx(areas[land.facet_tags == tag].sum(), rel=1e-10)
    v = fem.assemble_scalar(fem.form(1.0 * dx(int(CellTag.LV_MYO))))
    assert v == pytest.approx(signed_volumes(land.points, land.cells).sum(), rel=1e-10)
    V = fem.functionspace(heart.mesh, ("Lagrange", 1, (3,)))
    u = point_field_to_function(heart, land.points, V)
    x = ufl.SpatialCoordinate(heart.mesh)
    assert fem.assemble_scalar(fem.form(ufl.inner(u - x, u - x) * ufl.dx)) < 1e-20
    assert np.array_equal(function_to_point_field(heart, u), land.points)


_MPI_SCRIPT = """
from mpi4py import MPI
import numpy as np, ufl
import dolfinx.fem as fem
from cardiotwin.meshing.analytic import niederer_slab
from cardiotwin.meshing.fem import to_dolfinx, point_field_to_function, function_to_point_field
comm = MPI.COMM_WORLD
m = niederer_slab(dx_mm=1.0)
h = to_dolfinx(m if comm.rank == 0 else None, comm)
assert comm.allreduce(h.mesh.topology.index_map(3).size_local, op=MPI.SUM) == m.n_cells
vol = comm.allreduce(fem.assemble_scalar(fem.form(1.0 * ufl.dx(domain=h.mesh))), op=MPI.SUM)
ds = ufl.Measure("ds", domain=h.mesh, subdomain_data=h.facet_tags)
area = comm.allreduce(fem.assemble_scalar(fem.form(1.0 * ds(3))), op=MPI.SUM)
V = fem.functionspace(h.mesh, ("Lagrange", 1, (3,)))
u = point_field_to_function(h, m.points, V)
x = ufl.SpatialCoordinate(h.mesh)
err = comm.allreduce(fem.assemble_scalar(fem.form(ufl.inner(u - x, u - x) * ufl.dx)), op=MPI.SUM)
back = function_to_point_field(h, u)
if comm.rank == 0:
    assert abs(vol - 420.0) < 1e-9 and abs(area - 442.0) < 1e-9 and err < 1e-20, (vol, area, err)
    assert np.array_equal(back, m.points)
    print("MPI-OK", comm.size)
"""


def test_to_dolfinx_under_mpirun(tmp_path: Path):
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.exists():
        pytest.skip("mpirun not in the venv")
    script = tmp_path / "mpi_check.py"
    script.write_text(_MPI_SCRIPT)
    out = subprocess.run([str(mpirun), "-n", "2", sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MPI-OK 2" in out.stdout
