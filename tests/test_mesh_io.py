"""HeartMesh file formats: VTU round trip with tags and fields, openCARP .pts (um) / .elem / .lon,
XDMF read back by dolfinx with the same tagged areas. Geometry: Land et al. 2015 ellipsoid."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from cardiotwin.anatomy import FacetTag
from cardiotwin.io.meshes import read_mesh, write_mesh, write_opencarp
from cardiotwin.meshing.fem import write_xdmf
from cardiotwin.meshing.analytic import land_ellipsoid, niederer_slab


@pytest.fixture(scope="module")
def land():
    m = land_ellipsoid(char_length_mm=3.0)
    return m.with_fields(point_data={"uvc_transmural": np.linspace(0, 1, m.n_points)},
                         cell_data={"f0": np.tile([1.0, 0.0, 0.0], (m.n_cells, 1))})


def test_vtu_round_trip(land, tmp_path):
    r = read_mesh(write_mesh(land, tmp_path / "m.vtu"))
    assert np.array_equal(r.cells, land.cells) and np.array_equal(r.facets, land.facets)
    assert np.array_equal(r.cell_tags, land.cell_tags) and np.array_equal(r.facet_tags, land.facet_tags)
    assert np.allclose(r.points, land.points)
    assert np.allclose(r.point_data["uvc_transmural"], land.point_data["uvc_transmural"])
    assert np.allclose(r.cell_data["f0"], land.cell_data["f0"])


def test_opencarp_files(tmp_path):
    m = niederer_slab(dx_mm=1.0, size_mm=(2.0, 1.0, 1.0))
    files = write_opencarp(m, tmp_path / "slab")
    pts = np.loadtxt(files[0], skiprows=1)
    assert int(files[0].read_text().split()[0]) == m.n_points
    assert np.allclose(pts, m.points * 1000.0)  # openCARP uses micrometres
    first = files[1].read_text().splitlines()[1].split()
    assert first[0] == "Tt" and len(first) == 6
    lon = np.loadtxt(files[2], skiprows=1)
    assert lon.shape == (m.n_cells, 6) and np.allclose(lon[:, :3], [1, 0, 0]) and np.allclose(lon[:, 3:], [0, 1, 0])


def test_xdmf_readable_by_dolfinx(land, tmp_path):
    import dolfinx.fem as fem
    import dolfinx.io
    import ufl

    path = write_xdmf(land, tmp_path / "m.xdmf")
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(path), "r") as fh:
        mesh = fh.read_mesh(name="heart")
        mesh.topology.create_connectivity(2, 3)
        ft = fh.read_meshtags(mesh, name="facet_tags")
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=ft)
    p = land.points[land.facets]
    areas = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    a = fem.assemble_scalar(fem.form(1.0 * ds(int(FacetTag.LV_ENDO))))
    assert a == pytest.approx(areas[land.facet_tags == FacetTag.LV_ENDO].sum(), rel=1e-10)
