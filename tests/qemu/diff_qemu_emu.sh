#!/bin/bash
# tests/qemu/diff_qemu_emu.sh — differential test (issue 16): the project's
# Linux snapshot under the qemu driver (QEMU's own saved state, -incoming,
# every device real) and under the emu driver (the ELF core resumed on the
# emulator + platform), hooks on do_sys_openat2, ksys_write, kernel_clone and
# do_exit. For every loop tick seen complete by both, the ordered lists of
# (function, decoded file name or written buffer) must be equal; a mismatch
# names the first difference (tick, position, both values).
#
# Ticks are aligned by the tick number in the written buffers: a call belongs
# to tick N from the write of "tick N pid P" up to the write of "tick N+1";
# calls before the first tick line and the last (unfinished) tick of each run
# are left out. Both runs go in parallel with bounded budgets: the emulator
# EMU_INSNS guest instructions, QEMU QEMU_SECONDS of wall time (each hit
# costs QEMU 0.1-0.3 s: its gdbstub flushes the translation cache at every
# stop), so the number of compared ticks depends on the machine's load; the
# test needs at least MIN_TICKS and prints how many it compared.
#
# Usage: diff_qemu_emu.sh VMTRAP_BINARY. Exit 77 only when qemu-system-x86_64
# (or jq) is missing; the snapshot cache comes from the resume fixture.
set -u
VMTRAP=$1
EMU_INSNS=${EMU_INSNS:-60000000}
QEMU_SECONDS=${QEMU_SECONDS:-40}
MIN_TICKS=${MIN_TICKS:-10}
# QEMU's guest clock: 1 ns per instruction, as the emulator's (resume's
# default 1e9 instructions/s). shift=auto (the driver's default) adapts the
# rate to the host's speed, so where a timer interrupt lands, and with it
# how the loop's processes interleave after a fork, would depend on the
# load (seen once under ASan with shift=auto: at tick 22 QEMU had a do_exit
# where the emulator had cat's open of /etc/tickfile); a fixed shift makes
# QEMU's run a function of the snapshot.
QEMU_ICOUNT=${QEMU_ICOUNT:-shift=0,sleep=off}
HOOKS=do_sys_openat2,ksys_write,kernel_clone,do_exit

command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: no qemu-system-x86_64"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: no jq"; exit 77; }
SNAP=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot
[ -f "$SNAP/info.json" ] || { echo "FAIL: no snapshot at $SNAP (the resume_linux_snapshot fixture makes it)"; exit 1; }

tmp=$(mktemp -d /tmp/vmt-diff-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# QEMU's resume command line from info.json, plus a console file.
mapfile -t qargs < <(jq -r '.qemu_resume_args[]' "$SNAP/info.json")
"$VMTRAP" run --driver qemu --symbols "$SNAP/serial.txt" --hook "$HOOKS" --json --limit "$QEMU_SECONDS" \
    -- qemu-system-x86_64 "${qargs[@]}" -icount "$QEMU_ICOUNT" -serial "file:$tmp/console.txt" >"$tmp/qemu.json" 2>"$tmp/qemu.err" &
qpid=$!
"$VMTRAP" run --snapshot "$SNAP/core.elf" --hook "$HOOKS" --json --instructions "$EMU_INSNS" \
    >"$tmp/emu.json" 2>"$tmp/emu.err"
erc=$?
wait $qpid
qrc=$?
[ $erc = 0 ] || { echo "FAIL: emu run exited $erc"; tail -3 "$tmp/emu.err"; exit 1; }
[ $qrc = 0 ] || { echo "FAIL: qemu run exited $qrc"; tail -3 "$tmp/qemu.err"; exit 1; }

# One line per call: TICK<TAB>FUNCTION<TAB>TEXT (TEXT: file name, written
# bytes with newlines as \n, or empty). Both drivers' JSON differ in shape:
# emu decodes with BTF (args.filename.string, args.buf.preview), qemu gives
# the strings/buffers its argument registers point to (rsi for both).
# shellcheck disable=SC2016
norm='
  def tickof: (capture("^tick (?<n>[0-9]+) pid") | .n | tonumber) // null;
  [ .[] | select(.event == "call") ] as $calls
  | reduce $calls[] as $c ({tick: null, out: []};
      ($c.text) as $t
      | (if $c.symbol == "ksys_write" then ($t | tickof) else null end) as $n
      | .tick = ($n // .tick)
      | if .tick == null then . else .out += [[.tick, $c.symbol, $t]] end)
  | .out[] | @tsv'
jq -s -r '[ .[] | select(.event == "call") | .text = (
      if .symbol == "do_sys_openat2" then .args.filename.string
      elif .symbol == "ksys_write" then .args.buf.preview
      else "" end) ] | .[] | tostring' "$tmp/emu.json" | jq -s -r "$norm" >"$tmp/emu.tsv" || exit 1
