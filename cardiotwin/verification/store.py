"""Where verification results live: a standalone JSON or a case's ``verify/`` stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cardiotwin.errors import CaseError
from cardiotwin.verification.registry import Suite, load_results, run_verifications

log = logging.getLogger(__name__)

VERIFY_STAGE = "verify"
RESULTS_NAME = "verification.json"
DEFAULT_OUT = Path(RESULTS_NAME)


def run_and_store(*, suite: Suite = "ci", names: list[str] | None = None, out: str | Path | None = None,
                  case: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Run the verification suite and store it (rank 0 writes); returns (results, path).

    With ``case`` the results are committed as the case's ``verify`` stage (always rerun: the
    point is to verify the installed code, whose version the manifest records).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if case is None:
        path = Path(out) if out else DEFAULT_OUT
        results = run_verifications(suite=suite, names=names, out_path=None)
        if comm.rank == 0:
            from cardiotwin.io.atomic import write_json_atomic

            write_json_atomic(path, results)
        return results, path
    from cardiotwin.cases import Case

    if comm.size > 1:
        raise CaseError(f"{case}: run `cardiotwin verify --case` serially (MPI runs write --out files)")
    c = Case.open(case)
    config = {"suite": suite, "checks": sorted(names) if names else "all"}
    with c.stage(VERIFY_STAGE, inputs={}, config=config, force=True) as st:
        results = run_verifications(suite=suite, names=names, out_path=st.output(RESULTS_NAME))
        st.metrics.update({k: v for k, v in _counts(results).items()})
    path = c.stage_dir(VERIFY_STAGE) / RESULTS_NAME
    if out:
        from cardiotwin.io.atomic import write_json_atomic

        write_json_atomic(Path(out), results)
    return results, path


def _counts(results: dict[str, Any]) -> dict[str, int]:
    from cardiotwin.verification.registry import summary_counts

    return summary_counts(results)


def case_results(case_root: Path) -> tuple[dict[str, Any] | None, Path]:
    """Stored results of a case (None if ``verify`` has not run there) and their path."""
    path = Path(case_root) / VERIFY_STAGE / RESULTS_NAME
    if not path.is_file():
        return None, path
    return load_results(path), path
