"""Inference geometry and post-processing (no trained weights needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiotwin.errors import StageError
from cardiotwin.segmentation.inference import (SegConfig, check_heart_found, labels_to_working_grid, postprocess,
                                               probabilities_to_geometry, to_working_grid, working_geometry)
from cardiotwin.types import ImageGeometry, LabelMap, Scan


def _rot(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


OBLIQUE = ImageGeometry(shape=(50, 40, 12), spacing_mm=(1.4, 1.4, 8.0), origin_mm=(-30.0, -20.0, -40.0),
                        direction=tuple(_rot([1, 2, 0.5], 35).ravel()))


def test_working_grid_covers_the_scan_and_is_world_aligned():
    geom = working_geometry(OBLIQUE, spacing_mm=2.5)
    assert geom.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert geom.spacing_mm == (2.5, 2.5, 2.5)
    n = np.asarray(OBLIQUE.shape)
    corners = np.array([[a, b, c] for a in (0, n[0] - 1) for b in (0, n[1] - 1) for c in (0, n[2] - 1)], float)
    idx = geom.world_to_index(OBLIQUE.index_to_world(corners))
    assert (idx >= -0.5).all() and (idx <= np.asarray(geom.shape) - 0.5).all()


def test_probabilities_resample_to_the_exact_input_geometry():
    """A ball of radius 20 mm given as probabilities on the working grid lands on the oblique grid
    where the analytic ball is (up to the working grid's 2.5 mm voxel)."""
    work = working_geometry(OBLIQUE, spacing_mm=2.5)
    centre = OBLIQUE.index_to_world(np.array([25.0, 20.0, 6.0]))
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in work.shape), indexing="ij"), -1).reshape(-1, 3)
    r_work = np.linalg.norm(work.index_to_world(ijk) - centre, axis=1).reshape(work.shape)
    p1 = torch.from_numpy(1.0 / (1.0 + np.exp((r_work - 20.0) / 1.0))).float()  # soft ball
    probs = torch.stack([1 - p1, p1])
    out = probabilities_to_geometry(probs, work, OBLIQUE, chunk_voxels=3000)
    assert out.shape == OBLIQUE.shape and out.dtype == np.uint8
    ijk_t = np.stack(np.meshgrid(*(np.arange(s) for s in OBLIQUE.shape), indexing="ij"), -1).reshape(-1, 3)
    r_t = np.linalg.norm(OBLIQUE.index_to_world(ijk_t) - centre, axis=1).reshape(OBLIQUE.shape)
    truth = r_t <= 20.0
    wrong = out.astype(bool) != truth
    assert not wrong[np.abs(r_t - 20.0) > 1.5].any()  # errors only within 1.5 mm of the surface
    assert truth.sum() > 0


def test_to_working_grid_marks_outside_field_of_view():
    vox = np.full(OBLIQUE.shape, 100.0, dtype=np.float32)
    vox[10:40, 10:30, 3:9] = 500.0
    scan = Scan(voxels=vox, geometry=OBLIQUE, modality="MR", sha256="x")
    w = to_working_grid(scan, spacing_mm=2.5)
    assert w.image.shape == w.geometry.shape and w.fov.shape == w.geometry.shape
    assert 0.05 < w.fov.mean() < 0.95  # an oblique slab inside its world-aligned bounding box
    assert float(w.image[torch.from_numpy(~w.fov)].abs().max()) == 0.0
    assert float(w.image.max()) == pytest.approx(1.0)


def test_labels_to_working_grid_is_nearest_neighbour():
    lab = np.zeros(OBLIQUE.shape, dtype=np.uint8)
    lab[10:40, 10:30, 3:9] = 7
    w = labels_to_working_grid(LabelMap(labels=lab, geometry=OBLIQUE), working_geometry(OBLIQUE, spacing_mm=2.5))
    assert set(np.unique(w).tolist()) == {0, 7}


def _geom(n=60, sp=1.0):
    return ImageGeometry(shape=(n, n, n), spacing_mm=(sp, sp, sp), origin_mm=(0.0, 0.0, 0.0))


def test_postprocess_keeps_largest_component_and_fills_holes():
    g = _geom()
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[10:40, 10:40, 10:40] = 2
    lab[15:35, 15:35, 15:35] = 1
    lab[24:26, 24:26, 24:26] = 2  # papillary-like island inside the blood pool -> LV blood
    lab[50:53, 50:53, 50:53] = 1  # stray fragment -> removed
    lab[38:40, 20:22, 20:22] = 0  # hole in the wall opening outside: not filled
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="never", lv_component="largest"))
    assert not (out[50:53, 50:53, 50:53] == 1).any()
    assert (out[24:26, 24:26, 24:26] == 1).all()
    assert notes["removed_voxels_not_largest_component"] == {1: 27, 2: 8}  # the island is its own piece


