"""HL7 FHIR R4 measurements and reports: the code table, reading Observations, building resources.

One module for everything FHIR in cardiotwin: ``read_observations`` turns a FHIR R4 Bundle of
Observations (a clinical system's export) into ``{measurement name: (value, UCUM unit)}`` for the
personalisation stage; ``observation``, ``diagnostic_report`` and ``bundle`` build the resources
that ``cardiotwin export-fhir`` writes. Resources are parsed and validated with the
``fhir.resources`` models of FHIR 4.3 (R4B: the R4 Observation, DiagnosticReport and Bundle
unchanged), so a field of the wrong type, a missing required field or an unknown field is refused
with the file and the field's path named.

Codes are LOINC where LOINC has one (the DICOM CID 3468/3469/3835 cardiac volumes, the generic
LV ejection fraction, the vital-signs blood pressure panel) and SNOMED CT otherwise. Units are
UCUM codes. Values are returned as found: converting units and judging plausibility is the
caller's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardiotwin.errors import FhirError

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FHIR_VERSION = "4.3.0"

BP_PANEL = (LOINC, "85354-9", "Blood pressure panel with all children optional")


@dataclass(frozen=True)
class Measure:
    """A measurement cardiotwin reads or writes: its UCUM unit and codes (the first is written)."""

    name: str
    display: str
    unit: str
    codes: tuple[tuple[str, str, str], ...]
    category: str = "exam"

    @property
    def coding(self) -> tuple[str, str, str]:
        return self.codes[0]


def _m(name: str, display: str, unit: str, *codes: tuple[str, str, str], category: str = "exam") -> Measure:
    return Measure(name=name, display=display, unit=unit, codes=codes, category=category)


# Measurement name -> codes. Reading accepts every code listed; writing uses the first.
MEASURES: dict[str, Measure] = {m.name: m for m in (
    _m("lv_edv_ml", "Left ventricular end-diastolic volume", "mL",
       (LOINC, "8821-1", "Left Ventricular ED Volume"),
       (LOINC, "18026-5", "Left Ventricular End Diastolic Volume")),
    _m("lv_esv_ml", "Left ventricular end-systolic volume", "mL",
       (LOINC, "8823-7", "Left Ventricular ES Volume"),
       (LOINC, "18148-7", "Left Ventricular End Systolic Volume")),
    _m("lv_ef", "Left ventricular ejection fraction", "%",
       (LOINC, "10230-1", "Left ventricular Ejection fraction"),
       (LOINC, "8811-2", "Left ventricular Ejection fraction by MR"),
       (LOINC, "8810-4", "Left ventricular Ejection fraction by CT"),
       (LOINC, "18043-0", "Left ventricular Ejection fraction by US"),
       (LOINC, "8808-8", "Left ventricular Ejection fraction by Angiography"),
       (SNOMED, "70822001", "Cardiac ejection fraction")),
    _m("rv_edv_ml", "Right ventricular end-diastolic volume", "mL",
       (LOINC, "8822-9", "Right Ventricular ED Volume")),
    _m("rv_esv_ml", "Right ventricular end-systolic volume", "mL",
       (LOINC, "8824-5", "Right Ventricular ES Volume")),
    _m("rv_ef", "Right ventricular ejection fraction", "%",
       (LOINC, "8818-7", "Right ventricular Ejection fraction by MR"),
       (LOINC, "8817-9", "Right ventricular Ejection fraction by CT"),
       (LOINC, "8815-3", "Right ventricular Ejection fraction by Angiography")),
    _m("systolic_bp_mmhg", "Systolic blood pressure", "mm[Hg]",
       (LOINC, "8480-6", "Systolic blood pressure"),
       (SNOMED, "271649006", "Systolic blood pressure"), category="vital-signs"),
    _m("diastolic_bp_mmhg", "Diastolic blood pressure", "mm[Hg]",
       (LOINC, "8462-4", "Diastolic blood pressure"),
       (SNOMED, "271650006", "Diastolic blood pressure"), category="vital-signs"),
    _m("heart_rate_bpm", "Heart rate", "/min",
       (LOINC, "8867-4", "Heart rate"), (SNOMED, "364075005", "Heart rate"), category="vital-signs"),
    _m("qrs_duration_ms", "QRS duration", "ms",
       (LOINC, "44973-6", "QRS duration {EKG lead}"), category="procedure"),
    _m("lvedp_mmhg", "Left ventricular end-diastolic pressure", "mm[Hg]",
       (SNOMED, "276781007", "Left ventricular end-diastolic pressure"), category="procedure"),
)}

_BY_CODE: dict[tuple[str, str], str] = {(system, code): m.name for m in MEASURES.values() for system, code, _ in m.codes}

# Observation.status values whose value must not be used.
_UNUSABLE_STATUS = ("entered-in-error", "cancelled", "registered")
_STATUS = ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown")


def _models():
    from fhir.resources.R4B import bundle, diagnosticreport, observation

    return bundle.Bundle, observation.Observation, diagnosticreport.DiagnosticReport


def _field_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def validate_bundle(data: Any, source: str | Path) -> Any:
    """Parse a JSON mapping as a FHIR Bundle; FhirError naming ``source`` and the bad field."""
    from pydantic import ValidationError

    Bundle, _, _ = _models()
    if not isinstance(data, dict):
        raise FhirError(source, "(root)", "is not a JSON object (a FHIR Bundle is expected)")
    if data.get("resourceType") != "Bundle":
        raise FhirError(source, "resourceType", f"is {data.get('resourceType')!r}; a FHIR Bundle is expected")
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise FhirError(source, _field_path(err["loc"]), f"{err['msg']}{more}") from None


def _measure_of(codeable: Any) -> str | None:
    for coding in (getattr(codeable, "coding", None) or []):
        name = _BY_CODE.get((str(coding.system or ""), str(coding.code or "")))
        if name:
            return name
    return None


def _is_panel(codeable: Any) -> bool:
    return any((c.system, c.code) == BP_PANEL[:2] for c in (getattr(codeable, "coding", None) or []))


def _quantity(q: Any, source: str | Path, field: str) -> tuple[float, str]:
    if q is None:
        raise FhirError(source, f"{field}.valueQuantity", "missing: the measurement has no numeric value")
    if q.value is None:
        raise FhirError(source, f"{field}.valueQuantity.value", "missing")
    value = float(q.value)
    if not math.isfinite(value):
        raise FhirError(source, f"{field}.valueQuantity.value", f"is not a finite number ({q.value})")
    if q.system is not None and str(q.system) != UCUM and not q.unit:
        raise FhirError(source, f"{field}.valueQuantity.system", f"is {q.system}, not UCUM ({UCUM}), and no unit is given")
    unit = str(q.code) if q.code and (q.system is None or str(q.system) == UCUM) else (q.unit or q.code)
    if not unit:
        raise FhirError(source, f"{field}.valueQuantity.code", "missing: the value has no unit")
    return value, str(unit)


def _effective(obs: Any) -> str:
    """The observation's time as sortable ISO text ('' when absent)."""
    for attr in ("effectiveDateTime", "effectiveInstant"):
        v = getattr(obs, attr, None)
        if v is not None:
            return v.isoformat() if hasattr(v, "isoformat") else str(v)
    period = getattr(obs, "effectivePeriod", None)
    if period is not None:
        v = period.end or period.start
        if v is not None:
            return v.isoformat() if hasattr(v, "isoformat") else str(v)
    return ""


