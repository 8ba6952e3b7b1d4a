"""Measurements of the patient: from ED/ES label maps and from clinical values (YAML or FHIR).

Image measurements (``image_measurements``): LV and RV end-diastolic / end-systolic volumes,
stroke volume and ejection fraction from the blood-pool labels, LV mass from the ED myocardium
(density 1.05 g/mL), and LV wall thickness per AHA segment (Cerqueira et al. 2002) at ED and ES
with the systolic thickening (T_ES - T_ED) / T_ED.

Wall thickness: voxels are binned in slabs along the LV long axis and in AHA angular sectors
about the cavity centroid of each slab; a sector of angle dtheta and height h holding cavity
volume V_c and myocardial volume V_m has the equivalent radii r_endo = sqrt(2 V_c / (dtheta h))
and r_epi = sqrt(2 (V_c + V_m) / (dtheta h)), and the thickness r_epi - r_endo (exact for an
annulus, insensitive to voxel staircasing). Segment 17 (the apical cap) has no cavity and is
left out. The rotational origin is the septum (towards the RV blood pool; patient right, -x in
LPS, without RV labels), as in ``fibers.coordinates``; without RV labels the sectors are only
approximately anatomical.

Clinical values (``clinical_measurements``): a YAML mapping of the names in ``CLINICAL`` to a
number in the canonical unit or a string with a unit ("120 mmHg", "35 %", "1.2 s"). FHIR
bundles are read by ``cardiotwin.io.fhir`` into the same (value, unit) form. Unknown names,
unconvertible units and implausible values are refused naming the value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.anatomy import Label
from cardiotwin.config import convert, parse_quantity, read_yaml
from cardiotwin.errors import CardiotwinError, ConfigError
from cardiotwin.types import LabelMap

log = logging.getLogger(__name__)

MYOCARDIAL_DENSITY_G_PER_ML = 1.05


class MeasurementError(CardiotwinError):
    """A patient measurement that is unknown, unconvertible or physiologically implausible."""


@dataclass(frozen=True)
class ClinicalQuantity:
    """A clinical measurement: canonical unit (``config`` unit name) and plausible range."""

    unit: str
    low: float
    high: float
    doc: str


CLINICAL: dict[str, ClinicalQuantity] = {
    "systolic_bp_mmhg": ClinicalQuantity("mmHg", 50.0, 260.0, "cuff systolic pressure"),
    "diastolic_bp_mmhg": ClinicalQuantity("mmHg", 20.0, 160.0, "cuff diastolic pressure"),
    "heart_rate_bpm": ClinicalQuantity("bpm", 25.0, 220.0, "heart rate"),
    "qrs_duration_ms": ClinicalQuantity("ms", 50.0, 300.0, "QRS duration"),
    "lvedp_mmhg": ClinicalQuantity("mmHg", 1.0, 50.0, "LV end-diastolic pressure"),
    "lv_edv_ml": ClinicalQuantity("mL", 20.0, 700.0, "LV end-diastolic volume"),
    "lv_esv_ml": ClinicalQuantity("mL", 5.0, 650.0, "LV end-systolic volume"),
    "lv_ef": ClinicalQuantity("", 0.03, 0.9, "LV ejection fraction"),
    "rv_edv_ml": ClinicalQuantity("mL", 20.0, 700.0, "RV end-diastolic volume"),
    "rv_esv_ml": ClinicalQuantity("mL", 5.0, 650.0, "RV end-systolic volume"),
    "rv_ef": ClinicalQuantity("", 0.03, 0.9, "RV ejection fraction"),
}

# UCUM codes (FHIR Quantity.code) -> the project's unit names
UCUM_UNITS = {"mm[Hg]": "mmHg", "mL": "mL", "ml": "mL", "L": "L", "%": "%", "1": "", "ms": "ms", "s": "s",
              "/min": "bpm", "{beats}/min": "bpm", "{beat}/min": "bpm", "1/min": "bpm", "kPa": "kPa"}


def _convert_clinical(name: str, value: Any, *, where: str) -> float:
    if name not in CLINICAL:
        raise MeasurementError(f"{where}: unknown measurement {name!r}; known: {', '.join(CLINICAL)}")
    q = CLINICAL[name]
    try:
        v = parse_quantity(value, q.unit, where=f"{where}: {name}")
    except ConfigError as exc:
        raise MeasurementError(str(exc)) from None
    # a bare number > 1 for a fraction is a percentage written without its unit: refuse, not guess
    if not math.isfinite(v) or not q.low <= v <= q.high:
        raise MeasurementError(f"{where}: {name} = {value!r} is implausible ({q.doc}: expected "
                               f"{q.low:g}-{q.high:g} {q.unit or '(fraction)'})")
    return v


def check_consistency(values: dict[str, float], *, where: str) -> None:
    """Refuse contradictory values (systolic below diastolic, ESV above EDV, EF against volumes)."""
    s, d = values.get("systolic_bp_mmhg"), values.get("diastolic_bp_mmhg")
    if s is not None and d is not None and s <= d:
        raise MeasurementError(f"{where}: systolic_bp_mmhg {s:g} is not above diastolic_bp_mmhg {d:g}")
    for side in ("lv", "rv"):
        edv, esv, ef = (values.get(f"{side}_{k}") for k in ("edv_ml", "esv_ml", "ef"))
        if edv is not None and esv is not None:
            if esv >= edv:
                raise MeasurementError(f"{where}: {side}_esv_ml {esv:g} is not below {side}_edv_ml {edv:g}")
            if ef is not None and abs((edv - esv) / edv - ef) > 0.05:
                raise MeasurementError(f"{where}: {side}_ef {ef:g} contradicts the volumes "
                                       f"((EDV - ESV) / EDV = {(edv - esv) / edv:.3f})")


def clinical_measurements(data: dict[str, Any], *, where: str = "measurements") -> dict[str, float]:
    """Validate a mapping name -> quantity (number in the canonical unit or a unit string)."""
    out = {name: _convert_clinical(name, value, where=where) for name, value in data.items()}
    check_consistency(out, where=where)
    return out


def read_measurements_yaml(path: str | Path) -> dict[str, float]:
    """Clinical measurements from a YAML file (``CLINICAL`` names; e.g. ``lvedp_mmhg: 12 mmHg``)."""
    data = read_yaml(path)
    data = {k: v for k, v in data.items() if k not in ("note", "source")}
    return clinical_measurements(data, where=str(path))


def from_coded(values: dict[str, tuple[float, str]], *, where: str) -> dict[str, float]:
    """Measurements given as name -> (value, UCUM unit), as ``cardiotwin.io.fhir`` returns them."""
    out = {}
    for name, (value, ucum) in values.items():
        if name not in CLINICAL:
            raise MeasurementError(f"{where}: unknown measurement {name!r}")
        unit = UCUM_UNITS.get(ucum)
        if unit is None:
            raise MeasurementError(f"{where}: {name} has unit {ucum!r}, which does not convert to "
                                   f"{CLINICAL[name].unit or 'a fraction'}")
        try:
            canonical = convert(float(value), unit, CLINICAL[name].unit)
        except ConfigError as exc:
            raise MeasurementError(f"{where}: {name} = {value} {ucum}: {exc}") from None
        out[name] = _convert_clinical(name, canonical, where=where)
    check_consistency(out, where=where)
    return out


def read_measurements_fhir(path: str | Path) -> dict[str, float]:
    """Clinical measurements from a FHIR R4 Bundle of Observations (``cardiotwin.io.fhir``)."""
    from cardiotwin.io.fhir import read_observations

    return from_coded(read_observations(path), where=str(path))


# -- images ---------------------------------------------------------------------------------

def _world_points(labels: LabelMap, mask: np.ndarray) -> np.ndarray:
    return labels.geometry.index_to_world(np.argwhere(mask))


def lv_long_axis(ed: LabelMap) -> tuple[np.ndarray, np.ndarray]:
    """(point on the axis, unit axis apex -> base) of the LV from an ED label map (LPS mm).

    A short-axis stack (one spacing >= 2x the others) has its long axis along the slice normal;
    otherwise the principal axis of the LV (blood + myocardium). The basal end is the one where
    the blood pool is wider.
    """
    g = ed.geometry
    blood = ed.labels == Label.LV_BLOOD
    if not blood.any():
        raise MeasurementError(f"{ed.source or 'label map'}: no LV blood pool (label 1)")
    lv = _world_points(ed, blood | (ed.labels == Label.LV_MYO))
    centre = lv.mean(axis=0)
    sp = np.asarray(g.spacing_mm)
    k = int(np.argmax(sp))
    if sp[k] >= 2.0 * np.delete(sp, k).max():
        axis = g.direction_matrix[:, k].copy()
    else:
        _, _, vt = np.linalg.svd(lv - centre, full_matrices=False)
        axis = vt[0]
    axis /= np.linalg.norm(axis)
    bp = _world_points(ed, blood)
    s = (bp - centre) @ axis
    radial = np.linalg.norm((bp - centre) - np.outer(s, axis), axis=1)
    upper, lower = s > np.median(s), s <= np.median(s)
    if radial[upper].mean() < radial[lower].mean():
        axis = -axis
    return centre, axis


def _sector(deg: np.ndarray, n: int) -> np.ndarray:
    """AHA sector index from the angle (0 septum, +90 anterior): 6 sectors (anterior,
    anteroseptal, inferoseptal, inferior, inferolateral, anterolateral) or 4 (ant, sept, inf, lat)."""
    width = 360.0 / n
    return (np.mod(90.0 - deg + width / 2.0, 360.0) // width).astype(int)


def wall_thickness_by_segment(labels: LabelMap, *, centre: np.ndarray, axis: np.ndarray,
                              septum: np.ndarray, z_range: tuple[float, float],
                              slab_mm: float | None = None) -> dict[int, float]:
    """Mean LV wall thickness (mm) per AHA segment 1-16 of one label map (see module docstring).

    ``z_range``: (apex, base) of the LV cavity along ``axis`` from ``centre`` (mm), split into
    thirds; ``septum``: unit vector towards the septum, normal to ``axis``.
    """
    g = labels.geometry
    slab = slab_mm or float(max(g.spacing_mm))
    other = np.cross(axis, septum)
    if other @ np.array([0.0, -1.0, 0.0]) < 0:  # +90 degrees anterior (LPS -y)
        other = -other
    vox = g.voxel_volume_ml * 1000.0
    blood = _world_points(labels, labels.labels == Label.LV_BLOOD)
    myo = _world_points(labels, labels.labels == Label.LV_MYO)
    if len(myo) == 0:
        return {}
    z0, z1 = z_range
    third = (z1 - z0) / 3.0
    edges = np.arange(z0, z1 + slab, slab)
    sums: dict[int, list[float]] = {}
    for lo in edges[:-1]:
        hi = lo + slab
        b = blood[((blood - centre) @ axis >= lo) & ((blood - centre) @ axis < hi)]
        m = myo[((myo - centre) @ axis >= lo) & ((myo - centre) @ axis < hi)]
        if len(b) < 4 or len(m) < 4:
            continue
        c = b.mean(axis=0)
        zmid = lo + slab / 2.0
        ring = 0 if zmid >= z0 + 2 * third else (6 if zmid >= z0 + third else 12)
        n = 4 if ring == 12 else 6
        h = slab
        dtheta = 2.0 * np.pi / n
        sec = {}
        for name, pts in (("b", b), ("m", m)):
            d = pts - c
            deg = np.degrees(np.arctan2(d @ other, d @ septum))
            sec[name] = np.bincount(_sector(deg, n), minlength=n) * vox
        for i in range(n):
            if sec["b"][i] <= 0 or sec["m"][i] <= 0:
                continue
            r_endo = math.sqrt(2.0 * sec["b"][i] / (dtheta * h))
            r_epi = math.sqrt(2.0 * (sec["b"][i] + sec["m"][i]) / (dtheta * h))
            sums.setdefault(ring + 1 + i, []).append(r_epi - r_endo)
    return {s: float(np.mean(v)) for s, v in sorted(sums.items())}


def _septum_direction(ed: LabelMap, centre: np.ndarray, axis: np.ndarray) -> np.ndarray:
    rv = ed.labels == Label.RV_BLOOD
    target = _world_points(ed, rv).mean(axis=0) - centre if rv.any() else np.array([-1.0, 0.0, 0.0])
    sept = target - (target @ axis) * axis
    if np.linalg.norm(sept) < 1e-9:
        sept = np.cross(axis, [0.0, 0.0, 1.0])
    return sept / np.linalg.norm(sept)


def image_measurements(ed: LabelMap, es: LabelMap | None = None) -> dict[str, Any]:
    """Volumes (mL), EF, LV mass (g) and AHA wall thickness (mm) of ED (and ES) label maps.

    Keys: lv_edv_ml, lv_mass_g, wall_thickness_ed_mm {segment: mm}; with RV labels rv_edv_ml;
    with ``es``: lv_esv_ml, lv_sv_ml, lv_ef (and rv_*), wall_thickness_es_mm and
    systolic_thickening {segment: (T_ES - T_ED) / T_ED} where ES has myocardium labels.
    """
    out: dict[str, Any] = {}
    if es is not None and not es.geometry.same_space(ed.geometry):
        log.info("ED and ES label maps lie on different grids; volumes are computed on each")
    out["lv_edv_ml"] = ed.volume_ml(Label.LV_BLOOD)
    out["lv_mass_g"] = ed.volume_ml(Label.LV_MYO) * MYOCARDIAL_DENSITY_G_PER_ML
    if out["lv_edv_ml"] <= 0:
        raise MeasurementError(f"{ed.source or 'ED label map'}: no LV blood pool (label 1)")
    rv_ed = ed.volume_ml(Label.RV_BLOOD)
    if rv_ed > 0:
        out["rv_edv_ml"] = rv_ed
    if es is not None:
        out["lv_esv_ml"] = es.volume_ml(Label.LV_BLOOD)
        if not 0 < out["lv_esv_ml"] < out["lv_edv_ml"]:
            raise MeasurementError(f"{es.source or 'ES label map'}: LV blood pool {out['lv_esv_ml']:.1f} mL is not "
                                   f"between 0 and the ED volume {out['lv_edv_ml']:.1f} mL (ED and ES swapped?)")
        out["lv_sv_ml"] = out["lv_edv_ml"] - out["lv_esv_ml"]
        out["lv_ef"] = out["lv_sv_ml"] / out["lv_edv_ml"]
        rv_es = es.volume_ml(Label.RV_BLOOD)
        if rv_ed > 0 and 0 < rv_es < rv_ed:
            out["rv_esv_ml"] = rv_es
            out["rv_sv_ml"] = rv_ed - rv_es
            out["rv_ef"] = out["rv_sv_ml"] / rv_ed
    centre, axis = lv_long_axis(ed)
    sept = _septum_direction(ed, centre, axis)
    s = (_world_points(ed, ed.labels == Label.LV_BLOOD) - centre) @ axis
    z_range = (float(s.min()), float(s.max()) + 1e-6)
    out["wall_thickness_ed_mm"] = wall_thickness_by_segment(ed, centre=centre, axis=axis, septum=sept,
                                                            z_range=z_range)
    if es is not None and np.any(es.labels == Label.LV_MYO):
        s_es = (_world_points(es, es.labels == Label.LV_BLOOD) - centre) @ axis
        es_range = (float(s_es.min()), float(s_es.max()) + 1e-6)
        t_es = wall_thickness_by_segment(es, centre=centre, axis=axis, septum=sept, z_range=es_range)
        out["wall_thickness_es_mm"] = t_es
        t_ed = out["wall_thickness_ed_mm"]
        out["systolic_thickening"] = {k: (t_es[k] - t_ed[k]) / t_ed[k] for k in t_es if k in t_ed and t_ed[k] > 0}
    return out


def short_axis_base_plane(ed: LabelMap, *, margin_mm: float = 2.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(point, normal) in LPS mm of a base plane for a label map without atria or great vessels
    (expert short-axis contours): normal to the LV long axis, ``margin_mm`` below the most basal
    LV blood-pool voxel centre; the normal points towards the base."""
    centre, axis = lv_long_axis(ed)
    s = (_world_points(ed, ed.labels == Label.LV_BLOOD) - centre) @ axis
    point = centre + (float(s.max()) - margin_mm) * axis
    return tuple(float(v) for v in point), tuple(float(v) for v in axis)


