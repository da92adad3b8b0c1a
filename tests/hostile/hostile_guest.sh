#!/usr/bin/env bash
# tests/hostile/hostile_guest.sh VMTRAP HOSTILE_ELF DRIVER BREAKPOINTS —
# the hostile guest (guests/hostile, issue 15) under `vmtrap run --json`.
#
# The guest remaps its hooked function's page with a lone 4-byte store,
# rewrites that PTE thousands of times (8-byte stores, 4+4-byte halves,
# lock cmpxchg, some failing), builds a self-map and a loop on watched
# tables, and switches to a new address space where another hooked
# function's PTE has a reserved bit while it calls a healthy hooked one.
# Checked with jq, in order:
#  1. the run succeeds: exit 0, the guest finished with exit code 0 (its
#     own asserts held);
#  2. every hook's hit count equals the guest's own count of its calls
#     (REPORT calls.<fn>) — no hook was lost, not one call;
#  3. the guest did the rewrites it planned and the page-table monitor
#     followed them (one remap per rewrite at least);
#  4. the poisoned hook was refused under the new root only, with that
#     root and the reserved-bit reason in the summary, and is armed again
#     at exit; the other hooks were never refused.
# Exit 77 (skipped) when jq is missing.
set -u
vmtrap=$1
guest=$2
driver=$3
breakpoints=$4
command -v jq >/dev/null || { echo "jq not installed: skipped"; exit 77; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() { echo "FAIL ($driver, $breakpoints): $*"; grep -v '"event":"call"' "$log" | tail -5; exit 1; }

"$vmtrap" run --guest "$guest" --driver "$driver" --breakpoints "$breakpoints" \
    --hook hooked_fn,healthy_fn,poisoned_fn --json >"$log"
rc=$?
summary=$(jq -c 'select(.event == "summary")' "$log")
[ -n "$summary" ] || fail "no summary (exit $rc)"
echo "$summary" | jq -r '.hooks[] | "\(.symbol): \(.hits) hits, guest \(.guest_count), \(.state), \(.refusals) refusals"'

# 1. the run and the guest's own asserts
[ "$rc" -eq 0 ] || fail "exit code $rc"
[ "$(echo "$summary" | jq '.guest_exit_code')" = 0 ] || fail "guest exit code is not 0"

# 2. hits == the guest's own call counts, for every hook
for fn in hooked_fn healthy_fn poisoned_fn; do
    hits=$(echo "$summary" | jq --arg f "$fn" '.hooks[] | select(.symbol == $f) | .hits')
    calls=$(echo "$summary" | jq --arg f "$fn" '.hooks[] | select(.symbol == $f) | .guest_count')
    [ -n "$calls" ] && [ "$calls" != null ] || fail "$fn: the guest reported no count"
    [ "$hits" = "$calls" ] || fail "$fn: $hits hits for $calls calls"
done
[ "$(echo "$summary" | jq '.counts_match')" = true ] || fail "counts_match is false"

# 3. the rewrites happened and were followed
planned=$(jq -r 'select(.event == "guest" and .kind == "report" and .name == "rewrites") | .args[0]' "$log" | tail -1)
[ -n "$planned" ] && [ "$planned" -ge 1000 ] || fail "the guest reported ${planned:-no} rewrites, want >= 1000"
remaps=$(echo "$summary" | jq '.page_events.remap')
[ "$remaps" -ge "$planned" ] || fail "$remaps remap events for $planned rewrites"

# 4. the poisoned path: refused there only, named, armed again at exit
p=$(echo "$summary" | jq -c '.hooks[] | select(.symbol == "poisoned_fn")')
[ "$(echo "$p" | jq '.refusals')" -ge 1 ] || fail "poisoned_fn was never refused under the poisoned root"
echo "$p" | jq -r '.refused_why' | grep -q "reserved bits" || fail "poisoned_fn's refusal does not say why"
[ "$(echo "$p" | jq -r '.state')" = armed ] || fail "poisoned_fn is not armed again at exit"
for fn in hooked_fn healthy_fn; do
    r=$(echo "$summary" | jq --arg f "$fn" '.hooks[] | select(.symbol == $f) | .refusals')
    [ "$r" = 0 ] || fail "$fn was refused $r times (only poisoned_fn's path is bad)"
done
[ "$(echo "$summary" | jq '.monitor.hook_refusals')" -ge 1 ] || fail "monitor.hook_refusals is 0"
echo "ok: hostile guest on $driver with --breakpoints $breakpoints"
