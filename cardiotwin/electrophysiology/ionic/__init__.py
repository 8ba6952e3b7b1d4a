"""Ionic models as plain functions over state tensors (shape (n_states, n_nodes)).

Each model module exposes ``STATE_NAMES``, ``initial_state(n, *, dtype, device)`` and
``step(states, dt_ms, *, stim_mv_per_ms, params)`` which advances the states in place by one
reaction step (Rush-Larsen for gates, forward Euler for the rest) and returns the states.
"""

from cardiotwin.electrophysiology.ionic import mitchell_schaeffer, tentusscher2006

MODELS = {"ttp06": tentusscher2006, "ms": mitchell_schaeffer}

__all__ = ["MODELS", "mitchell_schaeffer", "tentusscher2006"]
