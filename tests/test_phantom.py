"""Phantoms: deterministic, anatomically ordered labels, realistic intensity ordering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cardiotwin.anatomy import Label
from cardiotwin.cli import main
from cardiotwin.io.scans import read_labels, read_scan
from cardiotwin.phantom import make_phantom


def test_deterministic_in_seed():
    a = make_phantom(seed=5, modality="MR", fov_mm=120.0)
    b = make_phantom(seed=5, modality="MR", fov_mm=120.0)
    c = make_phantom(seed=6, modality="MR", fov_mm=120.0)
    np.testing.assert_array_equal(a.scan.voxels, b.scan.voxels)
    np.testing.assert_array_equal(a.labels.labels, b.labels.labels)
    assert a.params != c.params
    assert not np.array_equal(a.labels.labels, c.labels.labels)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_anatomy_is_plausible(seed):
    p = make_phantom(seed=seed, modality="CT", spacing_mm=(2.0, 2.0, 2.0), scar=True)
    lab = p.labels.labels
    present = set(np.unique(lab).tolist())
    assert set(range(10)) <= present, f"missing labels {set(range(10)) - present}"
    # Adult ranges (Maceira et al. 2006 CMR reference: LV EDV 100-220 mL in normal to dilated hearts;
    # the phantom's LV cavity is a half ellipsoid of radius 21-31 mm and length 2.3-2.9x that: 54-270 mL).
    assert 40 < p.labels.volume_ml(Label.LV_BLOOD) < 320
    assert 50 < p.labels.volume_ml(Label.LV_MYO) + p.labels.volume_ml(Label.SCAR) < 320
    assert 30 < p.labels.volume_ml(Label.RV_BLOOD) < 300
    # The LV blood pool is enclosed by myocardium below the base: it touches background only at
    # the (open) base plane z_h = 0 of the heart frame.
    lv = lab == Label.LV_BLOOD
    open_ring = ndimage.binary_dilation(lv) & ~lv & (lab == Label.BACKGROUND)
    world = p.labels.geometry.index_to_world(np.argwhere(open_ring))
    rot = np.asarray(p.params.rotation).reshape(3, 3)
    z_h = (world - np.asarray(p.params.base_centre_lps_mm)) @ rot[:, 2]
    assert np.all(z_h > -2.0 * 2.0), "LV blood must not touch background below the base"
    # The RV wraps the septum: RV blood touches LV myocardium.
    rv = lab == Label.RV_BLOOD
    assert np.count_nonzero(lab[ndimage.binary_dilation(rv) & ~rv] == Label.LV_MYO) > 20
    # Scar is a transmural patch of the LV free wall: it touches the LV blood pool, lies within
    # one wall thickness (<= 13 mm) of it, and is centred on the free wall, not the septum.
    scar = lab == Label.SCAR
    lv_blood = lab == Label.LV_BLOOD
    assert np.any(ndimage.binary_dilation(scar) & lv_blood)
    dist_mm = ndimage.distance_transform_edt(~lv_blood, sampling=p.labels.geometry.spacing_mm)
    assert dist_mm[scar].max() <= 13.0 + 2.0 * 2.0  # wall thickness + two voxels
    centre_deg = p.params.scar_sector_deg[0]
    assert abs((centre_deg - 90.0 + 180.0) % 360.0 - 180.0) >= 90.0, "scar centred away from the septum (+y_h)"
    for label in (Label.LV_BLOOD, Label.LV_MYO, Label.RV_BLOOD, Label.AORTA):
        _, n = ndimage.label(lab == label)
        assert n == 1, f"{label.name} must be one connected component"


def test_intensity_ordering_ct_and_mr():
    ct = make_phantom(seed=4, modality="CT", spacing_mm=(2.0, 2.0, 2.0))
    mr = make_phantom(seed=4, modality="MR")
    for p in (ct, mr):
        v, lab = p.scan.voxels, p.labels.labels
        core = lambda m: ndimage.binary_erosion(m, iterations=1)  # noqa: E731 - avoid partial volume
        blood = np.median(v[core(lab == Label.LV_BLOOD)])
        myo = np.median(v[core(lab == Label.LV_MYO)])
        assert blood > myo + (100 if p.scan.modality == "CT" else 0.3 * blood)
    v, lab = ct.scan.voxels, ct.labels.labels
    assert np.percentile(v, 1) < -700, "CT has lung and air in HU"
    assert 180 < np.median(v[lab == Label.LV_BLOOD]) < 500  # contrast-enhanced blood, HU
    assert 40 < np.median(v[ndimage.binary_erosion(lab == Label.LV_MYO)]) < 160  # myocardium, HU
    assert mr.scan.geometry.spacing_mm[2] == 8.0 and mr.scan.voxels.min() >= 0


def test_cli_writes_scan_and_labels(tmp_path):
    out = tmp_path / "p.nii.gz"
    assert main(["phantom", "--modality", "mr", "--seed", "7", str(out)]) == 0
    scan, labels = read_scan(out), read_labels(tmp_path / "p_labels.nii.gz")
    assert scan.modality == "MR"
    assert labels.geometry.same_space(scan.geometry)
    assert labels.labels.max() <= 8
    assert main(["phantom", "--seed", "7", str(tmp_path / "bad.txt")]) == 2
    # --lv dilated: same seed and pose, a larger LV cavity in a 240 mm field of view
    assert main(["phantom", "--modality", "mr", "--seed", "7", "--lv", "dilated", str(tmp_path / "d.nii.gz")]) == 0
    dil = read_labels(tmp_path / "d_labels.nii.gz")
    ml = lambda lab: float((lab.labels == Label.LV_BLOOD).sum() * np.prod(lab.geometry.spacing_mm) / 1000.0)  # noqa: E731
    assert ml(dil) > 1.3 * ml(labels)
    assert dil.geometry.shape[0] * dil.geometry.spacing_mm[0] == pytest.approx(240.0, abs=2.0)


def test_thoracic_vessels_have_adult_lengths_and_leave_the_heart_unchanged():
    """vessels="thoracic": ascending aorta, arch and descending aorta beside the spine, pulmonary trunk
    and branches with adult lengths (standard anatomy texts: ascending aorta about 5 cm, descending
    thoracic aorta about 20 cm, pulmonary trunk about 5 cm); the ventricles and atria are
    those of the short model, and the labels are a pure function of the shape parameters."""
    from cardiotwin.phantom import heart_labels_at, sample_heart_params

    params = sample_heart_params(np.random.default_rng(11))
    axis = np.arange(-120.0, 120.0, 2.5)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3) + params.base_centre_lps_mm
    short = heart_labels_at(pts, params)
    thoracic = heart_labels_at(pts, params, vessels="thoracic")
    np.testing.assert_array_equal(thoracic, heart_labels_at(pts, params, vessels="thoracic"))
    for lab in (Label.LV_BLOOD, Label.LV_MYO, Label.RV_BLOOD, Label.RV_MYO):  # written last: identical
        np.testing.assert_array_equal(short == lab, thoracic == lab)
    voxel_ml = 2.5**3 / 1000.0
    aorta = pts[thoracic == Label.AORTA] - params.base_centre_lps_mm
    assert (thoracic == Label.AORTA).sum() * voxel_ml > 3 * (short == Label.AORTA).sum() * voxel_ml
    # world z (LPS: +z superior): from above the heart's base far down beside the ventricles
    assert aorta[:, 2].max() > 60.0 and aorta[:, 2].min() < -100.0
    # the descending part lies behind the heart (LPS +y posterior)
    low = aorta[aorta[:, 2] < -60.0]
    lv = pts[thoracic == Label.LV_BLOOD] - params.base_centre_lps_mm
    assert low[:, 1].mean() > lv[:, 1].mean() + 20.0
    assert 15.0 < (thoracic == Label.PULMONARY_ARTERY).sum() * voxel_ml < 150.0


def test_dilated_lv_shape_range():
    """lv="dilated": the heart-failure range of the shape model (end-diastolic LV diameter 58-76 mm,
    wall 5-9 mm, rounder cavity; dilated cardiomyopathy is diagnosed above about 58 mm in men:
    Pinto et al., Eur Heart J 2016). It draws as many random numbers as the typical range, so pose,
    position and scar of a seed stay the same, and the LV cavity it draws is larger."""
    from cardiotwin.phantom import heart_labels_at, sample_heart_params

    for seed in range(20):
        typ = sample_heart_params(np.random.default_rng(seed), scar=True)
        dil = sample_heart_params(np.random.default_rng(seed), scar=True, lv="dilated")
        assert 21.0 <= typ.lv_radius_mm <= 31.0 and 7.0 <= typ.lv_wall_mm <= 13.0
        assert 29.0 <= dil.lv_radius_mm <= 38.0 and 5.0 <= dil.lv_wall_mm <= 9.0
        assert 1.8 <= dil.lv_length_mm / dil.lv_radius_mm <= 2.4
        assert (dil.rotation, dil.base_centre_lps_mm, dil.scar_sector_deg) == (
            typ.rotation, typ.base_centre_lps_mm, typ.scar_sector_deg)
    with pytest.raises(ValueError, match="lv must be"):
        sample_heart_params(np.random.default_rng(0), lv="huge")

    typ, dil = (sample_heart_params(np.random.default_rng(3), lv=lv) for lv in ("typical", "dilated"))
    axis = np.arange(-110.0, 110.0, 2.0)
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3) + typ.base_centre_lps_mm
    ml = 2.0**3 / 1000.0
    v_typ = (heart_labels_at(pts, typ) == Label.LV_BLOOD).sum() * ml
    v_dil = (heart_labels_at(pts, dil) == Label.LV_BLOOD).sum() * ml
    # the LV cavity is a half prolate ellipsoid, 2/3 pi r^2 l (typical 44-181 mL, dilated 92-275 mL)
    for v, par in ((v_typ, typ), (v_dil, dil)):
        assert v == pytest.approx(2.0 / 3.0 * np.pi * par.lv_radius_mm**2 * par.lv_length_mm / 1000.0, rel=0.05)
    assert v_dil > 1.5 * v_typ


def test_phantom_with_thoracic_vessels_keeps_its_ventricles():
    """make_phantom(vessels="thoracic") (train-seg's validation phantoms of a thoracic-vessel run, and
    `cardiotwin phantom --vessels thoracic`): same seed, same ventricles, a longer aorta."""
    kw = dict(seed=4, modality="CT", spacing_mm=(3.0, 3.0, 3.0), fov_mm=210.0)
    short, thoracic = make_phantom(**kw), make_phantom(**kw, vessels="thoracic")
    a, b = short.labels.labels, thoracic.labels.labels
    for lab in (Label.LV_BLOOD, Label.LV_MYO, Label.RV_BLOOD):
        assert abs(int((a == lab).sum()) - int((b == lab).sum())) <= 0.01 * (a == lab).sum()
    assert (b == Label.AORTA).sum() > 2 * (a == Label.AORTA).sum()


def test_train_seg_validation_phantoms_use_the_runs_vessel_model(monkeypatch):
    """A thoracic-vessel run validates on thoracic-vessel phantoms, so its best.pt is chosen on the
    anatomy it is trained for (stage 8 could not: its validation phantoms had short vessels)."""
    import cardiotwin.phantom as phantom
    from cardiotwin.segmentation.train import TrainConfig, validation_cases

    seen = []
    real = phantom.make_phantom

    def small(**kw):
        seen.append(kw.get("vessels"))
        return real(**kw, spacing_mm=(6.0, 6.0, 8.0), fov_mm=120.0)

    monkeypatch.setattr(phantom, "make_phantom", small)
    cases = validation_cases(TrainConfig(n_val_per_modality=1, vessels="thoracic", spacing_mm=6.0))
    assert seen == ["thoracic", "thoracic"] and len(cases) == 2
