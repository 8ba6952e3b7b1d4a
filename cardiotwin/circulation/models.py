"""Ready-made 0D circulation models built on ``network.Network``.

- ``windkessel_network``: one ventricle between a filling reservoir (atrium at constant
  pressure, inflow valve) and a 3-element Windkessel (characteristic resistance lumped with
  the outflow valve, compliance, peripheral resistance to a venous reservoir).
- ``closed_loop_network``: systemic and pulmonary circulations in series, four chambers as
  time-varying elastances; no reservoirs, so the total blood volume is conserved.

Default values follow the closed-loop model of Regazzoni et al. (J Comput Phys 457:111083,
2022, Table 2) converted to kPa, mL and ms, with the inertances dropped and the systemic
venous compliance reduced so that a periodic state is reached within a few tens of beats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cardiotwin.circulation.network import Activation, Compartment, Connection, Network
from cardiotwin.config import quantity

MMHG = 0.133322387415  # kPa
MMHG_S_PER_ML = MMHG * 1000.0  # kPa*ms/mL
ML_PER_MMHG = 1.0 / MMHG  # mL/kPa


@dataclass(frozen=True)
class WindkesselConfig:
    """3-element Windkessel with valves for one ventricle (defaults: systemic, LV)."""

    filling_pressure: float = quantity(1.0, "kPa", doc="atrial (filling) pressure")
    venous_pressure: float = quantity(0.67, "kPa", doc="pressure downstream of the peripheral resistance")
    inflow_valve_resistance: float = quantity(0.005 * MMHG_S_PER_ML, "kPa*ms/mL")
    outflow_valve_resistance: float = quantity(0.0075 * MMHG_S_PER_ML, "kPa*ms/mL")
    characteristic_resistance: float = quantity(0.03 * MMHG_S_PER_ML, "kPa*ms/mL")
    peripheral_resistance: float = quantity(0.9 * MMHG_S_PER_ML, "kPa*ms/mL")
    compliance: float = quantity(1.3 * ML_PER_MMHG, "mL/kPa")
    initial_arterial_pressure: float = quantity(80 * MMHG, "kPa")

    def validate(self) -> None:
        for name in ("inflow_valve_resistance", "outflow_valve_resistance", "characteristic_resistance",
                     "peripheral_resistance", "compliance"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# Pulmonary defaults for the RV.
RV_WINDKESSEL = WindkesselConfig(
    filling_pressure=0.5, venous_pressure=1.07, characteristic_resistance=0.01 * MMHG_S_PER_ML,
    peripheral_resistance=0.1 * MMHG_S_PER_ML, compliance=4.0 * ML_PER_MMHG,
    initial_arterial_pressure=15 * MMHG,
)


def windkessel_network(
    cfg: WindkesselConfig, *, chamber: str = "LV", ventricle: Compartment | None = None
) -> tuple[Network, dict[str, float]]:
    """Network ``ATR -> chamber -> ART -> VEN`` and initial volumes (mL) of its compartments.

    ``ventricle`` defaults to a coupled compartment (pressure from the 3D model).
    """
    cfg.validate()
    vent = ventricle or Compartment(chamber, "coupled")
    if vent.name != chamber:
        raise ValueError("ventricle compartment must be named like the chamber")
    atr, art, ven = f"{chamber}_ATR", f"{chamber}_ART", f"{chamber}_VEN"
    comps = (
        Compartment(atr, "fixed", fixed_pressure_kpa=cfg.filling_pressure),
        vent,
        Compartment(art, "capacitor", compliance_ml_per_kpa=cfg.compliance),
        Compartment(ven, "fixed", fixed_pressure_kpa=cfg.venous_pressure),
    )
    conns = (
        Connection(f"{chamber}_inflow_valve", atr, chamber, cfg.inflow_valve_resistance, valve=True),
        Connection(f"{chamber}_outflow_valve", chamber, art,
                   cfg.outflow_valve_resistance + cfg.characteristic_resistance, valve=True),
        Connection(f"{chamber}_peripheral", art, ven, cfg.peripheral_resistance),
    )
    initial = {atr: 0.0, art: cfg.initial_arterial_pressure * cfg.compliance, ven: 0.0}
    return Network(comps, conns), initial


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Closed-loop circulation (Regazzoni et al. 2022, Table 2, RC version). Times in ms."""

    heart_rate: float = quantity(75.0, "bpm")
    # systemic / pulmonary arteries and veins
    r_sys_art: float = quantity(0.8 * MMHG_S_PER_ML, "kPa*ms/mL")
    c_sys_art: float = quantity(1.2 * ML_PER_MMHG, "mL/kPa")
    r_sys_ven: float = quantity(0.26 * MMHG_S_PER_ML, "kPa*ms/mL")
    c_sys_ven: float = quantity(20.0 * ML_PER_MMHG, "mL/kPa")
    r_pul_art: float = quantity(0.1625 * MMHG_S_PER_ML, "kPa*ms/mL")
    c_pul_art: float = quantity(10.0 * ML_PER_MMHG, "mL/kPa")
    r_pul_ven: float = quantity(0.1625 * MMHG_S_PER_ML, "kPa*ms/mL")
    c_pul_ven: float = quantity(16.0 * ML_PER_MMHG, "mL/kPa")
    r_valve_open: float = quantity(0.0075 * MMHG_S_PER_ML, "kPa*ms/mL")
    r_valve_closed: float = quantity(75006.2 * MMHG_S_PER_ML, "kPa*ms/mL")
    # chambers: active / passive elastance and unstressed volume
    lv_e_act: float = quantity(2.75 * MMHG, "kPa/mL")
    lv_e_pass: float = quantity(0.08 * MMHG, "kPa/mL")
    lv_v0: float = quantity(5.0, "mL")
    rv_e_act: float = quantity(0.55 * MMHG, "kPa/mL")
    rv_e_pass: float = quantity(0.05 * MMHG, "kPa/mL")
    rv_v0: float = quantity(10.0, "mL")
    la_e_act: float = quantity(0.07 * MMHG, "kPa/mL")
    la_e_pass: float = quantity(0.09 * MMHG, "kPa/mL")
    la_v0: float = quantity(4.0, "mL")
    ra_e_act: float = quantity(0.06 * MMHG, "kPa/mL")
    ra_e_pass: float = quantity(0.07 * MMHG, "kPa/mL")
    ra_v0: float = quantity(4.0, "mL")
    # activation timing (fractions of the period in Regazzoni's table, here in ms at 75 bpm)
    ventricle_contraction: float = quantity(272.0, "ms")
    ventricle_relaxation: float = quantity(120.0, "ms")
    atrium_onset: float = quantity(640.0, "ms")
    atrium_contraction: float = quantity(110.0, "ms")
    atrium_relaxation: float = quantity(100.0, "ms")
    # initial state
    initial_lv_volume: float = quantity(120.0, "mL")
    initial_rv_volume: float = quantity(120.0, "mL")
    initial_la_volume: float = quantity(65.0, "mL")
    initial_ra_volume: float = quantity(65.0, "mL")
    initial_p_sys_art: float = quantity(80 * MMHG, "kPa")
    initial_p_sys_ven: float = quantity(30 * MMHG, "kPa")
    initial_p_pul_art: float = quantity(35 * MMHG, "kPa")
    initial_p_pul_ven: float = quantity(24 * MMHG, "kPa")

    @property
    def period_ms(self) -> float:
        return 60000.0 / self.heart_rate

    def validate(self) -> None:
        for name, value in self.__dict__.items():
            if name.startswith(("r_", "c_", "heart_rate")) and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for ch in ("lv", "rv", "la", "ra"):
            ea, ep = getattr(self, f"{ch}_e_act"), getattr(self, f"{ch}_e_pass")
            if not (ea > 0 and ep > 0):
                raise ValueError(f"{ch} elastances must be > 0")
        if self.ventricle_contraction + self.ventricle_relaxation > self.period_ms:
            raise ValueError("ventricular contraction + relaxation exceed the heart period")


