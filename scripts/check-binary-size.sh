#!/usr/bin/env bash
# The size bound of the release binary (issue 13): the stripped static
# slotctl that qemu/lib.sh builds must be at most 6 MiB. Run by
# scripts/test.sh after the QEMU run, on the binary that run built (no
# second release build). Prints the size; fails naming it when over.
#
# Usage: scripts/check-binary-size.sh [BINARY]
# Environment: SLOTCTL_MAX_BINARY_BYTES (default 6291456 = 6 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/x86_64-unknown-linux-gnu/release/slotctl}"
max="${SLOTCTL_MAX_BINARY_BYTES:-6291456}"

[[ -f "$bin" ]] || { echo "binary size: no binary at $bin (build it as qemu/lib.sh does)" >&2; exit 1; }
# The bound is for the binary as shipped: stripped and static. A binary
# with a symbol table or an ELF interpreter is not that binary.
if readelf -S -W "$bin" | grep -q '\.symtab'; then
  echo "binary size: $bin is not stripped" >&2
  exit 1
fi
if readelf -l -W "$bin" | grep -q 'INTERP'; then
  echo "binary size: $bin is dynamically linked (not the static build)" >&2
  exit 1
fi
size="$(stat -c %s "$bin")"
if ((size > max)); then
  echo "binary size: $bin is $size bytes, over the bound of $max bytes by $((size - max))" >&2
  exit 1
fi
echo "binary size: $bin is $size bytes (bound $max, $((max - size)) to spare)"
