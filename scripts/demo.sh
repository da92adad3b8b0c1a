#!/usr/bin/env bash
# The main job, in two parts.
# Usage: scripts/demo.sh [BUILD_DIR] [extra options for both runs, e.g. --json]
#  1. Linux with no profile: make (or reuse) the Debian 6.1 snapshot
#     (scripts/make-linux-snapshot.sh, cached under ${VMT_CACHE_DIR:-~/.cache/vmtrap}),
#     resume it on the emulator and hook do_sys_openat2, ksys_write,
#     kernel_clone and do_exit by their kallsyms names: every call and
#     return with pid, comm and arguments decoded from the kernel's own BTF,
#     then the summary. Skipped with a note when the snapshot cannot be made.
#  2. `vmtrap demo`: the bundled workload guest on the best driver built
#     (emu, else kvm), hooks on svc_open, svc_write, svc_spawn and svc_exit
#     with arguments decoded from its DWARF, page events, the guest's
#     stealth detectors and the summary table.
# VMT_DEMO_LINUX_INSNS sets how long the Linux part runs (default 60 M
# instructions, about 20 loop ticks).
set -euo pipefail
build=${1:-build}
shift || true
vmtrap="$build/tools/vmtrap"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -x "$vmtrap" ]; then
    echo "demo: $vmtrap is not built (run 'make build' or 'cmake --build $build')" >&2
    exit 1
fi
core=${VMT_CACHE_DIR:-$HOME/.cache/vmtrap}/linux-snapshot/core.elf
echo "== 1. Linux: the Debian kernel's own symbols, types and processes (no profile)"
if bash "$here/make-linux-snapshot.sh" && [ -r "$core" ]; then
    "$vmtrap" symbols "$core" 'do_sys_openat2' "$@" || true
    "$vmtrap" run --snapshot "$core" --hook do_sys_openat2,ksys_write,kernel_clone,do_exit --returns \
        --instructions "${VMT_DEMO_LINUX_INSNS:-60000000}" "$@" || echo "demo: the Linux run failed (see above)" >&2
else
    echo "demo: no Linux snapshot (scripts/make-linux-snapshot.sh failed); skipping part 1" >&2
fi
echo "== 2. The workload guest: stealth detectors"
exec "$vmtrap" demo "$@"
