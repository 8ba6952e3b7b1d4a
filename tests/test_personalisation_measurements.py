"""Patient measurements: volumes and wall thickness from label maps, clinical values with units."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.anatomy import Label
from cardiotwin.personalisation.measurements import (
    MeasurementError,
    clinical_measurements,
    from_coded,
    image_measurements,
    read_measurements_yaml,
)
from cardiotwin.types import ImageGeometry, LabelMap


def _annulus_stack(r_endo: float, r_epi: float, *, spacing=(0.5, 0.5, 5.0), n_slices=12, rv=False) -> LabelMap:
    """A short-axis stack of a thick-walled cylinder (LV) capped by a myocardial disc at the apex."""
    nx = ny = 160
    g = ImageGeometry(shape=(nx, ny, n_slices), spacing_mm=spacing, origin_mm=(0.0, 0.0, 0.0))
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    x, y = (ii - nx / 2 + 0.5) * spacing[0], (jj - ny / 2 + 0.5) * spacing[1]
    r = np.hypot(x, y)
    lab = np.zeros(g.shape, dtype=np.uint8)
    for k in range(1, n_slices - 1):
        lab[..., k][r < r_epi] = Label.LV_MYO
        lab[..., k][r < r_endo] = Label.LV_BLOOD
        if rv:
            lab[..., k][(np.hypot(x + r_epi + 12, y) < 10)] = Label.RV_BLOOD
    lab[..., 0][r < r_epi] = Label.LV_MYO  # apical cap, below the cavity
    return LabelMap(labels=lab, geometry=g, source="annulus")


def test_volumes_mass_and_wall_thickness_of_an_annulus():
    ed = _annulus_stack(25.0, 33.0, rv=True)
    es = _annulus_stack(18.0, 29.0, rv=True)
    m = image_measurements(ed, es)
    h = 10 * 5.0  # ten cavity slices of 5 mm
    assert m["lv_edv_ml"] == pytest.approx(np.pi * 25.0**2 * h / 1000, rel=0.01)
    assert m["lv_esv_ml"] == pytest.approx(np.pi * 18.0**2 * h / 1000, rel=0.01)
    assert m["lv_ef"] == pytest.approx(1 - (18 / 25) ** 2, abs=0.01)
    myo_ml = np.pi * (33.0**2 - 25.0**2) * h / 1000 + np.pi * 33.0**2 * 5.0 / 1000
    assert m["lv_mass_g"] == pytest.approx(1.05 * myo_ml, rel=0.01)
    # every AHA segment 1-16 of a uniform annulus: 8 mm at ED, 11 mm at ES, thickening 3/8
    assert sorted(m["wall_thickness_ed_mm"]) == list(range(1, 17))
    for s in range(1, 17):
        assert m["wall_thickness_ed_mm"][s] == pytest.approx(8.0, abs=0.3)
        assert m["wall_thickness_es_mm"][s] == pytest.approx(11.0, abs=0.3)
        assert m["systolic_thickening"][s] == pytest.approx(3.0 / 8.0, abs=0.05)
    assert "rv_ef" not in m  # the same RV at ED and ES has no ejection: no RV EF is reported
    assert "rv_edv_ml" in m


def test_swapped_ed_es_is_refused():
    with pytest.raises(MeasurementError, match="ED and ES swapped"):
        image_measurements(_annulus_stack(18.0, 29.0), _annulus_stack(25.0, 33.0))


def test_clinical_values_convert_units():
    m = clinical_measurements({"systolic_bp_mmhg": "16 kPa", "diastolic_bp_mmhg": 80, "heart_rate_bpm": "1.2 Hz",
                               "qrs_duration_ms": "0.15 s", "lv_ef": "35 %", "lvedp_mmhg": "12 mmHg"})
    assert m["systolic_bp_mmhg"] == pytest.approx(16 / 0.133322387415)
    assert m["heart_rate_bpm"] == pytest.approx(72.0)
    assert m["qrs_duration_ms"] == pytest.approx(150.0)
    assert m["lv_ef"] == pytest.approx(0.35)


@pytest.mark.parametrize("data, match", [
    ({"lv_ef": 0.95}, "lv_ef = 0.95 is implausible"),
    ({"lv_ef": 35}, "lv_ef = 35 is implausible"),
    ({"systolic_bp_mmhg": 70, "diastolic_bp_mmhg": 90}, "systolic_bp_mmhg 70 is not above"),
    ({"heart_rate_bpm": "70 mmHg"}, "heart_rate_bpm.*cannot convert"),
    ({"qrs_duration_ms": "120 furlongs"}, "unknown unit"),
    ({"lv_edv_ml": 150, "lv_esv_ml": 100, "lv_ef": 0.6}, "lv_ef 0.6 contradicts"),
    ({"body_mass": 80}, "unknown measurement 'body_mass'"),
])
def test_implausible_or_unconvertible_values_are_refused(data, match):
    with pytest.raises(MeasurementError, match=match):
        clinical_measurements(data)


def test_yaml_file_and_coded_values(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("systolic_bp_mmhg: 118 mmHg\ndiastolic_bp_mmhg: 76 mmHg\nlv_edv_ml: 0.18 L\n")
    assert read_measurements_yaml(p)["lv_edv_ml"] == pytest.approx(180.0)
    p.write_text("lv_ef: 1.5\n")
    with pytest.raises(MeasurementError, match=str(p)):
        read_measurements_yaml(p)
    coded = from_coded({"lv_ef": (30.0, "%"), "systolic_bp_mmhg": (120.0, "mm[Hg]"), "heart_rate_bpm": (60, "/min")},
                       where="bundle.json")
    assert coded == pytest.approx({"lv_ef": 0.30, "systolic_bp_mmhg": 120.0, "heart_rate_bpm": 60.0})
    with pytest.raises(MeasurementError, match="lvedp_mmhg has unit 'kg'"):
        from_coded({"lvedp_mmhg": (12.0, "kg")}, where="bundle.json")


def test_real_sunnybrook_volumes_match_the_published_reference(shared_data):
    from cardiotwin.io.scans import read_labels

    d = shared_data / "sunnybrook" / "SCD0000201"
    m = image_measurements(read_labels(d / "ed_labels.nii.gz"), read_labels(d / "es_labels.nii.gz"))
    # reference numbers from shared/data/README.md (sum over labelled slices)
    assert m["lv_edv_ml"] == pytest.approx(246.83, abs=0.01)
    assert m["lv_esv_ml"] == pytest.approx(184.77, abs=0.01)
    assert m["lv_mass_g"] == pytest.approx(1.05 * 136.62, abs=0.02)
    assert all(3.0 < t < 15.0 for t in m["wall_thickness_ed_mm"].values())


def test_fhir_bundle_good_and_broken(tmp_path):
    import json

    from cardiotwin.errors import FhirError
    from cardiotwin.io.fhir import bundle, observation
    from cardiotwin.personalisation.measurements import read_measurements_fhir

    good = bundle([(f"urn:uuid:{i}", observation(n, v, full_url=f"urn:uuid:{i}")) for i, (n, v) in enumerate(
        [("lv_ef", 28.0), ("systolic_bp_mmhg", 118.0), ("diastolic_bp_mmhg", 72.0), ("qrs_duration_ms", 160.0)])])
    p = tmp_path / "b.json"
    p.write_text(json.dumps(good))
    m = read_measurements_fhir(p)
    assert m == pytest.approx({"lv_ef": 0.28, "systolic_bp_mmhg": 118.0, "diastolic_bp_mmhg": 72.0,
                               "qrs_duration_ms": 160.0})
    bad = bundle([("urn:uuid:0", observation("lv_ef", 97.0, full_url="urn:uuid:0"))])
    p.write_text(json.dumps(bad))
    with pytest.raises(MeasurementError, match="lv_ef = 0.97 is implausible"):
        read_measurements_fhir(p)
    p.write_text('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation"}}]}')
    with pytest.raises(FhirError, match=str(p)):
        read_measurements_fhir(p)


def test_short_axis_base_plane_sits_at_the_basal_end_of_the_cavity():
    from cardiotwin.personalisation.measurements import short_axis_base_plane

    point, normal = short_axis_base_plane(_annulus_stack(25.0, 33.0))
    # cavity slices k = 1..10 at z = 5k mm; the apical cap is at k = 0, so the base is +z
    assert np.allclose(normal, (0.0, 0.0, 1.0))
    assert point[2] == pytest.approx(50.0 - 2.0)


def test_volumes_below_the_mesh_base_plane_are_the_twins_domain():
    """With the mesh stage's base plane the cavity volumes are those of the labels below it (a
    voxel cut by the plane counts by its fraction), the whole-label values kept for comparison."""
    from cardiotwin.personalisation.measurements import measured_values

    ed, es = _annulus_stack(25.0, 33.0, rv=True), _annulus_stack(18.0, 29.0, rv=True)
    # cavity slices k = 1..10 span z = 2.5..52.5 mm; a plane at z = 30 mm keeps 27.5 mm of them
    m = measured_values(ed, es, None, base_plane={"point_mm": [0.0, 0.0, 30.0], "normal": [0.0, 0.0, 1.0]})
    assert m["lv_edv_ml"] == pytest.approx(np.pi * 25.0**2 * 27.5 / 1000, rel=0.02)
    assert m["lv_esv_ml"] == pytest.approx(np.pi * 18.0**2 * 27.5 / 1000, rel=0.02)
    assert m["lv_ef"] == pytest.approx(1 - (18 / 25) ** 2, abs=0.01)
    assert m["whole_labels"]["lv_edv_ml"] == pytest.approx(np.pi * 25.0**2 * 50.0 / 1000, rel=0.01)
    assert m["rv_esv_ml"] is None and m["rv_ef"] is None  # the RV does not eject in this stack


def test_a_single_phase_scan_takes_its_ejection_fraction_from_the_measurements_file():
    """A CT twin has one phase: with the mesh's base plane the image gives EDV but no ESV or EF
    (None), so the clinical LV EF fills them and the ESV follows from EDV and EF
    (`MEASUREMENTS=sample_scans/ct_sample_measurements.yaml make demo` stopped here)."""
    from cardiotwin.personalisation.measurements import measured_values

    ed = _annulus_stack(25.0, 33.0, rv=True)
    m = measured_values(ed, None, {"lv_ef": 0.35}, base_plane={"point_mm": [0.0, 0.0, 30.0], "normal": [0.0, 0.0, 1.0]})
    assert m["lv_ef"] == 0.35 and m["sources"]["lv_ef"] == "clinical"
    assert m["lv_esv_ml"] == pytest.approx(m["lv_edv_ml"] * 0.65)
    assert m["rv_ef"] is None  # nothing measured for the RV
