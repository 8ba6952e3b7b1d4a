"""Heart pose search for short-axis stacks whose direction matrix cannot be trusted (3D world-grid networks).

A 3D network that works on a world-aligned grid (the default ``heart_seg_v1``) recognises a heart only
in the poses it was trained on (the phantom's anatomical pose with some tens of degrees of jitter).
Research exports of cine stacks often carry an identity or wrong direction matrix, which puts the
short-axis stack into world space as if it were axial: the network then finds no heart.

``search_pose`` tries candidate direction matrices for the stack, all with the slice axis along the
shape model's nominal long axis (either sign), the in-plane axes at ``n_angles`` rotations about it,
either handedness, plus the header's own direction. Each candidate is scored by one network window
(``roi``^3 at the bundle's spacing) centred on the middle of the stack: the score is the network's
mean confidence (largest class probability) over the voxels it calls LV blood pool, LV myocardium
or RV blood pool. In a wrong pose the network still paints a heart there (a cine stack's middle is
the heart), but less surely; on the Sunnybrook stacks with their true headers the most confident
candidate was within 30 degrees of the true pose in 5 of 6 stacks (the sixth: its mirror image;
models/heart_seg_v1/MODEL_CARD.md). The best candidate is used for the whole segmentation; the labels come back
on the stack's own voxel grid whatever direction was used, so only the scan's header changes. The
header's own direction is kept unless a candidate is more confident by ``margin``, so correctly
oriented scans keep their pose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from cardiotwin.anatomy import Label
from cardiotwin.phantom import NOMINAL_APEX_DIRECTION, NOMINAL_TO_RV
from cardiotwin.segmentation.synth import normalise_intensities
from cardiotwin.types import ImageGeometry, Scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoseResult:
    """The chosen direction and the score of every candidate (name -> score)."""

    direction: tuple[float, ...]
    name: str
    scores: dict[str, float]

    @property
    def changed(self) -> bool:
        return self.name != "header"


def heart_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (LPS) of the shape model's nominal heart frame: x, y (LV towards RV), z (apex to base)."""
    z = -np.asarray(NOMINAL_APEX_DIRECTION, dtype=float)
    z /= np.linalg.norm(z)
    y = np.asarray(NOMINAL_TO_RV, dtype=float) - np.dot(NOMINAL_TO_RV, z) * z
    y /= np.linalg.norm(y)
    return np.cross(y, z), y, z


def candidate_directions(slice_axis: int, n_angles: int = 8) -> list[tuple[str, np.ndarray]]:
    """Direction matrices (columns: world direction of the i, j, k index axes) putting ``slice_axis``
    along the nominal long axis (+ or -), the two in-plane axes at ``n_angles`` rotations, either handedness."""
    x, y, z = heart_frame()
    plane = [a for a in range(3) if a != slice_axis]
    out = []
    for sign in (1.0, -1.0):
        for mirror in (1.0, -1.0):
            for k in range(n_angles):
                t = 2 * np.pi * k / n_angles
                d = np.zeros((3, 3))
                d[:, plane[0]] = np.cos(t) * x + np.sin(t) * y
                d[:, plane[1]] = mirror * (-np.sin(t) * x + np.cos(t) * y)
                d[:, slice_axis] = sign * z
                out.append((f"{'+' if sign > 0 else '-'}z{'m' if mirror < 0 else ''} {round(360 * k / n_angles)}deg", d))
    return out


def _window(vox: np.ndarray, geometry: ImageGeometry, direction: np.ndarray, *, roi: int, spacing_mm: float):
    """(roi, roi, roi) image on a world-aligned grid of ``spacing_mm`` centred on the stack's middle voxel,
    with the stack placed by ``direction``; voxels outside the stack are 0 (``vox`` already normalised)."""
    from scipy import ndimage

    sp = np.asarray(geometry.spacing_mm, dtype=float)
    centre_idx = (np.asarray(vox.shape, dtype=float) - 1) / 2.0
    half = (roi - 1) / 2.0
    g = (np.arange(roi) - half) * spacing_mm
    world = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # offsets from the centre, mm
    idx = (world @ direction) / sp + centre_idx  # direction is orthogonal: inverse = transpose
    out = ndimage.map_coordinates(vox, idx.T, order=1, mode="constant", cval=-1.0).reshape(roi, roi, roi)
    inside = out > -0.5
    return np.where(inside, out, 0.0).astype(np.float32)


@torch.no_grad()
def search_pose(network: torch.nn.Module, scan: Scan, *, slice_axis: int, roi: int, spacing_mm: float,
                n_angles: int = 8, margin: float = 0.01) -> PoseResult:
    """The direction matrix under which ``network`` finds the most heart in the stack (module docstring)."""
    from scipy import ndimage

    vox = np.asarray(scan.voxels, dtype=np.float32)
    # the stack smoothed in-plane to the working spacing, as the working-grid resampling does
    sp = np.asarray(scan.geometry.spacing_mm, dtype=float)
    sigma = 0.4 * np.sqrt(np.maximum(spacing_mm**2 - sp**2, 0.0)) / sp
    if np.any(sigma > 0.05):
        vox = ndimage.gaussian_filter(vox, sigma=tuple(float(s) for s in sigma))
    norm = normalise_intensities(torch.from_numpy(vox), torch.ones(vox.shape, dtype=torch.bool), modality="MR").numpy()
    network.eval()
    cands = [("header", scan.geometry.direction_matrix)] + candidate_directions(slice_axis, n_angles)
    scores: dict[str, float] = {}
    for name, d in cands:
        x = torch.from_numpy(_window(norm, scan.geometry, d, roi=roi, spacing_mm=spacing_mm))[None, None]
        p = torch.softmax(network(x)[0].float(), dim=0)
        best, arg = p.max(0)
        heart = (arg == Label.LV_BLOOD) | (arg == Label.LV_MYO) | (arg == Label.RV_BLOOD)
        scores[name] = float(best[heart].mean()) if bool(heart.any()) else 0.0
    header = scores["header"]
    name = max(scores, key=lambda k: scores[k])
    if scores[name] < header + margin:
        name = "header"
    direction = dict(cands)[name]
    log.info("pose search: %s (confidence %.3f; header %.3f)", name, scores[name], header)
    return PoseResult(direction=tuple(float(v) for v in np.asarray(direction).ravel()), name=name, scores=scores)


def with_direction(scan: Scan, direction: tuple[float, ...]) -> Scan:
    """The scan with another direction matrix, its middle voxel kept at the same world position."""
    g = scan.geometry
    centre_idx = (np.asarray(g.shape, dtype=float) - 1) / 2.0
    centre = g.index_to_world(centre_idx[None])[0]
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    origin = centre - d @ (np.asarray(g.spacing_mm) * centre_idx)
    return replace(scan, geometry=replace(g, direction=tuple(direction), origin_mm=tuple(float(v) for v in origin)))
