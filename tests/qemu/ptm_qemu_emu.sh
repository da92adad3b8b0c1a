#!/bin/bash
# tests/qemu/ptm_qemu_emu.sh — the page-table monitor on QEMU against the
# emulator (issue 16): the project's Linux snapshot under the qemu driver
# (QEMU's own saved state, -incoming, every device real; page tables watched
# through gdbstub watchpoints on the direct map) and under the emu driver (the
# ELF core on the emulator + platform; page tables write-protected in the
# monitor's view), both with `--watch-pages PID:heap` on the loop shell (pid
# from info.json): every page of its heap (mm->start_brk..brk), under the
# shell's own root. (Not its stack page too: with the stack's table page
# watched as well, QEMU's run copies the heap's first page at some forks and
# the emulator's never — the child's first store there (schedule_tail's
# set_child_tid) races the parent's; docs/qemu.md.) The shell forks every tick: fork write-protects its
# pages, and the shell's next store to each shared page copies it (Linux's
# wp_page_copy clears the entry, then sets the new frame: a PAGE_OUT and a
# PAGE_IN of the same va per copy).
#
# For every loop tick complete in both runs (aligned by the "tick N pid P"
# line the shell writes, ksys_write hooked on both), the ordered list of
# (kind, va) page events must be equal; the first difference is named. The
# frames differ between the runs after a few ticks (the page allocator's
# free lists follow the children's exits, whose timing differs), so they are
# counted but not compared. Fails when QEMU reports no page event in a
# compared tick, when fewer than MIN_TICKS ticks are common, or when the two
# runs did not resolve the same heap pages.
#
# Usage: ptm_qemu_emu.sh VMTRAP_BINARY. Exit 77 only when qemu-system-x86_64
# (or jq) is missing; the snapshot cache comes from the resume fixture.
set -u
VMTRAP=$1
EMU_INSNS=${EMU_INSNS:-60000000}
QEMU_SECONDS=${QEMU_SECONDS:-40}
MIN_TICKS=${MIN_TICKS:-10}
# 1 ns per instruction, as the emulator's clock (see diff_qemu_emu.sh).
QEMU_ICOUNT=${QEMU_ICOUNT:-shift=0,sleep=off}

command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: no qemu-system-x86_64"; exit 77; }
command -v jq >/dev/null || { echo "SKIP: no jq"; exit 77; }
SNAP=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot
[ -f "$SNAP/info.json" ] || { echo "FAIL: no snapshot at $SNAP (the resume_linux_snapshot fixture makes it)"; exit 1; }
PID=$(jq -r '.loop_pid' "$SNAP/info.json")
[ -n "$PID" ] && [ "$PID" != null ] || { echo "FAIL: info.json has no loop_pid"; exit 1; }
WATCH="$PID:heap"

