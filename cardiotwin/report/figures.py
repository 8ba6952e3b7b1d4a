"""Report figures (matplotlib, Agg): activation maps, AHA bullseye, ECG, PV loops, ranking,
convergence. Each function returns PNG bytes; ``data_uri`` inlines them in the HTML.

Activation maps are real renderings of the mesh's boundary surface (Poly3DCollection, faces
coloured by the mean of their vertex values), seen from two directions.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

MMHG_PER_KPA = 1.0 / 0.133322387415


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, *, dpi: int = 110) -> bytes:  # noqa: ANN001
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def activation_map(maps: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
                   vmin: float | None = None, vmax: float | None = None) -> bytes:
    """One row per map: (title, points (N, 3) mm, faces (F, 3), values (N,) ms), two views each.

    All maps share one colour scale (vmin/vmax, default the joint range) so they compare.
    """
    plt = _plt()
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    finite = [v[np.isfinite(v)] for _, _, _, v in maps]
    lo = vmin if vmin is not None else min(float(f.min()) for f in finite if f.size)
    hi = vmax if vmax is not None else max(float(f.max()) for f in finite if f.size)
    cmap = plt.get_cmap("turbo")
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1.0)
    fig = plt.figure(figsize=(7.0, 3.0 * len(maps)))
    for row, (title, pts, faces, vals) in enumerate(maps):
        face_vals = np.nanmean(vals[faces], axis=1)
        centre = pts.mean(axis=0)
        span = float(np.ptp(pts, axis=0).max()) / 2.0
        for col, (elev, azim, view) in enumerate(((10, -60, "anterior"), (10, 120, "posterior"))):
            ax = fig.add_subplot(len(maps), 2, 2 * row + col + 1, projection="3d")
            poly = Poly3DCollection(pts[faces], facecolors=cmap(norm(face_vals)), edgecolors="none", linewidths=0)
            ax.add_collection3d(poly)
            for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
                setter(c - span, c + span)
            ax.view_init(elev=elev, azim=azim)
            ax.set_axis_off()
            ax.set_title(f"{title} ({view})", fontsize=9)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=fig.axes, shrink=0.6, label="activation time (ms)")
    return _png(fig)


def bullseye(values: dict[int, float], *, label: str, cmap: str = "turbo", marks: dict[int, str] | None = None,
             size: tuple[float, float] = (3.6, 3.4)) -> bytes:
    """AHA 17-segment bullseye (Cerqueira et al. 2002): rings basal (1-6), mid (7-12), apical
    (13-16), apex (17); segment 1 anterior at 12 o'clock... drawn counter-clockwise as in the
    standard plot (septum left). Segments without a value are grey and hatched. ``marks``:
    segment -> text written after its number (and the segment outlined)."""
    plt = _plt()
    from matplotlib.patches import Wedge

    marks = marks or {}
    fig, ax = plt.subplots(figsize=size)
    vals = [v for v in values.values() if math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1.0)
    cm = plt.get_cmap(cmap)
    rings = ((1, 6, 0.75, 1.0, 60.0), (7, 6, 0.5, 0.75, 60.0), (13, 4, 0.25, 0.5, 45.0))
    for first, count, r0, r1, start in rings:
        width = 360.0 / count
        for k in range(count):
            seg = first + k
            theta1 = start + k * width
            v = values.get(seg)
            face = cm(norm(v)) if v is not None and math.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
            ax.add_patch(Wedge((0, 0), r1, theta1, theta1 + width, width=r1 - r0, facecolor=face,
                               edgecolor="black" if seg in marks else "white", lw=2.2 if seg in marks else 1.0,
                               hatch=None if v is not None else "//", zorder=3 if seg in marks else 2))
            mid = math.radians(theta1 + width / 2)
            rm = (r0 + r1) / 2
            dark = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2] < 0.45  # white text on dark segments
            ax.text(rm * math.cos(mid), rm * math.sin(mid), str(seg) + marks.get(seg, ""), ha="center", va="center",
                    fontsize=7, fontweight="bold" if seg in marks else "normal", zorder=4,
                    color="white" if dark else "black")
    v17 = values.get(17)
    ax.add_patch(Wedge((0, 0), 0.25, 0, 360, facecolor=cm(norm(v17)) if v17 is not None else (0.85, 0.85, 0.85, 1.0),
                       edgecolor="white"))
    ax.text(0, 0, "17" + marks.get(17, ""), ha="center", va="center", fontsize=7, zorder=4)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cm), ax=ax, shrink=0.8, label=label)
    return _png(fig)


def ecg(times_ms: np.ndarray, leads: dict[str, np.ndarray], *, qrs_ms: tuple[float, float] | None = None) -> bytes:
    """Pseudo-ECG leads (mV) against time (ms), one panel per lead (at most 12)."""
    plt = _plt()
    names = list(leads)[:12]
    ncol = 2 if len(names) > 3 else 1
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.0, 1.1 * nrow + 0.6), sharex=True, squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        ax.plot(times_ms, leads[name], lw=1.0, color="k")
        if qrs_ms is not None:
            ax.axvspan(qrs_ms[0], qrs_ms[1], color="tab:orange", alpha=0.15)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("time (ms)", fontsize=8)
    return _png(fig)


def pv_loops(loops: Sequence[tuple[str, np.ndarray, np.ndarray]], *, legend_below: bool = False,
             size: tuple[float, float] = (4.2, 3.4)) -> bytes:
    """Pressure-volume loops: (label, volume (T,) mL, pressure (T,) kPa) drawn in mmHg (the first
    loop solid and thicker: the baseline)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    for i, (label, vol, p) in enumerate(loops):
        ax.plot(vol, np.asarray(p) * MMHG_PER_KPA, "-" if i == 0 else "--", lw=2.0 if i == 0 else 1.3, label=label)
    ax.set_xlabel("volume (mL)")
    ax.set_ylabel("pressure (mmHg)")
    if legend_below:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    else:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def ranking_bars(names: Sequence[str], values: Sequence[float], *, label: str,
                 errors: Sequence[tuple[float, float] | None] | None = None) -> bytes:
    """Horizontal bars, best (first) on top, optional (lo, hi) intervals."""
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * n + 1.0))
    y = np.arange(n)[::-1]
    ax.barh(y, values, color=["tab:green"] + ["tab:blue"] * (n - 1))
    if errors:
        for yi, v, e in zip(y, values, errors):
            if e is not None:
                ax.plot([e[0], e[1]], [yi, yi], color="k", lw=1.2)
    ax.set_yticks(y, [str(s)[:40] for s in names], fontsize=7)
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def convergence(studies: Sequence[tuple[str, Sequence[float], Sequence[float], float | None]], *, xlabel: str) -> bytes:
    """Output against discretisation size, one panel per quantity: (name, sizes, values, extrapolated)."""
    plt = _plt()
    n = len(studies)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.6, 2.6), squeeze=False)
    for ax, (name, hs, vs, ext) in zip(axes[0], studies):
        ax.plot(hs, vs, "o-", color="tab:blue")
        if ext is not None and math.isfinite(ext):
            ax.axhline(ext, ls="--", color="tab:red", lw=1, label="Richardson")
            ax.plot([0.0], [ext], "s", color="tab:red")
            ax.legend(fontsize=7)
        ax.set_xlim(left=0.0)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    return _png(fig)


def code_verification_orders(sizes: Sequence[float], errors: Sequence[float], *, name: str, order: float) -> bytes:
    """log-log error against h with a reference slope line of the theoretical order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.4, 2.8))
    ax.loglog(sizes, errors, "o-", label=name)
    ref = errors[-1] * (np.asarray(sizes) / sizes[-1]) ** order
    ax.loglog(sizes, ref, "k--", lw=1, label=f"slope {order:g}")
    ax.set_xlabel("h")
    ax.set_ylabel("error")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)
