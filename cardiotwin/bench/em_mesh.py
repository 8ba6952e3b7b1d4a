"""`cardiotwin bench em_mesh`: the beat's mesh study on the sample CT twin (issue #25: EDV and EF
change by less than 3 % between the case mesh and a 2x finer re-mesh).

Three twins of ``sample_scans/ct_sample_labels.nii.gz``, one default beat each (default
``EMConfig``, default MPI ranks, as ``bench em``):

- case mesh: ``prepare_twin`` at 5 mm (like the demo case);
- refined: the case mesh split uniformly (``mechanics.refine``: every edge halved, the same
  geometry; activation and the fibre rule's inputs interpolated): what the mechanics'
  discretisation alone changes;
- re-mesh: ``prepare_twin`` at half the edge (the labels meshed again, fibres and eikonal
  activation computed again): what the issue's criterion compares; it also changes the surfaces
  (and so the cavity volumes of the unloaded mesh), the fibres and the activation.

The table gives each mesh's myocardium volume and unloaded cavity volumes next to the labels'
blood-pool volumes, so that a change of EDV can be split into the geometry and the mechanics.
``--quick``: the case mesh and its refinement only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cardiotwin.bench.em import LABELS, beat_process, load_average
from cardiotwin.machine import machine_description


def _myocardium_ml(vtu: Path) -> float:
    from cardiotwin.mechanics.outputs import read_em_mesh

    mesh, _ = read_em_mesh(vtu)
    v = mesh.points[mesh.cells]
    return float(np.abs(np.einsum("ij,ij->i", np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]),
                                  v[:, 3] - v[:, 0])).sum() / 6e3)


def _labels_ml() -> dict[str, float]:
    import nibabel as nib

    from cardiotwin.anatomy import Label

    img = nib.load(str(LABELS))
    lab = np.asarray(img.dataobj)
    voxel = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1e3
    return {"LV": float((lab == Label.LV_BLOOD).sum() * voxel), "RV": float((lab == Label.RV_BLOOD).sum() * voxel)}


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f} %"


def bench_em_mesh(*, quick: bool, edge_mm: float = 5.0) -> str:
    from cardiotwin.mechanics.ranks import default_ranks
    from cardiotwin.mechanics.refine import refine_activation_vtu
    from cardiotwin.mechanics.twin import prepare_twin

    ranks, dt = default_ranks()[0], 10.0
    with tempfile.TemporaryDirectory(prefix="bench_em_mesh_") as tmp:
        case = prepare_twin(LABELS, Path(tmp) / "case", edge_mm=edge_mm)
        twins = {"case mesh": case,
                 "case mesh refined uniformly": refine_activation_vtu(case, Path(tmp) / "refined" / "activation.vtu")}
        if not quick:
            twins["re-mesh"] = prepare_twin(LABELS, Path(tmp) / "remesh", edge_mm=edge_mm / 2)
        beat_process(case, 2 * dt, dt, 1)  # compile the forms: the timed beats find the JIT cache warm
        load_before = load_average()
        beats = {k: beat_process(v, 800.0, dt, ranks) for k, v in twins.items()}
        walls = {k: _myocardium_ml(v) for k, v in twins.items()}
        load_after = load_average()
    labels = _labels_ml()
    edges = {"case mesh": f"{edge_mm:g}", "case mesh refined uniformly": f"{edge_mm:g} / 2",
             "re-mesh": f"{edge_mm / 2:g}"}
    lines = [
        "## em_mesh: mesh study of the beat (sample CT twin)", "",
        f"Command: `cardiotwin bench em_mesh{' --quick' if quick else ''}`. Machine: {machine_description()}; "
        f"{ranks} MPI rank(s) per beat (the default). Load average before {load_before}, after {load_after}.", "",
        "Twins of `sample_scans/ct_sample_labels.nii.gz` (labels: LV blood pool "
        f"{labels['LV']:.1f} mL, RV {labels['RV']:.1f} mL): the case mesh (`prepare_twin`, {edge_mm:g} mm, like "
        "the demo case); the same mesh split uniformly (`mechanics.refine`: same geometry; activation and the fibre "
        f"rule's inputs interpolated; only the mechanics' discretisation changes); a re-mesh of the labels at {edge_mm / 2:g} mm "
        "(surfaces, fibres and activation made again). Default beat (`EMConfig()`: Guccione, nodal-pressure "
        "P1/P1, the fibre rule at the quadrature points, dt 10 ms / 40 ms). Unloaded = the cavity volume of the mesh itself, before the end-diastolic "
        "inflation.", "",
        "| twin | edge (mm) | tets | dofs | myocardium (mL) | unloaded LV / RV cavity (mL) | LV EDV / ESV (mL) "
        "| LV EF | RV EDV (mL) | RV EF | beat wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, b in beats.items():
        ref = b["reference_volume_ml"]
        lines.append(f"| {k} | {edges[k]} | {b['tets']} | {b['dofs']} | {walls[k]:.1f} | {ref['LV']:.1f} / "
                     f"{ref.get('RV', float('nan')):.1f} | {b['LV_edv']:.1f} / {b['LV_esv']:.1f} | {b['LV_ef']:.4f} | "
                     f"{b.get('RV_edv', float('nan')):.1f} | {b.get('RV_ef', float('nan')):.4f} | {b['solve_s']:.1f} |")
    lines.append("")
    base = beats["case mesh"]
    for k, b in beats.items():
        if k == "case mesh":
            continue
        r0, r1 = base["reference_volume_ml"], b["reference_volume_ml"]
        lines.append(f"- {k} against the case mesh: LV EDV {_pct(b['LV_edv'], base['LV_edv'])}, LV EF "
                     f"{_pct(b['LV_ef'], base['LV_ef'])}, RV EDV {_pct(b['RV_edv'], base['RV_edv'])}, RV EF "
                     f"{_pct(b['RV_ef'], base['RV_ef'])}; unloaded LV cavity {_pct(r1['LV'], r0['LV'])}, RV cavity "
                     f"{_pct(r1['RV'], r0['RV'])}, "
                     f"myocardium {_pct(walls[k], walls['case mesh'])} (issue #25 target: EDV and EF within 3 %).")
    if "re-mesh" in beats:
        a, b = beats["case mesh refined uniformly"], beats["re-mesh"]
        lines.append(f"- Re-mesh against the refined case mesh (the same element size; what the new surfaces, fibres "
                     f"and activation change): LV EDV {_pct(b['LV_edv'], a['LV_edv'])}, LV EF "
                     f"{_pct(b['LV_ef'], a['LV_ef'])}.")
    return "\n".join(lines) + "\n"
