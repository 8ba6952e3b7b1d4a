"""Pull a CT or MR series from a PACS into a case: QIDO-RS to find it, WADO-RS to fetch it.

``pull_series`` finds the series of a study (the one CT or MR image series, or the one asked for),
fetches its instances, keeps only the image and geometry attributes (no patient, physician,
institution, date or private attribute enters the case: the UIDs that tie results back to the
source stay), checks that they read as one 3D volume, and only then creates or opens the case
and moves them in as ``inputs/dicom/`` with the scan ``inputs/scan.nii.gz``. The manifest's input
``scan`` records the server URL and the study and series UIDs under ``dicomweb``. Any failure
before that leaves the case as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cardiotwin.errors import InteropError, ScanError
from cardiotwin.interop.connection import check_url, http_errors, quiet_libraries, session

if TYPE_CHECKING:
    from cardiotwin.cases import Case

log = logging.getLogger(__name__)

DICOM_FOLDER = "inputs/dicom"
IMAGE_MODALITIES = ("CT", "MR")
# BodyPartExamined values (DICOM PS3.16 CID 4031 and common scanner spellings) of scans that show the heart.
HEART_BODY_PARTS = frozenset({"HEART", "CHEST", "THORAX", "CARDIAC", "CORONARY", "CORONARYARTERY", "CHESTABDOMEN",
                              "CHESTABDPELVIS", "WHOLEBODY", "TORSO", "TRUNK", "MEDIASTINUM", "AORTA", "THORACICAORTA",
                              "CHESTTOPELVIS", "HEARTCHEST", "THORAXABDOMEN", "BREAST"})
# Attributes kept from a fetched instance: pixels, geometry, acquisition and the UIDs that tie results
# back to the source. Everything else (patient, physicians, institution, dates, descriptions, private
# attributes) is dropped; the type 2 attributes of the patient and study modules are left empty.
KEEP = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "SeriesNumber", "InstanceNumber", "AcquisitionNumber", "ImageType", "BodyPartExamined", "PatientPosition",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "SliceLocation", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "PlanarConfiguration", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "WindowCenter", "WindowWidth", "PixelData", "TriggerTime", "CardiacNumberOfImages", "NominalInterval",
    "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "RepetitionTime", "EchoTime", "FlipAngle",
    "MagneticFieldStrength", "KVP", "ConvolutionKernel", "Manufacturer", "ManufacturerModelName", "SpecificCharacterSet",
)
EMPTIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass(frozen=True)
class SeriesInfo:
    """A series found by QIDO-RS."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    n_instances: int | None
    body_part: str

    def line(self) -> str:
        n = "?" if self.n_instances is None else str(self.n_instances)
        desc = f" '{self.description}'" if self.description else ""
        part = f", body part {self.body_part}" if self.body_part else ""
        return f"{self.series_uid} ({self.modality}{desc}, {n} instances{part})"


def dicomweb_client(url: str) -> Any:
    """A DICOMwebClient on ``url`` with the credentials of the environment (``connection``)."""
    from dicomweb_client.api import DICOMwebClient

    quiet_libraries()
    client = DICOMwebClient(check_url(url, "dicomweb"), session=session("dicomweb"), timeout=(10, 120))
    # no silent retries: the `retrying` package behind them would also retry a refused connection and log a
    # traceback per attempt; a failure is reported once, as one error
    client.set_http_retry_params(retry=False)
    return client


def _value(row: dict[str, Any], tag: str) -> Any:
    values = (row.get(tag) or {}).get("Value") or []
    if not values:
        return None
    v = values[0]
    return v.get("Alphabetic", "") if isinstance(v, dict) else v


def _series_info(row: dict[str, Any], study_uid: str) -> SeriesInfo:
    n = _value(row, "00201209")
    return SeriesInfo(study_uid=study_uid, series_uid=str(_value(row, "0020000E") or ""),
                      modality=str(_value(row, "00080060") or ""), description=str(_value(row, "0008103E") or ""),
                      n_instances=int(n) if n is not None else None, body_part=str(_value(row, "00180015") or ""))


