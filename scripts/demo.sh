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
  # RV blood 0.95; its MODEL_CARD.md), but at the recipe's 5 mm edge the mesher's surface decimation
  # fails on the network's label map and falls back to the full-resolution surface (208k tets instead
  # of ~15k), which puts the demo's electromechanics far over its 15 min budget. Until the mesher
  # handles that, the demo starts from the sample's reference labels; DEMO_SEGMENT=1 runs the network.
  echo "note: using sample_scans/ct_sample_labels.nii.gz as the segmentation (DEMO_SEGMENT=1 to run the model)"
  ARGS+=(--labels sample_scans/ct_sample_labels.nii.gz)
fi
if [ -n "${FORCE:-}" ]; then ARGS+=(--force); fi
echo "== cardiotwin demo: virtual CRT on $SCAN =="
$CT info "$SCAN"
time $CT run pipelines/crt_ct.yaml --scan "$SCAN" --out "$CASE" "${ARGS[@]}"
$CT case show "$CASE"
echo "results: $CASE/therapy/ (ranking.json, ranking.csv, uq.json, bullseye_*.png, pv_loops.png, activation_maps.png)"
