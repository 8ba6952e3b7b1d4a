#!/usr/bin/env bash
# `make demo`: virtual CRT on the shipped CT sample scan, end to end (then the evidence report):
#   segment -> mesh -> fibres -> calibrate (to illustrative clinical values) -> LBBB baseline -> lead/timing sweep on Dask (with uncertainty)
#   -> electromechanics of the best 3 -> ranking, bullseyes, PV loops, activation maps.
# A rerun reuses every finished stage and sweep task (use FORCE=1 to recompute).
set -euo pipefail
cd "$(dirname "$0")/.."
CT=.venv/bin/cardiotwin
CASE=${CASE:-cases/demo}
SCAN=sample_scans/ct_sample.nii.gz
ARGS=()
REPORT_ARGS=(--reference-labels sample_scans/ct_sample_labels.nii.gz)  # validation: Dice of the segmentation
if [ "${DEMO_LABELS:-network}" = reference ]; then
  # DEMO_LABELS=reference starts from the sample's reference labels instead of the shipped network
  # (models/heart_seg_v1; its Dice on this sample: models/heart_seg_v1/MODEL_CARD.md).
  echo "note: using sample_scans/ct_sample_labels.nii.gz as the segmentation (DEMO_LABELS=reference)"
  ARGS+=(--labels sample_scans/ct_sample_labels.nii.gz)
  REPORT_ARGS=()
fi
if [ -n "${FORCE:-}" ]; then ARGS+=(--force); fi
# the calibrate stage fits the twin to MEASUREMENTS (default: the sample's illustrative clinical values,
# not a patient's); MEASUREMENTS=none runs the CRT stage on population parameters instead
MEASUREMENTS=${MEASUREMENTS:-sample_scans/ct_sample_measurements.yaml}
if [ "$MEASUREMENTS" != none ]; then ARGS+=(--measurements "$MEASUREMENTS"); fi
echo "== cardiotwin demo: virtual CRT on $SCAN =="
$CT info "$SCAN"
time $CT run pipelines/crt_ct.yaml --scan "$SCAN" --out "$CASE" "${ARGS[@]}"
$CT case show "$CASE"
$CT report "$CASE" "${REPORT_ARGS[@]}"
echo "results: $CASE/therapy/ (ranking.json, ranking.csv, uq.json, bullseye_*.png, pv_loops.png, activation_maps.png)"
echo "evidence report (ASME V&V 40): $CASE/report/evidence.html and .pdf; clinical summary: $CASE/report/summary.html"
echo "review in the browser: .venv/bin/cardiotwin view $CASE"
