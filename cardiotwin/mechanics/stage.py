"""The ``em`` stage: activation map on a mesh with fibres -> one electromechanical beat.

Writes metrics.json, curves.csv, pv_loops.png and displacement.xdmf (``mechanics.outputs``).
Runs under ``mpirun -n N`` on a plain folder or file; a case's stage runs serially.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cardiotwin.cases import Case
from cardiotwin.electrophysiology.stage import ACTIVATION_VTU
from cardiotwin.errors import CaseError
from cardiotwin.mechanics.electromechanics import EMConfig
from cardiotwin.stage_io import StageSource, stage_input, stage_output

if TYPE_CHECKING:
    from cardiotwin.mechanics.electromechanics import BeatInputs
    from cardiotwin.types import MechResult

__all__ = ["EMConfig", "beat_inputs_from_file", "em_case", "em_demo"]


def em_case(
    source: StageSource,
    cfg: EMConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> "MechResult | None":
    """Simulate one beat from a case's ep stage (into its ``em/`` stage), or from a folder's
    activation.vtu / a .vtu file into ``out`` (default: ``em/`` beside the file). Returns the
    beat, None when the case's stage was unchanged."""
    from mpi4py import MPI

    from cardiotwin.mechanics.electromechanics import simulate_beat
    from cardiotwin.mechanics.outputs import write_outputs

    comm = MPI.COMM_WORLD
    if isinstance(source, Case) and comm.size > 1:
        raise CaseError(f"{source.root}: run cases serially; under mpirun pass the activation.vtu and --out")
    vtu = stage_input(source, stage="ep", filename=ACTIVATION_VTU, hint="run `cardiotwin simulate ep` first")
    if not isinstance(source, Case) and out is None:
        out = vtu.parent / "em"
    with stage_output(source, "em", out=out, inputs={"activation": vtu}, config=cfg, force=force) as st:
        if st.skipped:
            return None
        result = simulate_beat(beat_inputs_from_file(vtu), cfg, out_dir=st.dir)
        if comm.rank == 0:
            write_outputs(result, st.dir)
        st.metrics.update({"lv_ef": result.ejection_fraction["LV"], "lv_sv_ml": result.stroke_volume_ml["LV"]})
    return result


def em_demo(geometry: str, cfg: EMConfig, *, out: str | os.PathLike[str], mesh_mm: float = 4.0) -> "MechResult":
    """One beat of an analytic geometry (``ellipsoid`` or ``biventricle``, mesh size ``mesh_mm``)
    with analytic fibres and activation, written into ``out``."""
    from mpi4py import MPI

    from cardiotwin.mechanics.demo import analytic_beat_inputs
    from cardiotwin.mechanics.electromechanics import simulate_beat
    from cardiotwin.mechanics.outputs import write_outputs

    out = Path(out)
    result = simulate_beat(analytic_beat_inputs(geometry=geometry, char_length_mm=mesh_mm), cfg, out_dir=out)
    if MPI.COMM_WORLD.rank == 0:
        write_outputs(result, out)
    return result


def beat_inputs_from_file(vtu: Path) -> "BeatInputs":
    """Mesh, fibres (f0), activation times and AHA segments of an activation.vtu, distributed
    over the ranks of ``MPI.COMM_WORLD``."""
    from mpi4py import MPI

    import dolfinx

    from cardiotwin.mechanics.electromechanics import BeatInputs
    from cardiotwin.mechanics.land import orthonormal_frame
    from cardiotwin.mechanics.outputs import read_em_mesh
    from cardiotwin.meshing.fem import cell_field_to_function, point_field_to_function, to_dolfinx
    from cardiotwin.meshing.tets import require_face_connected

    comm = MPI.COMM_WORLD
    hm, act = read_em_mesh(vtu) if comm.rank == 0 else (None, None)
    if comm.rank == 0:
        require_face_connected(hm.cells, source=str(vtu))
    hm_b = comm.bcast((hm.point_data, hm.cell_data, act) if comm.rank == 0 else None, root=0)
    heart = to_dolfinx(hm, comm)
    pdata, cdata, act = hm_b
    f0 = point_field_to_function(heart, pdata["f0"], dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1, (3,))))
    a = point_field_to_function(heart, act, dolfinx.fem.functionspace(heart.mesh, ("Lagrange", 1)))
    aha = None
    if "aha" in cdata:
        aha = cell_field_to_function(heart, cdata["aha"].astype(float), dolfinx.fem.functionspace(heart.mesh, ("DG", 0)))
    return BeatInputs(mesh=heart.mesh, facet_tags=heart.facet_tags, fibres=orthonormal_frame(f0), activation=a, aha=aha)
