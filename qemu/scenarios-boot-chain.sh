# shellcheck shell=bash
# The verified boot chain on the booting machine (issue 14): dm-verity roots
# bound to the signed image, the boot counter of committed slots, and kernel
# A/B through kexec (docs/verified-boot.md). Sourced by qemu/run-tests.sh
# after qemu/machine.sh; scenarios 8-11 start from the disk scenario 2 left
# (v1 on A, v2 on B, booted B, both good).

# ------------------------------------------------------------ helpers

# root_offset SLOT: byte offset of SLOT's ROOT partition in the disk image,
# as slotctl status --json gives it, checked against cgpt's start sector.
root_offset() {
  local json off i start
  json="$(status_json)" || fail "slotctl status --json failed"
  off="$(jq -r --arg s "$1" "$JQ_SLOT"'.partitions[] | select(.role == "ROOT") | .offset' <<<"$json")" ||
    fail "jq cannot read slot $1's ROOT offset"
  [[ "$off" =~ ^[0-9]+$ ]] || fail "slotctl status --json gives no ROOT offset for slot $1 ('$off')"
  i="$(part_index "ROOT-$1")" || fail "disk: no partition ROOT-$1"
  start="$(cgpt_read b "$i")" || fail "cgpt cannot read ROOT-$1's start"
  ((start * 512 == off)) || fail "ROOT-$1: slotctl says offset $off, cgpt says sector $start"
  echo "$off"
}

# file_offset VERSION PATH: byte offset, inside the ROOT file system of
# VERSION, of PATH's first data block (debugfs on the root image the
# harness built; the same bytes are the slot's ROOT partition).
file_offset() {
  local fs="$RUN/root-$1.ext4" block bs
  [[ -f "$fs" ]] || fail "no root file system image $fs"
  block="$(debugfs -R "bmap $2 0" "$fs" 2>/dev/null)" || fail "debugfs cannot map $2 in $fs"
  bs="$(debugfs -R stats "$fs" 2>/dev/null | sed -n 's/^Block size: *//p')" ||
    fail "debugfs cannot read the block size of $fs"
  [[ "$block" =~ ^[1-9][0-9]*$ && "$bs" =~ ^[0-9]+$ ]] ||
    fail "debugfs: block '$block', block size '$bs' for $2 in $fs"
  echo $((block * bs))
}

# verity_hash_offset IMAGE: byte offset, inside the ROOT partition, of the
# hash tree's first (top-level) block, from the signed header.
verity_hash_offset() {
  local start
  start="$("$SLOTCTL" --json image info "$1" |
    jq -r '.payloads[] | select(.role == "ROOT") | .verity.hash_start_block')" ||
    fail "slotctl image info cannot read $1's verity field"
  [[ "$start" =~ ^[1-9][0-9]*$ ]] || fail "$1 has no verity hash start for ROOT ('$start')"
  echo $((start * 4096))
}

# flip_byte OFFSET WHAT: invert one byte of the disk image, from the host.
flip_byte() {
  local old
  old="$(od -An -tu1 -j "$1" -N1 "$DISK" | tr -d ' ')" || fail "cannot read byte $1 of the disk"
  [[ "$old" =~ ^[0-9]+$ ]] || fail "cannot read byte $1 of the disk ('$old')"
  # shellcheck disable=SC2059
  printf "$(printf '\\%03o' $((old ^ 0xff)))" |
    dd of="$DISK" bs=1 seek="$1" conv=notrunc status=none || fail "cannot write byte $1 of the disk"
  log "  flipped the byte at $1 ($2): $old -> $((old ^ 0xff))"
}

# expect_given_up SLOT REGEX: slotctl status --json says why SLOT was given
# up, and the reason matches REGEX.
expect_given_up() {
  local json why
  json="$(status_json)" || fail "slotctl status --json failed"
  why="$(jq -r --arg s "$1" "$JQ_SLOT.boot_state.given_up // empty" <<<"$json")" ||
    fail "jq cannot read slot $1's boot state"
  [[ -n "$why" ]] || fail "slotctl status --json gives no reason why slot $1 was given up: $(jq -c --arg s "$1" "$JQ_SLOT.boot_state" <<<"$json")"
  [[ "$why" =~ $2 ]] || fail "slot $1 was given up for '$why', expected /$2/"
  log "  status: slot $1 given up: $why"
}

# ------------------------------------------------------------ scenario 8
scenario_8() { # a verity root whose hash tree does not match the signed root hash is not booted
  start_from 2
  install_from_stick s8 5
  flip_byte $(($(root_offset A) + $(verity_hash_offset "$RUN/v5.img"))) "slot A's top hash block"
  boot s8-root-hash-refused
  expect_console 'slotctl: warning: gave up slot A: ' "boot-select giving slot A up"
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_not_bootable A
  expect_given_up A 'verity|root hash|ROOT'
  expect_good B
  expect_next B
}

