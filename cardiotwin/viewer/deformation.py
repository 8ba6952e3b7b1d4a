"""Displacement over the beat from the electromechanics stage's ``displacement.xdmf``.

dolfinx's ``XDMFFile.write_mesh`` + ``write_function(u, t)`` writes one mesh grid (geometry in
HDF5) and a temporal collection of grids, each with a ``Time`` value and a nodal vector
``Attribute`` (P1 values on the geometry nodes, in the file's node order). The file's nodes are
renumbered by dolfinx, so values are matched to the review surface by nearest position.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.errors import CaseError

log = logging.getLogger(__name__)


def _hdf5_item(xdmf: Path, item: ET.Element) -> np.ndarray:
    import h5py

    text = (item.text or "").strip()
    if item.get("Format") != "HDF" or ":" not in text:
        raise CaseError(f"{xdmf}: only HDF5 data items are supported (got {item.get('Format')!r})")
    fname, dset = text.split(":", 1)
    h5 = (xdmf.parent / fname).resolve()
    if not h5.is_relative_to(xdmf.parent.resolve()) or not h5.is_file():
        raise CaseError(f"{xdmf}: data file {fname!r} is missing or outside the stage folder")
    with h5py.File(h5, "r") as f:
        return np.asarray(f[dset])


def read_displacement_series(path: Path, surface_mm: np.ndarray, *, max_frames: int = 40) -> dict[str, Any]:
    """Frames of displacement (mm) at the surface vertices ``surface_mm`` (V, 3).

    Returns ``{"times_ms": [...], "displacement_mm": encoded (F, V, 3) float32, "max_mm": float}``
    with at most ``max_frames`` frames (evenly strided). Raises ``CaseError`` when the file has no
    time series, h5py is missing, or the geometry does not match the surface.
    """
    from scipy.spatial import cKDTree

    from cardiotwin.viewer.encoding import encode_array

    try:
        import h5py  # noqa: F401
    except ImportError:
        raise CaseError(f"{path}: reading the deformation needs h5py (pip install h5py)") from None
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise CaseError(f"{path}: unreadable XDMF ({exc})") from None
    geo = root.find(".//Geometry/DataItem")
    if geo is None:
        raise CaseError(f"{path}: no mesh geometry")
    points = _hdf5_item(path, geo).reshape(-1, 3)
    frames: list[tuple[float, ET.Element]] = []
    for grid in root.iter("Grid"):
        time = grid.find("Time")
        attr = grid.find("Attribute")
        if time is not None and attr is not None and attr.find("DataItem") is not None:
            frames.append((float(time.get("Value", "nan")), attr.find("DataItem")))  # type: ignore[arg-type]
    if not frames:
        raise CaseError(f"{path}: no time series of displacement")
    frames.sort(key=lambda f: f[0])
    step = max(1, int(np.ceil(len(frames) / max_frames)))
    frames = frames[::step]
    dist, nearest = cKDTree(points).query(surface_mm)
    scale = float(np.ptp(points, axis=0).max())
    if float(dist.max()) > 1e-3 * max(scale, 1.0):
        raise CaseError(f"{path}: its mesh does not match the review mesh (max distance {dist.max():.3g} mm)")
    disp = np.stack([_hdf5_item(path, item).reshape(-1, 3)[nearest] for _, item in frames])
    return {"times_ms": [t for t, _ in frames], "displacement_mm": encode_array(disp, "float32"),
            "max_mm": float(np.linalg.norm(disp, axis=2).max())}
