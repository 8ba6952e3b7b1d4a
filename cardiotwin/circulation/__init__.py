"""0D circulation: lumped networks (3-element Windkessel, closed loop) and their coupling to 3D cavities."""

from cardiotwin.circulation.models import (
    ClosedLoopConfig,
    WindkesselConfig,
    closed_loop_network,
    initial_volumes,
    windkessel_network,
)
from cardiotwin.circulation.network import Activation, Compartment, Connection, Network
from cardiotwin.circulation.simulate import CoupledCirculation, Trace, run_0d, run_to_periodic

__all__ = [
    "Activation", "ClosedLoopConfig", "Compartment", "Connection", "CoupledCirculation", "Network", "Trace",
    "WindkesselConfig", "closed_loop_network", "initial_volumes", "run_0d", "run_to_periodic", "windkessel_network",
]
