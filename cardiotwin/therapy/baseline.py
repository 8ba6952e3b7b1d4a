"""Left bundle branch block (LBBB) baseline activation sources.

In LBBB the right bundle still conducts: the right-ventricular endocardium is activated early
from a septal breakthrough through the fast RV Purkinje layer, and the LV is reached only by
slow myocardial conduction through the septum (Auricchio et al., Circulation 2004;109:1133;
modelled the same way by Lee et al. 2019 and Strocchi et al. 2020). Here: every RV endocardial
node is a source whose delay is its distance from the breakthrough node divided by the Purkinje
speed; the breakthrough lies on the septal RV surface at ``BREAKTHROUGH_APICOBASAL`` of the
apico-basal coordinate. Scar (non-conducting core, slow border zone) is in ``conduction.Tissue``.
"""

from __future__ import annotations

import logging

import numpy as np

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.errors import StageError
from cardiotwin.therapy.conduction import ConductionConfig, Source
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)

# Apico-basal position (0 apex, 1 base) of the RV septal breakthrough: the moderator-band /
# anterior papillary insertion in the mid-to-apical septum (Durrer et al., Circulation 1970).
BREAKTHROUGH_APICOBASAL = 0.4


def require_coordinates(mesh: HeartMesh) -> None:
    """StageError unless the mesh carries the fibres stage's fields (f0, uvc_*, aha)."""
    missing = [k for k in ("f0", "uvc_apicobasal", "uvc_rotational", "uvc_transmural", "aha") if k not in mesh.point_data]
    if missing:
        raise StageError(f"{mesh.name or 'mesh'}: missing point data {', '.join(missing)} (run `cardiotwin fibers` first)")


def lv_nodes(mesh: HeartMesh) -> np.ndarray:
    """(N,) bool: points touching an LV myocardium or scar cell."""
    mask = np.zeros(mesh.n_points, dtype=bool)
    mask[np.unique(mesh.cells[np.isin(mesh.cell_tags, (int(CellTag.LV_MYO), int(CellTag.SCAR)))])] = True
    return mask


def surface_nodes(mesh: HeartMesh, tag: FacetTag) -> np.ndarray:
    """Sorted point indices of the boundary triangles tagged ``tag``."""
    return np.unique(mesh.facets[mesh.facet_tags == int(tag)])


def rv_endocardial_nodes(mesh: HeartMesh) -> np.ndarray:
    """RV endocardial nodes (free wall and the septum's right side); StageError without an RV."""
    nodes = surface_nodes(mesh, FacetTag.RV_ENDO)
    if nodes.size == 0:
        raise StageError(f"{mesh.name or 'mesh'}: no RV endocardium; the LBBB baseline needs a biventricular mesh")
    return nodes


def septal_rv_nodes(mesh: HeartMesh) -> np.ndarray:
    """RV endocardial nodes on the septum (they also belong to LV cells)."""
    rv = rv_endocardial_nodes(mesh)
    sept = rv[lv_nodes(mesh)[rv]]
    return sept if sept.size else rv


def long_axis_height(mesh: HeartMesh) -> np.ndarray:
    """(N,) position along the long axis: 0 at the most apical point, 1 on the base plane.

    Taken from the BASE facets (centroid and outward normal) rather than ``uvc_apicobasal``,
    whose Laplace field is defined from the LV apex and is not monotone over the RV.
    """
    tris = mesh.points[mesh.facets[mesh.facet_tags == int(FacetTag.BASE)]]
    if tris.shape[0] == 0:
        raise StageError(f"{mesh.name or 'mesh'}: no BASE facets; cannot define the long axis")
    normal = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]).sum(axis=0)
    normal /= np.linalg.norm(normal)
    h = (mesh.points - tris.reshape(-1, 3).mean(axis=0)) @ normal
    return 1.0 - h / h.min()


def rv_breakthrough_node(mesh: HeartMesh) -> int:
    """Septal RV endocardial node closest to ``BREAKTHROUGH_APICOBASAL`` of the long axis."""
    sept = septal_rv_nodes(mesh)
    ab = long_axis_height(mesh)[sept]
    return int(sept[np.argmin(np.abs(ab - BREAKTHROUGH_APICOBASAL))])


def lbbb_sources(mesh: HeartMesh, cfg: ConductionConfig) -> list[Source]:
    """Intrinsic LBBB sources, delays in ms from the atrial event.

    The breakthrough node fires at ``cfg.intrinsic_av_delay``; every other RV endocardial node
    ``|x - x_breakthrough| / cfg.purkinje_cv`` later.
    """
    require_coordinates(mesh)
    rv = rv_endocardial_nodes(mesh)
    bt = rv_breakthrough_node(mesh)
    dist = np.linalg.norm(mesh.points[rv] - mesh.points[bt], axis=1)
    delays = cfg.intrinsic_av_delay + dist / cfg.purkinje_cv
    return [Source(nodes=rv.astype(np.int64), delays_ms=delays, label="lbbb_rv_purkinje")]
