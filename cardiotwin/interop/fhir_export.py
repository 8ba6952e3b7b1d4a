"""A case's results as a FHIR R4 transaction Bundle, and posting it to a FHIR server.

The Bundle holds one ``DiagnosticReport`` (its conclusion in words and, when the case has a lead
recommendation, the recommended AHA segment as ``conclusionCode``; the clinical summary and
evidence report PDFs as ``presentedForm``), one ``Observation`` per key number (``results``: LOINC
for volumes, EF and QRS duration, SNOMED CT for anatomy) and an ``Observation`` of the recommended
LV lead site coded as its AHA segment (SNOMED CT, DICOM CID 3717). It is built with
``cardiotwin.io.fhir`` and validated with the FHIR models before it is written. No patient
identity is in it; ``subject`` (a reference on the receiving server) links it to a patient.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cardiotwin.errors import CaseError, InteropError
from cardiotwin.interop.connection import check_url, http_errors, session
from cardiotwin.interop.results import LEAD_SITE, key_numbers
from cardiotwin.io import fhir

log = logging.getLogger(__name__)

REPORT_CODE = (fhir.LOINC, "18748-4", "Diagnostic imaging study")
REPORT_CATEGORY = ("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")
PDFS = (("summary.pdf", "CRT planning summary"), ("evidence.pdf", "In-silico evidence report (ASME V&V 40)"))


def _attachment(path: Path, title: str) -> dict[str, Any]:
    data = path.read_bytes()
    return {"contentType": "application/pdf", "language": "en", "title": title, "size": len(data),
            "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
            "data": base64.b64encode(data).decode()}


def build_bundle(case_dir: str | Path, *, subject: str | None = None) -> dict[str, Any]:
    """The validated transaction Bundle of the case at ``case_dir``."""
    from cardiotwin.cases import Case

    case = Case.open(case_dir)
    manifest = case.manifest
    numbers = key_numbers(case.root)
    if not numbers.groups:
        raise CaseError(f"{case.root}: nothing to export: " + "; ".join(numbers.missing))
    seed = f"cardiotwin:{manifest.get('created')}:{manifest.get('case_id')}"

    def urn(key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{seed}:{key}')}"

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    subj = {"reference": subject} if subject else None
    resources: list[tuple[str, dict[str, Any]]] = []
    for n in numbers.numbers():
        full_url = urn(n.key)
        method = f"{n.method[1]} (cardiotwin)" if n.method else None
        res = fhir.observation(n.measure or n.code, n.value, full_url=full_url, subject=subj, effective=now,
                               unit=n.unit, method=method, text=n.text)
        resources.append((full_url, res))
    rec = numbers.recommendation
    conclusion_codes = []
    if rec is not None:
        system, code, display = rec["segment_code"]
        full_url = urn("lv_lead_site")
        res = {"resourceType": "Observation", "status": "final",
               "category": [fhir.codeable(fhir.OBSERVATION_CATEGORY, "procedure", "Procedure")],
               "code": fhir.codeable(*LEAD_SITE, text="Recommended LV pacing lead site (virtual CRT)"),
               "valueCodeableConcept": fhir.codeable(system, code, display, text=f"AHA segment {rec['aha_segment']} "
                                                                             f"({rec['segment_name']})"),
               "effectiveDateTime": now, "method": {"text": "Digital twin simulation (cardiotwin)"},
               "note": [{"text": numbers.conclusion()}]}
        if subj:
            res["subject"] = subj
        resources.append((full_url, res))
        conclusion_codes.append(fhir.codeable(system, code, display))
    forms = []
    for name, title in PDFS:
        path = case.root / "report" / name
        if path.is_file():
            forms.append(_attachment(path, title))
        else:
            log.warning("%s: no report/%s (run `cardiotwin report`); the DiagnosticReport has no such PDF", case.root,
                        name)
    report_url = urn("report")
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": "final",
        "category": [fhir.codeable(*REPORT_CATEGORY)],
        "code": fhir.codeable(*REPORT_CODE, text="Cardiac digital twin: virtual CRT lead placement"),
        "effectiveDateTime": now, "issued": now,
        "result": [{"reference": u} for u, _ in resources],
        "conclusion": numbers.conclusion(),
    }
    if subj:
        report["subject"] = subj
    if conclusion_codes:
        report["conclusionCode"] = conclusion_codes
    if forms:
        report["presentedForm"] = forms
    return fhir.bundle([(report_url, report), *resources], kind="transaction", timestamp=now)


def export_case(case_dir: str | Path, out: str | Path, *, subject: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Build the Bundle and write it to ``out`` (atomically); returns the path and the Bundle."""
    from cardiotwin.io.atomic import write_text_atomic

    data = build_bundle(case_dir, subject=subject)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(data, indent=2))
    return out, data


def post_transaction(data: dict[str, Any], url: str) -> list[str]:
    """POST the transaction Bundle to the FHIR base ``url``; the created resources' locations."""
    base = check_url(url, "fhir")
    s = session("fhir")
    with http_errors(base, "fhir", "transaction"):
        response = s.post(base, data=json.dumps(data), timeout=(10, 120),
                          headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
        response.raise_for_status()
    try:
        answer = response.json()
    except ValueError:
        raise InteropError(f"{base}: the transaction answer is not JSON") from None
    if not isinstance(answer, dict) or answer.get("type") != "transaction-response":
        raise InteropError(f"{base}: the answer is not a transaction-response Bundle")
    return [str((e.get("response") or {}).get("location", "")) for e in answer.get("entry") or []]