def read_observations(path: str | Path) -> dict[str, tuple[float, str]]:
    """Measurements in a FHIR R4 Bundle of Observations: name -> (value, UCUM unit).

    Names are those of ``MEASURES`` (``lv_edv_ml``, ``lv_ef``, ``systolic_bp_mmhg``, ...). Blood
    pressure is read from its own Observations and from the components of a blood pressure
    panel (LOINC 85354-9). Observations with other codes are ignored; those entered in error,
    cancelled or only registered are skipped. When a measurement occurs more than once the
    latest (effective time) is returned; equal times with different values are refused.
    Raises ``FhirError`` naming the file and the field for anything unreadable.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FhirError(path, "(file)", f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FhirError(path, "(file)", f"is not valid JSON ({exc})") from None
    bundle = validate_bundle(data, path)
    found: dict[str, tuple[str, float, str, str]] = {}  # name -> (time, value, unit, field)

    def take(name: str, when: str, value: float, unit: str, field: str) -> None:
        prev = found.get(name)
        if prev is not None and prev[0] == when and (prev[1], prev[2]) != (value, unit):
            raise FhirError(path, field, f"gives {name} = {value} {unit}, but {prev[3]} gives {prev[1]} {prev[2]} "
                                         f"for the same time ({when or 'no effective time'})")
        if prev is None or when > prev[0]:
            found[name] = (when, value, unit, field)

    for i, entry in enumerate(bundle.entry or []):
        res = entry.resource
        field = f"entry[{i}].resource"
        if res is None or res.get_resource_type() != "Observation":
            continue
        status = str(res.status)
        if status not in _STATUS:
            raise FhirError(path, f"{field}.status", f"is {status!r}; one of {', '.join(_STATUS)} is expected")
        if status in _UNUSABLE_STATUS:
            continue
        when = _effective(res)
        name = _measure_of(res.code)
        if name is not None:
            value, unit = _quantity(res.valueQuantity, path, field)
            take(name, when, value, unit, field)
        if name is None or _is_panel(res.code):
            for j, comp in enumerate(res.component or []):
                comp_name = _measure_of(comp.code)
                if comp_name is None:
                    continue
                if comp.valueQuantity is None and comp.dataAbsentReason is not None:
                    continue
                value, unit = _quantity(comp.valueQuantity, path, f"{field}.component[{j}]")
                take(comp_name, when, value, unit, f"{field}.component[{j}]")
    return {name: (v[1], v[2]) for name, v in found.items()}


# -- building resources ----------------------------------------------------------------------------
def codeable(system: str, code: str, display: str, *, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


def observation(name: str | tuple[str, str, str], value: float, *, full_url: str,
                subject: Mapping[str, Any] | None = None, effective: str | None = None, unit: str | None = None,
                method: str | None = None, text: str | None = None, category: str | None = None) -> dict[str, Any]:
    """A final Observation with a UCUM quantity: of measurement ``name`` (a ``MEASURES`` key), or of
    an explicit (system, code, display) with ``unit`` given."""
    if isinstance(name, str):
        m = MEASURES[name]
        (system, code, display), unit = m.coding, unit or m.unit
        text, category = text or m.display, category or m.category
    else:
        system, code, display = name
        if not unit:
            raise ValueError(f"observation {code}: a unit is needed")
    category = category or "exam"
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": full_url.rsplit(":", 1)[-1], "status": "final",
        "category": [codeable(OBSERVATION_CATEGORY, category, category.replace("-", " ").title())],
        "code": codeable(system, code, display, text=text),
        "valueQuantity": {"value": _decimal(value), "unit": unit, "system": UCUM, "code": unit},
    }
    if subject:
        res["subject"] = dict(subject)
    if effective:
        res["effectiveDateTime"] = effective
    if method:
        res["method"] = {"text": method}
    return res


def _decimal(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return round(value, 6)


def bundle(resources: list[tuple[str, dict[str, Any]]], *, kind: str = "collection",
           timestamp: str | None = None) -> dict[str, Any]:
    """A Bundle of (fullUrl, resource); ``kind='transaction'`` adds POST requests. Validated."""
    entries = []
    for full_url, res in resources:
        entry: dict[str, Any] = {"fullUrl": full_url, "resource": res}
        if kind == "transaction":
            entry["request"] = {"method": "POST", "url": res["resourceType"]}
        entries.append(entry)
    data: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "entry": entries}
    if timestamp:
        data["timestamp"] = timestamp
    validate_bundle(data, "(bundle being built)")
    return data
