# shellcheck shell=bash
# The QEMU harness: boots the test machine, follows its serial console, plays
# the power switch and the watchdog, and inspects the disk image from the host.
# Sourced by qemu/run-tests.sh and scripts/demo.sh.
#
# Environment:
#   SLOTCTL_QEMU_ACCEL=tcg|kvm   accelerator (default tcg; kvm only on request)
#   SLOTCTL_QEMU_TIMEOUT=SECS    per-boot timeout (default 180)
#   SLOTCTL_QEMU_VERBOSE=1       echo every console line as it arrives

QEMU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$QEMU_DIR/.." && pwd)"
BUILD="$QEMU_DIR/build"
ACCEL="${SLOTCTL_QEMU_ACCEL:-tcg}"
BOOT_TIMEOUT="${SLOTCTL_QEMU_TIMEOUT:-180}"
VERBOSE="${SLOTCTL_QEMU_VERBOSE:-0}"
ECHO_SKIP=""   # with VERBOSE, console lines matching this regex are not echoed
SLOTCTL="$REPO_DIR/target/x86_64-unknown-linux-gnu/release/slotctl"

RUN=""         # this run's work folder (disks, sticks, console logs)
DISK=""        # the machine's disk image (the guest's /dev/vda)
QEMU_PID=""    # the qemu of the boot in progress
BOOT_LOG=""    # console log of the last boot
BOOT_END=""    # how the last boot ended: poweroff, reboot, panic, cut
BOOT_SECS=""   # its wall time

case "$ACCEL" in tcg | kvm) ;; *)
  echo "qemu: SLOTCTL_QEMU_ACCEL must be tcg or kvm, not '$ACCEL'" >&2
  exit 2
  ;;
esac

log() { echo "qemu: $*"; }

# fail MESSAGE: the current scenario fails (scenarios run in a subshell).
fail() {
  echo "qemu: FAIL: $*" >&2
  if [[ -n "$BOOT_LOG" && -f "$BOOT_LOG" ]]; then
    if [[ -s "$BOOT_LOG" ]]; then
      echo "qemu: last console lines of $(basename "$BOOT_LOG"):" >&2
      tail -n 30 "$BOOT_LOG" | sed 's/^/    | /' >&2
    else
      echo "qemu: the console of $(basename "$BOOT_LOG") is empty" >&2
    fi
  fi
  exit 1
}

# Kill the qemu this harness started, if one is still running.
kill_qemu() {
  if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -9 "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
  fi
  QEMU_PID=""
}

# ---------------------------------------------------------------- building

build_slotctl() {
  log "building the static slotctl"
  (cd "$REPO_DIR" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --target x86_64-unknown-linux-gnu -p slotctl)
  [[ -x "$SLOTCTL" ]] || { echo "qemu: no binary at $SLOTCTL" >&2; exit 1; }
}

# new_run PREFIX: a fresh work folder qemu/build/PREFIX.XXXXXX, replacing the
# previous run's (disks and console logs).
new_run() {
  mkdir -p "$BUILD"
  rm -rf "$BUILD/$1".*
  RUN="$(mktemp -d "$BUILD/$1.XXXXXX")"
  echo 0 >"$RUN/boots"
}

# ---------------------------------------------------------------- booting

