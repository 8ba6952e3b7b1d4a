"""Read what a case holds for the report, tolerating stages that have not run.

Every reader returns ``(data, missing)``: the parsed content, or ``None`` and a sentence saying
which file is missing and which command produces it. Nothing is estimated here: every number
comes from a file of the case (or from the pipeline YAML for the context of use).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.errors import CaseError

log = logging.getLogger(__name__)

# Keys under which the pipeline YAML may hold the report's regulatory context.
CONTEXT_KEYS = ("question_of_interest", "context_of_use", "model_influence", "decision_consequence",
                "model_influence_rationale", "decision_consequence_rationale", "measurements",
                "reference_labels", "intended_population")


@dataclass
class Missing:
    """Why something is absent (shown verbatim in the report)."""

    reasons: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.reasons.append(text)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise CaseError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CaseError(f"{path}: not valid JSON ({exc})") from None


def finite(x: Any) -> float | None:
    """float(x) when x is a finite real number (bool excluded), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def first_number(d: Any, keys: tuple[str, ...]) -> tuple[str, float] | None:
    """(key, value) of the first finite number found under ``keys`` in a mapping (or None)."""
    if not isinstance(d, dict):
        return None
    for k in keys:
        v = finite(d.get(k))
        if v is not None:
            return k, v
    return None


def stage_file(root: Path, stage: str, name: str, command: str) -> tuple[Path | None, str | None]:
    p = root / stage / name
    if p.is_file():
        return p, None
    if not (root / stage).is_dir():
        return None, f"stage '{stage}' has not been run in this case (run `cardiotwin {command}`)"
    return None, f"{stage}/{name} is missing (run `cardiotwin {command}`)"


# -- pipeline context ---------------------------------------------------------------------------
def find_pipeline(root: Path, manifest: dict[str, Any], explicit: Path | None) -> tuple[dict[str, Any] | None, str, str | None]:
    """The pipeline YAML mapping, its path (as text) and a reason when none was found.

    Looked for in order: ``explicit`` (``--pipeline``); the manifest input ``pipeline`` that
    ``cardiotwin run`` records (``pipeline.record_recipe``: a copy of the recipe in the case); a
    manifest ``pipeline`` entry (a mapping, or a path relative to the case); ``CASE/pipeline.yaml``;
    the recipe path in ``CASE/pipeline.json`` (cases run before the recipe was copied in).
    """
    from cardiotwin.config import read_yaml

    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    recorded = (manifest.get("inputs") or {}).get("pipeline")
    if isinstance(recorded, dict) and recorded.get("path"):
        candidates.append(root / str(recorded["path"]))
    entry = manifest.get("pipeline")
    if isinstance(entry, dict) and not ("path" in entry and len(entry) <= 3):
        return entry, "manifest.json:pipeline", None
    if isinstance(entry, dict) and "path" in entry:
        candidates.append(root / str(entry["path"]))
    elif isinstance(entry, str):
        candidates.append(root / entry)
    candidates.append(root / "pipeline.yaml")
    run_record = root / "pipeline.json"
    if run_record.is_file():
        try:
            source = json.loads(run_record.read_text()).get("source")
        except (OSError, json.JSONDecodeError, AttributeError):
            source = None
        if isinstance(source, str) and source:
            candidates.append(Path(source))
    for p in candidates:
        if p.is_file():
            data = read_yaml(p)
            if not isinstance(data, dict):
                raise CaseError(f"{p}: pipeline YAML is not a mapping")
            return data, str(p.name if p.parent == root else p), None
    return None, "", ("no pipeline YAML recorded with this case (run the case through `cardiotwin run PIPELINE.yaml` "
                      "or pass `--pipeline PIPELINE.yaml`)")


def pipeline_context(pipeline: dict[str, Any] | None) -> dict[str, Any]:
    """Context-of-use entries of the pipeline (top level or under ``report``/``credibility``)."""
    if not pipeline:
        return {}
    out: dict[str, Any] = {}
    for scope in (pipeline, pipeline.get("credibility"), pipeline.get("report"), pipeline.get("context")):
        if isinstance(scope, dict):
            for k in CONTEXT_KEYS:
                if k in scope and k not in out:
                    out[k] = scope[k]
    return out


