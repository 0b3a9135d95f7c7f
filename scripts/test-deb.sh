#!/usr/bin/env bash
# The Debian package's test (issue 16), on this machine, for real: builds
# the .deb (scripts/build-deb.sh), runs lintian (fails on any error, prints
# the warnings), installs it with dpkg -i, checks what it installed (the
# binary's version, a man page, the units with systemd-analyze verify, the
# bash completion, the conffile, that no unit got enabled), enables the
# units as a device image would, then removes (dpkg -r: the binary goes,
# the conffile stays) and purges it (dpkg -P: every path it had installed
# is gone, /etc/slotctl too, and the units' enablement symlinks).
#
# Refuses to run on a machine where a slotctl package is installed (in any
# state), or /usr/bin/slotctl or /etc/slotctl exists: it never clobbers
# the host. If it fails midway, it purges the package it installed.
# Run as root, after the static release binary exists (scripts/test.sh
# calls it after qemu/run-tests.sh built it); needs dpkg, lintian, man-db
# and systemd's systemd-analyze (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=slotctl
UNITS=(slotctl-agent.service slotctl-agent.timer slotctl-agent-once.service
  slotctl-boot-check.service slotctl-install@.service slotctl-dbus.service)

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "test-deb: ok: $*"; }

# The package's status in dpkg's database: empty or not-installed when
# it is absent.
pkg_status() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true; }

# ------------------------------------------------------------ the host
[[ $EUID -eq 0 ]] || fail "must run as root (dpkg -i)"
status="$(pkg_status)"
[[ -z "$status" || "$status" == not-installed ]] ||
  fail "a $PKG package is already on this machine (dpkg status: $status): not touching it"
for p in /usr/bin/slotctl /etc/slotctl; do
  [[ ! -e "$p" && ! -L "$p" ]] || fail "$p exists on this machine: not touching it"
done
for tool in dpkg lintian man systemd-analyze systemctl bash gzip; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup.sh installs it)"
done

