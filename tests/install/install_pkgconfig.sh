#!/usr/bin/env bash
# Install the build tree into a temporary prefix and use it the way a user
# would: pkg-config for flags, the installed CLI on PATH.
set -euo pipefail
build=$1
consumer=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -1)
export PKG_CONFIG_PATH=$libdir
test -f "$prefix/include/vmtrap/vmtrap.h" || { echo "headers not installed"; exit 1; }
# Fix the prefix the .pc file was configured with (the build's install prefix).
sed -i "s|^prefix=.*|prefix=$prefix|" "$libdir/vmtrap.pc"
cc -std=c11 -Wall -Werror $(pkg-config --cflags vmtrap) "$consumer" -o "$prefix/consumer" \
   $(pkg-config --libs vmtrap)
LD_LIBRARY_PATH=$(dirname "$libdir") "$prefix/consumer"
if [ -x "$build/tools/vmtrap" ]; then
  test -x "$prefix/bin/vmtrap" || { echo "CLI not installed"; exit 1; }
fi
echo "install + pkg-config consumer: ok"