# -- meshes and fields ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SurfaceField:
    """Boundary surface of a tetrahedral mesh with a point field (for activation maps).

    points: (N, 3) LPS mm; faces: (F, 3); values: (N,) field at the points (NaN where unknown);
    aha: (M,) AHA segment per tetrahedron or None; cells: (M, 4); all_values: (N,).
    """

    points: np.ndarray
    faces: np.ndarray
    values: np.ndarray
    cells: np.ndarray
    aha: np.ndarray | None


def boundary_faces(cells: np.ndarray) -> np.ndarray:
    """Triangles that belong to exactly one tetrahedron, (F, 3)."""
    faces = np.concatenate([cells[:, [1, 2, 3]], cells[:, [0, 3, 2]], cells[:, [0, 1, 3]], cells[:, [0, 2, 1]]])
    key = np.sort(faces, axis=1)
    _, idx, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    return faces[idx[counts == 1]]


def read_point_field(path: Path, name: str) -> SurfaceField:
    """A .vtu with tetrahedra and point data ``name`` -> SurfaceField (CaseError if unusable)."""
    import meshio

    try:
        m = meshio.read(path)
    except Exception as exc:  # meshio raises many types
        raise CaseError(f"{path}: cannot read mesh ({exc})") from None
    tets = [(i, b) for i, b in enumerate(m.cells) if b.type == "tetra"]
    if not tets:
        raise CaseError(f"{path}: no tetrahedra")
    if name not in m.point_data:
        raise CaseError(f"{path}: no point data '{name}'")
    ti, tb = tets[0]
    cells = np.asarray(tb.data, dtype=np.int64)
    aha = np.asarray(m.cell_data["aha"][ti]).astype(int).ravel() if "aha" in m.cell_data else None
    if aha is None and "aha" in m.point_data:  # fibres-stage meshes: AHA per point; a cell takes its nodes' max
        aha = np.asarray(m.point_data["aha"]).astype(int).ravel()[cells].max(axis=1)
    values = np.asarray(m.point_data[name], dtype=float).ravel()
    return SurfaceField(points=np.asarray(m.points, dtype=float), faces=boundary_faces(cells), values=values,
                        cells=cells, aha=aha)


def aha_segment_means(field_: SurfaceField) -> dict[int, float]:
    """Mean of the point field over the tetrahedra of each AHA segment 1-17 (cell mean of vertices)."""
    if field_.aha is None:
        return {}
    cell_vals = field_.values[field_.cells].mean(axis=1)
    out = {}
    for seg in range(1, 18):
        sel = (field_.aha == seg) & np.isfinite(cell_vals)
        if np.any(sel):
            out[seg] = float(cell_vals[sel].mean())
    return out


# -- therapy --------------------------------------------------------------------------------------
def read_ranking(path: Path) -> list[dict[str, Any]]:
    """Candidates of ``therapy/ranking.json`` (a list, or a mapping with ``candidates``), best first."""
    data = read_json(path)
    entries = data.get("candidates") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CaseError(f"{path}: expected a list of candidate objects under 'candidates'")

    def key(e: dict[str, Any]) -> tuple[float, int]:
        r = finite(e.get("rank"))
        return (r if r is not None else math.inf, 0)

    return sorted(entries, key=key)


def candidate_name(e: dict[str, Any], i: int) -> str:
    proto = e.get("protocol") if isinstance(e.get("protocol"), dict) else {}
    return str(e.get("label") or e.get("id") or e.get("name") or proto.get("name") or f"candidate {i + 1}")


def candidate_confidence(e: dict[str, Any]) -> tuple[str, float] | None:
    """Probability that this candidate is the best one, from the UQ (0-1)."""
    for scope in (e, e.get("uq"), e.get("metrics")):
        hit = first_number(scope, ("probability_best", "p_best", "prob_best", "confidence"))
        if hit:
            return hit
    return None


def scalar_items(d: Any, *, prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """Flatten a mapping to (dotted key, scalar) pairs; lists of numbers longer than 8 skipped."""
    out: list[tuple[str, Any]] = []
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 0:
            out += scalar_items(v, prefix=name + ".", depth=depth - 1)
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out.append((name, v))
        elif isinstance(v, list) and len(v) <= 8 and all(isinstance(x, (str, int, float, bool)) for x in v):
            out.append((name, v))
    return out