work="$(mktemp -d)"
installed=0
cleanup() {
  local rc=$?
  if ((installed)) && [[ -n "$(pkg_status)" && "$(pkg_status)" != not-installed ]]; then
    echo "test-deb: purging the half-tested package" >&2
    dpkg -P "$PKG" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------ build
deb="$(bash scripts/build-deb.sh)"
[[ -f "$deb" ]] || fail "build-deb.sh printed no package: $deb"
deb_version="$(dpkg-deb -f "$deb" Version)"
upstream="${deb_version%-*}"
ok "built $deb ($deb_version, $(stat -c %s "$deb") bytes)"

# ------------------------------------------------------------ lintian
# --show-overrides: the overridden tags (O:) are printed with the rest, so
# the log shows what the shipped override hides.
set +e
lintian --show-overrides "$deb" >"$work/lintian" 2>&1
lrc=$?
set -e
sed 's/^/lintian: /' "$work/lintian"
if grep -q '^E: ' "$work/lintian"; then
  fail "lintian reports errors (the E: lines above)"
fi
((lrc == 0)) || fail "lintian exited $lrc"
ok "lintian: no errors, $(grep -c '^W: ' "$work/lintian" || true) warnings"

# ------------------------------------------------------------ install
installed=1
dpkg -i "$deb" >"$work/dpkg-i" 2>&1 || { cat "$work/dpkg-i" >&2; fail "dpkg -i $deb"; }
[[ "$(pkg_status)" == installed ]] || fail "after dpkg -i the package is '$(pkg_status)', not installed"
dpkg -L "$PKG" | sort >"$work/files"
ok "dpkg -i: $(wc -l <"$work/files") paths"

for f in /usr/bin/slotctl /etc/slotctl/slotctl.toml /usr/bin/slotctl-dbus \
  /usr/share/dbus-1/system.d/org.slotctl.Updater1.conf \
  /usr/share/dbus-1/system-services/org.slotctl.Updater1.service \
  /usr/share/man/man1/slotctl.1.gz /usr/share/man/man1/slotctl-install.1.gz \
  /usr/share/man/man1/slotctl-image-pack.1.gz /usr/share/man/man5/slotctl.toml.5.gz \
  /usr/share/man/man8/slotctl-dbus.8.gz \
  /usr/share/bash-completion/completions/slotctl /usr/share/zsh/vendor-completions/_slotctl \
  /usr/share/fish/vendor_completions.d/slotctl.fish \
  /usr/share/doc/slotctl/README.md /usr/share/doc/slotctl/feed.md \
  /usr/share/doc/slotctl/packaging.md /usr/share/doc/slotctl/copyright \
  /usr/share/doc/slotctl/changelog.Debian.gz /usr/share/lintian/overrides/slotctl; do
  grep -qxF "$f" "$work/files" || fail "the package does not install $f"
  [[ -f "$f" ]] || fail "$f is listed by dpkg -L but is not a file"
done
for u in "${UNITS[@]}"; do
  grep -qxF "/lib/systemd/system/$u" "$work/files" || fail "the package does not install /lib/systemd/system/$u"
done
dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q '^ /etc/slotctl/slotctl.toml ' ||
  fail "/etc/slotctl/slotctl.toml is not a conffile"
ok "the binary, ${#UNITS[@]} units, the conffile, man pages, completions and docs are installed"

# --version says the package's version.
v="$(/usr/bin/slotctl --version)"
[[ "$v" == "slotctl $upstream" ]] || fail "slotctl --version says '$v', the package is $deb_version"
ok "/usr/bin/slotctl --version: $v"
v="$(/usr/bin/slotctl-dbus --version)"
[[ "$v" == "slotctl-dbus $upstream" ]] || fail "slotctl-dbus --version says '$v', the package is $deb_version"
ok "/usr/bin/slotctl-dbus --version: $v"

# The man page renders, without a warning from groff or man.
MANWIDTH=80 MAN_KEEP_FORMATTING='' man -P cat -l /usr/share/man/man1/slotctl-install.1.gz \
  >"$work/man" 2>"$work/man.err" || fail "man -l slotctl-install.1.gz failed: $(cat "$work/man.err")"
[[ ! -s "$work/man.err" ]] || fail "man -l slotctl-install.1.gz warns: $(cat "$work/man.err")"
if ! grep -q 'slotctl-install' "$work/man" || ! grep -qw 'install' "$work/man"; then
  fail "man -l slotctl-install.1.gz does not show the install page"
fi
# ...and man finds it by name where the package put it.
found="$(man -w slotctl-install 2>&1)" || fail "man -w slotctl-install: $found"
[[ "$found" == /usr/share/man/man1/slotctl-install.1.gz ]] || fail "man -w slotctl-install finds '$found'"
ok "man -l slotctl-install.1.gz renders ($(wc -l <"$work/man") lines); man -w finds it"

# systemd-analyze verify of each installed unit, with its dependencies
# (Requires=slotctl-boot-check.service, Unit=slotctl-agent-once.service)
# loaded from where the package put them. A template is verified through
# an instance name linked to the installed file.
for u in "${UNITS[@]}"; do
  path="/lib/systemd/system/$u"
  if [[ "$u" == *@.service ]]; then
    ln -s "$path" "$work/${u%@.service}@example.service"
    path="$work/${u%@.service}@example.service"
  fi
  if ! systemd-analyze verify "$path" >"$work/verify" 2>&1; then
    cat "$work/verify" >&2
    fail "systemd-analyze verify $u"
  fi
  # Lines about other units of this machine are its business; any line
  # about slotctl's units is a failure.
  if grep -i 'slotctl' "$work/verify" >&2; then
    fail "systemd-analyze verify $u warns (above)"
  fi
done
ok "systemd-analyze verify: ${#UNITS[@]} units"

# The package enabled and started nothing.
if find /etc/systemd/system -name 'slotctl-*' 2>/dev/null | grep . >&2; then
  fail "dpkg -i enabled slotctl units (above): the device image must do that"
fi
for u in slotctl-agent.service slotctl-agent.timer slotctl-boot-check.service; do
  state="$(systemctl is-enabled "$u" 2>&1 || true)"
  [[ "$state" == disabled ]] || fail "$u is '$state' after dpkg -i, not disabled"
done
ok "no unit enabled by the package"

# Bash completes `slotctl ins<TAB>` to install: the installed script
# sourced, its completion function (from `complete -p slotctl`) called as
# bash's `complete -F` would.
reply="$(bash --noprofile --norc -c '
  source /usr/share/bash-completion/completions/slotctl || exit 9
  spec="$(complete -p slotctl)" || exit 8
  func="$(sed -n "s/.* -F \([^ ]*\) .*/\1/p" <<<"$spec")"
  [[ -n "$func" ]] || exit 7
  COMP_WORDS=(slotctl ins); COMP_CWORD=1; COMP_LINE="slotctl ins"; COMP_POINT=${#COMP_LINE}
  "$func" slotctl ins slotctl || exit 6
  printf "%s\n" "${COMPREPLY[@]}"')" || fail "bash completion of 'slotctl ins': exit $?"
grep -qx install <<<"$reply" || fail "bash completes 'slotctl ins' to '$reply', not install"
ok "bash completes 'slotctl ins<TAB>' to: $(tr '\n' ' ' <<<"$reply")"

# The conffile as shipped is what slotctl loads by default, and loads: a
# command that reads it runs; the same file with an unknown key added is
# refused naming the key (so the file really was read).
/usr/bin/slotctl disk init "$work/disk.img" --role BOOT=1M --role ROOT=2M >/dev/null
/usr/bin/slotctl --disk "$work/disk.img" status >"$work/status" 2>&1 ||
  fail "slotctl status with the shipped /etc/slotctl/slotctl.toml: $(cat "$work/status")"
{ cat /etc/slotctl/slotctl.toml; echo 'not_a_key = 1'; } >"$work/bad.toml"
if out="$(/usr/bin/slotctl --config "$work/bad.toml" --disk "$work/disk.img" status 2>&1)"; then
  fail "slotctl accepted a config with an unknown key"
fi
grep -q not_a_key <<<"$out" || fail "slotctl's refusal of the unknown key does not name it: $out"
ok "the shipped /etc/slotctl/slotctl.toml loads (site values commented out)"

# Enable the units as the device image does, so that purge is seen to
# remove the enablement too.
systemctl enable slotctl-boot-check.service slotctl-agent.timer >"$work/enable" 2>&1 ||
  { cat "$work/enable" >&2; fail "systemctl enable slotctl-boot-check.service slotctl-agent.timer"; }
find /etc/systemd/system -type l -name 'slotctl-*' | sort >"$work/links"
if ! grep -q '/slotctl-agent.timer$' "$work/links" || ! grep -q '/slotctl-boot-check.service$' "$work/links"; then
  fail "systemctl enable made no links: $(cat "$work/enable")"
fi
ok "systemctl enable: $(wc -l <"$work/links") links"

# ------------------------------------------------------------ remove
dpkg -r "$PKG" >"$work/dpkg-r" 2>&1 || { cat "$work/dpkg-r" >&2; fail "dpkg -r $PKG"; }
[[ ! -e /usr/bin/slotctl ]] || fail "dpkg -r left /usr/bin/slotctl"
[[ -f /etc/slotctl/slotctl.toml ]] || fail "dpkg -r removed the conffile /etc/slotctl/slotctl.toml"
[[ "$(pkg_status)" == config-files ]] || fail "after dpkg -r the package is '$(pkg_status)', not config-files"
ok "dpkg -r: binary gone, conffile kept"

# ------------------------------------------------------------ purge
dpkg -P "$PKG" >"$work/dpkg-p" 2>&1 || { cat "$work/dpkg-p" >&2; fail "dpkg -P $PKG"; }
installed=0
status="$(pkg_status)"
[[ -z "$status" || "$status" == not-installed ]] || fail "after dpkg -P the package is '$status'"
left=()
while read -r p; do
  [[ -e "$p" || -L "$p" ]] || continue
  # A directory the package shared with others (/usr/bin, /lib/systemd/system,
  # ...) stays: dpkg removes only what is left empty and no one else's.
  # -d follows symlinks: on a merged-/usr system /lib is a link to usr/lib.
  if [[ -d "$p" ]] && { dpkg -S "$p" >/dev/null 2>&1 || [[ -n "$(ls -A "$p")" ]]; }; then
    continue
  fi
  left+=("$p")
done <"$work/files"
((${#left[@]} == 0)) || fail "dpkg -P left: ${left[*]}"
[[ ! -e /etc/slotctl ]] || fail "dpkg -P left /etc/slotctl"
[[ ! -e /usr/share/doc/slotctl ]] || fail "dpkg -P left /usr/share/doc/slotctl"
while read -r l; do
  [[ ! -e "$l" && ! -L "$l" ]] || fail "dpkg -P left the enablement link $l"
done <"$work/links"
ok "dpkg -P: none of the $(wc -l <"$work/files") paths left, nor /etc/slotctl, nor the enablement links"
echo "test-deb: the package builds, passes lintian, installs, works, removes and purges cleanly"
