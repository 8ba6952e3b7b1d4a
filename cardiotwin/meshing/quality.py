"""Mesh quality report: element counts, edge lengths, dihedral angles, radius ratio, inverted
elements, mesh vs label volumes, per-tag surface areas (JSON-ready dict)."""

from __future__ import annotations

import numpy as np

from cardiotwin.anatomy import CellTag, FacetTag, Label
from cardiotwin.meshing.surface import MYO_LABELS, BasePlane, labelled_volume_below_plane_ml
from cardiotwin.meshing.tets import (
    boundary_genus,
    dihedral_angles_deg,
    edge_lengths,
    enclosed_volume_mm3,
    radius_ratios,
    signed_volumes,
    triangle_normals,
)
from cardiotwin.types import HeartMesh, LabelMap


def _stats(x: np.ndarray) -> dict[str, float]:
    return {
        "min": float(x.min()), "p1": float(np.percentile(x, 1)), "mean": float(x.mean()),
        "p99": float(np.percentile(x, 99)), "max": float(x.max()),
    }


DIHEDRAL_BINS_DEG = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.6)


def dihedral_distribution(min_dihedral_deg: np.ndarray) -> dict:
    """Distribution of the cells' smallest dihedral angles (deg): cell counts between the bin edges
    ``DIHEDRAL_BINS_DEG`` (70.6 deg: a regular tet, the largest possible minimum) and percentiles."""
    counts, _ = np.histogram(min_dihedral_deg, bins=np.asarray(DIHEDRAL_BINS_DEG))
    return {
        "bin_edges_deg": list(DIHEDRAL_BINS_DEG),
        "cells": [int(c) for c in counts],
        "percentiles_deg": {f"p{q:g}": float(np.percentile(min_dihedral_deg, q)) for q in (0.1, 1, 5, 50)},
    }


def mesh_quality(mesh: HeartMesh, *, labels: LabelMap | None = None, base: BasePlane | None = None,
                 closed: LabelMap | None = None) -> dict:
    """Quality numbers of ``mesh``; with ``labels`` and ``base`` also volume agreement.

    Volumes in mL, areas in mm^2, lengths in mm, angles in degrees. ``volume_error`` is
    (mesh - label) / label for the myocardium below the base plane; ``lv_cavity_error`` the same for
    the LV cavity closed by the base plane vs the LV blood pool below it. With ``closed``, the labels
    as the mesher closed the wall (``volume.mesh_labels``'s third result), also the wall it built
    (``built_wall_ml``: its myocardium minus the labels', below the plane; the RV wall of labels
    without RV myocardium) and ``volume_error_closed``, the mesh against the labels' myocardium and
    that wall.
    """
    vols = signed_volumes(mesh.points, mesh.cells)
    dihedral = dihedral_angles_deg(mesh.points, mesh.cells).min(axis=1)
    rr = radius_ratios(mesh.points, mesh.cells)
    _, areas = triangle_normals(mesh.points, mesh.facets)
    report: dict = {
        "n_points": mesh.n_points,
        "n_cells": mesh.n_cells,
        "n_facets": int(mesh.facets.shape[0]),
        "cells_per_tag": {t.name: int(np.count_nonzero(mesh.cell_tags == t)) for t in CellTag},
        "edge_length_mm": _stats(edge_lengths(mesh.points, mesh.cells)),
        "min_dihedral_deg": float(dihedral.min()),
        "dihedral_p0_1_deg": float(np.percentile(dihedral, 0.1)),
        "min_dihedral_per_cell_deg": dihedral_distribution(dihedral),
        "radius_ratio": {"min": float(rr.min()), "mean": float(rr.mean())},
        "inverted_cells": int(np.count_nonzero(vols <= 0)),
        "boundary_genus": boundary_genus(mesh.cells),
        "mesh_volume_ml": float(vols.sum() / 1000.0),
        "volume_per_cell_tag_ml": {t.name: float(vols[mesh.cell_tags == t].sum() / 1000.0) for t in CellTag},
        "surface_area_mm2": {t.name: float(areas[mesh.facet_tags == t].sum()) for t in FacetTag},
    }
    lv_endo = mesh.facets[mesh.facet_tags == FacetTag.LV_ENDO]
    rv_endo = mesh.facets[mesh.facet_tags == FacetTag.RV_ENDO]
    report["lv_cavity_ml"] = enclosed_volume_mm3(mesh.points, lv_endo) / 1000.0
    report["rv_cavity_ml"] = enclosed_volume_mm3(mesh.points, rv_endo) / 1000.0
    if labels is not None and base is not None:
        myo = labelled_volume_below_plane_ml(labels, base, MYO_LABELS)
        lv = labelled_volume_below_plane_ml(labels, base, (int(Label.LV_BLOOD),))
        report["label_myocardium_ml"] = myo
        report["label_lv_cavity_ml"] = lv
        report["volume_error"] = (report["mesh_volume_ml"] - myo) / myo
        report["lv_cavity_error"] = (report["lv_cavity_ml"] - lv) / lv if lv > 0 else None
        if closed is not None:
            closed_myo = labelled_volume_below_plane_ml(closed, base, MYO_LABELS)
            report["built_wall_ml"] = closed_myo - myo
            report["volume_error_closed"] = (report["mesh_volume_ml"] - closed_myo) / closed_myo
        report["base_plane"] = {"point_mm": list(base.point_mm), "normal": list(base.normal)}
    return report
