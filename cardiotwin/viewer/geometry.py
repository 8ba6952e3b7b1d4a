"""Geometry for the review: mesh boundary surfaces, label surfaces, isochrones, fibre glyphs.

Pure numpy/scipy/scikit-image (no rendering here); coordinates are LPS mm throughout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cardiotwin.errors import CaseError
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeMesh:
    """Tetrahedra with point fields as read from a .vtu: points (N, 3) mm, cells (M, 4),
    boundary triangles (F, 3) when the file has them (else empty)."""

    points: np.ndarray
    cells: np.ndarray
    triangles: np.ndarray
    point_data: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SurfaceMesh:
    """A triangle surface: vertices (V, 3) mm, faces (F, 3) into vertices, edges (E, 2) unique,
    point_ids (V,) the volume-mesh node of each vertex."""

    vertices_mm: np.ndarray
    faces: np.ndarray
    edges: np.ndarray
    point_ids: np.ndarray


@dataclass(frozen=True)
class LabelSurface:
    label: int
    vertices_mm: np.ndarray
    faces: np.ndarray


def read_volume_mesh(path: Path) -> VolumeMesh:
    """Read any meshio-readable tetrahedral mesh (the first tetra block, the first triangle block)."""
    import meshio

    try:
        m = meshio.read(path)
    except Exception as exc:  # meshio raises many exception types for unreadable files
        raise CaseError(f"{path}: cannot read mesh ({exc})") from None
    tets = next((b.data for b in m.cells if b.type == "tetra"), None)
    if tets is None:
        raise CaseError(f"{path}: no tetrahedra in the mesh")
    tris = next((b.data for b in m.cells if b.type == "triangle"), np.empty((0, 3), np.int64))
    return VolumeMesh(points=np.asarray(m.points, dtype=float), cells=np.asarray(tets, dtype=np.int64),
                      triangles=np.asarray(tris, dtype=np.int64),
                      point_data={k: np.asarray(v) for k, v in m.point_data.items()})


def boundary_faces(cells: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) that belong to exactly one tetrahedron, oriented outwards."""
    local = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
    faces = cells[:, local].reshape(-1, 3)
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.ravel()] == 1]


def boundary_surface(mesh: VolumeMesh) -> SurfaceMesh:
    """The boundary of a tetrahedral mesh as a compact triangle surface with its node map."""
    faces = boundary_faces(mesh.cells)
    point_ids, compact = np.unique(faces, return_inverse=True)
    faces_c = compact.reshape(-1, 3).astype(np.int64)
    edges = np.sort(np.concatenate([faces_c[:, [0, 1]], faces_c[:, [1, 2]], faces_c[:, [2, 0]]]), axis=1)
    edges = np.unique(edges, axis=0)
    return SurfaceMesh(vertices_mm=mesh.points[point_ids], faces=faces_c, edges=edges, point_ids=point_ids)


def isochrone_segments(vertices: np.ndarray, faces: np.ndarray, values: np.ndarray,
                       levels: np.ndarray) -> np.ndarray:
    """Line segments (K, 2, 3) where the piecewise-linear field ``values`` (V,) crosses each level.

    Marching triangles: a vertex counts as above a level when ``value >= level``, so every
    triangle is crossed on exactly 0 or 2 edges and the lines are closed across neighbours.
    Triangles with a non-finite value are skipped.
    """
    values = np.asarray(values, dtype=float)
    out = []
    tri_v = values[faces]  # (F, 3)
    ok = np.all(np.isfinite(tri_v), axis=1)
    f = faces[ok]
    tv = tri_v[ok]
    tp = vertices[f]  # (F, 3, 3)
    edge_pairs = ((0, 1), (1, 2), (2, 0))
    for level in np.asarray(levels, dtype=float):
        above = tv >= level
        pts = []
        masks = []
        for a, b in edge_pairs:
            cross = above[:, a] != above[:, b]
            denom = tv[:, b] - tv[:, a]
            t = np.where(cross, (level - tv[:, a]) / np.where(denom == 0, 1.0, denom), 0.0)
            pts.append(tp[:, a] + t[:, None] * (tp[:, b] - tp[:, a]))
            masks.append(cross)
        m = np.stack(masks, axis=1)  # (F, 3)
        hit = m.sum(axis=1) == 2
        if not np.any(hit):
            continue
        p = np.stack(pts, axis=1)[hit]  # (H, 3 edges, 3)
        mh = m[hit]
        first = np.argmax(mh, axis=1)
        second = 2 - np.argmax(mh[:, ::-1], axis=1)
        rows = np.arange(p.shape[0])
        out.append(np.stack([p[rows, first], p[rows, second]], axis=1))
    return np.concatenate(out) if out else np.empty((0, 2, 3))


def aha_means(aha: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """Mean of ``values`` over the nodes of each AHA segment 1-17 present (0 = not LV is left out)."""
    aha = np.asarray(aha).astype(int)
    values = np.asarray(values, dtype=float)
    out = {}
    for seg in range(1, 18):
        sel = (aha == seg) & np.isfinite(values)
        if np.any(sel):
            out[seg] = float(values[sel].mean())
    return out


def fibre_segments(points: np.ndarray, cells: np.ndarray, f0: np.ndarray, *, max_fibres: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fibre glyphs: segments (K, 2, 3) mm centred on sampled nodes along f0, and their colours
    (K, 2, 3) uint8 from the absolute fibre direction (|x|, |y|, |z| -> R, G, B, the DTI
    convention). The glyph length is 1.6 mean edge lengths."""
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    pick = np.sort(rng.choice(n, size=min(max_fibres, n), replace=False))
    e = points[cells[:, 1]] - points[cells[:, 0]]
    length = 1.6 * float(np.mean(np.linalg.norm(e, axis=1)))
    d = f0[pick] / np.maximum(np.linalg.norm(f0[pick], axis=1, keepdims=True), 1e-12)
    seg = np.stack([points[pick] - 0.5 * length * d, points[pick] + 0.5 * length * d], axis=1)
    rgb = np.rint(np.abs(d) * 200.0 + 40.0).astype(np.uint8)
    return seg, np.stack([rgb, rgb], axis=1)


def label_surfaces(labels: LabelMap, *, voxels_per_axis: int = 72, sigma_vox: float = 0.7) -> list[LabelSurface]:
    """A smooth surface (marching cubes at 0.5 of the Gaussian-smoothed mask) per present label.

    The label map is strided to at most ``voxels_per_axis`` voxels per axis first; vertices are
    mapped to LPS mm through the label map's geometry (direction included).
    """
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    geometry = labels.geometry
    stride = max(1, math.ceil(max(geometry.shape) / voxels_per_axis))
    lab = labels.labels[::stride, ::stride, ::stride]
    out = []
    for label in sorted(int(v) for v in np.unique(lab) if v != 0):
        mask = np.pad((lab == label).astype(np.float32), 1)
        if mask.sum() < 8:
            continue
        smooth = gaussian_filter(mask, sigma_vox)
        if smooth.max() <= 0.5:
            continue
        verts, faces, _, _ = marching_cubes(smooth, level=0.5)
        ijk = (verts - 1.0) * stride  # undo the padding and the stride
        out.append(LabelSurface(label=label, vertices_mm=geometry.index_to_world(ijk),
                                faces=faces.astype(np.int64)))
    log.debug("label surfaces for %d labels at stride %d", len(out), stride)
    return out
