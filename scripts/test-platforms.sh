#!/usr/bin/env bash
# `npm run test:platforms`: every platform test this Linux x64 machine can run, beyond what
# .ci/run runs (the x64 and arm64 glibc builds, linux-arm64-gnu under qemu, the install test):
#   `npm run pack`, which builds the Linux binaries that are missing and writes all six tarballs;
#   linux-arm64-gnu and linux-arm-gnueabihf under qemu; linux-x64-musl (the Rust tests natively,
#   the addon loaded by musl's loader); Windows x64 under wine (scripts/test-windows.sh).
#   npm run test:platforms [-- platform ...]   (pack, linux-*, win32-x64-gnu)
# Runs them all, then prints one line per platform and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
declare -a results=()
failed=0
run () {
  local name="$1"; shift
  local started=$SECONDS
  echo "===== $name: $*"
  if "$@"; then results+=("$name: passed in $((SECONDS - started)) s")
  else results+=("$name: FAILED after $((SECONDS - started)) s"); failed=1; fi
}
[ $# -gt 0 ] || set -- pack linux-arm64-gnu linux-arm-gnueabihf linux-x64-musl win32-x64-gnu
for platform in "$@"; do
  case "$platform" in
    pack) run "npm run pack" node scripts/pack.js ;;
    win32-x64-gnu) run "$platform (wine)" bash scripts/test-windows.sh ;;
    *) run "$platform" bash scripts/test-emulated.sh "$platform" ;;
  esac
done
printf '%s\n' "${results[@]}"
exit $failed
