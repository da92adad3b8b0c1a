#!/usr/bin/env bash
# tests/cli/cli_e2e.sh VMTRAP WORKLOAD_ELF DRIVER [ITERATIONS [BREAKPOINTS]] —
# the workload guest end to end (ITERATIONS: the guest's loop count, patched
# with --set; 8 is one round of every memory-manager operation, empty = the
# guest's 32; BREAKPOINTS: the --breakpoints mechanism, default auto).
#
# Runs `vmtrap run --json` with hooks on the four services (and, on the
# emulator, their returns) and checks the JSON log with jq:
#  - the run succeeds and the guest finishes with exit code 0;
#  - every hook's count equals the guest's own count of its calls
#    (REPORT calls.<svc>), across all the memory manager's page-outs,
#    page-ins, moves, splits, merges and table replacements;
#  - the calls of the main loop carry the arguments the guest passed
#    (paths, program names, fd, len, buffer preview, pids) and svc_spawn
#    returns the expected pids;
#  - page-out, page-in and remap events were seen;
#  - the 16 stealth detectors all pass (on the emulator driver; on KVM they
#    must all be reported, their verdicts are the driver's to state), but
#    those $skip turns off (see below).
# Detector 12 calls svc_spawn once through a second virtual address: shadow
# and exec breakpoints (physical) count it; debug registers (virtual) cannot,
# so with --breakpoints debug svc_spawn's hits are the guest's count minus
# that call (the summary says MISMATCH, which is the honest answer).
# With --breakpoints debug (4 debug registers) there is no room for return
# breakpoints, so returns are not checked then.
# Exit 77 (skipped) when jq is missing or the driver cannot run here.
set -u
vmtrap=$1
guest=$2
driver=$3
iterations=${4:-}
breakpoints=${5:-auto}
command -v jq >/dev/null || { echo "jq not installed: skipped"; exit 77; }
[ -r "$guest" ] || { echo "FAIL: no guest image $guest"; exit 1; }
returns=1
if [ "$driver" = kvm ]; then
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "no usable /dev/kvm: skipped"; exit 77; }
fi
# Debug registers (4) are all taken by the entry hooks: no return hooks then.
[ "$breakpoints" = debug ] && returns=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
extra=()
# Returns of every service (svc_exit's return site in detector 4 stores into
# its own hooked page: the monitor re-executes it for real).
[ "$returns" = 1 ] && extra=(--returns)
[ -n "$iterations" ] && extra+=(--set "workload_iterations=$iterations")
# Every detector must pass (ICEBP in detector 9 and the timing detector 16
# included); VMT_E2E_DETECTOR_SKIP leaves some out when debugging a driver.
skip=${VMT_E2E_DETECTOR_SKIP:-0}
extra+=(--set "workload_skip=$skip")
extra+=(--breakpoints "$breakpoints")
# A wall-clock watchdog as well (--limit counts guest time only): SIGINT
# ends the run cleanly with its summary, which then says why. 150 s: the
# shadow run takes ~70 s under ASan on this 2-core machine.
timeout -s INT 150 "$vmtrap" run --guest "$guest" --driver "$driver" --hook svc_open,svc_write,svc_spawn,svc_exit \
    "${extra[@]}" --json --limit 100 >"$log"
rc=$?
failures=0
check() { # description, jq expression that must print true, extra jq arguments
    local what=$1 expr=$2 got
    shift 2
    got=$(jq -s "$@" "$expr" "$log" 2>&1)
    if [ "$got" = "true" ]; then
        echo "ok: $what"
    else
        echo "FAIL: $what (jq says: $got)"
        failures=$((failures + 1))
    fi
}
# With debug registers the alias call of detector 12 is missed, so the hook
# counts differ and vmtrap says so with exit code 1: expected, checked below.
if [ "$rc" -eq 1 ] && [ "$breakpoints" = debug ] &&
   [ "$(jq -s 'last | .counts_match == false and .monitor.errors == 0 and .guest_exit_code == 0' "$log")" = true ]; then
    echo "ok: vmtrap exited with 1: debug registers cannot see the call through an alias"
    rc=0
fi
if [ "$rc" -ne 0 ]; then
    echo "FAIL: vmtrap exited with $rc"; failures=$((failures + 1))
    jq -c 'select(.event == "summary" or .event == "note" or (.event == "guest" and .kind == "assert_fail"))' "$log" | tail -5