def closed_loop_network(cfg: ClosedLoopConfig) -> tuple[Network, dict[str, float]]:
    """Closed loop LA-LV-SA-SV-RA-RV-PA-PV and initial volumes (mL).

    Compartments LV and RV are elastances here; ``Network.with_coupled(("LV", "RV"))``
    hands their pressures to the 3D model.
    """
    cfg.validate()
    period = cfg.period_ms
    vent = Activation(0.0, cfg.ventricle_contraction, cfg.ventricle_relaxation, period)
    atr = Activation(cfg.atrium_onset, cfg.atrium_contraction, cfg.atrium_relaxation, period)

    def chamber(name: str, act: Activation) -> Compartment:
        p = name.lower()
        ea, ep = getattr(cfg, f"{p}_e_act"), getattr(cfg, f"{p}_e_pass")
        # Regazzoni: E(t) = E_B + E_A a(t), so the peak elastance is E_A + E_B
        return Compartment(name, "elastance", v0_ml=getattr(cfg, f"{p}_v0"), e_pass_kpa_per_ml=ep,
                           e_act_kpa_per_ml=ea + ep, activation=act)

    comps = (
        chamber("LA", atr), chamber("LV", vent),
        Compartment("SA", "capacitor", compliance_ml_per_kpa=cfg.c_sys_art),
        Compartment("SV", "capacitor", compliance_ml_per_kpa=cfg.c_sys_ven),
        chamber("RA", atr), chamber("RV", vent),
        Compartment("PA", "capacitor", compliance_ml_per_kpa=cfg.c_pul_art),
        Compartment("PV", "capacitor", compliance_ml_per_kpa=cfg.c_pul_ven),
    )
    ro, rc = cfg.r_valve_open, cfg.r_valve_closed
    conns = (
        Connection("mitral", "LA", "LV", ro, valve=True, r_closed=rc),
        Connection("aortic", "LV", "SA", ro, valve=True, r_closed=rc),
        Connection("systemic", "SA", "SV", cfg.r_sys_art),
        Connection("venous_return", "SV", "RA", cfg.r_sys_ven),
        Connection("tricuspid", "RA", "RV", ro, valve=True, r_closed=rc),
        Connection("pulmonary_valve", "RV", "PA", ro, valve=True, r_closed=rc),
        Connection("pulmonary", "PA", "PV", cfg.r_pul_art),
        Connection("pulmonary_venous", "PV", "LA", cfg.r_pul_ven),
    )
    initial = {
        "LA": cfg.initial_la_volume, "LV": cfg.initial_lv_volume,
        "SA": cfg.initial_p_sys_art * cfg.c_sys_art, "SV": cfg.initial_p_sys_ven * cfg.c_sys_ven,
        "RA": cfg.initial_ra_volume, "RV": cfg.initial_rv_volume,
        "PA": cfg.initial_p_pul_art * cfg.c_pul_art, "PV": cfg.initial_p_pul_ven * cfg.c_pul_ven,
    }
    return Network(comps, conns), initial


def initial_volumes(network: Network, initial: dict[str, float]) -> np.ndarray:
    """Volume vector (mL) in the network's compartment order; missing names start at 0."""
    return np.array([float(initial.get(n, 0.0)) for n in network.names])
