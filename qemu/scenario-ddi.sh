#!/usr/bin/env bash
# End-to-end scenario of the DDI backend (issue 15, docs/ddi.md): the
# guest's `slotctl agent --once` registers with goosebit running on the
# host, takes an update assigned to it, reboots, commits, and goosebit shows
# "Finished" with the new version; then a release whose health check fails
# is taken, rolls back, and goosebit shows "Error" with the reason.
#
# goosebit 0.2.12 runs from the virtualenv the Rust tests use
# (tests/src/goosebit.rs: /var/tmp/slotctl-goosebit-0.2.12-r1, made here
# too when missing, from tests/goosebit/requirements.txt) on the host's
# 127.0.0.1 only. The guest reaches it as the agent scenario reaches its
# feed (qemu/scenario-agent.sh): QEMU user networking with restrict=on and
# a single guestfwd for 10.0.2.100:8080, relayed per connection to
# 127.0.0.1:PORT, so it can reach nothing else. goosebit builds its
# download links from the Host the device sent (10.0.2.100:8080), so the
# artifact comes through the same forward. Releases are uploaded as .swu
# (`slotctl image wrap-swu`, the only format goosebit reads besides RAUC).
#
# Usage: qemu/scenario-ddi.sh   (environment: see qemu/lib.sh;
# SLOTCTL_GOOSEBIT_VENV overrides the virtualenv's place)
set -euo pipefail
# shellcheck source=qemu/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=qemu/machine.sh
source "$QEMU_DIR/machine.sh"
# shellcheck source=qemu/guestnet.sh
source "$QEMU_DIR/guestnet.sh"

