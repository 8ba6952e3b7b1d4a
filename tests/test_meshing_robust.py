"""Meshing acceptance and robustness (issue 4): minimum dihedral angle >= 5 deg, volumes within 5 %
of the labels (label volume below the base plane, partial-volume for thick slices), mesh CASE via
the segment stage's labels.nii.gz, the thick-slice MR sample, segmentation noise, TetGen leaving
no files, clear errors when the mesher fails, AHA-17 orientation (Cerqueira et al., Circulation
2002;105:539: segment 1 anterior, 2-3 septal, 4 inferior, 5-6 lateral; LPS: anterior is -y)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.anatomy import FacetTag, Label
from cardiotwin.cli import main
from cardiotwin.errors import CaseError, StageError
from cardiotwin.io.scans import read_labels
from cardiotwin.meshing.quality import mesh_quality
from cardiotwin.meshing.tetgen_run import SelfIntersectionError, run_tetgen
from cardiotwin.meshing.volume import MeshConfig, mesh_labels
from cardiotwin.types import LabelMap

SAMPLES = Path(__file__).resolve().parents[1] / "sample_scans"
CT = SAMPLES / "ct_sample_labels.nii.gz"
MR = SAMPLES / "mr_sample_labels.nii.gz"


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.name} not present")


@pytest.fixture(scope="module")
def ct_mesh():
    _require(CT)
    labels = read_labels(CT)
    mesh, base, closed, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=2.5))
    return labels, mesh, base, closed


def _check_valid(q: dict, mesh) -> None:
    assert q["inverted_cells"] == 0
    # The mesh against the labels' myocardium and the wall the mesher built outside a blood pool that
    # touches the background (4 mm, MeshConfig.built_wall_mm), which keeps the cavities' volumes; that
    # wall stays small where the labels have a wall all round (MR sample, 8 mm slices: 7.8 mL of 112).
    assert abs(q["volume_error_closed"]) < 0.05
    assert q["built_wall_ml"] < 0.08 * q["label_myocardium_ml"]
    assert abs(q["lv_cavity_error"]) < 0.05
    for tag in (FacetTag.LV_ENDO, FacetTag.RV_ENDO, FacetTag.EPI, FacetTag.BASE):
        assert np.any(mesh.facet_tags == tag), tag.name


def test_ct_mesh_min_dihedral_and_volumes(ct_mesh):
    labels, mesh, base, closed = ct_mesh
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)
    assert q["min_dihedral_deg"] >= 5.0  # issue 4 target
    _check_valid(q, mesh)


def test_mr_thick_slices_mesh(tmp_path):
    _require(MR)
    labels = read_labels(MR)
    assert max(labels.geometry.spacing_mm) >= 4 * min(labels.geometry.spacing_mm)  # 8 mm slices
    mesh, base, cleaned, _ = mesh_labels(labels, cfg=MeshConfig(edge_mm=2.5))
    assert max(cleaned.geometry.spacing_mm) < 2.0  # resampled to near-isotropic before meshing
    q = mesh_quality(mesh, labels=labels, base=base, closed=cleaned)
    _check_valid(q, mesh)
    assert q["min_dihedral_deg"] >= 5.0  # the mesher fails rather than return less


def test_thick_slice_mr_sample_meshes_coarse_and_closed():
    """At 5 mm on the thick-slice MR sample (8 mm slices): with plain shape-based interpolation the
    RV wall over the apical end of the RV blood pool comes out one voxel thick and the anti-aliasing
    opens it (surface genus 21); the nested interpolation and the wall built outside the blood where
    it touches the background keep it a closed wall (genus 0), at the requested edge (under 5k points)."""
    from cardiotwin.meshing.tets import boundary_genus

    _require(MR)
    labels = read_labels(MR)
    coarse, base, closed, timings = mesh_labels(labels, cfg=MeshConfig(edge_mm=5.0))
    q = mesh_quality(coarse, labels=labels, base=base, closed=closed)
    _check_valid(q, coarse)
    assert coarse.n_points < 5_000
    assert boundary_genus(coarse.cells) == 0 and q["boundary_genus"] == 0 and timings["boundary_genus"] == 0


def _shifting_ring_stack(shift_px: int) -> LabelMap:
    """Three 8 mm slices of 1 mm pixels: a disc of LV blood (radius 9) in a 2-pixel wall that moves
    ``shift_px`` pixels in x from slice to slice, as a misregistered cine stack does."""
    from cardiotwin.types import ImageGeometry

    lab = np.zeros((48, 48, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:48, :48]
    for k in range(3):
        r = np.hypot(xx - 18 - k * shift_px, yy - 24)
        lab[..., k][r < 11] = Label.LV_MYO
        lab[..., k][r < 9] = Label.LV_BLOOD
    geom = ImageGeometry(shape=lab.shape, spacing_mm=(1.0, 1.0, 8.0), origin_mm=(0.0, 0.0, 0.0))
    return LabelMap(lab, geom, source="ring_stack")


def test_nested_interpolation_keeps_a_moving_thin_wall_closed():
    """Between slices whose 2 mm wall moves by 6 mm, the blood pool's interpolated distance never
    falls below the whole ventricle's (the blood is nested in it), so no sub-slice has blood touching
    the background, and the wall volume stays that of the slices."""
    from scipy import ndimage

    from cardiotwin.meshing.surface import resample_thick_slices

    stack = _shifting_ring_stack(6)
    fine = resample_thick_slices(stack)
    assert fine.geometry.spacing_mm == (1.0, 1.0, 1.0) and fine.labels.shape == (48, 48, 24)
    lab = fine.labels
    blood, background = lab == Label.LV_BLOOD, lab == Label.BACKGROUND
    # In-plane adjacency (the slices' own geometry) and across the sub-slices.
    assert not (blood & ndimage.binary_dilation(background)).any()
    ratio = np.count_nonzero(lab == Label.LV_MYO) / np.count_nonzero(stack.labels == Label.LV_MYO) / 8
    assert 0.8 < ratio < 1.4
    # Where the wall does not move the stack is unchanged: each sub-slice equals its thick slice.
    still = resample_thick_slices(_shifting_ring_stack(0)).labels
    assert all(np.array_equal(still[..., i], _shifting_ring_stack(0).labels[..., i // 8]) for i in range(24))


def test_boundary_genus_counts_holes_through_the_wall():
    from cardiotwin.meshing.tets import boundary_genus

    nodes, tets = _cube_tets()
    assert boundary_genus(tets) == 0
    # A 3 x 3 x 1 block of unit cubes (6 tets each) without its middle cube: a ring, genus 1.
    ring = _cube_block(3, 3, 1, skip={(1, 1, 0)})
    assert boundary_genus(ring[1]) == 1


def _cube_block(nx: int, ny: int, nz: int, skip=frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """Unit cubes on an nx x ny x nz grid, each split into 6 tets along its main diagonal (Kuhn), so
    neighbouring cubes share their faces' diagonals; cubes at ``skip`` (i, j, k) are left out."""
    from cardiotwin.meshing.tets import orient_positive

    idx = lambda i, j, k: (i * (ny + 1) + j) * (nz + 1) + k  # noqa: E731
    pts = np.array([(i, j, k) for i in range(nx + 1) for j in range(ny + 1) for k in range(nz + 1)], dtype=float)
    paths = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    cells = []
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                if (i, j, k) in skip:
                    continue
                for path in paths:
                    c = [i, j, k]
                    tet = [idx(*c)]
                    for axis in path:
                        c[axis] += 1
                        tet.append(idx(*c))
                    cells.append(tet)
    cells = np.array(cells)
    return pts, orient_positive(pts, cells)


