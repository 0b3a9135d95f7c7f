#!/usr/bin/env bash
# Verify throughput of `slotctl image verify` on an uncompressed 1 GiB image,
# as a ratio to `openssl dgst -sha256` on the same file in the same run
# (openssl time / slotctl time; the goal is >= 0.9).
#
# Usage: bash bench/verify.sh [RUNS]   (default 5; env SIZE_MIB=1024)
# Builds the release binary, works in a temporary directory, cleans up.
# Any failed command stops the bench with a line naming it: errexit also
# inside $(...) (inherit_errexit) and functions (errtrace), so a verify that
# fails is never timed as if it had succeeded.
set -Eeuo pipefail
shopt -s inherit_errexit
failed() { echo "bench/verify.sh: line $2: failed (exit $1): $3" >&2; exit "$1"; }
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SIZE_MIB=${SIZE_MIB:-1024}
[[ $RUNS =~ ^[1-9][0-9]*$ && $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: bash bench/verify.sh [RUNS]   (RUNS and SIZE_MIB: positive integers)" >&2
  exit 2
}

cargo build --release -p slotctl >&2
BIN=$PWD/target/release/slotctl
W=$(mktemp -d "${TMPDIR:-/var/tmp}/slotctl-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT

"$BIN" keygen --out "$W/bench" >/dev/null
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$W/root.raw"
"$BIN" image pack --key "$W/bench.key" --version 1.0.0 --compatible bench \
  --rollback-index 1 --compression none --part "ROOT=$W/root.raw" -o "$W/bench.img" >/dev/null
rm "$W/root.raw"
IMG=$W/bench.img
BYTES=$(stat -c %s "$IMG")
cat "$IMG" > /dev/null # page cache: both tools read the same warm file

seconds() { # run "$@", print elapsed seconds; stop the bench if it fails
  local t0=$EPOCHREALTIME
  if ! "$@" >/dev/null; then
    echo "bench/verify.sh: failed, not timed: $*" >&2
    exit 1
  fi
  awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN {printf "%.6f\n", a - b}'
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'; }

: > "$W/slotctl.t"
: > "$W/openssl.t"
for ((i = 1; i <= RUNS; i++)); do
  s=$(seconds "$BIN" image verify --pubkey "$W/bench.pub" "$IMG")
  o=$(seconds openssl dgst -sha256 "$IMG")
  echo "run $i: slotctl ${s}s openssl ${o}s" >&2
  echo "$s" >> "$W/slotctl.t"
  echo "$o" >> "$W/openssl.t"
done
S=$(median < "$W/slotctl.t")
O=$(median < "$W/openssl.t")
calc() { awk "BEGIN {print $1}"; }
RATIO=$(calc "$O / $S")
MBS_S=$(calc "$BYTES / $S / 1000000")
MBS_O=$(calc "$BYTES / $O / 1000000")

# Each into a variable first: a failure inside $(...) in echo's arguments
# would be ignored.
CPU=$(lscpu | sed -n 's/^Model name: *//p')
NCPU=$(nproc)
MEM=$(free -g | awk '/^Mem:/ {print $2}')
OPENSSL=$(openssl version)
echo "machine: $CPU, $NCPU CPUs, $MEM GiB RAM"
echo "openssl: $OPENSSL"
echo "image: $BYTES bytes, uncompressed, page cache warm; $RUNS runs interleaved, medians"
printf 'slotctl image verify: %.3f s (%.0f MB/s)\n' "$S" "$MBS_S"
printf 'openssl dgst -sha256: %.3f s (%.0f MB/s)\n' "$O" "$MBS_O"
printf 'ratio (openssl time / slotctl time): %.2f (goal >= 0.9)\n' "$RATIO"