# boot NAME [--stick FILE] [--append ARGS] [--cut FUNC] [--watchdog SECS]
#           [--fail-writes-at SECTOR]
# One power-on of the machine, until qemu exits (the guest powers off or
# reboots: -no-reboot turns a reboot into an exit) or the harness kills it.
#   --stick FILE      attach FILE as the second virtio disk (/dev/vdb)
#   --append ARGS     extra kernel command line
#   --cut FUNC        power cut: kill -9 qemu as soon as `FUNC LINE` succeeds
#                     for a console line
#   --watchdog SECS   the watchdog: armed when the boot stage hands over to a
#                     slot, it resets the machine (kill -9 of qemu) once the
#                     console has been silent for SECS seconds
#   --fail-writes-at SECTOR
#                     the disk sits on QEMU's blkdebug driver, which fails
#                     (EIO) every write touching that 512-byte sector: what
#                     the guest writes there never reaches the disk
# A boot that takes longer than SLOTCTL_QEMU_TIMEOUT fails the scenario.
boot() {
  local name="$1"
  shift
  local stick="" append="" cut="" watchdog="" failsector=""
  while (($#)); do
    case "$1" in
      --stick) stick="$2" ;;
      --append) append="$2" ;;
      --cut) cut="$2" ;;
      --watchdog) watchdog="$2" ;;
      --fail-writes-at) failsector="$2" ;;
      *) fail "boot: unknown option $1" ;;
    esac
    shift 2
  done
  local n=$(($(cat "$RUN/boots") + 1))
  echo "$n" >"$RUN/boots"
  BOOT_LOG="$RUN/$(printf '%02d' "$n")-$name.console"
  local fifo="$RUN/console.fifo"
  rm -f "$fifo"
  mkfifo "$fifo"
  local drives=(-drive "file=$DISK,format=raw,if=virtio")
  if [[ -n "$failsector" ]]; then
    printf '[inject-error]\nevent = "pwritev"\niotype = "write"\nerrno = "5"\nsector = "%s"\n' \
      "$failsector" >"$RUN/blkdebug.cfg"
    drives=(-drive "driver=raw,if=virtio,file.driver=blkdebug,file.config=$RUN/blkdebug.cfg,file.image.filename=$DISK")
  fi
  [[ -n "$stick" ]] && drives+=(-drive "file=$stick,format=raw,if=virtio,readonly=on")
  local start=$SECONDS
  qemu-system-x86_64 -accel "$ACCEL" -m 256 -smp 1 -display none -monitor none \
    -serial stdio -no-reboot \
    -kernel "$BUILD/kernel/vmlinuz" -initrd "$BUILD/initrd" \
    -append "console=ttyS0 quiet panic=-1 $append" \
    "${drives[@]}" </dev/null >"$fifo" 2>&1 &
  QEMU_PID=$!
  local fd
  exec {fd}<"$fifo"
  : >"$BOOT_LOG"
  BOOT_END=""
  local deadline=$((SECONDS + BOOT_TIMEOUT)) line rc remain wait_s armed="" last_line=$SECONDS
  while :; do
    remain=$((deadline - SECONDS))
    if ((remain <= 0)); then
      kill_qemu
      exec {fd}<&-
      fail "boot $n ($name) did not end within ${BOOT_TIMEOUT}s"
    fi
    line=""
    rc=0
    wait_s=$remain
    if [[ -n "$armed" ]] && ((watchdog < wait_s)); then wait_s=$watchdog; fi
    IFS= read -r -t "$wait_s" -u "$fd" line || rc=$?
    line="${line%$'\r'}"
    if ((rc > 128)); then
      [[ -n "$line" ]] && echo "$line" >>"$BOOT_LOG"
      if [[ -n "$armed" && -z "$BOOT_END" ]] && ((SECONDS - last_line >= watchdog)); then
        kill -9 "$QEMU_PID"
        BOOT_END=watchdog
        echo "### harness: watchdog reset (kill -9 of qemu) after ${watchdog}s of silence" >>"$BOOT_LOG"
      fi
      continue # qemu exits, or the deadline check above fails the boot
    fi
    last_line=$SECONDS
    if ((rc != 0)) && [[ -z "$line" ]]; then
      break # EOF: qemu has exited
    fi
    echo "$line" >>"$BOOT_LOG"
    if [[ "$VERBOSE" == 1 ]] && ! [[ -n "$ECHO_SKIP" && "$line" =~ $ECHO_SKIP ]]; then
      echo "    | $line"
    fi
    if [[ -z "$BOOT_END" && -n "$cut" ]] && "$cut" "$line"; then
      kill -9 "$QEMU_PID"
      BOOT_END="cut"
      echo "### harness: power cut (kill -9 of qemu) after this line" >>"$BOOT_LOG"
    fi
    if [[ -n "$watchdog" && "$line" == 'SLOTCTL-INITRAMFS: booting slot '* ]]; then
      armed=1
    fi
  done
  exec {fd}<&-
  rc=0
  wait "$QEMU_PID" 2>/dev/null || rc=$?
  QEMU_PID=""
  rm -f "$fifo"
  BOOT_SECS=$((SECONDS - start))
  if [[ -z "$BOOT_END" ]]; then
    if grep -q 'Kernel panic' "$BOOT_LOG"; then
      BOOT_END=panic
    elif grep -q 'reboot: Restarting system' "$BOOT_LOG"; then
      BOOT_END=reboot
    elif grep -q 'reboot: Power down' "$BOOT_LOG"; then
      BOOT_END=poweroff
    else
      fail "boot $n ($name): qemu exited (status $rc) without a power-off, reboot or panic"
    fi
  fi
  log "  boot $n ($name): ${BOOT_SECS}s, ended by $BOOT_END; $(boot_summary)"
}

