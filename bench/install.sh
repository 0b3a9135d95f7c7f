#!/usr/bin/env bash
# Benchmark of `slotctl install` against `dd bs=4M conv=fsync` of the raw
# payload to the same offset of the same file-backed disk.
#
#   bench/install.sh [RUNS]   (default 5; env BENCH_DIR, BENCH_SIZE_MIB, BENCH_CACHE)
#
# - builds the stripped static release binary;
# - payload: BENCH_SIZE_MIB (default 1024) MiB, first half random, second half zeros;
# - images: zstd (level 3) and uncompressed;
# - disk: `slotctl disk init` with ROOT large enough; slot A provisioned
#   (--factory) with a tiny image so that installs go to slot B with --booted A;
# - runs interleaved (dd, install zstd, install none, install none with
#   read-back, install zstd with read-back), wall time of each;
# - page cache: BENCH_CACHE=cold (default) drops it before each run and
#   checks with fincore that none of the run's files is still cached; if it
#   cannot be dropped (not root, read-only /proc/sys) the bench stops with one
#   line rather than report warm figures as cold. BENCH_CACHE=warm reads the
#   inputs into the cache before each run instead, and says so in the output;
# - prints medians, the ratio dd_time / install_time (goal >= 0.9 without
#   read-back), peak RSS of each install (/usr/bin/time -v) and binary size.
#
# Not a test: nothing here asserts; it measures. Paste the output into
# bench/RESULTS.md with the machine. Any failed command stops the bench with
# a line naming it (errexit also inside $(...) and functions).
set -Eeuo pipefail
shopt -s inherit_errexit
failed() { echo "bench/install.sh: line $2: failed (exit $1): $3" >&2; exit "$1"; }
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR

RUNS=${1:-5}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
CACHE=${BENCH_CACHE:-cold}
[[ $RUNS =~ ^[1-9][0-9]*$ && $SIZE_MIB =~ ^[1-9][0-9]*$ && $CACHE =~ ^(cold|warm)$ ]] || {
    echo "usage: bench/install.sh [RUNS]   (RUNS, BENCH_SIZE_MIB: positive integers; BENCH_CACHE: cold or warm)" >&2
    exit 2
}
if [[ $CACHE == cold ]]; then
    command -v fincore >/dev/null || {
        echo "bench/install.sh: fincore (util-linux) is needed to check that the page cache was dropped" >&2
        exit 1
    }
    if ! (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
        echo "bench/install.sh: cannot drop the page cache (writing /proc/sys/vm/drop_caches failed: needs root and a writable /proc/sys), so no cold-cache figures; BENCH_CACHE=warm measures with a warm cache and labels the output so" >&2
        exit 1
    fi
fi
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

# BOOT is left unmanaged: the images carry ROOT only, so that an install
# writes exactly what dd writes (docs/image-format.md, "Roles").
cat > slotctl.toml <<TOML
compatible = "bench"
keyring = "$DIR/keyring"
lock_file = "$DIR/slotctl.lock"
unmanaged_roles = ["BOOT"]
TOML

"$BIN" disk init disk.img --role BOOT=8M --role ROOT=$((SIZE_MIB + 16))M >/dev/null
S=("$BIN" --config slotctl.toml --disk disk.img)
"${S[@]}" install --factory --slot A tiny.img >/dev/null
ROOT_B=$("${S[@]}" status --json | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(next(p["offset"] for p in s["slots"]["B"]["partitions"] if p["role"]=="ROOT"))')

INPUTS=(payload.bin img-zstd.img img-none.img disk.img)
cache() { # cold: drop the page cache and prove it; warm: fill it with the inputs
    if [[ $CACHE == warm ]]; then
        cat payload.bin img-zstd.img img-none.img >/dev/null
        return
    fi
    sync
    echo 3 > /proc/sys/vm/drop_caches
    local cached
    cached=$(fincore --bytes --noheadings --output RES "${INPUTS[@]}" | awk '{s += $1} END {print s + 0}')
    if ((cached != 0)); then
        echo "bench/install.sh: page cache not dropped: $cached bytes of ${INPUTS[*]} still cached (fincore), so no cold-cache figure" >&2
        exit 1
    fi
}
declare -A T RSS
run() { # name cmd...
    local name=$1 t0 t1 dt rss
    shift
    cache
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -v -o "time-$name.txt" "$@" >/dev/null; then
        echo "bench/install.sh: run '$name' failed, not timed: $*" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    dt=$(python3 -c "print($t1 - $t0)")
    rss=$(awk -F': ' '/Maximum resident/ {print $2}' "time-$name.txt")
    [[ $rss =~ ^[0-9]+$ ]] || {
        echo "bench/install.sh: no peak RSS for run '$name' in time-$name.txt" >&2
        exit 1
    }
    T[$name]+="$dt "
    RSS[$name]+="$rss "
}

for ((i = 1; i <= RUNS; i++)); do
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
if [[ $CACHE == cold ]]; then
    CACHE_LABEL="page cache dropped before each run (fincore: none of the run's files cached)"
else
    CACHE_LABEL="page cache WARM (BENCH_CACHE=warm: inputs read into the cache before each run, not dropped)"
fi
echo
echo "payload ${SIZE_MIB} MiB, ${RUNS} interleaved runs, medians; ratio = dd time / install time"
echo "$CACHE_LABEL"
echo
echo "| what | median s | MiB/s | ratio vs dd | peak RSS KiB (max) |"
echo "| --- | --- | --- | --- | --- |"
for n in dd zstd none none_readback zstd_readback; do
    # Each figure into a variable first: a failure inside $(...) in
    # printf's arguments would be ignored.
    # shellcheck disable=SC2086
    m=$(median ${T[$n]})
    mibs=$(python3 -c "print(f'{$SIZE_MIB/$m:.0f}')")
    ratio=$(python3 -c "print(f'{$DD/$m:.2f}')")
    # shellcheck disable=SC2086
    peak=$(maxof ${RSS[$n]})
    printf '| %s | %s | %s | %s | %s |\n' "$n" "$m" "$mibs" "$ratio" "$peak"
done
echo
echo "all times: "
for n in dd zstd none none_readback zstd_readback; do echo "  $n: ${T[$n]}"; done
BIN_SIZE=$(stat -c %s "$BIN")
BIN_KIND=$(file -b "$BIN" | cut -d, -f1-2)
IMG_ZSTD=$(stat -c %s img-zstd.img)
IMG_NONE=$(stat -c %s img-none.img)
NCPU=$(nproc)
CPU=$(lscpu | sed -n 's/^Model name: *//p')
MEM=$(free -g | awk '/Mem:/ {print $2}')
FS=$(df -T "$DIR" | awk 'NR==2 {print $2}')
echo "static stripped binary: $BIN_SIZE bytes ($BIN_KIND)"
echo "images: zstd $IMG_ZSTD bytes, none $IMG_NONE bytes"
echo "machine: $NCPU CPU(s), $CPU, $MEM GiB RAM, $FS at $DIR"
