#!/usr/bin/env bash
# Install the Debian 12 packages vmtrap builds with, if any is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libunicorn-dev libcapstone-dev libelf-dev libjson-c-dev libcmocka-dev jq)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
