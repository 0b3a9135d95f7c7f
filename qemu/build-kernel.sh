#!/usr/bin/env bash
# Fetches Debian's cloud kernel (no installation on the host: apt-get download
# + dpkg -x) and keeps what the test machine needs: the kernel image, the
# virtio modules and the device-mapper verity modules, in the order they must
# be loaded.
#
# Output: qemu/build/kernel/vmlinuz, qemu/build/kernel/modules/*.ko and
# qemu/build/kernel/modules.order. Skips the work when they already exist.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build/kernel"

# Load order matters: plain insmod, each module after the ones it uses (the
# package has no modules.dep; each .ko's `depends=` line gives the order).
# dm-verity needs reed_solomon (its FEC support), dm-mod and dm-bufio.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
  reed_solomon dm-mod dm-bufio dm-verity)

# A cache from before the verity modules were added is rebuilt.
if [[ -f "$out/vmlinuz" && -f "$out/modules.order" ]] &&
  [[ "$(cat "$out/modules.order")" == "$(printf '%s\n' "${MODULES[@]}")" ]]; then
  echo "build-kernel: cached ($(cat "$out/version"))"
  exit 0
fi

resolve() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
pkg="$(resolve)"
if [[ -z "$pkg" ]]; then
  echo "build-kernel: package lists have no linux-image-cloud-amd64; running apt-get update"
  # shellcheck source=scripts/apt-wait.sh
  source "$here/../scripts/apt-wait.sh"
  apt_update
  pkg="$(resolve)"
fi
if [[ -z "$pkg" ]]; then
  echo "build-kernel: cannot resolve the package behind linux-image-cloud-amd64" >&2
  exit 1
fi
version="${pkg#linux-image-}"

work="$(mktemp -d)"
chmod 755 "$work" # apt-get download drops privileges to _apt
trap 'rm -rf "$work"' EXIT
echo "build-kernel: downloading $pkg"
(cd "$work" && apt-get download -qq "$pkg")
deb="$(ls "$work"/*.deb)"
dpkg -x "$deb" "$work/x"

rm -rf "$out"
mkdir -p "$out/modules"
cp "$work/x/boot/vmlinuz-$version" "$out/vmlinuz"
: >"$out/modules.order.tmp"
for m in "${MODULES[@]}"; do
  f="$(find "$work/x/lib/modules/$version" -name "$m.ko*" | head -n1)"
  if [[ -z "$f" ]]; then
    echo "build-kernel: module $m not found in $pkg" >&2
    exit 1
  fi
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$out/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$out/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$out/modules/$m.ko" ;;
    *.ko) cp "$f" "$out/modules/$m.ko" ;;
  esac
  echo "$m" >>"$out/modules.order.tmp"
done
echo "$version" >"$out/version"
mv "$out/modules.order.tmp" "$out/modules.order"
echo "build-kernel: $version ready in $out"
