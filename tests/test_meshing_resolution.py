"""The mesher at the requested edge whatever the voxel size (issue 22): phantom ground-truth labels
rendered at clinical voxel sizes, meshed and checked against the meshing targets of
docs/BENCHMARKS.md (min dihedral >= 5 deg, myocardial and LV cavity volume within 5 % of the labels
below the base plane, boundary genus 0, mean edge within 30 % of the requested one); a wall too thin
to mesh and a time limit fail at once with a message naming why.

The anisotropic grid 1.0 x 1.0 x 0.625 mm is one of the issue's clinical reconstructions that did
not finish meshing before (quadric decimation broke the surface and every fallback kept the full
0.55 mm surface).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cardiotwin.anatomy import Label
from cardiotwin.errors import StageError
from cardiotwin.bench.mesh_sweep import EDGES_MM, check_row, make_labels, phantom_labels, sweep_cases
from cardiotwin.meshing.quality import mesh_quality
from cardiotwin.meshing.tetgen_run import MesherTimeoutError
from cardiotwin.meshing.volume import MeshConfig, mesh_labels
from cardiotwin.types import ImageGeometry, LabelMap


def _mesh_and_check(labels: LabelMap, edge_mm: float, *, closed: bool = False) -> dict:
    """Mesh and assert the targets. ``closed``: the volume against the labels and the wall the mesher
    built (labels without RV myocardium: ACDC, the MR stacks), as the benchmark judges it."""
    mesh, base, cleaned, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=edge_mm))
    q = mesh_quality(mesh, labels=labels, base=base, closed=cleaned)
    row = {"edge_mm": edge_mm, "time_s": 0.0, "min_dihedral_deg": q["min_dihedral_deg"],
           "volume_error": q["volume_error_closed" if closed else "volume_error"], "lv_cavity_error": q["lv_cavity_error"],
           "genus": q["boundary_genus"], "mean_edge_mm": q["edge_length_mm"]["mean"]}
    assert check_row(row) == [], (row, timings)
    assert q["inverted_cells"] == 0
    dist = q["min_dihedral_per_cell_deg"]
    assert sum(dist["cells"]) == mesh.n_cells and dist["cells"][0] == 0  # no cell below 5 deg
    return q


@pytest.mark.parametrize("spacing_mm", [(3.0, 3.0, 3.0), (1.0, 1.0, 0.625)])
def test_phantom_meshes_at_5_mm_whatever_the_voxel_size(spacing_mm):
    labels = phantom_labels(seed=1, spacing_mm=spacing_mm)
    q = _mesh_and_check(labels, 5.0)
    # The same heart at another voxel size gives a mesh of about the same size (the old mesher made
    # four times as many tets from 0.83 x 0.83 x 1.25 mm voxels as from 1.5 mm ones).
    assert 4_000 < q["n_cells"] < 12_000


def test_coarse_voxels_mesh_at_a_finer_edge():
    # 3 mm voxels at a 3 mm edge: the voxels are split (nested shape-based interpolation) so a wall one
    # voxel thick is not lost; four times the tets of the 5 mm mesh, (5/3)^3 = 4.6 for equal shapes.
    q = _mesh_and_check(phantom_labels(seed=1, spacing_mm=(3.0, 3.0, 3.0)), 3.0)
    assert 20_000 < q["n_cells"] < 45_000


def test_thick_slice_mr_stack_meshes_at_5_mm():
    # 1.5 x 1.5 x 8 mm cine slices (the MR sample's grid): the wall closed between slices and built
    # where the thin RV wall is missing from the slices (volume against the labels and that wall), the
    # LV cavity kept.
    from cardiotwin.phantom import make_phantom

    labels = make_phantom(seed=5, modality="MR").labels
    assert max(labels.geometry.spacing_mm) >= 8.0
    _mesh_and_check(labels, 5.0, closed=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", sweep_cases(quick=False), ids=lambda c: c.name)
def test_sweep_case_meets_the_meshing_targets(case):
    """The full resolution sweep of `cardiotwin bench mesh` (phantoms at 0.5-3 mm voxels, isotropic and
    anisotropic, dilated LV, scar; thick-slice MR; the real CT crop; ten ACDC and three Sunnybrook stacks),
    each case at 1.5, 3 and 5 mm, against every target but time (docs/BENCHMARKS.md measures that)."""
    labels = make_labels(case)
    for edge_mm in EDGES_MM:
        _mesh_and_check(labels, edge_mm, closed=True)


def _shell_labels(*, wall_voxels: int, spacing_mm: float) -> LabelMap:
    """An LV blood ball inside a myocardial shell ``wall_voxels`` thick, an LA above (base plane)."""
    n = int(round(60 / spacing_mm))
    idx = np.indices((n, n, n)).transpose(1, 2, 3, 0) * spacing_mm - 30.0
    r = np.linalg.norm(idx, axis=-1)
    lab = np.zeros((n, n, n), dtype=np.uint8)
    lab[r <= 15.0 + wall_voxels * spacing_mm] = Label.LV_MYO
    lab[r <= 15.0] = Label.LV_BLOOD
    lab[(idx[..., 2] > 10.0) & (lab == Label.LV_MYO)] = Label.LA
    lab[(idx[..., 2] > 10.0) & (lab == Label.LV_BLOOD)] = Label.LA
    g = ImageGeometry(shape=(n, n, n), spacing_mm=(spacing_mm,) * 3, origin_mm=(0.0, 0.0, 0.0))
    return LabelMap(labels=lab, geometry=g, source="shell.nii.gz")


def test_a_wall_too_thin_to_mesh_fails_at_once_naming_why():
    labels = _shell_labels(wall_voxels=1, spacing_mm=0.5)
    t = time.perf_counter()
    # thickened to three voxels (1.5 mm) by close_wall, still lost on the 1.7 mm grid of a 5 mm edge
    with pytest.raises(StageError, match="shell.nii.gz: no closed myocardial wall to mesh"):
        mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0))
    assert time.perf_counter() - t < 30.0


def test_the_time_limit_is_a_clear_error():
    labels = _shell_labels(wall_voxels=8, spacing_mm=1.0)
    with pytest.raises(MesherTimeoutError, match="shell.nii.gz: meshing did not finish within its time limit of 0 s"):
        mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0, time_limit_s=1e-3))
