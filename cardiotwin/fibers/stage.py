"""The ``fibers`` stage: mesh -> mesh with fibres (f0, s0, n0), ventricular coordinates (uvc_*)
and AHA segments, as mesh.vtu and openCARP files (mesh.pts/.elem/.lon)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cardiotwin.cases import Case
from cardiotwin.fibers.ldrb import FiberConfig
from cardiotwin.meshing.stage import MESH_VTU, MESH_XDMF, QUALITY_JSON
from cardiotwin.stage_io import StageSource, stage_input, stage_output

__all__ = ["FIBERS_VTU", "FiberConfig", "fibers_case"]

FIBERS_VTU = MESH_VTU
# files of the mesh stage carried over into a case's fibers stage (the dolfinx mesh, its quality)
_CARRIED = (MESH_XDMF, "mesh.h5", QUALITY_JSON)


def fibers_case(source: StageSource, cfg: FiberConfig, *, force: bool = False) -> dict[str, Any] | None:
    """Add fibres to a case's mesh (into its ``fibers/`` stage), or to the mesh.vtu of a folder
    (rewritten in place). Returns the step timings (s), None when the case's stage was unchanged."""
    mesh_vtu = stage_input(source, stage="mesh", filename=MESH_VTU, hint="run `cardiotwin mesh` first")
    out = None if isinstance(source, Case) else mesh_vtu.parent
    with stage_output(source, "fibers", out=out, inputs={"mesh": mesh_vtu}, config=cfg, force=force) as st:
        if st.skipped:
            return None
        if out is None:
            for name in _CARRIED:
                if (mesh_vtu.parent / name).exists():
                    shutil.copy2(mesh_vtu.parent / name, st.dir / name)
        timings = _add_fibres(mesh_vtu, st.dir, cfg)
        st.metrics.update(timings)
    return timings


def _add_fibres(src_vtu: Path, out: Path, cfg: FiberConfig) -> dict[str, Any]:
    from cardiotwin.fibers.coordinates import compute_fibers
    from cardiotwin.io.meshes import read_mesh, write_mesh, write_opencarp

    mesh, timings = compute_fibers(read_mesh(src_vtu), cfg=cfg)
    write_mesh(mesh, out / FIBERS_VTU)
    write_opencarp(mesh, out / "mesh")
    return timings
