"""The network-free registration check of reference labels against their images (bench.label_alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.bench.label_alignment import edge_ratios, pooled_shift, shift_in_plane


def _stack(axis: int, centre=(30.0, 27.0)) -> tuple[np.ndarray, np.ndarray]:
    """A bright blood pool (disc, radius 10 px) in a darker wall, 4 thick slices along ``axis``; labels drawn on
    the same disc (1 inside, 2 a ring around it)."""
    yy, xx = np.mgrid[:64, :60].astype(float)
    d = np.hypot(yy - centre[0], xx - centre[1])
    img = np.where(d < 10, 200.0, np.where(d < 16, 60.0, 120.0))
    lab = np.where(d < 10, 1, np.where(d < 16, 2, 0)).astype(np.uint8)
    rng = np.random.default_rng(0)
    img = np.stack([img + rng.normal(0, 5, img.shape) for _ in range(4)], -1)
    lab = np.stack([lab] * 4, -1)
    return np.moveaxis(img, -1, axis), np.moveaxis(lab, -1, axis)


@pytest.mark.parametrize("axis", [0, 2])
def test_a_registered_label_peaks_at_no_shift_and_a_displaced_one_at_its_displacement(axis):
    img, lab = _stack(axis)
    best, gain = pooled_shift([edge_ratios(img, lab == 1, axis)])
    assert best == (0.0, 0.0) and gain == 1.0
    displaced = shift_in_plane(lab, (1.0, 1.0), axis)  # the labels one pixel off in both in-plane axes
    best, gain = pooled_shift([edge_ratios(img, displaced == 1, axis)])
    assert best == (-1.0, -1.0) and gain > 1.05  # moving them back puts them on the edges


def test_shift_in_plane_moves_whole_pixels_exactly_and_keeps_ignored_slices():
    _, lab = _stack(2)
    lab[..., 3] = 255  # an unlabelled slice
    moved = shift_in_plane(lab, (2.0, -1.0), 2)
    assert np.array_equal(moved[2:, :-1, :3], lab[:-2, 1:, :3])
    assert (moved[..., 3] == 255).all()
    assert np.array_equal(shift_in_plane(lab, (0.0, 0.0), 2), lab)
