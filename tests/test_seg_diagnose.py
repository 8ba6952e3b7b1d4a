"""Domain-gap review panels (cardiotwin.segmentation.diagnose): they are written, and refuse bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cardiotwin.segmentation.diagnose import scan_panel, synth_panel
from cardiotwin.segmentation.synth import make_label_volume


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_scan_panel_shows_labelled_slices_only(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (40, 40, 6)).astype(np.float32)
    ref = np.full(image.shape, 255, np.uint8)
    ref[:, :, 1:5] = 0
    ref[10:20, 10:20, 1:5] = 2
    ref[12:18, 12:18, 1:5] = 1
    raw = np.zeros(image.shape, np.uint8)
    raw[11:19, 11:19, :] = 1
    out = scan_panel(image, ref, raw, tmp_path / "p.png", n_slices=4)
    w, h = _png_size(out)
    assert w > 2 * h * 0.9  # four labelled slices side by side, two rows
    with pytest.raises(ValueError, match="no labelled slice"):
        scan_panel(image, np.full(image.shape, 255, np.uint8), raw, tmp_path / "q.png")
    with pytest.raises(ValueError, match="differ in shape"):
        scan_panel(image, ref[:, :, :3], raw, tmp_path / "q.png")


def test_synth_panel_writes_samples(tmp_path):
    vol = make_label_volume(5, size=40, spacing_mm=5.0)
    out = synth_panel([vol], tmp_path / "s.png", n_samples=2, patch=32, p_distractors=1.0, p_trabeculae=1.0)
    assert out.is_file() and _png_size(out)[0] > 0
