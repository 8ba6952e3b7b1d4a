"""Stage function: HeartMesh -> HeartMesh with f0/s0/n0, uvc_* and aha point fields."""

from __future__ import annotations

import logging
import time

import numpy as np
from mpi4py import MPI

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.errors import StageError
from cardiotwin.fibers.laplace import facet_dofs, point_dofs, solve_laplace
from cardiotwin.fibers.ldrb import FiberConfig, fibre_angles, ldrb_frames
from cardiotwin.meshing.fem import to_dolfinx
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


def _long_axis(mesh: HeartMesh) -> tuple[np.ndarray, np.ndarray, int]:
    """(base centre, unit axis apex -> base, apex node) from the BASE facets and the farthest epi node."""
    base_nodes = np.unique(mesh.facets[mesh.facet_tags == FacetTag.BASE])
    if base_nodes.size == 0:
        raise StageError(f"{mesh.name or 'mesh'}: no BASE facets; cannot define the apico-basal direction")
    base_centre = mesh.points[base_nodes].mean(axis=0)
    fp = mesh.points[mesh.facets[mesh.facet_tags == FacetTag.BASE]]
    normal = np.cross(fp[:, 1] - fp[:, 0], fp[:, 2] - fp[:, 0]).sum(axis=0)  # outward = towards atria
    normal /= np.linalg.norm(normal)
    lv_nodes = np.unique(mesh.cells[np.isin(mesh.cell_tags, (CellTag.LV_MYO, CellTag.SCAR))])
    epi_nodes = np.intersect1d(np.unique(mesh.facets[mesh.facet_tags == FacetTag.EPI]), lv_nodes)
    if epi_nodes.size == 0:
        raise StageError(f"{mesh.name or 'mesh'}: no LV epicardium")
    apex = int(epi_nodes[np.argmin((mesh.points[epi_nodes] - base_centre) @ normal)])
    return base_centre, normal, apex


