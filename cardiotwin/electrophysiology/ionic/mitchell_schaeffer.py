"""Mitchell & Schaeffer 2003 two-variable model (Bull Math Biol 65:767), in physical units.

States (2, n): V (mV) and the gate h (-). The model works on u = (V - V_rest)/(V_peak - V_rest):
du/dt = h u^2 (1 - u)/tau_in - u/tau_out + J_stim; dh/dt = (1 - h)/tau_open if u < u_gate else
-h/tau_close. Published approximations (Mitchell & Schaeffer 2003, eqs. 9-10):
APD_max ~= tau_close * ln(1 / (1 - 4 tau_in / tau_out))^(-1) ... written here as
``apd_max_ms(params)`` = tau_close * ln(tau_out / (4 tau_in)) for tau_in << tau_out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

STATE_NAMES: tuple[str, ...] = ("V", "h")
V_INDEX = 0


@dataclass(frozen=True)
class MSParams:
    """Time constants in ms; voltages in mV (rest and peak map u = 0 and u = 1)."""

    tau_in: float = 0.3
    tau_out: float = 6.0
    tau_open: float = 120.0
    tau_close: float = 150.0
    u_gate: float = 0.13
    v_rest_mv: float = -85.0
    v_peak_mv: float = 20.0


def apd_max_ms(params: MSParams = MSParams()) -> float:
    """Maximal APD (ms) of Mitchell & Schaeffer 2003, eq. (9): tau_close * ln(tau_out / (4 tau_in))."""
    return params.tau_close * math.log(params.tau_out / (4.0 * params.tau_in))


def initial_state(n: int, *, params: MSParams = MSParams(), dtype: torch.dtype = torch.float64,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """(2, n) resting state: V = v_rest, h = 1 (fully recovered)."""
    s = torch.empty(2, n, dtype=dtype, device=device)
    s[0] = params.v_rest_mv
    s[1] = 1.0
    return s


def step(s: torch.Tensor, dt_ms: float, *, stim_mv_per_ms: torch.Tensor | float = 0.0,
         params: MSParams = MSParams()) -> torch.Tensor:
    """Advance (2, n) states by ``dt_ms`` in place: forward Euler for V, exact exponential for h."""
    p = params
    span = p.v_peak_mv - p.v_rest_mv
    u = (s[0] - p.v_rest_mv) / span
    h = s[1]
    du = h * u * u * (1.0 - u) / p.tau_in - u / p.tau_out
    open_ = u < p.u_gate
    h_inf = torch.where(open_, torch.ones_like(h), torch.zeros_like(h))
    tau = torch.where(open_, torch.full_like(h, p.tau_open), torch.full_like(h, p.tau_close))
    s[1] = h_inf + (h - h_inf) * torch.exp(-dt_ms / tau)
    s[0] = s[0] + dt_ms * (du * span + stim_mv_per_ms)
    return s
