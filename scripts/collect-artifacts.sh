#!/usr/bin/env bash
# The hosted workflow's artifacts, DIR/bindings-<platform>/imt-gateway.<platform>.node, into
# npm/<platform>/, where scripts/pack.js looks for them.
#   bash scripts/collect-artifacts.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in "${1:?usage: collect-artifacts.sh DIR}"/bindings-*/; do
  platform=${dir%/}
  platform=${platform##*/bindings-}
  mkdir -p "npm/$platform"
  cp "$dir"*.node "npm/$platform/"
done
ls -l npm/*/*.node
