"""Report context: what was read from the case, the numbers shown, and the content blocks.

Sections are lists of *blocks* (plain dicts rendered by ``render.py`` with autoescaping, so text
from inputs can never become markup):

- ``{"kind": "p", "text"}``: a paragraph; ``{"kind": "missing", "text"}``: what is absent and why;
- ``{"kind": "table", "columns", "rows", "caption"}``; ``{"kind": "pre", "text"}``: equations;
- ``{"kind": "figure", "name", "src" (data URI), "caption"}``.

Every number shown is also recorded in ``ReportContext.numbers`` (saved as ``report.json``), so
tests and reviewers can trace it to its source file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.cases import pseudonym
from cardiotwin.report import figures


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers as shown in the report: ``digits`` significant digits; text unchanged."""
    if isinstance(x, bool) or x is None:
        return "—" if x is None else ("yes" if x else "no")
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in x)
    return str(x)


def p(text: str) -> dict[str, Any]:
    return {"kind": "p", "text": text}


def missing(text: str) -> dict[str, Any]:
    return {"kind": "missing", "text": text}


def pre(text: str) -> dict[str, Any]:
    return {"kind": "pre", "text": text}


def table(columns: list[str], rows: list[list[Any]], caption: str = "") -> dict[str, Any]:
    return {"kind": "table", "columns": columns, "rows": [[fmt(c) for c in r] for r in rows], "caption": caption}


def figure(name: str, png: bytes, caption: str) -> dict[str, Any]:
    return {"kind": "figure", "name": name, "src": figures.data_uri(png), "caption": caption, "png": png}


@dataclass
class Section:
    """One report section: anchor id, title, status ('complete', 'partial', 'missing'), blocks."""

    id: str
    title: str
    blocks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        kinds = [b["kind"] for b in self.blocks]
        if "missing" not in kinds:
            return "complete"
        return "missing" if all(k == "missing" for k in kinds) else "partial"


@dataclass
class ReportContext:
    """Everything the builders share. ``label`` is the case name shown (pseudonymous unless
    identifiers are included)."""

    root: Path
    manifest: dict[str, Any]
    include_identifiers: bool
    pipeline: dict[str, Any] | None = None
    pipeline_source: str = ""
    pipeline_missing: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    verification_path: Path | None = None
    calcver: dict[str, Any] | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return str(self.manifest.get("case_id") or self.root.name)

    @property
    def label(self) -> str:
        if self.include_identifiers:
            return self.case_id
        return "case " + pseudonym(self.case_id)

    def record(self, key: str, value: Any) -> Any:
        """Remember a number shown in the report (``report.json``); returns it."""
        self.numbers[key] = value
        return value

    def note_missing(self, section: str, reason: str) -> dict[str, Any]:
        self.missing.setdefault(section, []).append(reason)
        return missing(reason)


def crt_pv_loops(ctx: ReportContext) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """LV (volume mL, pressure kPa) loops of the CRT stage's electromechanics beats (baseline first)."""
    beats = ctx.cache.get("crt_beats")
    if not isinstance(beats, dict):
        return []
    names = sorted(beats, key=lambda n: (n != "baseline", n))
    return [(n, np.asarray(beats[n]["lv_volume_ml"], dtype=float), np.asarray(beats[n]["lv_pressure_kpa"], dtype=float))
            for n in names if isinstance(beats[n], dict) and beats[n].get("lv_volume_ml")]
