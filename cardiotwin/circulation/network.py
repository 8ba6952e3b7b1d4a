"""A lumped (0D) vascular network: compartments joined by resistors and valves.

Every 0D model of this package (3-element Windkessel, closed loop) is such a network, so one
time integrator serves them all. Each compartment has a volume ``V`` (mL) and a pressure
(kPa) given by one of

- ``capacitor``: ``p = (V - V0) / C`` (arteries, veins);
- ``elastance``: ``p = E(t) (V - V0)`` with ``E(t) = E_pass + (E_act - E_pass) * a(t)`` and
  ``a(t)`` a cosine activation in [0, 1] (atria; ventricles in 0D-only runs);
- ``fixed``: a reservoir at constant pressure (its volume accumulates the net inflow);
- ``coupled``: a cavity whose pressure is imposed from outside (the 3D ventricles).

Connections carry ``Q = (p_up - p_down) / R`` (mL/ms); a valve uses ``R_open`` when
``p_up > p_down`` and ``R_closed`` otherwise (an ideal diode when ``R_closed`` is huge).

Time stepping is backward Euler on the volumes, solved exactly for the piecewise-linear
system by an active-set loop on the valve states. Every flow leaves one compartment and
enters another with the same value, so the total volume is conserved to round-off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from cardiotwin.errors import StageError

log = logging.getLogger(__name__)

CompartmentKind = Literal["capacitor", "elastance", "fixed", "coupled"]


@dataclass(frozen=True)
class Activation:
    """Cosine chamber activation a(t) in [0, 1] (ms), repeating every ``period_ms``.

    Contraction starts at ``onset_ms``, rises as ``(1 - cos(pi s / T_c)) / 2`` over
    ``contraction_ms`` and falls as ``(1 + cos(pi s / T_r)) / 2`` over ``relaxation_ms``
    (the form used by Regazzoni et al., J Comput Phys 457:111083, 2022, eq. 1).
    """

    onset_ms: float
    contraction_ms: float
    relaxation_ms: float
    period_ms: float

    def __call__(self, t_ms: float) -> float:
        s = (t_ms - self.onset_ms) % self.period_ms
        if s < self.contraction_ms:
            return 0.5 * (1.0 - math.cos(math.pi * s / self.contraction_ms))
        s -= self.contraction_ms
        if s < self.relaxation_ms:
            return 0.5 * (1.0 + math.cos(math.pi * s / self.relaxation_ms))
        return 0.0


@dataclass(frozen=True)
class Compartment:
    """One compartment. Units: V0 mL, C mL/kPa, E kPa/mL, pressure kPa."""

    name: str
    kind: CompartmentKind
    v0_ml: float = 0.0
    compliance_ml_per_kpa: float = 1.0
    e_pass_kpa_per_ml: float = 0.0
    e_act_kpa_per_ml: float = 0.0
    activation: Activation | None = None
    fixed_pressure_kpa: float = 0.0

    def validate(self) -> None:
        if self.kind == "capacitor" and not self.compliance_ml_per_kpa > 0:
            raise ValueError(f"compartment {self.name}: compliance must be > 0")
        if self.kind == "elastance":
            if not (self.e_pass_kpa_per_ml > 0 and self.e_act_kpa_per_ml >= self.e_pass_kpa_per_ml):
                raise ValueError(f"compartment {self.name}: need 0 < E_pass <= E_act")
            if self.activation is None:
                raise ValueError(f"compartment {self.name}: an elastance needs an activation")

    def elastance(self, t_ms: float) -> float:
        """kPa/mL at time t (elastance compartments) or 1/C (capacitors)."""
        if self.kind == "capacitor":
            return 1.0 / self.compliance_ml_per_kpa
        if self.kind == "elastance":
            assert self.activation is not None
            return self.e_pass_kpa_per_ml + (self.e_act_kpa_per_ml - self.e_pass_kpa_per_ml) * self.activation(t_ms)
        raise ValueError(f"compartment {self.name} ({self.kind}) has no elastance")


@dataclass(frozen=True)
class Connection:
    """A resistor (``valve=False``) or a valve from ``upstream`` to ``downstream``.

    Resistances in kPa*ms/mL.
    """

    name: str
    upstream: str
    downstream: str
    r_open: float
    valve: bool = False
    r_closed: float = 1e6

    def validate(self) -> None:
        if not self.r_open > 0 or (self.valve and not self.r_closed > self.r_open):
            raise ValueError(f"connection {self.name}: need 0 < R_open < R_closed")


@dataclass(frozen=True)
class Network:
    """Compartments and connections; ``index`` maps names to positions."""

    compartments: tuple[Compartment, ...]
    connections: tuple[Connection, ...]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c.name: i for i, c in enumerate(self.compartments)})
        if len(self.index) != len(self.compartments):
            raise ValueError("compartment names must be unique")
        for c in self.compartments:
            c.validate()
        for k in self.connections:
            k.validate()
            if k.upstream not in self.index or k.downstream not in self.index:
                raise ValueError(f"connection {k.name}: unknown compartment")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.compartments)

    def with_coupled(self, names: tuple[str, ...]) -> "Network":
        """The same network with the named compartments' pressures imposed from outside."""
        comps = tuple(replace(c, kind="coupled") if c.name in names else c for c in self.compartments)
        return Network(comps, self.connections)

    def pressures(self, volumes_ml: np.ndarray, t_ms: float, coupled_kpa: dict[str, float] | None = None) -> np.ndarray:
        """Compartment pressures (kPa) for volumes (mL) at time t."""
        p = np.empty(len(self.compartments))
        for i, c in enumerate(self.compartments):
            if c.kind == "fixed":
                p[i] = c.fixed_pressure_kpa
            elif c.kind == "coupled":
                if coupled_kpa is None or c.name not in coupled_kpa:
                    raise ValueError(f"pressure of coupled compartment {c.name} not given")
                p[i] = coupled_kpa[c.name]
            else:
                p[i] = c.elastance(t_ms) * (volumes_ml[i] - c.v0_ml)
        return p

    def flows(self, pressures_kpa: np.ndarray) -> np.ndarray:
        """Flow through each connection (mL/ms), positive upstream -> downstream."""
        q = np.empty(len(self.connections))
        for j, k in enumerate(self.connections):
            dp = pressures_kpa[self.index[k.upstream]] - pressures_kpa[self.index[k.downstream]]
            r = k.r_open if (not k.valve or dp > 0) else k.r_closed
            q[j] = dp / r
        return q

    def volume_rates(self, flows_ml_per_ms: np.ndarray) -> np.ndarray:
        """dV/dt of each compartment (mL/ms) from connection flows."""
        rate = np.zeros(len(self.compartments))
        for j, k in enumerate(self.connections):
            rate[self.index[k.upstream]] -= flows_ml_per_ms[j]
            rate[self.index[k.downstream]] += flows_ml_per_ms[j]
        return rate

    def step(
        self,
        volumes_ml: np.ndarray,
        t_new_ms: float,
        dt_ms: float,
        coupled_kpa: dict[str, float] | None = None,
        *,
        max_active_set_iterations: int = 50,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One backward-Euler step to ``t_new_ms``.

        Returns (volumes (mL), pressures (kPa), flows (mL/ms)) at the new time. Coupled
        compartments take the given pressures at the new time; their volumes change by the
        net inflow (so a caller can compare them with the 3D cavity volumes).
        """
        n = len(self.compartments)
        # p_i = a_i V_i + b_i  (a = 0 for fixed/coupled compartments)
        a = np.zeros(n)
        b = np.zeros(n)
        for i, c in enumerate(self.compartments):
            if c.kind in ("capacitor", "elastance"):
                a[i] = c.elastance(t_new_ms)
                b[i] = -a[i] * c.v0_ml
            elif c.kind == "fixed":
                b[i] = c.fixed_pressure_kpa
            else:
                if coupled_kpa is None or c.name not in coupled_kpa:
                    raise ValueError(f"pressure of coupled compartment {c.name} not given")
                b[i] = coupled_kpa[c.name]
        # valve states: start from the explicit pressures
        open_ = np.array([True] * len(self.connections))
        p_old = self.pressures(volumes_ml, t_new_ms, coupled_kpa)
        for j, k in enumerate(self.connections):
            if k.valve:
                open_[j] = p_old[self.index[k.upstream]] > p_old[self.index[k.downstream]]
        up = np.array([self.index[k.upstream] for k in self.connections])
        down = np.array([self.index[k.downstream] for k in self.connections])
        seen: set[bytes] = set()
        for _ in range(max_active_set_iterations):
            g = np.array([1.0 / (k.r_open if o else k.r_closed) for k, o in zip(self.connections, open_)])
            # V_new - V_old - dt * (sum_in Q - sum_out Q) = 0, Q_j = g_j (p_up - p_down)
            mat = np.eye(n)
            rhs = volumes_ml.astype(float).copy()
            for j in range(len(self.connections)):
                u, d = up[j], down[j]
                for node, sign in ((u, -1.0), (d, 1.0)):
                    # dt * sign * g (a_u V_u + b_u - a_d V_d - b_d)
                    mat[node, u] -= dt_ms * sign * g[j] * a[u]
                    mat[node, d] += dt_ms * sign * g[j] * a[d]
                    rhs[node] += dt_ms * sign * g[j] * (b[u] - b[d])
            v_new = np.linalg.solve(mat, rhs)
            p_new = a * v_new + b
            dp = p_new[up] - p_new[down]
            want = np.array([(dp[j] > 0) if k.valve else True for j, k in enumerate(self.connections)])
            if np.array_equal(want, open_):
                q = g * dp
                return v_new, p_new, q
            key = want.tobytes()
            if key in seen:  # chattering valve at dp ~ 0: accept the current solution
                q = g * dp
                return v_new, p_new, q
            seen.add(open_.tobytes())
            open_ = want
        raise StageError(f"0D circulation: valve states did not settle at t = {t_new_ms:.2f} ms")
