#!/usr/bin/env bash
# End-to-end scenarios on a booting machine (issue 5): a QEMU machine whose
# initramfs runs `slotctl boot-select` and whose slots run `slotctl
# boot-check`. Each scenario asserts on the serial console and on the flags
# read from the host (`slotctl status --json` and `cgpt`). A scenario stops at
# its first failed expectation or command (qemu/lib.sh: run_scenario). The
# negative controls (qemu/controls.sh) run first, in the same harness: each
# expects something false and must fail where it does, or the run fails.
#
# Scenarios 8-11 (the verified boot chain: dm-verity, the boot counter,
# kernel A/B through kexec) are in qemu/scenarios-boot-chain.sh.
#
# Usage: qemu/run-tests.sh [SCENARIO...]   (default: 1 to 11)
#        qemu/run-tests.sh controls         (the negative controls only)
# Environment: see qemu/lib.sh (SLOTCTL_QEMU_ACCEL, _TIMEOUT, _VERBOSE).
set -euo pipefail
# shellcheck source=qemu/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=qemu/machine.sh
source "$QEMU_DIR/machine.sh"
# shellcheck source=qemu/controls.sh
source "$QEMU_DIR/controls.sh"
# shellcheck source=qemu/scenarios-boot-chain.sh
source "$QEMU_DIR/scenarios-boot-chain.sh"

trap kill_qemu EXIT

# Each scenario starts from a saved disk: 1 from the factory disk, 2 from the
# end of 1, the others from the end of 2 (v1 on A, v2 on B, booted B, both
# good), so one failure does not hide the others.
start_from() {
  local state="$RUN/state-$1.img"
  [[ -f "$state" ]] || fail "needs the disk as scenario $1 left it, and scenario $1 did not pass"
  DISK="$RUN/disk.img"
  cp --sparse=always "$state" "$DISK" || fail "cannot copy the disk $state"
}
save_as() { cp --sparse=always "$DISK" "$RUN/state-$1.img" || fail "cannot save the disk as state $1"; }

# ------------------------------------------------------------ scenario 1
scenario_1() { # a fresh disk boots A; v2 installed from the USB stick and activated
  DISK="$RUN/disk.img"
  cp --sparse=always "$RUN/factory.img" "$DISK" || fail "cannot copy the factory disk"
  expect_good A
  expect_not_bootable B
  expect_next A
  local stick
  stick="$(make_stick s1 "$(plan_install v2.img)" "$RUN/v2.img")"
  boot s1-fresh-install-v2 --stick "$stick"
  expect_booted A 1.0.0
  expect_end poweroff
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on v1"
  expect_console '"event":"result".*"ok":true' "the install's JSON result ok"
  expect_console '^SLOTCTL-SLOT: install exit=0$' "the install to succeed"
  expect_good A
  expect_flags B "$TRIES_NEW" 0
  expect_next B
  save_as 1
}

# ------------------------------------------------------------ scenario 2
scenario_2() { # B boots with tries decremented, is marked good, and stays
  start_from 1
  boot s2-first-boot-of-b
  expect_booted B 2.0.0
  # Its ROOT is the dm-verity device boot-select opened from the root hash
  # in B's verified slot record (issue 14).
  expect_console '^SLOTCTL-INITRAMFS: booting slot B root=/dev/dm-[0-9]+$' "B's root on its verity device"
  expect_console_status B tries $((TRIES_NEW - 1)) "tries decremented by the boot stage"
  expect_console_status B successful 0 "B not yet good before its check"
  # (TRIES_NEW is 2: one try left.)
  expect_console "^slotctl: booting slot B \\(on trial, $((TRIES_NEW - 1)) try left\\)" \
    "boot-select announcing the trial boot"
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on v2"
  expect_end poweroff
  expect_flags B $((TRIES_NEW - 1)) 1
  expect_good A
  expect_next B
  boot s2-stays-on-b
  expect_booted B 2.0.0
  expect_end poweroff
  expect_good B
  expect_next B
  save_as 2
}

