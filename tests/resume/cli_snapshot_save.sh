#!/bin/bash
# tests/resume/cli_snapshot_save.sh VMTRAP — `vmtrap snapshot save` on the
# project's Linux core: at N instructions, at a guest virtual time and at
# the N-th call of a kernel function, the saved file loads and its run
# prints exactly the console lines the uninterrupted run printed after that
# point (determinism across the save); the --at-hit file holds the guest's
# original code bytes at the function (read independently from the core
# here) with RIP at its entry; the reconstructions the saved state was
# derived from travel in the file and are listed when it is resumed; bad command lines exit 2 with one line.
# Skips (77) only without qemu-system-x86_64 (no snapshot can be made).
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
total=9000000

# Bad command lines: exit 2 and say why, nothing written.
usage_err() { # expected-message args...
  local want=$1; shift
  "$vmtrap" snapshot save "$@" 2>"$tmp/err" >/dev/null; local rc=$?
  [ $rc -eq 2 ] || fail "'$*' should exit 2, got $rc"
  grep -q -- "$want" "$tmp/err" || fail "'$*': message: $(cat "$tmp/err")"
}
usage_err "exactly one of" "$core" "$tmp/x.vmts"
usage_err "exactly one of" "$core" "$tmp/x.vmts" --at-instructions 5 --at-time 1
usage_err "SYMBOL:COUNT" "$core" "$tmp/x.vmts" --at-hit ksys_write:0
usage_err "SYMBOL:COUNT" "$core" "$tmp/x.vmts" --at-hit ksys_write:two
usage_err "guest seconds" "$core" "$tmp/x.vmts" --at-time -1
usage_err "count >= 1" "$core" "$tmp/x.vmts" --at-instructions 0
usage_err "needs FILE and OUT" "$core" --at-instructions 5
usage_err "unknown option" "$core" "$tmp/x.vmts" --at-instructions 5 --bogus
usage_err "no kernel symbol 'no_such_function_x'" "$core" "$tmp/x.vmts" --at-hit no_such_function_x
[ ! -e "$tmp/x.vmts" ] || fail "a usage error wrote a file"

# The uninterrupted run.
"$vmtrap" run --snapshot "$core" --instructions $total --json >"$tmp/whole.json" 2>"$tmp/err" ||
  fail "the whole run exit $?: $(tail -2 "$tmp/err")"

check() { # name save-options...
  local name=$1; shift
  "$vmtrap" snapshot save "$core" "$tmp/$name.vmts" "$@" --json >"$tmp/$name.save.json" 2>"$tmp/err" ||
    fail "$name: save exit $?: $(tail -2 "$tmp/err")"
  [ -s "$tmp/$name.vmts" ] || fail "$name: no file written"
  local k
  k=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"saved\"" in l][-1]["instructions"])' \
      "$tmp/$name.save.json") || fail "$name: no saved report"
  [ "$k" -gt 0 ] && [ "$k" -lt $total ] || fail "$name: saved after $k instructions, not inside the whole run"
  "$vmtrap" run --snapshot "$tmp/$name.vmts" --instructions $((total - k)) --json >"$tmp/$name.rest.json" \
    2>"$tmp/err" || fail "$name: run from the saved file exit $?: $(tail -2 "$tmp/err")"
  python3 - "$name" "$tmp/whole.json" "$tmp/$name.save.json" "$tmp/$name.rest.json" "$core" <<'PY' || exit 1
import json, struct, sys
name = sys.argv[1]
def load(p):
    return [json.loads(l) for l in open(p)]
whole, save, rest = load(sys.argv[2]), load(sys.argv[3]), load(sys.argv[4])
serial = lambda ev: [e["line"] for e in ev if e.get("event") == "serial"]
saved = [e for e in save if e.get("event") == "saved"][-1]
before, after = serial(save), serial(rest)
assert after and all(l.startswith("tick ") for l in after), "%s: the saved file printed %r" % (name, after[:3])
assert before + after == serial(whole), "%s: before %r + after %r != whole %r" % (name, before, after, serial(whole))
assert saved["reconstructions"] and any(n.startswith("vcpu0 lstar=") for n in saved["reconstructions"]), saved
carried = [e["text"] for e in rest if e.get("event") == "note" and e["text"].startswith("carried: ")]
assert carried == ["carried: " + n for n in saved["reconstructions"]], "%s: carried notes %r" % (name, carried[:2])
s = [e for e in rest if e.get("event") == "summary"][-1]
assert s["stop"] == "instruction limit", s
if saved["at"] == "time":
    assert saved["guest_ns"] >= 2000000000, saved   # at or after the guest time asked for
if saved["at"] == "hit":
    va = int(saved["address"], 16)
    assert int(saved["rip"], 16) == va and saved["hits"] == 2, saved
    # the function's bytes in the core (kernel text VA 0xffffffff81000000 = PA
    # 0x1000000 in this nokaslr snapshot), read from its PT_LOAD segments
    pa = va - 0xffffffff81000000 + 0x1000000
    f = open(sys.argv[5], "rb"); h = f.read(64)
    phoff, phentsize, phnum = struct.unpack_from("<Q", h, 32)[0], h[54] | h[55] << 8, h[56] | h[57] << 8
    code = None
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        typ, _, off, _, paddr, filesz = struct.unpack("<IIQQQQ", f.read(40))
        if typ == 1 and paddr <= pa < paddr + filesz:
            f.seek(off + pa - paddr); code = f.read(16).hex()
    assert code and code[:2] != "cc", code
    assert saved["entry_bytes_saved"] == code and saved["entry_bytes_match"], (saved, code)
print("%s ok: saved after %d instructions (guest %.3f s), %d lines before + %d after = the whole run's" %
      (name, saved["instructions"], saved["guest_ns"] / 1e9, len(before), len(after)))
PY
}
check insns --at-instructions 3000000
check time --at-time 2
check hit --at-hit ksys_write:2

# A file saved from a saved file carries the original reconstructions once
# ("carried: X", never "carried: carried: X").
"$vmtrap" snapshot save "$tmp/insns.vmts" "$tmp/again.vmts" --at-instructions 1000000 --json >"$tmp/again.save.json" \
  2>"$tmp/err" || fail "re-save exit $?: $(tail -2 "$tmp/err")"
"$vmtrap" run --snapshot "$tmp/again.vmts" --instructions 1000 --json >"$tmp/again.rest.json" 2>"$tmp/err" ||
  fail "run of the re-saved file exit $?: $(tail -2 "$tmp/err")"
python3 - "$tmp/insns.save.json" "$tmp/again.rest.json" <<'PY' || exit 1
import json, sys
first = [json.loads(l) for l in open(sys.argv[1])]
rest = [json.loads(l) for l in open(sys.argv[2])]
orig = [e for e in first if e.get("event") == "saved"][-1]["reconstructions"]
carried = [e["text"] for e in rest if e.get("event") == "note" and e["text"].startswith("carried: ")]
assert carried == ["carried: " + n for n in orig], "re-saved file: carried notes %r" % carried[:3]
print("re-saved ok: %d reconstructions carried once" % len(carried))
PY
echo "cli_snapshot_save: ok"
