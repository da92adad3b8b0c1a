#!/usr/bin/env bash
# The main job: the demo monitor on the bundled workload guest.
set -euo pipefail
build=${1:-build}
exec "$build/tools/vmtrap" demo
