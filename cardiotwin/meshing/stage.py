"""The ``mesh`` stage: label map -> tagged tetrahedral mesh (mesh.vtu, mesh.xdmf, quality.json)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cardiotwin.meshing.volume import MeshConfig
from cardiotwin.segmentation.stage import LABELS_FILE
from cardiotwin.stage_io import StageSource, stage_input, stage_output

__all__ = ["MESH_VTU", "MeshConfig", "mesh_case"]

MESH_VTU = "mesh.vtu"
MESH_XDMF = "mesh.xdmf"
QUALITY_JSON = "quality.json"

log = logging.getLogger(__name__)


def mesh_case(
    source: StageSource,
    cfg: MeshConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """Mesh the segment stage's labels of a case (into its ``mesh/`` stage), or a label map file
    into the folder ``out``. Returns the quality report (quality.json), None when unchanged."""
    from cardiotwin.io.scans import read_labels

    labels_path = stage_input(source, stage="segment", filename=LABELS_FILE, hint="run `cardiotwin segment`")
    with stage_output(source, "mesh", out=out, inputs={"labels": labels_path}, config=cfg, force=force) as st:
        if st.skipped:
            return None
        quality = _write_mesh(read_labels(labels_path), cfg, st.dir)
        st.metrics.update({k: v for k, v in quality.items() if isinstance(v, (int, float))})
    return quality


def _write_mesh(labels, cfg: MeshConfig, folder: Path) -> dict[str, Any]:  # noqa: ANN001 - LabelMap
    from cardiotwin.io.atomic import write_json_atomic
    from cardiotwin.io.meshes import write_mesh
    from cardiotwin.meshing.fem import write_xdmf
    from cardiotwin.meshing.quality import mesh_quality
    from cardiotwin.meshing.volume import mesh_labels

    mesh, base, closed, timings = mesh_labels(labels, cfg=cfg)
    quality = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    quality["timings_s"] = timings
    write_mesh(mesh, folder / MESH_VTU)
    write_xdmf(mesh, folder / MESH_XDMF)
    write_json_atomic(folder / QUALITY_JSON, quality)
    log.info("mesh: %d tets, volume error %.2f %%, min dihedral %.1f deg -> %s", mesh.n_cells,
             100 * quality["volume_error"], quality["min_dihedral_deg"], folder)
    return quality