def test_peeling_boundary_tets_never_opens_the_wall():
    """A wall one cube (6 tets) thick, every corner on the boundary: peeling as many boundary tets as
    the topology rule allows, round after round, keeps the surface a sphere; peeling any boundary tet
    with all corners on the boundary (the rule before) opens a hole or pinches the surface."""
    from cardiotwin.meshing.optimize import removable_boundary_cells
    from cardiotwin.meshing.tets import boundary_facets, boundary_genus

    pts, cells = _cube_block(4, 4, 1)
    removed = 0
    for _ in range(30):
        if len(cells) < 6:
            break
        _, owner = boundary_facets(cells)
        candidates = np.zeros(len(cells), dtype=bool)
        candidates[owner] = True
        drop = removable_boundary_cells(cells, candidates)
        if not drop.any():
            break
        # no two removed tets share a corner
        assert np.unique(cells[drop].ravel()).size == 4 * int(drop.sum())
        cells = cells[~drop]
        removed += int(drop.sum())
        assert boundary_genus(cells) == 0
    assert removed > 30
    pts, cells = _cube_block(4, 4, 1)
    _, owner = boundary_facets(cells)
    careless = np.zeros(len(cells), dtype=bool)
    careless[owner] = True
    assert any(boundary_genus(np.delete(cells, c, axis=0)) != 0 for c in np.flatnonzero(careless))


