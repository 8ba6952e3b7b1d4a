"""Cine MRI in, ED and ES out: segment every frame of a 4D cine, volume curves, end-diastole and end-systole.

``segment_cine`` reads each frame of a 4D NIfTI (or any 4D image ITK reads) or a DICOM cine series
(``io.scans.read_scan(..., frame=t)``), segments it with a bundle (``inference.segment``), and
measures the LV and RV blood pool and LV myocardium volumes per frame. End-diastole is the frame
with the largest LV blood pool, end-systole the one with the smallest (the ACDC convention: ED is
the frame with the larger LV blood pool; ``pick_ed_es``). A frame where no heart is found is kept
in the curve as missing (NaN) and named in ``failed_frames``; fewer than two segmented frames is an
error. ``write_cine_outputs`` writes the curves (JSON and PNG) and the ED / ES label maps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cardiotwin.anatomy import Label
from cardiotwin.errors import StageError
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.types import LabelMap, Scan

log = logging.getLogger(__name__)

CURVES = {"lv_blood_ml": int(Label.LV_BLOOD), "rv_blood_ml": int(Label.RV_BLOOD), "lv_myo_ml": int(Label.LV_MYO)}


@dataclass
class CineResult:
    """Per-frame label maps and volumes of a cine, with the ED and ES frames picked."""

    source: str
    labels: list[LabelMap | None]
    volumes_ml: dict[str, list[float]]
    ed_frame: int
    es_frame: int
    failed_frames: dict[int, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lv, rv = self.volumes_ml["lv_blood_ml"], self.volumes_ml["rv_blood_ml"]
        edv, esv = lv[self.ed_frame], lv[self.es_frame]
        rv_ed, rv_es = rv[self.ed_frame], rv[self.es_frame]
        rv_ok = [v for v in rv if math.isfinite(v)]
        return {
            "source": self.source,
            "n_frames": len(self.labels),
            "ed_frame": self.ed_frame,
            "es_frame": self.es_frame,
            "rule": "ED = frame with the largest LV blood pool, ES = frame with the smallest",
            "volumes_ml": {k: [None if not math.isfinite(x) else round(x, 3) for x in v] for k, v in self.volumes_ml.items()},
            "lv_edv_ml": round(edv, 3), "lv_esv_ml": round(esv, 3),
            "lv_ef": round((edv - esv) / edv, 4) if edv > 0 else None,
            "rv_edv_ml": round(rv_ed, 3), "rv_esv_ml": round(rv_es, 3),
            "rv_ef_at_lv_frames": round((rv_ed - rv_es) / rv_ed, 4) if rv_ed > 0 else None,
            "rv_ef_own_frames": (round((max(rv_ok) - min(rv_ok)) / max(rv_ok), 4) if rv_ok and max(rv_ok) > 0 else None),
            "failed_frames": {str(k): v for k, v in self.failed_frames.items()},
            "seconds_per_frame": [round(s, 2) for s in self.seconds],
            "volume_note": "label voxels x voxel volume of the header; with a nominal header (e.g. research exports) "
                           "volumes are approximate, ratios (EF) exact",
        }


def pick_ed_es(lv_blood_ml: Sequence[float]) -> tuple[int, int]:
    """(ED, ES) frame indices: largest and smallest finite LV blood pool volume (first on ties)."""
    v = np.asarray(lv_blood_ml, dtype=float)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        raise StageError(f"cine: need at least two segmented frames to pick ED and ES, got {int(ok.sum())}")
    ed = int(np.argmax(np.where(ok, v, -np.inf)))
    es = int(np.argmin(np.where(ok, v, np.inf)))
    return ed, es


def segment_cine(path: str | Path, segment_frame: Callable[[Scan], LabelMap], *, modality: str | None = "MR",
                 series_uid: str | None = None, frames: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> CineResult:
    """Segment every frame (or ``frames``) of the cine at ``path`` with ``segment_frame`` (scan -> labels)."""
    from cardiotwin.io.scans import count_frames, read_scan

    n = count_frames(path, series_uid=series_uid)
    if n < 2:
        raise StageError(f"{path}: --all-frames needs a 4D cine (a 4D image or a DICOM cine series); "
                         f"this scan has one frame")
    chosen = list(range(n)) if frames is None else [int(f) for f in frames]
    labels: list[LabelMap | None] = []
    vols: dict[str, list[float]] = {k: [] for k in CURVES}
    failed: dict[int, str] = {}
    seconds: list[float] = []
    for i, t in enumerate(chosen):
        scan = read_scan(path, modality=modality, series_uid=series_uid, frame=t)
        t0 = time.perf_counter()
        try:
            lab = segment_frame(scan)
        except StageError as exc:
            log.warning("%s frame %d: %s", path, t, exc)
            failed[i] = str(exc)
            labels.append(None)
            for k in CURVES:
                vols[k].append(float("nan"))
            seconds.append(time.perf_counter() - t0)
            continue
        seconds.append(time.perf_counter() - t0)
        labels.append(lab)
        for k, value in CURVES.items():
            vols[k].append(lab.volume_ml(value))
        if progress is not None:
            progress(i + 1, len(chosen))
    ed, es = pick_ed_es(vols["lv_blood_ml"])
    return CineResult(source=str(path), labels=labels, volumes_ml=vols, ed_frame=ed, es_frame=es,
                      failed_frames=failed, seconds=seconds)


def plot_volume_curves(result: CineResult, path: Path) -> Path:
    """PNG of the LV / RV blood pool volume over the frames with ED and ES marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    t = np.arange(len(result.labels))
    ax.plot(t, result.volumes_ml["lv_blood_ml"], "o-", color="#c0392b", label="LV blood pool")
    ax.plot(t, result.volumes_ml["rv_blood_ml"], "s-", color="#2471a3", label="RV blood pool")
    for frame, name in ((result.ed_frame, "ED"), (result.es_frame, "ES")):
        ax.axvline(frame, color="0.4", ls="--", lw=1)
        ax.annotate(name, (frame, ax.get_ylim()[1]), ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("volume (mL)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_cine_outputs(result: CineResult, out_dir: Path, *, stem: str = "cine") -> dict[str, Path]:
    """``{stem}_volumes.json``, ``{stem}_volumes.png``, ``{stem}_ed_labels.nii.gz`` and ``{stem}_es_labels.nii.gz``."""
    from cardiotwin.io.scans import write_labels

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"volumes_json": out_dir / f"{stem}_volumes.json", "volumes_png": out_dir / f"{stem}_volumes.png",
             "ed_labels": out_dir / f"{stem}_ed_labels.nii.gz", "es_labels": out_dir / f"{stem}_es_labels.nii.gz"}
    write_json_atomic(paths["volumes_json"], result.summary())
    plot_volume_curves(result, paths["volumes_png"])
    for key, frame in (("ed_labels", result.ed_frame), ("es_labels", result.es_frame)):
        lab = result.labels[frame]
        assert lab is not None  # pick_ed_es only picks segmented frames
        write_labels(lab, paths[key])
    return paths
