#!/usr/bin/env bash
# `vmtrap snapshot info|convert` as a user runs it: a synthetic QEMU core is
# listed (memory map, vCPU, no fixups before reconstruction), converted to a
# vmtrap snapshot whose listing shows every reconstruction with its reason;
# a bad sidecar, a truncated core and bad usage each give one line on
# stderr and the documented exit code, and convert then writes nothing.
set -u
VMTRAP=$1
MAKE_CORE=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$MAKE_CORE" "$dir/core.elf" || fail "cannot make the core"

out=$("$VMTRAP" snapshot info "$dir/core.elf") || fail "info exit $?"
grep -q '^kind: QEMU ELF core$' <<<"$out" || fail "kind: $out"
grep -q '^ram: 0x0 +0x100000$' <<<"$out" || fail "ram block: $out"
grep -q '^ram: 0xfffc0000 +0x40000$' <<<"$out" || fail "rom block: $out"
grep -q '^vcpu 0: rip 0xffffffff81e3a0ae .* cr3 0x2000 .*(64-bit)$' <<<"$out" || fail "vcpu: $out"
grep -q '^vcpu 0: known regs,segments; reconstructed -$' <<<"$out" || fail "groups: $out"
grep -q '^fixup' <<<"$out" && fail "fixups before reconstruction: $out"

"$VMTRAP" snapshot convert "$dir/core.elf" "$dir/s.vmts" --meta '{"os":"test"}' || fail "convert exit $?"
out=$("$VMTRAP" snapshot info "$dir/s.vmts") || fail "info vmts exit $?"
grep -q '^kind: vmtrap snapshot$' <<<"$out" || fail "vmts kind: $out"
grep -q '"os":"test"' <<<"$out" || fail "metadata: $out"
grep -q '^fixup: vcpu 0 efer = 0x[0-9a-f]* (long mode' <<<"$out" || fail "efer fixup: $out"
grep -q '^fixup: vcpu 0 apic_base = 0xfee00900 (PC default' <<<"$out" || fail "apic fixup: $out"
json=$("$VMTRAP" snapshot info "$dir/s.vmts" --json) || fail "json exit"
if command -v jq >/dev/null; then
  [ "$(jq -r '.vcpus[0].known' <<<"$json")" = "regs,segments,msrs,apic-base,fpu,tsc" ] || fail "json known: $json"
  [ "$(jq '.fixups | length' <<<"$json")" -ge 4 ] || fail "json fixups: $json"
fi

echo '{"vcpus":[{"lsatr":1}]}' > "$dir/bad.json"
err=$("$VMTRAP" snapshot convert "$dir/core.elf" "$dir/bad.vmts" --state "$dir/bad.json" 2>&1 >/dev/null)
rc=$?
[ $rc -eq 1 ] || fail "bad sidecar exit $rc"
[ "$(wc -l <<<"$err")" -eq 1 ] && grep -q 'vcpus\[0\].lsatr' <<<"$err" || fail "bad sidecar message: $err"
[ -e "$dir/bad.vmts" ] && fail "convert wrote a file after an error"

head -c 5000 "$dir/core.elf" > "$dir/cut.elf"
err=$("$VMTRAP" snapshot info "$dir/cut.elf" 2>&1 >/dev/null)
rc=$?
[ $rc -eq 1 ] || fail "truncated core exit $rc"
[ "$(wc -l <<<"$err")" -eq 1 ] && grep -q 'past the end' <<<"$err" || fail "truncated message: $err"

"$VMTRAP" snapshot info 2>/dev/null; [ $? -eq 2 ] || fail "no file: not a usage error"
"$VMTRAP" snapshot info "$dir/core.elf" --bogus 2>/dev/null; [ $? -eq 2 ] || fail "bad option: not a usage error"
echo "cli_snapshot: ok"
