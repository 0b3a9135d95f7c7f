#!/usr/bin/env bash
# Builds one slot root filesystem image (ext4, made without mounting anything):
# busybox-static with its applet links, a static slotctl, the device config
# and keyring, and guest/slot-init as /sbin/init.
#
# Usage: build-rootfs.sh VERSION BEHAVIOUR SLOTCTL_BINARY KEYRING_DIR SIZE OUTPUT
#                        [KERNEL INITRD CMDLINE]
#   KERNEL, INITRD, CMDLINE: the slot's own kernel, initramfs and command line
#              (/boot/vmlinuz, /boot/initrd.img, /boot/cmdline), which the
#              kexec first stage loads from the slot's verified root
#   BEHAVIOUR: healthy   - its health check passes
#              unhealthy - its health check fails (boot-check marks it bad)
#              crash     - panics (or hangs, if the kernel command line has
#                          slotctl.crash=hang) before its boot check runs
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$1" behaviour="$2" slotctl_bin="$3" keyring="$4" size="$5" output="$6"
kernel="${7:-}" initrd="${8:-}" cmdline="${9:-}"
busybox=/bin/busybox

case "$behaviour" in healthy | unhealthy | crash) ;; *)
  echo "build-rootfs: unknown behaviour '$behaviour'" >&2
  exit 2
  ;;
esac

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/libexec,etc/slotctl/keys,proc,sys,dev,run,tmp,mnt/usb,var/lib/slotctl}
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
  [[ "$a" == busybox ]] || ln -s busybox "$root/bin/$a"
done
cp "$slotctl_bin" "$root/usr/bin/slotctl"
cp "$keyring"/*.pem "$root/etc/slotctl/keys/"
install -m 0755 "$here/guest/slot-init" "$root/sbin/init"
echo "$version" >"$root/etc/slot-version"
echo "$behaviour" >"$root/etc/slot-behaviour"
if [[ -n "$kernel" ]]; then
  mkdir -p "$root/boot"
  cp "$kernel" "$root/boot/vmlinuz"
  cp "$initrd" "$root/boot/initrd.img"
  printf '%s\n' "$cmdline" >"$root/boot/cmdline"
fi

# The health check: the application's self-test. A healthy build checks that
# it runs from its read-only root, a dm-verity device (boot-select opened it
# from the signed root hash); the unhealthy one reports its failure.
if [[ "$behaviour" == unhealthy ]]; then
  cat >"$root/usr/libexec/self-test" <<'SH'
#!/bin/sh
echo "self-test: application did not start (simulated fault in this build)" >&2
exit 1
SH
else
  cat >"$root/usr/libexec/self-test" <<'SH'
#!/bin/sh
grep -q '^/dev/dm-[0-9]* / ext4 ro' /proc/mounts
SH
fi
chmod 0755 "$root/usr/libexec/self-test"

cat >"$root/etc/slotctl/slotctl.toml" <<'TOML'
# The test machine's device config.
disk = "/dev/vda"
compatible = "qemu-test"
keyring = "/etc/slotctl/keys"
tries = 2
lock_file = "/run/slotctl.lock"
state_dir = "/var/lib/slotctl"

[boot_check]
reboot_on_failure = true

[[boot_check.checks]]
name = "self-test"
command = ["/usr/libexec/self-test"]
timeout_secs = 30
TOML

rm -f "$output"
# 4 KiB blocks: a dm-verity device has 4096-byte logical blocks, and ext4
# refuses a block size below the device's (docs/verified-boot.md).
mkfs.ext4 -q -b 4096 -d "$root" -L "root-$version" "$output" "$size" >/dev/null
echo "build-rootfs: $output ($version, $behaviour)"
