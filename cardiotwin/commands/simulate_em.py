"""`cardiotwin simulate em CASE_OR_DIR`: one electromechanical beat (mechanics + 0D circulation).

Input: a case (uses ``ep/activation.vtu``), a folder holding ``activation.vtu``, the file itself,
or ``--demo ellipsoid|biventricle`` (analytic mesh, fibres and activation). Outputs (into the
case's ``em/`` stage, or ``--out``): metrics.json, curves.csv, pv_loops.png, displacement.xdmf.
Runs under ``mpirun -n N`` in folder/file/demo mode.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cardiotwin.errors import CaseError

NAME = "em"
HELP = "simulate one electromechanical beat (hyperelastic ventricles + 0D circulation)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="case directory, folder with activation.vtu, or the .vtu file")
    parser.add_argument("--demo", choices=("ellipsoid", "biventricle"), help="analytic inputs instead of a path")
    parser.add_argument("--demo-mesh-mm", type=float, default=4.0, help="mesh size of the demo geometry (mm)")
    parser.add_argument("--out", help="output folder (default: the case's em/ stage or PATH/em)")
    parser.add_argument("--config", help="YAML file with EMConfig keys (units as strings, e.g. dt: '5 ms')")
    parser.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")


def _inputs_from_file(vtu: Path):  # noqa: ANN202 - BeatInputs (imports dolfinx lazily)
    from mpi4py import MPI

    import dolfinx

    from cardiotwin.mechanics.electromechanics import BeatInputs
    from cardiotwin.mechanics.land import _orthonormal_frame
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
    return BeatInputs(mesh=heart.mesh, facet_tags=heart.facet_tags, fibres=_orthonormal_frame(f0), activation=a, aha=aha)


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from cardiotwin.cases import Case
    from cardiotwin.config import load_config, read_yaml
    from cardiotwin.mechanics.electromechanics import EMConfig, simulate_beat
    from cardiotwin.mechanics.outputs import write_outputs

    cfg = load_config(EMConfig, read_yaml(args.config) if args.config else {}, source=args.config or "defaults")
    comm = MPI.COMM_WORLD
    if args.demo:
        from cardiotwin.mechanics.demo import analytic_beat_inputs

        out = Path(args.out or f"em_demo_{args.demo}")
        inputs = analytic_beat_inputs(geometry=args.demo, char_length_mm=args.demo_mesh_mm)
        result = simulate_beat(inputs, cfg, out_dir=out)
        if comm.rank == 0:
            write_outputs(result, out)
        return 0
    if not args.path:
        raise CaseError("give a case directory, a folder with activation.vtu, a .vtu file, or --demo")
    path = Path(args.path)
    if Case.is_case(path):
        if comm.size > 1:
            raise CaseError(f"{path}: run cases serially; under mpirun pass the activation.vtu and --out")
        case = Case.open(path)
        vtu = case.require_stage("ep") / "activation.vtu"
        if not vtu.is_file():
            raise CaseError(f"{vtu}: the ep stage wrote no activation.vtu")
        with case.stage("em", inputs={"activation": vtu}, config=cfg, force=args.force) as st:
            if st.skipped:
                return 0
            result = simulate_beat(_inputs_from_file(vtu), cfg, out_dir=st.dir)
            write_outputs(result, st.dir)
            st.metrics.update({"lv_ef": result.ejection_fraction["LV"], "lv_sv_ml": result.stroke_volume_ml["LV"]})
        return 0
    vtu = path / "activation.vtu" if path.is_dir() else path
    if not vtu.is_file():
        raise CaseError(f"{vtu}: no such file (expected the EP stage's activation.vtu)")
    out = Path(args.out) if args.out else vtu.parent / "em"
    result = simulate_beat(_inputs_from_file(vtu), cfg, out_dir=out)
    if comm.rank == 0:
        write_outputs(result, out)
    return 0
