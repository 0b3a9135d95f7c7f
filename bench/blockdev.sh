#!/usr/bin/env bash
# `slotctl install` on a block device against `dd`, with 512- or 4096-byte
# logical sectors: the shared RAUC harness (../shared/bench/rauc/slotctl.sh)
# measures 512-byte sectors only; this script measures both the same way.
#
#   bench/blockdev.sh [SECTOR]   (512 or 4096, default 4096; env RUNS=5,
#                                 RUNS_COLD=3, BENCH_SIZE_MIB=512, BENCH_DIR,
#                                 SLOTCTL=path to a slotctl binary)
#
# - one GPT disk file with ROOT-A and ROOT-B, attached as a loop device with
#   `losetup -b SECTOR --direct-io=on` (as the harness does); slot B's
#   partition also gets its own loop device for dd, at the same bytes;
# - payload: BENCH_SIZE_MIB of an ext4-like mix (a third random, a third
#   base64 text, a third zeros: zstd -3 leaves about half), zstd image;
# - measured like the harness: warm (one untimed run, then RUNS timed runs)
#   and cold (`sync; drop_caches` before each of RUNS_COLD runs), medians:
#   `dd bs=4M conv=fsync` of the raw payload to slot B's loop device;
#   `slotctl install --no-readback` and `slotctl install` into slot B through
#   the whole disk's loop device; `slotctl image verify` against
#   `openssl dgst -sha256` of the same uncompressed image file (the same
#   bytes to hash: a throughput comparison); `slotctl boot-select
#   --dry-run` (20 runs); peak RSS of the installs;
# - every install is checked: slot B's loop device must hold the payload;
# - `install --json`'s `timing` of the last warm runs is printed (where the
#   time went: each stage's busy time, the flush, the read-back).
# Prints "ratio ..." lines at the end. Needs root. Not a test: it measures.
set -Eeuo pipefail
shopt -s inherit_errexit
failed() { echo "bench/blockdev.sh: line $2: failed (exit $1): $3" >&2; exit "$1"; }
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR

SECTOR=${1:-4096}
RUNS=${RUNS:-5}
RUNS_COLD=${RUNS_COLD:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-512}
[[ $SECTOR =~ ^(512|4096)$ && $RUNS =~ ^[1-9][0-9]*$ && $RUNS_COLD =~ ^[0-9]+$ && $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || {
    echo "usage: bench/blockdev.sh [512|4096]   (RUNS, RUNS_COLD, BENCH_SIZE_MIB: integers)" >&2
    exit 2
}
[[ $(id -u) -eq 0 ]] || { echo "bench/blockdev.sh: needs root (loop devices, drop_caches)" >&2; exit 1; }
for t in sgdisk losetup openssl zstd; do
    command -v $t >/dev/null || { echo "bench/blockdev.sh: $t is needed" >&2; exit 1; }
done
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${SLOTCTL:-} ]]; then
    echo "building static release binary..." >&2
    (cd "$HERE" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target x86_64-unknown-linux-gnu -p slotctl >&2)
    SLOTCTL=$HERE/target/x86_64-unknown-linux-gnu/release/slotctl
fi
BIN=$(readlink -f "$SLOTCTL")
DIR=${BENCH_DIR:-/var/tmp/slotctl-bench-blockdev}
rm -rf "$DIR"
mkdir -p "$DIR/ring"
cd "$DIR"
LOOPS=()
cleanup() { local l; for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done; }
trap cleanup EXIT

third=$((SIZE_MIB / 3))
echo "payload: ${SIZE_MIB} MiB..." >&2
{
    openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 01 -in /dev/zero 2>/dev/null \
        | head -c $((third * 1048576)) || true
    openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 02 -in /dev/zero 2>/dev/null \
        | base64 -w 76 | head -c $((third * 1048576)) || true
    head -c $(((SIZE_MIB - 2 * third) * 1048576)) /dev/zero
} > payload.bin
PAYLOAD_BYTES=$(stat -c %s payload.bin)
"$BIN" keygen --out k >/dev/null
cp k.pub ring/
"$BIN" image pack --key k.key --version 2.0.0 --compatible bench --rollback-index 1 \
    --part ROOT=payload.bin -o v.img >/dev/null
# `image verify` against openssl on the same bytes: an uncompressed image.
"$BIN" image pack --key k.key --version 2.0.0 --compatible bench --rollback-index 1 \
    --compression none --part ROOT=payload.bin -o v-none.img >/dev/null
printf 'compatible = "bench"\nkeyring = "%s"\nlock_file = "%s"\n' "$DIR/ring" "$DIR/lock" > c.toml

# The disk: two slots of payload + 64 MiB, fully allocated.
SLOT_BYTES=$(((SIZE_MIB + 64) * 1048576))
head -c $((2 * SLOT_BYTES + 8 * 1048576)) /dev/zero > disk.bin
DISK=$(losetup -f --show -b "$SECTOR" disk.bin)
LOOPS+=("$DISK")
losetup --direct-io=on "$DISK"
# sgdisk reads the loop device's sector size; partitions 1 MiB aligned.
sgdisk -o -n 1:1M:+$((SLOT_BYTES / 1024))K -c 1:ROOT-A -n 2:0:+$((SLOT_BYTES / 1024))K -c 2:ROOT-B \
    -A 1:set:48 -A 1:set:56 "$DISK" >/dev/null
