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

# QEMU's `info registers -a` text as the sidecar: EFER from QEMU, the vCPU halted, live FPU
{
  echo "CPU#0"
  echo "RIP=ffffffff81e3a0ae RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1"
  echo "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000"
  echo "DR6=00000000ffff0ff0 DR7=0000000000000400"
  echo "EFER=0000000000000d01"
  echo "FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80"
  for i in 0 1 2 3 4 5 6 7; do echo "FPR$i=0000000000000000 0000"; done
  for i in $(seq -w 0 15); do echo "XMM$i=0000000000000000 3ff0000000000000"; done
} > "$dir/regs.txt"
"$VMTRAP" snapshot sidecar "$dir/regs.txt" > "$dir/regs.json" || fail "sidecar exit $?"
grep -q '"efer":"0xd01"' "$dir/regs.json" || fail "sidecar efer: $(cat "$dir/regs.json")"
out=$("$VMTRAP" snapshot info "$dir/core.elf" --qemu-registers "$dir/regs.txt") || fail "info --qemu-registers exit $?"
grep -q '^vcpu 0: .* efer 0xd01 ' <<<"$out" || fail "efer from QEMU: $out"
grep -q '^fixup: vcpu 0 halted = 0x1 (sidecar (QEMU info registers))$' <<<"$out" || fail "halted: $out"
sed -i '/XMM07/d' "$dir/regs.txt"
err=$("$VMTRAP" snapshot sidecar "$dir/regs.txt" 2>&1 >/dev/null)
[ $? -eq 1 ] && grep -q 'CPU#0 has no readable XMM07' <<<"$err" || fail "incomplete registers: $err"

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
