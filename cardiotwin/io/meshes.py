"""HeartMesh <-> files: VTU (all fields, ParaView/pyvista), openCARP .pts/.elem/.lon, and any
meshio format for the rest (XDMF/HDF5 for dolfinx: ``meshing.fem.write_xdmf``). Coordinates stay LPS mm.

VTU layout: two cell blocks, tetra (cell_data ``tag`` = CellTag plus every cell field) and the
boundary triangles (``tag`` = FacetTag); the same tags also as ``cell_tags`` / ``facet_tags``
(0 on the other block); point_data holds every point field.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cardiotwin.errors import StageError
from cardiotwin.io.atomic import atomic_path
from cardiotwin.types import HeartMesh


def to_meshio(mesh: HeartMesh):
    import meshio

    ct, ft = mesh.cell_tags.astype(np.int32), mesh.facet_tags.astype(np.int32)
    # "tag" holds both; "cell_tags" / "facet_tags" repeat them per block (0 on the other block)
    # for readers that look a block's tags up by name.
    cell_data: dict[str, list[np.ndarray]] = {
        "tag": [ct, ft],
        "cell_tags": [ct, np.zeros_like(ft)],
        "facet_tags": [np.zeros_like(ct), ft],
    }
    for name, values in mesh.cell_data.items():
        v = np.asarray(values)
        cell_data[name] = [v, np.zeros((mesh.facets.shape[0],) + v.shape[1:], dtype=v.dtype)]
    return meshio.Mesh(
        points=mesh.points,
        cells=[("tetra", mesh.cells), ("triangle", mesh.facets)],
        point_data={k: np.asarray(v) for k, v in mesh.point_data.items()},
        cell_data=cell_data,
    )


def write_mesh(mesh: HeartMesh, path: str | os.PathLike[str]) -> Path:
    """Write atomically in the format given by the suffix (.vtu recommended; any meshio format)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        to_meshio(mesh).write(tmp)
    return path


def read_mesh(path: str | os.PathLike[str]) -> HeartMesh:
    """Read a mesh written by ``write_mesh`` (tetra + triangle blocks with ``tag``)."""
    import meshio

    path = Path(path)
    try:
        m = meshio.read(path)
    except Exception as exc:  # meshio raises many types for unreadable files
        raise StageError(f"{path}: cannot read mesh ({exc})") from exc
    blocks = {b.type: i for i, b in enumerate(m.cells)}
    if "tetra" not in blocks:
        raise StageError(f"{path}: no tetrahedra in the mesh")
    ti = blocks["tetra"]
    tags = m.cell_data.get("tag")
    if tags is None:
        raise StageError(f"{path}: no 'tag' cell data (cell and facet tags)")
    fi = blocks.get("triangle")
    cell_data = {k: np.asarray(v[ti]) for k, v in m.cell_data.items() if k not in ("tag", "cell_tags", "facet_tags")}
    return HeartMesh(
        points=np.asarray(m.points, dtype=np.float64),
        cells=np.asarray(m.cells[ti].data, dtype=np.int64),
        cell_tags=np.asarray(tags[ti], dtype=np.int32).ravel(),
        facets=np.asarray(m.cells[fi].data, dtype=np.int64) if fi is not None else np.empty((0, 3), np.int64),
        facet_tags=np.asarray(tags[fi], dtype=np.int32).ravel() if fi is not None else np.empty(0, np.int32),
        point_data={k: np.asarray(v) for k, v in m.point_data.items()},
        cell_data=cell_data,
        name=path.stem,
    )


def write_opencarp(mesh: HeartMesh, stem: str | os.PathLike[str]) -> list[Path]:
    """openCARP files ``stem.pts`` (micrometres, as openCARP expects), ``stem.elem`` (Tt with the
    cell tag as region) and, when f0/s0 exist as cell or point data, ``stem.lon`` (per element,
    2 vectors: fibre and sheet)."""
    stem = Path(stem)
    out = []
    pts = stem.with_suffix(".pts")
    with atomic_path(pts) as tmp:
        with open(tmp, "w") as fh:
            fh.write(f"{mesh.n_points}\n")
            np.savetxt(fh, mesh.points * 1000.0, fmt="%.3f")
    out.append(pts)
    elem = stem.with_suffix(".elem")
    with atomic_path(elem) as tmp:
        with open(tmp, "w") as fh:
            fh.write(f"{mesh.n_cells}\n")
            data = np.column_stack([mesh.cells, mesh.cell_tags])
            np.savetxt(fh, data, fmt="Tt %d %d %d %d %d")
    out.append(elem)
    f0 = mesh.cell_data.get("f0")
    s0 = mesh.cell_data.get("s0")
    if f0 is None and "f0" in mesh.point_data:
        f0 = mesh.point_data["f0"][mesh.cells].mean(axis=1)
        s0 = mesh.point_data["s0"][mesh.cells].mean(axis=1) if "s0" in mesh.point_data else None
    if f0 is not None:
        f0 = f0 / np.linalg.norm(f0, axis=1, keepdims=True)
        lon = stem.with_suffix(".lon")
        with atomic_path(lon) as tmp:
            with open(tmp, "w") as fh:
                if s0 is not None:
                    s0 = s0 - np.einsum("ij,ij->i", s0, f0)[:, None] * f0
                    s0 /= np.linalg.norm(s0, axis=1, keepdims=True)
                    fh.write("2\n")
                    np.savetxt(fh, np.column_stack([f0, s0]), fmt="%.6f")
                else:
                    fh.write("1\n")
                    np.savetxt(fh, f0, fmt="%.6f")
        out.append(lon)
    return out
