#!/usr/bin/env bash
# Installs everything the tests, the benchmarks and the demo need on a new
# Debian machine: the validators (cgpt, sgdisk, sfdisk, openssl), QEMU and
# what builds the test machine. Idempotent; run as root.
set -euo pipefail

PACKAGES=(
  qemu-system-x86   # the end-to-end test machine
  busybox-static    # its initramfs and slot root filesystems
  vboot-utils       # vbutil_*: ChromeOS tooling (cgpt is its own package on bookworm)
  cgpt              # cgpt: ChromeOS flags validator
  gdisk             # sgdisk -v: GPT validator
  fdisk             # sfdisk --json / -V
  openssl           # key and signature interop, hashing baseline
  zstd              # compression baseline
  cpio              # initramfs packing
  e2fsprogs         # mkfs.ext4 -d for slot root filesystems
  time              # /usr/bin/time -v for peak RSS in benchmarks
  util-linux        # lsblk, blockdev; setpriv (the D-Bus tests' unprivileged caller)
  systemd           # systemd-analyze verify of the units in packaging/
  mount             # losetup (Debian ships it in mount, not util-linux): 4K-sector images in tests
  jq                # the QEMU harness reads slotctl status --json
  strace            # records the real install's writes and flushes for the power-cut suite
  shellcheck        # lints the project's shell scripts (test.sh)
  cryptsetup-bin    # veritysetup: validates the dm-verity hash trees image pack builds
  man-db            # man -l (and groff) render the generated man pages in the tests
  lintian           # checks the Debian package (scripts/test-deb.sh)
  python3-venv      # tests/src/goosebit.rs: the DDI server (goosebit, from PyPI) runs in a virtualenv
  python3           # the guest network's relay and the feed server of the QEMU scenarios
  curl              # qemu/scenario-ddi.sh drives goosebit's admin API
  dbus-daemon       # the private bus of the D-Bus service tests (tests/tests/dbus.rs)
  dbus-bin          # dbus-send, dbus-monitor: the D-Bus tools docs/dbus.md shows
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# shellcheck source=scripts/apt-wait.sh
source "$(dirname "$0")/apt-wait.sh"
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]} (waiting for apt's lock if another apt-get holds it)"
  export DEBIAN_FRONTEND=noninteractive
  apt_update
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Rust: the workspace needs cargo and rustc >= 1.85 (Cargo.toml's
# rust-version). A suitable one on PATH (rustup's, or Debian's) is used;
# else Debian 12's rustc-web and cargo-web (1.85 and newer, in bookworm and
# bookworm-security) are installed; else setup stops and says what to do.
RUST_MIN=1.85
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }
rust_ok() {
  local v
  command -v cargo >/dev/null && command -v rustc >/dev/null || return 1
  v="$(cargo --version 2>/dev/null | awk '{print $2}')" || return 1
  version_ge "${v%%-*}" "$RUST_MIN"
}
if ! rust_ok; then
  if apt-cache policy cargo-web 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "setup: no cargo >= $RUST_MIN on PATH: installing Debian's rustc-web and cargo-web"
    export DEBIAN_FRONTEND=noninteractive
    apt_update
    apt_get install -y -qq --no-install-recommends rustc-web cargo-web >/dev/null
  fi
  rust_ok || {
    echo "setup: needs Rust >= $RUST_MIN (cargo and rustc): install it with rustup (https://rustup.rs), or on Debian 12 with apt-get install rustc-web cargo-web" >&2
    exit 1
  }
fi
echo "setup: $(cargo --version)"

for tool in cgpt sgdisk sfdisk openssl zstd qemu-system-x86_64 cpio mkfs.ext4 jq strace shellcheck veritysetup debugfs man groff lintian curl python3 dbus-daemon; do
  command -v "$tool" >/dev/null || { echo "setup: $tool still missing" >&2; exit 1; }
done
# nginx for tests/tests/nginx.rs: unpacked, not installed (get-nginx.sh).
bash "$(dirname "$0")/get-nginx.sh"
echo "setup: all tools present"
