#!/usr/bin/env bash
# End-to-end scenario of the OTA agent (issue 7): the guest's `slotctl agent
# --once` takes an update from a feed served by the host, reboots, boots the
# new slot and commits it; then a bad release rolls back and is not retried.
#
# The feed and images are served by scripts/range-server.py (HTTP/1.1,
# keep-alive, Range) on the host's 127.0.0.1 only; the guest reaches it through QEMU user networking with
# restrict=on and a single guestfwd for 10.0.2.100:8080, so it can reach
# nothing else (docs: /work/shared/docs/QEMU-NOTES.md). The guestfwd runs a
# small relay to 127.0.0.1:PORT per connection (`cmd:`): a `tcp:` target is
# one chardev connection made at start-up, and the agent opens several.
# The agent keeps its state on the disk's DATA partition (formatted ext4
# here): the slots' /var/lib/slotctl is a tmpfs, and a failed version must
# be remembered across reboots.
#
# Usage: qemu/scenario-agent.sh   (environment: see qemu/lib.sh)
set -euo pipefail
# shellcheck source=qemu/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=qemu/machine.sh
source "$QEMU_DIR/machine.sh"
# shellcheck source=qemu/guestnet.sh
source "$QEMU_DIR/guestnet.sh"

HTTP_PID=""
cleanup() {
  kill_qemu
  if [[ -n "$HTTP_PID" ]]; then
    kill "$HTTP_PID" 2>/dev/null || true
    wait "$HTTP_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# The plan every boot runs after its boot check: network up, the agent's
# state partition mounted, one agent cycle (it reboots when it installed).
agent_plan() {
  net_and_state_plan
  cat <<EOF
say "plan: slotctl agent --once"
slotctl --config /mnt/usb/agent.toml agent --once
say "agent exit=\$?"
say "agent-state \$(tr -d '\n' </tmp/data/slotctl/agent.json | tr -s ' ')"
umount /tmp/data
EOF
}

make_agent_stick() {
  cat >"$RUN/agent.toml" <<'EOF'
disk = "/dev/vda"
compatible = "qemu-test"
keyring = "/etc/slotctl/keys"
tries = 2
lock_file = "/run/slotctl.lock"
state_dir = "/tmp/data/slotctl"

[boot_check]
reboot_on_failure = true

[http]
connect_timeout_secs = 5
retries = 3
backoff_initial_ms = 500

[agent]
feed_url = "http://10.0.2.100:8080/feed.json"
reboot = true
EOF
  make_stick "$1" "$(agent_plan)" "$RUN/agent.toml" "$BUILD"/kernel/net/*.ko
}

publish() { # publish VERSION_MAJOR: add vN.img to the feed, sign it
  cp "$RUN/v$1.img" "$RUN/www/"
  "$SLOTCTL" feed add "$RUN/v$1.img" --url "v$1.img" --feed "$RUN/www/feed.json" >/dev/null
  "$SLOTCTL" feed sign --key "$RUN/keys/release.key" --feed "$RUN/www/feed.json" >/dev/null
}

# The slot images are chunked (docs/delta.md): every update the agent takes
# goes the delta way, fetching by Range only the blocks the booted slot lacks.
IMAGE_COMPRESSION=chunked RUN_PREFIX=agent prepare_machine
fetch_net_modules
DISK="$RUN/disk.img"
cp --sparse=always "$RUN/factory.img" "$DISK" || fail "cannot copy the factory disk"
format_data

mkdir -p "$RUN/www"
python3 "$QEMU_DIR/../scripts/range-server.py" "$RUN/www" "$RUN/http.port" \
  2>"$RUN/http-requests.log" &
HTTP_PID=$!
PYTHON="$(command -v python3)"
write_relay
HTTP_PORT=""
for _ in $(seq 1 100); do
  if [[ -s "$RUN/http.port" ]]; then
    HTTP_PORT="$(cat "$RUN/http.port")"
    break
  fi
  sleep 0.1
done
[[ "$HTTP_PORT" =~ ^[0-9]+$ ]] || fail "the feed's HTTP server did not come up (log: $RUN/http-requests.log)"
GUEST_FWD_PORT="$HTTP_PORT"
"$SLOTCTL" feed init --compatible qemu-test --feed "$RUN/www/feed.json" >/dev/null
publish 2
stick="$(make_agent_stick agent)"

log "agent scenario: the agent takes 2.0.0 from the feed and reboots"
boot agent-1-takes-v2 --stick "$stick"
expect_booted A 1.0.0
expect_console '^updating from 1.0.0 to 2.0.0' "the agent to take 2.0.0 from the feed"
expect_console '^slotctl agent: rebooting into the new slot' "the agent to reboot"
expect_end reboot
expect_flags B "$TRIES_NEW" 0
expect_next B

log "agent scenario: 2.0.0 boots in slot B and is committed"
boot agent-2-v2-commits --stick "$stick"
expect_booted B 2.0.0
expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on 2.0.0"
expect_console '^version 2.0.0 committed in slot B' "the agent to see 2.0.0 committed"
expect_end poweroff
expect_good B

log "agent scenario: a bad release (3.0.0) is taken, fails its check, rolls back"
publish 3
boot agent-3-takes-v3 --stick "$stick"
expect_booted B 2.0.0
expect_console '^updating from 2.0.0 to 3.0.0' "the agent to take 3.0.0"
# The second update is a chunked download: the install's summary line says
# what it fetched and what it reused, and the server's log agrees that far
# less than the image crossed the wire.
delta_re='^downloaded .* of a .* image \(delta\); reused .* from the booted slot'
expect_console "$delta_re" "the second update to go the delta way"
v3_size="$(stat -c %s "$RUN/www/v3.img")"
v3_sent="$(awk '$4 == "/v3.img" { sub("sent=", "", $8); n += $8 } END { print n + 0 }' "$RUN/http-requests.log")"
((v3_sent > 0 && v3_sent * 2 < v3_size)) ||
  fail "the server sent $v3_sent bytes of v3.img ($v3_size bytes): not a delta download"
log "agent scenario: 3.0.0 over the delta way: server sent $v3_sent of $v3_size bytes; guest: $(grep -E -m1 -- "$delta_re" "$BOOT_LOG" | tr -d '\r')"
expect_end reboot
expect_next A
boot agent-4-v3-fails --stick "$stick"
expect_booted A 3.0.0
expect_end reboot
expect_not_bootable A

log "agent scenario: back on 2.0.0, 3.0.0 is failed here and not retried"
boot agent-5-not-retried --stick "$stick"
expect_booted B 2.0.0
expect_console '^version 3.0.0 was rolled back' "the agent to learn of the rollback"
expect_console 'no update: newest release 3.0.0: failed on this device' "3.0.0 not retried"
refute_console '^updating from' "a new install"
expect_console 'agent-state .*"failed": \[ \{ "version": "3.0.0"' "3.0.0 in the agent's failed list"
expect_end poweroff
expect_not_bootable A
expect_next B
boot agent-6-still-not-retried --stick "$stick"
expect_booted B 2.0.0
refute_console '^updating from' "a new install"
expect_end poweroff
log "agent scenario: PASS"