first_b=$(sgdisk -i 2 "$DISK" | sed -n 's/^First sector: \([0-9]*\).*/\1/p')
OFF_B=$((first_b * SECTOR))
PART_B=$(losetup -f --show -b "$SECTOR" --offset "$OFF_B" --sizelimit "$SLOT_BYTES" disk.bin)
LOOPS+=("$PART_B")
losetup --direct-io=on "$PART_B"
S=("$BIN" --config c.toml --disk "$DISK" --booted A)

elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float,sys.argv[1:])):.3f}')" "$@"; }
declare -A T RSS
check_b() {
    blockdev --flushbufs "$PART_B"
    cmp -s -n "$PAYLOAD_BYTES" payload.bin "$PART_B" || { echo "bench/blockdev.sh: slot B does not hold the payload after $1" >&2; exit 1; }
}
wipe_b() { dd if=/dev/zero of="$PART_B" bs=4M count=1 oflag=direct status=none; }
timed() { # KEY cmd...: one timed run; appends to T[KEY] and RSS[KEY]
    local key=$1 t0 t1 rss
    shift
    t0=$EPOCHREALTIME
    /usr/bin/time -f %M -o "$DIR/rss" "$@" >/dev/null
    t1=$EPOCHREALTIME
    rss=$(tail -n 1 "$DIR/rss")
    T[$key]+="$(elapsed "$t0" "$t1") "
    RSS[$key]+="$rss "
}
measure() { # CACHE N
    local cache=$1 n=$2 i name
    for name in dd install_norb install verify openssl; do
        [[ $cache == warm ]] && run_one "$name" "warmup"
        for ((i = 0; i < n; i++)); do
            [[ $cache == cold ]] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
            run_one "$name" "${name}_$cache"
        done
    done
}
run_one() { # NAME KEY
    local key=$2
    case $1 in
    dd) timed "$key" dd if=payload.bin of="$PART_B" bs=4M conv=fsync status=none; check_b dd ;;
    install_norb) wipe_b; timed "$key" "${S[@]}" install --no-readback v.img; check_b "install --no-readback" ;;
    install) wipe_b; timed "$key" "${S[@]}" install v.img; check_b install ;;
    # the boot-select runs below find B on trial after these: --dry-run writes nothing
    verify) timed "$key" "$BIN" image verify --keyring ring v-none.img ;;
    openssl) timed "$key" openssl dgst -sha256 v-none.img ;;
    esac
}
echo "warm..." >&2
measure warm "$RUNS"
for flag in --no-readback ""; do
    wipe_b
    # shellcheck disable=SC2086 # $flag: no flag, or one
    "${S[@]}" --json install $flag v.img | tail -n 1 \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print("timing" + sys.argv[1] + "=" + json.dumps(r["timing"], separators=(",", ":")))' "${flag:- (read-back)}" > "$DIR/timing$flag"
    check_b "install $flag"
done
if ((RUNS_COLD > 0)); then
    echo "cold..." >&2
    measure cold "$RUNS_COLD"
fi
# boot-select: the disk as the boot stage sees it (A good: nothing written).
for ((i = 0; i < 20; i++)); do timed boot_select "${S[@]}" boot-select --dry-run; done

echo "slotctl $("$BIN" --version) $(stat -c %s "$BIN") bytes; kernel $(uname -r); $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')"
echo "sector=$SECTOR payload=$PAYLOAD_BYTES image=$(stat -c %s v.img) loop dio=on runs warm=$RUNS cold=$RUNS_COLD"
cat "$DIR/timing--no-readback" "$DIR/timing"
for k in "${!T[@]}"; do
    [[ $k == warmup ]] && continue
    # shellcheck disable=SC2086
    printf '%s_s=%s peak_rss_kib=%s all_s=%s\n' "$k" "$(median ${T[$k]})" \
        "$(printf '%s\n' ${RSS[$k]} | sort -n | tail -n 1)" "$(echo ${T[$k]} | tr ' ' ,)"
done | sort
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
for c in warm cold; do
    [[ -n ${T[dd_$c]:-} ]] || continue
    # shellcheck disable=SC2086
    {
        dd_s=$(median ${T[dd_$c]})
        n_s=$(median ${T[install_norb_$c]})
        r_s=$(median ${T[install_$c]})
        v_s=$(median ${T[verify_$c]})
        o_s=$(median ${T[openssl_$c]})
    }
    echo "ratio cache=$c sector=$SECTOR install_norb/dd=$(ratio "$n_s" "$dd_s") install/dd=$(ratio "$r_s" "$dd_s") verify/openssl=$(ratio "$v_s" "$o_s")"
done
# shellcheck disable=SC2086
echo "boot_select_ms=$(python3 -c "import statistics,sys; print(f'{statistics.median(map(float,sys.argv[1:])) * 1000:.1f}')" ${T[boot_select]})"