fi
check "every line is a JSON object with an event" 'all(.[]; type == "object" and has("event"))'
check "exactly one summary, last" '(map(select(.event == "summary")) | length == 1) and (last.event == "summary")'
check "the run ended because the guest finished" 'last.end == "the guest finished"'
check "guest finished with exit code 0" 'last.guest_exit_code == 0'
check "four hooks, each with calls" '(last.hooks | length == 4) and all(last.hooks[]; .hits > 0)'
alias=$(jq -s 'map(select(.event == "guest" and .kind == "report" and .name == "alias_calls.svc_spawn")) | .[0].args[0] // 0' "$log")
if [ "$breakpoints" = debug ]; then
    check "hook counts equal the guest's own counts but the alias call debug registers cannot see" \
        'all(last.hooks[]; .guest_count == .hits + (if .symbol == "svc_spawn" then $alias else 0 end))' \
        --argjson alias "$alias"
else
    check "hook counts equal the guest's own counts (the call through an alias included)" \
        'last.counts_match and all(last.hooks[]; .guest_count == .hits)'
fi
[ "$returns" = 1 ] && check "every hooked call returned, and was seen returning" \
    'all(last.hooks[]; .returns == .hits) and last.monitor.returns_missed == 0'
[ "$returns" = 1 ] && check "svc_write returns len, svc_exit returns 0" \
    '. as $all | ($all | map(select(.event == "return" and .symbol == "svc_exit")) | all(.[]; .value == 0)) and
     ([$all[] | select(.event == "call" and .symbol == "svc_write")] as $c |
      [$all[] | select(.event == "return" and .symbol == "svc_write")] as $r |
      ($c | length) == ($r | length) and all(range(0; $c | length); $c[.].args.len == $r[.].written))'
check "call lines match the summary's counts" \
    '. as $all | all(last.hooks[]; .symbol as $s | .hits == ($all | map(select(.event == "call" and .symbol == $s)) | length))'
check "call numbers run 1..n per symbol" \
    '[.[] | select(.event == "call")] | group_by(.symbol) | all(.[]; [.[].n] == [range(1; length + 1)])'

# Arguments of the main loop (iterations reported by the guest).
n=$(jq -s 'map(select(.event == "guest" and .kind == "report" and .name == "iterations")) | .[0].args[0] // 0' "$log")
check "the guest reported its iteration count" "$n > 0"
check "svc_open(path) decoded: the loop's paths in order; every 8th one paged out and reported so" \
    '["/etc/passwd", "/var/log/vmtrap.log", "/tmp/scratch.bin", "/home/guest/notes.txt"] as $p |
     [.[] | select(.event == "call" and .symbol == "svc_open")][:$n] |
     (length == $n) and all(.[];
       if .n % 8 == 0 then .args.path.error == "paged-out" and .args.path.fault_va == .args.path.va
       else .args.path.string == $p[(.n - 1) % 4] end)' --argjson n "$n"
check "svc_write(fd, buf, len) decoded: fd, len, buffer preview; every 8th buffer paged out" \
    '"hello from the workload guest\n" as $msg |
     [.[] | select(.event == "call" and .symbol == "svc_write")][:$n] |
     (length == $n) and all(.[]; .args.fd >= 3 and
       if .n % 8 == 0 then .args.len == 27 and .args.buf.error == "paged-out"
       else .args.len == 30 - ((.n - 1) % 7) and
         ((.args.buf.preview | gsub("\\\\n"; "\n")) as $pv | ($pv | length) == .args.len and ($msg | startswith($pv)))
       end)' --argjson n "$n"
[ "$returns" = 1 ] && check "svc_write's fd is what svc_open returned" \
    '[.[] | select(.event == "return" and .symbol == "svc_open")][:$n] as $r |
     [.[] | select(.event == "call" and .symbol == "svc_write")][:$n] as $w |
     ($r | length == $n) and all(range(0; $n); $r[.].fd == $w[.].args.fd)' --argjson n "$n"
check "svc_spawn(name) decoded: the loop's programs in order" \
    '["init", "sh", "cron", "vmtrap-agent", "editor"] as $p |
     [.[] | select(.event == "call" and .symbol == "svc_spawn")][:$n] |
     (length == $n) and all(.[]; .args.name.string == $p[(.n - 1) % 5])' --argjson n "$n"
[ "$returns" = 1 ] && check "svc_spawn returns pids 100, 101, ..." \
    '[.[] | select(.event == "return" and .symbol == "svc_spawn")][:$n] |
     (length == $n) and all(.[]; .pid == 99 + .n)' --argjson n "$n"
