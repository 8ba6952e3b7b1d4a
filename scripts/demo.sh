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
  # The shipped bundle models/heart_seg_v1 is under-trained (see its MODEL_CARD.md): its label map of
  # the sample is not usable for meshing yet. Until a retrained bundle ships, the demo starts from
  # the sample's reference labels; DEMO_SEGMENT=1 runs the network instead.
  echo "note: using sample_scans/ct_sample_labels.nii.gz as the segmentation (DEMO_SEGMENT=1 to run the model)"
  ARGS+=(--labels sample_scans/ct_sample_labels.nii.gz)
fi
if [ -n "${FORCE:-}" ]; then ARGS+=(--force); fi
echo "== cardiotwin demo: virtual CRT on $SCAN =="
$CT info "$SCAN"
time $CT run pipelines/crt_ct.yaml --scan "$SCAN" --out "$CASE" "${ARGS[@]}"
$CT case show "$CASE"
echo "results: $CASE/therapy/ (ranking.json, ranking.csv, uq.json, bullseye_*.png, pv_loops.png, activation_maps.png)"
