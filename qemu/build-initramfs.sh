#!/usr/bin/env bash
# Packs the test machine's initramfs: busybox-static, the modules from
# build-kernel.sh (virtio, then device-mapper and dm-verity), a static
# slotctl, the keyring boot-select verifies slot records with, and
# guest/initramfs-init as /init. The same initramfs is the fixed first stage
# and, copied into a slot's /boot, that slot's own initramfs (kexec).
#
# Usage: build-initramfs.sh SLOTCTL_BINARY KEYRING_DIR OUTPUT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
slotctl_bin="$1"
keyring="$2"
output="$3"
kernel="$here/build/kernel"
busybox=/bin/busybox

[[ -f "$kernel/modules.order" ]] || { echo "build-initramfs: run build-kernel.sh first" >&2; exit 1; }
dpkg -s busybox-static >/dev/null 2>&1 ||
  { echo "build-initramfs: needs the static busybox (apt-get install busybox-static)" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,run,sysroot,lib/modules,etc/slotctl/keys}
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
  [[ "$a" == busybox ]] || ln -s busybox "$root/bin/$a"
done
cp "$slotctl_bin" "$root/bin/slotctl"
cp "$keyring"/*.pem "$root/etc/slotctl/keys/"
cp "$kernel"/modules/*.ko "$kernel/modules.order" "$root/lib/modules/"
install -m 0755 "$here/guest/initramfs-init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$output.tmp"
mv "$output.tmp" "$output"
echo "build-initramfs: $output"
