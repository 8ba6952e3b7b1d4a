"""QC of label maps: volumes, wall thickness, Dice / HD95 / ASSD against analytic geometry, overlays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardiotwin.errors import StageError
from cardiotwin.segmentation.qc import (compare, lv_wall_thickness_mm, myocardium_confusion, quality_report, raise_on_errors,
                                        signed_boundary_offset_mm, write_overlays)
from cardiotwin.types import ImageGeometry, LabelMap

SP = 0.5  # mm


def _grid(n: int = 120) -> tuple[ImageGeometry, np.ndarray]:
    geom = ImageGeometry(shape=(n, n, n), spacing_mm=(SP, SP, SP), origin_mm=(0.0, 0.0, 0.0))
    ax = (np.arange(n) - (n - 1) / 2) * SP
    xyz = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1)
    return geom, xyz


def _lv_shell(r_in: float, r_out: float) -> LabelMap:
    geom, xyz = _grid()
    r = np.linalg.norm(xyz, axis=-1)
    lab = np.zeros(geom.shape, dtype=np.uint8)
    lab[r <= r_out] = 2
    lab[r <= r_in] = 1
    return LabelMap(labels=lab, geometry=geom)


def test_volumes_and_mass_of_a_spherical_lv():
    lm = _lv_shell(20.0, 28.0)
    rep = quality_report(lm)
    v_blood = 4 / 3 * math.pi * 20.0**3 / 1000.0  # mL
    v_myo = 4 / 3 * math.pi * (28.0**3 - 20.0**3) / 1000.0
    assert rep["volumes_ml"]["lv_blood"] == pytest.approx(v_blood, rel=0.01)
    assert rep["volumes_ml"]["lv_myo"] == pytest.approx(v_myo, rel=0.01)
    # LV mass = 1.05 g/mL x myocardial volume (Vinnakota & Bassingthwaighte 2004)
    assert rep["lv_myocardial_mass_g"] == pytest.approx(1.05 * v_myo, rel=0.01)
    assert rep["components"]["lv_blood"] == 1 and rep["errors"] == []


def test_wall_thickness_of_concentric_spheres():
    t = lv_wall_thickness_mm(_lv_shell(20.0, 28.0).labels, (SP, SP, SP))
    assert t["median"] == pytest.approx(8.0, abs=2 * SP)


def test_implausible_results_are_errors_or_warnings():
    geom, xyz = _grid()
    empty = LabelMap(labels=np.zeros(geom.shape, dtype=np.uint8), geometry=geom)
    rep = quality_report(empty)
    assert any("no heart found" in e for e in rep["errors"])
    with pytest.raises(StageError, match="no heart found"):
        raise_on_errors(rep, source="x.nii.gz")
    tiny = _lv_shell(3.0, 6.0)  # 0.1 mL LV: outside the plausible range
    assert any("outside the plausible" in e for e in quality_report(tiny)["errors"])
    # LV blood and RV blood 20 mm apart with no myocardium between: disconnected chambers, two LV pieces
    lab = _lv_shell(20.0, 28.0).labels.copy()
    lab[np.linalg.norm(xyz - np.array([0, 0, 0]), axis=-1) <= 28.0] = 0
    lab[np.linalg.norm(xyz - np.array([-15.0, 0, 0]), axis=-1) <= 12.0] = 1
    lab[np.linalg.norm(xyz - np.array([15.0, 0, 0]), axis=-1) <= 12.0] = 3
    lab[np.linalg.norm(xyz - np.array([0, 22.0, 0]), axis=-1) <= 4.0] = 1
    rep = quality_report(LabelMap(labels=lab, geometry=geom))
    assert any("2 disconnected pieces" in w for w in rep["warnings"])
    assert any("no lv_myo" in w for w in rep["warnings"])
    # an LV blood pool away from its myocardium is no heart (what a model paints onto noise): error
    lab = np.zeros(geom.shape, dtype=np.uint8)
    lab[np.linalg.norm(xyz - np.array([-15.0, 0, 0]), axis=-1) <= 12.0] = 1
    shell = np.linalg.norm(xyz - np.array([15.0, 0, 0]), axis=-1)
    lab[(shell > 6.0) & (shell <= 12.0)] = 2
    rep = quality_report(LabelMap(labels=lab, geometry=geom))
    assert any("lv_blood and lv_myo do not touch" in e for e in rep["errors"])


def test_dice_hd95_assd_of_shifted_spheres():
    """Two spheres of radius R with centres d apart.

    Overlap volume pi (4R + d)(2R - d)^2 / 12 (sphere-sphere intersection, e.g. Weisstein,
    MathWorld "Sphere-Sphere Intersection"), so Dice = overlap / V. The surface distance from a
    point at polar angle theta is about d |cos theta| for d << R, so the symmetric mean (ASSD) is
    d / 2 and the 95th percentile is 0.95 d; the Hausdorff distance is d.
    """
    geom, xyz = _grid()
    r, d = 18.0, 3.0
    a = (np.linalg.norm(xyz, axis=-1) <= r).astype(np.uint8)
    b = (np.linalg.norm(xyz - np.array([d, 0, 0]), axis=-1) <= r).astype(np.uint8)
    m = compare(LabelMap(labels=a, geometry=geom), LabelMap(labels=b, geometry=geom), labels=(1,))["lv_blood"]
    dice = (math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12) / (4 / 3 * math.pi * r**3)
    assert m["dice"] == pytest.approx(dice, abs=0.01)
    assert m["assd_mm"] == pytest.approx(d / 2, abs=2 * SP)
    assert m["hd95_mm"] == pytest.approx(0.95 * d, abs=2 * SP)
    same = compare(LabelMap(labels=a, geometry=geom), LabelMap(labels=a, geometry=geom), labels=(1,))["lv_blood"]
    assert same == {"dice": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0}


def test_compare_refuses_another_grid():
    geom, _ = _grid(20)
    other = ImageGeometry(shape=(20, 20, 20), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0.0, 0.0, 0.0))
    z = np.zeros((20, 20, 20), dtype=np.uint8)
    with pytest.raises(StageError, match="another grid"):
        compare(LabelMap(labels=z, geometry=geom), LabelMap(labels=z, geometry=other))


def test_overlays_are_written(tmp_path):
    lm = _lv_shell(20.0, 28.0)
    image = lm.labels.astype(np.float32) * 100
    paths = write_overlays(lm, image, tmp_path, stem="ov")
    assert [p.name for p in paths] == ["ov_i.png", "ov_j.png", "ov_k.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def _sa_stack(r_in: np.ndarray | float, r_out: np.ndarray | float, *, shift_mm: float = 0.0) -> np.ndarray:
    """Short-axis stack of LV rings: 1.25 mm pixels, 10 slices of 8 mm along the last axis."""
    ax = (np.arange(128) - 63.5) * 1.25
    x, y = np.meshgrid(ax - shift_mm, ax, indexing="ij")
    r = np.hypot(x, y)[:, :, None] * np.ones(10)
    lab = np.zeros(r.shape, dtype=np.uint8)
    lab[r <= r_out] = 2
    lab[r <= r_in] = 1
    return lab


SA_SPACING = (1.25, 1.25, 8.0)


@pytest.mark.parametrize("d_mm", [-3.75, -1.25, 0.0, 2.5])
def test_signed_boundary_offset_of_a_grown_or_shrunk_ring(d_mm):
    # an endocardium drawn d mm outside (d > 0) or inside (d < 0) a 30 mm circle: offset ~ d
    ref, pred = _sa_stack(30.0, 38.0), _sa_stack(30.0 + d_mm, 38.0 + d_mm)
    endo = signed_boundary_offset_mm(pred == 1, ref == 1, SA_SPACING)
    epi = signed_boundary_offset_mm(pred > 0, ref > 0, SA_SPACING)
    assert endo == pytest.approx(d_mm, abs=0.5)  # 0.4 pixel: staircase error of digitised circles
    assert epi == pytest.approx(d_mm, abs=0.5)


def test_signed_boundary_offset_of_a_shifted_ring_is_near_zero_and_slices_can_be_ignored():
    ref, pred = _sa_stack(30.0, 38.0), _sa_stack(30.0, 38.0, shift_mm=5.0)
    assert abs(signed_boundary_offset_mm(pred == 1, ref == 1, SA_SPACING)) < 0.4
    # slices outside `valid` do not count: a grown prediction on the ignored slices changes nothing
    grown = pred.copy()
    grown[..., 5:] = _sa_stack(36.0, 44.0)[..., 5:]
    valid = np.zeros(ref.shape, dtype=bool)
    valid[..., :5] = True
    assert signed_boundary_offset_mm(grown == 1, ref == 1, SA_SPACING, valid=valid) == pytest.approx(
        signed_boundary_offset_mm(pred == 1, ref == 1, SA_SPACING), abs=1e-9)
    assert signed_boundary_offset_mm(grown == 1, ref == 1, SA_SPACING) > 1.5
    assert math.isnan(signed_boundary_offset_mm(np.zeros_like(ref, bool), ref == 1, SA_SPACING))


def test_myocardium_confusion_of_a_ring_drawn_inside_the_experts():
    # expert ring 30-38 mm; predicted ring 27-35 mm: the outer 3 mm of the expert wall is called
    # outside, and predicted wall covers the expert cavity between 27 and 30 mm
    ref, pred = _sa_stack(30.0, 38.0), _sa_stack(27.0, 35.0)
    c = myocardium_confusion(pred, ref)
    area = lambda a, b: math.pi * (b**2 - a**2)  # noqa: E731
    wall = area(30.0, 38.0)
    assert c["missed_as_background"] == pytest.approx(area(35.0, 38.0) / wall, abs=0.03)
    assert c["extra_in_blood"] == pytest.approx(area(27.0, 30.0) / wall, abs=0.03)
    assert c["missed_as_blood"] == 0.0 and c["extra_in_background"] == 0.0
    assert myocardium_confusion(ref, ref) == {"missed_as_background": 0.0, "missed_as_blood": 0.0,
                                              "extra_in_blood": 0.0, "extra_in_background": 0.0}
    assert myocardium_confusion(pred, np.zeros_like(ref)) == {}
