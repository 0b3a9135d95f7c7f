# shellcheck shell=bash
# Negative controls of the QEMU harness: scenarios that expect something false
# and must fail, so that a harness that cannot fail is caught. Each must fail
# at its wrong expectation (its first failure message matches the pattern in
# CONTROLS) and stop there (control_went_on, after that expectation, must not
# run). Only the first boots the machine: the factory disk boots slot A, v1.0.0,
# and powers off; the others read that same boot's console and disk, or a copy
# of the disk that nothing can read. Sourced by qemu/run-tests.sh after
# qemu/lib.sh and qemu/machine.sh.

# NAME|pattern (bash regex) the control's first failure message must match
CONTROLS=(
  'wrong-slot|^console: expected the boot stage to choose slot B$'
  'wrong-version|^console: expected slot A to run version 2\.0\.0$'
  'wrong-flags|^slot A is not marked bad \(cgpt: priority=[1-9]'
  'unreadable-not-bootable|^cgpt cannot read control-unreadable\.img '
  'unreadable-bad|^cgpt cannot read control-unreadable\.img '
  'unreadable-status|^cgpt cannot read control-unreadable\.img '
  "empty-cgpt|^cgpt show -i [0-9]+ -P printed '' for slot B, not a number$"
  "empty-status|^slotctl status --json printed no JSON object: ''$"
  'missing-console|^console: the last boot.s console log is missing or empty '
  'failed-command|^command failed \(status 1\): cgpt show .*/no-such-disk\.img'
  'fail-in-substitution|^disk: no partition labelled NO-SUCH-LABEL$'
)

# The mark of a control that went on past its wrong expectation.
control_went_on() { touch "$RUN/control-went-on"; }

# The disk and console of the controls' one boot.
control_boot() {
  [[ -f "$RUN/control.console" && -f "$RUN/control.img" ]] ||
    fail "needs the boot of the wrong-slot control, which did not complete"
  BOOT_LOG="$RUN/control.console"
  DISK="$RUN/control.img"
}

# A copy of the factory disk with both GPT headers zeroed: no tool can read it.
control_unreadable_disk() {
  DISK="$RUN/control-unreadable.img"
  cp --sparse=always "$RUN/factory.img" "$DISK" || fail "cannot copy the factory disk"
  local sectors
  sectors=$(($(stat -c %s "$DISK") / 512))
  dd if=/dev/zero of="$DISK" bs=512 seek=1 count=1 conv=notrunc status=none ||
    fail "cannot zero the primary GPT header of $DISK"
  dd if=/dev/zero of="$DISK" bs=512 seek=$((sectors - 1)) count=1 conv=notrunc status=none ||
    fail "cannot zero the backup GPT header of $DISK"
}

control_wrong_slot() { # a real boot of slot A, expected to be of slot B
  DISK="$RUN/control.img"
  cp --sparse=always "$RUN/factory.img" "$DISK" || fail "cannot copy the factory disk"
  boot control-factory-boot
  expect_end poweroff
  cp "$BOOT_LOG" "$RUN/control.console" || fail "cannot keep the control boot's console"
  expect_booted B 1.0.0
  control_went_on
}

control_wrong_version() { # that boot of v1.0.0, expected to run v2.0.0
  control_boot
  expect_booted A 2.0.0
  control_went_on
}

control_wrong_flags() { # slot A, good after that boot, expected marked bad
  control_boot
  expect_bad A
  control_went_on
}

control_unreadable_not_bootable() { # expect_not_bootable on a disk nothing can read
  control_unreadable_disk
  expect_not_bootable B
  control_went_on
}

control_unreadable_bad() { # expect_bad on a disk nothing can read
  control_unreadable_disk
  expect_bad B
  control_went_on
}

control_unreadable_status() { # expect_status_agrees on a disk nothing can read
  control_unreadable_disk
  expect_status_agrees A
  control_went_on
}

control_empty_cgpt() { # cgpt answering nothing for the flags (an empty answer is no 0)
  control_boot
  # shellcheck disable=SC2317 # (called by cgpt_read, by name)
  cgpt() {
    if [[ " $* " != *" -P "* && " $* " != *" -T "* && " $* " != *" -S "* ]]; then
      command cgpt "$@"
    fi
  }
  expect_not_bootable B
  control_went_on
}

control_empty_status() { # slotctl status answering nothing
  control_boot
  # shellcheck disable=SC2034 # (status_json runs it)
  SLOTCTL=true
  expect_status_agrees A
  control_went_on
}

control_missing_console() { # refute_console on a console log that is not there
  control_boot
  BOOT_LOG="$RUN/no-such.console"
  refute_console 'Kernel panic' "a kernel panic"
  control_went_on
}

control_failed_command() { # a command failing outside any expectation
  control_boot
  cgpt show "$RUN/no-such-disk.img" >/dev/null
  control_went_on
}

control_fail_in_substitution() { # an expectation failing inside a `$(...)` argument
  control_boot
  : "$(part_index NO-SUCH-LABEL)" # (an argument: nothing checks its status)
  control_went_on
}

# run_controls: runs every control; sets CONTROLS_CAUGHT to how many failed
# where they should (each then counts as passed) and CONTROLS_MISSED to the
# names of the others. Each control's stderr (its expected failure, with the
# console's last lines) goes to $RUN/control-NAME.log.
CONTROLS_CAUGHT=0
CONTROLS_MISSED=()
run_controls() {
  local c name caught first why t0=$SECONDS
  for c in "${CONTROLS[@]}"; do
    name="${c%%|*}"
    caught="${c#*|}"
    rm -f "$RUN/control-went-on"
    run_scenario "control_${name//-/_}" "$RUN/control-$name.log"
    first="$SCENARIO_FAILURE"
    why=""
    if ((SCENARIO_RC == 0)); then
      why="it passed: the harness did not catch it"
    elif [[ -e "$RUN/control-went-on" ]]; then
      why="it failed, but went on past its wrong expectation"
    elif ! [[ "$first" =~ $caught ]]; then
      why="it failed, but at '${first:-no message}' instead of /$caught/ (see $RUN/control-$name.log)"
    fi
    if [[ -z "$why" ]]; then
      CONTROLS_CAUGHT=$((CONTROLS_CAUGHT + 1))
      log "negative control $name: PASS (the harness caught: $first)"
    else
      CONTROLS_MISSED+=("$name")
      log "negative control $name: FAIL ($why)"
    fi
  done
  log "negative controls: $CONTROLS_CAUGHT/${#CONTROLS[@]} caught in $((SECONDS - t0))s"
}
