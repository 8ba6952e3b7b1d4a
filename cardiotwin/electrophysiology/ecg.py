"""Pseudo-ECG (Gima & Rudy 2002, Circ Res 90:889) at the virtual electrodes of a 12-lead placement.

phi(x_e) = int (-D grad Vm) . grad(1 / |x - x_e|) dV, evaluated per tet (P1 gradient, centroid
kernel) as a precomputed (E, N) lead-field matrix, so phi(t) = L @ Vm(t). Electrodes are placed
in the heart's own frame (centroid, principal axes of the mesh points): limb electrodes far away
(RA, LA, LL), precordial V1-V6 on an arc in front of the heart. Leads follow Einthoven,
Goldberger and Wilson. Values are in mV*mm units of the integral (a pseudo-ECG: shapes and
timings are meaningful, absolute amplitudes are not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cardiotwin.electrophysiology.operators import cell_fibres
from cardiotwin.types import HeartMesh

log = logging.getLogger(__name__)

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")


def heart_frame(points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroid (3,), axes (3, 3) rows: long axis, second, third principal direction)."""
    c = points_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(points_mm - c, full_matrices=False)
    return c, vt


def electrode_positions(points_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Virtual electrode positions (mm) in the heart frame; limb electrodes at 10 heart radii,
    precordials at 2 radii on an arc from the right parasternal to the left mid-axillary side."""
    c, ax = heart_frame(points_mm)
    radius = float(np.max(np.linalg.norm(points_mm - c, axis=1)))
    long, a2, a3 = ax
    far = 10.0 * radius
    pos = {"RA": c + far * (0.7 * long - 0.7 * a2), "LA": c + far * (0.7 * long + 0.7 * a2),
           "LL": c - far * long}
    for k, ang in enumerate(np.deg2rad([-30, -10, 10, 30, 55, 80])):
        pos[f"V{k + 1}"] = c + 2.0 * radius * (np.cos(ang) * a3 + np.sin(ang) * a2) - 0.2 * radius * long
    return pos


def lead_field(mesh: HeartMesh, *, d_l: float, d_t: float, electrodes: dict[str, np.ndarray]) -> np.ndarray:
    """(E, N) matrix L with phi_e = L @ Vm for the electrodes in ``ELECTRODES`` order."""
    x = mesh.points[mesh.cells]  # (M, 4, 3)
    J = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], axis=1)  # (M, 3, 3) rows
    vol = np.abs(np.linalg.det(J)) / 6.0
    Jinv = np.linalg.inv(J)  # grad of barycentric 1..3 are columns of Jinv
    G = np.concatenate([-Jinv.sum(axis=2, keepdims=True), Jinv], axis=2)  # (M, 3, 4): grad phi_k
    f = cell_fibres(mesh)
    D = d_t * np.eye(3)[None] + (d_l - d_t) * f[:, :, None] * f[:, None, :]
    cent = x.mean(axis=1)
    L = np.zeros((len(ELECTRODES), mesh.n_points))
    for e, name in enumerate(ELECTRODES):
        r = cent - electrodes[name]
        grad_inv_r = -r / np.linalg.norm(r, axis=1)[:, None] ** 3
        w = np.einsum("mij,mj->mi", D, grad_inv_r)  # D grad(1/r)
        coef = -vol[:, None] * np.einsum("mi,mik->mk", w, G)  # (M, 4); phi = int (-D grad Vm) . grad(1/r)
        np.add.at(L[e], mesh.cells.ravel(), coef.ravel())
    return L


def leads_from_electrodes(phi: np.ndarray) -> dict[str, np.ndarray]:
    """phi: (E, T) electrode potentials in ``ELECTRODES`` order -> 12 leads (T,) each."""
    ra, la, ll = phi[0], phi[1], phi[2]
    wct = (ra + la + ll) / 3.0
    out = {"I": la - ra, "II": ll - ra, "III": ll - la, "aVR": ra - 0.5 * (la + ll),
           "aVL": la - 0.5 * (ra + ll), "aVF": ll - 0.5 * (ra + la)}
    for k in range(6):
        out[f"V{k + 1}"] = phi[3 + k] - wct
    return out


def reaction_eikonal_vm(activation_ms: np.ndarray, t_ms: float, *, apd_ms: float = 250.0, tau_up_ms: float = 1.0,
                        tau_down_ms: float = 20.0, v_rest_mv: float = -85.0, v_peak_mv: float = 20.0) -> np.ndarray:
    """Vm (N,) at time t from an activation map: a smooth template AP shifted by activation
    (upstroke of width tau_up, repolarisation after apd_ms of width tau_down)."""
    s = np.nan_to_num(t_ms - activation_ms, nan=-1e9)
    up = 0.5 * (1.0 + np.tanh(s / tau_up_ms))
    down = 0.5 * (1.0 - np.tanh((s - apd_ms) / tau_down_ms))
    return v_rest_mv + (v_peak_mv - v_rest_mv) * up * down


def qrs_duration_ms(times_ms: np.ndarray, leads: dict[str, np.ndarray], *, fraction: float = 0.1) -> float:
    """QRS width: the first contiguous interval (gaps < 5 ms bridged) where the RMS over leads of
    the leads exceeds ``fraction`` of its maximum (a uniform Vm, at rest or on the plateau, gives 0). Units ms."""
    X = np.stack([leads[k] for k in LEADS if k in leads])
    d = np.sqrt(np.mean(X**2, axis=0))
    above = d >= fraction * d.max()
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return 0.0
    dt = float(np.median(np.diff(times_ms)))
    gap = max(1, int(round(5.0 / dt)))
    end = idx[0]
    for i in idx[1:]:
        if i - end > gap:
            break
        end = i
    return float(times_ms[end] - times_ms[idx[0]])


def ecg_from_activation(mesh: HeartMesh, activation_ms: np.ndarray, *, d_l: float, d_t: float,
                        t_end_ms: float | None = None, dt_ms: float = 1.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """12-lead pseudo-ECG of the reaction-eikonal Vm built from an activation map."""
    L = lead_field(mesh, d_l=d_l, d_t=d_t, electrodes=electrode_positions(mesh.points))
    t_end = t_end_ms if t_end_ms is not None else float(np.nanmax(activation_ms)) + 350.0
    times = np.arange(0.0, t_end + 0.5 * dt_ms, dt_ms)
    phi = np.stack([L @ reaction_eikonal_vm(activation_ms, t) for t in times], axis=1)
    return times, leads_from_electrodes(phi)


def write_ecg(out_dir: Path, times_ms: np.ndarray, leads: dict[str, np.ndarray], *, record: str = "ecg") -> list[Path]:
    """WFDB record (``record.hea``/``.dat``, 1 kHz resampled) and a 12-panel PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import wfdb

    out_dir.mkdir(parents=True, exist_ok=True)
    fs = 1000.0
    t_u = np.arange(times_ms[0], times_ms[-1] + 1e-9, 1000.0 / fs)
    names = [k for k in LEADS if k in leads]
    sig = np.stack([np.interp(t_u, times_ms, leads[k]) for k in names], axis=1)
    scale = np.max(np.abs(sig)) or 1.0
    wfdb.wrsamp(record, fs=fs, units=["mV"] * len(names), sig_name=names, p_signal=sig / scale,
                fmt=["16"] * len(names), write_dir=str(out_dir),
                comments=[f"cardiotwin pseudo-ECG, normalised by {scale:.6g}"])
    fig, axes = plt.subplots(6, 2, figsize=(10, 10), sharex=True)
    for ax, k in zip(axes.T.ravel(), names):
        ax.plot(times_ms, leads[k], lw=1.0)
        ax.set_ylabel(k)
    for ax in axes[-1]:
        ax.set_xlabel("time (ms)")
    fig.tight_layout()
    png = out_dir / f"{record}.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return [out_dir / f"{record}.hea", out_dir / f"{record}.dat", png]
