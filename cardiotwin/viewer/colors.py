"""Colour tables of the review: CARTO-like activation, label colours, AHA segments, lead response.

The browser code receives these tables in the scene payload, so Python (tests, screenshots) and
JavaScript (rendering) share one definition.
"""

from __future__ import annotations

import numpy as np

# Electro-anatomical mapping convention (CARTO 3 / EnSite "rainbow" LAT map): earliest activation
# red, then orange, yellow, green, cyan, blue, latest purple.
ACTIVATION_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (220, 20, 20)),
    (0.17, (255, 140, 0)),
    (0.33, (250, 230, 20)),
    (0.50, (40, 200, 60)),
    (0.67, (30, 200, 230)),
    (0.83, (40, 70, 230)),
    (1.00, (140, 40, 200)),
)

# Predicted response of a lead candidate: poor (red) -> moderate (amber) -> good (green).
RESPONSE_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (215, 48, 39)),
    (0.5, (254, 190, 60)),
    (1.0, (26, 152, 80)),
)

# Label colours (RGB 0-255) in the order of cardiotwin.anatomy.Label.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (200, 40, 40),    # LV blood pool
    2: (230, 150, 120),  # LV myocardium
    3: (60, 90, 200),    # RV blood pool
    4: (150, 170, 230),  # RV myocardium
    5: (220, 100, 170),  # LA
    6: (110, 80, 200),   # RA
    7: (230, 60, 60),    # aorta
    8: (70, 140, 230),   # pulmonary artery
    9: (250, 240, 90),   # scar
}

# 17 distinguishable colours for the AHA segments (index 0 = not LV: grey).
AHA_COLOURS: tuple[tuple[int, int, int], ...] = (
    (150, 150, 150),
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
)


def apply_stops(values: np.ndarray, stops: tuple[tuple[float, tuple[int, int, int]], ...],
                *, vmin: float, vmax: float) -> np.ndarray:
    """Map values (N,) linearly onto the colour stops; returns (N, 3) uint8 RGB.

    Values are clipped to [vmin, vmax]; NaN maps to mid grey.
    """
    v = np.asarray(values, dtype=float)
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((v - vmin) / span, 0.0, 1.0)
    xs = np.array([s[0] for s in stops])
    rgb = np.stack([np.interp(t, xs, [s[1][c] for s in stops]) for c in range(3)], axis=-1)
    rgb[~np.isfinite(v)] = 128.0
    return np.rint(rgb).astype(np.uint8)


def stops_for_js(stops: tuple[tuple[float, tuple[int, int, int]], ...]) -> list[list[float]]:
    """[[t, r, g, b], ...] with r, g, b in 0-1, as the browser code expects."""
    return [[t, r / 255.0, g / 255.0, b / 255.0] for t, (r, g, b) in stops]
