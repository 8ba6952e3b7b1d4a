"""Time integration of 0D networks alone, and their coupling to 3D cavities.

``run_0d`` integrates a network whose chambers are all elastances. ``CoupledCirculation``
advances a network whose ventricles are ``coupled``: each step finds the cavity pressures
``p`` for which the 3D cavity volumes ``V3D(p)`` equal the volumes the 0D model implies,
``V0D(p) = V_old + dt (Q_in(p) - Q_out(p))`` (pressure-volume consistency), by a
quasi-Newton (Broyden) iteration that calls the 3D solver once per iterate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cardiotwin.circulation.network import Network
from cardiotwin.errors import StageError

log = logging.getLogger(__name__)


@dataclass
class Trace:
    """Time series of a 0D run: times (T,) ms; volumes/pressures (T, n) mL/kPa; flows (T, m) mL/ms."""

    names: tuple[str, ...]
    times_ms: list[float] = field(default_factory=list)
    volumes_ml: list[np.ndarray] = field(default_factory=list)
    pressures_kpa: list[np.ndarray] = field(default_factory=list)
    flows_ml_per_ms: list[np.ndarray] = field(default_factory=list)

    def append(self, t: float, v: np.ndarray, p: np.ndarray, q: np.ndarray) -> None:
        self.times_ms.append(float(t))
        self.volumes_ml.append(np.array(v, dtype=float))
        self.pressures_kpa.append(np.array(p, dtype=float))
        self.flows_ml_per_ms.append(np.array(q, dtype=float))

    def column(self, quantity: str, name: str) -> np.ndarray:
        """(T,) series of ``quantity`` ('volumes_ml' or 'pressures_kpa') of compartment ``name``."""
        return np.array([row[self.names.index(name)] for row in getattr(self, quantity)])


def run_0d(
    network: Network,
    volumes_ml: np.ndarray,
    *,
    t_start_ms: float = 0.0,
    duration_ms: float,
    dt_ms: float = 1.0,
) -> Trace:
    """Integrate a network without coupled compartments (backward Euler, step dt)."""
    if any(c.kind == "coupled" for c in network.compartments):
        raise ValueError("run_0d needs a network without coupled compartments")
    n_steps = int(round(duration_ms / dt_ms))
    trace = Trace(network.names)
    v = np.asarray(volumes_ml, dtype=float).copy()
    p = network.pressures(v, t_start_ms)
    trace.append(t_start_ms, v, p, network.flows(p))
    for k in range(1, n_steps + 1):
        t = t_start_ms + k * dt_ms
        v, p, q = network.step(v, t, dt_ms)
        trace.append(t, v, p, q)
    return trace


def run_to_periodic(
    network: Network,
    volumes_ml: np.ndarray,
    *,
    period_ms: float,
    dt_ms: float = 1.0,
    tol_ml: float = 0.1,
    max_cycles: int = 200,
) -> tuple[np.ndarray, int, float]:
    """Repeat cycles until every compartment volume at the cycle start changes by < tol_ml.

    Returns (volumes at the start of the periodic cycle (mL), cycles run, last change (mL)).
    """
    v = np.asarray(volumes_ml, dtype=float).copy()
    change = np.inf
    for cycle in range(1, max_cycles + 1):
        trace = run_0d(network, v, duration_ms=period_ms, dt_ms=dt_ms)
        v_next = trace.volumes_ml[-1]
        change = float(np.max(np.abs(v_next - v)))
        v = v_next
        if change < tol_ml:
            return v, cycle, change
    raise StageError(f"0D circulation: no periodic state after {max_cycles} cycles (last change {change:.3g} mL)")


CavitySolver = Callable[[dict[str, float]], dict[str, float]]
"""Given cavity pressures (kPa) by name, solve the 3D model and return cavity volumes (mL)."""


@dataclass
class CoupledCirculation:
    """A network with ``coupled`` ventricles, advanced in step with a 3D cavity model."""

    network: Network
    volumes_ml: np.ndarray
    cavities: tuple[str, ...]
    pressures_kpa: dict[str, float]
    tol_ml: float = 1e-3
    rtol: float = 1e-3  # volume consistency relative to the cavity volume
    max_iterations: int = 40
    _jacobian: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in self.cavities:
            if self.network.compartments[self.network.index[name]].kind != "coupled":
                raise ValueError(f"compartment {name} is not coupled")

    def volumes_for(self, p_vec: np.ndarray, t_new_ms: float, dt_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """0D cavity volumes (mL) after a step with cavity pressures p (kPa), and dV/dp (mL/kPa).

        The derivative is a one-sided difference (h = 1e-4 kPa); V0D(p) is piecewise linear in p
        (backward Euler with ideal valves), so it is exact away from a valve switch.
        """
        idx = [self.network.index[c] for c in self.cavities]

        def v(p: np.ndarray) -> np.ndarray:
            v0d, _, _ = self.network.step(self.volumes_ml, t_new_ms, dt_ms, dict(zip(self.cavities, map(float, p))))
            return v0d[idx]

        p = np.asarray(p_vec, dtype=float)
        base = v(p)
        h = 1e-4
        jac = np.zeros((len(p), len(p)))
        for i in range(len(p)):
            dp = np.zeros(len(p))
            dp[i] = h
            jac[:, i] = (v(p + dp) - base) / h
        return base, jac

    def volume_tolerance(self) -> float:
        """Pressure-volume consistency tolerance (mL) for the current cavity volumes."""
        idx = [self.network.index[c] for c in self.cavities]
        return max(self.tol_ml, self.rtol * float(np.min(np.abs(self.volumes_ml[idx]))))

    def commit(self, p_vec: np.ndarray, t_new_ms: float, dt_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """Accept cavity pressures p (kPa) found by a monolithic 3D-0D solve; returns (pressures, flows)."""
        given = dict(zip(self.cavities, map(float, p_vec)))
        self.volumes_ml, p_all, q = self.network.step(self.volumes_ml, t_new_ms, dt_ms, given)
        self.pressures_kpa = given
        return p_all, q

    def step(self, t_new_ms: float, dt_ms: float, solve_cavities: CavitySolver) -> tuple[np.ndarray, np.ndarray, int]:
        """Advance to ``t_new_ms``; returns (0D pressures (kPa), flows (mL/ms), 3D solves used).

        The 3D state left behind by ``solve_cavities`` is the one of the last (converged) call.
        """
        idx = [self.network.index[c] for c in self.cavities]
        p = np.array([self.pressures_kpa[c] for c in self.cavities])

        def residual(p_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            given = dict(zip(self.cavities, map(float, p_vec)))
            v0d, p_all, q = self.network.step(self.volumes_ml, t_new_ms, dt_ms, given)
            v3d = solve_cavities(given)
            r = np.array([v3d[c] for c in self.cavities]) - v0d[idx]
            return r, v0d, p_all, q

        r, v0d, p_all, q = residual(p)
        solves = 1
        tol = max(self.tol_ml, self.rtol * float(np.min(np.abs(v0d[idx]))))
        jac = self._jacobian
        if jac is None and np.max(np.abs(r)) > tol:
            jac = np.zeros((len(p), len(p)))
            for i in range(len(p)):
                dp = np.zeros(len(p))
                dp[i] = 0.05  # kPa
                r_i, *_ = residual(p + dp)
                solves += 1
                jac[:, i] = (r_i - r) / dp[i]
        while np.max(np.abs(r)) > tol:
            if solves > self.max_iterations:
                raise StageError(
                    f"3D-0D coupling did not converge at t = {t_new_ms:.2f} ms: volume mismatch "
                    f"{np.max(np.abs(r)):.3g} mL at pressures {dict(zip(self.cavities, p.round(4)))} kPa"
                )
            try:
                dp = -np.linalg.solve(jac, r)
            except np.linalg.LinAlgError:
                dp = -r / np.maximum(np.abs(np.diag(jac)), 1e-6)
            # keep steps moderate: 3D solves fail for large pressure jumps
            scale = min(1.0, 2.0 / max(np.max(np.abs(dp)), 1e-12))
            dp *= scale
            p_new = p + dp
            r_new, v0d, p_all, q = residual(p_new)
            solves += 1
            for _ in range(4):  # backtrack when a valve kink makes the full step overshoot
                if np.max(np.abs(r_new)) < np.max(np.abs(r)):
                    break
                dp *= 0.5
                p_new = p + dp
                r_new, v0d, p_all, q = residual(p_new)
                solves += 1
            dr = r_new - r
            jac = jac + np.outer(dr - jac @ dp, dp) / float(dp @ dp)  # Broyden update
            slow = np.max(np.abs(r_new)) > 0.5 * np.max(np.abs(r))
            p, r = p_new, r_new
            if slow and np.max(np.abs(r)) > tol:
                # a valve opened or closed (kink in V0D(p)): refresh the Jacobian by differences
                h = 0.005
                for i in range(len(p)):
                    dpi = np.zeros(len(p))
                    dpi[i] = h
                    r_i, *_ = residual(p + dpi)
                    solves += 1
                    jac[:, i] = (r_i - r) / h
                r, v0d, p_all, q = residual(p)  # leave the 3D state at p
                solves += 1
        if jac is not None:
            self._jacobian = jac
        self.volumes_ml = v0d
        self.pressures_kpa = dict(zip(self.cavities, map(float, p)))
        return p_all, q, solves
