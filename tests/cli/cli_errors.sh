#!/usr/bin/env bash
# tests/cli/cli_errors.sh VMTRAP GUEST_ELF — the CLI's usage errors.
#
# Each case must exit with the usage code (2), print exactly one line on
# stderr that names the problem, and print nothing on stdout (no guest ran).
set -u
vmtrap=$1
guest=$2
failures=0

expect_usage_error() {
    local want=$1; shift
    local out err rc
    out=$(mktemp); err=$(mktemp)
    "$vmtrap" "$@" >"$out" 2>"$err"
    rc=$?
    local lines
    lines=$(wc -l <"$err")
    if [ "$rc" -ne 2 ]; then
        echo "FAIL: vmtrap $*: exit code $rc, want 2"; failures=$((failures + 1))
    elif [ "$lines" -ne 1 ]; then
        echo "FAIL: vmtrap $*: $lines stderr lines, want 1:"; cat "$err"; failures=$((failures + 1))
    elif ! grep -qF -- "$want" "$err"; then
        echo "FAIL: vmtrap $*: stderr does not say '$want':"; cat "$err"; failures=$((failures + 1))
    elif [ -s "$out" ]; then
        echo "FAIL: vmtrap $*: unexpected stdout:"; cat "$out"; failures=$((failures + 1))
    else
        echo "ok: vmtrap $* -> $(cat "$err")"
    fi
    rm -f "$out" "$err"
}

expect_usage_error "missing command"
expect_usage_error "unknown command 'frobnicate'" frobnicate
expect_usage_error "unknown option '--bogus'" run --bogus
expect_usage_error "run: missing --guest IMAGE" run --driver emu --hook svc_open
expect_usage_error "run: missing --driver" run --guest "$guest" --hook svc_open
expect_usage_error "run: missing --hook" run --guest "$guest" --driver emu
expect_usage_error "unsupported driver 'xen'" run --guest "$guest" --driver xen --hook svc_open
expect_usage_error "--limit 'soon'" run --guest "$guest" --driver emu --hook guest_main --limit soon
expect_usage_error "given twice" run --guest "$guest" --driver emu --hook svc_open,svc_open
expect_usage_error "--returns: 'main' is not a --hook symbol" run --guest "$guest" --driver emu --hook svc_open --returns=main
expect_usage_error "--set 'x': expected SYMBOL=VALUE" run --guest "$guest" --driver emu --hook guest_main --set x
expect_usage_error "--set: unknown symbol 'no_such_var'" run --guest "$guest" --driver emu --hook guest_main --set no_such_var=1
expect_usage_error "--breakpoints 'magic'" run --guest "$guest" --driver emu --hook guest_main --breakpoints magic
expect_usage_error "empty symbol name" run --guest "$guest" --driver emu --hook svc_open,
expect_usage_error "guest image '/nonexistent/guest.elf'" run --guest /nonexistent/guest.elf --driver emu --hook svc_open
expect_usage_error "unknown symbol 'no_such_function'" run --guest "$guest" --driver emu --hook no_such_function
# A hook on data (a read-only table in the smoke guest) is refused by name.
expect_usage_error "is not code: it is a data object" run --guest "$guest" --driver emu --hook exception_names
# A corrupt e_shoff: the loader says the section headers are unreadable,
# not "unknown symbol".
badsh=$(mktemp)
cp "$guest" "$badsh"
printf '\xff\xff\xff\x7f' | dd of="$badsh" bs=1 seek=40 conv=notrunc status=none
expect_usage_error "section headers unreadable" run --guest "$badsh" --driver emu --hook guest_main
rm -f "$badsh"
# More hooks than debug registers: refused at start, naming what does not fit.
expect_usage_error "memset does not fit" run --guest "$guest" --driver emu --breakpoints debug \
    --hook guest_main,gdt_init,idt_init,memcpy,memset
expect_usage_error "--overflow 'debug'" run --guest "$guest" --driver emu --hook guest_main --overflow debug
# A file that is not an ELF image.
notelf=$(mktemp)
echo "not an elf" >"$notelf"
expect_usage_error "guest image '$notelf'" run --guest "$notelf" --driver emu --hook svc_open
rm -f "$notelf"

# --help is not an error.
if ! "$vmtrap" --help | grep -q "usage: vmtrap run"; then
    echo "FAIL: --help"; failures=$((failures + 1))
fi
exit $((failures > 0))
