"""The ``em`` stage: activation map on a mesh with fibres -> one electromechanical beat.

Writes metrics.json, curves.csv, pv_loops.png and displacement.xdmf (``mechanics.outputs``).
Started serially, the beat runs on ``ranks`` MPI ranks (default ``ranks.default_ranks()``: the
machine's cores, at most 4) in a child ``mpiexec``, the case bookkeeping staying in the caller.
Started under ``mpirun -n N`` itself, it runs on those ranks (a plain folder or file only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cardiotwin.cases import Case
from cardiotwin.electrophysiology.stage import ACTIVATION_VTU
from cardiotwin.errors import CaseError
from cardiotwin.mechanics.electromechanics import EMConfig
from cardiotwin.mechanics.outputs import beat_inputs_from_file
from cardiotwin.stage_io import StageSource, stage_input, stage_output

if TYPE_CHECKING:
    from cardiotwin.types import MechResult

__all__ = ["EMConfig", "beat_inputs_from_file", "em_case", "em_demo"]


def em_case(
    source: StageSource,
    cfg: EMConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    ranks: int | str | None = None,
) -> "MechResult | None":
    """Simulate one beat from a case's ep stage (into its ``em/`` stage), or from a folder's
    activation.vtu / a .vtu file into ``out`` (default: ``em/`` beside the file), on ``ranks``
    MPI ranks (an integer, 'auto' or None: the default). Returns the beat, None when the case's
    stage was unchanged."""
    from mpi4py import MPI

    from cardiotwin.mechanics.electromechanics import simulate_beat
    from cardiotwin.mechanics.outputs import write_outputs
    from cardiotwin.mechanics.ranks import BeatJob, resolve_ranks, run_beat

    comm = MPI.COMM_WORLD
    if isinstance(source, Case) and comm.size > 1:
        raise CaseError(f"{source.root}: run cases serially; under mpirun pass the activation.vtu and --out")
    vtu = stage_input(source, stage="ep", filename=ACTIVATION_VTU, hint="run `cardiotwin simulate ep` first")
    if not isinstance(source, Case) and out is None:
        out = vtu.parent / "em"
    n, explicit = resolve_ranks(ranks)
    with stage_output(source, "em", out=out, inputs={"activation": vtu}, config=cfg, force=force) as st:
        if st.skipped:
            return None
        result = run_beat(BeatJob(cfg=cfg, out_dir=st.dir, vtu=vtu), n, explicit=explicit) if n > 1 else None
        if result is None:
            result = simulate_beat(beat_inputs_from_file(vtu), cfg, out_dir=st.dir)
            if comm.rank == 0:
                write_outputs(result, st.dir)
        st.metrics.update({"lv_ef": result.ejection_fraction["LV"], "lv_sv_ml": result.stroke_volume_ml["LV"]})
    return result


def em_demo(geometry: str, cfg: EMConfig, *, out: str | os.PathLike[str], mesh_mm: float = 4.0,
            ranks: int | str | None = None) -> "MechResult":
    """One beat of an analytic geometry (``ellipsoid`` or ``biventricle``, mesh size ``mesh_mm``)
    with analytic fibres and activation, written into ``out``, on ``ranks`` MPI ranks (as ``em_case``)."""
    from mpi4py import MPI

    from cardiotwin.mechanics.demo import analytic_beat_inputs
    from cardiotwin.mechanics.electromechanics import simulate_beat
    from cardiotwin.mechanics.outputs import write_outputs
    from cardiotwin.mechanics.ranks import BeatJob, resolve_ranks, run_beat

    out = Path(out)
    n, explicit = resolve_ranks(ranks)
    if n > 1:
        out.mkdir(parents=True, exist_ok=True)
        result = run_beat(BeatJob(cfg=cfg, out_dir=out, demo=geometry, demo_mesh_mm=mesh_mm), n, explicit=explicit)
        if result is not None:
            return result
    result = simulate_beat(analytic_beat_inputs(geometry=geometry, char_length_mm=mesh_mm), cfg, out_dir=out)
    if MPI.COMM_WORLD.rank == 0:
        write_outputs(result, out)
    return result
