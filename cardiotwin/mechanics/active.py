"""Active tension T_a(x, t) from local activation times through an analytic twitch.

The twitch of a point activated at ``t_act`` is, with ``s = t - t_act`` (ms),

    T_a = T_peak * phi(s) / max(phi),  phi(s) = tanh(s / tau_rise)^2 * tanh((T_dur - s) / tau_decay)^2

for ``0 <= s <= T_dur`` and 0 otherwise: a smooth rise from zero at activation, a peak about
``tau_rise``-``2 tau_rise`` later and a return to zero at ``T_dur`` (the twitch duration, i.e.
the mechanical systole of one myocyte). Defaults give a peak ~130 ms after activation and a
400 ms twitch, typical of human ventricular myocardium at 60-75 bpm; ``T_peak`` is the peak
second Piola-Kirchhoff fibre stress (kPa), the quantity Land et al. 2015 prescribe.

Default ``T_peak`` 90 kPa: on the sample CT twin (Guccione C 2 kPa, fixed base, sinus-like
activation, default Windkessel) 60 kPa gave LV EF 30 % and a peak LV pressure of 105 mmHg,
90 kPa EF 54 % and 138 mmHg, 120 kPa EF 63 % and 161 mmHg; healthy adults have EF 55-70 % and
systolic pressures of 100-140 mmHg. It lies inside the 60-150 kPa of human electromechanics
models (e.g. T_ref 120 kPa in Land et al., J Physiol 595:2017, 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cardiotwin.config import quantity


@dataclass(frozen=True)
class TwitchConfig:
    """Parameters of the analytic twitch (times ms, tension kPa)."""

    peak_tension: float = quantity(90.0, "kPa")
    rise_time: float = quantity(80.0, "ms")
    decay_time: float = quantity(90.0, "ms")
    duration: float = quantity(400.0, "ms")

    def validate(self) -> None:
        if self.peak_tension < 0:
            raise ValueError(f"peak_tension must be >= 0, got {self.peak_tension}")
        for name in ("rise_time", "decay_time", "duration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def _shape(self, s_ms: np.ndarray) -> np.ndarray:
        s = np.asarray(s_ms, dtype=float)
        inside = (s >= 0) & (s <= self.duration)
        sc = np.clip(s, 0.0, self.duration)
        phi = np.tanh(sc / self.rise_time) ** 2 * np.tanh((self.duration - sc) / self.decay_time) ** 2
        return np.where(inside, phi, 0.0)

    def peak_fraction(self) -> float:
        """max over s of the unnormalised twitch shape (for normalisation)."""
        grid = np.linspace(0.0, self.duration, 4001)
        return float(self._shape(grid).max())

    def tension_kpa(self, t_ms: float, activation_times_ms: np.ndarray) -> np.ndarray:
        """T_a (kPa) at time t for points activated at ``activation_times_ms`` (any shape).

        Points never activated (NaN or inf activation time) carry no tension.
        """
        act = np.asarray(activation_times_ms, dtype=float)
        s = np.where(np.isfinite(act), t_ms - np.nan_to_num(act, nan=np.inf, posinf=np.inf), -1.0)
        return self.peak_tension * self._shape(s) / self.peak_fraction()

    def time_to_peak_ms(self) -> float:
        grid = np.linspace(0.0, self.duration, 4001)
        return float(grid[np.argmax(self._shape(grid))])
