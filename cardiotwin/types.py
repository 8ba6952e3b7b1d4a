"""Typed objects that cross stage boundaries.

Every arrow in the data flow of ARCHITECTURE.md is one of these frozen dataclasses. They hold
numpy arrays (not copied, not frozen themselves) plus the metadata needed to interpret them.

Conventions
-----------
- Voxel arrays are indexed ``[i, j, k]`` in ITK index order (x, y, z), i.e. ``array.shape ==
  geometry.shape``. (SimpleITK's ``GetArrayFromImage`` returns (z, y, x); ``cardiotwin.io``
  transposes once, on read and write.)
- World coordinates are LPS millimetres, as in ITK/DICOM: ``world = origin + D @ (spacing * ijk)``
  with ``D`` the 3x3 direction matrix whose columns are the axis directions.
- Mesh points are LPS millimetres too; times are ms, pressures kPa, volumes mL (mm^3 in FE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Modality = Literal["CT", "MR", "unknown"]


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of an image in LPS world space.

    shape: (nx, ny, nz); spacing_mm: (sx, sy, sz); origin_mm: LPS position of voxel (0, 0, 0);
    direction: 3x3 row-major tuple, columns are the unit directions of the i, j, k axes.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel index (i, j, k, 1) to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_mm
        return a

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) continuous voxel indices -> (..., 3) LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) continuous voxel indices."""
        xyz = np.asarray(xyz, dtype=float)
        inv = np.linalg.inv(self.affine_lps[:3, :3])
        return (xyz - self.affine_lps[:3, 3]) @ inv.T

    def same_space(self, other: "ImageGeometry", *, tol: float = 1e-4) -> bool:
        """True when both grids coincide (shape exactly, spacing/origin/direction within tol)."""
        return (
            tuple(self.shape) == tuple(other.shape)
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol)
            and np.allclose(self.origin_mm, other.origin_mm, atol=tol * 10)
            and np.allclose(self.direction, other.direction, atol=tol)
        )


@dataclass(frozen=True)
class Scan:
    """A 3D CT or MR image. ``voxels`` is float32 with shape ``geometry.shape``."""

    voxels: np.ndarray
    geometry: ImageGeometry
    modality: Modality
    sha256: str
    source: str = ""


@dataclass(frozen=True)
class LabelMap:
    """Integer labels (uint8, label table in ``cardiotwin.anatomy``) on a voxel grid."""

    labels: np.ndarray
    geometry: ImageGeometry
    source: str = ""

    def volume_ml(self, label: int) -> float:
        return float(np.count_nonzero(self.labels == label)) * self.geometry.voxel_volume_ml


@dataclass(frozen=True)
class HeartMesh:
    """Tetrahedral (P1) heart mesh in LPS mm.

    points: (N, 3) float64; cells: (M, 4) int64; cell_tags: (M,) int32 from
    ``anatomy.CellTag``; facets: (F, 3) int64 boundary triangles; facet_tags: (F,) int32 from
    ``anatomy.FacetTag``. ``point_data`` / ``cell_data`` carry named fields added by later stages
    (``f0``, ``s0``, ``n0`` as (N, 3) or (M, 3); ``uvc_*``; ``aha`` segment 0-17, 0 = not LV).
    """

    points: np.ndarray
    cells: np.ndarray
    cell_tags: np.ndarray
    facets: np.ndarray
    facet_tags: np.ndarray
    point_data: dict[str, np.ndarray] = field(default_factory=dict)
    cell_data: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[0])

    def with_fields(
        self,
        *,
        point_data: dict[str, np.ndarray] | None = None,
        cell_data: dict[str, np.ndarray] | None = None,
    ) -> "HeartMesh":
        """A copy with extra (or replaced) named fields."""
        return HeartMesh(
            points=self.points,
            cells=self.cells,
            cell_tags=self.cell_tags,
            facets=self.facets,
            facet_tags=self.facet_tags,
            point_data={**self.point_data, **(point_data or {})},
            cell_data={**self.cell_data, **(cell_data or {})},
            name=self.name,
        )