def compute_fibers(mesh: HeartMesh, *, cfg: FiberConfig = FiberConfig()) -> tuple[HeartMesh, dict[str, float]]:
    """Add fibres (f0, s0, n0), ventricular coordinates and AHA segments as point_data.

    Runs serially on ``MPI.COMM_SELF``. Returns (new mesh, timings in s).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not np.any(mesh.facet_tags == FacetTag.LV_ENDO):
        raise StageError(f"{mesh.name or 'mesh'}: no LV_ENDO facets; cannot compute fibres")
    base_centre, axis_ab, apex = _long_axis(mesh)
    heart = to_dolfinx(mesh, MPI.COMM_SELF)
    lv, rv, epi, base = (int(FacetTag.LV_ENDO),), (int(FacetTag.RV_ENDO),), (int(FacetTag.EPI),), (int(FacetTag.BASE),)
    apex_nodes = np.flatnonzero(np.linalg.norm(mesh.points - mesh.points[apex], axis=1) <= cfg.apex_radius_mm)
    has_rv = bool(np.any(mesh.facet_tags == FacetTag.RV_ENDO))
    timings["setup_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    endo_dofs = facet_dofs(heart, lv + rv)
    epi_dofs = facet_dofs(heart, epi)
    lv_dofs = facet_dofs(heart, lv)
    phi_epi = solve_laplace(heart, dirichlet=[(endo_dofs, 0.0), (epi_dofs, 1.0)], name="epi")
    phi_lv = solve_laplace(heart, dirichlet=[(lv_dofs, 1.0), (facet_dofs(heart, rv + epi), 0.0)], name="lv")
    if has_rv:
        phi_rv = solve_laplace(heart, dirichlet=[(facet_dofs(heart, rv), 1.0), (facet_dofs(heart, lv + epi), 0.0)], name="rv")
    else:
        phi_rv = np.zeros(mesh.n_points)
    psi = solve_laplace(heart, dirichlet=[(point_dofs(heart, apex_nodes), 0.0), (facet_dofs(heart, base), 1.0)], name="ab")
    timings["laplace_s"] = time.perf_counter() - t
    t = time.perf_counter()
    q = ldrb_frames(mesh.points, mesh.cells, phi_epi=phi_epi, phi_lv=phi_lv, phi_rv=phi_rv, psi=psi, cfg=cfg)
    f0 = q[:, :, 0]
    s0 = q[:, :, 2]
    n0 = np.cross(f0, s0)
    if not np.all(np.isfinite(q)):
        raise StageError(f"{mesh.name or 'mesh'}: fibre frames are not finite (degenerate Laplace gradients)")
    timings["rules_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ventricle = _ventricle_of_nodes(mesh)
    rotational = _rotational(mesh, base_centre, axis_ab, apex)
    aha = aha_segments(mesh, base_centre=base_centre, axis_ab=axis_ab, apex=apex, rotational=rotational,
                       lv_node=ventricle == 0)
    timings["coordinates_s"] = time.perf_counter() - t
    out = mesh.with_fields(point_data={
        "f0": f0, "s0": s0, "n0": n0,
        "uvc_transmural": np.clip(phi_epi, 0.0, 1.0),
        "uvc_apicobasal": np.clip(psi, 0.0, 1.0),
        "uvc_rotational": rotational,
        "uvc_ventricle": ventricle.astype(np.float64),
        "aha": aha.astype(np.int32),
        # what the rule needs besides uvc_transmural (phi_epi) and uvc_apicobasal (psi), so that a
        # later stage can evaluate it between the nodes (``fibers.quadrature``)
        "ldrb_phi_lv": phi_lv, "ldrb_phi_rv": phi_rv,
        "ldrb_angles_deg": np.tile(fibre_angles(cfg), (mesh.n_points, 1)),
    })
    log.info("fibres + coordinates for %d nodes / %d tets in %.1f s", mesh.n_points, mesh.n_cells, time.perf_counter() - t0)
    return out, timings


def _ventricle_of_nodes(mesh: HeartMesh) -> np.ndarray:
    """(N,) 0 for nodes touching an LV (or scar) cell, 1 for nodes only in RV cells."""
    lv_cells = np.isin(mesh.cell_tags, (CellTag.LV_MYO, CellTag.SCAR))
    v = np.ones(mesh.n_points, dtype=np.int8)
    v[np.unique(mesh.cells[lv_cells])] = 0
    return v


def _rotational(mesh: HeartMesh, base_centre: np.ndarray, axis_ab: np.ndarray, apex: int) -> np.ndarray:
    """(N,) rotational coordinate in [0, 1): angle about the LV long axis / 2 pi, 0 at the septum
    (towards the RV cavity centroid; patient right, -x in LPS, when there is no RV), increasing
    towards anterior (-y in LPS)."""
    a = axis_ab / np.linalg.norm(axis_ab)
    lv_endo = np.unique(mesh.facets[mesh.facet_tags == FacetTag.LV_ENDO])
    centre = mesh.points[lv_endo].mean(axis=0)
    rv_endo = np.unique(mesh.facets[mesh.facet_tags == FacetTag.RV_ENDO])
    target = mesh.points[rv_endo].mean(axis=0) - centre if rv_endo.size else np.array([-1.0, 0.0, 0.0])
    sept = target - (target @ a) * a
    if np.linalg.norm(sept) < 1e-9:
        sept = np.array([0.0, -1.0, 0.0]) - a[1] * a * -1.0
    sept /= np.linalg.norm(sept)
    other = np.cross(a, sept)
    if other @ np.array([0.0, -1.0, 0.0]) < 0:  # make +90 degrees point anterior (LPS -y)
        other = -other
    d = mesh.points - centre
    theta = np.arctan2(d @ other, d @ sept)  # 0 septum, +pi/2 anterior
    return np.mod(theta, 2 * np.pi) / (2 * np.pi)


def aha_segments(
    mesh: HeartMesh,
    *,
    base_centre: np.ndarray,
    axis_ab: np.ndarray,
    apex: int,
    rotational: np.ndarray,
    lv_node: np.ndarray,
) -> np.ndarray:
    """(N,) AHA-17 segment (Cerqueira 2002) of LV nodes, 0 elsewhere.

    Long-axis position: 0 at the epicardial apex, 1 at the base plane. The apex cap (17) lies
    apical of the LV cavity; the rest splits into equal basal / mid / apical thirds; basal and mid
    rings have six 60-degree sectors, the apical ring four 90-degree sectors, counted from
    anterior (1, 7, 13) counter-clockwise seen from the apex: anterior, anteroseptal,
    inferoseptal, inferior, inferolateral, anterolateral.
    """
    a = axis_ab / np.linalg.norm(axis_ab)
    h_apex = (mesh.points[apex] - base_centre) @ a
    z = 1.0 - ((mesh.points - base_centre) @ a) / h_apex  # 0 apex, 1 base
    lv_endo = np.unique(mesh.facets[mesh.facet_tags == FacetTag.LV_ENDO])
    z_cavity = float(z[lv_endo].min())
    deg = rotational * 360.0  # 0 septum centre, 90 anterior
    # Degrees measured from the anterior (90) towards the septum (0): sector index of 60 deg.
    from_ant = np.mod(90.0 - deg + 30.0, 360.0)  # anterior sector centred at 0..60
    ring6 = (from_ant // 60.0).astype(int)  # 0 ant, 1 anteroseptal, 2 inferoseptal, 3 inf, 4 inflat, 5 antlat
    from_ant4 = np.mod(90.0 - deg + 45.0, 360.0)
    ring4 = (from_ant4 // 90.0).astype(int)  # 0 anterior, 1 septal, 2 inferior, 3 lateral
    third = (1.0 - z_cavity) / 3.0
    seg = np.zeros(mesh.n_points, dtype=np.int32)
    basal = z >= z_cavity + 2 * third
    mid = (z >= z_cavity + third) & ~basal
    apical = (z >= z_cavity) & ~basal & ~mid
    seg[basal] = 1 + ring6[basal]
    seg[mid] = 7 + ring6[mid]
    seg[apical] = 13 + ring4[apical]
    seg[z < z_cavity] = 17
    seg[~lv_node] = 0
    return seg
