"""Laplace-Dirichlet rule-based fibres (Bayer, Blake, Plank, Trayanova, Ann Biomed Eng 2012;
40:2243), ventricular coordinates and AHA-17 segments on a HeartMesh.

Four Laplace problems (dolfinx, ``laplace.py``): phi_epi (0 on LV/RV endo, 1 on epi),
phi_lv (1 on LV endo, 0 on RV endo and epi), phi_rv (1 on RV endo, 0 on LV endo and epi), and
psi (0 at the apex, 1 on the base). Per node, the gradients give local frames (``axis``) that are
rotated by the helix angle alpha about the transmural axis and the sheet angle beta about the
fibre (``orient``) and blended with quaternion slerp (``bislerp``) exactly as in Bayer's
Algorithm 1 (one deviation for a linear transmural law, see ``ldrb_frames``). Output per node: f0 (fibre), s0 (sheet, near transmural), n0 = f0 x s0.

Coordinates: uvc_transmural = phi_epi (0 endo, 1 epi), uvc_apicobasal = psi (0 apex, 1 base),
uvc_rotational in [0, 1) (0 at the septum centre, increasing towards anterior), uvc_ventricle
(0 LV incl. septum, 1 RV free wall). AHA (Cerqueira et al., Circulation 2002;105:539) per LV node.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from cardiotwin.anatomy import CellTag, FacetTag
from cardiotwin.config import quantity
from cardiotwin.errors import StageError
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FiberConfig:
    """Helix (alpha) and sheet (beta) angles of Bayer 2012 at endo- and epicardium."""

    alpha_endo_deg: float = quantity(60.0, "deg")
    alpha_epi_deg: float = quantity(-60.0, "deg")
    beta_endo_deg: float = quantity(-65.0, "deg")
    beta_epi_deg: float = quantity(25.0, "deg")
    apex_radius_mm: float = quantity(2.0, "mm", doc="Dirichlet region psi = 0 around the apex node")


# point data of the fibres stage that the rule needs to be evaluated between the nodes
# (``fibers.quadrature``): phi_epi, psi, phi_lv, phi_rv and the angles of the ``FiberConfig``
RULE_FIELDS = ("uvc_transmural", "uvc_apicobasal", "ldrb_phi_lv", "ldrb_phi_rv", "ldrb_angles_deg")


# ---------------------------------------------------------------- geometry of the rules
def nodal_gradients(points: np.ndarray, cells: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(N, 3) volume-weighted average of the P1 cell gradients of the nodal field u (N,)."""
    p = points[cells]
    d = np.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], axis=1)  # (M, 3, 3)
    du = u[cells[:, 1:]] - u[cells[:, [0]]]  # (M, 3)
    grad = np.linalg.solve(d, du[:, :, None])[:, :, 0]
    vol = np.abs(np.linalg.det(d)) / 6.0
    out = np.zeros_like(points)
    w = np.zeros(points.shape[0])
    for k in range(4):
        np.add.at(out, cells[:, k], grad * vol[:, None])
        np.add.at(w, cells[:, k], vol)
    return out / np.maximum(w, 1e-300)[:, None]


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def axis(grad_psi: np.ndarray, grad_phi: np.ndarray) -> np.ndarray:
    """(N, 3, 3) frames [e0 circumferential, e1 apico-basal, e2 transmural] as columns."""
    e1 = _normalise(grad_psi)
    e2 = grad_phi - np.einsum("ij,ij->i", e1, grad_phi)[:, None] * e1
    e2 = _normalise(e2)
    e0 = np.cross(e1, e2)
    return np.stack([e0, e1, e2], axis=2)


def orient(q: np.ndarray, alpha_deg: np.ndarray, beta_deg: np.ndarray) -> np.ndarray:
    """Rotate frames by alpha about e2 (helix) and then beta about the new e0 (sheet)."""
    a, b = np.radians(alpha_deg), np.radians(beta_deg)
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    n = q.shape[0]
    ra = np.zeros((n, 3, 3))
    ra[:, 0, 0], ra[:, 0, 1], ra[:, 1, 0], ra[:, 1, 1], ra[:, 2, 2] = ca, -sa, sa, ca, 1.0
    rb = np.zeros((n, 3, 3))
    rb[:, 0, 0], rb[:, 1, 1], rb[:, 1, 2], rb[:, 2, 1], rb[:, 2, 2] = 1.0, cb, sb, -sb, cb
    return q @ ra @ rb


