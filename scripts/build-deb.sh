#!/usr/bin/env bash
# Builds the Debian package of slotctl (issue 16) with cargo-deb, from the
# static release binary qemu/lib.sh builds (built here only when missing,
# with the same flags), and the man pages and completions slotctl-gen-docs
# writes. Prints the .deb's path on stdout (the only line there; progress
# goes to stderr). The package's contents are in updater/Cargo.toml
# ([package.metadata.deb]); the choices behind them in docs/packaging.md.
#
# Usage: scripts/build-deb.sh [--prepare]
#   --prepare: only install cargo-deb and build the static binaries the
#   package is made from, print nothing on stdout (scripts/test-boots.sh
#   does this on the core QEMU leaves free).
# Environment: CARGO_TARGET_DIR (as cargo); SLOTCTL_GEN_DOCS (below);
# SOURCE_DATE_EPOCH (the man pages' date; default: the last commit's time,
# so a rebuild of the same commit gives the same pages).
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=x86_64-unknown-linux-gnu
# cargo-deb 3.8.0 builds with Rust 1.85 (its rust-version) and newer;
# `cargo install --locked` of it takes 108 s of CPU time: under 2 minutes
# on 2 idle cores, 5 minutes measured while a release build shared them.
CARGO_DEB_VERSION=3.8.0

prepare=0
case "${1:-}" in
  "") ;;
  --prepare) prepare=1 ;;
  *) echo "build-deb: unknown argument '$1' (usage: scripts/build-deb.sh [--prepare])" >&2; exit 2 ;;
esac

say() { echo "build-deb: $*" >&2; }
die() { echo "build-deb: $*" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-}"
if [[ -z "$target_dir" ]]; then
  target_dir="$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)"
fi
release_dir="$target_dir/$TRIPLE/release"
bin="$release_dir/slotctl"

# The package's version is the workspace's plus the Debian revision; the
# changelog's latest entry must name exactly that.
version="$(cargo metadata --no-deps --format-version 1 |
  jq -r '.packages[] | select(.name == "slotctl") | .version')"
revision="$(sed -n 's/^revision = "\(.*\)"$/\1/p' updater/Cargo.toml)"
[[ -n "$version" && -n "$revision" ]] || die "cannot read slotctl's version and the deb revision from the manifests"
deb_version="$version-$revision"
changelog_version="$(sed -n '1s/^slotctl (\([^)]*\)).*/\1/p' packaging/debian/changelog)"
[[ "$changelog_version" == "$deb_version" ]] ||
  die "packaging/debian/changelog's latest entry is ${changelog_version:-unreadable}, the package is $deb_version: add an entry"

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  say "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked, a few minutes)"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi

if [[ ! -x "$bin" ]]; then
  say "no static release binary at $bin: building it as qemu/lib.sh does"
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --target "$TRIPLE" -p slotctl >&2
fi
# Stripped, static and within its size bound, or no package.
bash scripts/check-binary-size.sh "$bin" >&2
# The D-Bus service's binary (docs/dbus.md), static like slotctl: cargo
# deb --no-build builds nothing.
dbus_bin="$release_dir/slotctl-dbus"
if [[ ! -x "$dbus_bin" ]]; then
  say "no static release binary at $dbus_bin: building it"
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --target "$TRIPLE" -p slotctl-dbus >&2
fi
if readelf -l -W "$dbus_bin" | grep -q INTERP; then die "$dbus_bin is dynamically linked"; fi
say "slotctl-dbus: $(stat -c %s "$dbus_bin") bytes"
((prepare == 0)) || exit 0

docs="$release_dir/deb-docs"
rm -rf "$docs"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
say "man pages and completions into $docs"
# SLOTCTL_GEN_DOCS: a slotctl-gen-docs binary already built (scripts/test.sh
# passes the one its workspace build made: `cargo run -p` resolves
# features for that package alone and recompiled the workspace's crates).
if [[ -n "${SLOTCTL_GEN_DOCS:-}" ]]; then
  [[ -x "$SLOTCTL_GEN_DOCS" ]] || die "SLOTCTL_GEN_DOCS=$SLOTCTL_GEN_DOCS is not an executable"
  "$SLOTCTL_GEN_DOCS" "$docs" >/dev/null
else
  cargo run --quiet -p slotctl-gen-docs -- "$docs" >/dev/null
fi
# gzip -n: no name or time stamp in the header (reproducible; Debian policy
# 12.1 wants man pages compressed with gzip -9).
gzip -9n "$docs"/man/*.[158]

out="$target_dir/debian"
mkdir -p "$out"
say "cargo deb (cargo-deb $CARGO_DEB_VERSION)"
deb="$(cargo deb -p slotctl --no-build --no-strip --target "$TRIPLE" --output "$out" | tail -n 1)"
[[ -f "$deb" ]] || die "cargo deb printed no package path (got: ${deb:-nothing})"
echo "$deb"
