"""Per-phase timing of solver steps (fenicsx-beat style): NullMonitor by default, PerformanceMonitor
when asked. Synchronises CUDA before reading the clock so GPU phases are measured, not queued."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class NullMonitor:
    """Does nothing; the default."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def count(self, name: str, n: int = 1) -> None:
        pass

    def summary(self) -> dict[str, float]:
        return {}


class PerformanceMonitor(NullMonitor):
    """Accumulates wall seconds per phase and counters (e.g. CG iterations)."""

    def __init__(self, *, cuda_sync: bool = False) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.cuda_sync = cuda_sync

    def _sync(self) -> None:
        if self.cuda_sync:
            import torch

            torch.cuda.synchronize()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {f"{k}_s": v for k, v in self.seconds.items()}
        out.update({k: float(v) for k, v in self.counts.items()})
        return out
