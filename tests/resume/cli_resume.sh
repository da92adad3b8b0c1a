#!/bin/bash
# tests/resume/cli_resume.sh VMTRAP — `vmtrap run --snapshot` on the
# project's Linux core: console lines as JSON serial events, reconstructions
# as notes, --runs 3 gives three identical consoles, --save-at writes a
# vmtrap snapshot whose run prints what the uninterrupted run printed after
# the save point; hooked --runs make identical calls and a hooked run saves
# a clean snapshot; bad command lines exit 2 with one line. Skips (77) only
# without qemu-system-x86_64 (no snapshot can be made).
set -u
vmtrap=$1
dir=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot
core=$dir/core.elf
if [ ! -r "$core" ]; then
  command -v qemu-system-x86_64 >/dev/null || { echo "skipped: no qemu-system-x86_64, no Linux snapshot"; exit 77; }
  echo "FAIL: no $core although QEMU is installed (fixture resume_linux_snapshot)"; exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Bad command lines: exit 2, one line on stderr.
"$vmtrap" run --snapshot "$core" 2>"$tmp/err" >/dev/null; [ $? -eq 2 ] || fail "no bound should be a usage error"
grep -q "needs a bound" "$tmp/err" || fail "no bound: message: $(cat "$tmp/err")"
"$vmtrap" run --snapshot "$tmp/none.elf" --instructions 1 2>"$tmp/err" >/dev/null; [ $? -eq 2 ] || fail "missing file should exit 2"
[ "$(wc -l <"$tmp/err")" -ge 1 ] || fail "missing file: no message"
"$vmtrap" run --snapshot "$core" --instructions 1 --runs 0 2>/dev/null >/dev/null; [ $? -eq 2 ] || fail "--runs 0 should exit 2"

# Three runs, restored in between: identical consoles, reconstructions listed.
"$vmtrap" run --snapshot "$core" --instructions 9000000 --runs 3 --json >"$tmp/runs.json" 2>"$tmp/err" ||
  fail "--runs 3 exit $?: $(tail -2 "$tmp/err") $(tail -2 "$tmp/runs.json")"
python3 - "$tmp/runs.json" <<'PY' || exit 1
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
notes = [e["text"] for e in ev if e.get("event") == "note" and e.get("what") == "reconstructed"]
assert any(n.startswith("vcpu0 lstar=") for n in notes), "no LSTAR reconstruction listed"
assert any(n.startswith("platform lapic") for n in notes), "no LAPIC reconstruction listed"
runs, cur = [], None
for e in ev:
    if e.get("event") == "serial":
        cur = cur if cur is not None else []
        cur.append(e["line"])
    if e.get("event") == "summary":
        runs.append((cur or [], e)); cur = None
assert len(runs) == 3, "expected 3 summaries, got %d" % len(runs)
first = runs[0][0]
assert first and all(l.startswith("tick ") for l in first), "run 1 console: %r" % first[:5]
for lines, s in runs:
    assert lines == first, "a run's console differs: %r vs %r" % (lines[:3], first[:3])
    assert s["stop"] == "instruction limit" and s["instructions"] == 9000000, s
    assert s["serial_hash"] == runs[0][1]["serial_hash"]
print("runs ok: %d ticks per run" % len(first))
PY

# Save mid-run, resume the saved file: the same console after the save point.
"$vmtrap" run --snapshot "$core" --instructions 9000000 --save-at 3000000 --save "$tmp/mid.vmts" --json \
  >"$tmp/whole.json" 2>"$tmp/err" || fail "--save-at exit $?: $(tail -2 "$tmp/err")"
[ -s "$tmp/mid.vmts" ] || fail "no snapshot written"
"$vmtrap" run --snapshot "$tmp/mid.vmts" --instructions 6000000 --json >"$tmp/rest.json" 2>"$tmp/err" ||
  fail "run from the saved file exit $?: $(tail -2 "$tmp/err")"
python3 - "$tmp/whole.json" "$tmp/rest.json" <<'PY' || exit 1
import json, sys
def load(p):
    return [json.loads(l) for l in open(p)]
whole, rest = load(sys.argv[1]), load(sys.argv[2])
after, seen = [], False
for e in whole:
    if e.get("event") == "note" and e.get("what") == "saved":
        seen = True
    elif seen and e.get("event") == "serial":
        after.append(e["line"])
assert seen, "no 'saved' note"
lines = [e["line"] for e in rest if e.get("event") == "serial"]
assert lines, "the saved snapshot printed nothing"
assert lines == after, "after the save: %r vs %r" % (after, lines)
print("save/resume ok: %d lines after the save point" % len(lines))
PY
# Hidden breakpoints on kernel functions (kallsyms + BTF from RAM): the loop's
# file names and console writes decoded, by the right processes, and the
# console still ticks (the guest does not see the breakpoints).
"$vmtrap" run --snapshot "$core" --instructions 3500000 --hook do_sys_openat2,ksys_write --json \
  >"$tmp/hooks.json" 2>"$tmp/err" || fail "--hook exit $?: $(tail -2 "$tmp/err")"
