#!/usr/bin/env bash
# Unpacks Debian's nginx (the package `nginx`, 1.22 on Debian 12) into
# /var/tmp/slotctl-nginx for tests/tests/nginx.rs, without installing it:
# the package's maintainer scripts would start a server on port 80 of every
# interface, and the tests start their own on 127.0.0.1 with their own
# config. Skips the work when the binary is already there. Called by
# scripts/setup.sh.
set -euo pipefail
dest=/var/tmp/slotctl-nginx
if [[ -x "$dest/usr/sbin/nginx" ]] && "$dest/usr/sbin/nginx" -v >/dev/null 2>&1; then
  exit 0
fi
# shellcheck source=scripts/apt-wait.sh
source "$(dirname "$0")/apt-wait.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download drops privileges to _apt: let it write here.
chmod 755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
echo "get-nginx: downloading Debian's nginx package (unpacked, not installed)"
if ! (cd "$work" && apt-get download -qq nginx 2>/dev/null); then
  apt_update
  (cd "$work" && apt-get download -qq nginx)
fi
rm -rf "$dest"
dpkg -x "$work"/nginx_*.deb "$dest"
"$dest/usr/sbin/nginx" -v