def test_segmentation_noise_still_meshes(ct_mesh):
    labels, _, _, _ = ct_mesh
    lab = labels.labels.copy()
    rng = np.random.default_rng(4)
    # Islands: detached blobs of myocardium and blood away from the heart.
    lab[2:6, 2:6, 2:6] = Label.LV_MYO
    lab[-6:-2, 2:6, -6:-2] = Label.RV_BLOOD
    # Small holes: background voxels punched into the myocardium.
    myo = np.argwhere(lab == Label.LV_MYO)
    holes = myo[rng.choice(len(myo), 200, replace=False)]
    lab[holes[:, 0], holes[:, 1], holes[:, 2]] = Label.BACKGROUND
    # Touching chambers: a 3-voxel channel of RV blood cut through the septal myocardium along the
    # line between the two cavity centres, so the blood pools touch.
    lv_blood = lab == Label.LV_BLOOD
    from scipy import ndimage

    a = np.argwhere(lv_blood).mean(axis=0)
    b = np.argwhere(lab == Label.RV_BLOOD).mean(axis=0)
    channel = np.zeros(lab.shape, dtype=bool)
    for t in np.linspace(0.0, 1.0, 200):
        i, j, k = np.rint(a + t * (b - a)).astype(int)
        channel[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2] = True
    lab[channel & (lab == Label.LV_MYO)] = Label.RV_BLOOD
    assert (ndimage.binary_dilation(lab == Label.RV_BLOOD) & lv_blood).any()
    noisy = LabelMap(lab, labels.geometry, source="noisy.nii.gz")
    mesh, base, closed, _ = mesh_labels(noisy, cfg=MeshConfig(edge_mm=2.5))
    q = mesh_quality(mesh, labels=labels, base=base, closed=closed)  # compared with the clean labels
    _check_valid(q, mesh)
    assert q["min_dihedral_deg"] >= 5.0
    # one piece, every cell joined by faces (a piece hanging on an edge or a vertex is a mechanism)
    from cardiotwin.meshing.tets import face_connected_components

    assert face_connected_components(mesh.cells).max() == 0


