"""Activation maps for the report: baseline and best-protocol maps of the CRT stage, else the EP stage.

Where the maps come from (first found wins):

- baseline: ``therapy/activation/baseline.vtu`` then ``therapy/activation.vtu`` (the CRT stage,
  ``therapy.outputs.write_outputs``: ms from QRS onset, never-activated scar-core points carry -1,
  shown as not activated), then ``ep/activation.vtu`` (``cardiotwin simulate ep``);
- best: the recommended candidate of ``therapy/ranking.json``: its ``activation`` entry (a path
  relative to ``therapy/``), else ``therapy/activation/<name>.vtu``.

The total activation time (TAT) and the AHA segment means shown next to a CRT map are the CRT
stage's own numbers (``ranking.json``: ``baseline.tat_ms``, the candidate's ``metrics.tat_ms``,
``metadata.segment_activation_ms``), so the report repeats exactly what the stage ranked on; for
an EP map they are computed from the map (latest - earliest; cell means per AHA segment).

``render_maps`` draws the maps with pyvista off screen (two views each, one shared colour scale).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.errors import CaseError
from cardiotwin.report.casedata import SurfaceField, aha_segment_means, finite, read_point_field

log = logging.getLogger(__name__)

FIELD = "activation_time_ms"
# Camera directions in LPS (x to the patient's left, y posterior, z superior): the anterior view
# looks from the front (-y), the posterior one from the back (+y); superior is up in both.
VIEWS = (("anterior", np.array([0.0, -1.0, 0.0])), ("posterior", np.array([0.0, 1.0, 0.0])))
# The clinical summary's views: left anterior oblique 40 degrees (the implanter's fluoroscopy view,
# from the patient's front-left) and posterolateral (from the back-left: the inferolateral wall,
# where LBBB activation ends and LV leads go).
SUMMARY_VIEWS = (("LAO 40", np.array([np.sin(np.deg2rad(40.0)), -np.cos(np.deg2rad(40.0)), 0.0])),
                 ("posterolateral", np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0])))


@dataclass(frozen=True)
class ActivationMap:
    """One activation map of the case: its surface field (ms, NaN where never activated), the
    file it came from (relative to the case), its TAT (ms) and where that number was taken."""

    title: str
    field: SurfaceField
    source: str
    tat_ms: float
    tat_source: str


@dataclass
class CaseActivation:
    """Baseline (and best) maps with the AHA segment means (segment -> ms) of the baseline."""

    baseline: ActivationMap | None = None
    best: ActivationMap | None = None
    segment_means_ms: dict[int, float] = field(default_factory=dict)
    segment_source: str = ""
    missing: list[str] = field(default_factory=list)


def _within(root: Path, path: Path) -> bool:
    return path.is_file() and path.resolve().is_relative_to(root.resolve())


def _read_crt_map(path: Path) -> SurfaceField:
    """A CRT-stage map: -1 marks never-activated points (scar core) -> NaN."""
    f = read_point_field(path, FIELD)
    values = np.where(f.values < 0.0, np.nan, f.values)
    if not np.isfinite(values).any():
        raise CaseError(f"{path}: {FIELD} has no activated point")
    return replace(f, values=values)


def _map_tat(f: SurfaceField) -> float:
    ok = np.isfinite(f.values)
    return float(f.values[ok].max() - f.values[ok].min())


def _candidate_files(root: Path, cand: dict[str, Any]) -> list[Path]:
    out = []
    if isinstance(cand.get("activation"), str):
        out.append(root / "therapy" / cand["activation"])
    name = cand.get("name") or cand.get("id")
    if isinstance(name, str) and name:
        out += [root / "therapy" / "activation" / f"{name}.vtu", root / "therapy" / name / "activation.vtu"]
    return out


def load_case_activation(root: Path, *, ranking: dict[str, Any] | None, best: dict[str, Any] | None,
                         best_name: str = "") -> CaseActivation:
    """Baseline and best activation maps of a case (see the module docstring for the order).

    ranking: the parsed ``therapy/ranking.json`` mapping (or None); best: its recommended
    candidate (or None). Absent maps are listed in ``missing`` with the command that makes them.
    """
    out = CaseActivation()
    ranking = ranking if isinstance(ranking, dict) else {}
    baseline_metrics = ranking.get("baseline") if isinstance(ranking.get("baseline"), dict) else {}
    for rel in ("therapy/activation/baseline.vtu", "therapy/activation.vtu"):
        if _within(root, root / rel):
            f = _read_crt_map(root / rel)
            tat = finite(baseline_metrics.get("tat_ms"))
            out.baseline = ActivationMap("baseline (LBBB)", f, rel, tat if tat is not None else _map_tat(f),
                                         "therapy/ranking.json baseline.tat_ms" if tat is not None else rel)
            seg = (ranking.get("metadata") or {}).get("segment_activation_ms")
            if isinstance(seg, dict):
                out.segment_means_ms = {int(k): float(v) for k, v in seg.items() if finite(v) is not None}
                out.segment_source = "therapy/ranking.json metadata.segment_activation_ms"
            break
    if out.baseline is None and _within(root, root / "ep" / "activation.vtu"):
        f = read_point_field(root / "ep" / "activation.vtu", FIELD)
        if not np.isfinite(f.values).any():
            raise CaseError(f"{root / 'ep' / 'activation.vtu'}: {FIELD} has no finite value")
        out.baseline = ActivationMap("baseline", f, "ep/activation.vtu", _map_tat(f), "ep/activation.vtu")
    if out.baseline is None:
        out.missing.append("activation map: neither the CRT stage (therapy/activation/baseline.vtu: run "
                           "`cardiotwin crt`) nor the EP stage (ep/activation.vtu: run `cardiotwin simulate ep`) "
                           "has written one")
    elif not out.segment_means_ms:
        out.segment_means_ms = aha_segment_means(out.baseline.field)
        out.segment_source = f"cell means of {out.baseline.source}"
    if best is not None:
        path = next((p for p in _candidate_files(root, best) if _within(root, p)), None)
        if path is None:
            out.missing.append(f"activation map of the recommended protocol {best_name}: not stored under therapy/")
        else:
            f = _read_crt_map(path)
            tat = finite((best.get("metrics") or {}).get("tat_ms"))
            rel = str(path.resolve().relative_to(root.resolve()))
            out.best = ActivationMap("recommended protocol", f, rel, tat if tat is not None else _map_tat(f),
                                     "therapy/ranking.json metrics.tat_ms" if tat is not None else rel)
    return out


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def render_maps(maps: Sequence[ActivationMap], *, width_px: int = 900,
                views: Sequence[tuple[str, np.ndarray]] = VIEWS, maps_in_columns: bool = False,
                height_ratio: float = 0.42, font_size: int = 9) -> bytes:
    """Off-screen pyvista rendering of the maps' boundary surfaces, one row per map and one column
    per view (``maps_in_columns``: the transpose), one shared colour scale (ms); never-activated
    points are grey. ``views``: (name, direction from the heart to the camera, LPS), superior up.
    PNG bytes."""
    import pyvista as pv

    values = np.concatenate([m.field.values[np.isfinite(m.field.values)] for m in maps])
    lo, hi = float(values.min()), float(values.max())
    clim = (lo, hi if hi > lo else lo + 1.0)
    shape = (len(views), len(maps)) if maps_in_columns else (len(maps), len(views))
    height = int(height_ratio * width_px)
    plotter = pv.Plotter(off_screen=True, shape=shape, window_size=(width_px, height * shape[0]), border=False)
    try:
        plotter.set_background("white")
        for r_map, m in enumerate(maps):
            f = m.field
            faces = np.hstack([np.full((len(f.faces), 1), 3, dtype=np.int64), f.faces]).ravel()
            surf = pv.PolyData(np.asarray(f.points, dtype=float), faces)
            surf.point_data[FIELD] = np.asarray(f.values, dtype=float)
            centre = f.points.mean(axis=0)
            distance = 3.2 * float(np.ptp(f.points, axis=0).max())
            for c_view, (view, direction) in enumerate(views):
                r, c = (c_view, r_map) if maps_in_columns else (r_map, c_view)
                plotter.subplot(r, c)
                last = r == shape[0] - 1 and c == shape[1] - 1
                plotter.add_mesh(surf.copy(), scalars=FIELD, cmap="turbo", clim=clim, nan_color="lightgrey",
                                 show_scalar_bar=last, smooth_shading=True,
                                 scalar_bar_args={"title": "ms", "color": "black", "vertical": True,
                                                  "position_x": 0.84, "position_y": 0.1, "height": 0.8,
                                                  "width": 0.08, "fmt": "%.0f"} if last else None)
                plotter.add_text(f"{m.title}, {view}\ntotal activation {m.tat_ms:.0f} ms", font_size=font_size, color="black")
                plotter.camera_position = [tuple(centre + distance * direction), tuple(centre), (0.0, 0.0, 1.0)]
                plotter.reset_camera_clipping_range()
        img = plotter.screenshot(return_img=True)
    finally:
        plotter.close()
    return _png(img)


def _render_in_child(maps: Sequence[ActivationMap], **kw: Any) -> bytes:
    """``render_maps`` in a fresh (spawned) process. VTK's off-screen OpenGL stack (Mesa llvmpipe
    threads, its own LLVM) left in the report's process made a later torch CPU convolution crash
    with SIGSEGV in the same process (seen in the test suite); a child keeps it out."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(render_maps, list(maps), **kw).result(timeout=600)