def _rot_to_quat(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (w, x, y, z)."""
    m = r
    t = np.trace(m, axis1=1, axis2=2)
    cands = np.stack([
        np.stack([1 + t, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], 1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], 1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], 1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], 1),
    ], axis=1)  # (N, 4 candidates, 4)
    diag = np.stack([1 + t, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], 1)
    best = np.argmax(diag, axis=1)
    q = cands[np.arange(r.shape[0]), best]
    return _normalise(q)


def _quat_to_rot(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1),
    ], axis=1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a.T
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], 1)


def bislerp(qa: np.ndarray, qb: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Bayer's bidirectional slerp of frames: among the 8 sign/axis-flip equivalents of qa, take
    the one closest to qb and slerp with weight t in [0, 1] (t = 0 -> qa, 1 -> qb)."""
    a = _rot_to_quat(qa)
    b = _rot_to_quat(qb)
    flips = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    cands = np.stack([_quat_mul(a, np.tile(f, (a.shape[0], 1))) for f in flips], axis=1)  # (N, 4, 4)
    dots = np.abs(np.einsum("nki,ni->nk", cands, b))
    k = np.argmax(dots, axis=1)
    qm = cands[np.arange(a.shape[0]), k]
    dot = np.einsum("ni,ni->n", qm, b)
    qm = np.where(dot[:, None] < 0, -qm, qm)
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    s = np.sin(theta)
    t = np.clip(t, 0.0, 1.0)
    small = s < 1e-6
    wa = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / np.where(small, 1.0, s))
    wb = np.where(small, t, np.sin(t * theta) / np.where(small, 1.0, s))
    return _quat_to_rot(_normalise(wa[:, None] * qm + wb[:, None] * b))


def ldrb_frames(
    points: np.ndarray,
    cells: np.ndarray,
    *,
    phi_epi: np.ndarray,
    phi_lv: np.ndarray,
    phi_rv: np.ndarray,
    psi: np.ndarray,
    cfg: FiberConfig,
) -> np.ndarray:
    """(N, 3, 3) fibre frames (Bayer 2012, Algorithm 1) from the four nodal Laplace solutions."""
    grads = tuple(nodal_gradients(points, cells, u) for u in (psi, phi_epi, phi_lv, phi_rv))
    return ldrb_frames_at(phi_epi=phi_epi, phi_lv=phi_lv, phi_rv=phi_rv, grads=grads,
                          angles_deg=fibre_angles(cfg), has_rv=bool(np.any(phi_rv > 0)))


def fibre_angles(cfg: FiberConfig) -> np.ndarray:
    """(4,) alpha_endo, alpha_epi, beta_endo, beta_epi (degrees) of ``cfg``."""
    return np.array([cfg.alpha_endo_deg, cfg.alpha_epi_deg, cfg.beta_endo_deg, cfg.beta_epi_deg], dtype=float)


def ldrb_frames_at(
    *,
    phi_epi: np.ndarray,
    phi_lv: np.ndarray,
    phi_rv: np.ndarray,
    grads: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    angles_deg: np.ndarray,
    has_rv: bool,
) -> np.ndarray:
    """(P, 3, 3) fibre frames at P points from the Laplace solutions there and their gradients
    ``grads`` = (grad psi, grad phi_epi, grad phi_lv, grad phi_rv), each (P, 3); ``angles_deg``
    as ``fibre_angles``. A pointwise rule: at the nodes it gives the nodal frames; at quadrature
    points (interpolated fields) it keeps the transmural rotation inside a cell."""
    g_psi, g_epi, g_lv, g_rv = grads
    ae, aw, be, bw = (float(a) for a in angles_deg)
    d = phi_rv / np.maximum(phi_lv + phi_rv, 1e-12)
    alpha_w = ae * (1 - phi_epi) + aw * phi_epi
    beta_w = be * (1 - phi_epi) + bw * phi_epi
    # Deviation from Bayer 2012: the endocardial frames carry the wall law too (alpha_w - alpha_endo
    # added to the septal law alpha_s(d); sign flipped in the RV frame, whose transmural axis points
    # into the RV cavity). Bayer's original gives alpha = alpha_endo (1 - t) + t alpha_w(t) in the
    # free wall (quadratic in t); this gives the prescribed linear law alpha_w(t) there and Bayer's
    # alpha_s(d) across the septum.
    alpha_s = ae * (1 - d) - ae * d
    beta_s = be * (1 - d) - be * d
    q_lv = orient(axis(g_psi, -g_lv), alpha_s + (alpha_w - ae), beta_s + (beta_w - be))
    q_rv = orient(axis(g_psi, g_rv), alpha_s - (alpha_w - ae), beta_s - (beta_w - be))
    q_endo = bislerp(q_lv, q_rv, d) if has_rv else q_lv
    q_epi = orient(axis(g_psi, g_epi), alpha_w, beta_w)
    return bislerp(q_endo, q_epi, phi_epi)
