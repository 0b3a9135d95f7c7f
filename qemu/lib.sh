# shellcheck shell=bash
# The QEMU harness: boots the test machine, follows its serial console, plays
# the power switch and the watchdog, and inspects the disk image from the host.
# Sourced by qemu/run-tests.sh, qemu/scenario-agent.sh and scripts/demo.sh.
#
# Environment:
#   SLOTCTL_QEMU_ACCEL=tcg|kvm   accelerator (default tcg; kvm only on request)
#   SLOTCTL_QEMU_TIMEOUT=SECS    per-boot timeout (default 180)
#   SLOTCTL_QEMU_VERBOSE=1       echo every console line as it arrives
#
# Errors: a scenario stops at its first failed expectation or command. The
# scripts run with `set -e`; inherit_errexit carries it into `$(...)`, and
# the ERR trap (on_error) names a command that failed outside any check.
# errexit does not reach everywhere: not the enclosing command of a `$(...)`
# used as an argument, and nothing inside a function or `$(...)` whose status
# is tested (`if f`, `f || fail`, `x="$(f)" || fail`). So the helpers do not
# rely on it: each checks the status and the output of what it runs and
# calls fail, and fail ends the scenario from wherever it is called (in a
# `$(...)` too: it signals the scenario's shell, see fail below).
# qemu/controls.sh shows the harness catching each of these cases.

shopt -s inherit_errexit

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
SCENARIO_RC=0       # run_scenario: the exit status of the last scenario,
SCENARIO_FAILURE="" # and its first failure message (the cause)
# The shell that runs the current scenario: fail, called in a subshell of it
# (a `$(...)`, a pipeline), signals it with USR1 so that it ends too.
# run_scenario runs a scenario in a subshell and sets this there.
SCENARIO_PID=$BASHPID
trap 'exit 1' USR1
# A command that fails outside any expectation stops the script (set -e);
# on_error names it. errtrace (-E) carries the trap into functions.
set -E
trap on_error ERR

case "$ACCEL" in tcg | kvm) ;; *)
  echo "qemu: SLOTCTL_QEMU_ACCEL must be tcg or kvm, not '$ACCEL'" >&2
  exit 2
  ;;
esac

log() { echo "qemu: $*"; }

# fail MESSAGE: the current scenario fails, here and now. The message also
# goes to $RUN/fail.log (run-tests.sh's negative controls read it). Called in
# a subshell (`x="$(helper)"`, `cmd "$(helper)"`, a pipeline), `exit` would end
# only that subshell: fail then also sends USR1 to the scenario's shell, whose
# trap ends it as soon as the command in progress returns.
fail() {
  # A fail in a `$(...)` makes its callers' checks fail in turn: only the
  # first message, the cause, is shown (and kept in $RUN/fail.log).
  if [[ -n "$RUN" && -s "$RUN/fail.log" ]]; then
    fail_exit
  fi
  echo "qemu: FAIL: $*" >&2
  if [[ -n "$RUN" && -d "$RUN" ]]; then
    echo "$*" >>"$RUN/fail.log"
  fi
  if [[ -n "$BOOT_LOG" && -f "$BOOT_LOG" ]]; then
    if [[ -s "$BOOT_LOG" ]]; then
      echo "qemu: last console lines of $(basename "$BOOT_LOG"):" >&2
      tail -n 30 "$BOOT_LOG" | sed 's/^/    | /' >&2
    else
      echo "qemu: the console of $(basename "$BOOT_LOG") is empty" >&2
    fi
  fi
  fail_exit
}

# fail_exit: ends the scenario (see fail).
fail_exit() {
  if [[ "$BASHPID" != "$SCENARIO_PID" ]]; then
    kill -USR1 "$SCENARIO_PID" 2>/dev/null || true
  fi
  exit 1
}

# on_error: the ERR trap. Says which command failed, unless a fail message
# already explained the failure (its status then reaches the callers, whose
# commands fail in turn).
on_error() {
  local rc=$?
  if [[ -n "$RUN" && -s "$RUN/fail.log" ]]; then
    return 0
  fi
  echo "qemu: FAIL: command failed (status $rc): $BASH_COMMAND" >&2
  if [[ -n "$RUN" && -d "$RUN" ]]; then
    echo "command failed (status $rc): $BASH_COMMAND" >>"$RUN/fail.log"
  fi
}