def _cube(offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    p = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
    t = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                  [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return p * 10.0 + offset, t


def test_tetgen_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p, t = _cube()
    nodes, tets = run_tetgen(p, t, options={"quality": True})
    from cardiotwin.meshing.tets import orient_positive, signed_volumes

    assert signed_volumes(nodes, orient_positive(nodes, tets)).sum() == pytest.approx(1000.0)  # 10 mm cube
    # Two interpenetrating cubes: TetGen skips the intersecting facets and writes _skipped.* files.
    p2, t2 = _cube(5.0)
    with pytest.raises(SelfIntersectionError, match="mesher failed: the surface intersects itself"):
        run_tetgen(np.vstack([p, p2]), np.vstack([t, t2 + 8]), options={"quality": False}, source="two_cubes")
    assert list(tmp_path.iterdir()) == []


def test_mesher_failure_is_a_clear_stage_error(ct_mesh, monkeypatch, tmp_path):
    """A surface that TetGen rejects goes to fTetWild at the same edge; when that fails too, one
    error names both causes."""
    labels, _, _, _ = ct_mesh
    import cardiotwin.meshing.volume as volume
    from cardiotwin.meshing.tetgen_run import SurfaceRejectedError

    def broken(*args, **kwargs):
        import pyvista as pv

        a, ta = _cube()
        b, tb = _cube(5.0)
        faces = np.hstack([np.full((24, 1), 3), np.vstack([ta, tb + 8])]).ravel()
        return pv.PolyData(np.vstack([a, b]), faces)

    def ftetwild_fails(*args, source, **kwargs):
        raise SurfaceRejectedError(f"{source}: mesher failed: fTetWild failed (exit 3): test")

    monkeypatch.setattr(volume, "myocardium_surface", broken)
    monkeypatch.setattr(volume, "remesh_uniform", lambda surface, **kw: surface)
    monkeypatch.setattr(volume, "run_ftetwild", ftetwild_fails)
    with pytest.raises(StageError, match="ct_sample_labels.nii.gz: mesher failed: no tetrahedral mesher could use "
                       "the myocardial surface: .*the surface intersects itself.*fTetWild failed"):
        mesh_labels(labels, cfg=MeshConfig(edge_mm=3.0))


def test_mesh_case_reads_segment_labels(tmp_path):
    _require(CT)
    from cardiotwin.cases import Case

    case = Case.create(tmp_path / "case")
    with case.stage("segment", inputs={"labels": CT}, config={"source": "test"}) as st:
        shutil.copy(CT, st.dir / "labels.nii.gz")
        # A decoy that a glob for *labels* would pick first; the mesh stage must ignore it.
        (st.dir / "a_labels_old.nii.gz").write_bytes(b"not a label map")
    assert main(["mesh", str(case.root), "--edge-mm", "3.0"]) == 0
    q = json.loads((case.stage_dir("mesh") / "quality.json").read_text())
    assert q["inverted_cells"] == 0 and abs(q["volume_error"]) < 0.05
    rec = case.stage_record("mesh")
    assert rec["status"] == "ok"
    assert main(["mesh", str(case.root), "--edge-mm", "3.0"]) == 0  # unchanged: skipped
    assert case.stage_record("mesh")["started"] == rec["started"]
    (case.stage_dir("segment") / "labels.nii.gz").unlink()
    with pytest.raises(CaseError, match="labels.nii.gz"):
        from cardiotwin.commands import mesh as mesh_cmd
        import argparse

        mesh_cmd.run(argparse.Namespace(source=str(case.root), out=None, edge_mm="3 mm", time_limit="600 s", base_point=None,
                                        base_normal=None, force=True))


def test_aha_orientation_on_patient_mesh(ct_mesh):
    from cardiotwin.fibers.coordinates import compute_fibers

    _, mesh, _, _ = ct_mesh
    fmesh, _ = compute_fibers(mesh)
    aha = fmesh.point_data["aha"]
    lv = aha > 0
    counts = np.bincount(aha[lv], minlength=18)[1:]
    assert np.all(counts > 0), counts  # all 17 segments present
    frac = counts / lv.sum()
    assert np.all(frac[:16] > 0.02) and np.all(frac[:16] < 0.15), frac  # ~1/17 each, plausible
    assert 0.005 < frac[16] < 0.12
    p = fmesh.points
    rv_centre = p[np.unique(fmesh.facets[fmesh.facet_tags == FacetTag.RV_ENDO])].mean(axis=0)
    c = {s: p[aha == s].mean(axis=0) for s in range(1, 18)}
    # Anterior (1, 7) lies more anterior (LPS -y) than inferior (4, 10).
    assert c[1][1] < c[4][1] and c[7][1] < c[10][1]
    # Septal segments (2, 3, 8, 9) are closer to the RV cavity than lateral ones (5, 6, 11, 12).
    d = {s: np.linalg.norm(c[s] - rv_centre) for s in c}
    assert max(d[2], d[3], d[8], d[9]) < min(d[5], d[6], d[11], d[12])


def _cube_tets() -> tuple[np.ndarray, np.ndarray]:
    from cardiotwin.meshing.tets import orient_positive

    p, t = _cube()
    nodes, tets = run_tetgen(p, t, options={"quality": True})
    return nodes, orient_positive(nodes, tets)


def test_face_connected_components_separate_pieces_hanging_on_an_edge_or_a_vertex():
    from cardiotwin.meshing.tets import boundary_facets, face_connected_components

    nodes, tets = _cube_tets()
    n = len(nodes)
    corner = int(np.argmin(np.linalg.norm(nodes, axis=1)))  # the cube's vertex at the origin
    far = int(np.argmax(np.linalg.norm(nodes, axis=1)))  # and at (10, 10, 10)
    other = int(next(v for v in tets[(tets == far).any(axis=1)][0] if v != far))
    by_vertex = [corner, n, n + 1, n + 2]  # shares only one vertex with the cube
    by_edge = [far, other, n + 3, n + 4]  # shares only one edge
    cells = np.vstack([tets, [by_vertex, by_edge]])
    comp = face_connected_components(cells)
    assert (comp[:-2] == 0).all()  # the largest piece is numbered 0
    assert comp[-2] > 0 and comp[-1] > 0 and comp[-2] != comp[-1]
    # a tet glued onto a boundary face belongs to the cube's piece
    f, _ = boundary_facets(tets)
    assert face_connected_components(np.vstack([tets, [[*f[0], n]]])).max() == 0


def test_tiny_boundary_tets_are_peeled_and_regular_ones_kept():
    from cardiotwin.meshing.optimize import peel_tiny_boundary_cells
    from cardiotwin.meshing.tets import boundary_facets, signed_volumes

    nodes, tets = _cube_tets()
    f, _ = boundary_facets(tets)
    a, b, c = f[0]
    centre = nodes[[a, b, c]].mean(axis=0)
    normal = np.cross(nodes[b] - nodes[a], nodes[c] - nodes[a])
    tip = centre + 1e-4 * normal / np.linalg.norm(normal)  # 0.1 um above a boundary face, outside
    pts = np.vstack([nodes, tip])
    cells = np.vstack([tets, [[a, b, c, len(nodes)]]])
    assert signed_volumes(pts, cells)[-1] > 0
    kept, removed = peel_tiny_boundary_cells(pts, cells)
    assert removed == 1 and len(kept) == len(tets)
    assert signed_volumes(pts, kept).sum() == pytest.approx(1000.0)
    kept, removed = peel_tiny_boundary_cells(nodes, tets)
    assert removed == 0
