#!/usr/bin/env bash
# `npm run test:platforms`: every platform test this Linux x64 machine can run, beyond what
# .ci/run runs (the host build, linux-arm64-gnu under qemu and the install test):
#   linux-arm-gnueabihf under qemu, linux-x64-musl (Rust tests natively, the addon in Bun's musl
#   build), and Windows x64 under wine (scripts/test-windows.sh). Builds what is missing first.
# Runs them all, then prints one line per platform and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
declare -a results=()
failed=0
run () {
  local name="$1"; shift
  local started=$SECONDS
  echo "===== $name: $*"
  if "$@"; then results+=("$name: passed in $((SECONDS - started)) s")
  else results+=("$name: FAILED after $((SECONDS - started)) s"); failed=1; fi
}
platforms=("${@:-linux-arm64-gnu linux-arm-gnueabihf linux-x64-musl win32-x64-gnu}")
for platform in ${platforms[*]}; do
  case "$platform" in
    win32-x64-gnu) run "$platform (wine)" bash scripts/test-windows.sh ;;
    *) run "$platform" bash scripts/test-emulated.sh "$platform" ;;
  esac
done
printf '%s\n' "${results[@]}"
exit $failed
