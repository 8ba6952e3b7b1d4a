"""`cardiotwin crt CASE`: virtual CRT on a case whose fibres stage is done.

Writes CASE/therapy/ (ranking.json, ranking.csv, uq.json, bullseye and PV-loop plots, activation
maps) and keeps each sweep task's result in CASE/therapy_tasks/ so a rerun skips finished work.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

NAME = "crt"
HELP = "virtual CRT: LBBB baseline, lead-site and AV/VV sweep on Dask, ranking with uncertainty, electromechanics of the best"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case directory with a completed fibers stage")
    parser.add_argument("--config", help="YAML file with CRTConfig keys (conduction, candidates, protocols, uq, "
                        "em_top_k, electromechanics)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://HOST:PORT); "
                        "default: an embedded local cluster")
    parser.add_argument("--workers", type=int, default=2, help="workers of the embedded local cluster (0: no Dask)")
    parser.add_argument("--samples", type=int, help="quasi-Monte Carlo samples (overrides the config; 0: nominal only)")
    parser.add_argument("--stiffness-samples", type=int, help="passive-stiffness samples for the electromechanics "
                        "(overrides the config; 0: nominal stiffness only; each costs 1 + em_top_k beats)")
    parser.add_argument("--em-top-k", type=int, help="electromechanics for the best K protocols (0: none)")
    parser.add_argument("--force", action="store_true", help="rerun the stage even when inputs are unchanged")


def summary_lines(result) -> list[str]:  # noqa: ANN001 - TherapyResult
    """A few lines for the terminal: baseline, the best candidates, response and confidence."""
    from cardiotwin.anatomy import AHA_SEGMENT_NAMES
    from cardiotwin.therapy.outputs import candidate_label

    b = result.baseline
    lines = [f"baseline (LBBB): TAT {b['tat_ms']:.0f} ms, LVAT {b['lvat_ms']:.0f} ms; latest non-scar segment "
             f"{result.latest_segment} ({AHA_SEGMENT_NAMES.get(result.latest_segment, '?')}); scar segments "
             f"{list(result.scar_segments) or 'none'}"]
    for c in [c for c in result.candidates if c.recommended][:5]:
        m = c.metrics
        extra = f", P(best) {c.uq['probability_best']:.2f}" if c.uq.get("probability_best") is not None else ""
        if m.get("dpdt_change_pct") is not None:
            extra += f", dP/dt max {m['dpdt_change_pct']:+.1f} % ({'responder' if m['responder'] else 'non-responder'})"
            ci = c.uq.get("dpdt_change_pct_ci95")
            if ci and all(v is not None and v == v for v in ci):
                extra += f" [{ci[0]:+.1f}, {ci[1]:+.1f}] over stiffness"
        lines.append(f"#{c.rank} {candidate_label(c.protocol)}: TAT {m['tat_ms']:.0f} ms ({m['tat_change_pct']:+.1f} %), "
                     f"{c.concordance or '-'}{extra}")
    return lines


def run(args: argparse.Namespace) -> int:
    from cardiotwin.cases import Case
    from cardiotwin.config import read_yaml
    from cardiotwin.distributed import dask_client
    from cardiotwin.therapy.solver import eikonal_solver, paced_ecg
    from cardiotwin.therapy.stage import crt_case_stage, load_crt_config

    case = Case.open(args.case)
    cfg = load_crt_config(read_yaml(args.config) if args.config else {}, source=args.config or "defaults",
                          samples=args.samples, em_top_k=args.em_top_k, stiffness_samples=args.stiffness_samples)
    local = args.workers == 0 and not args.scheduler
    with contextlib.nullcontext(None) if local else dask_client(scheduler=args.scheduler, n_workers=args.workers) as client:
        result = crt_case_stage(case, cfg=cfg, solver=eikonal_solver, client=client, force=args.force, ecg=paced_ecg)
    if result is None:
        print(f"{case.root}: therapy unchanged (use --force to rerun); see {Path(case.root) / 'therapy' / 'ranking.json'}")
        return 0
    for line in summary_lines(result):
        print(line)
    print(f"wrote {case.stage_dir('therapy') / 'ranking.json'}")
    return 0
