"""The key numbers of a case that leave it for a PACS (DICOM SR) or an EHR (FHIR), each with its code.

Read only from the case's files: image volumes from ``segment/labels.nii.gz`` (the imaged phase,
not necessarily end-diastole), the simulated baseline beat (LV and RV EDV, ESV, EF) from
``therapy/beats.json`` or ``em/metrics.json``, the simulated baseline QRS duration and the
recommended LV lead site with its predicted response from ``therapy/ranking.json``. Whatever a
case lacks is left out and named in ``missing``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardiotwin.io.fhir import LOINC, MEASURES, SNOMED

PRIVATE = "urn:cardiotwin:code"  # codes of the private DICOM scheme 99CARDIOTWIN, as a FHIR system
SIMULATED = ("SIM", "Digital twin simulation")
IMAGE = ("SEG", "Automated segmentation")

_VOLUME = (SNOMED, "118565006", "Volume")
_MASS = (SNOMED, "118538004", "Mass")
_LV = (SNOMED, "87878005", "Left ventricle")
_RV = (SNOMED, "53085002", "Right ventricle")
_LV_MYO = (SNOMED, "49848007", "Left ventricle myocardium")
_HEART = (SNOMED, "80891009", "Heart")
RECOMMENDATION = ("http://dicom.nema.org/resources/ontology/DCM", "121075", "Recommendation")
LEAD_SITE = (PRIVATE, "LV-LEAD-SITE", "Recommended LV lead site")
TAT_CHANGE = (PRIVATE, "TAT-CHANGE", "Predicted change of total activation time")
DPDT_CHANGE = (PRIVATE, "DPDT-CHANGE", "Predicted change of LV dP/dt max")
P_BEST = (PRIVATE, "P-BEST", "Probability that the site is the best")


@dataclass(frozen=True)
class Number:
    """One coded value. ``measure``: the ``io.fhir.MEASURES`` key when the code is one of those."""

    key: str
    code: tuple[str, str, str]
    value: float
    unit: str
    method: tuple[str, str] | None = None
    measure: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Group:
    """Measurements about one structure or finding (one TID 1501 group)."""

    name: str
    finding: tuple[str, str, str]
    measurements: tuple[Number, ...]
    evaluations: tuple[tuple[tuple[str, str, str], tuple[str, str, str]], ...] = ()


@dataclass(frozen=True)
class KeyNumbers:
    groups: tuple[Group, ...]
    recommendation: dict[str, Any] | None
    missing: tuple[str, ...] = field(default_factory=tuple)
    sources: dict[str, str] = field(default_factory=dict)

    def numbers(self) -> list[Number]:
        return [m for g in self.groups for m in g.measurements]

    def conclusion(self) -> str:
        rec = self.recommendation
        if rec is None:
            return "No CRT lead recommendation: the case has no virtual CRT result."
        text = f"Recommended LV lead site: {rec['label']}."
        if rec.get("tat_change_pct") is not None:
            text += f" Predicted total activation time change {rec['tat_change_pct']:+.1f} %."
        if rec.get("dpdt_change_pct") is not None:
            text += f" Predicted LV dP/dt max change {rec['dpdt_change_pct']:+.1f} %."
        if rec.get("probability_best") is not None:
            text += f" Probability of being the best site {100 * rec['probability_best']:.0f} %."
        return text + " Model-based decision support; see the evidence report."


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _measure(name: str, key: str, value: float, method: tuple[str, str], text: str = "") -> Number:
    m = MEASURES[name]
    return Number(key=key, code=m.coding, value=value, unit=m.unit, method=method, measure=name, text=text or m.display)


def _read(path: Path) -> Any:
    from cardiotwin.errors import CaseError

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CaseError(f"{path}: cannot be read as JSON ({exc})") from None


def _image_groups(root: Path) -> tuple[list[Group], list[str]]:
    labels = root / "segment" / "labels.nii.gz"
    if not labels.is_file():
        return [], ["image volumes: no segment/labels.nii.gz (run `cardiotwin segment`)"]
    from cardiotwin.io.scans import read_labels
    from cardiotwin.segmentation.qc import quality_report

    report = quality_report(read_labels(labels))
    vol = report["volumes_ml"]
    groups = []
    for name, finding, key in (("LV blood pool", _LV, "lv_blood"), ("RV blood pool", _RV, "rv_blood")):
        v = _finite(vol.get(key))
        if v:
            groups.append(Group(name=name, finding=finding, measurements=(
                Number(key=f"{key}_ml", code=_VOLUME, value=v, unit="mL", method=IMAGE,
                       text=f"{name} volume at the imaged phase"),)))
    mass = _finite(report.get("lv_myocardial_mass_g"))
    myo = _finite(vol.get("lv_myo"))
    if mass or myo:
        ms = []
        if myo:
            ms.append(Number(key="lv_myo_ml", code=_VOLUME, value=myo, unit="mL", method=IMAGE,
                             text="LV myocardium volume"))
        if mass:
            ms.append(Number(key="lv_mass_g", code=_MASS, value=mass, unit="g", method=IMAGE, text="LV myocardial mass"))
        groups.append(Group(name="LV myocardium", finding=_LV_MYO, measurements=tuple(ms)))
    return groups, []


def _beat(root: Path) -> tuple[dict[str, Any] | None, str]:
    beats = root / "therapy" / "beats.json"
    if beats.is_file():
        data = _read(beats)
        if isinstance(data, dict) and isinstance(data.get("baseline"), dict):
            return data["baseline"], "therapy/beats.json"
    em = root / "em" / "metrics.json"
    if em.is_file():
        data = _read(em)
        if isinstance(data, dict):
            return data, "em/metrics.json"
    return None, ""


def _side(v: Any, side: str) -> float | None:
    return _finite(v.get(side)) if isinstance(v, dict) else (_finite(v) if side == "LV" else None)


def _beat_group(root: Path, ranking: dict[str, Any] | None) -> tuple[list[Group], list[str], dict[str, str]]:
    beat, source = _beat(root)
    ms: list[Number] = []
    sources = {}
    missing = []
    if beat is not None:
        sources["beat"] = source
        for side in ("LV", "RV"):
            s = side.lower()
            edv, esv = _side(beat.get("edv_ml"), side), _side(beat.get("esv_ml"), side)
            ef = _side(beat.get("ejection_fraction"), side)
            if edv is not None:
                ms.append(_measure(f"{s}_edv_ml", f"{s}_edv_ml", edv, SIMULATED))
            if esv is not None:
                ms.append(_measure(f"{s}_esv_ml", f"{s}_esv_ml", esv, SIMULATED))
            if ef is not None:
                ms.append(_measure(f"{s}_ef", f"{s}_ef", 100.0 * ef, SIMULATED))
    else:
        missing.append("simulated EDV, ESV, EF: no baseline beat (crt with em_top_k > 0, or `cardiotwin simulate em`)")
    qrs = _finite(((ranking or {}).get("baseline") or {}).get("qrs_ms"))
    if qrs is not None:
        ms.append(_measure("qrs_duration_ms", "qrs_duration_ms", qrs, SIMULATED, "Simulated baseline QRS duration"))
    if not ms:
        return [], missing, sources
    return [Group(name="Simulated baseline beat", finding=_HEART, measurements=tuple(ms))], missing, sources


def _recommendation(ranking: dict[str, Any]) -> tuple[dict[str, Any] | None, Group | None]:
    from cardiotwin.interop.documents import aha_segment_coding

    cands = ranking.get("candidates") or []
    best = next((c for c in cands if c.get("recommended") and not c.get("excluded_reason")), None)
    if best is None or not isinstance(best.get("lv_site"), dict) or best["lv_site"].get("aha_segment") is None:
        return None, None
    segment = int(best["lv_site"]["aha_segment"])
    metrics, uq = best.get("metrics") or {}, best.get("uq") or {}
    rec = {"name": best.get("name"), "label": best.get("label") or best.get("name"), "aha_segment": segment,
           "segment_name": best.get("lv_segment_name") or "", "segment_code": aha_segment_coding(segment),
           "tat_change_pct": _finite(metrics.get("tat_change_pct")),
           "dpdt_change_pct": _finite(metrics.get("dpdt_change_pct")),
           "probability_best": _finite(uq.get("probability_best"))}
    ms = []
    if rec["tat_change_pct"] is not None:
        ms.append(Number(key="tat_change_pct", code=TAT_CHANGE, value=rec["tat_change_pct"], unit="%", method=SIMULATED,
                         text=TAT_CHANGE[2]))
    if rec["dpdt_change_pct"] is not None:
        ms.append(Number(key="dpdt_change_pct", code=DPDT_CHANGE, value=rec["dpdt_change_pct"], unit="%",
                         method=SIMULATED, text=DPDT_CHANGE[2]))
    if rec["probability_best"] is not None:
        ms.append(Number(key="probability_best_pct", code=P_BEST, value=100.0 * rec["probability_best"], unit="%",
                         method=SIMULATED, text=P_BEST[2]))
    qrs = _finite(metrics.get("qrs_ms"))
    if qrs is not None:
        ms.append(_measure("qrs_duration_ms", "paced_qrs_duration_ms", qrs, SIMULATED,
                           "Predicted QRS duration pacing at the recommended site"))
    group = Group(name="Recommended LV lead site", finding=_LV, measurements=tuple(ms),
                  evaluations=((RECOMMENDATION, rec["segment_code"]),))
    return rec, group


def key_numbers(root: str | Path) -> KeyNumbers:
    """The coded key numbers of the case at ``root`` (see the module docstring)."""
    root = Path(root)
    groups, missing = _image_groups(root)
    sources = {"image": "segment/labels.nii.gz"} if groups else {}
    rk_path = root / "therapy" / "ranking.json"
    ranking = _read(rk_path) if rk_path.is_file() else None
    beat_groups, beat_missing, beat_sources = _beat_group(root, ranking)
    groups += beat_groups
    missing += beat_missing
    sources.update(beat_sources)
    rec = None
    if ranking is None:
        missing.append("lead recommendation: no therapy/ranking.json (run `cardiotwin crt`)")
    else:
        sources["ranking"] = "therapy/ranking.json"
        rec, group = _recommendation(ranking)
        if group is not None:
            groups.append(group)
        else:
            missing.append("lead recommendation: therapy/ranking.json has no recommended LV site")
    return KeyNumbers(groups=tuple(groups), recommendation=rec, missing=tuple(missing), sources=sources)
