"""DICOM SEG output (highdicom) for scans that came from a DICOM series.

The SEG references the source slices by their UIDs (needed to display it over the scan) but
carries no patient identifiers: name, ID, birth date, sex, accession number and the like are
replaced by anonymous placeholders or emptied.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from cardiotwin.errors import ScanError
from cardiotwin.io.atomic import atomic_path
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)

_PLACEHOLDERS = {"PatientName": "ANONYMOUS", "PatientID": "ANONYMOUS"}
_EMPTIED = ("PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "PatientSize", "AccessionNumber",
            "ReferringPhysicianName", "StudyID", "InstitutionName", "InstitutionAddress", "OtherPatientIDs",
            "OtherPatientNames", "PatientComments", "IssuerOfPatientID", "EthnicGroup", "PatientAddress")


def _property_type(label: int):
    from pydicom.sr.codedict import codes

    return {
        1: codes.SCT.LeftVentricle, 2: codes.SCT.LeftVentricleMyocardium, 3: codes.SCT.RightVentricle,
        4: codes.SCT.RightVentricle, 5: codes.SCT.LeftAtrium, 6: codes.SCT.RightAtrium, 7: codes.SCT.Aorta,
        8: codes.SCT.PulmonaryArtery, 9: codes.SCT.Tissue,
    }.get(label, codes.SCT.Tissue)


def source_slices(folder: Path, *, series_uid: str | None, frame: int | None, n_slices: int) -> list:
    """The pydicom datasets of the slices read as the volume, in the volume's k order."""
    import pydicom

    by_series: dict[str, list] = defaultdict(list)
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - not a DICOM file
            continue
        if "ImagePositionPatient" in ds and "PixelData" in ds:
            by_series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    if not by_series:
        raise ScanError(folder, "no DICOM image slices for the SEG's references")
    series = by_series[series_uid] if series_uid else next(iter(by_series.values()))
    orient = np.asarray(series[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    by_pos: dict[tuple, list] = defaultdict(list)
    for ds in series:
        by_pos[tuple(np.round(np.asarray(ds.ImagePositionPatient, dtype=float), 2))].append(ds)
    chosen = []
    for group in by_pos.values():
        group.sort(key=lambda d: (float(d.get("TriggerTime", 0.0) or 0.0), int(d.get("InstanceNumber", 0) or 0)))
        chosen.append(group[frame or 0])
    chosen.sort(key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, dtype=float), normal)))
    if len(chosen) != n_slices:
        raise ScanError(folder, f"found {len(chosen)} slices for the SEG but the volume has {n_slices}")
    if any("FrameOfReferenceUID" not in d for d in chosen):
        # Required by the SEG IOD; some exports (and our phantom writer) omit it. Derive one from
        # the series UID so the SEG's slices share a frame of reference with each other.
        from pydicom.uid import generate_uid

        for_uid = generate_uid(entropy_srcs=[str(chosen[0].get("SeriesInstanceUID", "")), "frame-of-reference"])
        log.warning("%s: source slices have no FrameOfReferenceUID; using %s in the SEG", folder, for_uid)
        for d in chosen:
            d.FrameOfReferenceUID = d.get("FrameOfReferenceUID", for_uid)
    return chosen


def write_dicom_seg(label_map: LabelMap, dicom_folder: Path, out_path: Path, *, series_uid: str | None = None,
                    frame: int | None = None, label_names: dict[int, str] | None = None) -> Path:
    """Write ``label_map`` (on the grid of the DICOM series in ``dicom_folder``) as a DICOM SEG file."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from cardiotwin import __version__
    from cardiotwin.anatomy import LABEL_NAMES

    names = label_names or LABEL_NAMES
    slices = source_slices(Path(dicom_folder), series_uid=series_uid, frame=frame, n_slices=label_map.geometry.shape[2])
    lab = label_map.labels
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    if (cols, rows) != lab.shape[:2]:
        raise ScanError(dicom_folder, f"slice size {cols}x{rows} differs from the label map {lab.shape[:2]}")
    # (x, y, z) -> frames (z, rows = y, cols = x)
    pixel_array = np.ascontiguousarray(np.transpose(lab, (2, 1, 0))).astype(np.uint8)
    n_seg = max(int(lab.max()), 1)
    algorithm = hd.AlgorithmIdentificationSequence(name="cardiotwin heart segmentation", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=names.get(k, f"label {k}"),
            segmented_property_category=codes.SCT.Tissue if k in (2, 4, 9) else codes.SCT.AnatomicalStructure,
            segmented_property_type=_property_type(k), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k in range(1, n_seg + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="cardiotwin", manufacturer_model_name="cardiotwin segment",
        software_versions=__version__, device_serial_number="0", omit_empty_frames=False,
    )
    for key, value in _PLACEHOLDERS.items():
        setattr(seg, key, value)
    for key in _EMPTIED:
        if key in seg:
            setattr(seg, key, "")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        seg.save_as(str(tmp))
    return out_path
