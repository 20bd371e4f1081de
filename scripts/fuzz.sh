#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a while each:
#   npm run fuzz                      every target for 60 s
#   npm run fuzz -- 600               every target for 10 minutes
#   npm run fuzz -- 120 frames outbox those two for 2 minutes
# Prints each target's runs, coverage and any finding, and exits non-zero if any target found
# something (the input is saved in fuzz/artifacts/<target>/; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>` from fuzz/).
# Needs no nightly: RUSTC_BOOTSTRAP=1 lets the stable compiler take cargo-fuzz's -Z flags.
# New inputs the fuzzer finds go to a scratch corpus (FUZZ_WORK, default target/fuzz-work),
# not to the small seed corpora committed in fuzz/corpus/.
set -euo pipefail

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=(decode frames roundtrip outbox session)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# AddressSanitizer where the toolchain ships its runtime, else libFuzzer alone.
sanitizer=address
host=$(rustc -vV | sed -n 's/^host: //p')
if ! ls "$(rustc --print sysroot)/lib/rustlib/$host/lib/"librustc-*_rt.asan.a >/dev/null 2>&1; then
  sanitizer=none
fi
echo "== building ${targets[*]} (sanitizer: $sanitizer)"
for target in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$sanitizer" "$target"
done

work=${FUZZ_WORK:-$root/target/fuzz-work}
summary=()
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "artifacts/$target"
  log="$work/$target.log"
  echo "== $target: ${seconds}s"
  status=0
  cargo fuzz run --sanitizer "$sanitizer" "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(sed -n 's/.* corp: \([0-9]*\/[^ ]*\).*/\1/p' <<<"$last")
  line="$target: ${runs:-?} runs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corpus:-?}"
  if [ "$status" -ne 0 ]; then
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    line="$line, FINDING (exit $status): ${artifact:-see $log}"
    echo "-- $target failed; the end of $log:"
    grep -E "panicked at|ERROR: |SUMMARY: |Test unit written|Error: " "$log" | head -20 || tail -30 "$log"
  else
    line="$line, no finding"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
