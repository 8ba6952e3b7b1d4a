"""LDRB fibres, ventricular coordinates and AHA-17 on the Land 2015 ellipsoid (Proc R Soc A
471:20150641) and the idealised biventricle.

Prescribed helix law (this project's configuration of Bayer et al., Ann Biomed Eng 2012;40:2243):
alpha(t) = alpha_endo (1 - t) + alpha_epi t with t the transmural coordinate, +60 / -60 degrees.
AHA segments: Cerqueira et al., Circulation 2002;105:539.
"""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.anatomy import FacetTag
from cardiotwin.fibers.coordinates import compute_fibers
from cardiotwin.meshing.analytic import LAND_BASE_Z_MM, idealised_biventricle, land_ellipsoid


@pytest.fixture(scope="module")
def land_fibres():
    mesh, _ = compute_fibers(land_ellipsoid(char_length_mm=1.0))
    return mesh


def _helix_deg(points: np.ndarray, f0: np.ndarray, t: np.ndarray) -> np.ndarray:
    # Independent local frame: normal of the confocal-like ellipsoid through the point
    # (semi-axes interpolated endo -> epi), circumferential = z x r, longitudinal = n x circ.
    rs, rl = 7.0 + 3.0 * t, 17.0 + 3.0 * t
    n = np.column_stack([points[:, 0] / rs**2, points[:, 1] / rs**2, points[:, 2] / rl**2])
    n /= np.linalg.norm(n, axis=1)[:, None]
    ec = np.column_stack([-points[:, 1], points[:, 0], np.zeros(len(points))])
    ec /= np.linalg.norm(ec, axis=1)[:, None]
    el = np.cross(n, ec)
    h = np.degrees(np.arctan2(np.einsum("ij,ij->i", f0, el), np.einsum("ij,ij->i", f0, ec)))
    return (h + 90.0) % 180.0 - 90.0  # fibres are unoriented


def test_helix_angle_follows_linear_law(land_fibres):
    p, pd = land_fibres.points, land_fibres.point_data
    t = pd["uvc_transmural"]
    h = _helix_deg(p, pd["f0"], t)
    # away from the boundaries: transmural 0.1-0.9, below the base, above the apical cap
    sel = (t > 0.1) & (t < 0.9) & (p[:, 2] < 0.0) & (p[:, 2] > -12.0) & (np.linalg.norm(p[:, :2], axis=1) > 3.0)
    assert sel.sum() > 100
    expected = 60.0 * (1 - t) - 60.0 * t
    err = (h - expected + 90.0) % 180.0 - 90.0
    assert np.abs(err[sel]).max() < 5.0
    endo = np.unique(land_fibres.facets[land_fibres.facet_tags == FacetTag.LV_ENDO])
    mid = endo[(p[endo, 2] < 0) & (p[endo, 2] > -12)]
    assert np.median(h[mid]) == pytest.approx(60.0, abs=1.0)


def test_frames_orthonormal(land_fibres):
    pd = land_fibres.point_data
    frames = np.stack([pd["f0"], pd["s0"], pd["n0"]], axis=2)
    gram = np.einsum("nij,nik->njk", frames, frames)
    assert np.abs(gram - np.eye(3)).max() < 1e-10
    assert np.allclose(np.linalg.det(frames), 1.0)


def test_coordinates_ranges_and_ends(land_fibres):
    m, pd = land_fibres, land_fibres.point_data
    for key in ("uvc_transmural", "uvc_apicobasal", "uvc_rotational"):
        assert pd[key].min() >= 0.0 and pd[key].max() <= 1.0
    endo = np.unique(m.facets[m.facet_tags == FacetTag.LV_ENDO])
    epi = np.unique(m.facets[m.facet_tags == FacetTag.EPI])
    base = np.unique(m.facets[m.facet_tags == FacetTag.BASE])
    assert np.allclose(pd["uvc_transmural"][endo], 0.0) and np.allclose(pd["uvc_transmural"][epi], 1.0)
    assert np.allclose(pd["uvc_apicobasal"][base], 1.0)
    apex = np.argmin(m.points[:, 2])
    assert m.points[apex, 2] == pytest.approx(-20.0, abs=0.05) and pd["uvc_apicobasal"][apex] == pytest.approx(0.0)
    # apico-basal coordinate increases towards the base along the axis
    assert np.corrcoef(pd["uvc_apicobasal"], m.points[:, 2])[0, 1] > 0.9
    assert np.allclose(m.points[base, 2], LAND_BASE_Z_MM)


def test_all_aha_segments_with_plausible_sizes(land_fibres):
    aha = land_fibres.point_data["aha"]
    counts = np.bincount(aha, minlength=18)[1:]
    assert np.all(counts > 0), counts
    frac = counts / counts.sum()
    # equal-angle sectors of equal-height thirds: each of 16 ring segments holds a few percent
    assert frac[:16].min() > 0.02 and frac.max() < 0.15, frac


def test_biventricle_fibres_and_ventricle_coordinate():
    mesh, timings = compute_fibers(idealised_biventricle(char_length_mm=2.0))
    pd = mesh.point_data
    assert np.all(np.isfinite(pd["f0"]))
    rv_endo = np.unique(mesh.facets[mesh.facet_tags == FacetTag.RV_ENDO])
    assert np.allclose(pd["uvc_transmural"][rv_endo], 0.0)
    assert pd["uvc_ventricle"].max() == 1.0 and pd["uvc_ventricle"].min() == 0.0
    assert set(np.unique(pd["aha"][pd["uvc_ventricle"] == 0])) == set(range(1, 18))
    # septum (rotational ~0) faces the RV, which lies at -x
    sept = (pd["aha"] == 9) | (pd["aha"] == 3)
    assert mesh.points[sept, 0].mean() < 0.0
