"""DICOM objects that carry a case's results into the source study: Encapsulated PDF documents and a
TID 1500 measurement report (Comprehensive 3D SR, highdicom) of the key numbers.

Every builder takes the source ``identity`` (patient and study attributes read from the PACS) and
stable UIDs (``stable_uid``: the same content gives the same SOP Instance UID, so a rerun pushes no
duplicate). Codes: LOINC for the cardiac volumes and EF (DICOM CID 3468/3469/3835), SNOMED CT for
anatomy and the AHA 17 segments (CID 3717), DCM for the recommendation, and the private scheme
``99CARDIOTWIN`` for predicted quantities that no standard codes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
PRIVATE_SCHEME = "99CARDIOTWIN"
# Patient and study attributes copied from the source into every pushed object (type 2 ones always present).
IDENTITY_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                     "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                     "ReferringPhysicianName", "StudyDescription")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def stable_uid(*parts: str) -> str:
    """A UID under the 2.25 (UUID) root that depends only on ``parts`` (a name-based UUID, RFC 9562)."""
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(['cardiotwin', *map(str, parts)])).int}"


def apply_identity(ds: Any, identity: Any) -> Any:
    """Copy the source patient and study attributes into ``ds`` (in place) and return it."""
    for keyword in IDENTITY_KEYWORDS:
        if keyword in identity:
            ds[keyword] = identity[keyword]
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    for keyword in ("PatientIdentityRemoved", "DeidentificationMethod"):
        if keyword in ds:
            del ds[keyword]
    return ds


def _now() -> tuple[str, str]:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def encapsulated_pdf(pdf: bytes, *, identity: Any, title: str, series_uid: str, sop_uid: str, series_number: int,
                     instance_number: int = 1) -> Any:
    """An Encapsulated PDF instance (PS3.3 A.45.1) holding ``pdf``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from cardiotwin import __version__

    if not pdf.startswith(b"%PDF"):
        raise ValueError(f"{title}: not a PDF document")
    date, time = _now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    apply_identity(ds, identity)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = title
    ds.Manufacturer = "cardiotwin"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "SYN"
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = date + time
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _aha_code(segment: int) -> Any:
    from pydicom.sr.codedict import codes

    from cardiotwin.anatomy import AHA_SEGMENT_NAMES

    if segment == 17:
        return codes.SCT.ApexOfLeftVentricle
    name = AHA_SEGMENT_NAMES[segment]
    return getattr(codes.SCT, "LeftVentricle" + "".join(w.capitalize() for w in name.split()) + "Segment")


def aha_segment_coding(segment: int) -> tuple[str, str, str]:
    """(SNOMED CT code, meaning) of an AHA 17-segment model segment (DICOM CID 3717) as (system, code, display)."""
    code = _aha_code(int(segment))
    return "http://snomed.info/sct", str(code.value), str(code.meaning)


def _concept(code: tuple[str, str, str]) -> Any:
    import highdicom as hd

    system, value, meaning = code
    scheme = {"http://loinc.org": "LN", "http://snomed.info/sct": "SCT", "urn:cardiotwin:code": PRIVATE_SCHEME,
              "http://dicom.nema.org/resources/ontology/DCM": "DCM"}[system]
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


def _unit(unit: str) -> Any:
    import highdicom as hd

    meanings = {"mL": "milliliter", "%": "percent", "ms": "millisecond", "g": "gram", "mm[Hg]": "millimeter of mercury",
                "/min": "per minute", "1": "no units"}
    return hd.sr.CodedConcept(value=unit, scheme_designator="UCUM", meaning=meanings.get(unit, unit))


def measurement_report(numbers: Any, *, evidence: list[Any], series_uid: str, sop_uid: str, series_number: int) -> Any:
    """A Comprehensive 3D SR with a TID 1500 Measurement Report of ``numbers`` (``results.KeyNumbers``).

    One measurement group per structure (LV blood pool, RV blood pool, LV myocardium: image volumes
    and mass), one for the simulated baseline beat (EDV, ESV, EF, QRS) and one for the recommended LV
    lead site: its AHA segment as a coded recommendation and its predicted response. The patient and
    study of the SR are those of ``evidence[0]`` (the pushed SEG, which carries the source identity).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from cardiotwin import __version__

    algorithm = hd.sr.AlgorithmIdentification(name="cardiotwin", version=__version__)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=stable_uid("device", "cardiotwin"), name="cardiotwin", manufacturer_name="cardiotwin"))
    groups = []
    for group in numbers.groups:
        measurements = [
            hd.sr.Measurement(name=_concept(m.code), value=float(m.value), unit=_unit(m.unit),
                              algorithm_id=algorithm,
                              method=hd.sr.CodedConcept(m.method[0], PRIVATE_SCHEME, m.method[1]) if m.method else None)
            for m in group.measurements
        ]
        evaluations = [hd.sr.QualitativeEvaluation(name=_concept(name), value=_concept(value))
                       for name, value in group.evaluations]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=stable_uid(sop_uid, group.name), identifier=group.name),
            finding_type=_concept(group.finding), algorithm_id=algorithm,
            measurements=measurements or None, qualitative_evaluations=evaluations or None))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("CRT-PLAN", PRIVATE_SCHEME, "Digital twin CRT planning"),
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer="cardiotwin", is_complete=True,
        series_description="cardiotwin key numbers")
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "cardiotwin digital twin quantities"
    scheme.CodingSchemeResponsibleOrganization = "cardiotwin project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
