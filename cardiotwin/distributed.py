"""Dask execution of sweeps and cohorts.

``dask_client(scheduler=None, n_workers=2)`` starts an embedded ``LocalCluster`` (worker
processes on the loopback interface, one thread each, no dashboard) and closes it afterwards;
``scheduler="tcp://HOST:PORT"`` connects to a running scheduler instead and leaves it running.

Cluster on SLURM (dask-jobqueue, not a dependency of cardiotwin)::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="02:00:00",
                           job_extra_directives=["--partition=compute"])
    cluster.scale(jobs=32)
    print(cluster.scheduler_address)   # pass it as  cardiotwin crt CASE --scheduler tcp://...

Workers must import the same cardiotwin version and see the case directory at the same path
(a shared file system): each task reads the mesh from the case and writes its result there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cardiotwin.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


def _check_address(scheduler: str) -> None:
    if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ConfigError(f"--scheduler {scheduler!r}: expected an address like tcp://HOST:8786")


@contextlib.contextmanager
def dask_client(
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
) -> Iterator["Client"]:
    """A Dask client: embedded LocalCluster (default) or an existing scheduler.

    Worker processes get ``OMP_NUM_THREADS`` etc. = ``threads_per_worker`` so numerical libraries
    do not oversubscribe the cores.
    """
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        stack.enter_context(_dask_logs())
        if scheduler:
            _check_address(scheduler)
            log.info("connecting to Dask scheduler %s", scheduler)
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
            stack.callback(client.close)
            yield client
            return
        if n_workers < 1:
            raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
        env = {k: str(threads_per_worker) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        with _worker_env(env), warnings.catch_warnings():
            if not logging.getLogger("cardiotwin").isEnabledFor(logging.DEBUG):
                # its internal HTTP server moving to a free port when 8787 is taken: nothing to act on
                warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                                   host="127.0.0.1", dashboard_address=None, memory_limit=memory_limit)
        stack.callback(cluster.close)
        log.info("started a local Dask cluster: %d worker(s) at %s", n_workers, cluster.scheduler_address)
        client = Client(cluster)
        stack.callback(client.close)
        yield client


DASK_LOGGERS = ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny", "distributed.core",
                "distributed.comm", "distributed.batched", "distributed.http.proxy")


@contextlib.contextmanager
def _dask_logs() -> Iterator[None]:
    """Dask's own log messages (worker registration, connections, a slow worker killed at
    shutdown) only with ``-v`` (the ``cardiotwin`` logger at DEBUG); errors always (a failed task
    raises in the caller anyway). Worker processes get the same level through
    ``DASK_LOGGING__DISTRIBUTED`` (read by Dask's config when they start)."""
    verbose = logging.getLogger("cardiotwin").isEnabledFor(logging.DEBUG)
    level = logging.INFO if verbose else logging.ERROR
    old = {name: logging.getLogger(name).level for name in DASK_LOGGERS}
    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(level)
    try:
        with _worker_env({"DASK_LOGGING__DISTRIBUTED": logging.getLevelName(level).lower()}):
            yield
    finally:
        for name, lvl in old.items():
            logging.getLogger(name).setLevel(lvl)


@contextlib.contextmanager
def _worker_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables while worker processes are spawned (they inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
