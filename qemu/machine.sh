# shellcheck shell=bash
# The test machine and its software: builds the kernel, the initramfs, the
# five slot images and the factory disk, and knows how to read the flags.
# Sourced after qemu/lib.sh.

# Tries a newly activated slot gets (the guest config's `tries`).
TRIES_NEW=2
# A slot's root file system; one that carries its own kernel and initramfs
# (for the kexec first stage) needs room for them.
ROOT_FS_SIZE=24M
ROOT_FS_SIZE_KERNEL=44M
# Consecutive boots of a committed slot that may end before boot-check
# before boot-select gives it up for the other good slot (boot-select's
# default, docs/state-machine.md).
# shellcheck disable=SC2034 # (read by qemu/scenarios-boot-chain.sh)
MAX_UNCHECKED_BOOTS=3
# The initramfs (the fixed first stage, with the keyring): built per run.
INITRD=""
# How the slot images store their payloads (`image pack --compression`):
# zstd, or chunked for the agent scenario's delta downloads (issue 12).
IMAGE_COMPRESSION="${IMAGE_COMPRESSION:-zstd}"
# The hardware watchdog the harness plays: seconds of console silence, once
# a slot is running, before it resets the machine (used by run-tests.sh).
# shellcheck disable=SC2034
WATCHDOG_SECS=10

# The versions the scenarios use: version behaviour [kernel]. Every image
# packs its ROOT with a dm-verity hash tree (`image pack --verity ROOT`).
# kernel: the slot carries its own kernel (/boot/vmlinuz, the test kernel),
# initramfs and a command line with slotctl.flavour=NAME, for the kexec
# first stage; "garbage": a kernel file that is not a kernel, signed anyway.
VERSIONS=(
  "1.0.0 healthy"        # factory image, slot A
  "2.0.0 healthy"        # the update
  "3.0.0 unhealthy"      # fails its health check
  "4.0.0 crash"          # panics / hangs before its boot check
  "5.0.0 healthy"        # installed through power cuts; its root corrupted
  "6.0.0 healthy six"    # kernel A/B: its own kernel, command line flavour six
  "7.0.0 healthy garbage" # kernel A/B: a kernel file that cannot be loaded
  "8.0.0 healthy eight"  # kernel A/B: its own kernel, flavour eight
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
  mkdir -p "$RUN/keys" "$RUN/keyring"
  "$SLOTCTL" keygen --out "$RUN/keys/release" >/dev/null
  cp "$RUN/keys/release.pub" "$RUN/keyring/release.pem"
  INITRD="$RUN/initrd"
  bash "$QEMU_DIR/build-initramfs.sh" "$SLOTCTL" "$RUN/keyring" "$INITRD" >/dev/null

  # One rollback index for all five: it is raised only by a release that must
  # never be gone back from, and scenario 7's `slotctl rollback` from 2.0.0 to
  # 1.0.0 is refused across a raise (docs/state-machine.md).
  local v version behaviour kernel idx=1 kargs
  yes 'not a kernel' | head -c 65536 >"$RUN/garbage-kernel" || true
  for v in "${VERSIONS[@]}"; do
    read -r version behaviour kernel <<<"$v"
    case "${kernel:-}" in
      "") kargs=("$ROOT_FS_SIZE") ;;
      garbage) kargs=("$ROOT_FS_SIZE" "$RUN/garbage-kernel" "$INITRD" "console=ttyS0 quiet panic=-1") ;;
      *) kargs=("$ROOT_FS_SIZE_KERNEL" "$BUILD/kernel/vmlinuz" "$INITRD"
        "console=ttyS0 quiet panic=-1 slotctl.flavour=$kernel") ;;
    esac
    bash "$QEMU_DIR/build-rootfs.sh" "$version" "$behaviour" "$SLOTCTL" \
      "$RUN/keyring" "${kargs[0]}" "$RUN/root-$version.ext4" "${kargs[@]:1}" >/dev/null
    # An image covers every role of its slot (docs/image-format.md, "Roles"):
    # the disk's slots have BOOT and ROOT, so each image carries a small BOOT
    # payload too (the guest boots the kernel QEMU is given, not BOOT's
    # bytes; what counts is that no role of a slot is left unaccounted for).
    printf 'slotctl qemu test machine: BOOT of %s\n' "$version" >"$RUN/boot-$version.bin"
    "$SLOTCTL" image pack --key "$RUN/keys/release.key" --version "$version" \
      --compatible qemu-test --rollback-index "$idx" --compression "$IMAGE_COMPRESSION" \
      --part "BOOT=$RUN/boot-$version.bin" \
      --part "ROOT=$RUN/root-$version.ext4" --verity ROOT -o "$RUN/v${version%%.*}.img" >/dev/null
    rm -f "$RUN/boot-$version.bin"
  done

  DISK="$RUN/factory.img"
  "$SLOTCTL" disk init "$DISK" --size 128M --role BOOT=1M --role ROOT=48M --data 8M >/dev/null
  "$SLOTCTL" --disk "$DISK" install --factory --slot A --compatible qemu-test \
    --keyring "$RUN/keyring" "$RUN/v1.img" >/dev/null
  cgpt show "$DISK" >/dev/null || fail "cgpt cannot read the factory disk"
  expect_sgdisk_clean "on the factory disk"
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

