"""Reading and writing scans and label maps (NIfTI, NRRD, MHA/MHD, DICOM series).

This and ``io.dicom`` are the only modules that touch file formats of images. Arrays are
returned in ITK index order (x, y, z) with LPS geometry (see ``cardiotwin.types``). Nothing from
a file's header other than geometry (and the DICOM modality) is carried into a ``Scan``, so
patient identifiers can never reach an output.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from cardiotwin.errors import ScanError
from cardiotwin.io.atomic import atomic_path, sha256_file
from cardiotwin.io.sitk import from_sitk, to_sitk
from cardiotwin.types import ImageGeometry, LabelMap, Modality, Scan

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 10.0
# Headers store spacing in float32 (Sunnybrook's 10 mm slices read as 10.000004 mm): allow that slack.
MIN_VOXELS_PER_AXIS = 4
MIN_VOXELS_TOTAL = 4096
MAX_VOXELS_TOTAL = 1 << 30  # 4 GB as float32; refused from the header, before anything is allocated


def image_suffix(path: str | os.PathLike[str]) -> str:
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def read_scan(
    path: str | os.PathLike[str],
    *,
    modality: Modality | None = None,
    series_uid: str | None = None,
    frame: int | None = None,
) -> Scan:
    """Read a 3D scan from an image file or a DICOM series folder and validate it.

    modality: override the detected modality ("CT" or "MR"). For files without a modality
    header it is guessed from intensities (CT has air below -200 HU; MR is non-negative).
    series_uid: which series of a DICOM folder holding several. frame: which time frame of a
    4D image or cine series (0-based).
    Raises ScanError naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir():
        from cardiotwin.io.dicom import read_dicom_series

        image, dicom_modality, digest = read_dicom_series(path, series_uid=series_uid, frame=frame)
        detected: Modality = dicom_modality
    else:
        if series_uid is not None:
            raise ScanError(path, "--series-uid applies to DICOM folders only")
        image = _read_image_file(path)
        digest = sha256_file(path)
        detected = "unknown"
        image = _select_frame(image, path, frame)
    voxels, geometry = _image_to_array(image, path)
    _validate(voxels, geometry, path)
    if modality is None:
        modality = detected if detected != "unknown" else guess_modality(voxels)
    return Scan(voxels=voxels, geometry=geometry, modality=modality, sha256=digest, source=str(path))


