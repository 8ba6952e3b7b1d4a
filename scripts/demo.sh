#!/usr/bin/env bash
# `make demo`: the main job on the shipped CT sample scan.
set -euo pipefail
cd "$(dirname "$0")/.."
CT=.venv/bin/cardiotwin
CASE=cases/demo
echo "== cardiotwin demo on sample_scans/ct_sample.nii.gz =="
$CT info sample_scans/ct_sample.nii.gz
if [ ! -f "$CASE/manifest.json" ]; then
  $CT case new "$CASE" --scan sample_scans/ct_sample.nii.gz
fi
$CT case show "$CASE"
echo "case directory: $CASE"
