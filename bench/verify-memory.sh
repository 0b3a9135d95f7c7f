#!/usr/bin/env bash
# Peak RSS of packing and verifying a 4 GiB payload (the bounded-memory
# claim: < 32 MiB), with compression none and zstd, under /usr/bin/time -v.
# The payload is a sparse 4 GiB file with a 1 MiB random block every 256 MiB,
# so it is quick to make; the image itself is written out in full (4 GiB of
# disk for `none`).
#
# Usage: bash bench/verify-memory.sh   (env SIZE_GIB=4, LIMIT_KIB=32768)
# Any failed command stops the bench with a line naming it (errexit also
# inside $(...) and functions); a peak over the limit is reported for each
# step and makes the exit status non-zero.
set -Eeuo pipefail
shopt -s inherit_errexit
# shellcheck disable=SC2317 # failed is called by the ERR trap
failed() { echo "bench/verify-memory.sh: line $2: failed (exit $1): $3" >&2; exit "$1"; }
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR
cd "$(dirname "$0")/.."
SIZE_GIB=${SIZE_GIB:-4}
LIMIT_KIB=${LIMIT_KIB:-32768}
[[ $SIZE_GIB =~ ^[1-9][0-9]*$ && $LIMIT_KIB =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: bash bench/verify-memory.sh   (SIZE_GIB, LIMIT_KIB: positive integers)" >&2
  exit 2
}

cargo build --release -p slotctl >&2
BIN=$PWD/target/release/slotctl
W=$(mktemp -d "${TMPDIR:-/var/tmp}/slotctl-mem.XXXXXX")
trap 'rm -rf "$W"' EXIT

"$BIN" keygen --out "$W/k" >/dev/null
truncate -s "${SIZE_GIB}G" "$W/root.raw"
for ((off = 0; off < SIZE_GIB * 1024; off += 256)); do
  head -c 1M /dev/urandom | dd of="$W/root.raw" bs=1M seek="$((off + 1))" conv=notrunc status=none
done

measure() { # label, command...: prints "label: S s, P KiB peak RSS"
  local label=$1
  shift
  if ! /usr/bin/time -f '%e %M' -o "$W/time" "$@" >/dev/null; then
    echo "bench/verify-memory.sh: $label failed, not measured: $*" >&2
    exit 1
  fi
  read -r secs kib < "$W/time"
  [[ $kib =~ ^[0-9]+$ ]] || {
    echo "bench/verify-memory.sh: $label: no peak RSS in $W/time" >&2
    exit 1
  }
  echo "$label: ${secs} s, ${kib} KiB peak RSS"
  if ((kib >= LIMIT_KIB)); then
    echo "FAILED: $label peaked at $kib KiB (limit $LIMIT_KIB KiB)" >&2
    status=1
  fi
}

status=0
# Each into a variable first: a failure inside $(...) in echo's arguments
# would be ignored.
CPU=$(lscpu | sed -n 's/^Model name: *//p')
NCPU=$(nproc)
MEM=$(free -g | awk '/^Mem:/ {print $2}')
RAW=$(stat -c %s "$W/root.raw")
echo "machine: $CPU, $NCPU CPUs, $MEM GiB RAM"
echo "payload: ${SIZE_GIB} GiB ($RAW bytes), sparse with random blocks"
for comp in none zstd; do
  measure "pack   ($comp)" "$BIN" image pack --key "$W/k.key" --version 1.0.0 --compatible mem \
    --rollback-index 1 --compression "$comp" --part "ROOT=$W/root.raw" -o "$W/img"
  size=$(stat -c %s "$W/img")
  echo "        image: $size bytes"
  measure "verify ($comp)" "$BIN" image verify --pubkey "$W/k.pub" "$W/img"
  measure "verify ($comp, stdin)" sh -c "\"$BIN\" image verify --pubkey \"$W/k.pub\" - < \"$W/img\""
  rm -f "$W/img"
done
exit "$status"
