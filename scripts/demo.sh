#!/usr/bin/env bash
# The demo: an update and an automatic rollback on a QEMU machine, shown step
# by step on its serial console. Sets up what it needs (Debian packages, the
# kernel, a static slotctl, the slot images, a factory disk), then boots the
# machine five times. A few minutes under TCG; SLOTCTL_QEMU_ACCEL=kvm to try KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=qemu/lib.sh
source qemu/lib.sh
# shellcheck source=qemu/machine.sh
source qemu/machine.sh
trap kill_qemu EXIT

VERBOSE=1 # echo the console as it arrives, but for the long status lines
# and the install's JSON progress events (its result line is shown)
ECHO_SKIP='^(SLOTCTL-SLOT: status-before-check |\{.*"event":"(phase|progress)")'
RUN_PREFIX=demo
t0=$SECONDS

step() {
  echo
  echo "=== $*"
}
show_status() {
  echo "--- on the host: slotctl --disk disk.img status"
  "$SLOTCTL" --disk "$DISK" status | sed 's/^/    /'
}

step "Building the machine: Debian's cloud kernel, a busybox initramfs whose init runs"
echo "    'slotctl boot-select' (dm-verity roots), eight signed slot images (v1..v8),"
echo "    and a factory disk: 'slotctl disk init' + 'slotctl install --factory --slot A v1.img'."
echo "    (The machine's config gives a new slot 2 tries instead of the default 3,"
echo "    so that a broken update is given up after two boots.)"
prepare_machine
t_build=$((SECONDS - t0))
DISK="$RUN/disk.img"
cp --sparse=always "$RUN/factory.img" "$DISK"
show_status

step "Boot 1: the fresh disk boots slot A (v1). Its boot check passes; then a technician's"
echo "    USB stick (a second virtio disk) installs v2 into slot B and activates it."
stick="$(make_stick demo-v2 "$(plan_install v2.img)" "$RUN/v2.img")"
boot demo-install-v2 --stick "$stick"
expect_booted A 1.0.0
expect_console '^SLOTCTL-SLOT: install exit=0$' "the install of v2 to succeed"
show_status

step "Boot 2: the boot stage picks slot B (v2), spending one of its tries;"
echo "    boot-check runs the health check and marks B good."
boot demo-v2-first-boot
expect_booted B 2.0.0
expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on v2"
expect_good B
show_status

step "Boot 3: v3 arrives on the USB stick and is installed into slot A."
stick="$(make_stick demo-v3 "$(plan_install v3.img)" "$RUN/v3.img")"
boot demo-install-v3 --stick "$stick"
expect_booted B 2.0.0
expect_console '^SLOTCTL-SLOT: install exit=0$' "the install of v3 to succeed"
show_status

step "Boot 4: v3 boots, but its health check fails: boot-check marks slot A bad and reboots."
boot demo-v3-fails
expect_booted A 3.0.0
expect_end reboot
expect_bad A
show_status

step "Boot 5: the machine is back on v2 by itself (automatic rollback)."
boot demo-back-on-v2
expect_booted B 2.0.0
expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on v2"
expect_good B
show_status

echo
echo "=== Done: v1 -> v2 (update) -> v3 (failed health check) -> v2 (automatic rollback),"
echo "    $(cat "$RUN/boots") boots in $((SECONDS - t0 - t_build))s under QEMU," \
  "after ${t_build}s building the machine (slotctl, images, disk). Console logs: $RUN"
