"""Push a case's results into its source study with STOW-RS.

``push_case`` builds, in memory, a DICOM SEG of ``segment/labels.nii.gz`` on the pulled series,
the evidence report and the clinical summary as Encapsulated PDF, and a TID 1500 SR of the key
numbers (``results.key_numbers``). The source patient and study identity is read from the PACS
(WADO-RS metadata of the source series) and copied only into these objects. Their UIDs are
derived from the study and the content, and each is looked up (QIDO-RS) before it is stored, so a
rerun pushes no duplicate. On success the case records what was pushed in ``push/pushed.json``
(UIDs and the URL, no identity); on any error the case is left as it was.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardiotwin.errors import CaseError, InteropError
from cardiotwin.interop.connection import check_url, http_errors
from cardiotwin.interop.documents import (
    IDENTITY_KEYWORDS,
    apply_identity,
    encapsulated_pdf,
    measurement_report,
    stable_uid,
)
from cardiotwin.interop.pull import dicomweb_client, dicomweb_source

log = logging.getLogger(__name__)

PUSH_STAGE = "push"
SERIES_NUMBERS = {"seg": 9001, "evidence": 9002, "summary": 9003, "sr": 9004}
PDFS = (("evidence", "evidence.pdf", "In-silico evidence report (ASME V&V 40)"),
        ("summary", "summary.pdf", "CRT planning summary"))


@dataclass(frozen=True)
class Pushed:
    kind: str
    sop_class_uid: str
    series_uid: str
    sop_uid: str
    status: str  # "stored" or "already present"


def source_identity(client: Any, url: str, study_uid: str, series_uid: str) -> Any:
    """Patient and study attributes of the source series (WADO-RS metadata of its first instance)."""
    from pydicom.dataset import Dataset

    with http_errors(url, "dicomweb", f"WADO-RS metadata of series {series_uid} of study {study_uid}"):
        meta = client.retrieve_series_metadata(study_uid, series_uid)
    if not meta:
        raise InteropError(f"{url}: series {series_uid} of study {study_uid} is not in the PACS")
    full = Dataset.from_json(meta[0], bulk_data_uri_handler=lambda *_: b"")
    identity = Dataset()
    for keyword in IDENTITY_KEYWORDS:
        if keyword in full:
            identity[keyword] = full[keyword]
    if identity.get("StudyInstanceUID") != study_uid:
        raise InteropError(f"{url}: the metadata of series {series_uid} names another study")
    return identity


def _exists(client: Any, url: str, study_uid: str, sop_uid: str) -> bool:
    with http_errors(url, "dicomweb", f"QIDO-RS search for instance {sop_uid}"):
        rows = client.search_for_instances(study_instance_uid=study_uid, search_filters={"SOPInstanceUID": sop_uid})
    return bool(rows)


def _seg(case_root: Path, src: dict[str, Any], identity: Any, work: Path) -> Any:
    import pydicom

    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.io.scans import read_labels
    from cardiotwin.segmentation.dicomseg import write_dicom_seg

    labels_path = case_root / "segment" / "labels.nii.gz"
    folder = case_root / str(src.get("folder") or "inputs/dicom")
    if not folder.is_dir():
        raise CaseError(f"{folder}: the pulled DICOM series is missing from the case")
    labels = read_labels(labels_path)
    path = write_dicom_seg(labels, folder, work / "seg.dcm", series_uid=src["series_uid"], frame=src.get("frame"))
    seg = pydicom.dcmread(path)
    digest = sha256_file(labels_path)
    seg.SeriesInstanceUID = stable_uid(src["study_uid"], "seg-series")
    seg.SOPInstanceUID = stable_uid(src["study_uid"], "seg", digest)
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    seg.SeriesDescription = "cardiotwin heart segmentation"
    return apply_identity(seg, identity)


def build_objects(case_root: Path, src: dict[str, Any], identity: Any, work: Path) -> tuple[list[tuple[str, Any]],
                                                                                          list[str]]:
    """The (kind, dataset) pairs to push and what was left out (and why)."""
    from cardiotwin.io.atomic import sha256_file
    from cardiotwin.interop.results import key_numbers

    study = src["study_uid"]
    skipped: list[str] = []
    objects: list[tuple[str, Any]] = []
    if not (case_root / "segment" / "labels.nii.gz").is_file():
        raise CaseError(f"{case_root}: stage 'segment' has not been run (run `cardiotwin segment` first); "
                        f"there is nothing to push")
    seg = _seg(case_root, src, identity, work)
    objects.append(("seg", seg))
    for kind, name, title in PDFS:
        path = case_root / "report" / name
        if not path.is_file():
            skipped.append(f"{title}: no report/{name} (run `cardiotwin report`)")
            continue
        objects.append((kind, encapsulated_pdf(
            path.read_bytes(), identity=identity, title=title, series_uid=stable_uid(study, f"{kind}-series"),
            sop_uid=stable_uid(study, kind, sha256_file(path)), series_number=SERIES_NUMBERS[kind])))
    numbers = key_numbers(case_root)
    skipped += [f"SR: {m}" for m in numbers.missing]
    if numbers.groups:
        content = "|".join(f"{g.name}:{m.key}={m.value:.6g}{m.unit}" for g in numbers.groups for m in g.measurements)
        content += "|" + "|".join(f"{g.name}:{v[1]}" for g in numbers.groups for _, v in g.evaluations)
        sr = measurement_report(numbers, evidence=[seg], series_uid=stable_uid(study, "sr-series"),
                                sop_uid=stable_uid(study, "sr", seg.SOPInstanceUID, content),
                                series_number=SERIES_NUMBERS["sr"])
        objects.append(("sr", sr))
    return objects, skipped


def push_case(case_dir: str | Path, url: str) -> tuple[list[Pushed], list[str]]:
    """STOW-RS the case's SEG, PDFs and SR into its source study at ``url``; (pushed, skipped)."""
    from cardiotwin.cases import Case

    case = Case.open(case_dir)
    url = check_url(url, "dicomweb")
    src = dicomweb_source(case)
    if src is None:
        raise CaseError(f"{case.root}: the scan was not pulled from a PACS (no DICOMweb source in the manifest); "
                        f"create the case with `--dicomweb URL --study UID`")
    client = dicomweb_client(url)
    identity = source_identity(client, url, src["study_uid"], src["series_uid"])
    with tempfile.TemporaryDirectory(prefix="cardiotwin-push-") as tmp:
        objects, skipped = build_objects(case.root, src, identity, Path(tmp))
    todo, results = [], []
    for kind, ds in objects:
        present = _exists(client, url, src["study_uid"], ds.SOPInstanceUID)
        results.append(Pushed(kind=kind, sop_class_uid=str(ds.SOPClassUID), series_uid=str(ds.SeriesInstanceUID),
                              sop_uid=str(ds.SOPInstanceUID), status="already present" if present else "stored"))
        if not present:
            if getattr(ds, "preamble", None) is None:  # STOW-RS parts must be DICOM files (preamble, 'DICM')
                ds.preamble = b"\0" * 128
            todo.append(ds)
    if todo:
        with http_errors(url, "dicomweb", f"STOW-RS of {len(todo)} instance(s) into study {src['study_uid']}"):
            response = client.store_instances(todo, study_instance_uid=src["study_uid"])
        failed = list(getattr(response, "FailedSOPSequence", None) or [])
        if failed:
            reasons = ", ".join(f"{f.get('ReferencedSOPInstanceUID', '?')} (reason {f.get('FailureReason', '?')})"
                                for f in failed)
            raise InteropError(f"{url}: STOW-RS refused {len(failed)} instance(s): {reasons}")
    _record(case, url, src, results, skipped)
    return results, skipped


def _record(case: Any, url: str, src: dict[str, Any], results: list[Pushed], skipped: list[str]) -> None:
    import json

    inputs = {"labels": case.root / "segment" / "labels.nii.gz"}
    for rel in ("report/evidence.pdf", "report/summary.pdf", "therapy/ranking.json"):
        if (case.root / rel).is_file():
            inputs[rel.replace("/", "_")] = case.root / rel
    config = {"url": url, "study_uid": src["study_uid"], "series_uid": src["series_uid"]}
    with case.stage(PUSH_STAGE, inputs=inputs, config=config, force=True) as st:
        (st.dir / "pushed.json").write_text(json.dumps({
            **config, "objects": [r.__dict__ for r in results], "skipped": skipped}, indent=2))
        st.metrics.update({"stored": sum(r.status == "stored" for r in results),
                           "already_present": sum(r.status != "stored" for r in results)})
