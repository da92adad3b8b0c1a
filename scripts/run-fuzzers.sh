#!/usr/bin/env bash
# Run every libFuzzer target of a VMT_FUZZ=ON build for SECONDS each, seeded
# with fuzz/corpus/<target>/, new inputs in fuzz/findings/<target>/. Prints
# one line per target with libFuzzer's execution count; exits non-zero when a
# target found a crash, leak or timeout.
set -uo pipefail
build=${1:-build-fuzz}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
read -r -a targets < "$build/fuzzers.txt" || true
status=0
for t in "${targets[@]}"; do
  [ -x "$build/fuzz/$t" ] || continue
  corpus="$root/fuzz/corpus/$t"; work="$root/fuzz/findings/$t"
  mkdir -p "$work"
  log="$work/last.log"
  ( cd "$work" && "$root/$build/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$work/" "$work" $( [ -d "$corpus" ] && echo "$corpus" ) ) > "$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  [ -z "$execs" ] && execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
  echo "fuzz $t: ${seconds}s, ${execs:-?} executions, exit $rc"
  [ $rc -ne 0 ] && { status=1; tail -20 "$log"; }
done
echo "RESULT fuzz_targets=${#targets[@]} seconds_each=$seconds ok=$([ $status -eq 0 ] && echo 1 || echo 0)"
exit $status