check "svc_exit(pid) decoded: the spawned pids" \
    '[.[] | select(.event == "call" and .symbol == "svc_exit")][:$n] |
     (length == $n) and all(.[]; .args.pid == 99 + .n)' --argjson n "$n"

[ -n "$iterations" ] && check "the guest ran the iterations set with --set" "$n == $iterations"
check "the memory manager did every kind of operation on the hooked pages" \
    '[.[] | select(.event == "guest" and .kind == "step") | .name] | unique as $k |
     all(["pageout", "pagein", "move", "cmpxchg-fail", "replace-pt", "merge-2m", "split-2m"][]; . as $w | $k | index([$w]))'
check "page-out, page-in and remap events of hooked pages" \
    '(map(select(.event == "page-out")) | length > 0) and (map(select(.event == "page-in")) | length > 0) and
     (map(select(.event == "remap")) | length > 0)'
check "page events in the log equal the summary" \
    '(map(select(.event == "page-out")) | length) == last.page_events.page_out and
     (map(select(.event == "page-in")) | length) == last.page_events.page_in and
     (map(select(.event == "remap")) | length) == last.page_events.remap'
check "page events name a hooked symbol" \
    'all(.[] | select(.event == "page-in" or .event == "page-out" or .event == "remap"); .symbol | startswith("svc_"))'
check "no guest assertion failed" 'all(.[]; .event != "guest" or .kind != "assert-fail")'
check "the entry bytes the guest read equal the ELF file's" \
    '(last.entry_checks.checked == 4) and (last.entry_checks.mismatch == 0)'
check "the monitor survived no internal failure" 'last.monitor.errors == 0'
check "16 stealth detectors reported (but those skipped)" \
    '[last.detectors[].id] | sort == [range(1; 17) | select(($skip / pow(2; .) | floor) % 2 == 0)]' --argjson skip "$skip"
check "detector lines agree with the summary" \
    '[.[] | select(.event == "detector") | {id, pass}] == [last.detectors[] | {id, pass}]'
if [ "$driver" = emu ]; then
    check "all stealth detectors pass on the emulator" 'all(last.detectors[]; .pass)'
    if [ $(( skip >> 9 & 1 )) = 0 ] && [ $(( skip >> 17 & 1 )) = 0 ]; then
        check "detector 9 ran ICEBP (F1: #DB through the guest IDT)" \
            'any(last.detectors[]; .id == 9 and .pass and (.detail | test(", icebp")))'
    fi
else
    jq -r 'select(.event == "summary") | .detectors[] | "  detector \(.id) \(.name): \(if .pass then "pass" else "FAIL" end) \(.detail)"' "$log"
fi
# The readable log carries the same calls (KVM debug registers only: a
# second run is cheap there).
if [ "$driver" = kvm ] && [ "$breakpoints" = debug ]; then
    text=$(mktemp)
    timeout -s INT 150 "$vmtrap" run --guest "$guest" --driver "$driver" --hook svc_open,svc_write,svc_spawn,svc_exit \
        "${extra[@]}" --limit 100 >"$text" 2>&1
    calls_text=$(grep -c '^call ' "$text")
    calls_json=$(jq -s '[.[] | select(.event == "call")] | length' "$log")
    if [ "$calls_text" != "$calls_json" ]; then
        echo "FAIL: readable log has $calls_text call lines, JSON $calls_json"; failures=$((failures + 1))
    elif ! grep -q '^call    svc_open(path="/etc/passwd") #1 vcpu0$' "$text" ||
         ! grep -q '^call    svc_write(fd=[0-9]*, buf="hello from the workload guest\\n", len=30) #1 vcpu0$' "$text" ||
         ! grep -q '^call    svc_open(path=0x[0-9a-f]* ""<paged out at 0x[0-9a-f]*>) #8 vcpu0$' "$text" ||
         ! grep -q '^   svc_spawn  *[0-9]*  *-  *[0-9]*  ok$' "$text" ||
         ! grep -q '^   hook counts equal the guest.s own counts$' "$text"; then
        echo "FAIL: readable log lines differ from what is expected:"; grep -m3 '^call' "$text"; failures=$((failures + 1))
    else
        echo "ok: the readable log has the same $calls_text calls, decoded"
    fi
    rm -f "$text"
fi
echo "$failures check(s) failed"
exit $((failures > 0))