COMPARED = ("lv_edv_ml", "lv_esv_ml", "lv_ef", "rv_edv_ml", "rv_esv_ml", "rv_ef")


def measured_values(ed: LabelMap | None, es: LabelMap | None, clinical: dict[str, float] | None, *,
                    base_plane: dict[str, Any] | None = None) -> dict[str, Any]:
    """The patient's measurements: image values where the case has labels, clinical values for the
    rest (a clinical value that the images also give is kept under ``clinical`` for comparison).

    ``base_plane`` ({"point_mm", "normal"}: the plane the mesh stage cut the ventricles at): the
    cavity volumes are those of the labels below it, the domain the twin has (a voxel cut by the
    plane counts by its fraction below); the volumes of the whole label maps are kept under
    ``whole_labels``."""
    out: dict[str, Any] = image_measurements(ed, es) if ed is not None else {}
    if base_plane is not None and ed is not None:
        out.update(_volumes_below_plane(ed, es, base_plane, out))
    sources = {k: "images" for k in out}
    clinical = dict(clinical or {})
    for k, v in clinical.items():
        if out.get(k) is None:  # None: the images cannot give it (no end-systolic phase, no ejection)
            out[k] = v
            sources[k] = "clinical"
    for side in ("lv", "rv"):
        edv, esv, ef = (f"{side}_{k}" for k in ("edv_ml", "esv_ml", "ef"))
        if out.get(ef) is None and out.get(edv) is not None and out.get(esv) is not None:
            out[ef], sources[ef] = (out[edv] - out[esv]) / out[edv], sources[esv]
        if out.get(esv) is None and out.get(edv) is not None and out.get(ef) is not None:
            out[esv], sources[esv] = out[edv] * (1.0 - out[ef]), sources[ef]
    check_consistency({k: v for k, v in out.items() if isinstance(v, float)}, where="measurements")
    out["sources"] = sources
    out["clinical"] = {k: v for k, v in clinical.items() if sources.get(k) != "clinical"}
    return out


def _volumes_below_plane(ed: LabelMap, es: LabelMap | None, base_plane: dict[str, Any],
                         whole: dict[str, Any]) -> dict[str, Any]:
    from cardiotwin.anatomy import Label
    from cardiotwin.meshing.surface import BasePlane, labelled_volume_below_plane_ml

    plane = BasePlane(tuple(base_plane["point_mm"]), tuple(base_plane["normal"]))
    out: dict[str, Any] = {"whole_labels": {k: whole[k] for k in COMPARED if k in whole},
                           "volume_frame": "labels below the mesh's base plane (the twin's domain)"}
    for side, label in (("lv", Label.LV_BLOOD), ("rv", Label.RV_BLOOD)):
        edv = labelled_volume_below_plane_ml(ed, plane, (int(label),))
        if edv <= 0:
            continue
        out[f"{side}_edv_ml"] = edv
        esv = labelled_volume_below_plane_ml(es, plane, (int(label),)) if es is not None else 0.0
        ok = 0 < esv < edv
        out[f"{side}_esv_ml"] = esv if ok else None
        out[f"{side}_sv_ml"] = edv - esv if ok else None
        out[f"{side}_ef"] = (edv - esv) / edv if ok else None
    return out
