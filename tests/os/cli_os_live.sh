#!/bin/bash
# tests/os/cli_os_live.sh — issue 13 acceptance on the running Debian kernel:
# `vmtrap run --snapshot CORE --hook do_sys_openat2,ksys_write,kernel_clone,do_exit --returns --json`
# resumes the snapshot on the emulator, hooks the four kernel functions by
# their kallsyms names with the monitor (hidden breakpoints) and logs every
# call and return decoded from the kernel's BTF with pid/tgid/comm. Over at
# least 20 loop ticks
# (scripts/linux-guest/init: cat /etc/tickfile >/dev/null; echo $i >/tmp/tickout;
# /bin/true; echo "tick $i pid $$"; sleep 1):
#  - jq parses every line;
#  - the decoded file names are exactly the ones the loop opens;
#  - the written buffers contain the tick lines the console shows, written
#    by the loop shell, and the tick numbers it writes to /tmp/tickout;
#  - every tick has its forks (cat, true, sleep) and their exits;
#  - pids and comms are those of the loop's processes;
#  - returns: ksys_write returns its count, do_sys_openat2 a descriptor,
#    kernel_clone the pid of a child whose do_exit is seen.
# Exit 77 when the snapshot was not made on this machine.
set -u
vmtrap=$1
insns=${2:-70000000}
dir=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot
core=$dir/core.elf
[ -r "$core" ] && [ -r "$dir/serial.txt" ] || { echo "SKIP: no snapshot at $dir"; exit 77; }
fails=0
check() { if jq -se "$2" "$log" > /dev/null; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log=$tmp/run.json
loop_pid=$(sed -n 's/^VMT-LOOP-PID \([0-9]*\).*/\1/p' "$dir/serial.txt" | tr -d '\r' | head -1)

"$vmtrap" run --snapshot "$core" --hook do_sys_openat2,ksys_write,kernel_clone,do_exit --returns \
    --instructions "$insns" --json > "$log" 2> "$tmp/err"; rc=$?
[ $rc = 0 ] || { echo "FAIL: run exited $rc: $(head -3 "$tmp/err")"; exit 1; }
jq -e . "$log" > /dev/null || { echo "FAIL: a line is not JSON"; exit 1; }
echo "ok: every line is JSON"
ticks=$(jq -s '[.[] | select(.event == "serial" and (.line | test("^tick [0-9]+ pid ")))] | length' "$log")
echo "ticks on the console during the run: $ticks"
[ "$ticks" -ge 20 ] || { echo "FAIL: fewer than 20 ticks ($ticks)"; exit 1; }
P=$loop_pid
# Ticks whose whole iteration (the lines before them) fell inside the run:
# all but the first seen.
check "every call carries pid, tgid and comm" \
  '[.[] | select(.event == "call")] | length > 0 and all(.[]; (.pid | type) == "number" and (.tgid | type) == "number" and (.comm | type) == "string")'
check "the file names are exactly the loop's: /dev/null, /etc/tickfile, /tmp/tickout" \
  '[.[] | select(.event == "call" and .symbol == "do_sys_openat2") | .args.filename.string] | unique == ["/dev/null", "/etc/tickfile", "/tmp/tickout"]'
check "opens come from the loop's processes" \
  "[.[] | select(.event == \"call\" and .symbol == \"do_sys_openat2\")] | all(.[]; if .args.filename.string == \"/etc/tickfile\" then .comm == \"cat\" and .pid != $P else .comm == \"sh\" and .pid == $P end)"
check "every tick line on the console was written by the loop shell (ksys_write buffer)" \
  "([.[] | select(.event == \"call\" and .symbol == \"ksys_write\" and .pid == $P) | .args.buf.preview | gsub(\"\\\\\\\\n\"; \"\")]) as \$w |
   [.[] | select(.event == \"serial\" and (.line | test(\"^tick \")))] | all(.[]; .line as \$l | \$w | index(\$l) != null)"
check "the shell writes each tick's number to /tmp/tickout" \
  "([.[] | select(.event == \"call\" and .symbol == \"ksys_write\" and .pid == $P) | .args.buf.preview | gsub(\"\\\\\\\\n\"; \"\")]) as \$w |
   [.[] | select(.event == \"serial\" and (.line | test(\"^tick \"))) | .line | split(\" \")[1]] | all(.[]; . as \$n | \$w | index(\$n) != null)"
check "every tick has its forks: at least 3 kernel_clone calls by the shell per tick" \
  "([.[] | select(.event == \"call\" and .symbol == \"kernel_clone\" and .pid == $P)] | length) >= 3 * ($ticks - 1)"
check "every fork's child exits: cat, true and sleep each exit once per tick" \
  "[.[] | select(.event == \"call\" and .symbol == \"do_exit\")] as \$e |
   all([\"cat\", \"true\", \"sleep\"][]; . as \$c | (\$e | map(select(.comm == \$c)) | length) >= $ticks - 1)"
check "exiting children are not the shell, and exit with code 0" \
  "[.[] | select(.event == \"call\" and .symbol == \"do_exit\")] | all(.[]; .pid != $P and .args.code == 0)"
check "the per-hook counts in the summary equal the calls logged" \
  '[.[] | select(.event == "call")] as $c | [.[] | select(.event == "note" and .what == "hooks") | .text | capture("^(?<s>[a-z_0-9]+): (?<n>[0-9]+) hits")] |
   length == 4 and all(.[]; .s as $s | (.n | tonumber) == ($c | map(select(.symbol == $s)) | length))'
check "returns: ksys_write returns the count it was given (the console took every byte)" \
  '([.[] | select(.event == "call" and .symbol == "ksys_write")]) as $c | ([.[] | select(.event == "return" and .symbol == "ksys_write")]) as $r |
   ($r | length) >= ($c | length) - 1 and all(range(0; $r | length); $c[.].args.count == $r[.].value)'
check "returns: do_sys_openat2 returns a file descriptor" \
  '[.[] | select(.event == "return" and .symbol == "do_sys_openat2")] | length > 0 and all(.[]; .value >= 0 and .value < 1024)'
check "returns: kernel_clone returns the pid of a child whose exit is seen (all but the last few)" \
  '[.[] | select(.event == "call" and .symbol == "do_exit") | .pid] as $exits |
   [.[] | select(.event == "return" and .symbol == "kernel_clone") | .value] as $kids |
   ($kids | length) > 0 and ([$kids[] | select(. as $k | $exits | index($k) == null)] | length) <= 3'
check "do_exit is not return-hooked (it never returns)" \
  '[.[] | select(.event == "return" and .symbol == "do_exit")] | length == 0'
echo "$fails check(s) failed"
[ $fails = 0 ]
