"""FHIR R4 measurements (cardiotwin.io.fhir): a hospital-style bundle is read, broken ones are refused.

Codes in the fixtures are the published ones: LOINC 8480-6 / 8462-4 inside the vital-signs blood
pressure panel 85354-9 and 8867-4 heart rate (FHIR R4 vital signs profile), LOINC 8821-1 / 8823-7 /
8822-9 / 8824-5 ventricular volumes and 8811-2 / 8818-7 EF by MR (DICOM PS3.16 CID 3468, 3469,
3833, 3835), LOINC 10230-1 LV ejection fraction, LOINC 44973-6 QRS duration (US Core R4 example
"qrs-dur-ekg-lead"), SNOMED CT 276781007 LV end-diastolic pressure.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cardiotwin.errors import FhirError
from cardiotwin.io import fhir

LOINC, SCT, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"


def _obs(system: str, code: str, value, unit: str, *, when: str = "2026-03-02T10:00:00Z", status: str = "final",
         ucum: bool = True) -> dict:
    q = {"value": value, "unit": unit}
    if ucum:
        q.update(system=UCUM, code=unit)
    return {"resourceType": "Observation", "status": status, "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when, "valueQuantity": q}


def hospital_bundle() -> dict:
    bp = {"resourceType": "Observation", "status": "final",
          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "vital-signs"}]}],
          "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
          "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-03-02T09:30:00Z",
          "component": [
              {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
               "valueQuantity": {"value": 128, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
              {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
               "valueQuantity": {"value": 76, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
          ]}
    resources = [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Example"}]},
        bp,
        _obs(LOINC, "8821-1", 212.5, "mL"),
        _obs(LOINC, "8823-7", 160.0, "mL"),
        _obs(LOINC, "10230-1", 24.7, "%"),
        _obs(LOINC, "10230-1", 31.0, "%", when="2025-01-10T08:00:00Z"),  # older: superseded
        _obs(LOINC, "10230-1", 55.0, "%", status="entered-in-error"),   # skipped
        _obs(LOINC, "8822-9", 150.0, "mL"),
        _obs(LOINC, "8824-5", 80.0, "mL"),
        _obs(LOINC, "8818-7", 46.7, "%"),
        _obs(LOINC, "8867-4", 68, "/min"),
        _obs(LOINC, "44973-6", 168, "ms"),
        _obs(SCT, "276781007", 18, "mm[Hg]"),
        _obs(LOINC, "2093-3", 190, "mg/dL"),  # cholesterol: not ours, ignored
    ]
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}", "resource": r}
                      for i, r in enumerate(resources)]}


def _write(tmp_path: Path, data, name: str = "bundle.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_reads_every_measurement_of_a_hospital_bundle(tmp_path):
    got = fhir.read_observations(_write(tmp_path, hospital_bundle()))
    assert got == {
        "systolic_bp_mmhg": (128.0, "mm[Hg]"), "diastolic_bp_mmhg": (76.0, "mm[Hg]"),
        "lv_edv_ml": (212.5, "mL"), "lv_esv_ml": (160.0, "mL"), "lv_ef": (24.7, "%"),
        "rv_edv_ml": (150.0, "mL"), "rv_esv_ml": (80.0, "mL"), "rv_ef": (46.7, "%"),
        "heart_rate_bpm": (68.0, "/min"), "qrs_duration_ms": (168.0, "ms"), "lvedp_mmhg": (18.0, "mm[Hg]"),
    }


def test_plain_blood_pressure_observations_and_non_ucum_unit(tmp_path):
    data = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": _obs(LOINC, "8480-6", 140, "mm[Hg]")},
        {"resource": _obs(LOINC, "8462-4", 90, "mmHg", ucum=False)},
    ]}
    got = fhir.read_observations(_write(tmp_path, data))
    assert got == {"systolic_bp_mmhg": (140.0, "mm[Hg]"), "diastolic_bp_mmhg": (90.0, "mmHg")}


def test_built_resources_read_back(tmp_path):
    resources = [(f"urn:uuid:{i}", fhir.observation(name, v, full_url=f"urn:uuid:{i}"))
                 for i, (name, v) in enumerate([("lv_edv_ml", 180.2), ("lv_ef", 33.3), ("qrs_duration_ms", 150.0)])]
    data = fhir.bundle(resources)
    assert fhir.read_observations(_write(tmp_path, data)) == {
        "lv_edv_ml": (180.2, "mL"), "lv_ef": (33.3, "%"), "qrs_duration_ms": (150.0, "ms")}


def _broken(mutate) -> dict:
    data = copy.deepcopy(hospital_bundle())
    mutate(data)
    return data


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda d: d["entry"][4]["resource"]["valueQuantity"].update(value="abc"),
     "entry[4].resource.valueQuantity.value", "decimal"),
    (lambda d: d["entry"][2]["resource"].pop("code"), "entry[2].resource.code", "required"),
    (lambda d: d["entry"][2]["resource"].pop("valueQuantity"), "entry[2].resource.valueQuantity", "no numeric value"),
    (lambda d: d["entry"][3]["resource"]["valueQuantity"].clear() or
     d["entry"][3]["resource"]["valueQuantity"].update(value=160), "entry[3].resource.valueQuantity.code", "no unit"),
    (lambda d: d["entry"][1]["resource"]["component"][0].pop("valueQuantity"),
     "entry[1].resource.component[0].valueQuantity", "no numeric value"),
    (lambda d: d["entry"][2]["resource"].update(status="done"), "entry[2].resource.status", "'done'"),
    (lambda d: d["entry"][2]["resource"].update(valueQuanttity={"value": 1}), "entry[2].resource.valueQuanttity",
     "not permitted"),
    (lambda d: d.update(resourceType="Patient"), "resourceType", "Bundle"),
    (lambda d: d["entry"][10]["resource"].update(effectiveDateTime="2026-03-02T10:00:00Z") or
     d["entry"].append({"resource": _obs(LOINC, "8867-4", 90, "/min")}), "entry[14].resource", "same time"),
])
def test_broken_bundle_is_refused_naming_file_and_field(tmp_path, mutate, field, words):
    path = _write(tmp_path, _broken(mutate))
    with pytest.raises(FhirError) as exc:
        fhir.read_observations(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {field}:"), msg
    assert words.lower() in msg.lower(), msg


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(FhirError, match=r"bundle.json: \(file\): is not valid JSON"):
        fhir.read_observations(_write(tmp_path, '{"resourceType": "Bundle", '))
    with pytest.raises(FhirError, match=r"absent.json: \(file\): cannot be read"):
        fhir.read_observations(tmp_path / "absent.json")


def test_every_measure_has_a_ucum_unit_and_a_standard_code():
    assert {"lv_edv_ml", "lv_esv_ml", "lv_ef", "rv_edv_ml", "rv_esv_ml", "rv_ef", "systolic_bp_mmhg",
            "diastolic_bp_mmhg", "heart_rate_bpm", "qrs_duration_ms", "lvedp_mmhg"} <= set(fhir.MEASURES)
    for m in fhir.MEASURES.values():
        assert m.coding[0] in (fhir.LOINC, fhir.SNOMED)
        assert m.unit in ("mL", "%", "mm[Hg]", "/min", "ms")