# cgpt_flags fills these: the priority, tries and successful bit it read.
FLAG_P=""
FLAG_T=""
FLAG_S=""

# cgpt_flags SLOT: sets FLAG_P, FLAG_T and FLAG_S to the priority, tries and
# successful bit of SLOT's flags partition, as cgpt reads them. It fails when
# cgpt fails or prints anything but a number (an empty answer is no 0). It
# sets globals instead of printing, so that it is not run in a `$(...)`.
cgpt_flags() {
  local i f out
  i="$(flags_index "$1")" || fail "no flags partition for slot $1"
  for f in P T S; do
    out="$(cgpt_read "$f" "$i")" || fail "cgpt: cannot read slot $1's flags"
    [[ "$out" =~ ^[0-9]+$ ]] ||
      fail "cgpt show -i $i -$f printed '$out' for slot $1, not a number"
    printf -v "FLAG_$f" '%s' "$out"
  done
}

# flags_index SLOT: the partition that carries SLOT's flags: BOOT-SLOT as cgpt
# finds it, which must be the one slotctl names (the design's default).
flags_index() {
  local i json named
  i="$(part_index "BOOT-$1")" || fail "disk: no partition BOOT-$1"
  json="$(status_json)" || fail "slotctl status --json failed"
  named="$(jq -r --arg s "$1" "$JQ_SLOT.flags_partition" <<<"$json")" ||
    fail "jq cannot read slot $1's flags partition from slotctl status --json"
  [[ "$named" == "$i" ]] ||
    fail "slotctl says slot $1's flags are on partition '$named', cgpt finds BOOT-$1 on $i"
  echo "$i"
}

# The expectations on the flags below read them with cgpt_flags (FLAG_P,
# FLAG_T, FLAG_S: numbers, or the scenario has already failed), judge them,
# then require slotctl's reading to agree.

# expect_flags SLOT TRIES SUCCESSFUL: cgpt and `slotctl status --json`
# agree on SLOT's tries and successful bits, and they are as expected.
expect_flags() {
  cgpt_flags "$1"
  [[ "$FLAG_T" == "$2" && "$FLAG_S" == "$3" ]] ||
    fail "flags of $1 (cgpt): tries=$FLAG_T successful=$FLAG_S, expected tries=$2 successful=$3"
  expect_status_agrees "$1"
}

# expect_good SLOT: bootable and marked successful.
expect_good() {
  cgpt_flags "$1"
  ((FLAG_P > 0 && FLAG_S == 1)) ||
    fail "slot $1 is not good (cgpt: priority=$FLAG_P tries=$FLAG_T successful=$FLAG_S)"
  expect_status_agrees "$1"
}

# expect_bad SLOT: marked bad (priority 0, not successful).
expect_bad() {
  cgpt_flags "$1"
  ((FLAG_P == 0 && FLAG_S == 0)) ||
    fail "slot $1 is not marked bad (cgpt: priority=$FLAG_P tries=$FLAG_T successful=$FLAG_S)"
  expect_status_agrees "$1"
}

# expect_not_bootable SLOT: no boot stage would pick it.
expect_not_bootable() {
  cgpt_flags "$1"
  ((FLAG_P == 0 || (FLAG_T == 0 && FLAG_S == 0))) ||
    fail "slot $1 is still bootable (cgpt: priority=$FLAG_P tries=$FLAG_T successful=$FLAG_S)"
  expect_status_agrees "$1"
}

# expect_next SLOT: the slot the next boot picks, computed from cgpt's view of
# the flags (highest priority among bootable slots) and from slotctl's.
expect_next() {
  local best="" bestp=0 slot json next
  for slot in A B; do
    cgpt_flags "$slot"
    if ((FLAG_P > 0 && (FLAG_S == 1 || FLAG_T > 0) && FLAG_P > bestp)); then
      best="$slot" bestp="$FLAG_P"
    fi
  done
  [[ "$best" == "$1" ]] || fail "next boot (from cgpt's flags) is '${best:-none}', expected $1"
  json="$(status_json)" || fail "slotctl status --json failed"
  next="$(jq -r "$JQ_NEXT" <<<"$json")" || fail "jq cannot read the next slot from slotctl status --json"
  [[ "$next" == "$1" ]] || fail "next boot (slotctl status --json) is '$next', expected $1"
}

