"""Progress of long stages and quiet Dask logs.

On a terminal the CRT stage shows a live bar (sweep tasks done / total; beats done / total with the
simulated time of the running ones); in a log file one line per finished step; Dask's own
messages (worker registration, connections) only with ``-v``.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from cardiotwin.progress import progress

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers run fake_beat by value

DASK_CHATTER = ("Register worker", "Starting established connection", "Starting worker compute stream",
                "Scheduler at", "Start Nanny", "Receive client connection", "Remove client", "is already in use",
                "Worker process still alive")


@pytest.fixture
def info_logging():
    logger = logging.getLogger("cardiotwin")
    old = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(old)


def test_one_line_per_step_when_not_a_terminal(caplog, info_logging) -> None:
    from rich.console import Console

    plain = Console(file=io.StringIO(), force_terminal=False)
    with caplog.at_level(logging.INFO, logger="cardiotwin"), progress("sweep", 3, unit="tasks", console=plain) as bar:
        assert not bar.live
        bar.advance()
        bar.status("not logged: a redraw, not a step")
        bar.set_done(3, detail="all")
    lines = [r.getMessage() for r in caplog.records if r.name == "cardiotwin.progress"]
    assert lines == ["sweep: 1/3 tasks", "sweep: 3/3 tasks (all)"]
    assert plain.file.getvalue() == ""
    # a long step: a heartbeat line at most every heartbeat_s with the running detail
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cardiotwin"), progress("electromechanics", 2, unit="beats",
                                                                      console=plain, heartbeat_s=0.2) as bar:
        bar.status("intrinsic rhythm t = 100 / 600 ms")  # within 0.2 s of the start: no line
        time.sleep(0.25)
        bar.status("intrinsic rhythm t = 200 / 600 ms")
    assert [r.getMessage() for r in caplog.records if r.name == "cardiotwin.progress"] == [
        "electromechanics: 0/2 beats, running: intrinsic rhythm t = 200 / 600 ms"]


def test_live_bar_on_a_terminal_and_nothing_when_quiet(caplog, info_logging) -> None:
    from rich.console import Console

    term = Console(file=io.StringIO(), force_terminal=True, width=120)
    with caplog.at_level(logging.INFO, logger="cardiotwin"), progress("electromechanics", 2, unit="beats",
                                                                      console=term) as bar:
        assert bar.live
        bar.status("intrinsic rhythm t = 300 / 600 ms")
        bar.advance(2)
    out = term.file.getvalue()
    assert "electromechanics" in out and "2/2" in out and "beats" in out
    assert not [r for r in caplog.records if r.name == "cardiotwin.progress"]  # the bar, not log lines
    logging.getLogger("cardiotwin").setLevel(logging.WARNING)  # -q
    with caplog.at_level(logging.WARNING, logger="cardiotwin"), progress("sweep", 2, console=term) as bar:
        bar.advance(2)
    assert not bar.live and not [r for r in caplog.records if r.name == "cardiotwin.progress"]


def fake_beat(name, activation_times_ms, *, mesh_path, mesh_sha256, em_config, work_dir, on_step=None):
    """Stands in for therapy.response.run_beat_task: 3 steps of 200 ms simulated time, reported as the
    real task does (``on_step`` in this process, the progress file on a Dask worker)."""
    from cardiotwin.mechanics.ranks import progress_writer
    from cardiotwin.therapy.response import progress_path

    step = on_step or progress_writer(progress_path(work_dir, name), every_s=0.0)
    for t in (200.0, 400.0, 600.0):
        time.sleep(0.0 if on_step else 0.7)
        step(t, 600.0)
    if on_step is None:
        time.sleep(1.5)  # long enough for the client to poll the last time written
        progress_path(work_dir, name).unlink()
    return {"name": name, "result": {"edv_ml": {"LV": 100.0}}}


def test_beats_report_done_of_total_and_simulated_time(tmp_path, caplog, info_logging, monkeypatch) -> None:
    import cardiotwin.therapy.stage as stage

    monkeypatch.setattr(stage, "run_beat_task", fake_beat)
    jobs = {"baseline": ("baseline", {}), "BiV_LV_AHA05": ("BiV_LV_AHA05", {})}
    maps = {"baseline": np.zeros(3), "BiV_LV_AHA05": np.zeros(3)}
    with caplog.at_level(logging.INFO, logger="cardiotwin"):
        out = stage.run_beats(jobs, maps, mesh_path=tmp_path / "m.vtu", mesh_sha256="0", work_dir=tmp_path,
                              labels={"baseline": "intrinsic rhythm", "BiV_LV_AHA05": "BiV, LV basal inferolateral"})
    assert set(out) == set(jobs)
    lines = [r.getMessage() for r in caplog.records if r.name == "cardiotwin.progress"]
    assert lines == ["electromechanics: 1/2 beats (intrinsic rhythm done)",
                     "electromechanics: 2/2 beats (BiV, LV basal inferolateral done)"]


def test_beats_on_dask_show_the_simulated_time_of_running_beats(tmp_path, monkeypatch, info_logging) -> None:
    import rich
    from rich.console import Console

    import cardiotwin.therapy.stage as stage
    from cardiotwin.distributed import dask_client

    term = Console(file=io.StringIO(), force_terminal=True, width=200)
    monkeypatch.setattr(rich, "_console", term)  # the console progress() draws on by default
    monkeypatch.setattr(stage, "run_beat_task", fake_beat)
    jobs = {"baseline": ("baseline", {}),
            "baseline__stiffness01": ("baseline", {})}
    with dask_client(n_workers=1) as client:
        out = stage.run_beats(jobs, {"baseline": np.zeros(3)}, mesh_path=tmp_path / "m.vtu", mesh_sha256="0",
                              work_dir=tmp_path, client=client, labels={"baseline": "intrinsic rhythm"}, poll_s=0.2)
    assert set(out) == set(jobs)
    shown = term.file.getvalue()
    assert "2/2" in shown and "beats" in shown
    assert "intrinsic rhythm t = 400 / 600 ms" in shown or "intrinsic rhythm t = 200 / 600 ms" in shown
    assert "(stiffness sample 1) t = " in shown
    assert not list(tmp_path.glob("*.progress"))


SCRIPT = """
import sys
if __name__ == "__main__":
    from cardiotwin.cli import _configure_logging
    _configure_logging(int(sys.argv[1]))
    from cardiotwin.distributed import dask_client
    with dask_client(n_workers=1) as c:
        print("sum", c.submit(sum, [1, 2]).result())
"""


@pytest.mark.parametrize("verbosity", [0, 1])
def test_dask_messages_only_with_verbose(tmp_path, verbosity) -> None:
    """The CLI's logging (RichHandler; default INFO, -v DEBUG) around the embedded cluster the CRT stage
    uses: at the default verbosity nothing of Dask's reaches the output, with -v its messages do."""
    script = tmp_path / "dask_run.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(verbosity)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "sum 3" in out and "started a local Dask cluster" in out
    chatter = [m for m in DASK_CHATTER if m in out]
    if verbosity == 0:
        assert chatter == [], out
    else:
        assert "Register worker" in out and "Starting established connection" in out
