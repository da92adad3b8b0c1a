#!/usr/bin/env bash
# Build (once) a real Linux snapshot for vmtrap's tests and benchmarks.
#
# What: Debian's stock kernel (the linux-image-6.*-amd64 package that linux-image-amd64
# currently depends on, fetched with `apt-get download`, unpacked with `dpkg-deb -x` into a
# temp dir; the host's /boot is never touched) boots under qemu-system-x86_64 (TCG) with a
# busybox-static initramfs whose /init (scripts/linux-guest/init) prints a /proc/kallsyms
# sample, its pid, and then loops (cat a file, write a file, fork+exec /bin/true, print
# "tick N pid P", sleep 1). When the console shows tick $VMT_SNAPSHOT_TICKS (default 5) the
# machine is paused over QMP, its RAM dumped (dump-guest-memory, paging=false) and its
# whole state saved (migrate to "exec:zstd -c > qemu-state.zst").
#
# Output: ${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot/
#   core.elf        ELF core of guest-physical memory (+ QEMU CPU note)
#   qemu-state.zst  QEMU migration stream; resume with the args in info.json + -incoming
#   serial.txt      console up to the pause (kallsyms sample, VMT-LOOP-PID, tick lines)
#   registers.txt   `info registers` at the pause (HMP)
#   info.json       versions, the QEMU resume command line, loop pid, tick count, RIP, CR3
#   vmlinuz, initrd.cpio.gz, System.map + config (when the package ships them)
#
# Invariants: the output directory is either absent or complete (built in a temp dir next
# to it and renamed at the end; info.json "complete": true is written last). A complete
# cache is reused as is (--force rebuilds). Concurrent runs serialise on a lock file.
# Exit status: 0 on success, non-zero with a message on stderr on any failure.
set -euo pipefail

die() { echo "make-linux-snapshot: error: $*" >&2; exit 1; }
say() { echo "make-linux-snapshot: $*" >&2; }

force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$a' (use --force to rebuild)" ;;
  esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest_init="$here/linux-guest/init"
cache_root=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}
out="$cache_root/linux-snapshot"
ticks=${VMT_SNAPSHOT_TICKS:-5}
boot_timeout=${VMT_SNAPSHOT_BOOT_TIMEOUT:-150}
[[ "$ticks" =~ ^[1-9][0-9]*$ ]] || die "VMT_SNAPSHOT_TICKS must be a positive integer"

required_files=(core.elf qemu-state.zst serial.txt info.json vmlinuz initrd.cpio.gz)
cache_complete() {
  local f
  for f in "${required_files[@]}"; do [ -s "$out/$f" ] || return 1; done
  grep -q '"complete": true' "$out/info.json"
}

mkdir -p "$cache_root" || die "cannot create cache directory $cache_root"
# One builder at a time; a second caller waits, then finds the cache complete.
exec 9>"$cache_root/.linux-snapshot.lock"
flock 9 || die "cannot lock $cache_root/.linux-snapshot.lock"

if [ $force -eq 0 ] && cache_complete; then
  say "cache is complete: $out"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb qemu-system-x86_64 zstd cpio gzip flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/install-deps.sh)"
done
python=$(command -v python3 || true)
[ -n "$python" ] || die "python3 not found (needed for the QMP helper)"
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found (install busybox-static)"
if command -v ldd >/dev/null && ldd "$busybox" 2>/dev/null | grep -q '=>'; then
  die "$busybox is dynamically linked; install busybox-static"
fi
[ -f "$guest_init" ] || die "guest init script $guest_init missing"

work=$(mktemp -d "$cache_root/linux-snapshot.tmp.XXXXXX") || die "mktemp failed"
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ -n "$work" ] && [ "${VMT_SNAPSHOT_KEEP_FAILED:-0}" = 1 ]; then
    echo "make-linux-snapshot: kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t_start=$(date +%s)

# ---- 1. the kernel package --------------------------------------------------------------
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
      | awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.[0-9.]+-[0-9]+-amd64$/ { print $2; exit }')
