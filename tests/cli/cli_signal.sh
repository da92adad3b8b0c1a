#!/usr/bin/env bash
# tests/cli/cli_signal.sh VMTRAP WORKLOAD_ELF DRIVER — SIGINT and SIGTERM end
# a run cleanly: exit code 0, the summary is printed (readable and JSON),
# and it says the run was stopped on request. --limit ends a run the same
# way, and the summary says it was the time limit.
set -u
vmtrap=$1
guest=$2
driver=$3
failures=0
for sig in INT TERM; do
    for mode in text json; do
        out=$(mktemp)
        # The longest workload (100000 iterations): the signal always lands first.
        args=(run --guest "$guest" --driver "$driver" --hook svc_open,svc_write --set workload_iterations=100000)
        [ "$mode" = json ] && args+=(--json)
        "$vmtrap" "${args[@]}" >"$out" 2>&1 &
        pid=$!
        # Wait until the guest is running (the first call is logged), then signal.
        for _ in $(seq 1 100); do
            grep -q "svc_open" "$out" && break
            sleep 0.05
        done
        kill -s "$sig" "$pid"
        wait "$pid"
        rc=$?
        if [ "$mode" = json ]; then
            end=$(grep '"event":"summary"' "$out" | sed 's/.*"end":"\([^"]*\)".*/\1/')
        else
            end=$(grep '^== vmtrap summary' "$out" | sed 's/.*, //')
        fi
        if [ "$rc" -ne 0 ]; then
            echo "FAIL: SIG$sig ($mode): exit code $rc"; failures=$((failures + 1))
        elif [ -z "$end" ]; then
            echo "FAIL: SIG$sig ($mode): no summary"; tail -3 "$out"; failures=$((failures + 1))
        elif [ "$end" != "stopped on request (signal)" ]; then
            echo "FAIL: SIG$sig ($mode): summary says '$end'"; failures=$((failures + 1))
        else
            echo "ok: SIG$sig ($mode): $end"
        fi
        rm -f "$out"
    done
done
out=$(mktemp)
"$vmtrap" run --guest "$guest" --driver "$driver" --hook svc_open --limit 0.05 --quiet >"$out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] || ! grep -q '^== vmtrap summary: .*guest stopped: time limit' "$out"; then
    echo "FAIL: --limit 0.05: exit code $rc, summary: $(grep '^== vmtrap summary' "$out")"; failures=$((failures + 1))
else
    echo "ok: --limit 0.05 ends the run with the summary"
fi
rm -f "$out"
exit $((failures > 0))