def test_postprocess_keeps_both_aorta_pieces_when_the_arch_is_outside_the_field_of_view():
    """Ascending and descending aorta are two pieces in a cardiac field of view: every aorta piece of at
    least aorta_min_fraction of the largest stays, smaller ones go; other labels keep one piece."""
    g = _geom()
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[10:40, 10:40, 10:40] = 2
    lab[15:35, 15:35, 15:35] = 1
    lab[45:55, 5:15, 5:55] = 7  # ascending aorta, 5,000 voxels
    lab[45:55, 45:53, 10:35] = 7  # descending aorta, 2,000 voxels (0.4 of the largest)
    lab[2:6, 50:55, 50:55] = 7  # stray, 100 voxels (0.02)
    lab[2:6, 2:6, 50:56] = 2  # stray myocardium
    lab[20:30, 45:55, 45:55] = 8  # pulmonary artery, 1,000 voxels
    lab[20:30, 45:50, 30:35] = 8  # a second piece (0.25 of it): not kept
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="never", lv_component="largest"))
    assert (out[45:55, 45:53, 10:35] == 7).all() and (out[45:55, 5:15, 5:55] == 7).all()
    assert notes["removed_voxels_not_largest_component"] == {2: 96, 7: 100, 8: 250}
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="never", lv_component="largest", aorta_min_fraction=1.0))
    assert notes["removed_voxels_not_largest_component"] == {2: 96, 7: 2100, 8: 250}
    with pytest.raises(ValueError, match="aorta_min_fraction"):
        SegConfig(aorta_min_fraction=0.0).validate()


def test_postprocess_keeps_the_lv_blood_pool_enclosed_by_myocardium_not_the_largest_blob():
    # A thoracic MR shows bright non-cardiac structures (liver, stomach) that a network can label LV
    # blood pool; the cavity is the blood component walled by LV myocardium (Sunnybrook diagnosis, issue 3).
    g = _geom()
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[2:24, 2:24, 2:24] = 1  # large blob, no wall (10,648 voxels)
    lab[32:52, 32:52, 32:52] = 2  # the LV: 20^3 wall ...
    lab[36:48, 36:48, 36:48] = 1  # ... around a 12^3 (1,728 voxel) cavity
    lab[2:6, 40:44, 40:44] = 2  # a stray myocardium fragment far from the cavity
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="never", lv_component="myocardium_contact"))
    assert (out[36:48, 36:48, 36:48] == 1).all() and not (out[2:24, 2:24, 2:24] == 1).any()
    assert notes["lv_removed_voxels_by_contact"] == {1: 22**3, 2: 64}
    assert (out[32:52, 32:52, 32:52] > 0).all() and not out[2:6, 40:44, 40:44].any()
    largest, _ = postprocess(lab, g, SegConfig(rv_myocardium="never"))  # default: the largest
    assert (largest[2:24, 2:24, 2:24] == 1).all() and not (largest[36:48, 36:48, 36:48] == 1).any()
    with pytest.raises(ValueError, match="lv_component"):
        SegConfig(lv_component="nearest").validate()


def test_postprocess_builds_rv_myocardium_shell():
    g = _geom()
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[10:30, 10:30, 10:30] = 3
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="auto", rv_wall_mm=3.0))
    shell = out == 4
    assert notes["rv_myocardium_built_from_blood_pool_voxels"] == int(shell.sum())
    assert (out[7:10, 15:25, 15:25] == 4).all() and out[5, 20, 20] == 0  # 3 mm thick
    out2, _ = postprocess(lab, g, SegConfig(rv_myocardium="never"))
    assert not (out2 == 4).any()


