"""Electromechanics inputs from files and outputs to files (metrics JSON, PV loops PNG, curves CSV).

Input file (``activation.vtu`` of the EP stage): a tetrahedral mesh in LPS mm with point data
``activation_time_ms`` and ``f0`` (fibres; ``s0``/``n0`` optional; with the fibres stage's
``fibers.ldrb.RULE_FIELDS`` the beat evaluates the fibre rule at its quadrature points), a ``triangle`` block with
cell data ``facet_tags`` (``anatomy.FacetTag``) for the boundary, and optionally ``aha`` (cell
data on the tetrahedra or point data, segments 0-17).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cardiotwin.errors import CaseError
from cardiotwin.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from cardiotwin.types import HeartMesh, MechResult

if TYPE_CHECKING:
    import ufl
    from mpi4py import MPI

    from cardiotwin.mechanics.electromechanics import BeatInputs
    from cardiotwin.mechanics.problem import FibresAtDegree
    from cardiotwin.meshing.fem import DolfinxHeart

log = logging.getLogger(__name__)


def read_em_mesh(path: Path) -> tuple[HeartMesh, np.ndarray]:
    """(HeartMesh with f0 (and aha) fields, activation times (N,) ms) from an activation.vtu."""
    import meshio

    from cardiotwin.fibers.ldrb import RULE_FIELDS

    try:
        m = meshio.read(path)
    except Exception as exc:  # meshio raises many types
        raise CaseError(f"{path}: cannot read mesh ({exc})") from None
    tets = [(i, b) for i, b in enumerate(m.cells) if b.type == "tetra"]
    tris = [(i, b) for i, b in enumerate(m.cells) if b.type == "triangle"]
    if not tets:
        raise CaseError(f"{path}: no tetrahedra")
    if "activation_time_ms" not in m.point_data:
        raise CaseError(f"{path}: no point data 'activation_time_ms' (run `cardiotwin simulate ep` first)")
    if "f0" not in m.point_data:
        raise CaseError(f"{path}: no fibre field 'f0' in the point data (run `cardiotwin fibers` first)")
    ft_key = next((k for k in ("facet_tags", "tags", "gmsh:physical") if k in m.cell_data), None)
    if not tris or ft_key is None:
        raise CaseError(f"{path}: no tagged boundary triangles (a 'triangle' block with cell data 'facet_tags')")
    ti, tb = tets[0]
    fi, fb = tris[0]
    cell_data = {}
    if "aha" in m.cell_data:
        cell_data["aha"] = np.asarray(m.cell_data["aha"][ti]).astype(np.int32)
    elif "aha" in m.point_data:
        # the fibres stage writes AHA segments per node: a cell takes the segment most of its
        # vertices carry (the median of the four sorted labels is a majority label whenever one exists)
        per_vertex = np.rint(np.asarray(m.point_data["aha"], dtype=float))[np.asarray(tb.data)]
        cell_data["aha"] = np.sort(per_vertex, axis=1)[:, 1].astype(np.int32)
    cell_tags = np.asarray(m.cell_data["cell_tags"][ti], dtype=np.int32) if "cell_tags" in m.cell_data \
        else np.ones(len(tb.data), dtype=np.int32)
    f0 = np.asarray(m.point_data["f0"], dtype=float)
    if not np.all(np.isfinite(f0)) or np.any(np.linalg.norm(f0, axis=1) < 1e-6):
        raise CaseError(f"{path}: fibre field f0 has zero or non-finite vectors")
    mesh = HeartMesh(points=np.asarray(m.points, dtype=float), cells=np.asarray(tb.data, dtype=np.int64),
                     cell_tags=cell_tags, facets=np.asarray(fb.data, dtype=np.int64),
                     facet_tags=np.asarray(m.cell_data[ft_key][fi], dtype=np.int32),
                     point_data={"f0": f0, **{k: np.asarray(m.point_data[k], dtype=float) for k in RULE_FIELDS
                                              if k in m.point_data}},
                     cell_data=cell_data, name=path.stem)
    return mesh, np.asarray(m.point_data["activation_time_ms"], dtype=float)


def beat_fibres(heart: "DolfinxHeart", f0: np.ndarray, rule: tuple[np.ndarray, np.ndarray] | None,
                ) -> "tuple[ufl.core.expr.Expr, ...] | FibresAtDegree":
    """The beat's fibres: the rule-based fibres at the mechanics' quadrature points
    (``fibers.quadrature``) where the mesh carries the rule's inputs (``rule``, from
    ``fibers.quadrature.rule_point_data``), else the nodal ``f0`` (N, 3) normalised per point."""
    import dolfinx

    from cardiotwin.fibers.ldrb import RULE_FIELDS
    from cardiotwin.fibers.quadrature import quadrature_fibres
    from cardiotwin.mechanics.land import orthonormal_frame
    from cardiotwin.meshing.fem import point_field_to_function

    if rule is not None:
        return lambda degree: quadrature_fibres(heart, rule[0], rule[1], degree=degree)
    log.info("mesh without the fibre rule's fields (%s): nodal fibres interpolated linearly", ", ".join(RULE_FIELDS))
    return orthonormal_frame(point_field_to_function(heart, f0, dolfinx.fem.functionspace(
        heart.mesh, ("Lagrange", 1, (3,)))))


def beat_inputs_from_file(vtu: Path) -> "BeatInputs":
    """Mesh, fibres (f0), activation times and AHA segments of an activation.vtu, distributed
    over the ranks of ``MPI.COMM_WORLD``."""
    from mpi4py import MPI

    from cardiotwin.fibers.quadrature import rule_point_data
    from cardiotwin.meshing.tets import require_face_connected

    comm = MPI.COMM_WORLD
    hm, shared = None, None
    if comm.rank == 0:
        hm, act = read_em_mesh(vtu)
        require_face_connected(hm.cells, source=str(vtu))
        aha = hm.cell_data.get("aha")
        shared = (hm.point_data["f0"], rule_point_data(hm), None if aha is None else aha.astype(float), act)
    return _distributed_inputs(hm, comm.bcast(shared, root=0), comm)


def beat_inputs_from_mesh(mesh: HeartMesh | None, activation_times_ms: np.ndarray | None, comm: "MPI.Comm",
                          *, source: str = "mesh") -> "BeatInputs":
    """A beat's inputs from a case mesh (``io.meshes.read_mesh``: point data ``f0``, optional ``aha``
    and the fibre rule's fields) and activation times (N,) ms, distributed over ``comm``: ``mesh`` and
    the times are needed on rank 0 only. Non-finite times (scar core) become the latest finite time
    (those points never contract usefully, and the twitch needs a number); a cell's AHA segment is
    the largest of its vertices'."""
    from cardiotwin.fibers.quadrature import rule_point_data
    from cardiotwin.meshing.tets import require_face_connected

    shared = None
    if comm.rank == 0:
        require_face_connected(mesh.cells, source=source)
        act = np.asarray(activation_times_ms, dtype=float).copy()
        act[~np.isfinite(act)] = np.nanmax(act[np.isfinite(act)])
        cell_aha = (np.max(np.asarray(mesh.point_data["aha"])[mesh.cells], axis=1).astype(float)
                    if "aha" in mesh.point_data else None)
        shared = (np.asarray(mesh.point_data["f0"], dtype=float), rule_point_data(mesh), cell_aha, act)
    return _distributed_inputs(mesh, comm.bcast(shared, root=0), comm)


