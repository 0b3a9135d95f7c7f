# shellcheck shell=bash
# apt_get and apt_update: apt-get that waits for apt's locks instead of
# failing at once when another apt-get (unattended-upgrades on a fresh
# machine) holds them. Sourced by scripts/setup.sh and qemu/build-kernel.sh.
# Waits up to 10 minutes. DPkg::Lock::Timeout covers dpkg's lock; the
# package lists' lock of `apt-get update` it does not cover (apt 2.6, tried
# here with the lock held by another process), so update is retried.
APT_WAIT=600
apt_get() { apt-get -o "DPkg::Lock::Timeout=$APT_WAIT" "$@"; }
apt_update() {
  local t0=$SECONDS err
  while :; do
    if err="$(apt_get update -qq 2>&1)"; then
      return 0
    fi
    if [[ "$err" == *"Could not get lock"* ]] && ((SECONDS - t0 < APT_WAIT)); then
      echo "${0##*/}: another apt-get holds the package lists' lock; waiting for it"
      sleep 5
      continue
    fi
    printf '%s\n' "$err" >&2
    return 1
  done
}