@dataclass(frozen=True)
class MechResult:
    """One simulated beat of the electromechanics stage.

    times_ms: (T,); lv_pressure_kpa, lv_volume_ml, rv_pressure_kpa, rv_volume_ml: (T,) (RV arrays
    empty for LV-only meshes). Scalars: end-diastolic / end-systolic volume (mL), stroke volume
    (mL), ejection fraction (0-1), dP/dt max (kPa/ms), stroke work (mJ = kPa*mL, PV-loop area),
    keyed by cavity ("LV", "RV"). aha_fibre_strain: AHA segment (1-17) -> end-systolic fibre
    strain relative to end diastole (dimensionless, negative = shortening). metadata: solver
    figures (dofs, Newton iterations, timings, config digest).
    """

    times_ms: np.ndarray
    lv_pressure_kpa: np.ndarray
    lv_volume_ml: np.ndarray
    rv_pressure_kpa: np.ndarray
    rv_volume_ml: np.ndarray
    edv_ml: dict[str, float]
    esv_ml: dict[str, float]
    stroke_volume_ml: dict[str, float]
    ejection_fraction: dict[str, float]
    dpdt_max_kpa_per_ms: dict[str, float]
    stroke_work_mj: dict[str, float]
    aha_fibre_strain: dict[int, float] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadSite:
    """A pacing-lead site on a HeartMesh.

    chamber: "LV" or "RV"; node: mesh point index; position_mm: LPS; aha_segment: 1-17 (0 for RV
    sites); surface: "epi" (coronary-sinus lead), "endo" (endocardial, e.g. septal segments that
    have no free epicardium) or "rv_endo"; in_scar: the node touches no conducting cell, so
    pacing there captures nothing.
    """

    name: str
    chamber: Literal["LV", "RV"]
    node: int
    position_mm: tuple[float, float, float]
    aha_segment: int = 0
    surface: str = "epi"
    in_scar: bool = False


@dataclass(frozen=True)
class PacingProtocol:
    """A pacing protocol. Times from the atrial event (ms): the LV lead fires at ``av_delay_ms``,
    the RV lead at ``av_delay_ms + vv_delay_ms`` (VV > 0: LV first). Intrinsic conduction (the
    LBBB breakthrough) still arrives at the patient's intrinsic AV time, so short delays pace and
    long ones fuse. No lead: intrinsic rhythm (the baseline)."""

    name: str
    lv_site: LeadSite | None = None
    rv_site: LeadSite | None = None
    av_delay_ms: float = 120.0
    vv_delay_ms: float = 0.0


@dataclass(frozen=True)
class CandidateResult:
    """Metrics of one protocol on the twin (nominal inputs) plus its uncertainty.

    metrics: tat_ms, lvat_ms, t90_ms, tat_change_pct, lvat_change_pct, t90_change_pct, qrs_ms
    (None without an ECG), captured (bool), and after electromechanics dpdt_change_pct,
    stroke_volume_ml, stroke_work_mj, ejection_fraction, responder. concordance: "concordant",
    "adjacent" or "remote" (TARGET trial) for LV sites, "" otherwise. uq: probability_best and
    (2.5, 97.5) percentile intervals of the metrics over the quasi-Monte Carlo samples.
    """

    protocol: PacingProtocol
    rank: int
    recommended: bool
    excluded_reason: str
    metrics: dict[str, float | bool | None]
    concordance: str = ""
    uq: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class TherapyResult:
    """The CRT stage's result: baseline, candidates best first, and the ranking's uncertainty.

    baseline: metrics of the intrinsic (LBBB) activation; latest_segment: latest-activated non-scar
    AHA segment at baseline; scar_segments: AHA segments treated as scar; sensitivity: uncertain
    input -> first-order index of each ranking output; metadata: config, samples, timings;
    ecgs: protocol name ("baseline" too) -> pseudo-ECG ``{"times_ms", "leads", "qrs_ms"}`` of the
    activation maps the stage kept.
    """

    baseline: dict[str, float | bool | None]
    candidates: tuple[CandidateResult, ...]
    latest_segment: int
    scar_segments: tuple[int, ...]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)
    ecgs: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class EPResult:
    """Electrophysiology of one simulated interval on a HeartMesh.

    activation_times_ms: (N,) first 0 mV upstroke per mesh point (NaN where never activated);
    repolarisation_times_ms: (N,) first downward crossing of the repolarisation threshold after
    activation (NaN where none), or None (eikonal); ecg_times_ms: (T,) and ecg_mv: lead name ->
    (T,) pseudo-ECG in mV-equivalent units; stimuli: human-readable stimulus descriptions;
    model: "monodomain/ttp06", "monodomain/ms" or "eikonal"; metadata: solver figures (dt, timings,
    CG iterations, device, dtype).
    """

    activation_times_ms: np.ndarray
    repolarisation_times_ms: np.ndarray | None = None
    ecg_times_ms: np.ndarray | None = None
    ecg_mv: dict[str, np.ndarray] = field(default_factory=dict)
    stimuli: tuple[str, ...] = ()
    model: str = ""
    metadata: dict[str, object] = field(default_factory=dict)
