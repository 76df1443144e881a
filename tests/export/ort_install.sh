#!/usr/bin/env bash
# ort_install.sh - installs ONNX Runtime for the export tests: npm's onnxruntime-node at a pinned
# version (its CPU library ships inside the package) into a cache folder outside the repository,
# $KD_ORT_DIR (default $HOME/.cache/distill-ort/$VERSION). Does nothing when it is there already.
# --ignore-scripts: the package's post-install step would download a GPU provider from a host
# this machine cannot reach. 1.30.0 runs on Node 20 and reads IR version 7 / opset 13 models.
set -euo pipefail
VERSION=1.30.0
DIR=${KD_ORT_DIR:-$HOME/.cache/distill-ort/$VERSION}
if [ -f "$DIR/.complete" ]; then
    echo "ort_install: onnxruntime-node $VERSION present in $DIR"
    exit 0
fi
command -v npm >/dev/null || { echo "ort_install: npm not found" >&2; exit 1; }
tmp="$DIR.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
echo "ort_install: installing onnxruntime-node $VERSION into $DIR"
ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix "$tmp" --ignore-scripts --no-audit --no-fund \
    --no-save --loglevel=error "onnxruntime-node@$VERSION" >/dev/null
# Loading it once proves the native binding works with this Node before anyone relies on it.
node -e "require('$tmp/node_modules/onnxruntime-node')" || { rm -rf "$tmp"; exit 1; }
touch "$tmp/.complete"
rm -rf "$DIR"
mv "$tmp" "$DIR"