# ------------------------------------------------------------ scenario 3
scenario_3() { # v3 fails its health check: marked bad, reboot, back on v2
  start_from 2
  install_from_stick s3 3
  boot s3-v3-health-fails
  expect_booted A 3.0.0
  expect_console 'self-test: application did not start' "v3's failing self-test"
  refute_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check passing on v3"
  expect_console 'slot A marked bad, rebooting' "boot-check marking A bad and rebooting"
  expect_end reboot
  expect_bad A
  expect_next B
  boot s3-back-on-v2
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_good B
  expect_bad A
}

# ------------------------------------------------------------ scenario 4
scenario_4() { # v4 panics, then hangs: the tries run out, back on v2
  start_from 2
  install_from_stick s4 4
  local t=$TRIES_NEW n=0
  while ((t > 0)); do
    n=$((n + 1))
    if ((n % 2)); then
      boot "s4-v4-panics-$n"
      expect_end panic
      expect_console 'Kernel panic' "a kernel panic"
    else
      boot "s4-v4-hangs-$n" --append slotctl.crash=hang --watchdog "$WATCHDOG_SECS"
      expect_end watchdog
      expect_console '^SLOTCTL-SLOT: hanging before boot-check' "v4 hanging"
    fi
    expect_booted A 4.0.0
    refute_console 'boot-check exit' "boot-check running on v4"
    t=$((t - 1))
    expect_flags A "$t" 0
  done
  expect_next B
  boot s4-fallback-to-v2
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_good B
  expect_not_bootable A
}

# ------------------------------------------------------------ scenario 5
scenario_5() { # power cuts early, mid-payload, during activation; then it installs
  start_from 2
  local stick point
  stick="$(make_stick s5 "$(plan_install v5.img)" "$RUN/v5.img")"
  # Cuts timed by the install's own JSON events on the console.
  for point in early mid-payload activation; do
    boot "s5-cut-$point" --stick "$stick" --cut "$(cut_regex "$point")"
    expect_booted B 2.0.0
    expect_end cut
    refute_console '^SLOTCTL-SLOT: install exit' "the install to finish before the cut"
    expect_not_bootable A
    expect_good B
    expect_next B
    if [[ "$point" == activation ]]; then
      # Where in the window the cut landed, for the log (either is correct).
      if "$SLOTCTL" --disk "$DISK" --booted B verify-slot A --keyring "$RUN/keyring" >/dev/null 2>&1; then
        log "  the activation cut landed after the slot record reached the disk"
      else
        log "  the activation cut landed before the slot record reached the disk"
      fi
    fi
  done
  # The next boot is the old slot; installing again succeeds.
  boot s5-install-again --stick "$stick"
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: install exit=0$' "the install to succeed after the cuts"
  expect_end poweroff
  expect_flags A "$TRIES_NEW" 0
  expect_next A
  boot s5-boots-v5
  expect_booted A 5.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_good A
  expect_next A

  # Cuts inside the activation commit itself, placed exactly: QEMU's blkdebug
  # fails every write to one sector, then the harness cuts the power. First
  # v5 is written and recorded into B without activation (a reinstall of
  # the booted version).
  stick="$(make_stick s5-rec "$(plan_install_no_activate v5.img)" "$RUN/v5.img")"
  boot s5-install-no-activate --stick "$stick"
  expect_booted A 5.0.0
  expect_console '^SLOTCTL-SLOT: install exit=0$' "install --no-activate to succeed"
  expect_end poweroff
  expect_not_bootable B
  expect_recorded B A
  expect_next A
  # (a) The commit's primary copy never reaches the disk: the old flags stand.
  stick="$(make_stick s5-act "$(plan_activate B)")"
  boot s5-cut-activation-primary --stick "$stick" --fail-writes-at 1 --cut cut_after_activate
  expect_booted A 5.0.0
  expect_console 'slotctl: error: .*primary GPT' "the activation failing on the primary copy"
  expect_end cut
  expect_not_bootable B
  expect_good A
  expect_next A
  expect_gpt_copies_healthy
  # (b) The primary copy lands, the backup does not: the activation stands
  # (the primary header is the commit point) and boot-select repairs the backup.
  local sector
  sector="$(backup_header_sector)"
  boot s5-cut-activation-backup --stick "$stick" --fail-writes-at "$sector" \
    --cut cut_after_activate
  expect_booted A 5.0.0
  expect_console 'slotctl: error: .*backup' "the activation failing on the backup copy"
  expect_end cut
  expect_gpt_copies ok bad "after the cut (the primary intact, the backup stale)"
  expect_flags B "$TRIES_NEW" 0
  expect_next B
  boot s5-activation-stands
  expect_console 'rewrote the bad backup GPT copy' "boot-select repairing the stale backup"
  expect_booted B 5.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_gpt_copies_healthy
  expect_sgdisk_clean "after the repair"
  expect_good B
  expect_next B
}