loop_pid=$(awk '$1 == "VMT-LOOP-PID" { print $2; exit }' "$dir/serial.txt")
python3 - "$tmp/hooks.json" "$loop_pid" <<'PY' || exit 1
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
calls = [e for e in ev if e.get("event") == "call"]
opens = [c for c in calls if c["symbol"] == "do_sys_openat2"]
writes = [c for c in calls if c["symbol"] == "ksys_write"]
assert any(c["args"]["filename"]["string"] == "/etc/tickfile" and c["comm"] == "cat" for c in opens), opens[:3]
loop_pid = int(sys.argv[2])
assert any(c["args"]["filename"]["string"] == "/tmp/tickout" and c["pid"] == loop_pid for c in opens), opens[:3]
assert any(c["args"]["buf"]["string"].startswith("tick ") for c in writes if "string" in c["args"].get("buf", {})) or \
       any("tick " in json.dumps(c["args"]) for c in writes), writes[:3]
serial = [e["line"] for e in ev if e.get("event") == "serial"]
assert serial and serial[0].startswith("tick ") and serial[0].endswith(" pid %d" % loop_pid), serial
s = [e for e in ev if e.get("event") == "summary"][0]
assert s["stop"] == "instruction limit", s
print("hooks ok: %d opens, %d writes decoded" % (len(opens), len(writes)))
PY

# A snapshot fuzzer's loop: hooked runs restored in between make the same
# calls with the same decoded arguments every run; a save in the middle of a
# hooked run holds the guest's own code (no INT3) and its run goes on to make
# the calls the hooked run made after the save point.
"$vmtrap" run --snapshot "$core" --instructions 6000000 --hook do_sys_openat2,ksys_write --returns --runs 3 \
  --save-at 2500000 --save "$tmp/hooked.vmts" --json >"$tmp/hruns.json" 2>"$tmp/err" ||
  fail "--hook --runs 3 exit $?: $(tail -2 "$tmp/err") $(tail -2 "$tmp/hruns.json")"
"$vmtrap" run --snapshot "$tmp/hooked.vmts" --instructions 3500000 --hook do_sys_openat2,ksys_write --returns \
  --json >"$tmp/hrest.json" 2>"$tmp/err" || fail "hooked run of the saved file exit $?: $(tail -2 "$tmp/err")"
python3 - "$tmp/hruns.json" "$tmp/hrest.json" <<'PY' || exit 1
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
key = lambda c: (c["event"], c["symbol"], c.get("pid"), json.dumps(c.get("args"), sort_keys=True), c.get("value"))
runs, cur, saved_at = [], [], None
for e in ev:
    if e.get("event") in ("call", "return"):
        cur.append(key(e))
    if e.get("event") == "note" and e.get("what") == "saved":
        saved_at = len(cur)
    if e.get("event") == "summary":
        runs.append((cur, e)); cur = []
assert len(runs) == 3, "expected 3 summaries, got %d" % len(runs)
first = runs[0][0]
assert any(k[1] == "do_sys_openat2" for k in first) and any(k[1] == "ksys_write" for k in first), first[:4]
assert any(k[0] == "return" for k in first), "no returns"
for i, (calls, s) in enumerate(runs):
    assert s["stop"] == "instruction limit" and s["instructions"] == 6000000, s
    assert calls == first, "run %d made other calls: first difference at %d" % (
        i + 1, next(j for j in range(min(len(calls), len(first)) + 1) if j >= min(len(calls), len(first)) or calls[j] != first[j]))
notes = [e["text"] for e in ev if e.get("event") == "note" and e.get("what") == "runs"]
assert notes and "identical hits" in notes[-1], notes
assert saved_at is not None, "no 'saved' note"
rest = [key(e) for e in (json.loads(l) for l in open(sys.argv[2])) if e.get("event") in ("call", "return")]
# the saved file's run may start inside a call made before the save (its
# return then comes first): compare the calls from the first entry on
after = first[saved_at:]
strip = lambda l: l[next((i for i, k in enumerate(l) if k[0] == "call"), len(l)):]
assert strip(rest) and strip(rest) == strip(after)[:len(strip(rest))], "after the save: %r vs %r" % (strip(rest)[:2], strip(after)[:2])
print("hooked runs ok: %d calls+returns per run, identical; %d after the save point match" % (len(first), len(strip(rest))))
PY
echo "cli_resume: ok"
