#!/bin/bash
# tests/os/cli_os.sh — `vmtrap ps` and `vmtrap symbols` on the Debian
# snapshot, as a user runs them: the loop shell and init listed with their
# pids (the shell's pid as the guest printed it), the demo's hook targets
# with their addresses (as the guest's /proc/kallsyms says) and BTF
# prototypes, every --json line parsed by jq, usage errors exit 2.
# Exit 77 when the snapshot was not made on this machine.
set -u
vmtrap=$1
dir=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot
core=$dir/core.elf
[ -r "$core" ] && [ -r "$dir/serial.txt" ] || { echo "SKIP: no snapshot at $dir"; exit 77; }
fails=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
loop_pid=$(sed -n 's/^VMT-LOOP-PID \([0-9]*\).*/\1/p' "$dir/serial.txt" | tr -d '\r' | head -1)

"$vmtrap" ps "$core" > "$tmp/ps.txt"; rc=$?
check "ps exits 0" '[ $rc = 0 ]'
check "ps lists init (pid 1) and swapper/0" 'grep -qE "^ +1 +1 +0  init " "$tmp/ps.txt" && grep -q " swapper/0 " "$tmp/ps.txt"'
check "ps lists the loop shell with the pid it printed ($loop_pid)" \
    'grep -qE "^ +$loop_pid +$loop_pid +1  sh " "$tmp/ps.txt"'

"$vmtrap" ps "$core" --json > "$tmp/ps.json"; rc=$?
check "ps --json: every line is JSON" '[ $rc = 0 ] && jq -e . "$tmp/ps.json" > /dev/null'
check "ps --json: the shell has a page-table root, init_task none" \
    'jq -se --argjson p "$loop_pid" "(map(select(.event == \"task\" and .pid == \$p)) | .[0].pgd | startswith(\"0x\")) and (map(select(.event == \"task\" and .pid == 0)) | .[0].pgd == null)" "$tmp/ps.json" > /dev/null'

"$vmtrap" symbols "$core" 'do_sys_openat2' > "$tmp/sym.txt"; rc=$?
want=$(sed -n 's/^\([0-9a-f]*\) [tT] do_sys_openat2$/\1/p' "$dir/serial.txt" | tr -d '\r' | head -1)
check "symbols: do_sys_openat2 at the guest's own address ($want)" \
    '[ $rc = 0 ] && [ -n "$want" ] && grep -q "^$want t do_sys_openat2  long int do_sys_openat2(int dfd, const char \*filename, struct open_how \*how)$" "$tmp/sym.txt"'
"$vmtrap" symbols "$core" '*_clone' --json > "$tmp/sym.json"; rc=$?
check "symbols --json: a glob, prototypes from BTF" \
    '[ $rc = 0 ] && jq -se "map(select(.event == \"symbol\" and .name == \"kernel_clone\")) | .[0].prototype == \"pid_t kernel_clone(struct kernel_clone_args *args)\"" "$tmp/sym.json" > /dev/null'
"$vmtrap" symbols "$core" 'do_exit' --no-btf > "$tmp/nobtf.txt"; rc=$?
check "symbols without BTF: still the address, no prototype, a one-line note why" \
    '[ $rc = 0 ] && grep -q "^[0-9a-f]\{16\} T do_exit$" "$tmp/nobtf.txt" && grep -q "types not loaded" "$tmp/nobtf.txt"'
"$vmtrap" symbols "$core" 'no_such_symbol_anywhere' > /dev/null 2> "$tmp/err"; rc=$?
check "symbols: no match exits 1 with a message" '[ $rc = 1 ] && grep -q "no kernel symbol matches" "$tmp/err"'
"$vmtrap" ps > /dev/null 2> "$tmp/err"; rc=$?
check "ps without a file: usage error 2" '[ $rc = 2 ] && [ $(wc -l < "$tmp/err") = 1 ]'
"$vmtrap" ps /etc/hostname > /dev/null 2> "$tmp/err"; rc=$?
check "ps on a non-snapshot: error 2, one line" '[ $rc = 2 ] && [ $(wc -l < "$tmp/err") = 1 ]'
echo "$fails check(s) failed"
[ $fails = 0 ]
