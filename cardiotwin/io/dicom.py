"""DICOM series folders: choose a series (by UID) and a cine frame, read it as one 3D volume.

Headers are read with pydicom (tolerant of the real-world quirks of old scanners, e.g. UIDs with
leading zeros); pixels and geometry with SimpleITK/GDCM from the selected files, sorted along the
slice normal. Only Modality is taken from the headers: no patient identifier is ever returned.
"""

from __future__ import annotations

import locale
import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiotwin.errors import ScanError
from cardiotwin.io.atomic import sha256_paths
from cardiotwin.types import Modality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Slice:
    path: Path
    series_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    instance: int
    trigger_time_ms: float
    modality: str
    pixel_spacing: tuple[float, ...] = ()


def _read_headers(folder: Path) -> list[_Slice]:
    import pydicom

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ScanError(folder, "empty folder: no DICOM files found")
    slices: list[_Slice] = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a DICOM file: skip it (DICOMDIR, notes, thumbnails)
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        try:
            geometry = _slice_geometry(ds)
        except (TypeError, ValueError):
            raise ScanError(f, "unreadable ImagePositionPatient, ImageOrientationPatient or PixelSpacing") from None
        slices.append(
            _Slice(
                path=f,
                series_uid=str(ds.get("SeriesInstanceUID", ""))[:128],
                **geometry,
                modality=str(ds.get("Modality", ""))[:16],
            )
        )
    if not slices:
        raise ScanError(folder, "no readable DICOM image slices in folder")
    return slices


def _slice_geometry(ds) -> dict[str, object]:
    """Position, orientation, pixel spacing, instance and trigger time of one slice header."""
    position = tuple(float(v) for v in ds.ImagePositionPatient)
    orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
    if len(position) != 3 or len(orientation) != 6 or not np.all(np.isfinite([*position, *orientation])):
        raise ValueError("bad position or orientation")
    spacing = ds.get("PixelSpacing")
    return {
        "position": position,
        "orientation": orientation,
        "pixel_spacing": tuple(float(v) for v in spacing) if spacing is not None else (),
        "instance": int(ds.get("InstanceNumber", 0) or 0),
        "trigger_time_ms": float(ds.get("TriggerTime", 0.0) or 0.0),
    }


def list_series(folder: str | Path) -> dict[str, int]:
    """SeriesInstanceUID -> number of image files in the folder."""
    counts: dict[str, int] = defaultdict(int)
    for s in _read_headers(Path(folder)):
        counts[s.series_uid] += 1
    return dict(counts)


def count_dicom_frames(folder: Path, *, series_uid: str | None = None) -> int:
    """Frames per slice position of a DICOM series (a cine series: more than 1)."""
    slices = _read_headers(folder)
    uids = sorted({s.series_uid for s in slices})
    if series_uid is None and len(uids) > 1:
        raise ScanError(folder, f"holds {len(uids)} series; choose one with --series-uid: {', '.join(uids)}")
    uid = series_uid or uids[0]
    if uid not in uids:
        raise ScanError(folder, f"no series with UID {uid} (found: {', '.join(uids)})")
    per_position: dict[tuple[float, ...], int] = defaultdict(int)
    for s in slices:
        if s.series_uid == uid:
            per_position[tuple(np.round(s.position, 2))] += 1
    return max(per_position.values())