tmp=$(mktemp -d /tmp/vmt-ptmdiff-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

mapfile -t qargs < <(jq -r '.qemu_resume_args[]' "$SNAP/info.json")
"$VMTRAP" run --driver qemu --symbols "$SNAP/serial.txt" --hook ksys_write --watch-pages "$WATCH" --json \
    --limit "$QEMU_SECONDS" -- qemu-system-x86_64 "${qargs[@]}" -icount "$QEMU_ICOUNT" \
    -serial "file:$tmp/console.txt" >"$tmp/qemu.json" 2>"$tmp/qemu.err" &
qpid=$!
"$VMTRAP" run --snapshot "$SNAP/core.elf" --hook ksys_write --watch-pages "$WATCH" --json \
    --instructions "$EMU_INSNS" >"$tmp/emu.json" 2>"$tmp/emu.err"
erc=$?
wait $qpid
qrc=$?
[ $erc = 0 ] || { echo "FAIL: emu run exited $erc"; tail -3 "$tmp/emu.err"; exit 1; }
[ $qrc = 0 ] || { echo "FAIL: qemu run exited $qrc"; tail -3 "$tmp/qemu.err"; exit 1; }

# The same pages watched on both (resolved from the same memory).
for r in emu qemu; do
    jq -r 'select(.event == "watch") | "\(.state) \(.va)"' "$tmp/$r.json" | sort >"$tmp/$r.watch"
done
cmp -s "$tmp/emu.watch" "$tmp/qemu.watch" || {
    echo "FAIL: the runs watch different pages"; diff "$tmp/emu.watch" "$tmp/qemu.watch" | head; exit 1; }
nw=$(grep -c '^watching' "$tmp/emu.watch")
grep -q "^watching" "$tmp/emu.watch" || { echo "FAIL: no page of pid $PID could be watched"; cat "$tmp/emu.watch"; exit 1; }

# One line per page event: TICK<TAB>KIND<TAB>VA<TAB>FRAMES. A tick runs from
# the write of "tick N pid P" up to the next one; events before the first
# tick line are left out.
# shellcheck disable=SC2016
norm='
  def tickof: (capture("^tick (?<n>[0-9]+) pid") | .n | tonumber) // null;
  reduce .[] as $e ({tick: null, out: []};
      if $e.event == "call" then .tick = (($e.text | tickof) // .tick)
      elif $e.event == "page" and .tick != null then
          .out += [[.tick, $e.kind, $e.va, "\($e.old_pa // "-")>\($e.new_pa // "-")"]]
      else . end)
  | .out[] | @tsv'
jq -s -r '[ .[] | select(.event == "call" or .event == "page")
            | if .event == "call" then .text = (.args.buf.preview // "") else . end ]' "$tmp/emu.json" |
    jq -r "$norm" >"$tmp/emu.tsv" || exit 1
jq -s -r '[ .[] | select(.event == "call" or .event == "page")
            | if .event == "call" then .text = (.buffers.rsi // "") else . end ]' "$tmp/qemu.json" |
    jq -r "$norm" >"$tmp/qemu.tsv" || exit 1

# Ticks complete in both: the first tick of each to its last one minus one.
range() { awk -F'\t' 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo, hi - 1; else print 0, -1 }' "$1"; }
read -r elo ehi < <(range "$tmp/emu.tsv")
read -r qlo qhi < <(range "$tmp/qemu.tsv")
lo=$((elo > qlo ? elo : qlo))
hi=$((ehi < qhi ? ehi : qhi))
nt=$((hi - lo + 1))
echo "pid $PID, $nw pages watched; emu ticks $elo..$ehi, qemu ticks $qlo..$qhi (with page events); comparing ticks $lo..$hi ($nt ticks)"
if [ $nt -lt "$MIN_TICKS" ]; then
    echo "FAIL: only $nt ticks in common (need $MIN_TICKS); qemu.err:"; tail -3 "$tmp/qemu.err"
    exit 1
fi

awk -F'\t' -v lo="$lo" -v hi="$hi" -v failfile="$tmp/failtick" '
  FNR == 1 { f++ }
  $1 >= lo && $1 <= hi { k = $1 SUBSEP (++pos[f, $1]); v[f, k] = $2 " " $3; fr[f, k] = $4; n[f, $1] = pos[f, $1] }
  END {
    events = 0; same_frames = 0
    for (t = lo; t <= hi; t++) {
      if (n[2, t] == 0) {
        printf "FAIL: QEMU reported no page event in tick %d (the emulator %d)\n", t, n[1, t]
        print t > failfile
        exit 1
      }
      m = n[1, t] > n[2, t] ? n[1, t] : n[2, t]
      for (i = 1; i <= m; i++) {
        a = v[1, t SUBSEP i]; b = v[2, t SUBSEP i]
        if (a != b) {
          printf "FAIL: first difference at tick %d event %d: emu %s, qemu %s\n", t, i, \
                 a == "" ? "(none)" : a, b == "" ? "(none)" : b
          print t > failfile
          exit 1
        }
        if (fr[1, t SUBSEP i] == fr[2, t SUBSEP i]) same_frames++
      }
      events += m
    }
    printf "ok: %d ticks, %d page events, same ordered (kind, va) list on emu and qemu (%d with the same frames too)\n", \
           hi - lo + 1, events, same_frames
  }' "$tmp/emu.tsv" "$tmp/qemu.tsv" || {
    ft=$(cat "$tmp/failtick" 2>/dev/null || echo "$lo")
    echo "--- tick $ft on emu (tick kind va frames) ---"; awk -F'\t' -v t="$ft" '$1 == t' "$tmp/emu.tsv"
    echo "--- tick $ft on qemu ---"; awk -F'\t' -v t="$ft" '$1 == t' "$tmp/qemu.tsv"
    [ -n "${VMT_DIFF_KEEP:-}" ] && cp "$tmp"/*.json "$VMT_DIFF_KEEP"/
    exit 1
}
# Each kind the fork's copy-on-write produces was seen on QEMU.
for k in page-out page-in; do
    c=$(awk -F'\t' -v lo="$lo" -v hi="$hi" -v k="$k" '$1 >= lo && $1 <= hi && $2 == k' "$tmp/qemu.tsv" | wc -l)
    [ "$c" -gt 0 ] || { echo "FAIL: no $k on QEMU in the compared ticks"; exit 1; }
done
jq -c 'select(.event == "watch_summary")' "$tmp/qemu.json"
grep -q "tick $((hi + 1)) pid" "$tmp/console.txt" || { echo "FAIL: QEMU console lacks tick $((hi + 1))"; exit 1; }
exit 0
