#!/usr/bin/env bash
# Installs, from the package registries only, the toolchains the build and test scripts need.
# Each part is skipped when already present, so running it twice costs seconds.
#   linux      zig (PyPI ziglang) and cargo-zigbuild, and the rustup targets of the five Linux
#              platforms: builds every Linux binary from Linux x64 (scripts/build.js)
#   emulation  qemu-user with binfmt handlers, and the arm64/armhf C and C++ runtimes (and
#              libatomic, which Node for armv7 needs), so that arm programs run here
#              (scripts/test-emulated.sh)
#   musl       musl-tools: musl-gcc and musl's dynamic loader (scripts/emulated/musl-dlopen.sh)
#   windows    mingw-w64, wine64, nasm (aws-lc-sys assembles with it) and the rustup target
#              x86_64-pc-windows-gnu (scripts/test-windows.sh)
#   lint       shellcheck, which actionlint runs on the workflow's scripts (lint-workflows.sh)
#   network    iproute2: `ip netns` and veth pairs, for the test of a gateway that vanishes
#              (__test__/keepalive.test.js, which needs root and is skipped without)
#   filesystems btrfs-progs: a btrfs image with a quota group, on which the outbox meets
#              EDQUOT (__test__/outbox.test.js, which needs root and is skipped without)
#   pkcs11     softhsm2 and opensc (pkcs11-tool): a software token holding the RSA and EC keys
#              of the hardware-key tests (__test__/pkcs11.test.js, skipped without)
#   pkcs11-arm64  SoftHSM 2 built for arm64 and the OpenSSL it links, from Debian's arm64
#              packages, unpacked into /opt/softhsm-arm64 (Debian's libsofthsm2 cannot be
#              installed for two machines at once): the hardware-key tests under qemu
#              (scripts/test-emulated.sh linux-arm64-gnu)
# Debian or Ubuntu; uses sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_UPDATED=""

apt_install () {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  echo "toolchains: apt-get install ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

linux () {
  if ! python3 -m ziglang version >/dev/null 2>&1 || ! command -v cargo-zigbuild >/dev/null; then
    echo "toolchains: pip install ziglang cargo-zigbuild"
    python3 -m pip install -q --disable-pip-version-check ziglang cargo-zigbuild
  fi
  # cargo-zigbuild finds zig through `python3 -m ziglang` when no zig is on PATH.
  rustup target add x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf \
    x86_64-unknown-linux-musl aarch64-unknown-linux-musl 2>&1 | grep -v "is up to date" || true
}

emulation () {
  apt_install qemu-user-static binfmt-support libc6-arm64-cross libstdc++6-arm64-cross \
    libc6-armhf-cross libstdc++6-armhf-cross libatomic1-armhf-cross
  # The kernel runs foreign binaries (Node's own child processes included) through qemu once
  # binfmt_misc is mounted and the handlers are registered.
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || [ ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]; then
    $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || $SUDO update-binfmts --import qemu-aarch64 || true
    $SUDO update-binfmts --enable qemu-arm >/dev/null 2>&1 || $SUDO update-binfmts --import qemu-arm || true
  fi
  for arch in aarch64 arm; do
    [ -e "/proc/sys/fs/binfmt_misc/qemu-$arch" ] || { echo "toolchains: no binfmt handler for $arch" >&2; exit 1; }
  done
}

musl () {
  apt_install musl-tools
}

windows () {
  apt_install mingw-w64 wine64 nasm
  rustup target add x86_64-pc-windows-gnu 2>&1 | grep -v "is up to date" || true
}

lint () {
  apt_install shellcheck
}

network () {
  apt_install iproute2
}

filesystems () {
  apt_install btrfs-progs
}

pkcs11 () {
  apt_install softhsm2 opensc
}

SOFTHSM_ARM64=/opt/softhsm-arm64

pkcs11_arm64 () {
  [ -e "$SOFTHSM_ARM64/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so" ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    APT_UPDATED=""
  fi
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  local debs
  debs=$(mktemp -d)
  chmod 777 "$debs" # apt's download user writes there
  echo "toolchains: apt-get download libsofthsm2:arm64 libssl3:arm64 into $SOFTHSM_ARM64"
  (cd "$debs" && apt-get download -qq libsofthsm2:arm64 libssl3:arm64)
  $SUDO mkdir -p "$SOFTHSM_ARM64"
  for deb in "$debs"/*.deb; do $SUDO dpkg-deb -x "$deb" "$SOFTHSM_ARM64"; done
  rm -rf "$debs"
}

[ $# -gt 0 ] || set -- linux
for part in "$@"; do
  case "$part" in
    linux) linux ;;
    emulation) emulation ;;
    musl) musl ;;
    windows) windows ;;
    lint) lint ;;
    network) network ;;
    filesystems) filesystems ;;
    pkcs11) pkcs11 ;;
    pkcs11-arm64) pkcs11_arm64 ;;
    *) echo "toolchains: unknown part '$part' (linux, emulation, musl, windows, lint, network, filesystems, pkcs11, pkcs11-arm64)" >&2; exit 2 ;;
  esac
done
