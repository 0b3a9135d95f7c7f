#!/usr/bin/env bash
# Benchmark of the delta install (issue 12) on the benchmark pair: what
# `slotctl install URL` downloads from a booted v1, side by side with the
# full-image install and the per-pair deltas xdelta3 and zstd --patch-from.
#
#   bench/delta.sh     (root; env below; several minutes, more the first time)
#
# In one run, for v1 -> v2 and v1 -> v1b:
# - the rootfs images v1/v2/v1b.img (gen-rootfs.sh; run only when the cache
#   SLOTCTL_BENCH_CACHE/rootfs, default /var/tmp/slotctl-bench/rootfs, lacks
#   them: ~10 min, downloads ~70 MB of Debian packages);
# - signed images: chunked (`--compression chunked --zstd-level
#   BENCH_CHUNK_LEVEL`, default 19) of v1, v2 and v1b, full (zstd -3, the
#   default) of v2 and v1b;
# - a disk image file (`slotctl disk init`: BOOT-A/B 8 MiB, ROOT-A/B 600 MiB;
#   checked with `sgdisk -v`), v1 factory-installed (chunked) in slot A; a copy
#   of it is restored before every install, so the target B holds zeros;
# - a local HTTP server on 127.0.0.1 (scripts/range-server.py: Range, keep-alive,
#   counts the body bytes it serves);
# - BENCH_RUNS (default 3) interleaved runs of `slotctl --booted A install
#   --json URL` of the full and of the chunked image: bytes served, wall time,
#   peak RSS (/usr/bin/time -v), the result's downloaded/reused/written; after
#   each, ROOT-B compared with the raw image (cmp) and `verify-slot B`;
# - xdelta3 -9 and zstd --patch-from=v1 -19 --long=31 of the same pairs (patch
#   bytes; apply time and RSS; patches cached, keyed by the images' SHA-256);
# - peak RSS of a delta install of a synthetic 1 GiB and 8 GiB payload (every
#   4 KiB nonzero and distinct, a counter: the largest table), 1/8 changed
#   from the booted version; a part is skipped, saying so, when the free space
#   at the cache is below what it needs (3x the payload + 1 GiB).
# The page cache is dropped before each timed run (sync; drop_caches), or the
# output says it was warm. Prints a table, the ratio lines and a markdown
# section for bench/RESULTS.md (kept in SLOTCTL_BENCH_CACHE/delta/RESULTS-delta.md;
# BENCH_APPEND=1 also appends it to bench/RESULTS.md).
#
# Env: SLOTCTL (a slotctl binary; default: build the static release binary),
# SLOTCTL_BENCH_CACHE, BENCH_RUNS, BENCH_CHUNK_LEVEL, BENCH_PARTS (default
# "baselines full chunked rss": which parts to run), BENCH_RSS_GIB (default
# "1 8"), BENCH_CHUNKED_COMPRESSION (default chunked; zstd: dry run), GEN_ROOTFS (default: ../shared/bench/delta/gen-rootfs.sh beside the
# checkout). Works only on files it creates under the cache directory.
# Not a test: it measures; "goal" lines compare with issue 12's goals.
set -Eeuo pipefail
shopt -s inherit_errexit
failed() { echo "bench/delta.sh: line $2: failed (exit $1): $3" >&2; exit "$1"; }
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR
export LC_ALL=C

HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$(realpath -m "${SLOTCTL_BENCH_CACHE:-/var/tmp/slotctl-bench}")
ROOTFS=$CACHE/rootfs
WORK=$CACHE/delta
RUNS=${BENCH_RUNS:-3}
LEVEL=${BENCH_CHUNK_LEVEL:-19}
PARTS=" ${BENCH_PARTS:-baselines full chunked rss} "
RSS_GIB=${BENCH_RSS_GIB:-1 8}
# A dry run of the script's plumbing before chunked images exist: BENCH_CHUNKED_COMPRESSION=zstd
# (the report then says the "chunked" rows are not chunked).
CHUNKED=${BENCH_CHUNKED_COMPRESSION:-chunked}
[[ $RUNS =~ ^[1-9][0-9]*$ && $LEVEL =~ ^[0-9]+$ ]] || {
    echo "usage: bench/delta.sh   (BENCH_RUNS: a positive integer; BENCH_CHUNK_LEVEL: a zstd level)" >&2
    exit 2
}
[[ $(id -u) == 0 ]] || { echo "bench/delta.sh: must run as root (drop_caches, gen-rootfs.sh)" >&2; exit 2; }
part() { [[ $PARTS == *" $1 "* ]]; }

need_tools() {
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
    ((${#missing[@]} == 0)) && return
    echo "bench/delta.sh: installing ${missing[*]} with apt-get" >&2
    apt-get install -y "${missing[@]}" >&2
}
need_tools zstd sgdisk curl xdelta3 python3 cmp
[[ -x /usr/bin/time ]] || need_tools time

# ---------------------------------------------------------------- rootfs pair
if ! [[ -f $ROOTFS/v1.img && -f $ROOTFS/v2.img && -f $ROOTFS/v1b.img ]]; then
    GEN=${GEN_ROOTFS:-$HERE/../shared/bench/delta/gen-rootfs.sh}
    [[ -f $GEN ]] || { echo "bench/delta.sh: $ROOTFS lacks v1/v2/v1b.img and there is no $GEN (set GEN_ROOTFS)" >&2; exit 1; }
    echo "building the rootfs pair with $GEN (about 10 minutes)..." >&2
    bash "$GEN" "$ROOTFS" >&2
fi
RAW=$(stat -c %s "$ROOTFS/v2.img")
sha() { sha256sum "$1" | cut -c1-64; }
declare -A SHA
for v in v1 v2 v1b; do SHA[$v]=$(sha "$ROOTFS/$v.img"); done

# ---------------------------------------------------------------- slotctl
if [[ -z ${SLOTCTL:-} ]]; then
    echo "building static release binary..." >&2
    (cd "$HERE" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target x86_64-unknown-linux-gnu -p slotctl >&2)
    SLOTCTL=$HERE/target/x86_64-unknown-linux-gnu/release/slotctl
fi
SLOTCTL=$(realpath "$SLOTCTL")

rm -rf "$WORK"
mkdir -p "$WORK/srv" "$WORK/keyring" "$WORK/private" "$WORK/runs"
cd "$WORK"
"$SLOTCTL" keygen --out private/bench >/dev/null
cp private/bench.pub keyring/
cat > slotctl.toml <<TOML
compatible = "bench-delta"
keyring = "$WORK/keyring"
lock_file = "$WORK/slotctl.lock"
state_dir = "$WORK/state"
unmanaged_roles = ["BOOT"]
TOML
export SOURCE_DATE_EPOCH=1795600000

secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$@"; }
pack() { # OUT VERSION COMPRESSION RAWFILE [LEVEL]: prints the pack time
    local t0 t1
    t0=$EPOCHREALTIME
    "$SLOTCTL" image pack --key private/bench.key --version "$2" --compatible bench-delta \
        --rollback-index 1 --compression "$3" --zstd-level "${5:-3}" --part ROOT="$4" -o "$1" >/dev/null
    t1=$EPOCHREALTIME
    secs "$t0" "$t1"
}

# The install kinds this run measures on the rootfs pair.
KINDS=()
part full && KINDS+=(full)
part chunked && KINDS+=(chunked)
declare -A PACK_S
FACTORY=full
part chunked && FACTORY=chunked
if ((${#KINDS[@]})); then
    echo "packing images (chunked at zstd level $LEVEL; full at zstd -3)..." >&2
    if part chunked; then
        for v in v1:1.0.0 v2:2.0.0 v1b:1.0.1; do
            PACK_S[chunked-${v%%:*}]=$(pack "srv/${v%%:*}-chunked.img" "${v#*:}" "$CHUNKED" "$ROOTFS/${v%%:*}.img" "$LEVEL")
        done
    fi
    for v in v1:1.0.0 v2:2.0.0 v1b:1.0.1; do
        [[ ${v%%:*} == v1 && $FACTORY == chunked ]] && continue
        PACK_S[full-${v%%:*}]=$(pack "srv/${v%%:*}-full.img" "${v#*:}" zstd "$ROOTFS/${v%%:*}.img")
    done
fi

# ---------------------------------------------------------------- page cache
CACHE_STATE=cold
if ! (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
    CACHE_STATE=warm
    echo "bench/delta.sh: cannot drop the page cache: figures are with a WARM cache" >&2
fi
drop_cache() { [[ $CACHE_STATE == warm ]] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }

# timed NAME cmd...: runs it under /usr/bin/time -v (stdout to runs/NAME.out);
# sets T_WALL (s) and T_RSS (KiB)
timed() {
    local name=$1 t0 t1
    shift
    drop_cache
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -v -o "runs/$name.time" "$@" > "runs/$name.out" 2> "runs/$name.err"; then
        echo "bench/delta.sh: run '$name' failed: $*" >&2
        tail -n 5 "runs/$name.err" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    T_WALL=$(secs "$t0" "$t1")
    T_RSS=$(awk -F': ' '/Maximum resident/ {print $2}' "runs/$name.time")
    [[ $T_RSS =~ ^[0-9]+$ ]] || { echo "bench/delta.sh: no peak RSS in runs/$name.time" >&2; exit 1; }
}

# Figures: FIG[key] holds space-separated samples; medians at the end.
declare -A FIG
add() { FIG[$1]+="$2 "; }
median() { # integers stay integers
    python3 -c "import statistics,sys; v=list(map(float,sys.argv[1:])); m=statistics.median(v) if v else None
print('-' if m is None else int(m) if m == int(m) and all(x == int(x) for x in v) else f'{m:.3f}')" "$@"
}
maxof() { python3 -c "import sys; v=list(map(float,sys.argv[1:])); print(f'{max(v):.0f}' if v else '-')" "$@"; }
# shellcheck disable=SC2086 # FIG values are lists of numbers: split on purpose
med() { median ${FIG[$1]:-}; }
# shellcheck disable=SC2086
peak() { maxof ${FIG[$1]:-}; }

# ---------------------------------------------------------------- baselines
baselines() {
    local t=$1 dir patch zp i
    dir=$CACHE/delta-baselines/${SHA[v1]:0:16}-${SHA[$t]:0:16}
    mkdir -p "$dir"
    patch=$dir/xdelta3-9.xd3
    zp=$dir/zstd-patch19.zst
    if [[ ! -s $patch ]]; then
        echo "xdelta3 -9 v1 -> $t (cached afterwards)..." >&2
        xdelta3 -e -9 -f -s "$ROOTFS/v1.img" "$ROOTFS/$t.img" "$patch.tmp"
        mv "$patch.tmp" "$patch"
    fi
    if [[ ! -s $zp ]]; then
        echo "zstd --patch-from v1 -> $t -19 --long=31 (a few minutes; cached afterwards)..." >&2
        # (its "[Optimal parser notes]" advice on stderr goes to the log)
        zstd -q -f -19 --long=31 --patch-from="$ROOTFS/v1.img" "$ROOTFS/$t.img" -o "$zp.tmp" 2> "$dir/zstd-patch19.log"
        mv "$zp.tmp" "$zp"
    fi
    add "xdelta-$t-bytes" "$(stat -c %s "$patch")"
    add "zpatch-$t-bytes" "$(stat -c %s "$zp")"
    for ((i = 1; i <= RUNS; i++)); do
        timed "xdelta-$t-$i" xdelta3 -d -f -s "$ROOTFS/v1.img" "$patch" out.img
        cmp out.img "$ROOTFS/$t.img"
        add "xdelta-$t-s" "$T_WALL"; add "xdelta-$t-rss" "$T_RSS"
        timed "zpatch-$t-$i" zstd -q -f -d --long=31 --memory=2048MB --patch-from="$ROOTFS/v1.img" "$zp" -o out.img
        cmp out.img "$ROOTFS/$t.img"
        add "zpatch-$t-s" "$T_WALL"; add "zpatch-$t-rss" "$T_RSS"
    done
    rm -f out.img
}
if part baselines; then
    for t in v2 v1b; do baselines "$t"; done
fi

# ---------------------------------------------------------------- disk, server
# root_b slotctl-args...: the byte offset of ROOT-B on that disk
root_b() {
    "$@" status --json | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(next(p["offset"] for p in s["slots"]["B"]["partitions"] if p["role"]=="ROOT"))'
}
S=("$SLOTCTL" --config "$WORK/slotctl.toml" --disk "$WORK/disk.img")
if ((${#KINDS[@]})); then
    "$SLOTCTL" disk init disk.img --role BOOT=8M --role ROOT=600M >/dev/null
    sgdisk -v disk.img | grep -q "No problems found" || { echo "bench/delta.sh: sgdisk -v disk.img: $(sgdisk -v disk.img)" >&2; exit 1; }
    "${S[@]}" install --factory --slot A "srv/v1-$FACTORY.img" >/dev/null
    cp --sparse=always disk.img disk-v1.img
    ROOT_B=$(root_b "${S[@]}")
fi

python3 "$HERE/scripts/range-server.py" "$WORK/srv" "$WORK/port" 2> server.log &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [[ -s port ]] && break; sleep 0.1; done
[[ -s port ]] || { echo "bench/delta.sh: the HTTP server did not start (server.log: $(cat server.log))" >&2; exit 1; }
URL=http://127.0.0.1:$(cat port)
# stats: the server's counters as "body_bytes requests connections"
stats() { curl -sf "$URL/__stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print(s['body_bytes'], s['requests'], s['connections'])"; }

# result FIELD NAME: a field of runs/NAME.out's result event, searched at any depth ("-" if absent)
result() {
    python3 - "$1" "runs/$2.out" <<'PY'
import json, sys
key, path = sys.argv[1], sys.argv[2]
res = None
for line in open(path):
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    if isinstance(ev, dict) and ev.get("event") == "result":
        res = ev
def find(v):
    if isinstance(v, dict):
        if key in v:
            return v[key]
        for x in v.values():
            r = find(x)
            if r is not None:
                return r
    return None
v = find(res) if res else None
print("-" if v is None else (json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else v))
PY
}

# install_run KIND TARGET RUN: install srv/TARGET-KIND.img over HTTP into B, measure, check
install_run() {
    local kind=$1 t=$2 name=$1-$2-$3 b0 b1 r0 r1 c0 c1 n0
    cp --sparse=always disk-v1.img disk.img
    read -r b0 r0 c0 < <(stats)
    n0=$(wc -l < server.log)
    timed "$name" "${S[@]}" --booted A install --json "$URL/$t-$kind.img"
    read -r b1 r1 c1 < <(stats)
    tail -n +$((n0 + 1)) server.log > "runs/$name.requests"
    cmp -n "$RAW" -i "$ROOT_B:0" disk.img "$ROOTFS/$t.img" ||
        { echo "bench/delta.sh: $name: ROOT-B differs from $t.img" >&2; exit 1; }
    "${S[@]}" --booted A verify-slot B >/dev/null
    add "$kind-$t-bytes" $((b1 - b0)); add "$kind-$t-s" "$T_WALL"; add "$kind-$t-rss" "$T_RSS"
    add "$kind-$t-req" $((r1 - r0)); add "$kind-$t-conn" $((c1 - c0))
    echo "  $name: served $((b1 - b0)) bytes in $((r1 - r0)) requests over $((c1 - c0)) connections" \
        "(first: $(head -n 1 "runs/$name.requests" | cut -d' ' -f5-)), see runs/$name.requests;" \
        "${T_WALL} s, peak RSS ${T_RSS} KiB; result method=$(result method "$name") downloaded=$(result downloaded "$name")" \
        "reused=$(result reused "$name") written=$(result written "$name"); ROOT-B = $t.img (cmp), verify-slot ok" >&2
    LAST[$kind-$t]=$name
}
declare -A LAST
if ((${#KINDS[@]})); then
    for ((i = 1; i <= RUNS; i++)); do
        echo "install run $i/$RUNS" >&2
        for t in v2 v1b; do
            for k in "${KINDS[@]}"; do install_run "$k" "$t" "$i"; done
        done
    done
fi

# ---------------------------------------------------------------- RSS: 1 and 8 GiB
# synth FILE GIB VERSION: every 4 KiB nonzero and distinct (a counter and a tag,
# then zeros: cheap to compress, so the table is as large as it gets).
# VERSION 1 writes the file; 2 rewrites one MiB in eight (a new tag) in place.
synth() {
    python3 - "$@" <<'PY'
import struct, sys
path, gib, ver = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "wb" if ver == 1 else "r+b") as f:
    for mib in range(gib * 1024):
        if ver == 2 and mib % 8 != 3:
            continue
        tag = b"SLOTCTL2" if mib % 8 == 3 and ver == 2 else b"SLOTCTL1"
        buf = bytearray(1 << 20)
        for u in range(256):
            buf[u * 4096:u * 4096 + 16] = struct.pack("<Q", mib * 256 + u + 1) + tag
        f.seek(mib << 20)
        f.write(buf)
PY
}
declare -A RSSN
rss_part() {
    local g=$1 need avail rb
    need=$(((3 * g + 1) << 30))
    avail=$(df --output=avail -B1 "$WORK" | tail -n 1)
    if ((avail < need)); then
        RSSN[$g]="skipped: needs $((need >> 30)) GiB free at $WORK, has $((avail >> 30)) GiB"
        echo "rss ${g} GiB: ${RSSN[$g]}" >&2
        return
    fi
    echo "rss ${g} GiB: payload, images, disk, factory install of v1..." >&2
    synth rss.bin "$g" 1
    FIG[rss$g-pack1]=$(pack "srv/rss$g-v1.img" 1.0.0 "$CHUNKED" rss.bin 3)
    synth rss.bin "$g" 2
    FIG[rss$g-pack2]=$(pack "srv/rss$g-v2.img" 2.0.0 "$CHUNKED" rss.bin 3)
    "$SLOTCTL" disk init rss-disk.img --role BOOT=8M --role ROOT=$((g * 1024 + 16))M >/dev/null
    local R=("$SLOTCTL" --config "$WORK/slotctl.toml" --disk "$WORK/rss-disk.img")
    timed "rss$g-factory" "${R[@]}" install --json --factory --slot A "srv/rss$g-v1.img"
    FIG[rss$g-factory-s]=$T_WALL; FIG[rss$g-factory-rss]=$T_RSS
    rb=$(root_b "${R[@]}")
    local b0 b1 _
    read -r b0 _ _ < <(stats)
    echo "rss ${g} GiB: delta install of v2 (1/8 changed) over HTTP..." >&2
    timed "rss$g" "${R[@]}" --booted A install --json "$URL/rss$g-v2.img"
    read -r b1 _ _ < <(stats)
    FIG[rss$g-bytes]=$((b1 - b0))
    FIG[rss$g-s]=$T_WALL; FIG[rss$g-rss]=$T_RSS
    FIG[rss$g-img]=$(stat -c %s "srv/rss$g-v2.img")
    cmp -n $((g << 30)) -i "$rb:0" rss-disk.img rss.bin ||
        { echo "bench/delta.sh: rss ${g} GiB: ROOT-B differs from the payload" >&2; exit 1; }
    RSSN[$g]="ROOT-B = payload (cmp); result method=$(result method "rss$g") downloaded=$(result downloaded "rss$g") reused=$(result reused "rss$g") written=$(result written "rss$g")"
    echo "rss ${g} GiB: install ${T_WALL} s, peak RSS ${T_RSS} KiB; ${RSSN[$g]}" >&2
    rm -f rss.bin rss-disk.img "srv/rss$g-v1.img" "srv/rss$g-v2.img"
}
if part rss; then
    for g in $RSS_GIB; do rss_part "$g"; done
fi

# ---------------------------------------------------------------- report
calc() { python3 -c "print($1)"; }
mb() { if [[ $1 == - ]]; then echo -; else calc "f'{$1 / 1e6:.2f} MB'"; fi; }
pct() { if [[ $1 == - ]]; then echo -; else calc "f'{100 * $1 / $RAW:.2f} %'"; fi; }
row() { # LABEL KEYPREFIX FULLBYTES
    local b s r vs=-
    b=$(med "$2-bytes"); s=$(med "$2-s"); r=$(peak "$2-rss")
    [[ $b != - && $3 != - ]] && vs=$(calc "f'{$b / $3:.3f}'")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(mb "$b")" "$(pct "$b")" "$vs" "$s" "$r"
}
ratio() { # T GOAL_MB
    local t=$1 fb cb fs cs
    fb=$(med "full-$t-bytes"); cb=$(med "chunked-$t-bytes"); fs=$(med "full-$t-s"); cs=$(med "chunked-$t-s")
    [[ $fb == - || $cb == - ]] && return
    calc "f'ratio v1->$t: chunked/full bytes {$cb / $fb:.4f} (1/{$fb / $cb:.1f}; goal for v2 < 1/7); chunked/full time {$cs / $fs:.2f} (goal <= 1.5); chunked = {100 * $cb / $RAW:.2f} % of raw $t (goal for v2 < 2.5 %); downloaded {$cb / 1e6:.2f} MB (goal <= $2 MB)'"
}
report() {
    local t g CPU NCPU MEM
    CPU=$(lscpu | sed -n 's/^Model name: *//p')
    NCPU=$(nproc)
    MEM=$(free -g | awk '/Mem:/ {print $2}')
    echo "## Delta install: bench/delta.sh ($(date -u +%F))"
    echo
    echo "Machine: $CPU, $NCPU CPUs, $MEM GiB RAM; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo "slotctl $("$SLOTCTL" --version | cut -d' ' -f2), commit $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?');"
    echo "rootfs pair: gen-rootfs.sh, raw $RAW bytes each (v1 ${SHA[v1]:0:12}, v2 ${SHA[v2]:0:12}, v1b ${SHA[v1b]:0:12});"
    [[ $CHUNKED == chunked ]] || echo "**DRY RUN: the \"chunked\" images below were packed with --compression $CHUNKED, not chunked (BENCH_CHUNKED_COMPRESSION).**"
    echo "chunked images packed with --zstd-level $LEVEL, full images with zstd -3; v1 in slot A installed from its $FACTORY image."
    echo "Installs: \`slotctl --booted A install --json URL\` from a local HTTP server (127.0.0.1, Range,"
    echo "keep-alive), into ROOT-B holding zeros; bytes = response body bytes the server sent;"
    echo "page cache $CACHE_STATE before each timed run; medians of $RUNS runs; RSS = max of the runs."
    echo "xdelta3/zstd rows: patch bytes and apply time/RSS (v1 and the patch from local files)."
    local pairs=()
    if ((${#KINDS[@]})) || part baselines; then pairs=(v2 v1b); fi
    for t in "${pairs[@]}"; do
        echo
        echo "### v1 -> $t"
        echo
        echo "| method | bytes to download | % of raw $t | vs full | time s | peak RSS KiB |"
        echo "| --- | --- | --- | --- | --- | --- |"
        local fb
        fb=$(med "full-$t-bytes")
        part full && row "full image, zstd -3: install" "full-$t" "$fb"
        part chunked && row "chunked (level $LEVEL), delta install" "chunked-$t" "$fb"
        if part baselines; then
            row "xdelta3 -9 (per-pair patch): apply" "xdelta-$t" "$fb"
            row "zstd --patch-from -19 --long=31: apply" "zpatch-$t" "$fb"
        fi
        echo
        part full && echo "- full install: $(med "full-$t-req") requests, $(med "full-$t-conn") connections; result: method=$(result method "${LAST[full-$t]}") downloaded=$(result downloaded "${LAST[full-$t]}") written=$(result written "${LAST[full-$t]}")"
        part chunked && echo "- chunked install: $(med "chunked-$t-req") requests, $(med "chunked-$t-conn") connections; result: method=$(result method "${LAST[chunked-$t]}") downloaded=$(result downloaded "${LAST[chunked-$t]}") reused=$(result reused "${LAST[chunked-$t]}") written=$(result written "${LAST[chunked-$t]}") fetched_blocks=$(result fetched_blocks "${LAST[chunked-$t]}") refetched_groups=$(result refetched_groups "${LAST[chunked-$t]}")"
        if part chunked && [[ $(result method "${LAST[chunked-$t]}") != delta ]]; then
            echo "- **the chunked install did not go the delta way** (result method=$(result method "${LAST[chunked-$t]}"))"
        fi
        echo "- image sizes: full $(stat -c %s "srv/$t-full.img" 2>/dev/null || echo -), chunked $(stat -c %s "srv/$t-chunked.img" 2>/dev/null || echo -) bytes; pack time full ${PACK_S[full-$t]:--} s, chunked ${PACK_S[chunked-$t]:--} s"
    done
    echo
    echo '```'
    part chunked || echo "(no chunked installs in this run: BENCH_PARTS=\"${PARTS# }\")"
    ratio v2 12
    ratio v1b 4
    echo '```'
    if part rss; then
        echo
        echo "### Peak RSS of a delta install, synthetic payloads (goal <= 32 MiB)"
        echo
        echo "Every 4 KiB of the payload nonzero and distinct (a counter); v2 changes one MiB in eight;"
        echo "v1 factory-installed (chunked, from a file) in slot A, v2 installed over HTTP into B."
        echo
        echo "| payload | image bytes | downloaded bytes | install s | peak RSS KiB | <= 32 MiB | factory install s / RSS KiB |"
        echo "| --- | --- | --- | --- | --- | --- | --- |"
        for g in $RSS_GIB; do
            if [[ -z ${FIG[rss$g-rss]:-} ]]; then
                echo "| $g GiB | ${RSSN[$g]:-not run} | | | | | |"
                continue
            fi
            local within=no
            if [[ ${FIG[rss$g-rss]} -le 32768 ]]; then within=yes; fi
            echo "| $g GiB | ${FIG[rss$g-img]} | ${FIG[rss$g-bytes]} | ${FIG[rss$g-s]} | ${FIG[rss$g-rss]} | $within | ${FIG[rss$g-factory-s]} / ${FIG[rss$g-factory-rss]} |"
        done
        echo
        for g in $RSS_GIB; do echo "- $g GiB: ${RSSN[$g]:-not run}"; done
    fi
}
report > RESULTS-delta.md
echo
cat RESULTS-delta.md
if [[ ${BENCH_APPEND:-0} == 1 ]]; then
    { echo; cat RESULTS-delta.md; } >> "$HERE/bench/RESULTS.md"
fi
echo
echo "markdown kept in $WORK/RESULTS-delta.md" >&2
