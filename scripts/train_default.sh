#!/usr/bin/env bash
# Reproduce the shipped model: prepare data, train, evaluate on the test split (per-pair metrics
# and the end-to-end retrieval evaluation against the currently installed model), install it.
#   scripts/train_default.sh [RUN_DIR]       (default runs/default)
# Needs the labelled data at PHOTOSCORE_DATASET_DIR (default ../shared/data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN="${1:-runs/default}"
DATA="${PHOTOSCORE_DATASET_DIR:-../shared/data}"
PY="${PHOTOSCORE_VENV:-$ROOT/.venv}/bin"
start=$(date +%s)
"$PY/photoscore" train --config configs/default.yaml --out "$RUN" --set "data.root=$DATA" --quiet
"$PY/photoscore" evaluate --checkpoint "$RUN/model.safetensors" --images "$DATA/oasis,$DATA/emotion6" \
  --music "$DATA/vgmidi,$DATA/panda4q,$DATA/emotify,$DATA/eimg" --json "$RUN/test.json" --quiet
"$PY/photoscore" evaluate-retrieval --checkpoint "$RUN/model.safetensors" \
  --compare model/default/photoscore-default.safetensors --data-root "$DATA" --json "$RUN/retrieval-test.json" --quiet
cp "$RUN/model.safetensors" model/default/photoscore-default.safetensors
for graph in image music similarity; do  # the ONNX graphs serving runs, written by train
  cp "$RUN/model.$graph.onnx" "model/default/photoscore-default.$graph.onnx"
done
echo "done in $(( $(date +%s) - start )) s; installed model/default/photoscore-default.safetensors"
