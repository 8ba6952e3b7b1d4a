"""Topology and volume fidelity of the mesher's surface steps.

- A blood pool looping round a piece of wall (thick-slice contours overlapping twice between two
  slices: ACDC patient008's RV near its apex) is a handle of the mesh surface; the tunnel is filled
  with blood (``surface.fill_pool_tunnels``). Before: patient008 meshed with boundary genus 1 at every edge.
- A Gaussian blur moves the 0.5 level of an indicator by the mean-curvature motion of a diffusion
  for sigma^2 / 2: a concave endocardium grows into the cavity by about sigma^2 / R
  (``surface.blurred_without_curvature_shift`` reverses that part).
- Vertices placed on a curved surface span chords inside it (volume loss ~ edge^2 / (6 R) times the
  area); the remeshed surface is fitted to the fine one in the mean (``remesh._fit_to_surface``).
Before these, ACDC patient041's LV cavity (69 mL, a small MINF ventricle) came out 4.7 % short of its
labels at a 5 mm edge; the calibrated twin (issue #23) then missed its EDV target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number, marching_cubes

from cardiotwin.anatomy import Label
from cardiotwin.io.scans import read_labels
from cardiotwin.meshing.quality import mesh_quality
from cardiotwin.meshing.remesh import polydata, remesh_uniform
from cardiotwin.meshing.surface import BasePlane, blurred_without_curvature_shift, fill_pool_tunnels
from cardiotwin.meshing.volume import MeshConfig, mesh_labels
from cardiotwin.types import ImageGeometry, LabelMap

ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"
SAMPLE_CT = Path(__file__).resolve().parents[1] / "sample_scans" / "ct_sample_labels.nii.gz"


def _grid(n: int, spacing: float = 1.0) -> tuple[np.ndarray, ImageGeometry]:
    xyz = (np.indices((n, n, n)).transpose(1, 2, 3, 0) - (n - 1) / 2.0) * spacing
    return xyz, ImageGeometry(shape=(n, n, n), spacing_mm=(spacing,) * 3, origin_mm=(0.0, 0.0, 0.0))


def test_a_pool_looping_round_the_wall_is_filled_and_a_plain_one_kept():
    xyz, g = _grid(60)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[np.hypot(x + 12.0, y) < 14.0] = Label.LV_MYO
    lab[np.hypot(x + 12.0, y) < 9.0] = Label.LV_BLOOD
    # RV pool: a ring (torus, tube radius 3 mm) round a 2 mm bar of wall: a tunnel 4 mm across
    ring = (np.hypot(np.hypot(x - 12.0, z) - 5.0, y) < 3.0)
    lab[ring & (lab == 0)] = Label.RV_BLOOD
    lab[(np.hypot(x - 12.0, z) < 2.0) & (np.abs(y) < 2.0)] = Label.LV_MYO
    base = BasePlane(point_mm=tuple(g.index_to_world(np.array([0.0, 0.0, 50.0]))), normal=(0.0, 0.0, 1.0))
    labels = LabelMap(labels=lab, geometry=g, source="ring.nii.gz")
    assert euler_number(lab == Label.RV_BLOOD, connectivity=1) == 0  # one piece, one tunnel
    out = fill_pool_tunnels(labels, base, max_radius_mm=6.0)
    rv = out.labels == Label.RV_BLOOD
    assert euler_number(rv, connectivity=1) == 1
    assert rv.sum() - (lab == Label.RV_BLOOD).sum() < 0.5 * (lab == Label.RV_BLOOD).sum()  # the tunnel, not more
    assert np.array_equal(out.labels == Label.LV_BLOOD, lab == Label.LV_BLOOD)  # the other pool untouched
    # a pool without a tunnel (the LV) and a tunnel wider than the largest closing are left as they are
    assert fill_pool_tunnels(labels, base, max_radius_mm=1.0) is labels


def _cavity_ml(field: np.ndarray, spacing: float) -> float:
    v, f, _, _ = marching_cubes(field, 0.5, spacing=(spacing,) * 3)
    parts = polydata(v, f).clean().connectivity("all")
    vols = [abs(parts.extract_cells(np.flatnonzero(parts.cell_data["RegionId"] == k)).extract_surface(algorithm="dataset_surface").volume)
            for k in range(2)]
    return min(vols) / 1000.0


def test_the_blur_does_not_shrink_a_small_cavity():
    # A 12 mm spherical cavity in an 8 mm wall on 1.5 mm voxels, blurred as myocardium_surface does
    # (sigma 0.7 voxel): the plain blur loses about 3 % of the cavity, sigma^2 / R * 3 = 2.2 % to
    # first order; with the curvature motion reversed, under 1.5 % is left (higher orders, corners).
    spacing, radius = 1.5, 12.0
    xyz, _ = _grid(int(2 * (radius + 12) / spacing), spacing)
    r = np.linalg.norm(xyz + 0.3, axis=-1)
    wall = ((r >= radius) & (r <= radius + 8.0)).astype(np.float32)
    voxels = float((r < radius).sum()) * spacing**3 / 1000.0
    sigma = np.full(3, 0.7 * spacing)
    plain = _cavity_ml(ndimage.gaussian_filter(wall, sigma / spacing, mode="constant"), spacing)
    kept = _cavity_ml(blurred_without_curvature_shift(wall, sigma, np.full(3, spacing)), spacing)
    assert plain / voxels - 1.0 < -0.02
    assert abs(kept / voxels - 1.0) < 0.015


def test_the_remeshed_surface_keeps_the_volume_of_a_sphere():
    # A 15 mm sphere (a small LV cavity) remeshed at 5 mm: with its vertices on the sphere the
    # remeshed surface encloses 4.2 % less; fitted to it in the mean, within 0.5 % (0.05 % here).
    import pyvista as pv

    sphere = pv.Sphere(radius=15.0, theta_resolution=160, phi_resolution=160).triangulate().clean()
    coarse = remesh_uniform(sphere, edge_mm=5.0, source="sphere")
    assert coarse.volume / sphere.volume - 1.0 == pytest.approx(0.0, abs=0.005)


@pytest.mark.skipif(not (ACDC / "patient008").is_dir(), reason="ACDC data not present (../shared/data)")
def test_acdc_patient008_meshes_without_a_handle():
    labels = read_labels(ACDC / "patient008" / "ed_labels.nii.gz")
    mesh, base, closed, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0))
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    assert q["boundary_genus"] == 0  # it was 1: the RV pool looped round a piece of septum
    assert q["min_dihedral_deg"] >= 5.0 and abs(q["lv_cavity_error"]) < 0.05 and abs(q["volume_error_closed"]) < 0.05


@pytest.mark.skipif(not (ACDC / "patient041").is_dir(), reason="ACDC data not present (../shared/data)")
def test_acdc_patient041_small_lv_cavity_keeps_its_volume():
    # The personalised twin's setting (bench calibrate): 5 mm edge, base plane normal to the LV long axis.
    from cardiotwin.personalisation.measurements import short_axis_base_plane

    labels = read_labels(ACDC / "patient041" / "ed_labels.nii.gz")
    point, normal = short_axis_base_plane(labels)
    mesh, base, closed, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0, base_point_mm=point, base_normal=normal))
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    assert q["boundary_genus"] == 0 and q["min_dihedral_deg"] >= 5.0
    assert abs(q["lv_cavity_error"]) < 0.035  # -4.7 % before, -2.8 % now


def _cup(n: int = 90) -> tuple[LabelMap, BasePlane]:
    """An LV-like cup: ellipsoidal cavity (20 / 34 mm semi-axes) in an 8 mm wall on 1 mm voxels, cut
    by a plane 5 mm above its equator (on a voxel boundary, so the labels below it are exact)."""
    xyz, g = _grid(n)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2] - 10.0
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[(x / 28.0) ** 2 + (y / 28.0) ** 2 + (z / 42.0) ** 2 < 1.0] = Label.LV_MYO
    lab[(x / 20.0) ** 2 + (y / 20.0) ** 2 + (z / 34.0) ** 2 < 1.0] = Label.LV_BLOOD
    base = BasePlane(point_mm=tuple(g.index_to_world(np.array([(n - 1) / 2.0, (n - 1) / 2.0, (n - 1) / 2.0 + 15.0]))),
                     normal=(0.0, 0.0, 1.0))
    return LabelMap(labels=lab, geometry=g, source="cup.nii.gz"), base


def test_the_base_cut_stays_flat_and_the_cavity_keeps_its_volume_at_5_mm():
    # The mesh is the myocardium below the base plane: a flat cap meeting the walls at a sharp rim.
    # Remeshed at 5 mm, the clusters along the rim straddle the cap and the wall, and fitted in the
    # mean their vertices sat a fraction of an edge below the plane: the rim bevelled and the cavity
    # closed by the base lost a ring (here -1.4 %; the sample CT's RV -1.1 % from the fine surface to
    # the remeshed one, -0.4 % at 2.5 mm: the beat's RV EDV changed with the mesh). The cap's vertices
    # now lie on the plane and the cavity within 1 % of the labels below it.
    from cardiotwin.anatomy import FacetTag

    labels, base = _cup()
    cfg = MeshConfig(edge_mm=5.0, base_point_mm=base.point_mm, base_normal=base.normal)
    mesh, base, closed, _ = mesh_labels(labels, cfg=cfg)
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    cap = np.unique(mesh.facets[mesh.facet_tags == FacetTag.BASE])
    assert np.abs(base.signed_distance_mm(mesh.points[cap])).max() < 1e-6
    assert abs(q["lv_cavity_error"]) < 0.01
    assert abs(q["volume_error"]) < 0.02


@pytest.mark.skipif(not SAMPLE_CT.is_file(), reason="sample_scans/ct_sample_labels.nii.gz not present")
def test_the_sample_ct_cavities_at_5_mm_match_the_labels():
    # The beat's mesh study (docs/mechanics.md): the unloaded RV cavity of the 5 mm mesh was 1.4 %
    # smaller than that of the 2.5 mm re-mesh (LV 1.1 %): against the labels below the base plane,
    # -3.0 % and -1.5 % (LV -2.0 / -0.8 %), from the bevelled base rim and from the marching cubes'
    # grid (a third of the edge, 1.67 mm: its chords and the smoothing shrink the cavities in
    # proportion to the step; the grid is now at most 1 mm). Now LV +0.1 %, RV -0.4 %: within 1 %.
    from cardiotwin.anatomy import FacetTag
    from cardiotwin.meshing.surface import labelled_volume_below_plane_ml
    from cardiotwin.meshing.tets import enclosed_volume_mm3

    labels = read_labels(SAMPLE_CT)
    mesh, base, closed, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0))
    for tag, label in ((FacetTag.LV_ENDO, Label.LV_BLOOD), (FacetTag.RV_ENDO, Label.RV_BLOOD)):
        cavity = enclosed_volume_mm3(mesh.points, mesh.facets[mesh.facet_tags == tag]) / 1000.0
        assert cavity / labelled_volume_below_plane_ml(closed, base, (int(label),)) - 1.0 == pytest.approx(0.0, abs=0.01)
