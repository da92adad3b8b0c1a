#!/usr/bin/env bash
# The main job: the demo monitor on the bundled workload guest.
# Usage: scripts/demo.sh [BUILD_DIR] [extra vmtrap demo options, e.g. --json]
# `vmtrap demo` picks the best driver built (emu, else kvm), hooks svc_open,
# svc_write, svc_spawn and svc_exit, and prints the decoded calls, the page
# events of the hooked pages, the guest's reports and the summary table.
set -euo pipefail
build=${1:-build}
shift || true
vmtrap="$build/tools/vmtrap"
if [ ! -x "$vmtrap" ]; then
    echo "demo: $vmtrap is not built (run 'make build' or 'cmake --build $build')" >&2
    exit 1
fi
exec "$vmtrap" demo "$@"
