#!/usr/bin/env bash
# Benchmark of `slotctl install` against `dd bs=4M conv=fsync` of the raw
# payload to the same offset of the same file-backed disk.
#
#   bench/install.sh [RUNS]        (default 5; env BENCH_DIR, BENCH_SIZE_MIB)
#
# - builds the stripped static release binary;
# - payload: BENCH_SIZE_MIB (default 1024) MiB, first half random, second half zeros;
# - images: zstd (level 3) and uncompressed;
# - disk: `slotctl disk init` with ROOT large enough; slot A provisioned
#   (--factory) with a tiny image so that installs go to slot B with --booted A;
# - runs interleaved (dd, install zstd, install none, install none with
#   read-back), page cache dropped before each, wall time of each;
# - prints medians, the ratio dd_time / install_time (goal >= 0.9 without
#   read-back), peak RSS of each install (/usr/bin/time -v) and binary size.
#
# Not a test: nothing here asserts; it measures. Paste the output into
# bench/RESULTS.md with the machine.
set -euo pipefail

RUNS=${1:-5}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/var/tmp/slotctl-bench}
TARGET=x86_64-unknown-linux-gnu

echo "building static release binary..." >&2
(cd "$HERE" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --target $TARGET -p slotctl >&2)
BIN="$HERE/target/$TARGET/release/slotctl"

rm -rf "$DIR"
mkdir -p "$DIR/keyring" "$DIR/private"
cd "$DIR"

half=$((SIZE_MIB / 2))
echo "payload: ${SIZE_MIB} MiB (half random, half zeros)..." >&2
{ head -c $((half * 1048576)) /dev/urandom; head -c $(((SIZE_MIB - half) * 1048576)) /dev/zero; } > payload.bin
head -c 4096 /dev/urandom > tiny.bin

"$BIN" keygen --out private/bench >/dev/null
cp private/bench.pub keyring/
for c in zstd none; do
    "$BIN" image pack --key private/bench.key --version 2.0.0 --compatible bench \
        --rollback-index 1 --compression $c --part ROOT=payload.bin -o img-$c.img >/dev/null
done
"$BIN" image pack --key private/bench.key --version 1.0.0 --compatible bench \
    --rollback-index 1 --part ROOT=tiny.bin -o tiny.img >/dev/null

cat > slotctl.toml <<TOML
compatible = "bench"
keyring = "$DIR/keyring"
lock_file = "$DIR/slotctl.lock"
TOML

"$BIN" disk init disk.img --role BOOT=8M --role ROOT=$((SIZE_MIB + 16))M >/dev/null
S=("$BIN" --config slotctl.toml --disk disk.img)
"${S[@]}" install --factory --slot A tiny.img >/dev/null
ROOT_B=$("${S[@]}" status --json | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(next(p["offset"] for p in s["slots"]["B"]["partitions"] if p["role"]=="ROOT"))')

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
declare -A T RSS
run() { # name cmd...
    local name=$1; shift
    drop
    local t0 t1
    t0=$(now)
    /usr/bin/time -v -o "time-$name.txt" "$@" >/dev/null
    t1=$(now)
    T[$name]+="$(python3 -c "print($t1-$t0)") "
    RSS[$name]+="$(awk -F': ' '/Maximum resident/ {print $2}' "time-$name.txt") "
}

for i in $(seq 1 "$RUNS"); do
    echo "run $i/$RUNS" >&2
    run dd dd if=payload.bin of=disk.img bs=4M conv=fsync,notrunc oflag=seek_bytes seek="$ROOT_B" status=none
    run zstd "${S[@]}" install --booted A --no-readback img-zstd.img
    run none "${S[@]}" install --booted A --no-readback img-none.img
    run none_readback "${S[@]}" install --booted A img-none.img
    run zstd_readback "${S[@]}" install --booted A img-zstd.img
done

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float,sys.argv[1:])):.3f}')" "$@"; }
maxof() { python3 -c "import sys; print(max(map(int,sys.argv[1:])))" "$@"; }
# T[...] and RSS[...] hold space-separated lists of numbers: their word
# splitting below is what passes each number as its own argument.
# shellcheck disable=SC2086
DD=$(median ${T[dd]})
echo
echo "payload ${SIZE_MIB} MiB, ${RUNS} interleaved runs, medians; ratio = dd time / install time"
echo
echo "| what | median s | MiB/s | ratio vs dd | peak RSS KiB (max) |"
echo "| --- | --- | --- | --- | --- |"
for n in dd zstd none none_readback zstd_readback; do
    # shellcheck disable=SC2086
    m=$(median ${T[$n]})
    # shellcheck disable=SC2086
    printf '| %s | %s | %s | %s | %s |\n' "$n" "$m" \
        "$(python3 -c "print(f'{$SIZE_MIB/$m:.0f}')")" \
        "$(python3 -c "print(f'{$DD/$m:.2f}')")" \
        "$(maxof ${RSS[$n]})"
done
echo
echo "all times: "
for n in dd zstd none none_readback zstd_readback; do echo "  $n: ${T[$n]}"; done
echo "static stripped binary: $(stat -c %s "$BIN") bytes ($(file -b "$BIN" | cut -d, -f1-2))"
echo "images: zstd $(stat -c %s img-zstd.img) bytes, none $(stat -c %s img-none.img) bytes"
echo "machine: $(nproc) CPU(s), $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(df -T "$DIR" | awk 'NR==2 {print $2}') at $DIR"
