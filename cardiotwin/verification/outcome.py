"""What a code-verification check is and what it returns (``verification.registry`` runs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quantity:
    """One compared number. ``expected`` with ``tolerance`` (absolute) or ``range`` (lo, hi)."""

    name: str
    value: float
    unit: str
    expected: float | None = None
    tolerance: float | None = None
    range: tuple[float, float] | None = None

    @property
    def passed(self) -> bool:
        if self.range is not None:
            return self.range[0] <= self.value <= self.range[1]
        if self.expected is not None and self.tolerance is not None:
            return abs(self.value - self.expected) <= self.tolerance
        return True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit, "pass": self.passed}
        if self.expected is not None:
            d["expected"] = self.expected
        if self.tolerance is not None:
            d["tolerance"] = self.tolerance
        if self.range is not None:
            d["range"] = list(self.range)
        return d


@dataclass(frozen=True)
class CheckOutcome:
    """What a check function returns: compared quantities plus free-form details (JSON-ready)."""

    quantities: tuple[Quantity, ...]
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.quantities) and all(q.passed for q in self.quantities)


class CheckUnavailable(Exception):
    """Raised by a check whose solver is not part of this installation (yet)."""


@dataclass(frozen=True)
class VerificationCheck:
    """A registered check. ``in_ci``: part of the quick suite that the tests run."""

    name: str
    title: str
    category: str
    reference: str
    run: Callable[..., CheckOutcome]
    in_ci: bool = False