def _distributed_inputs(mesh: HeartMesh | None, shared: tuple, comm: "MPI.Comm") -> "BeatInputs":
    """BeatInputs on ``comm`` from the mesh (rank 0) and (f0, fibre rule inputs, cell AHA segments or
    None, activation times) given on every rank."""
    import dolfinx

    from cardiotwin.mechanics.electromechanics import BeatInputs
    from cardiotwin.meshing.fem import cell_field_to_function, point_field_to_function, to_dolfinx

    f0, rule, cell_aha, act = shared
    heart = to_dolfinx(mesh, comm)
    a = point_field_to_function(heart, act, dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1)))
    aha = None
    if cell_aha is not None:
        aha = cell_field_to_function(heart, cell_aha, dolfinx.fem.functionspace(heart.mesh, ("DG", 0)))
    return BeatInputs(mesh=heart.mesh, facet_tags=heart.facet_tags, fibres=beat_fibres(heart, f0, rule), activation=a,
                      aha=aha)


def result_to_dict(result: MechResult) -> dict[str, object]:
    """JSON-ready metrics (curves included)."""
    return {
        "edv_ml": result.edv_ml, "esv_ml": result.esv_ml, "stroke_volume_ml": result.stroke_volume_ml,
        "ejection_fraction": result.ejection_fraction, "dpdt_max_kpa_per_ms": result.dpdt_max_kpa_per_ms,
        "dpdt_max_mmhg_per_s": {k: v / 0.133322387415 * 1000.0 for k, v in result.dpdt_max_kpa_per_ms.items()},
        "stroke_work_mj": result.stroke_work_mj,
        "aha_fibre_strain_end_systole": {str(k): v for k, v in result.aha_fibre_strain.items()},
        "times_ms": result.times_ms.tolist(),
        "lv_pressure_kpa": result.lv_pressure_kpa.tolist(), "lv_volume_ml": result.lv_volume_ml.tolist(),
        "rv_pressure_kpa": result.rv_pressure_kpa.tolist(), "rv_volume_ml": result.rv_volume_ml.tolist(),
        "metadata": {k: v for k, v in result.metadata.items() if k != "aha_strain_curves"},
    }


def write_outputs(result: MechResult, out_dir: Path) -> dict[str, Path]:
    """metrics.json, curves.csv and pv_loops.png in ``out_dir`` (atomic writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json", "curves": out_dir / "curves.csv", "pv_loops": out_dir / "pv_loops.png"}
    write_json_atomic(paths["metrics"], result_to_dict(result))
    cols = [result.times_ms, result.lv_pressure_kpa, result.lv_volume_ml]
    header = "time_ms,lv_pressure_kpa,lv_volume_ml"
    if result.rv_volume_ml.size:
        cols += [result.rv_pressure_kpa, result.rv_volume_ml]
        header += ",rv_pressure_kpa,rv_volume_ml"
    rows = "\n".join(",".join(f"{v:.6g}" for v in row) for row in np.column_stack(cols))
    write_text_atomic(paths["curves"], header + "\n" + rows + "\n")
    fig, ax = plt.subplots(figsize=(5, 4))
    mmhg = 0.133322387415
    ax.plot(result.lv_volume_ml, result.lv_pressure_kpa / mmhg, "-o", ms=2, label="LV")
    if result.rv_volume_ml.size:
        ax.plot(result.rv_volume_ml, result.rv_pressure_kpa / mmhg, "-o", ms=2, label="RV")
    ax.set_xlabel("volume (mL)")
    ax.set_ylabel("pressure (mmHg)")
    ax.set_title("pressure-volume loops")
    ax.legend()
    fig.tight_layout()
    with atomic_path(paths["pv_loops"]) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return paths