# run_scenario FUNC [ERRLOG]: runs FUNC as a scenario, in a subshell with
# errexit on: its first failed expectation (fail) or failed command ends it,
# and only it. Sets SCENARIO_RC to its exit status and SCENARIO_FAILURE to
# its first failure message. Its stderr goes to ERRLOG if given.
# Call it as a plain command: in an `if`, `||` or `&&`, bash would switch
# errexit off inside it, whatever the subshell says.
run_scenario() {
  : >"$RUN/fail.log"
  # (Not `2>/dev/stderr`: opening it truncates the file stderr goes to.)
  local errfd
  if [[ -n "${2:-}" ]]; then
    exec {errfd}>"$2"
  else
    exec {errfd}>&2
  fi
  # The subshell's status is read here rather than ending this shell; and
  # without the ERR trap for a moment, which would call it a failed command.
  set +e
  trap - ERR
  (
    set -eE # (set +e above is inherited: errexit back on)
    trap on_error ERR
    SCENARIO_PID=$BASHPID
    trap 'exit 1' USR1
    trap kill_qemu EXIT
    "$1"
  ) 2>&"$errfd"
  # shellcheck disable=SC2034 # (read by run-tests.sh and controls.sh)
  SCENARIO_RC=$?
  trap on_error ERR
  set -e
  exec {errfd}>&-
  # shellcheck disable=SC2034
  SCENARIO_FAILURE="$(head -n1 "$RUN/fail.log")"
  rm -f "$RUN/fail.log"
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
  local n
  n="$(cat "$RUN/boots")" || fail "boot: no boot counter in $RUN"
  n=$((n + 1))
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
    -kernel "$BUILD/kernel/vmlinuz" -initrd "$INITRD" \
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

# What the last boot's console says about it, on one line (for the log: a
# boot that never reached a slot says so, the expectations judge it).
boot_summary() {
  local sel up
  sel="$(grep -o 'SLOTCTL-INITRAMFS: booting slot [AB]' "$BOOT_LOG" | tail -n1)" || sel=""
  up="$(grep -o 'SLOTCTL-SLOT: up version=[^ ]*' "$BOOT_LOG" | tail -n1)" || up=""
  [[ -n "$sel" ]] || sel="no slot booted"
  echo "${sel#SLOTCTL-INITRAMFS: booting }${up:+, ${up#SLOTCTL-SLOT: up }}"
}

# ---------------------------------------------------------------- console

# console_has REGEX: whether the last boot's console has a matching line
# (status 0 or 1). A console log that is missing or empty, or a grep that
# fails (status 2: a bad regex, an unreadable file), fails the scenario:
# refute_console must not take "cannot read" for "no such line".
console_has() {
  [[ -n "$BOOT_LOG" && -s "$BOOT_LOG" ]] ||
    fail "console: the last boot's console log is missing or empty (${BOOT_LOG:-no boot yet})"
  local rc=0
  grep -Eq -- "$1" "$BOOT_LOG" || rc=$?
  ((rc <= 1)) || fail "console: grep -E '$1' failed (status $rc) on $(basename "$BOOT_LOG")"
  return "$rc"
}

# expect_console REGEX [WHAT]: the last boot's console has a matching line.
expect_console() {
  console_has "$1" || fail "console: expected ${2:-a line matching /$1/}"
}

# refute_console REGEX [WHAT]: it has none.
refute_console() {
  if console_has "$1"; then
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
  local f size bytes=0
  for f in "$@"; do
    cp "$f" "$dir/" || fail "make_stick: cannot copy $f"
    size="$(stat -c %s "$f")" || fail "make_stick: cannot stat $f"
    bytes=$((bytes + size))
  done
  local mib=$((bytes / 1048576 + 8))
  rm -f "$RUN/stick-$name.img"
  mkfs.ext4 -q -d "$dir" -L USB "$RUN/stick-$name.img" "${mib}M" >/dev/null ||
    fail "make_stick: mkfs.ext4 failed for the stick $name"
  rm -rf "$dir"
  echo "$RUN/stick-$name.img"
}

# ---------------------------------------------------------------- the disk

# cgpt_read FIELD INDEX: `cgpt show -i INDEX -FIELD` of the disk image, which
# must succeed. (cgpt's warnings on stderr are not failures: it warns about a
# stale GPT copy, which scenarios 5 and 6 make; they are shown when it fails.)
cgpt_read() {
  local out
  out="$(cgpt show -i "$2" -"$1" "$DISK" 2>"$RUN/cgpt.err")" ||
    fail "cgpt cannot read $(basename "$DISK") (cgpt show -i $2 -$1): $(grep -m1 '^ERROR' "$RUN/cgpt.err" || tail -n1 "$RUN/cgpt.err")"
  printf '%s\n' "$out"
}

# part_index LABEL: the partition number of LABEL in the disk image.
part_index() {
  local i label
  for i in $(seq 1 16); do
    label="$(cgpt_read l "$i")" || fail "disk: cannot read the label of partition $i"
    if [[ "$label" == "$1" ]]; then
      echo "$i"
      return 0
    fi
  done
  fail "disk: no partition labelled $1"
}

# status_json: `slotctl status --json` of the disk image, run on the host;
# it must succeed and print a JSON object.
status_json() {
  local out type
  out="$("$SLOTCTL" --json --disk "$DISK" status)" ||
    fail "slotctl status --json failed on the disk image"
  # (not `jq -e`: jq 1.6 exits 0 on an empty input)
  type="$(jq -r type 2>/dev/null <<<"$out")" || type="not JSON"
  [[ "$type" == object ]] ||
    fail "slotctl status --json printed no JSON object: '${out:0:200}'"
  printf '%s\n' "$out"
}
