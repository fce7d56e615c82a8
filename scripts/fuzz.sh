#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each on the nightly
# toolchain, and turns what it finds into regressions: each artifact libFuzzer writes (crash-,
# leak-, oom-, timeout-) is copied into fuzz/regressions/<target>/, which the stable test
# crates/fuzzing/tests/corpus.rs replays in `cargo test --workspace`.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     every target, or the ones named
#
# The last line of output is one JSON object: targets, seconds_each, crashes, crash_files, and
# the executions of each target. Environment:
#   FUZZ_TARGET_DIR  where the sanitizer builds go (default /var/tmp/trainmesh-fuzz-target, apart
#                    from the workspace's target dir so that they do not evict it)
#   FUZZ_WORK_DIR    the growing corpora, artifacts and logs (default $FUZZ_TARGET_DIR/work); the
#                    committed seeds in fuzz/corpus/ are read, never written
#   FUZZ_JOBS        run each target in libFuzzer's fork mode with this many jobs, going on past
#                    crashes (default: one process that stops at the first crash)
#   FUZZ_SANITIZER   cargo fuzz --sanitizer (default address)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/trainmesh-fuzz-target}
work=${FUZZ_WORK_DIR:-$CARGO_TARGET_DIR/work}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo +stable install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
cargo +nightly fuzz build --sanitizer "$sanitizer" >&2

extra=()
if [ -n "${FUZZ_JOBS:-}" ]; then
  extra=(-fork="$FUZZ_JOBS" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

crash_files=()
execs_json=""
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t" "$work/logs"
  log="$work/logs/$t.log"
  echo "== fuzzing $t for ${seconds}s (log: $log)" >&2
  status=0
  cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$t/" "${extra[@]}" >"$log" 2>&1 || status=$?
  # Executions: the final stats, or (fork mode) the last status line.
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
  fi
  execs=${execs:-0}
  found=0
  for artifact in "$work/artifacts/$t"/*; do
    [ -f "$artifact" ] || continue
    mkdir -p "fuzz/regressions/$t"
    dest="fuzz/regressions/$t/$(basename "$artifact")"
    cp "$artifact" "$dest"
    rm "$artifact"
    crash_files+=("$dest")
    found=$((found + 1))
  done
  echo "   $t: $execs executions, $found artifacts, exit $status" >&2
  if [ "$status" -ne 0 ] && [ "$found" -eq 0 ]; then
    echo "   $t: libFuzzer failed without an artifact; see $log" >&2
    tail -n 20 "$log" >&2
  fi
  execs_json+="${execs_json:+,}\"$t\":$execs"
done

join() { local IFS=,; echo "$*"; }
quoted_targets=()
for t in "${targets[@]}"; do quoted_targets+=("\"$t\""); done
quoted_files=()
for f in "${crash_files[@]}"; do quoted_files+=("\"$f\""); done
printf '{"targets":[%s],"seconds_each":%s,"crashes":%d,"crash_files":[%s],"execs":{%s}}\n' \
  "$(join "${quoted_targets[@]}")" "$seconds" "${#crash_files[@]}" \
  "$(join "${quoted_files[@]}")" "$execs_json"
