#!/usr/bin/env bash
# The test command: sets up a new machine, then runs every test.
#
# Two lanes run side by side after the set-up and the lints (the CI budget
# is 30 minutes on 2 cores; docs/testing.md, "The test command's two
# lanes"): the booting machine's (scripts/test-boots.sh: QEMU's TCG keeps
# one core busy) and cargo's (clippy, the build, the tests, the reliability
# suites), then the Debian package's test beside the DDI scenario. Each
# step's seconds are printed at the end; the boots lane's log is printed
# when it ends. Any failure fails the command; a failure in the cargo lane
# stops the boots lane.
set -euo pipefail
cd "$(dirname "$0")/.."
t_last=$SECONDS
steps=()
step() { steps+=("$1 $((SECONDS - t_last)) s"); t_last=$SECONDS; }
BOOTS_PID=""
BOOTS_LOG=""
finish() {
  local rc=$?
  if [[ -n "$BOOTS_PID" ]] && kill -0 "$BOOTS_PID" 2>/dev/null; then
    echo "test: stopping the boots lane (process group $BOOTS_PID)" >&2
    kill -TERM -- "-$BOOTS_PID" 2>/dev/null || true
    wait "$BOOTS_PID" 2>/dev/null || true
    [[ -f "$BOOTS_LOG" ]] && tail -n 40 "$BOOTS_LOG" | sed 's/^/boots| /'
  fi
  printf "test: %s\n" "${steps[@]}" "total $SECONDS s"
  exit "$rc"
}
trap finish EXIT

bash scripts/setup.sh
step setup
# The lint tools come with rustup's default profile; a toolchain without
# them (Debian's rustc-web) skips their checks, saying so, and runs the rest.
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "test: rustfmt is missing (rustup component add rustfmt): skipping the format check"
fi
shellcheck scripts/*.sh qemu/*.sh bench/*.sh qemu/guest/* .ci/run packaging/debian/p*
step fmt-shellcheck

# ------------------------------------------------------------ two lanes
# The boots lane, in its own process group (setsid) so that a failure here
# can stop it and the qemu it runs; its output goes to a log printed below.
mkdir -p target
BOOTS_LOG="target/test-boots.log"
echo "test: the boots lane (scripts/test-boots.sh) runs beside cargo; its log: $BOOTS_LOG"
setsid bash scripts/test-boots.sh >"$BOOTS_LOG" 2>&1 &
BOOTS_PID=$!

if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "test: clippy is missing (rustup component add clippy): skipping the lint"
fi
step clippy
# The slotctl and slotctl-dbus binaries the integration tests run (cargo
# test alone does not always build them).
cargo build -p slotctl -p slotctl-dbus
step build
# Everything but the long reliability suites (docs/reliability.md)...
cargo test --workspace -- --skip reliability_
step tests
# ...which run once, on their own, with their counts (crash states, fuzz
# cases, tampering cases) in the log.
cargo test -p slotctl-tests --test power_cut --test power_cut_cli --test power_cut_bootcount \
    --test power_cut_install --test power_cut_install_inproc --test fuzz_gpt --test tamper_install \
    -- --nocapture reliability_
step reliability

boots_rc=0
wait "$BOOTS_PID" || boots_rc=$?
BOOTS_PID=""
step boots-wait
echo "test: ---- the boots lane's log ($BOOTS_LOG) ----"
cat "$BOOTS_LOG"
echo "test: ---- end of the boots lane's log (exit $boots_rc) ----"
if ((boots_rc)); then
  echo "test: the boots lane failed (exit $boots_rc): see its log above" >&2
  exit 1
fi

# ------------------------------------------------------------ the package and DDI
# The DDI backend on the booting machine (issue 15): the guest's agent takes
# an update from goosebit on the host's 127.0.0.1 (the same restricted
# forwarding), goosebit shows "Finished" with the new version; a release
# whose health check fails rolls back and goosebit shows "Error" with why.
# It runs beside the package's test, after the cargo lane (its goosebit
# virtualenv is the one tests/src/goosebit.rs makes).
DDI_LOG="target/test-ddi.log"
bash qemu/scenario-ddi.sh >"$DDI_LOG" 2>&1 &
ddi_pid=$!
# The Debian package from that binary (issue 16): built with cargo-deb,
# checked by lintian, installed on this machine with dpkg -i, its binary,
# man page, units and bash completion checked, then removed and purged
# without a file left behind (docs/packaging.md).
deb_rc=0
bash scripts/test-deb.sh || deb_rc=$?
step deb
ddi_rc=0
wait "$ddi_pid" || ddi_rc=$?
step qemu-ddi
cat "$DDI_LOG"
if ((deb_rc || ddi_rc)); then
  echo "test: failed: the package's test (exit $deb_rc), the DDI scenario (exit $ddi_rc)" >&2
  exit 1
fi
