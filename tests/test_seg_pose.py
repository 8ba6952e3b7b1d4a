"""Heart pose search of the default (3D) network for short-axis stacks with an untrusted header, and the
cine training's start from trained weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cardiotwin.errors import ConfigError
from cardiotwin.segmentation.pose import candidate_directions, heart_frame, search_pose, with_direction

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle between two direction matrices (inf when one is the other's mirror image)."""
    r = a @ b.T
    if np.linalg.det(r) < 0:
        return float("inf")
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


@pytest.mark.parametrize("axis", [0, 2])
def test_candidates_put_the_slice_axis_on_the_long_axis_in_every_in_plane_pose(axis):
    _, _, z = heart_frame()
    cands = candidate_directions(axis, n_angles=8)
    assert len(cands) == 32 and len({name for name, _ in cands}) == 32
    dets = []
    for _, d in cands:
        assert np.allclose(d.T @ d, np.eye(3), atol=1e-9)
        assert abs(abs(float(d[:, axis] @ z)) - 1.0) < 1e-9
        dets.append(round(float(np.linalg.det(d))))
    assert sorted(set(dets)) == [-1, 1] and dets.count(1) == 16  # both handednesses
    proper = [d for _, d in cands if np.linalg.det(d) > 0]
    # any proper pose with its slice normal on the long axis is within 22.5 degrees of a proper candidate
    for t in np.linspace(0.0, 2 * np.pi, 37):
        k = np.array([[0, -z[2], z[1]], [z[2], 0, -z[0]], [-z[1], z[0], 0]])
        spin = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k  # rotation by t about the long axis
        for c in proper[:1] + proper[8:9]:  # one candidate of each slice-axis sign
            assert min(_angle_deg(spin @ c, q) for q in proper) <= 22.5 + 1e-6


def test_with_direction_keeps_the_voxels_and_the_stack_centre(small_mr_phantom):
    scan = small_mr_phantom.scan
    d = candidate_directions(2)[5][1]
    moved = with_direction(scan, tuple(d.ravel()))
    assert moved.voxels is scan.voxels and moved.geometry.shape == scan.geometry.shape
    assert moved.geometry.spacing_mm == scan.geometry.spacing_mm
    mid = (np.asarray(scan.geometry.shape, dtype=float)[None] - 1) / 2.0
    assert np.allclose(moved.geometry.index_to_world(mid), scan.geometry.index_to_world(mid))
    assert np.allclose(moved.geometry.direction_matrix, d)


@pytest.mark.slow  # two searches of 33 windows and an MR phantom: 1-4 min on 2 shared cores
def test_pose_search_finds_a_short_axis_stack_whose_header_lost_its_orientation():
    """A held-out MR phantom (short-axis stack, 1.5 x 1.5 x 8 mm) with an identity direction matrix: the default
    network's most confident pose is within 45 degrees of the true one (the shape model's pose jitter is 15
    degrees plus an 8-degree slice tilt; the candidates are 45 degrees apart), and with the true header
    the header is kept or replaced by a pose within 45 degrees of it."""
    from cardiotwin.phantom import make_phantom
    from cardiotwin.segmentation.bundle import load_bundle
    from cardiotwin.segmentation.inference import slice_axis

    torch.set_num_threads(2)
    model = load_bundle()
    scan = make_phantom(seed=900060, modality="MR").scan
    true = scan.geometry.direction_matrix
    axis = slice_axis(scan.geometry, min_ratio=2.0)
    lost = replace(scan, geometry=replace(scan.geometry, direction=IDENTITY))
    res = search_pose(model.network, lost, slice_axis=axis, roi=model.roi, spacing_mm=model.spacing_mm)
    assert res.changed
    assert _angle_deg(np.asarray(res.direction).reshape(3, 3), true) <= 45.0, res.name
    kept = search_pose(model.network, scan, slice_axis=axis, roi=model.roi, spacing_mm=model.spacing_mm)
    assert _angle_deg(np.asarray(kept.direction).reshape(3, 3), true) <= 45.0, kept.name


def test_cine_training_starts_from_a_bundle_or_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from cardiotwin.segmentation.network import NetworkSpec, build_network
    from cardiotwin.segmentation.train_cine import CineTrainConfig, initial_weights

    net = build_network(NetworkSpec.from_dict(CineTrainConfig().network))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "bundle").mkdir()
    save_file(state, str(tmp_path / "bundle" / "model.safetensors"))
    torch.save({"model": state, "step": 3}, tmp_path / "step_3.pt")
    for src in (tmp_path / "bundle", tmp_path / "step_3.pt"):
        fresh = build_network(NetworkSpec.from_dict(CineTrainConfig().network))
        fresh.load_state_dict(initial_weights(src))
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ConfigError, match="init must be"):
        initial_weights(tmp_path / "nothing_here")


def test_checkpoint_average_is_the_mean_of_the_weights(tmp_path):
    from cardiotwin.segmentation.network import NetworkSpec, build_network
    from cardiotwin.segmentation.train_cine import CineTrainConfig, average_checkpoints

    spec = NetworkSpec.from_dict(CineTrainConfig().network)
    torch.manual_seed(0)
    states = [build_network(spec).state_dict() for _ in range(3)]
    paths = []
    for i, st in enumerate(states):
        paths.append(tmp_path / f"step_{i}.pt")
        torch.save({"model": st, "step": i}, paths[-1])
    avg = average_checkpoints(paths)
    net = build_network(spec)
    net.load_state_dict(avg)  # a loadable network
    for k, v in states[0].items():
        if v.is_floating_point():
            assert torch.allclose(avg[k], (states[0][k] + states[1][k] + states[2][k]) / 3, atol=1e-6), k
    w = next(k for k, v in avg.items() if v.ndim == 4)
    assert not torch.allclose(avg[w], states[0][w])  # the three networks differ, so the mean is a new one
    small = build_network(NetworkSpec.from_dict({**CineTrainConfig().network, "channels": [8, 16, 32, 64, 128]}))
    torch.save({"model": small.state_dict(), "step": 9}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt: its network differs"):
        average_checkpoints([paths[0], tmp_path / "other.pt"])
    with pytest.raises(ConfigError, match="not found"):
        average_checkpoints([tmp_path / "missing.pt"])


def test_an_export_records_the_bundle_its_run_started_from(tmp_path):
    """A run started from a bundle that was since re-exported from the same run keeps that bundle's own parent."""
    import json

    from cardiotwin.segmentation.train_cine import parent_record

    run_cfg = {"lr": 1e-3, "init": str(tmp_path)}
    meta = {"name": "b", "version": "1.1.0", "weights": {"sha256": "abc"},
            "training": {"config": run_cfg, "initialised_from": {"bundle": "b", "version": "1.0.0"}}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert parent_record(str(tmp_path), "1.2.0", run_cfg) == {"bundle": "b", "version": "1.0.0"}  # same run
    assert parent_record(str(tmp_path), "1.1.0", {"lr": 5e-4}) == {"bundle": "b", "version": "1.0.0"}  # same version
    later = parent_record(str(tmp_path), "1.2.0", {"lr": 5e-4, "init": str(tmp_path)})  # a new run from 1.1.0
    assert later["version"] == "1.1.0" and later["weights_sha256"] == "abc"
    assert parent_record("", "1.2.0", run_cfg) is None
