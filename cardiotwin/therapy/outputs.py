"""Files of the CRT stage: ranking (JSON, CSV), bullseye plots, PV loops, activation maps.

- ``ranking.json``: baseline, candidates best first (protocol, sites, metrics, concordance, UQ:
  P(best) and 95 % intervals over the QMC samples for lead sites and timing winners, and for the
  electromechanics candidates intervals of dP/dt change, SV, EF, stroke work over stiffness samples),
  latest segment, scar segments, sensitivity indices, metadata.
- ``uq.json``: sampled inputs, sensitivity indices, stiffness factors and baseline EM intervals,
  per-candidate UQ.
- ``ranking.csv``: one row per candidate.
- ``bullseye_activation.png``: baseline mean activation time per AHA segment.
- ``bullseye_response.png``: TAT change (%) of biventricular pacing from each segment's site.
- ``pv_loops.png``: LV pressure-volume loops, baseline vs the best protocols (when simulated).
- ``beats.json``: those beats' curves (times, LV/RV pressure and volume) and metrics, for the
  report and the viewer.
- ``activation_maps.png`` and ``activation.vtu``: activation times of baseline and best.
- ``ecg.json``: the 12-lead pseudo-ECG (``times_ms``, ``leads``, ``qrs_ms``) of the baseline and of
  each protocol with an activation map (when the stage computed them), for the viewer.

Plots use matplotlib (Agg); 3D rendering stays in the viewer, which reads ``activation.vtu``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.anatomy import AHA_SEGMENT_NAMES
from cardiotwin.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from cardiotwin.types import HeartMesh, PacingProtocol, TherapyResult

log = logging.getLogger(__name__)

MMHG_KPA = 0.133322387415


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def result_to_dict(result: TherapyResult) -> dict[str, Any]:
    """The TherapyResult as plain data (candidates best first)."""
    cands = []
    for c in result.candidates:
        p = c.protocol
        lead = p.lv_site or p.rv_site
        cands.append({
            "rank": c.rank, "name": p.name, "label": candidate_label(p), "clinical_label": clinical_label(p),
            "recommended": c.recommended,
            "excluded_reason": c.excluded_reason, "protocol": dataclasses.asdict(p),
            "position_mm": list(lead.position_mm) if lead else None,
            "lv_site": dataclasses.asdict(p.lv_site) if p.lv_site else None,
            "rv_site": dataclasses.asdict(p.rv_site) if p.rv_site else None,
            "lv_segment_name": AHA_SEGMENT_NAMES.get(p.lv_site.aha_segment, "") if p.lv_site else "",
            "av_delay_ms": p.av_delay_ms, "vv_delay_ms": p.vv_delay_ms,
            "metrics": c.metrics, "concordance": c.concordance, "uq": c.uq,
        })
    best = next((c for c in cands if c["recommended"]), None)
    return _clean({
        "best": best["name"] if best else None,
        "baseline": result.baseline,
        "latest_segment": result.latest_segment,
        "latest_segment_name": AHA_SEGMENT_NAMES.get(result.latest_segment, ""),
        "scar_segments": list(result.scar_segments),
        "candidates": cands,
        "sensitivity": result.sensitivity,
        "metadata": result.metadata,
    })


CSV_COLUMNS = ("rank", "name", "recommended", "excluded_reason", "lv_segment", "lv_surface", "rv_site", "av_delay_ms",
               "vv_delay_ms", "tat_ms", "tat_change_pct", "lvat_ms", "lvat_change_pct", "t90_ms", "qrs_ms",
               "concordance", "probability_best", "tat_change_pct_ci_low", "tat_change_pct_ci_high",
               "dpdt_change_pct", "stroke_volume_ml", "stroke_work_mj", "ejection_fraction", "responder",
               "dpdt_change_pct_ci_low", "dpdt_change_pct_ci_high")


def candidate_label(p: "PacingProtocol") -> str:
    """Readable name: "BiV, LV mid inferolateral (AHA 11, epi), RV apex, AV 120 / VV +0 ms"."""
    parts = ["BiV" if p.lv_site and p.rv_site else "LV only" if p.lv_site else "RV only" if p.rv_site else "intrinsic"]
    if p.lv_site:
        seg = AHA_SEGMENT_NAMES.get(p.lv_site.aha_segment, "")
        parts.append(f"LV {seg} (AHA {p.lv_site.aha_segment}, {p.lv_site.surface}, {p.lv_site.name})")
    if p.rv_site:
        parts.append(p.rv_site.name.replace("_", " "))
    if p.lv_site or p.rv_site:
        parts.append(f"AV {p.av_delay_ms:g} / VV {p.vv_delay_ms:+g} ms")
    return ", ".join(parts)


def clinical_label(protocol: "PacingProtocol | dict[str, Any]") -> str:
    """Short clinical name of a protocol, as the summary and the viewer show it:
    "BiV, LV basal inferolateral, AV 100 / VV 0 ms" ("VV 20 ms LV first" / "RV first" when
    not simultaneous; LV user or grid sites without an AHA name use their segment number).
    Takes a PacingProtocol or its ``ranking.json`` form (``protocol`` of a candidate)."""
    d = dataclasses.asdict(protocol) if dataclasses.is_dataclass(protocol) else dict(protocol)  # type: ignore[arg-type]
    lv = d.get("lv_site") if isinstance(d.get("lv_site"), dict) else None
    rv = d.get("rv_site") if isinstance(d.get("rv_site"), dict) else None
    if not lv and not rv:
        return "intrinsic rhythm (no pacing)"
    parts = ["BiV" if lv and rv else "LV only" if lv else "RV only"]
    if lv:
        seg = int(lv.get("aha_segment") or 0)
        parts.append(f"LV {AHA_SEGMENT_NAMES.get(seg, f'segment {seg}' if seg else 'site')}")
    if not lv and rv:
        parts.append(str(rv.get("name", "RV")).replace("_", " "))
    av, vv = float(d.get("av_delay_ms", 0.0)), float(d.get("vv_delay_ms", 0.0))
    timing = f"AV {av:g} / VV {abs(vv):g} ms"
    if lv and rv and vv:
        timing += " LV first" if vv > 0 else " RV first"
    parts.append(timing)
    return ", ".join(parts)


def ranking_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in data["candidates"]:
        m, u = c["metrics"], c["uq"]
        ci = u.get("tat_change_pct_ci95") or [None, None]
        ci_em = u.get("dpdt_change_pct_ci95") or [None, None]
        lv = c["lv_site"] or {}
        row = [c["rank"], c["name"], c["recommended"], c["excluded_reason"], lv.get("aha_segment", ""),
               lv.get("surface", ""), (c["rv_site"] or {}).get("name", ""), c["av_delay_ms"], c["vv_delay_ms"],
               m.get("tat_ms"), m.get("tat_change_pct"), m.get("lvat_ms"), m.get("lvat_change_pct"), m.get("t90_ms"),
               m.get("qrs_ms"), c["concordance"], u.get("probability_best"), ci[0], ci[1], m.get("dpdt_change_pct"),
               m.get("stroke_volume_ml"), m.get("stroke_work_mj"), m.get("ejection_fraction"), m.get("responder"),
               ci_em[0], ci_em[1]]
        w.writerow(["" if v is None else (f"{v:.4g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def _bullseye(ax: Any, values: dict[int, float], *, title: str, cmap: str, label: str,
              mark: dict[int, str] | None = None) -> None:
    """Draw the AHA-17 bullseye (Cerqueira 2002 layout: anterior at the top, septum on the left)."""
    import matplotlib as mpl

    finite = [v for v in values.values() if v is not None and np.isfinite(v)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    norm = mpl.colors.Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)
    cm = mpl.colormaps[cmap]
    rings = [((1, 2, 3, 4, 5, 6), 0.75, 1.0, 60.0), ((7, 8, 9, 10, 11, 12), 0.5, 0.75, 60.0),
             ((13, 14, 15, 16), 0.25, 0.5, 90.0)]
    for segs, r0, r1, width in rings:
        for i, s in enumerate(segs):
            start = 90.0 + width / 2.0 + i * width if width == 60.0 else 45.0 + i * width
            theta0 = start - width if width == 60.0 else start
            v = values.get(s)
            color = cm(norm(v)) if v is not None and np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
            ax.add_patch(mpl.patches.Wedge((0, 0), r1, theta0, theta0 + width, width=r1 - r0, facecolor=color,
                                           edgecolor="k", lw=0.8))
            mid = np.deg2rad(theta0 + width / 2.0)
            rm = (r0 + r1) / 2.0
            txt = f"{s}\n{v:.0f}" if v is not None and np.isfinite(v) else f"{s}"
            ax.text(rm * np.cos(mid), rm * np.sin(mid), txt + ((mark or {}).get(s, "")), ha="center", va="center",
                    fontsize=7)
    v = values.get(17)
    color = cm(norm(v)) if v is not None and np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
    ax.add_patch(mpl.patches.Circle((0, 0), 0.25, facecolor=color, edgecolor="k", lw=0.8))
    ax.text(0, 0, "17" + (f"\n{v:.0f}" if v is not None and np.isfinite(v) else "") + ((mark or {}).get(17, "")),
            ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cm), ax=ax, fraction=0.046, label=label)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # keeps colour-bar labels inside
    plt.close(fig)


def _views(mesh: HeartMesh) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Two views of the heart, base up: from the LV free wall and from the RV side.

    Returns (name, horizontal, vertical, depth towards the viewer) per view, each (N,) mm.
    """
    from cardiotwin.anatomy import FacetTag
    from cardiotwin.therapy.baseline import long_axis_height, surface_nodes

    h = long_axis_height(mesh)
    centred = mesh.points - mesh.points.mean(axis=0)
    up, *_ = np.linalg.lstsq(np.column_stack([centred, np.ones(len(h))]), h, rcond=None)
    up = up[:3] / np.linalg.norm(up[:3])  # direction of increasing apico-basal height
    lv = surface_nodes(mesh, FacetTag.LV_ENDO)
    rv = surface_nodes(mesh, FacetTag.RV_ENDO)
    lateral = mesh.points[lv].mean(axis=0) - (mesh.points[rv].mean(axis=0) if rv.size else mesh.points.mean(axis=0))
    lateral = lateral - (lateral @ up) * up
    if np.linalg.norm(lateral) < 1e-9:
        lateral = np.cross(up, [0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.cross(up, [1.0, 0.0, 0.0])
    lateral /= np.linalg.norm(lateral)
    side = np.cross(up, lateral)
    vert = centred @ up
    return [("LV free wall", centred @ side, vert, centred @ lateral),
            ("RV side", -(centred @ side), vert, -(centred @ lateral))]


def write_outputs(
    result: TherapyResult,
    out_dir: Path,
    *,
    mesh: HeartMesh,
    maps: dict[str, np.ndarray],
    beats: dict[str, dict[str, Any]],
) -> dict[str, Path]:
    """Write every output file into ``out_dir``; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    data = result_to_dict(result)
    paths = {"ranking_json": out_dir / "ranking.json", "ranking_csv": out_dir / "ranking.csv"}
    for c in data["candidates"]:
        if c["name"] in maps:
            c["activation"] = f"activation/{c['name']}.vtu"
    write_json_atomic(paths["ranking_json"], data)
    write_text_atomic(paths["ranking_csv"], ranking_csv(data))
    paths["uq_json"] = out_dir / "uq.json"
    write_json_atomic(paths["uq_json"], _clean({
        "inputs": result.metadata.get("uq_inputs", {}), "samples": result.metadata.get("n_samples", 0),
        "sensitivity_first_order": result.sensitivity,
        "timing_winners": result.metadata.get("timing_winners", []),
        "electromechanics": result.metadata.get("em_uq", {}),
        "candidates": {c["name"]: c["uq"] for c in data["candidates"] if c["uq"]},
    }))

    seg_times = {int(k): v for k, v in result.metadata.get("segment_activation_ms", {}).items()}
    marks = {s: " (scar)" for s in result.scar_segments}
    if result.latest_segment:
        marks[result.latest_segment] = marks.get(result.latest_segment, "") + " *"
    fig, ax = plt.subplots(figsize=(5, 4.2))
    _bullseye(ax, seg_times, title="baseline activation (ms), * latest non-scar segment", cmap="jet_r",
              label="mean activation time (ms)", mark=marks)
    paths["bullseye_activation"] = out_dir / "bullseye_activation.png"
    _save(fig, paths["bullseye_activation"])

    response: dict[int, float] = {}
    for c in result.candidates:
        p = c.protocol
        if (p.lv_site is not None and p.lv_site.name.startswith("LV_AHA") and p.av_delay_ms == result.metadata.get(
                "nominal_av_delay_ms", p.av_delay_ms) and p.name == f"BiV_{p.lv_site.name}"):
            response[p.lv_site.aha_segment] = float(c.metrics["tat_change_pct"])
    fig, ax = plt.subplots(figsize=(5, 4.2))
    _bullseye(ax, response, title="predicted TAT change (%) pacing each segment", cmap="RdYlGn_r",
              label="TAT change vs baseline (%)", mark={s: " (scar)" for s in result.scar_segments})
    paths["bullseye_response"] = out_dir / "bullseye_response.png"
    _save(fig, paths["bullseye_response"])

    if result.ecgs:
        paths["ecg_json"] = out_dir / "ecg.json"
        write_json_atomic(paths["ecg_json"], _clean({name: {"times_ms": np.asarray(e["times_ms"]).tolist(),
                                                            "leads": {k: np.asarray(v).tolist() for k, v in e["leads"].items()},
                                                            "qrs_ms": e.get("qrs_ms")}
                                                     for name, e in result.ecgs.items()}))
    if beats:
        paths["beats_json"] = out_dir / "beats.json"
        keys = ("times_ms", "lv_pressure_kpa", "lv_volume_ml", "rv_pressure_kpa", "rv_volume_ml", "edv_ml", "esv_ml",
                "stroke_volume_ml", "ejection_fraction", "dpdt_max_kpa_per_ms", "dpdt_max_mmhg_per_s", "stroke_work_mj")
        write_json_atomic(paths["beats_json"], _clean({name: {k: beat["result"][k] for k in keys if k in beat["result"]}
                                                       for name, beat in beats.items()}))
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, beat in beats.items():
            r = beat["result"]
            ax.plot(r["lv_volume_ml"], np.asarray(r["lv_pressure_kpa"]) / MMHG_KPA, "-" if name == "baseline" else "--",
                    lw=2 if name == "baseline" else 1.2, label=name)
        ax.set_xlabel("LV volume (mL)")
        ax.set_ylabel("LV pressure (mmHg)")
        ax.set_title("LV pressure-volume loops: baseline vs best")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths["pv_loops"] = out_dir / "pv_loops.png"
        _save(fig, paths["pv_loops"])

    names = list(maps)[:4]
    views = _views(mesh)
    fig, axes = plt.subplots(len(views), len(names), figsize=(3.4 * len(names), 3.2 * len(views)), squeeze=False)
    vmax = max(float(np.nanmax(np.where(np.isfinite(maps[n]), maps[n], np.nan))) for n in names)
    from cardiotwin.anatomy import FacetTag

    surface = np.unique(mesh.facets[mesh.facet_tags == int(FacetTag.EPI)])  # the outside, as a surgeon sees it
    for col, name in enumerate(names):
        t = maps[name]
        for row, (view_name, u, v, depth) in enumerate(views):
            ax = axes[row][col]
            front = surface[depth[surface] >= np.median(depth[surface])]  # the half facing the viewer
            front = front[np.argsort(depth[front])]  # far to near, so near points are drawn on top
            sc = ax.scatter(u[front], v[front], c=np.where(np.isfinite(t[front]), t[front], np.nan), s=6,
                            cmap=matplotlib.colormaps["jet_r"].with_extremes(bad="0.6"), vmin=0.0, vmax=vmax,
                            plotnonfinite=True)
            tat = np.nanmax(np.where(np.isfinite(t), t, np.nan))
            ax.set_title(f"{name}\n{view_name}, TAT {tat:.0f} ms" if row == 0 else view_name, fontsize=8)
            ax.set_aspect("equal")
            ax.axis("off")
    fig.colorbar(sc, ax=axes.ravel().tolist(), label="activation time (ms), grey: scar")
    paths["activation_maps"] = out_dir / "activation_maps.png"
    _save(fig, paths["activation_maps"])

    from cardiotwin.io.meshes import write_mesh

    # one file per map (the viewer's therapy/activation/<name>.vtu) plus the baseline as activation.vtu;
    # never-activated points (scar core) carry -1
    for name, t in maps.items():
        field = {"activation_time_ms": np.where(np.isfinite(t), t, -1.0)}
        write_mesh(mesh.with_fields(point_data=field), out_dir / "activation" / f"{name}.vtu")
    base = {"activation_time_ms": np.where(np.isfinite(maps["baseline"]), maps["baseline"], -1.0)}
    paths["activation_vtu"] = write_mesh(mesh.with_fields(point_data=base), out_dir / "activation.vtu")
    return paths