jq -s -r '[ .[] | select(.event == "call") | .text = (
      if .symbol == "do_sys_openat2" then (.strings.rsi // "")
      elif .symbol == "ksys_write" then ((.buffers.rsi // "") | gsub("\n"; "\\n"))
      else "" end) ] | .[] | tostring' "$tmp/qemu.json" | jq -s -r "$norm" >"$tmp/qemu.tsv" || exit 1

# Ticks complete in both: from the first tick of each to the last one minus one.
range() { awk -F'\t' 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo, hi - 1; else print 0, -1 }' "$1"; }
read -r elo ehi < <(range "$tmp/emu.tsv")
read -r qlo qhi < <(range "$tmp/qemu.tsv")
lo=$((elo > qlo ? elo : qlo))
hi=$((ehi < qhi ? ehi : qhi))
nt=$((hi - lo + 1))
echo "emu ticks $elo..$ehi, qemu ticks $qlo..$qhi (complete); comparing ticks $lo..$hi ($nt ticks)"
if [ $nt -lt "$MIN_TICKS" ]; then
    echo "FAIL: only $nt ticks in common (need $MIN_TICKS)"
    exit 1
fi

# Compare tick by tick; name the first difference.
awk -F'\t' -v lo="$lo" -v hi="$hi" -v failfile="$tmp/failtick" '
  FNR == 1 { f++ }
  $1 >= lo && $1 <= hi { k = $1 SUBSEP (++pos[f, $1]); v[f, k] = $2 "(" $3 ")"; n[f, $1] = pos[f, $1] }
  END {
    calls = 0
    for (t = lo; t <= hi; t++) {
      m = n[1, t] > n[2, t] ? n[1, t] : n[2, t]
      for (i = 1; i <= m; i++) {
        a = v[1, t SUBSEP i]; b = v[2, t SUBSEP i]
        if (a != b) {
          printf "FAIL: first difference at tick %d position %d: emu %s, qemu %s\n", t, i, \
                 a == "" ? "(no call)" : a, b == "" ? "(no call)" : b
          print t > failfile
          exit 1
        }
      }
      calls += m
    }
    printf "ok: %d ticks, %d calls, same ordered (function, text) list on emu and qemu\n", hi - lo + 1, calls
  }' "$tmp/emu.tsv" "$tmp/qemu.tsv" || {
    ft=$(cat "$tmp/failtick" 2>/dev/null || echo "$lo")
    echo "--- tick $ft on emu (tick function text) ---"; awk -F'\t' -v t="$ft" '$1 == t' "$tmp/emu.tsv"
    echo "--- tick $ft on qemu ---"; awk -F'\t' -v t="$ft" '$1 == t' "$tmp/qemu.tsv"
    [ -n "${VMT_DIFF_KEEP:-}" ] && cp "$tmp"/*.json "$VMT_DIFF_KEEP"/
    exit 1
}
# Every compared tick has all four functions (the loop's open, write, fork, exit).
for f in do_sys_openat2 ksys_write kernel_clone do_exit; do
    c=$(awk -F'\t' -v lo="$lo" -v hi="$hi" -v f="$f" '$1 >= lo && $1 <= hi && $2 == f { s[$1] = 1 } END { print length(s) }' "$tmp/qemu.tsv")
    [ "$c" = "$nt" ] || { echo "FAIL: $f seen in $c of $nt ticks"; exit 1; }
done
# The guest's console under QEMU shows the loop went on.
grep -q "tick $((hi + 1)) pid" "$tmp/console.txt" || { echo "FAIL: QEMU console lacks tick $((hi + 1))"; exit 1; }
exit 0
