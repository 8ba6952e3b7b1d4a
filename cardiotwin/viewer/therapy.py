"""Lead candidates of ``therapy/ranking.json`` as the review shows them.

Accepted layout (the CRT stage's output; a bare list of candidates is accepted too)::

    {"candidates": [
        {"id": "lv-07", "label": "LV lateral basal", "rank": 1,
         "position_mm": [x, y, z],                 # LPS mm (also: lead_position_mm, position_lps_mm)
         "predicted_response": 0.82,               # higher is better (also: response, score)
         "metrics": {"total_activation_ms": 92.1, "qrs_ms": ..., ...},
         "activation": "lv-07/activation.vtu"}     # relative to therapy/ (or the case root)
    ]}

The serialised ``cardiotwin.types.TherapyResult`` is read too: each candidate then holds
``protocol`` (``name``, ``lv_site`` / ``rv_site`` with ``position_mm``), ``rank``, ``recommended``,
``excluded_reason``, ``concordance``, ``metrics`` and ``uq``; the marker sits at the LV lead (the
RV lead when there is none; no marker for a protocol without leads), and the response shown is an
explicit ``predicted_response`` or else one metric for all candidates: the change of dP/dt max
(%, electromechanics) when every candidate has it, else the reduction of total / LV activation
time (``-tat_change_pct``, the quantity the CRT ranking orders by / ``-lvat_change_pct``, %).
This is the CRT stage's ``ranking.json``
(``cardiotwin.therapy.outputs.result_to_dict``, with ``activation`` set per mapped candidate).

A candidate with a ``protocol`` is shown under its clinical name (``therapy.outputs.clinical_label``:
"BiV, LV basal inferolateral, AV 100 / VV 0 ms", as in the clinical summary); its metrics under
clinical names with units (``METRIC_NAMES``); its identifier only in those details.

When ``activation`` is not given, ``therapy/<id>/activation.vtu``,
``therapy/candidates/<id>/activation.vtu`` and ``therapy/activation/<id>.vtu`` are looked for.
Paths must stay inside the case.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardiotwin.errors import CaseError
from cardiotwin.therapy.outputs import clinical_label

_POSITION_KEYS = ("position_mm", "lead_position_mm", "position_lps_mm", "lv_lead_position_mm")
_RESPONSE_KEYS = ("predicted_response", "response", "score")


@dataclass(frozen=True)
class Candidate:
    """One pacing-lead candidate: position (LPS mm), predicted response (higher = better, or
    None), rank (1 = best, or None), scalar metrics, and its activation file when one exists."""

    id: str
    label: str
    position_mm: tuple[float, float, float] | None
    response: float | None
    rank: int | None
    response_name: str = ""
    metrics: dict[str, float | str] = field(default_factory=dict)
    activation_path: Path | None = None
    details: tuple[tuple[str, str], ...] = ()


def scalar_metrics(d: Any) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        if isinstance(v, bool):
            out[str(k)] = str(v)
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[str(k)] = float(v)
        elif isinstance(v, str) and len(v) < 200:
            out[str(k)] = v
    return out


# metric key -> (clinical name, unit, factor to the unit shown)
METRIC_NAMES: dict[str, tuple[str, str, float]] = {
    "dpdt_change_pct": ("LV dP/dt max change", "%", 1.0),
    "responder_probability": ("probability of an acute response (dP/dt max rise >= 10 %)", "%", 100.0),
    "tat_ms": ("total activation time", "ms", 1.0),
    "tat_change_pct": ("total activation time change", "%", 1.0),
    "total_activation_ms": ("total activation time", "ms", 1.0),
    "lvat_ms": ("LV activation time", "ms", 1.0),
    "lvat_change_pct": ("LV activation time change", "%", 1.0),
    "t90_ms": ("time to 90 % activation", "ms", 1.0),
    "t90_change_pct": ("time to 90 % activation, change", "%", 1.0),
    "qrs_ms": ("QRS duration (pseudo-ECG)", "ms", 1.0),
    "stroke_volume_ml": ("LV stroke volume", "mL", 1.0),
    "ejection_fraction": ("LV ejection fraction", "%", 100.0),
    "stroke_work_mj": ("LV stroke work", "mJ", 1.0),
    "dpdt_max_kpa_per_ms": ("LV dP/dt max", "mmHg/s", 1000.0 / 0.133322387415),
    "probability_best": ("probability of the shortest activation time", "%", 100.0),
    "unreached_fraction": ("never activated tissue", "%", 100.0),
    "responder": ("acute responder (dP/dt max rise >= 10 %)", "", 1.0),
    "concordance": ("LV lead vs latest-activated segment", "", 1.0),
    "excluded_reason": ("not recommended", "", 1.0),
    "em_error": ("electromechanical beat failed", "", 1.0),
}


def clinical_details(metrics: dict[str, float | str], cid: str) -> tuple[tuple[str, str], ...]:
    """(clinical name, value with unit) rows of the known metrics, in ``METRIC_NAMES`` order, then
    the identifier of the protocol (the only place it is shown)."""
    rows = []
    for key, (name, unit, factor) in METRIC_NAMES.items():
        v = metrics.get(key)
        if isinstance(v, float):
            text = f"{v * factor:.3g}" if abs(v * factor) < 1000 else f"{v * factor:.0f}"
            rows.append((name, f"{text} {unit}".strip()))
        elif isinstance(v, str) and v:
            rows.append((name, {"True": "yes", "False": "no"}.get(v, v)))
    return (*rows, ("identifier", cid))


def _inside(root: Path, candidate: Path) -> bool:
    return candidate.resolve().is_relative_to(root.resolve())


# Response quantities, best first: (metric key, sign making higher = better, name shown).
_RESPONSE_METRICS = (
    ("dpdt_change_pct", 1.0, "dP/dt max change (%)"),
    ("tat_change_pct", -1.0, "total activation time reduction (%)"),  # what the CRT ranking orders by
    ("lvat_change_pct", -1.0, "LV activation time reduction (%)"),
)


def _explicit_response(entry: dict[str, Any]) -> tuple[float | None, str]:
    for k in _RESPONSE_KEYS:
        if isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool):
            return float(entry[k]), k
    return None, ""


def _common_response(metrics: list[dict[str, float | str]]) -> tuple[str, float, str] | None:
    """The response metric all candidates have (else the first any has), so that one colour
    scale compares like with like: the CRT stage adds dP/dt only for the best few protocols."""
    for require_all in (True, False):
        for key, sign, name in _RESPONSE_METRICS:
            have = [isinstance(m.get(key), float) for m in metrics]
            if have and (all(have) if require_all else any(have)):
                return key, sign, name
    return None


def read_candidates(path: Path, *, case_root: Path) -> list[Candidate]:
    """Parse ``ranking.json``; raises ``CaseError`` naming the file for malformed entries."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CaseError(f"{path}: unreadable ranking ({exc})") from None
    entries = data.get("candidates") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise CaseError(f"{path}: expected a list of candidates under 'candidates'")
    therapy_dir = Path(path).parent
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise CaseError(f"{path}: candidate {i} is not an object")
        protocol = e.get("protocol") if isinstance(e.get("protocol"), dict) else {}
        cid = str(e.get("id") or e.get("name") or protocol.get("name") or f"c{i + 1}")
        pos = next((e[k] for k in _POSITION_KEYS if k in e), None)
        for site in ("lv_site", "rv_site"):
            if pos is None and isinstance(protocol.get(site), dict):
                pos = protocol[site].get("position_mm")
        if pos is not None and not (isinstance(pos, (list, tuple)) and len(pos) == 3):
            raise CaseError(f"{path}: candidate {cid!r}: position is not a 3-vector ({' / '.join(_POSITION_KEYS)})")
        metrics = scalar_metrics(e.get("metrics"))
        if not metrics:  # flat layout: scalar fields of the entry itself
            skip = {"id", "name", "label", "rank", "activation", *_POSITION_KEYS}
            metrics = scalar_metrics({k: v for k, v in e.items() if k not in skip})
        for key in ("recommended", "excluded_reason", "concordance"):
            if key in e and e[key] not in ("", None):
                metrics[key] = str(e[key])
        uq = e.get("uq") if isinstance(e.get("uq"), dict) else {}
        if isinstance(uq.get("probability_best"), (int, float)):
            metrics["probability_best"] = float(uq["probability_best"])
        response, response_name = _explicit_response(e)
        act = None
        rel = e.get("activation")
        tries = [therapy_dir / rel, Path(case_root) / rel] if isinstance(rel, str) else [
            therapy_dir / cid / "activation.vtu", therapy_dir / "candidates" / cid / "activation.vtu",
            therapy_dir / "activation" / f"{cid}.vtu"]
        for p in tries:
            if p.is_file() and _inside(case_root, p):
                act = p
                break
        label = clinical_label(protocol) if protocol else str(e.get("clinical_label") or e.get("label") or cid)
        for key in ("responder_probability",):
            if isinstance(uq.get(key), (int, float)) and math.isfinite(float(uq[key])):
                metrics[key] = float(uq[key])
        out.append(Candidate(id=cid, label=label, details=clinical_details(metrics, cid),
                             position_mm=tuple(float(x) for x in pos) if pos is not None else None,
                             response=response, response_name=response_name,
                             rank=int(e["rank"]) if isinstance(e.get("rank"), int) else None,
                             metrics=metrics, activation_path=act))
    common = _common_response([c.metrics for c in out if c.response is None])
    if common is not None:
        key, sign, name = common
        out = [c if c.response is not None else dataclasses.replace(
            c, response=sign * float(c.metrics[key]) if isinstance(c.metrics.get(key), float) else None,
            response_name=name) for c in out]
    return out
