#!/usr/bin/env bash
# Fetches Debian's cloud kernel (no installation on the host: apt-get download
# + dpkg -x) and keeps what the test machine needs: the kernel image, the
# virtio modules and the device-mapper verity modules, in the order they must
# be loaded.
#
# Output: qemu/build/kernel/vmlinuz, qemu/build/kernel/modules/*.ko and
# qemu/build/kernel/modules.order; the network modules the agent scenario
# loads from its stick in qemu/build/kernel/net/ (one download for both).
# Skips the work when they already exist.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build/kernel"

# Load order matters: plain insmod, each module after the ones it uses (the
# package has no modules.dep; each .ko's `depends=` line gives the order).
# dm-verity needs reed_solomon (its FEC support), dm-mod and dm-bufio.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
  reed_solomon dm-mod dm-bufio dm-verity)

# The guest's network modules (qemu/scenario-agent.sh), in load order.
NET_MODULES=(failover net_failover virtio_net)

# A cache from before the verity or network modules were added is rebuilt.
if [[ -f "$out/vmlinuz" && -f "$out/modules.order" && -f "$out/net/virtio_net.ko" ]] &&
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
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt: let it write here (else apt
# warns that the download is performed unsandboxed as root).
chmod 755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
echo "build-kernel: downloading $pkg"
(cd "$work" && apt-get download -qq "$pkg")
deb="$(ls "$work"/*.deb)"
dpkg -x "$deb" "$work/x"

# copy_module NAME DIR: the package's NAME.ko, uncompressed, into DIR.
copy_module() {
  local f
  f="$(find "$work/x/lib/modules/$version" -name "$1.ko*" | head -n1)"
  if [[ -z "$f" ]]; then
    echo "build-kernel: module $1 not found in $pkg" >&2
    exit 1
  fi
  case "$f" in
    *.ko.xz) xz -dc "$f" >"$2/$1.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$2/$1.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$2/$1.ko" ;;
    *.ko) cp "$f" "$2/$1.ko" ;;
  esac
}

rm -rf "$out"
mkdir -p "$out/modules" "$out/net"
cp "$work/x/boot/vmlinuz-$version" "$out/vmlinuz"
: >"$out/modules.order.tmp"
for m in "${MODULES[@]}"; do
  copy_module "$m" "$out/modules"
  echo "$m" >>"$out/modules.order.tmp"
done
for m in "${NET_MODULES[@]}"; do
  copy_module "$m" "$out/net"
done
echo "$version" >"$out/version"
mv "$out/modules.order.tmp" "$out/modules.order"
echo "build-kernel: $version ready in $out"
