#!/usr/bin/env bash
# Install the Debian 12 packages vmtrap builds and tests with, if any is missing.
#
# Unicorn: vmtrap needs >= 2.1 (physical memory map + TLB-fill hook, EFER.NXE/SCE kept,
# SYSRET). Debian 12 ships 2.0.1; Debian 13 (trixie) ships 2.1.1, whose library depends
# only on libc6 >= 2.34. We add a trixie source pinned at priority 100 (nothing else is
# ever taken from it unless asked by name) and install only libunicorn-dev from it. The
# mirror is the one this machine's apt already uses; no host name is written here.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

pkgs=(build-essential cmake pkg-config libcapstone-dev libelf-dev libdw-dev libjson-c-dev
      libcmocka-dev libbpf-dev libzstd-dev zlib1g-dev zstd jq clang libclang-rt-14-dev
      qemu-system-x86 busybox-static cpio python3 libexpat1-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

unicorn_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' libunicorn-dev 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 2.1
}

updated=0
apt_update() { [ $updated -eq 1 ] || { $SUDO apt-get update; updated=1; }; }

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_update
  $SUDO apt-get install -y "${missing[@]}"
fi

if ! unicorn_ok; then
  echo "installing Unicorn 2.1 (libunicorn-dev from Debian 13, pinned)"
  mirror=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -q '^Suites:.*bookworm' "$f"; then
      mirror=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' "$f")
      [ -n "$mirror" ] && break
    fi
  done
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
  fi
  if [ -z "$mirror" ]; then
    echo "install-deps: no Debian mirror found in apt's configuration; add a trixie source" >&2
    echo "  by hand and run: apt-get install -t trixie libunicorn-dev" >&2
    exit 1
  fi
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" | $SUDO tee /etc/apt/sources.list.d/vmtrap-trixie.sources >/dev/null
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
    | $SUDO tee /etc/apt/preferences.d/vmtrap-trixie >/dev/null
  updated=0
  apt_update
  $SUDO apt-get install -y -t trixie libunicorn-dev
  unicorn_ok || { echo "install-deps: libunicorn-dev >= 2.1 did not install" >&2; exit 1; }
fi