def _normal_body_part(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def find_series(client: Any, url: str, study_uid: str, *, series_uid: str | None = None,
                modality: str | None = None) -> SeriesInfo:
    """The series to pull (QIDO-RS). InteropError when the study is missing, the choice is ambiguous
    (the candidates listed) or the series is not a CT or MR scan of the heart."""
    with http_errors(url, "dicomweb", f"QIDO-RS search for the series of study {study_uid}"):
        rows = client.search_for_series(study_instance_uid=study_uid,
                                        fields=["SeriesDescription", "BodyPartExamined", "Modality",
                                                "NumberOfSeriesRelatedInstances"])
    found = [_series_info(r, study_uid) for r in rows or []]
    if not found:
        raise InteropError(f"{url}: study {study_uid} not found (QIDO-RS returned no series)")
    if series_uid is not None:
        chosen = [s for s in found if s.series_uid == series_uid]
        if not chosen:
            raise InteropError(f"{url}: study {study_uid} has no series {series_uid}; its series: "
                               + "; ".join(s.line() for s in found))
        info = chosen[0]
    else:
        wanted = (modality,) if modality else IMAGE_MODALITIES
        candidates = [s for s in found if s.modality in wanted]
        if not candidates:
            raise InteropError(f"{url}: study {study_uid} has no {' or '.join(wanted)} series; its series: "
                               + "; ".join(s.line() for s in found))
        if len(candidates) > 1:
            raise InteropError(f"{url}: study {study_uid} has {len(candidates)} {' or '.join(wanted)} series; choose "
                               f"one with --series: " + "; ".join(s.line() for s in candidates))
        info = candidates[0]
    if info.modality not in IMAGE_MODALITIES:
        raise InteropError(f"{url}: series {info.series_uid} is {info.modality or 'of no modality'}, not a CT or MR "
                           f"scan of the heart")
    if modality and info.modality != modality:
        raise InteropError(f"{url}: series {info.series_uid} is {info.modality}; the recipe needs {modality}")
    part = _normal_body_part(info.body_part)
    if part and part not in HEART_BODY_PARTS:
        raise InteropError(f"{url}: series {info.series_uid} is a scan of the {info.body_part} (BodyPartExamined), "
                           f"not of the heart")
    return info


def deidentify(ds: Any) -> Any:
    """A copy of an image dataset with only the ``KEEP`` attributes (patient and study type 2 empty)."""
    from pydicom.dataset import Dataset, FileMetaDataset

    out = Dataset()
    for keyword in KEEP:
        if keyword in ds:
            out[keyword] = ds[keyword]
    for keyword in EMPTIED:
        setattr(out, keyword, "")
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "cardiotwin: only image, geometry and UID attributes kept"
    meta = FileMetaDataset()
    src_meta = getattr(ds, "file_meta", None)
    meta.TransferSyntaxUID = getattr(src_meta, "TransferSyntaxUID", None) or "1.2.840.10008.1.2.1"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out.file_meta = meta
    return out


def fetch_series(client: Any, url: str, info: SeriesInfo, folder: Path) -> int:
    """WADO-RS retrieve of the series into ``folder`` (de-identified, one file per instance)."""
    with http_errors(url, "dicomweb", f"WADO-RS retrieve of series {info.series_uid}"):
        datasets = client.retrieve_series(info.study_uid, info.series_uid)
    if not datasets:
        raise InteropError(f"{url}: WADO-RS returned no instances for series {info.series_uid}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        if "PixelData" not in ds:
            raise InteropError(f"{url}: instance {i + 1} of series {info.series_uid} holds no image")
        clean = deidentify(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clean.save_as(folder / f"IM{i:05d}.dcm", enforce_file_format=True)
    return len(datasets)


def pull_series(url: str, study_uid: str, *, out: str | os.PathLike[str], series_uid: str | None = None,
                modality: str | None = None, frame: int | None = None, new_case: bool = False,
                case_id: str | None = None) -> tuple["Case", Path]:
    """Find, fetch and store a series in the case ``out`` (created when absent; ``new_case``: it must
    not exist). Returns the case and its DICOM folder. Nothing is written into the case unless the
    series was fetched and reads as one 3D volume."""
    from cardiotwin.cases import Case
    from cardiotwin.errors import CaseError
    from cardiotwin.io.atomic import sha256_paths
    from cardiotwin.io.scans import read_scan

    url = check_url(url, "dicomweb")
    out = Path(out)
    if new_case and Case.is_case(out):
        raise CaseError(f"{out}: a case already exists here")
    if Case.is_case(out):
        Case.open(out)  # refuse a damaged case before any download
    client = dicomweb_client(url)
    info = find_series(client, url, study_uid, series_uid=series_uid, modality=modality)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cardiotwin-pull-", dir=parent))
    try:
        n = fetch_series(client, url, info, tmp / "dicom")
        try:
            scan = read_scan(tmp / "dicom", modality=None, series_uid=info.series_uid, frame=frame)
        except ScanError as exc:
            raise InteropError(f"{url}: series {info.series_uid}: {exc.problem}") from None
        if modality and scan.modality not in (modality, "unknown"):
            raise InteropError(f"{url}: series {info.series_uid} reads as {scan.modality}; the recipe needs {modality}")
        case = Case.create(out, case_id=case_id) if new_case or not Case.is_case(out) else Case.open(out)
        with case.lock():
            dest = case.root / DICOM_FOLDER
            dest.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if dest.exists():
                old = tmp / "old"
                os.replace(dest, old)
            os.replace(tmp / "dicom", dest)
            files = sorted(p for p in dest.iterdir() if p.is_file())
            case.import_scan(scan, dicomweb={
                "url": url, "study_uid": info.study_uid, "series_uid": info.series_uid, "modality": info.modality,
                "instances": n, "frame": frame, "folder": DICOM_FOLDER, "folder_sha256": sha256_paths(files, root=dest),
                "retrieved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("pulled %d instances of series %s (study %s) from %s into %s", n, info.series_uid, study_uid, url,
             case.root)
    return case, dest


def dicomweb_source(case: "Case") -> dict[str, Any] | None:
    """The ``dicomweb`` record of the case's scan (URL, study and series UIDs), or None."""
    rec = (case.manifest.get("inputs") or {}).get("scan") or {}
    src = rec.get("dicomweb")
    return src if isinstance(src, dict) else None