# ------------------------------------------------------------ scenario 9
scenario_9() { # one flipped byte in a new slot's root: its boots restart, the tries run out, the old slot boots
  start_from 2
  install_from_stick s9 5
  flip_byte $(($(root_offset A) + $(file_offset 5.0.0 /etc/slot-version))) \
    "a data block of slot A's /etc/slot-version"
  local t=$TRIES_NEW n=0
  while ((t > 0)); do
    n=$((n + 1))
    boot "s9-corrupt-root-$n"
    expect_console "^SLOTCTL-INITRAMFS: booting slot A root=/dev/dm-[0-9]+" "slot A booted from its verity device"
    expect_console 'data block [0-9]+ is corrupted' "dm-verity catching the flipped byte"
    expect_end reboot
    refute_console 'boot-check exit' "boot-check running on the corrupted root"
    t=$((t - 1))
    expect_flags A "$t" 0
  done
  boot s9-back-on-v2
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_not_bootable A
  expect_given_up A 'tries|boot-check'
  expect_good B
  expect_next B
}

# ------------------------------------------------------------ scenario 10
scenario_10() { # the same corruption in a committed slot: after the bounded boots, the other good slot boots
  start_from 2
  flip_byte $(($(root_offset B) + $(file_offset 2.0.0 /etc/slot-version))) \
    "a data block of slot B's /etc/slot-version"
  local n
  for n in $(seq 1 "$MAX_UNCHECKED_BOOTS"); do
    boot "s10-committed-corrupt-$n"
    expect_console "^SLOTCTL-INITRAMFS: booting slot B root=/dev/dm-[0-9]+" "committed slot B booted again"
    expect_console 'data block [0-9]+ is corrupted' "dm-verity catching the flipped byte"
    expect_end reboot
    expect_good B
  done
  boot s10-fallback-to-a
  expect_console 'slotctl: warning: gave up slot B: ' "boot-select giving the committed slot B up"
  expect_booted A 1.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_not_bootable B
  expect_given_up B "$MAX_UNCHECKED_BOOTS .*boot-check"
  expect_good A
  expect_next A
}

# ------------------------------------------------------------ scenario 11
scenario_11() { # kernel A/B: each slot's own kernel through kexec; a kernel that cannot load is given up
  start_from 2
  install_from_stick s11 6
  # The first stage kexecs A's own kernel: its command line (flavour six) is
  # on the slot's console; the second stage opens the root without a try.
  local stick
  stick="$(make_stick s11-v7 "$(plan_install v7.img)" "$RUN/v7.img")"
  boot s11-kexec-into-a --append slotctl.kexec=1 --stick "$stick"
  expect_console '^SLOTCTL-INITRAMFS: first stage: boot-select --kexec' "the kexec first stage"
  expect_console '^SLOTCTL-INITRAMFS: second stage: slot A ' "A's own initramfs as the second stage"
  expect_console '^SLOTCTL-SLOT: cmdline .*slotctl\.flavour=six' "A's own command line"
  expect_booted A 6.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_console '^SLOTCTL-SLOT: install exit=0$' "v7 installed into B"
  expect_end poweroff
  expect_flags A $((TRIES_NEW - 1)) 1 # one try for both stages
  expect_flags B "$TRIES_NEW" 0
  expect_next B
  # B's kernel is garbage in a signed image: the load fails, B is given up,
  # A's kernel is loaded instead, in the same boot.
  stick="$(make_stick s11-v8 "$(plan_install v8.img)" "$RUN/v8.img")"
  boot s11-garbage-kernel --append slotctl.kexec=1 --stick "$stick"
  expect_console 'slotctl: warning: gave up slot B: ' "boot-select giving B up when its kernel does not load"
  expect_booted A 6.0.0
  expect_console '^SLOTCTL-SLOT: cmdline .*slotctl\.flavour=six'
  expect_console '^SLOTCTL-SLOT: install exit=0$' "v8 installed into B"
  expect_end poweroff
  expect_good A
  expect_flags B "$TRIES_NEW" 0
  expect_next B
  # B's own kernel, another command line, reached by kexec too.
  boot s11-kexec-into-b --append slotctl.kexec=1
  expect_console '^SLOTCTL-INITRAMFS: second stage: slot B ' "B's own initramfs as the second stage"
  expect_console '^SLOTCTL-SLOT: cmdline .*slotctl\.flavour=eight' "B's own command line"
  refute_console 'slotctl\.flavour=six'
  expect_booted B 8.0.0
  expect_console '^SLOTCTL-SLOT: boot-check exit=0$'
  expect_end poweroff
  expect_flags B $((TRIES_NEW - 1)) 1
  expect_good A
  expect_next B
}