def count_frames(path: str | os.PathLike[str], *, series_uid: str | None = None) -> int:
    """Number of time frames of an image file (4D: its 4th size, else 1) or DICOM series folder (cine: frames
    per slice position). Raises ScanError naming the file when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir():
        from cardiotwin.io.dicom import count_dicom_frames

        return count_dicom_frames(path, series_uid=series_uid)
    import SimpleITK as sitk

    if not image_suffix(path):
        raise ScanError(path, f"unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM folder)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ScanError(path, f"unreadable image header ({str(exc).strip().splitlines()[-1][:200]})") from None
    size = reader.GetSize()
    return int(size[3]) if len(size) == 4 else 1


def guess_modality(voxels: np.ndarray) -> Modality:
    """CT when a clear fraction of voxels is air-like in Hounsfield units, else MR."""
    low = float(np.percentile(voxels, 1))
    return "CT" if low < -200.0 else "MR"


def read_labels(path: str | os.PathLike[str]) -> LabelMap:
    """Read a label map; values must be integers in 0..255."""
    path = Path(path)
    if not path.exists():
        raise ScanError(path, "no such label file")
    image = _read_image_file(path)
    arr, geometry = _image_to_array(image, path, dtype=None)
    if not np.all(np.isfinite(arr)):
        raise ScanError(path, "label map contains NaN or Inf")
    if arr.min() < 0 or arr.max() > 255 or not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ScanError(path, "label map values must be integers in 0..255")
    return LabelMap(labels=arr.astype(np.uint8), geometry=geometry, source=str(path))


def write_scan(scan: Scan, path: str | os.PathLike[str]) -> Path:
    """Write a scan atomically; the format follows the extension (.nii.gz, .nrrd, .mha ...).

    Integral intensities that fit int16 (CT in HU, most MR) are stored as int16, others as float32.
    """
    v = scan.voxels
    integral = v.size and float(v.min()) >= -32768 and float(v.max()) <= 32767 and np.array_equal(v, np.round(v))
    return _write_array(v.astype(np.int16 if integral else np.float32), scan.geometry, path)


def write_labels(labels: LabelMap, path: str | os.PathLike[str]) -> Path:
    """Write a label map (uint8) atomically with its geometry."""
    return _write_array(labels.labels.astype(np.uint8), labels.geometry, path)


# -- internals -------------------------------------------------------------------------------


def _read_image_file(path: Path):
    import SimpleITK as sitk

    if not image_suffix(path):
        raise ScanError(
            path, f"unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM folder)"
        )
    if path.stat().st_size == 0:
        raise ScanError(path, "file is empty")
    if image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)  # ITK zero-fills a truncated NIfTI instead of failing
    else:
        check_header_spacing(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((ln for ln in reason if "rror" in ln or "nable" in ln), reason[-1] if reason else "")
        raise ScanError(path, f"unreadable or truncated image ({detail.strip()[:200]})") from None


def _check_nifti_complete(path: Path) -> None:
    """Raise ScanError when a NIfTI file holds fewer voxel bytes than its header announces."""
    import gzip
    import zlib

    import nibabel as nib

    # ITK (and nibabel) read a zero, negative or NaN pixdim as 1 mm with only a warning: refuse it.
    _refuse_bad_spacing(path, _raw_nifti_pixdim(path), "pixdim")
    try:
        nifti = nib.load(str(path))
        header = nifti.header
        shape = [int(n) for n in header.get_data_shape()]
        expected = int(header["vox_offset"]) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    except Exception as exc:  # noqa: BLE001 - any header failure means an unreadable file
        raise ScanError(path, f"unreadable or truncated image (bad NIfTI header: {str(exc)[:150]})") from None
    _refuse_bad_size(path, shape, "dim")
    if image_suffix(path) == ".nii":
        actual = path.stat().st_size
    else:
        actual = 0
        try:
            with gzip.open(path, "rb") as fh:
                while block := fh.read(1 << 22):
                    actual += len(block)
        except (EOFError, OSError, zlib.error) as exc:
            raise ScanError(path, f"unreadable or truncated image (compressed stream ends early: {exc})") from None
    if actual < expected:
        raise ScanError(path, f"unreadable or truncated image ({actual} of {expected} bytes)")
    if header.get_data_dtype().kind == "f":
        # ITK's NIfTI reader turns NaN into 0: check the stored values themselves.
        raw = np.asarray(nifti.dataobj)
        n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if n_bad:
            raise ScanError(path, f"contains {n_bad} NaN/Inf voxels")


def _refuse_bad_spacing(path: Path, spacing: list[float], field: str) -> None:
    if not spacing or any(not np.isfinite(v) or v <= 0 for v in spacing):
        shown = ", ".join(f"{v:g}" for v in spacing) or "none"
        raise ScanError(path, f"header {field} gives voxel spacing ({shown}); every spacing must be a positive number "
                              "of mm (fix the header; it is never guessed)")


_HEADER_BYTES = 1 << 16


def _refuse_bad_size(path: Path, sizes: list[int], field: str) -> None:
    if not sizes or any(n < 1 for n in sizes) or int(np.prod([float(n) for n in sizes])) > MAX_VOXELS_TOTAL:
        shown = "x".join(str(n) for n in sizes) or "none"
        raise ScanError(path, f"header {field} gives {shown} voxels; need 1 or more per axis and at most "
                              f"{MAX_VOXELS_TOTAL} in all")


def _raw_nifti_pixdim(path: Path) -> list[float]:
    """The spatial pixdim values exactly as the NIfTI-1/2 header stores them (readers "fix" them)."""
    import gzip
    import struct
    import zlib

    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ScanError(path, f"unreadable or truncated image ({exc})") from None
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            ndim = struct.unpack(endian + "h", head[40:42])[0]
            pixdim = struct.unpack(endian + "8f", head[76:108])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            ndim = struct.unpack(endian + "q", head[16:24])[0]
            pixdim = struct.unpack(endian + "8d", head[104:168])
            break
    else:
        raise ScanError(path, "unreadable or truncated image (not a NIfTI header: sizeof_hdr is neither 348 nor 540)")
    return [float(v) for v in pixdim[1 : 1 + min(3, max(1, int(ndim)))]]


def check_header_spacing(path: Path) -> None:
    """Refuse an NRRD or MetaImage header whose spacing is 0, negative, NaN or unreadable, or
    whose sizes are not positive or would need more than ``MAX_VOXELS_TOTAL`` voxels.

    ITK substitutes 1 mm for some of these with only a warning, which silently rescales every
    volume and mass computed from the scan. The header is read as text up to its end (the blank
    line of NRRD, the ``ElementDataFile`` line of MetaImage).
    """
    suffix = image_suffix(path)
    if suffix not in (".nrrd", ".nhdr", ".mha", ".mhd"):
        return
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if suffix in (".nrrd", ".nhdr"):
            if not line:
                break
            key, sep, value = line.partition(":")
            if sep and not value.startswith("="):
                fields[key.strip().lower()] = value.strip()
        else:
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
    # ITK crashes (segmentation fault) on some of these instead of raising: check them first
    dim_key = "dimension" if suffix in (".nrrd", ".nhdr") else "ndims"
    for key, bounds in ((dim_key, (1, 4)), ("elementnumberofchannels", (1, 16))):
        if key in fields:
            try:
                value = int(fields[key])
            except ValueError:
                raise ScanError(path, f"header {key} {fields[key][:40]!r} is not an integer") from None
            if not bounds[0] <= value <= bounds[1]:
                raise ScanError(path, f"header {key} {value} outside {bounds[0]}-{bounds[1]}")
    size_key = "sizes" if suffix in (".nrrd", ".nhdr") else "dimsize"
    if size_key in fields:
        try:
            sizes = [int(v) for v in fields[size_key].split()]
        except ValueError:
            raise ScanError(path, f"header {size_key} {fields[size_key][:60]!r} is not a list of integers") from None
        _refuse_bad_size(path, sizes, size_key)
        if dim_key in fields and len(sizes) != int(fields[dim_key]):
            raise ScanError(path, f"header {size_key} has {len(sizes)} values for {fields[dim_key]} dimensions")
    if suffix in (".nrrd", ".nhdr"):
        if "space directions" in fields:
            spacing: list[float] = []
            for vec in re.findall(r"\(([^)]*)\)", fields["space directions"]):
                try:
                    spacing.append(float(np.linalg.norm([float(c) for c in vec.split(",")])))
                except ValueError:
                    spacing.append(float("nan"))
            _refuse_bad_spacing(path, spacing, "'space directions'")
        elif "spacings" in fields:
            _refuse_bad_spacing(path, [_to_float(v) for v in fields["spacings"].split()[:3]], "'spacings'")
        return
    for key in ("elementspacing", "elementsize"):
        if key in fields:
            _refuse_bad_spacing(path, [_to_float(v) for v in fields[key].split()[:3]], key.replace("element", "Element"))


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _select_frame(image, path: Path, frame: int | None):
    import SimpleITK as sitk

    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScanError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar image")
    if dim == 3:
        if frame not in (None, 0):
            raise ScanError(path, f"--frame {frame} given but the image is 3D (one frame)")
        return image
    if dim == 4:
        n_frames = image.GetSize()[3]
        if frame is None:
            raise ScanError(path, f"is 4D with {n_frames} frames; choose one with --frame 0..{n_frames - 1}")
        if not 0 <= frame < n_frames:
            raise ScanError(path, f"--frame {frame} out of range 0..{n_frames - 1}")
        size = list(image.GetSize())
        size[3] = 0
        return sitk.Extract(image, size, [0, 0, 0, frame])
    raise ScanError(path, f"is {dim}D; a 3D volume is required")


def _image_to_array(image, path: Path, dtype=np.float32) -> tuple[np.ndarray, ImageGeometry]:
    if image.GetDimension() != 3:
        raise ScanError(path, f"is {image.GetDimension()}D; a 3D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScanError(path, "is not a scalar image")
    _refuse_bad_size(path, list(image.GetSize()), "size")
    try:
        arr, geometry = from_sitk(image)
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise ScanError(path, f"voxel data could not be read ({str(exc).strip()[:200]})") from None
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr, geometry


def _validate(voxels: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    spacing = np.asarray(geometry.spacing_mm)
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ScanError(path, f"voxel spacing must be positive, got {tuple(spacing.round(4))} mm")
    if np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM + 1e-3):
        raise ScanError(
            path,
            f"voxel spacing {tuple(spacing.round(4))} mm outside the supported {MIN_SPACING_MM}-{MAX_SPACING_MM} mm "
            "(check the header's units)",
        )
    d = geometry.direction_matrix
    if not np.all(np.isfinite(d)) or abs(abs(np.linalg.det(d)) - 1.0) > 1e-3:
        raise ScanError(path, "direction matrix is not a rotation")
    shape = geometry.shape
    if min(shape) < MIN_VOXELS_PER_AXIS or int(np.prod(shape)) < MIN_VOXELS_TOTAL:
        raise ScanError(
            path,
            f"volume too small ({shape[0]}x{shape[1]}x{shape[2]} voxels; need at least "
            f"{MIN_VOXELS_PER_AXIS} per axis and {MIN_VOXELS_TOTAL} in all)",
        )
    finite = np.isfinite(voxels)
    if not finite.all():
        n_bad = int(voxels.size - np.count_nonzero(finite))
        raise ScanError(path, f"contains {n_bad} NaN/Inf voxels")


def _write_array(array: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike[str]) -> Path:
    import SimpleITK as sitk

    path = Path(path)
    if not image_suffix(path):
        raise ScanError(path, f"cannot write this file type (use one of {', '.join(IMAGE_SUFFIXES)})")
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape}")
    image = to_sitk(array, geometry)
    with atomic_path(path) as tmp:
        if image_suffix(path) == ".mhd":
            # MetaImage header + raw: write both, then move the raw next to the final header.
            sitk.WriteImage(image, str(tmp), useCompression=False)
            raw_tmp = tmp.with_suffix(".raw")
            raw_final = path.with_suffix(".raw")
            text = tmp.read_text().replace(raw_tmp.name, raw_final.name)
            tmp.write_text(text)
            os.replace(raw_tmp, raw_final)
        else:
            sitk.WriteImage(image, str(tmp), useCompression=image_suffix(path) in (".nii.gz", ".nrrd", ".mha"))
    return path
