#!/usr/bin/env bash
# `make demo`: virtual CRT on the shipped CT sample scan, end to end:
#   segment -> mesh -> fibres -> LBBB baseline -> lead/timing sweep on Dask (with uncertainty)
#   -> electromechanics of the best 3 -> ranking, bullseyes, PV loops, activation maps.
# A rerun reuses every finished stage and sweep task (use FORCE=1 to recompute).
set -euo pipefail
cd "$(dirname "$0")/.."
CT=.venv/bin/cardiotwin
CASE=${CASE:-cases/demo}
SCAN=sample_scans/ct_sample.nii.gz
ARGS=()
if [ -z "${DEMO_SEGMENT:-}" ]; then
  # The shipped bundle models/heart_seg_v1 segments the sample well (Dice LV blood 0.95, LV myo 0.90,
  # RV blood 0.95; its MODEL_CARD.md), but its label map has thin spots that stop the mesher's surface
  # decimation early: at the recipe's 5 mm edge it gives 34k tets instead of the reference labels'
  # 15k, and the electromechanics of 4 beats then takes the demo past its 15 min budget. The demo
  # therefore starts from the sample's reference labels; DEMO_SEGMENT=1 runs the network.
  echo "note: using sample_scans/ct_sample_labels.nii.gz as the segmentation (DEMO_SEGMENT=1 to run the model)"
  ARGS+=(--labels sample_scans/ct_sample_labels.nii.gz)
fi
if [ -n "${FORCE:-}" ]; then ARGS+=(--force); fi
echo "== cardiotwin demo: virtual CRT on $SCAN =="
$CT info "$SCAN"
time $CT run pipelines/crt_ct.yaml --scan "$SCAN" --out "$CASE" "${ARGS[@]}"
$CT case show "$CASE"
echo "results: $CASE/therapy/ (ranking.json, ranking.csv, uq.json, bullseye_*.png, pv_loops.png, activation_maps.png)"
