"""ten Tusscher & Panfilov 2006 human ventricular myocyte (Am J Physiol 291:H1088), as plain
functions over a (19, n) state tensor.

Units: V in mV, time in ms, concentrations in mM, currents in pA/pF (= mV/ms for dV/dt).
Gates (m, h, j, Xr1, Xr2, Xs, r, s, d, f, f2, fCass) and the RyR variable R' advance with
Rush-Larsen (exact exponential for a frozen V); V and the concentrations with forward Euler.
The initial state is the Niederer et al. 2011 benchmark state (shared/BENCHMARKS.md), the
epicardial steady state at 1 Hz. Cell types differ in g_to, g_Ks and the s-gate kinetics
(ten Tusscher 2006, Table 1 and appendix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from cardiotwin.electrophysiology.ionic.lookup import LookupTable, tabulate

STATE_NAMES: tuple[str, ...] = (
    "V", "Xr1", "Xr2", "Xs", "m", "h", "j", "d", "f", "f2", "fCass", "s", "r",
    "Ca_i", "R_prime", "Ca_SR", "Ca_ss", "Na_i", "K_i",
)
# Niederer 2011 benchmark initial state (epicardial cell), same order as STATE_NAMES.
NIEDERER_INITIAL: tuple[float, ...] = (
    -85.23, 0.00621, 0.4712, 0.0095, 0.00172, 0.7444, 0.7045, 3.373e-5, 0.7888, 0.9755, 0.9953,
    0.999998, 2.42e-8, 0.000126, 0.9073, 3.64, 0.00036, 8.604, 136.89,
)
CellType = Literal["endo", "mid", "epi"]
V_INDEX = 0


@dataclass(frozen=True)
class TTP06Params:
    """Model constants (ten Tusscher 2006 units: mV, ms, mM, pA/pF, nS/pF, uF, um^3 scaled)."""

    cell_type: CellType = "epi"
    K_o: float = 5.4
    Na_o: float = 140.0
    Ca_o: float = 2.0
    g_Na: float = 14.838
    g_K1: float = 5.405
    g_Kr: float = 0.153
    g_Ks: float = 0.392
    p_KNa: float = 0.03
    g_to: float = 0.294
    g_CaL: float = 3.98e-5
    g_bNa: float = 0.00029
    g_bCa: float = 0.000592
    g_pCa: float = 0.1238
    K_pCa: float = 0.0005
    g_pK: float = 0.0146
    P_NaK: float = 2.724
    K_mK: float = 1.0
    K_mNa: float = 40.0
    K_NaCa: float = 1000.0
    gamma: float = 0.35
    alpha: float = 2.5
    Km_Ca: float = 1.38
    Km_Nai: float = 87.5
    K_sat: float = 0.1
    Buf_c: float = 0.2
    K_buf_c: float = 0.001
    Buf_sr: float = 10.0
    K_buf_sr: float = 0.3
    Buf_ss: float = 0.4
    K_buf_ss: float = 0.00025
    V_rel: float = 0.102
    V_xfer: float = 0.0038
    V_leak: float = 0.00036
    Vmax_up: float = 0.006375
    K_up: float = 0.00025
    k1_prime: float = 0.15
    k2_prime: float = 0.045
    k3: float = 0.06
    k4: float = 0.005
    EC: float = 1.5
    max_sr: float = 2.5
    min_sr: float = 1.0
    Cm: float = 0.185
    V_c: float = 0.016404
    V_sr: float = 0.001094
    V_ss: float = 0.00005468
    R: float = 8314.472
    T: float = 310.0
    F: float = 96485.3415


def params_for(cell_type: CellType = "epi") -> TTP06Params:
    """Parameters of an endo-, mid- or epicardial cell (g_to, g_Ks per ten Tusscher 2006)."""
    if cell_type == "epi":
        return TTP06Params(cell_type="epi", g_to=0.294, g_Ks=0.392)
    if cell_type == "mid":
        return TTP06Params(cell_type="mid", g_to=0.294, g_Ks=0.098)
    if cell_type == "endo":
        return TTP06Params(cell_type="endo", g_to=0.073, g_Ks=0.392)
    raise ValueError(f"unknown TTP06 cell type {cell_type!r}; use endo, mid or epi")


def initial_state(n: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    """(19, n) states set to the Niederer 2011 initial state (units as in STATE_NAMES docs)."""
    s0 = torch.tensor(NIEDERER_INITIAL, dtype=dtype, device=device)
    return s0[:, None].repeat(1, n).contiguous()


def _rl(g: torch.Tensor, g_inf: torch.Tensor, tau: torch.Tensor, dt: float) -> torch.Tensor:
    """Rush-Larsen: exact solution of dg/dt = (g_inf - g)/tau over dt with frozen coefficients."""
    return g_inf + (g - g_inf) * torch.exp(-dt / tau)


def gate_kinetics(V: torch.Tensor, p: TTP06Params) -> dict[str, torch.Tensor]:
    """Steady states ``<gate>_inf`` (-) and time constants ``tau_<gate>`` (ms) of the gates whose
    kinetics depend on V (mV) only: m, h, j, r, s, xr1, xr2, xs, d, f, f2 (each (n,) like V)."""
    lo = V < -40.0
    m_inf = 1.0 / (1.0 + torch.exp((-56.86 - V) / 9.03)) ** 2
    tau_m = (1.0 / (1.0 + torch.exp((-60.0 - V) / 5.0))) * (
        0.1 / (1.0 + torch.exp((V + 35.0) / 5.0)) + 0.1 / (1.0 + torch.exp((V - 50.0) / 200.0)))
    h_inf = 1.0 / (1.0 + torch.exp((V + 71.55) / 7.43)) ** 2
    a_h = torch.where(lo, 0.057 * torch.exp(-(V + 80.0) / 6.8), torch.zeros_like(V))
    b_h = torch.where(lo, 2.7 * torch.exp(0.079 * V) + 3.1e5 * torch.exp(0.3485 * V),
                      0.77 / (0.13 * (1.0 + torch.exp((V + 10.66) / -11.1))))
    tau_h = 1.0 / (a_h + b_h)
    a_j = torch.where(lo, (-2.5428e4 * torch.exp(0.2444 * V) - 6.948e-6 * torch.exp(-0.04391 * V)) * (V + 37.78)
                      / (1.0 + torch.exp(0.311 * (V + 79.23))), torch.zeros_like(V))
    b_j = torch.where(lo, 0.02424 * torch.exp(-0.01052 * V) / (1.0 + torch.exp(-0.1378 * (V + 40.14))),
                      0.6 * torch.exp(0.057 * V) / (1.0 + torch.exp(-0.1 * (V + 32.0))))
    tau_j = 1.0 / (a_j + b_j)

    # Transient outward current (s-gate kinetics depend on the cell type).
    r_inf = 1.0 / (1.0 + torch.exp((20.0 - V) / 6.0))
    tau_r = 9.5 * torch.exp(-((V + 40.0) ** 2) / 1800.0) + 0.8
    if p.cell_type == "endo":
        s_inf = 1.0 / (1.0 + torch.exp((V + 28.0) / 5.0))
        tau_s = 1000.0 * torch.exp(-((V + 67.0) ** 2) / 1000.0) + 8.0
    else:
        s_inf = 1.0 / (1.0 + torch.exp((V + 20.0) / 5.0))
        tau_s = 85.0 * torch.exp(-((V + 45.0) ** 2) / 320.0) + 5.0 / (1.0 + torch.exp((V - 20.0) / 5.0)) + 3.0

    # Rapid and slow delayed rectifiers.
    xr1_inf = 1.0 / (1.0 + torch.exp((-26.0 - V) / 7.0))
    tau_xr1 = (450.0 / (1.0 + torch.exp((-45.0 - V) / 10.0))) * (6.0 / (1.0 + torch.exp((V + 30.0) / 11.5)))
    xr2_inf = 1.0 / (1.0 + torch.exp((V + 88.0) / 24.0))
    tau_xr2 = (3.0 / (1.0 + torch.exp((-60.0 - V) / 20.0))) * (1.12 / (1.0 + torch.exp((V - 60.0) / 20.0)))
    xs_inf = 1.0 / (1.0 + torch.exp((-5.0 - V) / 14.0))
    tau_xs = (1400.0 / torch.sqrt(1.0 + torch.exp((5.0 - V) / 6.0))) * (1.0 / (1.0 + torch.exp((V - 35.0) / 15.0))) + 80.0

    # L-type calcium channel gates.
    d_inf = 1.0 / (1.0 + torch.exp((-8.0 - V) / 7.5))
    tau_d = (1.4 / (1.0 + torch.exp((-35.0 - V) / 13.0)) + 0.25) * (1.4 / (1.0 + torch.exp((V + 5.0) / 5.0))) \
        + 1.0 / (1.0 + torch.exp((50.0 - V) / 20.0))
    f_inf = 1.0 / (1.0 + torch.exp((V + 20.0) / 7.0))
    tau_f = 1102.5 * torch.exp(-((V + 27.0) ** 2) / 225.0) + 200.0 / (1.0 + torch.exp((13.0 - V) / 10.0)) \
        + 180.0 / (1.0 + torch.exp((V + 30.0) / 10.0)) + 20.0
    f2_inf = 0.67 / (1.0 + torch.exp((V + 35.0) / 7.0)) + 0.33
    tau_f2 = 562.0 * torch.exp(-((V + 27.0) ** 2) / 240.0) + 31.0 / (1.0 + torch.exp((25.0 - V) / 10.0)) \
        + 80.0 / (1.0 + torch.exp((V + 30.0) / 10.0))
    return dict(
        m_inf=m_inf, tau_m=tau_m, h_inf=h_inf, tau_h=tau_h, j_inf=h_inf, tau_j=tau_j,
        r_inf=r_inf, tau_r=tau_r, s_inf=s_inf, tau_s=tau_s, xr1_inf=xr1_inf, tau_xr1=tau_xr1,
        xr2_inf=xr2_inf, tau_xr2=tau_xr2, xs_inf=xs_inf, tau_xs=tau_xs, d_inf=d_inf, tau_d=tau_d,
        f_inf=f_inf, tau_f=tau_f, f2_inf=f2_inf, tau_f2=tau_f2,
    )


def currents_and_rates(s: torch.Tensor, p: TTP06Params) -> dict[str, torch.Tensor]:
    """All currents (pA/pF), steady states and time constants (ms) for the states ``s`` (19, n)."""
    (V, Xr1, Xr2, Xs, m, h, j, d, f, f2, fCass, s_g, r, Ca_i, Rp, Ca_SR, Ca_ss, Na_i, K_i) = s
    RTF = p.R * p.T / p.F
    E_Na = RTF * torch.log(p.Na_o / Na_i)
    E_K = RTF * torch.log(p.K_o / K_i)
    E_Ks = RTF * torch.log((p.K_o + p.p_KNa * p.Na_o) / (K_i + p.p_KNa * Na_i))
    E_Ca = 0.5 * RTF * torch.log(p.Ca_o / Ca_i)
    sqk = math.sqrt(p.K_o / 5.4)
    g = gate_kinetics(V, p)

    i_Na = p.g_Na * m**3 * h * j * (V - E_Na)
    i_to = p.g_to * r * s_g * (V - E_K)
    i_Kr = p.g_Kr * sqk * Xr1 * Xr2 * (V - E_K)
    i_Ks = p.g_Ks * Xs**2 * (V - E_Ks)

    # L-type calcium current (GHK form; V - 15 shift per the 2006 model).
    cass2 = (Ca_ss / 0.05) ** 2
    fcass_inf = 0.6 / (1.0 + cass2) + 0.4
    tau_fcass = 80.0 / (1.0 + cass2) + 2.0
    v15 = V - 15.0
    # (exp(2 v15 F/RTF) - 1) vanishes at V = 15 mV: use the limit there (removable singularity).
    z = 2.0 * v15 / RTF
    small = torch.abs(z) < 1e-6
    z_safe = torch.where(small, torch.full_like(z, 1e-6), z)
    ez = torch.exp(z_safe)
    ghk = torch.where(small, 2.0 * p.F * (0.25 * Ca_ss - p.Ca_o),
                      4.0 * v15 * p.F / RTF * (0.25 * Ca_ss * ez - p.Ca_o) / (ez - 1.0))
    i_CaL = p.g_CaL * d * f * f2 * fCass * ghk

    # Inward rectifier, exchangers, pumps and background currents.
    a_k1 = 0.1 / (1.0 + torch.exp(0.06 * (V - E_K - 200.0)))
    b_k1 = (3.0 * torch.exp(0.0002 * (V - E_K + 100.0)) + torch.exp(0.1 * (V - E_K - 10.0))) \
        / (1.0 + torch.exp(-0.5 * (V - E_K)))
    i_K1 = p.g_K1 * sqk * (a_k1 / (a_k1 + b_k1)) * (V - E_K)
    eg = torch.exp(p.gamma * V / RTF)
    eg1 = torch.exp((p.gamma - 1.0) * V / RTF)
    i_NaCa = p.K_NaCa * (eg * Na_i**3 * p.Ca_o - eg1 * p.Na_o**3 * Ca_i * p.alpha) / (
        (p.Km_Nai**3 + p.Na_o**3) * (p.Km_Ca + p.Ca_o) * (1.0 + p.K_sat * eg1))
    i_NaK = p.P_NaK * p.K_o * Na_i / ((p.K_o + p.K_mK) * (Na_i + p.K_mNa)
                                      * (1.0 + 0.1245 * torch.exp(-0.1 * V / RTF) + 0.0353 * torch.exp(-V / RTF)))
    i_pCa = p.g_pCa * Ca_i / (Ca_i + p.K_pCa)
    i_pK = p.g_pK * (V - E_K) / (1.0 + torch.exp((25.0 - V) / 5.98))
    i_bNa = p.g_bNa * (V - E_Na)
    i_bCa = p.g_bCa * (V - E_Ca)

    return dict(
        i_Na=i_Na, i_to=i_to, i_Kr=i_Kr, i_Ks=i_Ks, i_CaL=i_CaL, i_K1=i_K1, i_NaCa=i_NaCa, i_NaK=i_NaK,
        i_pCa=i_pCa, i_pK=i_pK, i_bNa=i_bNa, i_bCa=i_bCa, fcass_inf=fcass_inf, tau_fcass=tau_fcass, **g,
    )


def concentration_rates(s: torch.Tensor, c: dict[str, torch.Tensor], i_stim: torch.Tensor | float,
                        p: TTP06Params) -> dict[str, torch.Tensor]:
    """d/dt (mM/ms) of Ca_i, Ca_SR, Ca_ss, Na_i, K_i and the R' rate (1/ms) from the states ``s``
    (19, n), the currents ``c`` (pA/pF, keys as ``currents_and_rates``) and the stimulus (pA/pF)."""
    Ca_i, Rp, Ca_SR, Ca_ss = s[13], s[14], s[15], s[16]
    # Calcium handling (four-state RyR reduced to R' and the open probability O).
    kcasr = p.max_sr - (p.max_sr - p.min_sr) / (1.0 + (p.EC / Ca_SR) ** 2)
    k1 = p.k1_prime / kcasr
    k2 = p.k2_prime * kcasr
    O = k1 * Ca_ss**2 * Rp / (p.k3 + k1 * Ca_ss**2)
    i_rel = p.V_rel * O * (Ca_SR - Ca_ss)
    i_up = p.Vmax_up / (1.0 + p.K_up**2 / Ca_i**2)
    i_leak = p.V_leak * (Ca_SR - Ca_i)
    i_xfer = p.V_xfer * (Ca_ss - Ca_i)
    bufc = 1.0 / (1.0 + p.Buf_c * p.K_buf_c / (Ca_i + p.K_buf_c) ** 2)
    bufsr = 1.0 / (1.0 + p.Buf_sr * p.K_buf_sr / (Ca_SR + p.K_buf_sr) ** 2)
    bufss = 1.0 / (1.0 + p.Buf_ss * p.K_buf_ss / (Ca_ss + p.K_buf_ss) ** 2)
    dCa_i = bufc * ((i_leak - i_up) * p.V_sr / p.V_c + i_xfer
                    - (c["i_bCa"] + c["i_pCa"] - 2.0 * c["i_NaCa"]) * p.Cm / (2.0 * p.V_c * p.F))
    dCa_SR = bufsr * (i_up - (i_rel + i_leak))
    dCa_ss = bufss * (-c["i_CaL"] * p.Cm / (2.0 * p.V_ss * p.F) + i_rel * p.V_sr / p.V_ss - i_xfer * p.V_c / p.V_ss)
    dNa_i = -(c["i_Na"] + c["i_bNa"] + 3.0 * c["i_NaK"] + 3.0 * c["i_NaCa"]) * p.Cm / (p.V_c * p.F)
    dK_i = -(c["i_K1"] + c["i_to"] + c["i_Kr"] + c["i_Ks"] + c["i_pK"] - 2.0 * c["i_NaK"] + i_stim) * p.Cm / (p.V_c * p.F)
    return dict(Ca_i=dCa_i, Ca_SR=dCa_SR, Ca_ss=dCa_ss, Na_i=dNa_i, K_i=dK_i, rp_rate=k2 * Ca_ss + p.k4)


def step(s: torch.Tensor, dt_ms: float, *, stim_mv_per_ms: torch.Tensor | float = 0.0,
         params: TTP06Params = TTP06Params()) -> torch.Tensor:
    """Advance the (19, n) states by ``dt_ms`` in place and return them.

    stim_mv_per_ms: stimulus (n,) or scalar, added to dV/dt (positive depolarises). As in the
    CellML model the stimulus current is also carried by K_i (charge conservation).
    """
    p = params
    c = currents_and_rates(s, p)
    (V, Xr1, Xr2, Xs, m, h, j, d, f, f2, fCass, s_g, r, Ca_i, Rp, Ca_SR, Ca_ss, Na_i, K_i) = s
    i_ion = (c["i_Na"] + c["i_to"] + c["i_Kr"] + c["i_Ks"] + c["i_CaL"] + c["i_K1"] + c["i_NaCa"]
             + c["i_NaK"] + c["i_pCa"] + c["i_pK"] + c["i_bNa"] + c["i_bCa"])
    i_stim = -stim_mv_per_ms  # outward-positive convention of the model

    rates = concentration_rates(s, c, i_stim, p)
    dCa_i, dCa_SR, dCa_ss, dNa_i, dK_i = (rates[k] for k in ("Ca_i", "Ca_SR", "Ca_ss", "Na_i", "K_i"))
    rp_rate = rates["rp_rate"]

    new_gates = (
        (1, _rl(Xr1, c["xr1_inf"], c["tau_xr1"], dt_ms)), (2, _rl(Xr2, c["xr2_inf"], c["tau_xr2"], dt_ms)),
        (3, _rl(Xs, c["xs_inf"], c["tau_xs"], dt_ms)), (4, _rl(m, c["m_inf"], c["tau_m"], dt_ms)),
        (5, _rl(h, c["h_inf"], c["tau_h"], dt_ms)), (6, _rl(j, c["j_inf"], c["tau_j"], dt_ms)),
        (7, _rl(d, c["d_inf"], c["tau_d"], dt_ms)), (8, _rl(f, c["f_inf"], c["tau_f"], dt_ms)),
        (9, _rl(f2, c["f2_inf"], c["tau_f2"], dt_ms)), (10, _rl(fCass, c["fcass_inf"], c["tau_fcass"], dt_ms)),
        (11, _rl(s_g, c["s_inf"], c["tau_s"], dt_ms)), (12, _rl(r, c["r_inf"], c["tau_r"], dt_ms)),
        (14, _rl(Rp, p.k4 / rp_rate, 1.0 / rp_rate, dt_ms)),
    )
    new_v = V + dt_ms * (-(i_ion + i_stim))
    new_conc = ((13, Ca_i + dt_ms * dCa_i), (15, Ca_SR + dt_ms * dCa_SR), (16, Ca_ss + dt_ms * dCa_ss),
                (17, Na_i + dt_ms * dNa_i), (18, K_i + dt_ms * dK_i))
    s[0] = new_v
    for k, val in new_gates + new_conc:
        s[k] = val
    return s


def with_cell_type(params: TTP06Params, cell_type: CellType) -> TTP06Params:
    """``params`` with the cell-type-specific g_to, g_Ks and s-gate kinetics of ``cell_type``."""
    ref = params_for(cell_type)
    return replace(params, cell_type=cell_type, g_to=ref.g_to, g_Ks=ref.g_Ks)


# --- Lookup-table path (openCARP / CARP style) ----------------------------------------------
# Gates whose kinetics depend on V only, with their row in the state tensor.
TABLE_GATES: tuple[tuple[str, int], ...] = (
    ("xr1", 1), ("xr2", 2), ("xs", 3), ("m", 4), ("h", 5), ("j", 6), ("d", 7), ("f", 8), ("f2", 9),
    ("s", 11), ("r", 12),
)
# Default grids: V in mV (clamped outside; an AP stays inside), and V - E_K in mV for I_K1.
TABLE_V_RANGE_MV: tuple[float, float] = (-120.0, 80.0)
TABLE_VEK_RANGE_MV: tuple[float, float] = (-120.0, 200.0)


@dataclass(frozen=True, eq=False)
class TTP06Tables:
    """Lookup tables of one TTP06 cell type for one reaction step ``dt_ms``.

    voltage: columns over V (mV): ``a_<gate>`` = g_inf (1 - exp(-dt/tau)) and ``e_<gate>`` =
    exp(-dt/tau) for the Rush-Larsen update g+ = a + e g of each gate in TABLE_GATES; ``naca_na``
    (pA/pF/mM^3), ``naca_ca`` (pA/pF/mM) with I_NaCa = naca_na Na_i^3 - naca_ca Ca_i; ``nak`` (pA/pF)
    with I_NaK = nak Na_i / (Na_i + K_mNa); ``pk`` (nS/pF) with I_pK = pk (V - E_K); ``cal_ss``,
    ``cal_o`` (pA/pF/mM) with I_CaL = d f f2 fCass (cal_ss Ca_ss - cal_o).
    vek: one column ``k1`` (nS/pF) over V - E_K (mV), I_K1 = k1 (V - E_K).
    """

    dt_ms: float
    cell_type: CellType
    voltage: LookupTable
    vek: LookupTable


def _voltage_columns(V: torch.Tensor, dt_ms: float, p: TTP06Params) -> dict[str, torch.Tensor]:
    """Table columns over the float64 V grid (see TTP06Tables); same formulas as the exact path."""
    g = gate_kinetics(V, p)
    cols: dict[str, torch.Tensor] = {}
    for name, _row in TABLE_GATES:
        e = torch.exp(-dt_ms / g[f"tau_{name}"])
        cols[f"a_{name}"] = g[f"{name}_inf"] * (1.0 - e)
        cols[f"e_{name}"] = e
    RTF = p.R * p.T / p.F
    eg = torch.exp(p.gamma * V / RTF)
    eg1 = torch.exp((p.gamma - 1.0) * V / RTF)
    den = (p.Km_Nai**3 + p.Na_o**3) * (p.Km_Ca + p.Ca_o) * (1.0 + p.K_sat * eg1)
    cols["naca_na"] = p.K_NaCa * eg * p.Ca_o / den
    cols["naca_ca"] = p.K_NaCa * eg1 * p.Na_o**3 * p.alpha / den
    cols["nak"] = p.P_NaK * p.K_o / ((p.K_o + p.K_mK) * (1.0 + 0.1245 * torch.exp(-0.1 * V / RTF)
                                                         + 0.0353 * torch.exp(-V / RTF)))
    cols["pk"] = p.g_pK / (1.0 + torch.exp((25.0 - V) / 5.98))
    # GHK: 4 (V-15) F/RTF (0.25 Ca_ss e^z - Ca_o)/(e^z - 1) = 2F q (0.25 Ca_ss e^z - Ca_o) with
    # z = 2 (V-15)/RTF and q = z/(e^z - 1) -> 1 at z = 0 (the removable singularity at V = 15 mV).
    z = 2.0 * (V - 15.0) / RTF
    q = torch.where(z == 0.0, torch.ones_like(z), z / torch.expm1(torch.where(z == 0.0, torch.ones_like(z), z)))
    cols["cal_ss"] = p.g_CaL * 2.0 * p.F * q * 0.25 * torch.exp(z)
    cols["cal_o"] = p.g_CaL * 2.0 * p.F * q * p.Ca_o
    return cols


def _k1_column(u: torch.Tensor, p: TTP06Params) -> dict[str, torch.Tensor]:
    """I_K1 conductance (nS/pF) over u = V - E_K (mV), rectification as in ``currents_and_rates``."""
    a_k1 = 0.1 / (1.0 + torch.exp(0.06 * (u - 200.0)))
    b_k1 = (3.0 * torch.exp(0.0002 * (u + 100.0)) + torch.exp(0.1 * (u - 10.0))) / (1.0 + torch.exp(-0.5 * u))
    return {"k1": p.g_K1 * math.sqrt(p.K_o / 5.4) * a_k1 / (a_k1 + b_k1)}


def build_tables(dt_ms: float, params: TTP06Params = TTP06Params(), *, dv_mv: float = 0.02,
                 v_range_mv: tuple[float, float] = TABLE_V_RANGE_MV, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> TTP06Tables:
    """Tabulate every V-only quantity of ``params`` for the reaction step ``dt_ms`` on a grid of
    ``dv_mv`` (mV) over ``v_range_mv`` (computed in float64, stored in ``dtype``)."""
    if dt_ms <= 0:
        raise ValueError(f"dt_ms must be positive, got {dt_ms}")
    voltage = tabulate(lambda v: _voltage_columns(v, dt_ms, params), x_min=v_range_mv[0], x_max=v_range_mv[1],
                       dx=dv_mv, dtype=dtype, device=device)
    vek = tabulate(lambda u: _k1_column(u, params), x_min=TABLE_VEK_RANGE_MV[0], x_max=TABLE_VEK_RANGE_MV[1],
                   dx=dv_mv, dtype=dtype, device=device)
    return TTP06Tables(dt_ms=float(dt_ms), cell_type=params.cell_type, voltage=voltage, vek=vek)


def _concentration_rates_lean(s: torch.Tensor, c: dict[str, torch.Tensor], i_stim: torch.Tensor | float,
                              p: TTP06Params) -> dict[str, torch.Tensor]:
    """``concentration_rates`` rearranged algebraically with in-place ops (about half the
    temporaries: out-of-place ops on large tensors cost 2-3x an in-place one on the CPU)."""
    Ca_i, Rp, Ca_SR, Ca_ss = s[13], s[14], s[15], s[16]
    ca_sr2 = Ca_SR * Ca_SR
    # max_sr - (max_sr - min_sr) / (1 + (EC/Ca_SR)^2) = max_sr - (max_sr - min_sr) Ca_SR^2 / (Ca_SR^2 + EC^2)
    kcasr = (ca_sr2 + p.EC**2).reciprocal_().mul_(ca_sr2).mul_(-(p.max_sr - p.min_sr)).add_(p.max_sr)
    k1_cass2 = (Ca_ss * Ca_ss).div_(kcasr).mul_(p.k1_prime)  # k1 Ca_ss^2
    i_rel = (k1_cass2 * Rp).div_(k1_cass2.add_(p.k3)).mul_(Ca_SR - Ca_ss).mul_(p.V_rel)  # V_rel O (Ca_SR - Ca_ss)
    ca_i2 = Ca_i * Ca_i
    i_up = (ca_i2 + p.K_up**2).reciprocal_().mul_(ca_i2).mul_(p.Vmax_up)
    i_leak = (Ca_SR - Ca_i).mul_(p.V_leak)
    i_xfer = (Ca_ss - Ca_i).mul_(p.V_xfer)

    def buffer_factor(conc: torch.Tensor, total: float, k: float) -> torch.Tensor:
        sq = (conc + k).square_()  # 1 / (1 + total k / (conc + k)^2) = sq / (sq + total k)
        return sq.div_(sq + total * k)

    dCa_i = (i_leak - i_up).mul_(p.V_sr / p.V_c).add_(i_xfer).sub_(
        (c["i_bCa"] + c["i_pCa"]).sub_(c["i_NaCa"], alpha=2.0).mul_(p.Cm / (2.0 * p.V_c * p.F)))
    dCa_i.mul_(buffer_factor(Ca_i, p.Buf_c, p.K_buf_c))
    dCa_SR = (i_up - i_rel).sub_(i_leak).mul_(buffer_factor(Ca_SR, p.Buf_sr, p.K_buf_sr))
    dCa_ss = (i_rel * (p.V_sr / p.V_ss)).sub_(i_xfer, alpha=p.V_c / p.V_ss).sub_(
        c["i_CaL"], alpha=p.Cm / (2.0 * p.V_ss * p.F)).mul_(buffer_factor(Ca_ss, p.Buf_ss, p.K_buf_ss))
    dNa_i = (c["i_Na"] + c["i_bNa"]).add_(c["i_NaK"], alpha=3.0).add_(c["i_NaCa"], alpha=3.0).mul_(
        -p.Cm / (p.V_c * p.F))
    dK_i = (c["i_K1"] + c["i_to"]).add_(c["i_Kr"]).add_(c["i_Ks"]).add_(c["i_pK"]).sub_(
        c["i_NaK"], alpha=2.0).add_(i_stim).mul_(-p.Cm / (p.V_c * p.F))
    rp_rate = kcasr.mul_(Ca_ss).mul_(p.k2_prime).add_(p.k4)  # k2 Ca_ss + k4
    return dict(Ca_i=dCa_i, Ca_SR=dCa_SR, Ca_ss=dCa_ss, Na_i=dNa_i, K_i=dK_i, rp_rate=rp_rate)


def step_tabulated(s: torch.Tensor, dt_ms: float, *, tables: TTP06Tables,
                   stim_mv_per_ms: torch.Tensor | float = 0.0, params: TTP06Params = TTP06Params()) -> torch.Tensor:
    """``step`` with the V-only kinetics and current factors from ``tables`` (linear interpolation
    on the V grid, one locate per step): 4 log and 2 exp per node instead of about 45 exp.
    Updates the (19, n) states in place (gates with fused in-place Rush-Larsen) and returns them."""
    if not math.isclose(dt_ms, tables.dt_ms, rel_tol=1e-12) or tables.cell_type != params.cell_type:
        raise ValueError(f"TTP06 tables were built for dt {tables.dt_ms} ms / {tables.cell_type} cells, "
                         f"stepped with dt {dt_ms} ms / {params.cell_type}")
    p = params
    (V, Xr1, Xr2, Xs, m, h, j, d, f, f2, fCass, s_g, r, Ca_i, Rp, Ca_SR, Ca_ss, Na_i, K_i) = s
    tv = tables.voltage
    idx, w = tv.locate(V)

    def col(name: str) -> torch.Tensor:
        return tv.interpolate(tv.column(name), idx, w)

    RTF = p.R * p.T / p.F
    # V - E_X = V - RTF/z ln(X_o / X_i) = V + RTF/z ln(X_i) - RTF/z ln(X_o)
    v_ena = torch.log(Na_i).mul_(RTF).add_(V).sub_(RTF * math.log(p.Na_o))
    v_ek = torch.log(K_i).mul_(RTF).add_(V).sub_(RTF * math.log(p.K_o))
    v_eks = torch.add(K_i, Na_i, alpha=p.p_KNa).log_().mul_(RTF).add_(V).sub_(
        RTF * math.log(p.K_o + p.p_KNa * p.Na_o))
    v_eca = torch.log(Ca_i).mul_(0.5 * RTF).add_(V).sub_(0.5 * RTF * math.log(p.Ca_o))
    iu, wu = tables.vek.locate(v_ek)
    c = {
        "i_Na": (m * m * m).mul_(h).mul_(j).mul_(v_ena).mul_(p.g_Na),
        "i_to": (r * s_g).mul_(v_ek).mul_(p.g_to),
        "i_Kr": (Xr1 * Xr2).mul_(v_ek).mul_(p.g_Kr * math.sqrt(p.K_o / 5.4)),
        "i_Ks": (Xs * Xs).mul_(v_eks).mul_(p.g_Ks),
        "i_CaL": (d * f).mul_(f2).mul_(fCass).mul_(col("cal_ss").mul_(Ca_ss).sub_(col("cal_o"))),
        "i_K1": tables.vek.interpolate(0, iu, wu).mul_(v_ek),
        "i_NaCa": col("naca_na").mul_(Na_i * Na_i * Na_i).sub_(col("naca_ca").mul_(Ca_i)),
        "i_NaK": col("nak").mul_(Na_i).div_(Na_i + p.K_mNa),
        "i_pCa": (Ca_i * p.g_pCa).div_(Ca_i + p.K_pCa),
        "i_pK": col("pk").mul_(v_ek),
        "i_bNa": v_ena.mul_(p.g_bNa),  # v_ena is not used after this point
        "i_bCa": v_eca.mul_(p.g_bCa),
    }
    i_ion = c["i_Na"] + c["i_to"]
    for name in ("i_Kr", "i_Ks", "i_CaL", "i_K1", "i_NaCa", "i_NaK", "i_pCa", "i_pK", "i_bNa", "i_bCa"):
        i_ion.add_(c[name])
    i_stim = -stim_mv_per_ms  # outward-positive convention of the model
    rates = _concentration_rates_lean(s, c, i_stim, p)
    x = (Ca_ss * (1.0 / 0.05)).square_().add_(1.0).reciprocal_()  # 1 / (1 + (Ca_ss/0.05)^2)
    fcass_inf = (x * 0.6).add_(0.4)
    e_fcass = x.mul_(80.0).add_(2.0).reciprocal_().mul_(-dt_ms).exp_()  # exp(-dt / tau_fCass)
    rp_rate = rates["rp_rate"]
    rp_inf = rp_rate.reciprocal().mul_(p.k4)
    e_rp = rp_rate.mul_(-dt_ms).exp_()

    # All rates are computed from the old states: now update in place.
    buf, scratch = torch.empty_like(V), torch.empty_like(V)  # reused: no temporaries per gate
    for name, row in TABLE_GATES:  # Rush-Larsen g+ = g_inf + (g - g_inf) e = a + e g
        s[row].mul_(tv.interpolate(tv.column(f"e_{name}"), idx, w, out=buf, scratch=scratch)).add_(
            tv.interpolate(tv.column(f"a_{name}"), idx, w, out=buf, scratch=scratch))
    fCass.sub_(fcass_inf).mul_(e_fcass).add_(fcass_inf)
    Rp.sub_(rp_inf).mul_(e_rp).add_(rp_inf)
    V.sub_(i_ion.add_(i_stim), alpha=dt_ms)
    for name, conc in (("Ca_i", Ca_i), ("Ca_SR", Ca_SR), ("Ca_ss", Ca_ss), ("Na_i", Na_i), ("K_i", K_i)):
        conc.add_(rates[name], alpha=dt_ms)
    return s