# ------------------------------------------------------------ scenario 6
scenario_6() { # the primary GPT corrupted from the host: repaired at boot
  start_from 2
  corrupt_primary_gpt
  expect_gpt_copies bad ok "after the corruption (slotctl must see it)"
  expect_sgdisk_problems "the corruption did not show"
  boot s6-repairs-gpt
  expect_booted B 2.0.0
  expect_console 'rewrote the bad primary GPT copy' "boot-select reporting the repair"
  # The kernel found no partitions in the bad primary table (it ignores the
  # backup): the boot stage has to re-read the repaired one.
  expect_console '^(SLOTCTL-INITRAMFS|slotctl): no /dev/vda[0-9]+ yet: re-reading the partition table' \
    "the boot stage re-reading the repaired partition table"
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_sgdisk_clean "after the boot"
  expect_gpt_copies_healthy
  expect_good B
  expect_next B
}

# ------------------------------------------------------------ scenario 7
scenario_7() { # a technician's `slotctl rollback` goes back to the other slot
  start_from 2
  local stick
  stick="$(make_stick s7 "$(plan_rollback)")"
  boot s7-technician-rollback --stick "$stick"
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: rollback exit=0$' "slotctl rollback to succeed"
  expect_end poweroff
  expect_next A
  boot s7-runs-a
  expect_booted A 1.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_good A
  expect_next A
}

# ------------------------------------------------------------ main
main() {
  local scenarios=("$@")
  if [[ "${scenarios[*]}" == controls ]]; then
    scenarios=()
  elif ((${#scenarios[@]} == 0)); then
    scenarios=(1 2 3 4 5 6 7 8 9 10 11)
  fi
  # Scenarios 3-11 start from the disk scenario 2 leaves, which starts from 1's.
  local want=" ${scenarios[*]} "
  if [[ "$want" =~ \ ([3-9]|1[01])\  ]]; then
    [[ "$want" == *" 2 "* ]] || scenarios=(2 "${scenarios[@]}")
  fi
  want=" ${scenarios[*]} "
  if [[ "$want" =~ \ ([2-9]|1[01])\  ]]; then
    [[ "$want" == *" 1 "* ]] || scenarios=(1 "${scenarios[@]}")
  fi
  local s
  for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || { echo "qemu: no scenario $s" >&2; exit 2; }
  done
  local t0=$SECONDS
  prepare_machine
  # The harness must be able to fail before its passes mean anything.
  log "negative controls: ${#CONTROLS[@]} scenarios that expect something false (1 boot)"
  run_controls
  local passed=0 failed=()
  for s in "${scenarios[@]}"; do
    log "scenario $s: $(sed -n "s/^scenario_$s() { # //p" "$0" "$QEMU_DIR/scenarios-boot-chain.sh")"
    # fail ends the scenario (and only it); the others still run.
    run_scenario "scenario_$s"
    if ((SCENARIO_RC == 0)); then
      passed=$((passed + 1))
      log "scenario $s: PASS"
    else
      failed+=("$s")
      log "scenario $s: FAIL (${SCENARIO_FAILURE:-no message})"
    fi
  done
  local boots
  boots="$(cat "$RUN/boots")"
  log "$boots boots, $passed/${#scenarios[@]} scenarios passed," \
    "$CONTROLS_CAUGHT/${#CONTROLS[@]} negative controls caught," \
    "in $((SECONDS - t0))s (accel $ACCEL; logs in $RUN)"
  if ((${#failed[@]})); then
    log "failed: ${failed[*]}"
  fi
  if ((${#CONTROLS_MISSED[@]})); then
    log "negative controls the harness did not catch: ${CONTROLS_MISSED[*]}"
  fi
  if ((${#failed[@]} || ${#CONTROLS_MISSED[@]})); then
    exit 1
  fi
}

main "$@"
