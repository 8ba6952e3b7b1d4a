"""Case directory -> review scene: what the browser shows, as one JSON-ready payload.

The loader looks for each stage's outputs and takes what exists; a panel whose stage has not run
is listed under ``absent`` with the reason, and the page leaves it out. Nothing is made up: every
number shown comes from a file of the case.

Files read (all optional; LPS mm, ms, kPa as in ARCHITECTURE.md):

- ``inputs/scan.nii.gz`` and ``segment/labels.nii.gz``: orthogonal slices with the overlay and
  label surfaces (marching cubes on the label map);
- the richest tetrahedral mesh: ``ep/activation.vtu``, then ``fibers/*.vtu``, then
  ``mesh/*.vtu``: boundary surface, edges, point fields (``f0`` fibres, ``aha``, ``uvc_*``);
- ``ep/activation.vtu`` point data ``activation_time_ms``: the baseline activation map;
  ECG panel: the EP stage's WFDB record ``ep/ecg.hea`` (+ ``.dat``; 12-lead pseudo-ECG, time 0 at
  the first sample), else ``ep/ep.json`` key ``ecg`` (``times_ms`` and ``leads``: name -> values);
- ``em/metrics.json`` (``times_ms``, ``lv_pressure_kpa``, ``lv_volume_ml``, ``rv_*``,
  ``aha_fibre_strain_end_systole``): PV loops and the strain bullseye; ``em/displacement.xdmf``
  (dolfinx P1 ``displacement_mm`` over time): the deformation animation (needs h5py);
- ``therapy/ranking.json``: lead candidates (see ``therapy.read_candidates``);
- ``therapy/beats.json`` (the CRT stage's electromechanical beats: ``lv_pressure_kpa``,
  ``lv_volume_ml``, ``rv_*``, ``times_ms`` per protocol, "baseline" too): PV loops of the baseline
  and of each candidate that has a beat (``crt_pv``); ``therapy/ecg.json`` (its 12-lead pseudo-ECG
  per protocol: ``times_ms``, ``leads``, ``qrs_ms``): ECG of the baseline and of each candidate with
  an activation map (``crt_ecg``). Either panel counts as present when the em / ep stage or the
  CRT stage holds its data.

Array fields of the payload are ``{"dtype", "shape", "b64"}`` (little-endian, C order).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.anatomy import AHA_SEGMENT_NAMES, LABEL_NAMES
from cardiotwin.cases import Case, pseudonym
from cardiotwin.errors import CaseError
from cardiotwin.viewer import colors
from cardiotwin.viewer.encoding import decode_array, encode_array  # noqa: F401 - decode_array: for readers of a scene
from cardiotwin.viewer.geometry import (
    SurfaceMesh,
    aha_means,
    boundary_surface,
    fibre_segments,
    isochrone_segments,
    label_surfaces,
    read_volume_mesh,
)
from cardiotwin.viewer.therapy import Candidate, read_candidates

log = logging.getLogger(__name__)

PAYLOAD_FORMAT = "cardiotwin-review/1"
KPA_TO_MMHG = 1.0 / 0.133322387415


@dataclass(frozen=True)
class SceneOptions:
    """Sizes of what is sent to the browser (the page must stay light enough to share).

    max_voxels_per_axis: slices are strided to at most this many voxels along each axis;
    surface_voxels_per_axis: same for the marching-cubes label surfaces; max_fibres: fibre glyphs;
    isochrone_step_ms: spacing of the isochrone lines. include_identifiers: show the case id
    (default: its pseudonym, ``cases.pseudonym``).
    """

    max_voxels_per_axis: int = 128
    surface_voxels_per_axis: int = 72
    max_fibres: int = 1500
    isochrone_step_ms: float = 10.0
    seed: int = 0
    include_identifiers: bool = False


@dataclass(frozen=True)
class CaseContents:
    """Files of a case the review can show; ``absent`` maps a panel to why it is missing."""

    root: Path
    case_id: str
    scan: Path | None = None
    labels: Path | None = None
    mesh: Path | None = None
    activation: Path | None = None
    ep_summary: Path | None = None
    em_metrics: Path | None = None
    em_displacement: Path | None = None
    ranking: Path | None = None
    crt_beats: Path | None = None
    crt_ecg: Path | None = None
    absent: dict[str, str] = field(default_factory=dict)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def find_case_contents(root: str | Path) -> CaseContents:
    """Discover the viewable outputs of a case directory (needs ``manifest.json``)."""
    root = Path(root)
    case_id = str(Case.open(root).manifest.get("case_id") or root.name)  # CaseError for a damaged manifest
    absent: dict[str, str] = {}
    scan = _first_existing(root / "inputs" / "scan.nii.gz")
    if scan is None:
        absent["slices"] = "no inputs/scan.nii.gz (import a scan into the case)"
    labels = _first_existing(root / "segment" / "labels.nii.gz")
    if labels is None:
        absent["label_surfaces"] = "no segment/labels.nii.gz (run `cardiotwin segment`)"
    # Baseline map: the EP stage's, else the CRT stage's intrinsic (LBBB) map.
    activation = _first_existing(root / "ep" / "activation.vtu", root / "therapy" / "activation" / "baseline.vtu",
                                 root / "therapy" / "activation.vtu")
    meshes = [activation] if activation else []
    for stage in ("fibers", "mesh"):
        folder = root / stage
        if folder.is_dir():
            meshes += sorted(p for p in folder.glob("*.vtu") if p.is_file())
    mesh = meshes[0] if meshes else None
    if mesh is None:
        absent["mesh"] = "no mesh (run `cardiotwin mesh`)"
    if activation is None:
        absent["activation"] = "no ep/activation.vtu (run `cardiotwin simulate ep` or `cardiotwin crt`)"
    ep_summary = _first_existing(root / "ep" / "ecg.hea", root / "ep" / "ep.json")
    em_metrics = _first_existing(root / "em" / "metrics.json")
    crt_beats = _first_existing(root / "therapy" / "beats.json")
    crt_ecg = _first_existing(root / "therapy" / "ecg.json")
    if em_metrics is None and crt_beats is None:
        absent["pv_loops"] = ("no em/metrics.json or therapy/beats.json (run `cardiotwin simulate em`, or `cardiotwin "
                              "crt` with em_top_k > 0)")
    em_displacement = _first_existing(root / "em" / "displacement.xdmf")
    if em_displacement is None:
        absent["deformation"] = "no em/displacement.xdmf (run `cardiotwin simulate em`)"
    ranking = _first_existing(root / "therapy" / "ranking.json")
    if ranking is None:
        absent["candidates"] = "no therapy/ranking.json (run `cardiotwin crt`)"
    return CaseContents(root=root, case_id=case_id, scan=scan, labels=labels, mesh=mesh,
                        activation=activation, ep_summary=ep_summary, em_metrics=em_metrics,
                        em_displacement=em_displacement, ranking=ranking, crt_beats=crt_beats, crt_ecg=crt_ecg,
                        absent=absent)


# ------------------------------------------------------------------------------------ encoding
# ------------------------------------------------------------------------------------ sections
def _volume_section(contents: CaseContents, opts: SceneOptions) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from cardiotwin.io.scans import read_labels, read_scan

    if contents.scan is None and contents.labels is None:
        return None, []
    scan = read_scan(contents.scan) if contents.scan else None
    labels = read_labels(contents.labels) if contents.labels else None
    geometry = scan.geometry if scan is not None else labels.geometry  # type: ignore[union-attr]
    if scan is not None and labels is not None and not scan.geometry.same_space(labels.geometry):
        log.warning("%s and %s are not on one grid: overlay left out", contents.scan, contents.labels)
        labels_on_grid = None
    else:
        labels_on_grid = labels
    stride = max(1, math.ceil(max(geometry.shape) / opts.max_voxels_per_axis))
    affine = geometry.affine_lps.copy()
    affine[:3, :3] *= stride
    section: dict[str, Any] = {"stride": stride, "affine_lps": affine.tolist(),
                               "spacing_mm": [s * stride for s in geometry.spacing_mm],
                               "slice_names": slice_names(geometry.direction_matrix)}
    if scan is not None:
        vox = scan.voxels[::stride, ::stride, ::stride]
        lo, hi = np.percentile(vox, [0.5, 99.5])
        grey = np.clip((vox - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
        section["shape"] = list(grey.shape)
        section["scan"] = encode_array(grey.transpose(2, 1, 0), "uint8")  # k, j, i: i varies fastest
        section["modality"] = scan.modality
    if labels_on_grid is not None:
        lab = labels_on_grid.labels[::stride, ::stride, ::stride]
        section["shape"] = list(lab.shape)
        section["labels"] = encode_array(lab.transpose(2, 1, 0), "uint8")
    surfaces = []
    if labels is not None:
        for s in label_surfaces(labels, voxels_per_axis=opts.surface_voxels_per_axis):
            surfaces.append({"label": s.label, "name": LABEL_NAMES.get(s.label, str(s.label)),
                             "colour": list(colors.LABEL_COLOURS.get(s.label, (200, 200, 200))),
                             "vertices": encode_array(s.vertices_mm, "float32"),
                             "faces": encode_array(s.faces, "uint32")})
    return section, surfaces


def activation_values(values: np.ndarray) -> np.ndarray:
    """Activation times (ms) with "never activated" as NaN: the CRT stage writes -1 (scar core),
    solvers may write inf."""
    act = np.asarray(values, dtype=float).copy()
    act[~np.isfinite(act) | (act < 0)] = np.nan
    return act


def slice_names(direction: np.ndarray) -> list[str]:
    """Name of the slice across each voxel axis (i, j, k): the plane normal to an axis that runs
    within ~25 degrees of LPS x / y / z is sagittal / coronal / axial, else oblique."""
    names = []
    for axis, col in zip("ijk", np.asarray(direction, dtype=float).T):
        lps = int(np.argmax(np.abs(col)))
        plane = ("sagittal", "coronal", "axial")[lps] if abs(col[lps]) > 0.9 else "oblique"
        names.append(f"{plane} ({axis})")
    return names


def _configuration(cid: str, label: str, surface: SurfaceMesh, act_ms: np.ndarray,
                   aha: np.ndarray | None, opts: SceneOptions, metrics: dict[str, Any]) -> dict[str, Any]:
    finite = act_ms[np.isfinite(act_ms)]
    t0, t1 = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    levels = np.arange(math.ceil(t0 / opts.isochrone_step_ms) * opts.isochrone_step_ms, t1, opts.isochrone_step_ms)
    seg = isochrone_segments(surface.vertices_mm, surface.faces, act_ms, levels)
    out = {
        "id": cid, "label": label,
        "activation_ms": encode_array(act_ms, "float32"),
        "isochrones": encode_array(seg, "float32"),
        "isochrone_levels_ms": levels.tolist(),
        "first_ms": t0, "last_ms": t1, "total_activation_ms": t1 - t0,
        "not_activated_fraction": float(np.mean(~np.isfinite(act_ms))) if act_ms.size else 0.0,
        "metrics": metrics,
    }
    if aha is not None:
        out["aha_mean_ms"] = {str(k): v for k, v in aha_means(aha, act_ms).items()}
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CaseError(f"{path}: unreadable JSON ({exc})") from None


def _pv_cavities(data: dict[str, Any]) -> dict[str, Any]:
    """LV / RV pressure (mmHg) and volume (mL) curves of one beat, with EF and stroke volume."""
    out: dict[str, Any] = {}
    for cav, pre in (("LV", "lv"), ("RV", "rv")):
        p = np.asarray(data.get(f"{pre}_pressure_kpa") or [], dtype=float)
        v = np.asarray(data.get(f"{pre}_volume_ml") or [], dtype=float)
        if p.size and p.size == v.size:
            ef, sv = data.get("ejection_fraction"), data.get("stroke_volume_ml")
            out[cav] = {"pressure_mmhg": (p * KPA_TO_MMHG).tolist(), "volume_ml": v.tolist(),
                        "ejection_fraction": ef.get(cav) if isinstance(ef, dict) else None,
                        "stroke_volume_ml": sv.get(cav) if isinstance(sv, dict) else None}
    return out


def _pv_section(path: Path) -> dict[str, Any] | None:
    data = _read_json(path)
    out = _pv_cavities(data)
    if not out:
        return None
    strain = data.get("aha_fibre_strain_end_systole") or {}
    return {"cavities": out, "times_ms": data.get("times_ms") or [],
            "aha_fibre_strain": {str(k): float(v) for k, v in strain.items()}}


def _beat_order(names: list[str], labels: dict[str, str]) -> list[str]:
    """Baseline first, then the candidates in ranking order (labels' order), then any other."""
    rank = {n: i for i, n in enumerate(labels)}
    return sorted(names, key=lambda n: (n != "baseline", rank.get(n, len(rank)), n))


def _config_id(name: str, configs: set[str]) -> str | None:
    cid = "baseline" if name == "baseline" else f"candidate:{name}"
    return cid if cid in configs else None


def _per_protocol(path: Path, labels: dict[str, str], what: str) -> list[tuple[str, dict[str, Any]]]:
    """(protocol name, entry) of a CRT-stage file that maps protocol name -> object, baseline first
    then in ranking order; CaseError naming the file for anything else."""
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CaseError(f"{path}: expected a mapping of protocol name -> {what} object")
    return [(name, data[name]) for name in _beat_order([str(k) for k in data], labels)]


def crt_pv_section(path: Path, labels: dict[str, str], configs: set[str]) -> list[dict[str, Any]]:
    """PV loops of the CRT stage's beats (``therapy/beats.json``): one entry per beat (baseline
    first) with its name shown as in the summary and the configuration it belongs to."""
    out = []
    for name, beat in _per_protocol(path, labels, "beat"):
        sec = _pv_cavities(beat)
        if sec:
            out.append({"id": name, "label": labels.get(name, name), "configuration": _config_id(name, configs),
                        "cavities": sec, "times_ms": [float(t) for t in beat.get("times_ms") or []]})
    return out


def crt_ecg_section(path: Path, labels: dict[str, str], configs: set[str]) -> list[dict[str, Any]]:
    """Pseudo-ECGs of the CRT stage (``therapy/ecg.json``), baseline first."""
    out = []
    for name, ecg in _per_protocol(path, labels, "ECG"):
        if not ecg.get("times_ms") or not isinstance(ecg.get("leads"), dict):
            raise CaseError(f"{path}: ECG {name!r} needs times_ms and leads")
        n = len(ecg["times_ms"])
        leads = {str(k): [float(x) for x in v] for k, v in ecg["leads"].items() if len(v) == n}
        qrs = ecg.get("qrs_ms")
        out.append({"id": name, "label": labels.get(name, name), "configuration": _config_id(name, configs),
                    "times_ms": [float(t) for t in ecg["times_ms"]], "leads": leads,
                    "qrs_ms": float(qrs) if isinstance(qrs, (int, float)) and math.isfinite(qrs) else None})
    return out


def _wfdb_ecg(path: Path, *, max_samples: int = 2000) -> dict[str, Any] | None:
    """Leads of a WFDB record (``path`` is its ``.hea``); times from the sampling rate (ms)."""
    import wfdb

    try:
        rec = wfdb.rdrecord(str(path.with_suffix("")))
    except Exception as exc:  # wfdb raises many types for damaged records
        raise CaseError(f"{path}: unreadable WFDB record ({exc})") from None
    if rec.p_signal is None or not rec.sig_name:
        return None
    sig = np.asarray(rec.p_signal, dtype=float)
    step = max(1, int(math.ceil(sig.shape[0] / max_samples)))
    times = np.arange(sig.shape[0])[::step] * 1000.0 / float(rec.fs)
    return {"times_ms": times.tolist(), "units": list(rec.units or []),
            "leads": {str(name): sig[::step, i].tolist() for i, name in enumerate(rec.sig_name)}}


def _ecg_section(path: Path) -> dict[str, Any] | None:
    if path.suffix == ".hea":
        return _wfdb_ecg(path)
    ecg = _read_json(path).get("ecg")
    if not isinstance(ecg, dict) or not ecg.get("times_ms") or not isinstance(ecg.get("leads"), dict):
        return None
    n = len(ecg["times_ms"])
    leads = {str(k): [float(x) for x in v] for k, v in ecg["leads"].items() if len(v) == n}
    return {"times_ms": [float(t) for t in ecg["times_ms"]], "leads": leads} if leads else None


CALIBRATION_ROWS = (("lv_edv_ml", "LV end-diastolic volume", "mL"), ("lv_esv_ml", "LV end-systolic volume", "mL"),
                    ("lv_ef", "LV ejection fraction", ""), ("rv_edv_ml", "RV end-diastolic volume", "mL"),
                    ("rv_esv_ml", "RV end-systolic volume", "mL"), ("rv_ef", "RV ejection fraction", ""))


def calibration_section(calibration: Any, stage_dir: Path) -> dict[str, Any] | None:
    """The calibration fit of the twin (``calibrate/calibration.json``): measured vs twin per
    quantity, the calibrated parameters with their intervals, and the fit figure when present."""
    if not isinstance(calibration, dict):
        return None
    measured, twin = calibration.get("measured") or {}, calibration.get("simulated") or {}
    rows = [{"key": key, "label": label, "unit": unit, "measured": measured.get(key), "twin": twin.get(key)}
            for key, label, unit in CALIBRATION_ROWS if measured.get(key) is not None or twin.get(key) is not None]
    parameters = [{"name": name, "value": p.get("value"), "unit": p.get("unit", ""), "interval": p.get("interval")}
                  for name, p in (calibration.get("parameters") or {}).items() if isinstance(p, dict)]
    return {"rows": rows, "parameters": parameters,
            "figure": "calibrate/fit.png" if (stage_dir / "fit.png").is_file() else None}


def build_scene(root: str | Path, *, opts: SceneOptions = SceneOptions()) -> dict[str, Any]:
    """Everything the review page shows for the case at ``root``, as a JSON-ready dict."""
    contents = find_case_contents(root)
    absent = dict(contents.absent)
    payload: dict[str, Any] = {
        "format": PAYLOAD_FORMAT,
        "case_id": contents.case_id if opts.include_identifiers else pseudonym(contents.case_id),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "colormaps": {
            "activation": colors.stops_for_js(colors.ACTIVATION_STOPS),
            "response": colors.stops_for_js(colors.RESPONSE_STOPS),
            "aha": [[c / 255.0 for c in rgb] for rgb in colors.AHA_COLOURS],
        },
        "aha_names": {str(k): v for k, v in AHA_SEGMENT_NAMES.items()},
        "isochrone_step_ms": opts.isochrone_step_ms,
        "volume": None, "label_surfaces": [], "mesh": None, "fibres": None,
        "configurations": [], "candidates": [], "pv": None, "ecg": None, "deformation": None,
        "crt_pv": [], "crt_ecg": [], "calibration": None,
    }
    payload["volume"], payload["label_surfaces"] = _volume_section(contents, opts)

    surface: SurfaceMesh | None = None
    aha: np.ndarray | None = None
    if contents.mesh is not None:
        vol = read_volume_mesh(contents.mesh)
        surface = boundary_surface(vol)
        fields = {}
        for name in ("aha", "uvc_transmural", "uvc_apicobasal", "uvc_rotational"):
            if name in vol.point_data:
                fields[name] = encode_array(vol.point_data[name][surface.point_ids], "float32")
        if "aha" in vol.point_data:
            aha = np.asarray(vol.point_data["aha"])[surface.point_ids].astype(int)
        payload["mesh"] = {
            "source": str(contents.mesh.relative_to(contents.root)),
            "n_points": int(vol.points.shape[0]), "n_tets": int(vol.cells.shape[0]),
            "vertices": encode_array(surface.vertices_mm, "float32"),
            "faces": encode_array(surface.faces, "uint32"),
            "edges": encode_array(surface.edges, "uint32"),
            "fields": fields,
        }
        if "f0" in vol.point_data:
            segs, rgb = fibre_segments(vol.points, vol.cells, np.asarray(vol.point_data["f0"], dtype=float),
                                       max_fibres=opts.max_fibres, seed=opts.seed)
            payload["fibres"] = {"segments": encode_array(segs, "float32"), "colours": encode_array(rgb, "uint8")}
        else:
            absent["fibres"] = f"{contents.mesh.name} has no f0 (run `cardiotwin fibers`)"
        if "activation_time_ms" in vol.point_data:
            act = activation_values(vol.point_data["activation_time_ms"])[surface.point_ids]
            payload["configurations"].append(
                _configuration("baseline", "Baseline", surface, act, aha, opts, {}))

    if contents.ranking is not None:
        candidates = read_candidates(contents.ranking, case_root=contents.root)
        payload["candidates"] = [_candidate_entry(c, payload, surface, aha, opts, absent) for c in candidates]
        ranking = _read_json(contents.ranking)
        if isinstance(ranking, dict) and isinstance(ranking.get("baseline"), dict) and payload["configurations"] \
                and payload["configurations"][0]["id"] == "baseline":
            from cardiotwin.viewer.therapy import scalar_metrics

            payload["configurations"][0]["metrics"] = scalar_metrics(ranking["baseline"])
    if contents.em_metrics is not None:
        payload["pv"] = _pv_section(contents.em_metrics)
    if contents.ep_summary is not None:
        payload["ecg"] = _ecg_section(contents.ep_summary)
    calibration = contents.root / "calibrate" / "calibration.json"
    if calibration.is_file():
        payload["calibration"] = calibration_section(_read_json(calibration), contents.root / "calibrate")
    labels = {c["id"]: c["label"] for c in payload["candidates"]} | {"baseline": "intrinsic rhythm (baseline)"}
    configs = {c["id"] for c in payload["configurations"]}
    if contents.crt_beats is not None:
        payload["crt_pv"] = crt_pv_section(contents.crt_beats, labels, configs)
    if contents.crt_ecg is not None:
        payload["crt_ecg"] = crt_ecg_section(contents.crt_ecg, labels, configs)
    if payload["ecg"] is None and not payload["crt_ecg"]:
        absent["ecg"] = "no ep/ecg.hea or therapy/ecg.json (run `cardiotwin simulate ep` or `cardiotwin crt`)"
    if contents.em_displacement is not None and surface is not None:
        from cardiotwin.viewer.deformation import read_displacement_series

        try:
            payload["deformation"] = read_displacement_series(contents.em_displacement, surface.vertices_mm)
        except CaseError as exc:
            absent["deformation"] = str(exc)
    payload["absent"] = absent
    payload["present"] = sorted(k for k in ("volume", "label_surfaces", "mesh", "fibres", "configurations",
                                            "candidates", "pv", "ecg", "deformation", "crt_pv", "crt_ecg", "calibration")
                                if payload[k])
    return payload


def _candidate_entry(c: Candidate, payload: dict[str, Any], surface: SurfaceMesh | None,
                     aha: np.ndarray | None, opts: SceneOptions, absent: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": c.id, "label": c.label, "rank": c.rank,
                             "position_mm": list(c.position_mm) if c.position_mm else None,
                             "response": c.response, "response_name": c.response_name or "predicted response",
                             "metrics": c.metrics, "details": [list(r) for r in c.details], "configuration": None}
    if c.activation_path is not None and surface is not None:
        from scipy.spatial import cKDTree

        vol = read_volume_mesh(c.activation_path)
        if "activation_time_ms" not in vol.point_data:
            absent[f"candidate {c.id}"] = f"{c.activation_path.name} has no activation_time_ms"
            return entry
        act = activation_values(vol.point_data["activation_time_ms"])
        # Candidate runs may be on the same mesh (same node order) or a copy: map by position.
        _, nearest = cKDTree(vol.points).query(surface.vertices_mm)
        cfg = _configuration(f"candidate:{c.id}", c.label, surface, act[nearest], aha, opts, c.metrics)
        payload["configurations"].append(cfg)
        entry["configuration"] = cfg["id"]
    return entry
