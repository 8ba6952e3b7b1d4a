"""Shared fixtures. Tests that use real data skip when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import h5py  # noqa: F401 - before any dolfinx import: its own HDF5 first, or h5py binds to the wheel's
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# beats run in the test process (monkeypatched functions apply) unless a test asks for ranks
os.environ.setdefault("CARDIOTWIN_EM_RANKS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_SCANS = REPO / "sample_scans"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_ct_phantom():
    """A fast, coarse CT phantom (2 mm, 128 mm field of view)."""
    from cardiotwin.phantom import make_phantom

    return make_phantom(seed=11, modality="CT", spacing_mm=(2.0, 2.0, 2.0), fov_mm=128.0)


@pytest.fixture(scope="session")
def small_mr_phantom():
    from cardiotwin.phantom import make_phantom

    return make_phantom(seed=12, modality="MR", spacing_mm=(2.0, 2.0, 8.0), fov_mm=128.0)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
