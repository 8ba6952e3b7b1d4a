"""numpy (x, y, z) arrays with an ImageGeometry <-> SimpleITK images (geometry only, no metadata)."""

from __future__ import annotations

import numpy as np

from cardiotwin.types import ImageGeometry


def to_sitk(array: np.ndarray, geometry: ImageGeometry):
    """numpy (x, y, z) + geometry -> SimpleITK image (no other metadata)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(s) for s in geometry.spacing_mm])
    image.SetOrigin([float(o) for o in geometry.origin_mm])
    image.SetDirection([float(d) for d in geometry.direction])
    return image


def from_sitk(image) -> tuple[np.ndarray, ImageGeometry]:
    """SimpleITK 3D image -> numpy (x, y, z) and its geometry."""
    import SimpleITK as sitk

    arr = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    geometry = ImageGeometry(
        shape=tuple(int(n) for n in image.GetSize()),
        spacing_mm=tuple(float(s) for s in image.GetSpacing()),
        origin_mm=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
    )
    return arr, geometry