def activation_figure(maps: Sequence[ActivationMap]) -> tuple[bytes, str]:
    """PNG of the maps and the renderer used: pyvista off screen, or (when VTK cannot open an
    off-screen context) the matplotlib surface rendering of ``report.figures``."""
    try:
        return _render_in_child(maps), "pyvista (VTK, off screen)"
    except Exception as exc:  # VTK raises RuntimeError/ValueError; any failure falls back
        log.warning("pyvista off-screen rendering failed (%s); using matplotlib", exc)
    from cardiotwin.report import figures

    png = figures.activation_map([(m.title, m.field.points, m.field.faces, m.field.values) for m in maps])
    return png, "matplotlib (pyvista off-screen rendering failed)"


def summary_figure(maps: Sequence[ActivationMap]) -> bytes:
    """PNG of the maps for the clinical summary: one column per map (baseline, recommended), one
    row per clinical view (LAO 40, posterolateral); matplotlib when VTK cannot render."""
    titled = [replace(m, title="intrinsic (LBBB)" if i == 0 else "recommended") for i, m in enumerate(maps)]
    try:
        return _render_in_child(titled, width_px=1000, views=SUMMARY_VIEWS, maps_in_columns=True,
                                height_ratio=0.42 if len(maps) > 1 else 0.84, font_size=15)
    except Exception as exc:  # VTK raises RuntimeError/ValueError; any failure falls back
        log.warning("pyvista off-screen rendering failed (%s); using matplotlib", exc)
    from cardiotwin.report import figures

    return figures.activation_map([(m.title, m.field.points, m.field.faces, m.field.values) for m in titled])


def tat_change_pct(baseline: ActivationMap, best: ActivationMap) -> float | None:
    """Relative TAT change of the best map vs the baseline (%), None when the baseline TAT is 0."""
    if not math.isfinite(baseline.tat_ms) or baseline.tat_ms <= 0:
        return None
    return 100.0 * (best.tat_ms - baseline.tat_ms) / baseline.tat_ms