# What the last boot's console says about it, on one line.
boot_summary() {
  local sel up
  sel="$(grep -o 'SLOTCTL-INITRAMFS: booting slot [AB]' "$BOOT_LOG" | tail -n1)"
  up="$(grep -o 'SLOTCTL-SLOT: up version=[^ ]*' "$BOOT_LOG" | tail -n1)"
  echo "${sel#SLOTCTL-INITRAMFS: booting }${up:+, ${up#SLOTCTL-SLOT: up }}"
}

# ---------------------------------------------------------------- console

# expect_console REGEX [WHAT]: the last boot's console has a matching line.
expect_console() {
  grep -Eq -- "$1" "$BOOT_LOG" || fail "console: expected ${2:-a line matching /$1/}"
}

# refute_console REGEX [WHAT]: it has none.
refute_console() {
  if grep -Eq -- "$1" "$BOOT_LOG"; then
    fail "console: unexpected ${2:-line matching /$1/}: $(grep -E -m1 -- "$1" "$BOOT_LOG")"
  fi
}

# expect_booted SLOT VERSION: the boot stage chose SLOT and it ran VERSION.
expect_booted() {
  expect_console "^SLOTCTL-INITRAMFS: booting slot $1 " "the boot stage to choose slot $1"
  expect_console "^SLOTCTL-SLOT: up version=$2 slot=$1 " "slot $1 to run version $2"
}

# ---------------------------------------------------------------- the stick

# make_stick NAME PLAN [FILE...]: an ext4 "USB stick" holding the plan (a
# shell fragment the guest's init sources after its boot check) and FILEs.
# Prints its path.
make_stick() {
  local name="$1" plan="$2"
  shift 2
  local dir="$RUN/stick-$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '%s\n' "$plan" >"$dir/plan"
  local f bytes=0
  for f in "$@"; do
    cp "$f" "$dir/"
    bytes=$((bytes + $(stat -c %s "$f")))
  done
  local mib=$((bytes / 1048576 + 8))
  mkfs.ext4 -q -d "$dir" -L USB "$RUN/stick-$name.img" "${mib}M" >/dev/null
  rm -rf "$dir"
  echo "$RUN/stick-$name.img"
}

# ---------------------------------------------------------------- the disk

# part_index LABEL: the partition number of LABEL in the disk image.
part_index() {
  local i
  for i in $(seq 1 16); do
    if [[ "$(cgpt show -i "$i" -l "$DISK" 2>/dev/null)" == "$1" ]]; then
      echo "$i"
      return 0
    fi
  done
  fail "disk: no partition labelled $1"
}

# cgpt_flags SLOT: "priority tries successful" of SLOT's flags partition, as
# cgpt reads them.
cgpt_flags() {
  local i
  i="$(flags_index "$1")"
  # (stderr: cgpt warns about a stale GPT copy, which scenarios 5 and 6 make)
  echo "$(cgpt show -i "$i" -P "$DISK" 2>/dev/null) $(cgpt show -i "$i" -T "$DISK" 2>/dev/null) $(cgpt show -i "$i" -S "$DISK" 2>/dev/null)"
}

# status_json: `slotctl status --json` of the disk image, run on the host.
status_json() {
  "$SLOTCTL" --json --disk "$DISK" status || fail "slotctl status --json failed on the disk image"
}
