"""Activation sources from the fibres stage's coordinates: a normal (sinus-like) activation.

Without a Purkinje network, an eikonal activation from one or two pacing sites spreads through
the working myocardium at ~0.6 mm/ms and takes 200+ ms for an adult heart, twice a normal QRS.
``sinus_sources`` stands in for the His-Purkinje system the usual way (early endocardial
breakthrough sites, Durrer et al., Circulation 41:899, 1970): one site on the LV endocardium at
the centre of each mid and apical AHA segment at 0 ms, each basal segment at 10 ms, and the
centres of the apical, mid and basal thirds of the RV free-wall endocardium at 5 ms.
"""

from __future__ import annotations

import numpy as np

from cardiotwin.types import HeartMesh


def sinus_sources(mesh: HeartMesh) -> list[tuple[tuple[float, float, float], float]]:
    """Endocardial breakthrough sites ((x, y, z) mm, start ms) from the fibres stage's fields.

    Needs point data ``uvc_transmural`` (0 at the endocardium), ``uvc_ventricle`` (0 LV, 1 RV),
    ``uvc_apicobasal`` (0 apex, 1 base) and ``aha`` (segments 1-17, 0 outside the LV), as written
    by ``cardiotwin fibers``. Every site is the endocardial node nearest the centroid of a region
    of the anatomy, so the sites move by at most about an edge between meshes of one heart.
    """
    missing = [k for k in ("uvc_transmural", "uvc_ventricle", "uvc_apicobasal", "aha") if k not in mesh.point_data]
    if missing:
        raise ValueError(f"mesh lacks point data {missing}: run the fibres stage first")
    pts = np.asarray(mesh.points, dtype=float)
    transmural = np.asarray(mesh.point_data["uvc_transmural"], dtype=float)
    ventricle = np.rint(np.asarray(mesh.point_data["uvc_ventricle"], dtype=float))
    apicobasal = np.asarray(mesh.point_data["uvc_apicobasal"], dtype=float)
    aha = np.rint(np.asarray(mesh.point_data["aha"], dtype=float)).astype(int)
    endo = transmural < 0.05

    def central(idx: np.ndarray) -> tuple[float, float, float]:
        centre = pts[idx].mean(axis=0)
        return tuple(map(float, pts[idx[np.argmin(np.linalg.norm(pts[idx] - centre, axis=1))]]))

    sources: list[tuple[tuple[float, float, float], float]] = []
    for seg in range(1, 18):
        idx = np.flatnonzero(endo & (ventricle == 0) & (aha == seg))
        if idx.size:
            sources.append((central(idx), 10.0 if seg <= 6 else 0.0))
    # RV: the centres of the apical, mid and basal thirds of the free-wall endocardium
    rv = np.flatnonzero(endo & (ventricle == 1))
    if rv.size:
        edges = np.linspace(apicobasal[rv].min(), apicobasal[rv].max(), 4)
        thirds = np.clip(np.searchsorted(edges, apicobasal[rv], side="right") - 1, 0, 2)
        rv_sites = {central(rv[thirds == k]) for k in range(3) if np.any(thirds == k)}
        sources.extend((xyz, 5.0) for xyz in sorted(rv_sites))
    if not sources:
        raise ValueError("no endocardial nodes found for the activation sources")
    return sources
