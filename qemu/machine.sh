# shellcheck shell=bash
# The test machine and its software: builds the kernel, the initramfs, the
# five slot images and the factory disk, and knows how to read the flags.
# Sourced after qemu/lib.sh.

# Tries a newly activated slot gets (the guest config's `tries`).
TRIES_NEW=2
ROOT_FS_SIZE=24M
# The hardware watchdog the harness plays: seconds of console silence, once
# a slot is running, before it resets the machine (used by run-tests.sh).
# shellcheck disable=SC2034
WATCHDOG_SECS=10

# The versions the scenarios use: version behaviour.
VERSIONS=(
  "1.0.0 healthy"   # factory image, slot A
  "2.0.0 healthy"   # the update
  "3.0.0 unhealthy" # fails its health check
  "4.0.0 crash"     # panics / hangs before its boot check
  "5.0.0 healthy"   # installed through power cuts
)

# prepare_machine: everything a run needs, in a new $RUN. The factory disk is
# $RUN/factory.img: GPT from `slotctl disk init`, v1 in slot A from
# `slotctl install --factory`.
prepare_machine() {
  local tool
  for tool in qemu-system-x86_64 cgpt sgdisk jq mkfs.ext4 cpio gzip apt-get dpkg cargo; do
    command -v "$tool" >/dev/null ||
      { echo "qemu: $tool is missing: run scripts/setup.sh first" >&2; exit 1; }
  done
  bash "$QEMU_DIR/build-kernel.sh"
  build_slotctl
  new_run "${RUN_PREFIX:-run}"
  log "building the initramfs, slot images and the factory disk in $RUN"
  bash "$QEMU_DIR/build-initramfs.sh" "$SLOTCTL" "$BUILD/initrd" >/dev/null

  mkdir -p "$RUN/keys" "$RUN/keyring"
  "$SLOTCTL" keygen --out "$RUN/keys/release" >/dev/null
  cp "$RUN/keys/release.pub" "$RUN/keyring/release.pem"

  local v version behaviour idx=0
  for v in "${VERSIONS[@]}"; do
    read -r version behaviour <<<"$v"
    idx=$((idx + 1))
    bash "$QEMU_DIR/build-rootfs.sh" "$version" "$behaviour" "$SLOTCTL" \
      "$RUN/keyring" "$ROOT_FS_SIZE" "$RUN/root-$version.ext4" >/dev/null
    "$SLOTCTL" image pack --key "$RUN/keys/release.key" --version "$version" \
      --compatible qemu-test --rollback-index "$idx" \
      --part "ROOT=$RUN/root-$version.ext4" -o "$RUN/v${version%%.*}.img" >/dev/null
    rm -f "$RUN/root-$version.ext4"
  done

  DISK="$RUN/factory.img"
  "$SLOTCTL" disk init "$DISK" --size 96M --role BOOT=1M --role ROOT=32M --data 8M >/dev/null
  "$SLOTCTL" --disk "$DISK" install --factory --slot A --compatible qemu-test \
    --keyring "$RUN/keyring" "$RUN/v1.img" >/dev/null
  cgpt show "$DISK" >/dev/null || fail "cgpt cannot read the factory disk"
  sgdisk -v "$DISK" | grep -q 'No problems found' || fail "sgdisk -v finds problems on the factory disk"
}

# ------------------------------------------------------------ plans

# plan_install IMAGE: the guest installs IMAGE from the stick, with JSON progress.
plan_install() {
  cat <<EOF
say "plan: slotctl install /mnt/usb/$1"
slotctl --config "\$CONFIG" --json install "/mnt/usb/$1"
say "install exit=\$?"
EOF
}

# plan_install_no_activate IMAGE: write, verify and record only.
plan_install_no_activate() {
  cat <<EOF
say "plan: slotctl install --no-activate /mnt/usb/$1"
slotctl --config "\$CONFIG" --json install --no-activate "/mnt/usb/$1"
say "install exit=\$?"
EOF
}

# plan_activate SLOT: activate a recorded slot.
plan_activate() {
  cat <<EOF
say "plan: slotctl activate $1"
slotctl --config "\$CONFIG" activate $1
say "activate exit=\$?"
EOF
}

# plan_rollback: the technician's rollback.
plan_rollback() {
  cat <<'EOF'
say "plan: slotctl rollback"
slotctl --config "$CONFIG" rollback
say "rollback exit=$?"
EOF
}

