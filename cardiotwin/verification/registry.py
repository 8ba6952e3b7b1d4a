"""Code-verification registry, runner and results store (`cardiotwin verify`).

A *check* is a named function ``run(*, quick: bool) -> CheckOutcome`` that solves a problem with
a known answer (analytic solution, manufactured solution, community benchmark) and compares.
The built-in checks are listed in ``verification.checks.BUILTIN_CHECKS``; others are added with
``register`` (kept in :data:`REGISTRY`);
``run_verifications`` runs a suite and stores a results JSON with software versions, machine
and timestamps, which the evidence report cites (ASME V&V 40 section "code verification").

Results JSON (``verification.json``)::

    {"schema": 1, "created": ISO time, "suite": "ci"|"full", "software": {...}, "machine": str,
     "checks": [{"name", "title", "category", "reference", "status": "pass"|"fail"|"unavailable"|
                 "error", "message", "seconds", "quantities": [{"name", "value", "unit",
                 "expected", "tolerance" | "range", "pass"}], "details": {...}}]}
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from cardiotwin.errors import CaseError, ConfigError
from cardiotwin.io.atomic import write_json_atomic
from cardiotwin.verification.outcome import CheckOutcome, CheckUnavailable, Quantity, VerificationCheck

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Status = Literal["pass", "fail", "unavailable", "error"]
Suite = Literal["ci", "full"]


REGISTRY: dict[str, VerificationCheck] = {}


def register(check: VerificationCheck) -> VerificationCheck:
    """Add (or replace) a check in the registry; returns it."""
    if not check.name.replace("_", "").isalnum():
        raise ValueError(f"check names are identifiers, got {check.name!r}")
    REGISTRY[check.name] = check
    return check


def registered_checks() -> dict[str, VerificationCheck]:
    """All checks: the built-ins of ``verification.checks`` and those registered since."""
    from cardiotwin.verification.checks import BUILTIN_CHECKS

    return {**{c.name: c for c in BUILTIN_CHECKS}, **REGISTRY}


def run_check(check: VerificationCheck, *, quick: bool) -> dict[str, Any]:
    """Run one check; never raises for a failing solver (status 'error' with the reason)."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"name": check.name, "title": check.title, "category": check.category,
                              "reference": check.reference, "quick": quick}
    try:
        outcome = check.run(quick=quick)
    except CheckUnavailable as exc:
        record.update(status="unavailable", message=str(exc), quantities=[], details={})
    except Exception as exc:  # a crashed solver is a verification result, not a crash of the suite
        log.warning("verification check %s raised %s", check.name, exc)
        record.update(status="error", message=f"{type(exc).__name__}: {exc}", quantities=[],
                      details={"traceback": traceback.format_exc(limit=6)})
    else:
        record.update(status="pass" if outcome.passed else "fail", message=outcome.message,
                      quantities=[q.to_dict() for q in outcome.quantities], details=outcome.details)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("verification %s: %s (%.1f s)", check.name, record["status"], record["seconds"])
    return record


def run_verifications(*, suite: Suite = "ci", names: list[str] | None = None,
                      out_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the checks of ``suite`` (or the named ones) and return (and store) the results.

    suite "ci" runs the checks marked ``in_ci`` at their quick sizes (about a minute on 2
    cores); "full" runs every check at benchmark sizes. ``out_path``: results JSON to write.
    """
    from cardiotwin.machine import machine_description
    from cardiotwin.cases import software_versions

    checks = registered_checks()
    if names:
        unknown = sorted(set(names) - set(checks))
        if unknown:
            raise ConfigError(f"unknown verification check(s) {', '.join(unknown)}; known: {', '.join(sorted(checks))}")
        selected = [checks[n] for n in names]
    else:
        selected = [c for c in checks.values() if suite == "full" or c.in_ci]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = [run_check(c, quick=(suite == "ci")) for c in selected]
    results = {
        "schema": SCHEMA_VERSION,
        "created": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": suite,
        "software": software_versions(),
        "machine": machine_description(),
        "checks": records,
    }
    if out_path is not None:
        write_json_atomic(Path(out_path), results)
    return results


def summary_counts(results: dict[str, Any]) -> dict[str, int]:
    """{'pass': n, 'fail': n, 'unavailable': n, 'error': n} of a results dict."""
    counts = {"pass": 0, "fail": 0, "unavailable": 0, "error": 0}
    for rec in results.get("checks", []):
        counts[rec.get("status", "error")] = counts.get(rec.get("status", "error"), 0) + 1
    return counts


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results JSON written by ``run_verifications``; CaseError naming the file if invalid."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CaseError(f"{path}: cannot read verification results ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CaseError(f"{path}: verification results are not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or not isinstance(data.get("checks"), list):
        raise CaseError(f"{path}: not a cardiotwin verification results file (schema {SCHEMA_VERSION})")
    return data