def read_dicom_series(
    folder: Path, *, series_uid: str | None = None, frame: int | None = None
) -> tuple[object, Modality, str]:
    """Read one 3D volume from a DICOM folder.

    Returns (SimpleITK image, modality, sha256 over the files used).
    """
    import SimpleITK as sitk

    slices = _read_headers(folder)
    by_series: dict[str, list[_Slice]] = defaultdict(list)
    for s in slices:
        by_series[s.series_uid].append(s)
    if series_uid is None:
        if len(by_series) > 1:
            listing = "; ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(by_series.items()))
            raise ScanError(folder, f"holds {len(by_series)} series; choose one with --series-uid: {listing}")
        series_uid = next(iter(by_series))
    elif series_uid not in by_series:
        raise ScanError(folder, f"no series with UID {series_uid} (found: {', '.join(sorted(by_series))})")
    series = by_series[series_uid]

    orientation = np.asarray(series[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    by_position: dict[tuple[float, ...], list[_Slice]] = defaultdict(list)
    for s in series:
        key = tuple(np.round(s.position, 2))
        by_position[key].append(s)
    frames_per_position = {len(v) for v in by_position.values()}
    if len(frames_per_position) != 1:
        raise ScanError(folder, f"series {series_uid} has an uneven number of frames per slice position")
    n_frames = frames_per_position.pop()
    if n_frames > 1:
        if frame is None:
            raise ScanError(
                folder, f"series is a 4D cine with {n_frames} frames per slice; choose one with --frame 0..{n_frames - 1}"
            )
        if not 0 <= frame < n_frames:
            raise ScanError(folder, f"--frame {frame} out of range 0..{n_frames - 1}")
    elif frame not in (None, 0):
        raise ScanError(folder, f"--frame {frame} given but the series has one frame")
    chosen: list[_Slice] = []
    for group in by_position.values():
        group.sort(key=lambda s: (s.trigger_time_ms, s.instance))
        chosen.append(group[frame or 0])
    chosen.sort(key=lambda s: float(np.dot(s.position, normal)))
    if len(chosen) < 2:
        raise ScanError(folder, "series has a single slice; a 3D volume is required")
    for s in chosen:
        # GDCM reads a missing or zero PixelSpacing as 1 mm: refuse it instead of guessing.
        ps = s.pixel_spacing
        if len(ps) != 2 or not all(np.isfinite(v) and v > 0 for v in ps):
            shown = "missing" if not ps else "\\".join(f"{v:g}" for v in ps)
            raise ScanError(s.path, f"PixelSpacing {shown}: every spacing must be a positive number of mm "
                                    "(fix the header; it is never guessed)")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in chosen])
    reader.MetaDataDictionaryArrayUpdateOff()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ScanError(folder, f"DICOM pixel data unreadable ({str(exc).strip().splitlines()[-1][:200]})") from None
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(True)
    modality: Modality = {"CT": "CT", "MR": "MR"}.get(series[0].modality, "unknown")  # type: ignore[assignment]
    digest = sha256_paths([s.path for s in chosen], root=folder)
    log.debug("read %d slices of series %s (frame %s)", len(chosen), series_uid, frame)
    return image, modality, digest


def write_dicom_series(
    voxels: np.ndarray,
    geometry,
    folder: str | Path,
    *,
    modality: Modality = "CT",
    series_uid: str | None = None,
    frame_times_ms: list[float] | None = None,
) -> Path:
    """Write a (x, y, z) volume as a DICOM series (one file per slice), synthetic identifiers only.

    Used for phantoms and round-trip tests. With ``frame_times_ms`` and a 4D array (x, y, z, t)
    it writes a cine series (one file per slice and frame, shared SeriesInstanceUID).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vols = [voxels] if voxels.ndim == 3 else [voxels[..., t] for t in range(voxels.shape[3])]
    times = frame_times_ms or [0.0] * len(vols)
    uid_root = "1.2.826.0.1.3680043.2.1125"
    rng = np.random.default_rng(abs(hash(str(folder))) % (2**32))
    series_uid = series_uid or f"{uid_root}.{rng.integers(1, 10**9)}.{rng.integers(1, 10**9)}"
    study_uid = f"{uid_root}.1.{rng.integers(1, 10**9)}"
    # GDCM's DICOM writer switches the process to the C locale (Python's default text encoding becomes
    # ASCII for every later open()); the caller's locale is restored when the series is written
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        return _write_frames(vols, times, geometry, folder, modality=modality, series_uid=series_uid,
                             study_uid=study_uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_frames(vols, times, geometry, folder: Path, *, modality: str, series_uid: str, study_uid: str) -> Path:
    import SimpleITK as sitk

    from cardiotwin.io.sitk import to_sitk

    d = geometry.direction_matrix
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    instance = 0
    for t_index, (vol, t_ms) in enumerate(zip(vols, times)):
        arr = np.round(vol).astype(np.int16)
        image = to_sitk(arr, geometry)
        for k in range(geometry.shape[2]):
            instance += 1
            sl = image[:, :, k]
            pos = geometry.index_to_world(np.array([0.0, 0.0, float(k)]))
            tags = {
                "0008|0060": modality,
                "0010|0010": "PHANTOM^SYNTHETIC",
                "0010|0020": "PHANTOM",
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0008|0018": f"{series_uid}.{instance}",
                "0020|0013": str(instance),
                "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
                "0020|0037": "\\".join(f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])),
                "0018|0050": f"{geometry.spacing_mm[2]:.6f}",
                "0018|1060": f"{t_ms:.3f}",
                "0028|0030": f"{geometry.spacing_mm[1]:.6f}\\{geometry.spacing_mm[0]:.6f}",
            }
            for key, value in tags.items():
                sl.SetMetaData(key, value)
            writer.SetFileName(str(folder / f"IM{t_index:03d}_{k:04d}.dcm"))
            writer.Execute(sl)
    return folder