# install_from_stick NAME VERSION_MAJOR: from the state after scenario 2
# (booted B, v2), install vN into A; the next boot is A.
install_from_stick() {
  local stick
  stick="$(make_stick "$1" "$(plan_install "v$2.img")" "$RUN/v$2.img")"
  boot "$1-install-v$2" --stick "$stick"
  expect_booted B 2.0.0
  expect_console '^SLOTCTL-SLOT: install exit=0$' "the install of v$2 to succeed"
  expect_end poweroff
  expect_flags A "$TRIES_NEW" 0
  expect_next A
}

# ------------------------------------------------------------ power cuts

# The install's JSON events (stdout of `slotctl --json install`) mark where
# it is; each function says whether to cut the power after LINE.
cut_early() { # the payload write has just begun
  [[ "$1" == *'"event":"phase"'* && "$1" == *'"phase":"write"'* ]]
}
cut_mid_payload() { # a progress event strictly inside the payload write
  [[ "$1" == *'"event":"progress"'* && "$1" == *'"phase":"write"'* &&
    "$1" =~ \"done\":([0-9]+) ]] || return 1
  local done=${BASH_REMATCH[1]}
  [[ "$1" =~ \"total\":([0-9]+) ]] || return 1
  ((done > 0 && done < BASH_REMATCH[1]))
}
# The activation window: the read-back's last progress event is the last
# line the install prints before it writes the slot record, flushes, reads
# the record back and commits the activation (updater/src/install.rs steps 6
# and 7); the cut lands in that window.
cut_activation() {
  [[ "$1" == *'"event":"progress"'* && "$1" == *'"phase":"readback"'* &&
    "$1" =~ \"done\":([0-9]+) ]] || return 1
  local done=${BASH_REMATCH[1]}
  [[ "$1" =~ \"total\":([0-9]+) ]] || return 1
  ((done == BASH_REMATCH[1]))
}
cut_after_activate() { # the activate command has returned (its commit failed)
  [[ "$1" == 'SLOTCTL-SLOT: activate exit='* ]]
}
cut_regex() {
  case "$1" in
    early) echo cut_early ;;
    mid-payload) echo cut_mid_payload ;;
    activation) echo cut_activation ;;
  esac
}

# ------------------------------------------------------------ the flags

# flags_index SLOT: the partition that carries SLOT's flags, as slotctl
# names it; it must be the slot's first partition (the design's default).
flags_index() {
  local i
  i="$(status_json | jq -r --arg s "$1" "$JQ_SLOT.flags_partition")"
  [[ "$i" == "$(part_index "BOOT-$1")" ]] ||
    fail "slotctl says slot $1's flags are on partition $i, not on BOOT-$1"
  echo "$i"
}

# expect_flags SLOT TRIES SUCCESSFUL: cgpt and `slotctl status --json`
# agree on SLOT's tries and successful bits, and they are as expected.
expect_flags() {
  local slot="$1" tries="$2" ok="$3" p t s
  read -r p t s <<<"$(cgpt_flags "$slot")"
  [[ "$t" == "$tries" && "$s" == "$ok" ]] ||
    fail "flags of $slot (cgpt): tries=$t successful=$s, expected tries=$tries successful=$ok"
  expect_status_agrees "$slot"
}

# expect_good SLOT: bootable and marked successful.
expect_good() {
  local p t s
  read -r p t s <<<"$(cgpt_flags "$1")"
  ((p > 0 && s == 1)) || fail "slot $1 is not good (cgpt: priority=$p tries=$t successful=$s)"
  expect_status_agrees "$1"
}

# expect_bad SLOT: marked bad (priority 0, not successful).
expect_bad() {
  local p t s
  read -r p t s <<<"$(cgpt_flags "$1")"
  ((p == 0 && s == 0)) || fail "slot $1 is not marked bad (cgpt: priority=$p tries=$t successful=$s)"
  expect_status_agrees "$1"
}

# expect_not_bootable SLOT: no boot stage would pick it.
expect_not_bootable() {
  local p t s
  read -r p t s <<<"$(cgpt_flags "$1")"
  ((p == 0 || (t == 0 && s == 0))) ||
    fail "slot $1 is still bootable (cgpt: priority=$p tries=$t successful=$s)"
  expect_status_agrees "$1"
}

# expect_next SLOT: the slot the next boot picks, computed from cgpt's view of
# the flags (highest priority among bootable slots) and from slotctl's.
expect_next() {
  local best="" bestp=0 slot p t s
  for slot in A B; do
    read -r p t s <<<"$(cgpt_flags "$slot")"
    if ((p > 0 && (s == 1 || t > 0) && p > bestp)); then
      best="$slot" bestp="$p"
    fi
  done
  [[ "$best" == "$1" ]] || fail "next boot (from cgpt's flags) is '${best:-none}', expected $1"
  local next
  next="$(status_json | jq -r "$JQ_NEXT")"
  [[ "$next" == "$1" ]] || fail "next boot (slotctl status --json) is '$next', expected $1"
}

# expect_status_agrees SLOT: slotctl status --json reads the same flags as cgpt.
expect_status_agrees() {
  local p t s json
  read -r p t s <<<"$(cgpt_flags "$1")"
  json="$(status_json)"
  local jp jt js
  jp="$(jq -r --arg s "$1" "$JQ_SLOT | .priority" <<<"$json")"
  jt="$(jq -r --arg s "$1" "$JQ_SLOT | .tries" <<<"$json")"
  js="$(jq -r --arg s "$1" "$JQ_SLOT | .successful | if . == true then 1 elif . == false then 0 else . end" <<<"$json")"
  [[ "$jp $jt $js" == "$p $t $s" ]] ||
    fail "slot $1: slotctl status says priority/tries/successful $jp/$jt/$js, cgpt says $p/$t/$s"
}

# expect_console_status SLOT FIELD VALUE WHAT: the status the guest printed
# before its boot check (the flags as the boot stage left them).
expect_console_status() {
  local line got
  line="$(grep -m1 '^SLOTCTL-SLOT: status-before-check ' "$BOOT_LOG")" ||
    fail "console: no status-before-check line"
  got="$(jq -r --arg s "$1" "$JQ_SLOT | .$2 | if . == true then 1 elif . == false then 0 else . end" \
    <<<"${line#SLOTCTL-SLOT: status-before-check }")" ||
    fail "console: the guest's status is not JSON: $line"
  [[ "$got" == "$3" ]] || fail "console: guest status says $1.$2=$got, expected $3 ($4)"
}

# expect_end HOW: how the last boot ended (poweroff, reboot, panic, cut, watchdog).
expect_end() {
  [[ "$BOOT_END" == "$1" ]] || fail "the boot ended by $BOOT_END, expected $1"
}

# corrupt_primary_gpt: scribble over the primary partition entry array (LBA 2
# on this 512-byte-sector image), so its CRC no longer holds.
corrupt_primary_gpt() {
  printf 'CORRUPTED BY THE HOST, SCENARIO 6' |
    dd of="$DISK" bs=1 seek=$((2 * 512 + 56)) conv=notrunc status=none
}

# backup_header_sector: the 512-byte sector holding the backup GPT header
# (the disk's last logical block).
backup_header_sector() {
  local bytes ss
  bytes="$(stat -c %s "$DISK")"
  ss="$(status_json | jq -r .sector_size)"
  echo $(((bytes / ss - 1) * ss / 512))
}

# expect_recorded SLOT BOOTED: SLOT holds a slot record that verifies.
expect_recorded() {
  "$SLOTCTL" --disk "$DISK" --booted "$2" verify-slot "$1" --keyring "$RUN/keyring" >/dev/null 2>&1 ||
    fail "slot $1 has no slot record that verifies: $("$SLOTCTL" --disk "$DISK" --booted "$2" verify-slot "$1" --keyring "$RUN/keyring" 2>&1 | tail -n1)"
}

# expect_gpt_copies_healthy: slotctl reports both GPT copies healthy.
expect_gpt_copies_healthy() {
  local json
  json="$(status_json)"
  jq -e "$JQ_GPT_HEALTHY" <<<"$json" >/dev/null ||
    fail "slotctl status does not report both GPT copies healthy: $json"
}

# jq paths into `slotctl status --json` (kept here, in one place; $s is a
# jq variable).
# shellcheck disable=SC2016
JQ_SLOT='.slots[$s]'
JQ_NEXT='.next'
JQ_GPT_HEALTHY='.gpt.primary == "ok" and .gpt.backup == "ok"'