def test_postprocess_completes_a_gapped_rv_wall_only_where_it_is_missing():
    # RV blood with a predicted 2-voxel wall on five of its six sides: "always" closes the open
    # side with a rv_wall_mm shell and leaves the predicted wall and the neighbouring LV alone;
    # "auto" (whole shell only below 10 % predicted wall) and "never" keep the gap.
    g = _geom()
    lab = np.zeros(g.shape, dtype=np.uint8)
    lab[8:32, 8:32, 8:32] = 4
    lab[10:30, 10:30, 10:30] = 3
    lab[8:10, 10:30, 10:30] = 0  # the wall's -x side is missing
    lab[33:40, 10:30, 10:30] = 2  # LV myocardium beyond the +x wall
    out, notes = postprocess(lab, g, SegConfig(rv_myocardium="always", rv_wall_mm=2.0))
    assert (out[8:10, 10:30, 10:30] == 4).all()  # gap closed, 2 mm thick
    assert (out[:7, 10:30, 10:30] == 0).all()
    assert notes["rv_myocardium_built_from_blood_pool_voxels"] == 2 * 20 * 20
    unchanged = np.ones(g.shape, dtype=bool)
    unchanged[8:10, 10:30, 10:30] = False
    assert (out[unchanged] == lab[unchanged]).all()
    for mode in ("auto", "never"):
        kept, _ = postprocess(lab, g, SegConfig(rv_myocardium=mode, rv_wall_mm=2.0))
        assert (kept[8:10, 10:30, 10:30] == 0).all(), mode
    assert SegConfig().rv_myocardium == "always"


def test_no_heart_found():
    g = _geom()
    with pytest.raises(StageError, match="no heart found"):
        check_heart_found(np.zeros(g.shape, dtype=np.uint8), g, SegConfig(), source="blank.nii.gz")


def test_sliding_window_skips_windows_outside_the_field_of_view():
    from cardiotwin.segmentation.inference import predict_probabilities
    from cardiotwin.segmentation.network import NetworkSpec, build_network

    torch.manual_seed(0)
    net = build_network(NetworkSpec(channels=(4, 8), strides=(2,)))
    image = torch.rand(40, 30, 20)
    fov = np.zeros(image.shape, dtype=bool)
    fov[:16, :16, :16] = True
    probs = predict_probabilities(net, image, roi=16, overlap=0.25, fov=fov)
    assert probs.shape == (9, 40, 30, 20)
    assert torch.allclose(probs.sum(0), torch.ones(40, 30, 20), atol=1e-5)
    assert (probs[0, 30:, 20:, :] == 1.0).all()  # never inside any evaluated window: background
    assert (probs[0, :16, :16, :16] < 1.0).all()  # evaluated by the network


class _ConstantNet(torch.nn.Module):
    """Logits favouring one class everywhere (a stand-in network for window bookkeeping tests)."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((x.shape[0], 9, *x.shape[2:]))
        out[:, self.cls] = 10.0
        return out


def test_refinement_windows_are_centred_on_the_lv_and_averaged_in():
    """refine_around_heart: 27 windows round the first pass's LV, averaged with weight 1 for the first
    pass; voxels outside every refinement window keep their probabilities; no LV -> unchanged."""
    from cardiotwin.segmentation.inference import refine_around_heart

    shape = (64, 64, 64)
    first = torch.zeros((9, *shape))
    first[0] = 1.0
    first[:, 28:36, 28:36, 28:36] = 0.0
    first[1, 28:36, 28:36, 28:36] = 1.0  # an LV in the middle
    image = torch.zeros(shape)
    out = refine_around_heart(_ConstantNet(3), image, first, roi=16, step_vox=4)
    assert torch.allclose(out.sum(0), torch.ones(shape), atol=1e-5)
    # the LV centre (31.5 -> 32) +- 4 voxels, windows of 16: voxels 20..43 are covered
    assert float(out[3, 32, 32, 32]) > 0.5  # covered by all 27 windows: mostly the new class
    assert torch.equal(out[:, :18, :, :], first[:, :18, :, :])  # never in a refinement window
    assert torch.equal(out[:, 46:, :, :], first[:, 46:, :, :])
    stray = first.clone()
    stray[:, 2:4, 2:4, 2:4] = 0.0
    stray[1, 2:4, 2:4, 2:4] = 1.0  # a small LV-labelled blob far away: the windows stay on the big one
    assert torch.equal(refine_around_heart(_ConstantNet(3), image, stray, roi=16, step_vox=4)[:, 20:44, 20:44, 20:44],
                       out[:, 20:44, 20:44, 20:44])
    no_lv = torch.zeros((9, *shape))
    no_lv[0] = 1.0
    assert refine_around_heart(_ConstantNet(3), image, no_lv, roi=16, step_vox=4) is no_lv
    with pytest.raises(ValueError, match="centred_windows_mm"):
        SegConfig(centred_windows_mm=-1.0).validate()