DEV="qemu-ddi-dev"
GB_PID=""
GB_URL=""
GB_TOKEN=""
GB_ADMIN="admin@slotctl.test"
GB_PASSWORD="slotctl-qemu-password"
cleanup() {
  kill_qemu
  if [[ -n "$GB_PID" ]]; then
    kill "$GB_PID" 2>/dev/null || true
    wait "$GB_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# The plan every boot runs after its boot check: network up, the agent's
# state partition mounted, one agent cycle against goosebit.
agent_plan() {
  net_and_state_plan
  cat <<EOF
say "plan: slotctl agent --once (DDI)"
slotctl --config /mnt/usb/agent.toml agent --once
say "agent exit=\$?"
umount /tmp/data
EOF
}

make_agent_stick() {
  cat >"$RUN/agent.toml" <<EOF
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
reboot = true

[ddi]
server_url = "http://10.0.2.100:8080"
controller_id = "$DEV"
EOF
  make_stick "$1" "$(agent_plan)" "$RUN/agent.toml" "$BUILD"/kernel/net/*.ko
}

# ---------------------------------------------------------------- goosebit

gb_venv() {
  local dir="${SLOTCTL_GOOSEBIT_VENV:-/var/tmp/slotctl-goosebit-0.2.12-r1}"
  if [[ ! -f "$dir/.complete" ]]; then
    log "making goosebit's virtualenv in $dir (PyPI, pinned)"
    rm -rf "$dir"
    python3 -m venv "$dir" || fail "python3 -m venv failed (scripts/setup.sh installs python3-venv)"
    cp "$REPO_DIR/tests/goosebit/requirements.txt" "$dir/requirements.txt"
    "$dir/bin/pip" install -q --no-deps -r "$dir/requirements.txt" || fail "pip install goosebit failed"
    : >"$dir/.complete"
  fi
  echo "$dir"
}

# Start goosebit on 127.0.0.1 (as tests/src/goosebit.rs does): migrations,
# uvicorn on a free port, the first admin, a bearer token.
start_goosebit() {
  local venv pkg d="$RUN/goosebit" i
  venv="$(gb_venv)"
  pkg="$("$venv/bin/python" -c 'import goosebit, os; print(os.path.dirname(goosebit.__file__))' 2>/dev/null)" ||
    fail "goosebit is not importable from $venv"
  mkdir -p "$d/artifacts"
  printf '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\nlocation = "%s"\nsrc_folder = "."\n' \
    "$pkg/db/migrations" >"$d/pyproject.toml"
  export GOOSEBIT_DB_URI="sqlite:///$d/db.sqlite3" GOOSEBIT_ARTIFACTS_DIR="$d/artifacts" \
    GOOSEBIT_SECRET_KEY="slotctl-qemu-secret-key-0123456789" GOOSEBIT_POLL_TIME="00:00:05"
  unset GOOSEBIT_SETTINGS
  (cd "$d" && "$venv/bin/aerich" upgrade >"$d/aerich.log" 2>&1) || fail "aerich upgrade failed ($d/aerich.log)"
  GB_PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  (cd "$d" && exec "$venv/bin/uvicorn" goosebit:app --host 127.0.0.1 --port "$GB_PORT") \
    </dev/null >"$d/goosebit.log" 2>&1 &
  GB_PID=$!
  GB_URL="http://127.0.0.1:$GB_PORT"
  GUEST_FWD_PORT="$GB_PORT"
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null "$GB_URL/login" 2>/dev/null && break
    kill -0 "$GB_PID" 2>/dev/null || fail "goosebit exited ($d/goosebit.log)"
    [[ "$i" -lt 150 ]] || fail "goosebit not up within 30 s ($d/goosebit.log)"
    sleep 0.2
  done
  curl -fsS -o /dev/null --data-urlencode "username=$GB_ADMIN" --data-urlencode "password=$GB_PASSWORD" \
    "$GB_URL/setup" || fail "goosebit /setup failed"
  GB_TOKEN="$(curl -fsS --data-urlencode "username=$GB_ADMIN" --data-urlencode "password=$GB_PASSWORD" \
    "$GB_URL/login" | jq -r .access_token)" || fail "goosebit /login failed"
  [[ -n "$GB_TOKEN" && "$GB_TOKEN" != null ]] || fail "goosebit gave no token"
  log "goosebit up on $GB_URL"
}

gb_api() { # METHOD PATH [curl args...]
  local m="$1" p="$2"
  shift 2
  curl -fsS -X "$m" -H "Authorization: Bearer $GB_TOKEN" "$@" "$GB_URL/api/v1/$p"
}

# release VERSION_MAJOR: wrap vN.img as .swu and upload it; prints its id.
release() {
  "$SLOTCTL" image wrap-swu "$RUN/v$1.img" -o "$RUN/v$1.swu" --pubkey "$RUN/keys/release.pub" >/dev/null ||
    fail "wrap-swu v$1.img failed"
  gb_api PUT software -F "file=@$RUN/v$1.swu;type=application/octet-stream" | jq -er .id ||
    fail "goosebit did not take v$1.swu"
}

assign() { # SOFTWARE_ID
  gb_api PATCH devices -H 'Content-Type: application/json' \
    -d "{\"devices\": [\"$DEV\"], \"software\": \"$1\"}" >/dev/null || fail "assigning software $1 failed"
}

device() { # the device as goosebit lists it
  gb_api GET devices | jq -ce --arg d "$DEV" '.devices[] | select(.id == $d)' ||
    fail "goosebit does not list $DEV"
}

expect_device() { # JQ_FIELD VALUE
  local got
  got="$(device | jq -r "$1")" || fail "cannot read $1 of $DEV"
  [[ "$got" == "$2" ]] || fail "goosebit shows $1 = '$got' for $DEV, expected '$2' (device: $(device))"
}

device_log() {
  gb_api GET "devices/$DEV/log" | jq -r '.log // ""' || fail "cannot read $DEV's log"
}

# ---------------------------------------------------------------- scenario

PYTHON="$(command -v python3)"
RUN_PREFIX=ddi prepare_machine
fetch_net_modules
DISK="$RUN/disk.img"
cp --sparse=always "$RUN/factory.img" "$DISK" || fail "cannot copy the factory disk"
format_data
write_relay
start_goosebit
stick="$(make_agent_stick ddi)"

log "ddi scenario: the device registers (configData)"
boot ddi-1-registers --stick "$stick"
expect_booted A 1.0.0
expect_console '^sent configData' "the agent to send configData"
expect_console '^no deployment offered' "nothing offered yet"
expect_end poweroff
expect_device .last_state Registered
expect_device .sw_version 1.0.0
expect_device .hardware.revision qemu-test

log "ddi scenario: 2.0.0 assigned; the agent takes it and reboots"
# (The install's line follows its progress bars on the same console line.)
assign "$(release 2)"
boot ddi-2-takes-v2 --stick "$stick"
expect_booted A 1.0.0
expect_console 'installed 2.0.0 into slot B; it boots next' "the agent to install 2.0.0"
expect_console '^slotctl agent: installed 2.0.0$' "the agent's summary of 2.0.0"
expect_console '^slotctl agent: rebooting into the new slot' "the agent to reboot"
expect_end reboot
expect_next B
expect_device .last_state Running

log "ddi scenario: 2.0.0 boots in slot B, commits; goosebit shows Finished"
boot ddi-3-v2-commits --stick "$stick"
expect_booted B 2.0.0
expect_console '^SLOTCTL-SLOT: boot-check exit=0$' "boot-check to pass on 2.0.0"
expect_console 'reported success: 2.0.0 committed in slot B by boot-check' "success reported"
expect_end poweroff
expect_good B
expect_device .last_state Finished
expect_device .sw_version 2.0.0

log "ddi scenario: 3.0.0 (fails its health check) assigned, taken, rolls back"
assign "$(release 3)"
boot ddi-4-takes-v3 --stick "$stick"
expect_booted B 2.0.0
expect_console 'installed 3.0.0 into slot A; it boots next' "the agent to install 3.0.0"
expect_console '^slotctl agent: installed 3.0.0$' "the agent's summary of 3.0.0"
expect_end reboot
expect_next A
boot ddi-5-v3-fails --stick "$stick"
expect_booted A 3.0.0
expect_end reboot
expect_not_bootable A

log "ddi scenario: back on 2.0.0, the failure is reported; goosebit shows Error"
boot ddi-6-reports-failure --stick "$stick"
expect_booted B 2.0.0
expect_console 'reported failure: 3.0.0 in slot A did not commit' "failure reported"
refute_console '^slotctl agent: installed' "a new install"
expect_end poweroff
expect_device .last_state Error
expect_device .sw_version 2.0.0
gb_log="$(device_log)"
grep -q '3.0.0 in slot A did not commit: the device fell back to slot B' <<<"$gb_log" ||
  fail "goosebit's log of $DEV does not give the reason: $gb_log"
log "ddi scenario: goosebit's log of $DEV: $(grep -m1 'did not commit' <<<"$gb_log")"
log "ddi scenario: PASS"