[ -n "$pkg" ] || die "cannot resolve the kernel package linux-image-amd64 depends on (apt-get update?)"
pkgver=$(apt-cache policy "$pkg" | awk '$1 == "Candidate:" { print $2 }')
[ -n "$pkgver" ] && [ "$pkgver" != "(none)" ] || die "no candidate version of $pkg"
kernel_release=${pkg#linux-image-}
debs="$cache_root/downloads"
mkdir -p "$debs"
deb=$(ls "$debs/${pkg}_${pkgver//:/%3a}_amd64.deb" 2>/dev/null || true)
if [ -z "$deb" ]; then
  say "downloading $pkg $pkgver"
  rm -f "$debs/${pkg}_"*.deb   # an older version of the same package is no use
  (cd "$work" && apt-get download "$pkg=$pkgver" >/dev/null 2>"$work/apt.err") \
    || die "apt-get download $pkg=$pkgver failed: $(tail -n 3 "$work/apt.err")"
  mv "$work/${pkg}_"*.deb "$debs/" || die "downloaded .deb not found"
  deb=$(ls "$debs/${pkg}_"*.deb)
fi
dpkg-deb -x "$deb" "$work/pkg" || die "dpkg-deb -x $deb failed"
vmlinuz="$work/pkg/boot/vmlinuz-$kernel_release"
[ -f "$vmlinuz" ] || die "$deb has no boot/vmlinuz-$kernel_release"
cp "$vmlinuz" "$work/vmlinuz"
# Debian ships a one-line placeholder System.map (the real one is in the -dbg package).
smap="$work/pkg/boot/System.map-$kernel_release"
if [ -f "$smap" ] && [ "$(wc -l <"$smap")" -gt 1000 ]; then cp "$smap" "$work/System.map"; fi
[ -f "$work/pkg/boot/config-$kernel_release" ] && cp "$work/pkg/boot/config-$kernel_release" "$work/config"
rm -rf "$work/pkg"

# ---- 2. the initramfs ---------------------------------------------------------------------
root="$work/initramfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$guest_init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
echo "vmtrap tick file" >"$root/etc/tickfile"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
  | gzip -9 -n >"$work/initrd.cpio.gz" || die "packing the initramfs failed"
rm -rf "$root"

# ---- 3. QMP helper (stdlib only) -------------------------------------------------------
cat >"$work/qmp.py" <<'PYEOF'
# usage: qmp.py SOCKET TIMEOUT_S JSON_COMMAND...  -> one JSON "return" per line on stdout
import json, socket, sys, time
sock_path, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
while True:
    try:
        s.connect(sock_path)
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit("qmp: cannot connect to %s: %s" % (sock_path, e))
        time.sleep(0.1)
f = s.makefile("rwb")
def recv():
    while True:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = f.readline()
        except socket.timeout:
            sys.exit("qmp: no reply within %.0f s" % timeout)
        if not line:
            sys.exit("qmp: QEMU closed the connection")
        msg = json.loads(line)
        if "event" not in msg:
            return msg
def call(cmd):
    f.write((json.dumps(cmd) + "\n").encode()); f.flush()
    msg = recv()
    if "error" in msg:
        sys.exit("qmp: %s failed: %s" % (cmd.get("execute"), msg["error"].get("desc")))
    return msg.get("return")
greeting = recv()
if "QMP" not in greeting:
    sys.exit("qmp: unexpected greeting %r" % greeting)
call({"execute": "qmp_capabilities"})
for arg in sys.argv[3:]:
    print(json.dumps(call(json.loads(arg))), flush=True)
PYEOF
qmp() { "$python" "$work/qmp.py" "$work/qmp.sock" 60 "$@"; }

# ---- 4. boot ----------------------------------------------------------------------------
# Arguments needed to resume the saved state (plus -incoming and a console/QMP of one's own).
machine_args=(-accel tcg -machine pc -cpu qemu64 -m 256M -smp 1 -nodefaults -display none)
cmdline="console=ttyS0 nokaslr quiet panic=-1"
say "booting $kernel_release under TCG (waiting for tick $ticks)"
qemu-system-x86_64 "${machine_args[@]}" -kernel "$work/vmlinuz" -initrd "$work/initrd.cpio.gz" \
  -append "$cmdline" -serial "file:$work/serial.txt" -qmp "unix:$work/qmp.sock,server=on,wait=off" \
  -no-reboot >"$work/qemu.log" 2>&1 &
qemu_pid=$!

waited=0
while ! grep -q "^tick $ticks pid " "$work/serial.txt" 2>/dev/null; do
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    die "QEMU exited during boot: $(tail -n 5 "$work/qemu.log"); console tail: $(tail -n 5 "$work/serial.txt" 2>/dev/null)"
  fi
  if [ $waited -ge $((boot_timeout * 10)) ]; then
    die "no 'tick $ticks' on the console after ${boot_timeout}s; console tail: $(tail -n 5 "$work/serial.txt" 2>/dev/null)"
  fi
  sleep 0.1
  waited=$((waited + 1))
done

# ---- 5. pause, dump, save ---------------------------------------------------------------
qmp '{"execute":"stop"}' >/dev/null || die "QMP stop failed"
regs=$(qmp '{"execute":"human-monitor-command","arguments":{"command-line":"info registers"}}') \
  || die "QMP info registers failed"
"$python" -c 'import json,sys; sys.stdout.write(json.loads(sys.stdin.read()))' <<<"$regs" >"$work/registers.txt"
rip=$(grep -o 'RIP=[0-9a-f]*' "$work/registers.txt" | head -n 1 | cut -d= -f2)
cr3=$(grep -o 'CR3=[0-9a-f]*' "$work/registers.txt" | head -n 1 | cut -d= -f2)
[ -n "$rip" ] && [ -n "$cr3" ] || die "could not read RIP/CR3 from 'info registers'"
say "paused at RIP=0x$rip; dumping memory"
qmp "{\"execute\":\"dump-guest-memory\",\"arguments\":{\"paging\":false,\"protocol\":\"file:$work/core.elf\"}}" >/dev/null \
  || die "dump-guest-memory failed"
say "saving QEMU state"
qmp "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:zstd -q -c > $work/qemu-state.zst\"}}" >/dev/null \
  || die "migrate failed"
mig_status=""
for _ in $(seq 1 1200); do
  mig_status=$(qmp '{"execute":"query-migrate"}' | "$python" -c 'import json,sys; print(json.load(sys.stdin).get("status",""))') \
    || die "query-migrate failed"
  case "$mig_status" in
    completed) break ;;
    failed|cancelled) die "migration $mig_status: $(qmp '{"execute":"query-migrate"}')" ;;
  esac
  sleep 0.1