# expect_status_agrees SLOT: slotctl status --json reads the same flags as
# cgpt (three numbers each: a missing field is a failure, not a match).
expect_status_agrees() {
  local json got
  cgpt_flags "$1"
  json="$(status_json)" || fail "slotctl status --json failed"
  got="$(jq -r --arg s "$1" "$JQ_SLOT | [.priority, .tries,
    (.successful | if . == true then 1 elif . == false then 0 else . end)] | map(tostring) | join(\"/\")" \
    <<<"$json")" || fail "jq cannot read slot $1's flags from slotctl status --json"
  [[ "$got" =~ ^[0-9]+/[0-9]+/[01]$ ]] ||
    fail "slot $1: slotctl status --json has no priority/tries/successful for it: '$got'"
  [[ "$got" == "$FLAG_P/$FLAG_T/$FLAG_S" ]] ||
    fail "slot $1: slotctl status says priority/tries/successful $got, cgpt says $FLAG_P/$FLAG_T/$FLAG_S"
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
  [[ "$BOOT_END" == "$1" ]] || fail "the boot ended by ${BOOT_END:-nothing}, expected $1"
}

# sgdisk_verify: the report of `sgdisk -v` on the disk image, which must run
# (it exits 0 whether or not it finds problems; the report says which) and
# find a GPT (on a disk without one it makes an empty table in memory and
# finds "No problems").
sgdisk_verify() {
  local out
  out="$(sgdisk -v "$DISK" 2>&1)" || fail "sgdisk -v cannot read $(basename "$DISK"): $(tail -n2 <<<"$out" | tr '\n' ' ')"
  [[ "$out" != *'Creating new GPT entries'* ]] || fail "sgdisk -v finds no GPT on $(basename "$DISK")"
  printf '%s\n' "$out"
}

# expect_sgdisk_clean WHEN: `sgdisk -v` of the disk image finds no problem.
expect_sgdisk_clean() {
  local out
  out="$(sgdisk_verify)" || fail "sgdisk -v failed"
  [[ "$out" == *'No problems found'* ]] ||
    fail "sgdisk -v finds problems $1: $(head -n3 <<<"$out" | tr '\n' ' ')"
}

# expect_sgdisk_problems WHAT: `sgdisk -v` of the disk image finds problems.
expect_sgdisk_problems() {
  local out
  out="$(sgdisk_verify)" || fail "sgdisk -v failed"
  [[ "$out" != *'No problems found'* ]] || fail "$1: sgdisk -v finds no problem"
}

# corrupt_primary_gpt: scribble over the primary partition entry array (LBA 2
# on this 512-byte-sector image), so its CRC no longer holds.
corrupt_primary_gpt() {
  printf 'CORRUPTED BY THE HOST, SCENARIO 6' |
    dd of="$DISK" bs=1 seek=$((2 * 512 + 56)) conv=notrunc status=none ||
    fail "cannot write the corruption into $DISK"
}

# backup_header_sector: the 512-byte sector holding the backup GPT header
# (the disk's last logical block).
backup_header_sector() {
  local bytes json ss
  bytes="$(stat -c %s "$DISK")" || fail "cannot stat $DISK"
  json="$(status_json)" || fail "slotctl status --json failed"
  ss="$(jq -r .sector_size <<<"$json")" || fail "jq cannot read the sector size"
  [[ "$ss" =~ ^[1-9][0-9]*$ ]] || fail "slotctl status --json gives no sector size ('$ss')"
  echo $(((bytes / ss - 1) * ss / 512))
}

# expect_recorded SLOT BOOTED: SLOT holds a slot record that verifies.
expect_recorded() {
  "$SLOTCTL" --disk "$DISK" --booted "$2" verify-slot "$1" --keyring "$RUN/keyring" >/dev/null 2>&1 ||
    fail "slot $1 has no slot record that verifies: $("$SLOTCTL" --disk "$DISK" --booted "$2" verify-slot "$1" --keyring "$RUN/keyring" 2>&1 | tail -n1)"
}

# expect_gpt_copies PRIMARY BACKUP WHEN: how slotctl status --json calls the
# two GPT copies: each "ok", or "bad" (a string that is not "ok").
expect_gpt_copies() {
  local json got
  json="$(status_json)" || fail "slotctl status --json failed"
  got="$(jq -r '[.gpt.primary, .gpt.backup]
    | map(if type != "string" then "missing" elif . == "ok" then "ok" else "bad" end)
    | join(" ")' <<<"$json")" || fail "jq cannot read the GPT copies' health from slotctl status --json"
  [[ "$got" == "$1 $2" ]] ||
    fail "GPT copies $3: expected primary $1, backup $2; slotctl says $(jq -c .gpt <<<"$json")"
}

# expect_gpt_copies_healthy: slotctl reports both GPT copies healthy.
expect_gpt_copies_healthy() { expect_gpt_copies ok ok "(both expected healthy)"; }

# jq paths into `slotctl status --json` (kept here, in one place; $s is a
# jq variable).
# shellcheck disable=SC2016
JQ_SLOT='.slots[$s]'
JQ_NEXT='.next'
