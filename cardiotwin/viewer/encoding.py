"""Arrays in the review page's JSON: little-endian bytes, base64, with dtype and shape."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def encode_array(a: np.ndarray, dtype: str) -> dict[str, Any]:
    """A numpy array as ``{"dtype", "shape", "b64"}`` (little-endian bytes, C order)."""
    arr = np.ascontiguousarray(np.asarray(a).astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    return {"dtype": dtype, "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of ``encode_array``."""
    raw = base64.b64decode(obj["b64"])
    return np.frombuffer(raw, dtype=np.dtype(obj["dtype"]).newbyteorder("<")).reshape(obj["shape"])