done
[ "$mig_status" = completed ] || die "migration did not complete (status '$mig_status')"
qmp '{"execute":"quit"}' >/dev/null 2>&1 || true
for _ in $(seq 1 100); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
zstd -q -t "$work/qemu-state.zst" || die "qemu-state.zst is corrupt"

# ---- 6. check and describe --------------------------------------------------------------
# The tty turns "\n" into "\r\n"; keep plain lines for whoever parses the console.
tr -d '\r' <"$work/serial.txt" >"$work/serial.tmp" && mv "$work/serial.tmp" "$work/serial.txt"
grep -q '^VMT-KALLSYMS-END' "$work/serial.txt" || die "console has no kallsyms sample"
loop_pid=$(awk '$1 == "VMT-LOOP-PID" { print $2; exit }' "$work/serial.txt")
[ -n "$loop_pid" ] || die "console has no VMT-LOOP-PID line"
last_tick=$(awk '$1 == "tick" && $3 == "pid" { n = $2 } END { print n + 0 }' "$work/serial.txt")
[ "$last_tick" -ge "$ticks" ] || die "console shows tick $last_tick < $ticks"
for sym in do_sys_openat2 ksys_write kernel_clone do_exit entry_SYSCALL_64 init_task __start_BTF __stop_BTF _text; do
  grep -q " $sym\$" "$work/serial.txt" || die "kallsyms sample lacks $sym"
done
core_magic=$(head -c 4 "$work/core.elf" | od -An -tx1 | tr -d ' \n')
[ "$core_magic" = 7f454c46 ] || die "core.elf is not an ELF file"
qemu_version=$(qemu-system-x86_64 --version | head -n 1)

VMT_OUT="$out" VMT_PKG="$pkg" VMT_PKGVER="$pkgver" VMT_REL="$kernel_release" \
VMT_QEMUVER="$qemu_version" VMT_CMDLINE="$cmdline" VMT_PID="$loop_pid" VMT_TICK="$last_tick" \
VMT_RIP="$rip" VMT_CR3="$cr3" VMT_ARGS="$(printf '%s\n' "${machine_args[@]}")" \
"$python" - >"$work/info.json" <<'PYEOF'
import json, os, time
e = os.environ
out = e["VMT_OUT"]
machine = e["VMT_ARGS"].splitlines()
boot = ["-kernel", "vmlinuz", "-initrd", "initrd.cpio.gz", "-append", e["VMT_CMDLINE"]]
rel = machine + boot + ["-incoming", "exec:zstd -dc qemu-state.zst"]
absolute = machine + ["-kernel", out + "/vmlinuz", "-initrd", out + "/initrd.cpio.gz",
                      "-append", e["VMT_CMDLINE"], "-incoming", "exec:zstd -dc " + out + "/qemu-state.zst"]
info = {
    "format": 1,
    "kernel_package": e["VMT_PKG"],
    "kernel_package_version": e["VMT_PKGVER"],
    "kernel_release": e["VMT_REL"],
    "kernel_cmdline": e["VMT_CMDLINE"],
    "qemu_version": e["VMT_QEMUVER"],
    "qemu_binary": "qemu-system-x86_64",
    "qemu_resume_args": absolute,
    "qemu_resume_args_relative": rel,
    "qemu_resume_note": "add your own -serial/-qmp/-gdb; the machine comes up paused, QMP 'cont' (or a gdbstub continue) runs it; 'relative' paths are relative to this directory",
    "loop_pid": int(e["VMT_PID"]),
    "tick_at_pause": int(e["VMT_TICK"]),
    "rip": "0x" + e["VMT_RIP"],
    "cr3": "0x" + e["VMT_CR3"],
    "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "complete": True,
}
print(json.dumps(info, indent=2))
PYEOF
[ -s "$work/info.json" ] || die "writing info.json failed"
rm -f "$work/qmp.py" "$work/qmp.sock" "$work/apt.err"
[ -s "$work/qemu.log" ] || rm -f "$work/qemu.log"
chmod 644 "$work"/*
chmod 755 "$work"

# ---- 7. publish atomically --------------------------------------------------------------
old=""
if [ -e "$out" ]; then
  old="$cache_root/linux-snapshot.old.$$"
  mv "$out" "$old" || die "cannot move the old $out aside"
fi
mv "$work" "$out" || die "cannot rename $work to $out"
work=""
[ -n "$old" ] && rm -rf "$old"
trap - EXIT
say "snapshot ready in $out ($kernel_release, $pkgver; loop pid $loop_pid, tick $last_tick, RIP 0x$rip) after $(( $(date +%s) - t_start ))s"
