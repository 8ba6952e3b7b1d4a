"""The CRT sweep on a real Dask LocalCluster: two worker processes on loopback, one killed mid-sweep.

Contract (ARCHITECTURE.md, "Scale"): tasks are idempotent and write into the case directory, so a
lost worker loses only its running task (rescheduled by Dask) and a rerun recomputes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid

import cloudpickle
import numpy as np
import pytest
from test_therapy_support import biventricle_with_fibres, graph_activation, write_mesh_file

from cardiotwin.distributed import dask_client
from cardiotwin.errors import ConfigError
from cardiotwin.io.atomic import sha256_file
from cardiotwin.therapy.candidates import CandidateConfig, candidate_sites
from cardiotwin.therapy.conduction import ConductionConfig
from cardiotwin.therapy.protocols import ProtocolConfig, baseline_protocol, site_protocols
from cardiotwin.therapy.sweep import SweepTask, run_sweep
from cardiotwin.therapy.uq import UQConfig, design, sample_conduction

# workers unpickle this module's functions by value (they need not import the tests folder)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CALLS_DIR_ENV = "CARDIOTWIN_TEST_CALLS_DIR"


class CountingSlowSolver:
    """graph_activation that records each call (one file per call) and takes >= 0.4 s."""

    def __init__(self, calls_dir: str) -> None:
        self.calls_dir = calls_dir

    def __call__(self, mesh, *, sources, tissue):
        t = graph_activation(mesh, sources=sources, tissue=tissue)
        sig = f"{len(sources)}-{sources[-1].label}-{tissue.cv_fibre_mm_per_ms[0]:.6f}-{float(np.nanmax(t[np.isfinite(t)])):.6f}"
        with open(os.path.join(self.calls_dir, f"{uuid.uuid4().hex}.call"), "w") as fh:
            fh.write(sig)
        time.sleep(0.4)
        return t


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory):
    mesh = biventricle_with_fibres(4.0)
    path = write_mesh_file(mesh, tmp_path_factory.mktemp("dist"))
    rv, lv, _ = candidate_sites(mesh, CandidateConfig())
    protocols = [baseline_protocol(), *site_protocols(rv, lv[:7], ProtocolConfig())]
    uq = UQConfig(samples=2, seed=1)
    confs = [ConductionConfig()] + [sample_conduction(ConductionConfig(), row, uq) for row in design(uq)]
    tasks = [SweepTask(sample=s, conduction=c, protocol=p) for s, c in enumerate(confs) for p in protocols]
    return mesh, path, tasks


def test_sweep_survives_a_killed_worker_and_rerun_skips_finished(sweep_setup, tmp_path):
    mesh, path, tasks = sweep_setup
    work = tmp_path / "therapy_tasks"
    calls = tmp_path / "calls"
    calls.mkdir()
    solver = CountingSlowSolver(str(calls))
    done_at_kill: set[str] = set()
    killed: list[int] = []
    with dask_client(n_workers=2) as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 2 and all(addr.startswith("tcp://127.0.0.1:") for addr in info)
        pids = list(client.run(os.getpid).values())

        def killer() -> None:
            deadline = time.time() + 300
            while time.time() < deadline:
                finished = {p.stem for p in work.glob("*.json")} if work.is_dir() else set()
                if len(finished) >= 4:
                    done_at_kill.update(finished)
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=killer)
        thread.start()
        results = run_sweep(tasks, mesh_path=path, mesh_sha256=sha256_file(path), work_dir=work, solver=solver,
                            client=client)
        thread.join()
    assert killed, "the worker was not killed mid-sweep"
    assert len(done_at_kill) < len(tasks), "the sweep finished before the kill; make tasks slower"
    assert set(results) == {t.key for t in tasks}, sorted({t.key for t in tasks} - set(results))
    assert {p.stem for p in work.glob("*.json")} == {t.key for t in tasks}
    n_calls = len(list(calls.glob("*.call")))
    # every task solved once, plus at most the one running on the killed worker (1 thread / worker)
    assert len(tasks) <= n_calls <= len(tasks) + 1, f"{n_calls} solver calls for {len(tasks)} tasks"
    # results match a serial, in-process run of the same tasks
    serial = run_sweep(tasks, mesh_path=path, mesh_sha256=sha256_file(path), work_dir=tmp_path / "serial",
                       solver=graph_activation)
    for key, r in results.items():
        assert r["metrics"]["tat_ms"] == pytest.approx(serial[key]["metrics"]["tat_ms"], rel=1e-12)
    # a rerun reads every result from the case and solves nothing
    again = run_sweep(tasks, mesh_path=path, mesh_sha256=sha256_file(path), work_dir=work, solver=solver, client=None)
    assert len(list(calls.glob("*.call"))) == n_calls
    assert {k: v["metrics"] for k, v in again.items()} == {k: v["metrics"] for k, v in results.items()}


def test_scheduler_address_is_checked():
    with pytest.raises(ConfigError, match="tcp://"):
        with dask_client(scheduler="localhost:8786"):
            pass


def test_existing_scheduler_by_address(sweep_setup, tmp_path):
    from distributed import LocalCluster

    mesh, path, tasks = sweep_setup
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with dask_client(scheduler=cluster.scheduler_address) as client:
            res = run_sweep(tasks[:3], mesh_path=path, mesh_sha256=sha256_file(path), work_dir=tmp_path / "w",
                            solver=graph_activation, client=client)
        assert set(res) == {t.key for t in tasks[:3]}
        assert len(cluster.scheduler.workers) == 1  # the cluster outlives the client
