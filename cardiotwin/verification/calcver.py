"""Calculation verification on the patient: mesh refinement of the activation solve, with GCI.

The patient's fibre mesh (``fibers/mesh.vtu``) is refined uniformly (every tetrahedron split
into 8 at its edge midpoints; fields interpolated linearly; original points keep their
indices, so lead and breakthrough nodes are unchanged) and the baseline (LBBB) activation is
solved again on each level exactly as the CRT stage solves it: ``therapy.sweep.solve_protocol``
of ``therapy.protocols.baseline_protocol`` with the stage's activation solver
(``therapy.solver.eikonal_solver``, bound to ``electrophysiology.eikonal``) and the conduction
configuration recorded by the case's ``therapy`` stage (nominal ``ConductionConfig`` when that
stage has not run). Outputs: total activation time (TAT), LV activation time and t90 per level,
and their GCI (Celik et al. 2008). The eikonal discretisation is first order, so the two-level
GCI uses p = 1 with Fs = 3.

Results go to the ``calcver`` stage (``calcver/calcver.json``) with a list ``unavailable`` of
studies that could not run and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiotwin.verification.case_inputs import case_conduction, find_activation_solver
from cardiotwin.verification.gci import grid_convergence
from cardiotwin.types import HeartMesh

if TYPE_CHECKING:
    from cardiotwin.cases import Case
    from cardiotwin.therapy.conduction import ConductionConfig

log = logging.getLogger(__name__)

CALCVER_STAGE = "calcver"
_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
# children of a tet (vertices 0-3, edge midpoints 4-9 in _TET_EDGES order)
_CHILDREN = ((0, 4, 5, 6), (4, 1, 7, 8), (5, 7, 2, 9), (6, 8, 9, 3),
             (4, 5, 6, 8), (4, 5, 7, 8), (5, 6, 8, 9), (5, 7, 8, 9))


def refine_uniform(mesh: HeartMesh) -> HeartMesh:
    """Split every tetrahedron into 8 and every boundary triangle into 4 (edge midpoints).

    Point data are interpolated linearly (unit-vector fields renormalised), cell data and tags
    are inherited; original points keep their indices (new points are appended).
    """
    cells = mesh.cells
    edges = np.concatenate([cells[:, [a, b]] for a, b in _TET_EDGES])
    edges = np.sort(edges, axis=1)
    uniq, inverse = np.unique(edges, axis=0, return_inverse=True)
    n0 = mesh.n_points
    mid_index = n0 + inverse.reshape(len(_TET_EDGES), -1).T  # (M, 6)
    points = np.concatenate([mesh.points, 0.5 * (mesh.points[uniq[:, 0]] + mesh.points[uniq[:, 1]])])
    local = np.concatenate([cells, mid_index], axis=1)  # (M, 10)
    new_cells = np.concatenate([local[:, list(ch)] for ch in _CHILDREN])
    parent = np.tile(np.arange(len(cells)), len(_CHILDREN))
    # facets: midpoints looked up from the same edge table
    lookup = {tuple(e): n0 + i for i, e in enumerate(uniq.tolist())}
    tris = mesh.facets
    m = np.array([[lookup[tuple(sorted((int(t[a]), int(t[b]))))] for a, b in ((0, 1), (1, 2), (0, 2))] for t in tris],
                 dtype=np.int64).reshape(-1, 3)
    new_facets = np.concatenate([np.stack([tris[:, 0], m[:, 0], m[:, 2]], 1), np.stack([m[:, 0], tris[:, 1], m[:, 1]], 1),
                                 np.stack([m[:, 2], m[:, 1], tris[:, 2]], 1), np.stack([m[:, 0], m[:, 1], m[:, 2]], 1)])
    point_data = {}
    for name, v in mesh.point_data.items():
        v = np.asarray(v)
        if v.shape[0] != n0:
            continue
        mid = 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]]) if v.dtype.kind == "f" else v[uniq[:, 0]]
        if v.ndim == 2 and v.shape[1] == 3 and name in ("f0", "s0", "n0"):
            norm = np.linalg.norm(mid, axis=1, keepdims=True)
            mid = np.where(norm > 1e-12, mid / np.maximum(norm, 1e-12), v[uniq[:, 0]])
        point_data[name] = np.concatenate([v, mid])
    cell_data = {k: np.asarray(v)[parent] for k, v in mesh.cell_data.items() if np.asarray(v).shape[0] == len(cells)}
    return HeartMesh(points=points, cells=new_cells, cell_tags=mesh.cell_tags[parent], facets=new_facets,
                     facet_tags=np.tile(mesh.facet_tags, 4), point_data=point_data, cell_data=cell_data,
                     name=f"{mesh.name}-refined")


def mean_edge_mm(mesh: HeartMesh) -> float:
    e = np.concatenate([mesh.cells[:, [a, b]] for a, b in _TET_EDGES])
    return float(np.linalg.norm(mesh.points[e[:, 0]] - mesh.points[e[:, 1]], axis=1).mean())


def mesh_refinement_study(mesh: HeartMesh, solver: Callable[..., np.ndarray], *, levels: int = 2,
                          conduction: "ConductionConfig | None" = None) -> dict[str, Any]:
    """Baseline activation metrics on ``levels`` uniformly refined meshes and their GCI.

    Each level is solved by the CRT stage's own baseline path (``solve_protocol`` of the LBBB
    baseline protocol) with ``solver`` and ``conduction`` (nominal when None).
    """
    from cardiotwin.therapy.conduction import ConductionConfig
    from cardiotwin.therapy.protocols import baseline_protocol
    from cardiotwin.therapy.sweep import solve_protocol

    cfg = conduction or ConductionConfig()
    t0 = time.perf_counter()
    sizes, per_level, meshes = [], [], [mesh]
    for _ in range(levels - 1):
        meshes.append(refine_uniform(meshes[-1]))
    for m in meshes:
        t1 = time.perf_counter()
        _, met = solve_protocol(m, baseline_protocol(), cfg, solver=solver)
        sizes.append(mean_edge_mm(m))
        per_level.append({"n_points": m.n_points, "n_cells": m.n_cells, "mean_edge_mm": sizes[-1],
                          **{k: float(met[k]) for k in ("tat_ms", "lvat_ms", "t90_ms", "unreached_fraction")},
                          "seconds": round(time.perf_counter() - t1, 2)})
    quantities = {}
    for key in ("tat_ms", "lvat_ms", "t90_ms"):
        vals = [lvl[key] for lvl in per_level]
        if all(np.isfinite(vals)):
            quantities[key] = grid_convergence(sizes, vals, formal_order=1.0).to_dict()
    return {"name": "mesh_activation", "title": "Mesh refinement of the baseline activation (eikonal)",
            "description": f"{levels} levels by uniform 1:8 refinement of the patient mesh, LBBB baseline solved as "
                           "the CRT stage solves it (therapy.sweep.solve_protocol with therapy.solver.eikonal_solver), "
                           f"conduction cv_fibre {cfg.cv_fibre:g} / cv_cross {cfg.cv_cross:g} / Purkinje "
                           f"{cfg.purkinje_cv:g} mm/ms.", "size_label": "mean edge (mm)", "levels": per_level,
            "quantities": quantities, "seconds": round(time.perf_counter() - t0, 2)}


MONODOMAIN_NOT_DONE = (
    "time-step refinement of the monodomain activation on this patient: not done. The CRT stage computes activation "
    "with the eikonal model, which has no time step (its discretisation error is the mesh study above); a monodomain "
    "run on this patient's mesh (mean edge {edge} mm) would measure the under-resolved front (a converged monodomain "
    "front needs edges of 0.1-0.2 mm, Niederer et al. 2011) rather than the time-stepping error. The monodomain time "
    "stepping is verified on the Niederer slab (code verification, check 'niederer', when present in section 4).")


def run_calcver_stage(case: "Case", *, levels: int = 2, force: bool = False, timestep_study: bool = False,
                      timestep_levels: int = 2, em_mesh_study: bool = False,
                      em_mesh_factors: tuple[float, ...] | None = None) -> list[str]:
    """Run the studies whose inputs and solvers exist into the case's ``calcver`` stage: the mesh
    refinement of the baseline activation (always), with ``timestep_study`` the time-step
    refinement of the baseline electromechanical beat (``verification.timestep``; minutes) and with
    ``em_mesh_study`` its mesh refinement (``verification.em_mesh``, edge factors ``em_mesh_factors``,
    default ``em_mesh.DEFAULT_FACTORS``; minutes).

    Returns the reasons of the studies that could not run (also stored in calcver.json).
    """
    from cardiotwin.errors import StageError
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.verification import em_mesh  # (module: its study function shares the flag's name)
    from cardiotwin.verification.timestep import baseline_beat_seconds, em_timestep_study, study_inputs

    unavailable: list[str] = []
    mesh_path = case.root / "fibers" / "mesh.vtu"
    solver, where = find_activation_solver()
    if not mesh_path.is_file():
        unavailable.append("mesh refinement of activation: no fibers/mesh.vtu (run `cardiotwin fibers`).")
    elif solver is None:
        unavailable.append(f"mesh refinement of activation: no activation solver installed (looked for {where}).")
    ts_inputs, ts_why = study_inputs(case)
    if not timestep_study:
        secs = baseline_beat_seconds(case)
        cost = f" (about twice the {secs:.0f} s the CRT stage's baseline beat took)" if secs else ""
        unavailable.append("time-step refinement of the electromechanics beat (EF, dP/dt_max): not run; it is opt-in "
                           "(`cardiotwin report CASE --timestep-study`) because it re-simulates the baseline beat at "
                           f"dt/2{cost}." if ts_inputs is not None else
                           f"time-step refinement of the electromechanics beat (EF, dP/dt_max): cannot run: {ts_why}.")
    elif ts_inputs is None:
        unavailable.append(f"time-step refinement of the electromechanics beat (EF, dP/dt_max): cannot run: {ts_why}.")
    em_factors = tuple(float(f) for f in (em_mesh_factors or em_mesh.DEFAULT_FACTORS))
    mm_inputs, mm_why = em_mesh.em_mesh_inputs(case)
    mm_title = "grid refinement (re-meshed levels) of the electromechanics beat (EF, dP/dt_max)"
    if mm_inputs is None:
        unavailable.append(f"{mm_title}: cannot run: {mm_why}.")
    elif not em_mesh_study:
        secs = baseline_beat_seconds(case)
        cost = f"; the CRT stage's baseline beat took {secs:.0f} s" if secs else ""
        unavailable.append(f"{mm_title}: not run; it is opt-in (`cardiotwin report CASE --em-mesh-study`) because it "
                           "re-meshes the segmentation at other edge lengths and re-simulates the baseline beat on each "
                           f"(a coarser level costs less than the stage's beat, a finer one about its tet-count ratio "
                           f"times more{cost}).")
    elif solver is None:
        mm_inputs = None
        unavailable.append(f"{mm_title}: cannot run: no activation solver installed (looked for {where}).")
    mesh_ok = solver is not None and mesh_path.is_file()
    run_ts = timestep_study and ts_inputs is not None
    run_mm = em_mesh_study and mm_inputs is not None
    edge = "unknown"
    if mesh_path.is_file():
        from cardiotwin.io.meshes import read_mesh

        edge = f"{mean_edge_mm(read_mesh(mesh_path)):.2g}"
    unavailable.append(MONODOMAIN_NOT_DONE.format(edge=edge))
    if not mesh_ok and not run_ts and not run_mm:
        return unavailable
    from cardiotwin.config import config_to_dict
    from cardiotwin.io.meshes import read_mesh

    conduction, conduction_source = case_conduction(case)
    inputs = {"mesh": mesh_path} if mesh_path.is_file() else {}
    config: dict[str, object] = {"levels": levels, "solver": where, "conduction": config_to_dict(conduction),
                                 "timestep_study": bool(run_ts)}
    if run_ts:
        inputs["baseline_activation"] = ts_inputs["activation"]
        config.update({"timestep_levels": timestep_levels, "electromechanics": ts_inputs["electromechanics"]})
    if run_mm:  # (key absent otherwise: unchanged stage hash for cases that never ran it)
        config["em_mesh_study"] = True
        inputs.update({"baseline_activation": mm_inputs["activation"], "labels": mm_inputs["labels"]})
        config.update({"em_mesh_factors": list(em_factors), "electromechanics": mm_inputs["electromechanics"],
                       "mesh_config": mm_inputs["mesh_config"], "fiber_config": mm_inputs["fiber_config"]})
    with case.stage(CALCVER_STAGE, inputs=inputs, config=config, force=force) as st:
        if st.skipped:
            return unavailable
        studies = []
        if mesh_ok:
            study = mesh_refinement_study(read_mesh(mesh_path), solver, levels=levels, conduction=conduction)
            study["conduction_source"] = conduction_source
            studies.append(study)
        if run_ts:
            try:
                studies.append(em_timestep_study(case, ts_inputs, levels=timestep_levels))
            except StageError as exc:
                unavailable.append(f"time-step refinement of the electromechanics beat: failed: {exc}")
        if run_mm:
            try:
                studies.append(em_mesh.em_mesh_study(case, mm_inputs, factors=em_factors, solver=solver,
                                                     conduction=conduction))
            except StageError as exc:
                unavailable.append(f"{mm_title}: failed: {exc}")
        write_json_atomic(st.output("calcver.json"), {"studies": studies, "unavailable": unavailable})
        st.metrics.update({"studies": [x["name"] for x in studies]})
    return unavailable
