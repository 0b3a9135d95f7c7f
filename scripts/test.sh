#!/usr/bin/env bash
# The test command: sets up a new machine, then runs every test.
#
# Two lanes run side by side after the set-up and the lints (the CI budget
# is 30 minutes on 2 cores; docs/testing.md, "The test command's two
# lanes"): the booting machine's (scripts/test-boots.sh: QEMU's TCG keeps
# one core busy) and cargo's (clippy, one build of every target, then the
# tests beside the reliability suites), then the Debian package's test
# beside the DDI scenario. Each step's seconds are printed at the end; the
# log of what ran in the background is printed when it ends. Any failure fails the command; a failure in the cargo lane
# stops the boots lane.
set -euo pipefail
cd "$(dirname "$0")/.."
t_last=$SECONDS
steps=()
step() { steps+=("$1 $((SECONDS - t_last)) s"); t_last=$SECONDS; }
BOOTS_PID=""
BOOTS_LOG=""
REL_PID=""
finish() {
  local rc=$?
  if [[ -n "$REL_PID" ]] && kill -0 "$REL_PID" 2>/dev/null; then
    echo "test: stopping the reliability suites (process group $REL_PID)" >&2
    kill -TERM -- "-$REL_PID" 2>/dev/null || true
  fi
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
# reap PID LOG WHAT: waits for a step run in the background, prints its log
# between two marker lines, and returns its exit status.
reap() {
  local rc=0
  wait "$1" || rc=$?
  echo "test: ---- the log of $3 ($2) ----"
  cat "$2"
  echo "test: ---- end of the log of $3 (exit $rc) ----"
  return "$rc"
}

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
# Every target of the workspace in one build: the binaries the integration
# tests run (slotctl, slotctl-dbus) and every test. One build, so that the
# features are unified once: `cargo build -p slotctl -p slotctl-dbus` then
# `cargo test` compiled zbus, the slotctl library and their dependencies
# twice, with two feature sets (docs/testing.md).
cargo build --workspace --all-targets
step build
# The long reliability suites (docs/reliability.md) run once, on their own,
# with their counts (crash states, fuzz cases, tampering cases) in their
# log; each of them is one thread, so they run beside the other tests. Their
# executables are run directly (in their package's folder, as cargo test
# does): a second cargo command with other target filters resolves features
# anew and recompiled the workspace's crates while the tests waited.
RELIABILITY=(power_cut power_cut_cli power_cut_bootcount power_cut_install
  power_cut_install_inproc fuzz_gpt tamper_install)
mapfile -t rel_exes < <(cargo test --workspace --no-run --message-format=json |
  jq -r --args 'select(.reason == "compiler-artifact" and .profile.test
      and .target.kind == ["test"] and (.target.name | IN($ARGS.positional[])))
    | "\(.manifest_path) \(.executable)"' "${RELIABILITY[@]}")
((${#rel_exes[@]} == ${#RELIABILITY[@]})) || {
  echo "test: found ${#rel_exes[@]} of the ${#RELIABILITY[@]} reliability suites' executables" >&2
  exit 1
}
# In its own process group, like the boots lane, so that finish can stop
# the suite it is running.
REL_LOG="target/test-reliability.log"
setsid bash scripts/test-reliability.sh "${rel_exes[@]}" >"$REL_LOG" 2>&1 &
REL_PID=$!
# Everything else.
tests_rc=0
cargo test --workspace -- --skip reliability_ || tests_rc=$?
step tests
rel_rc=0
reap "$REL_PID" "$REL_LOG" "the reliability suites" || rel_rc=$?
REL_PID=""
step reliability-wait
if ((tests_rc || rel_rc)); then
  echo "test: failed: the tests (exit $tests_rc), the reliability suites (exit $rel_rc)" >&2
  exit 1
fi

boots_rc=0
reap "$BOOTS_PID" "$BOOTS_LOG" "the boots lane" || boots_rc=$?
BOOTS_PID=""
step boots-wait
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
SLOTCTL_GEN_DOCS="$PWD/target/debug/slotctl-gen-docs" bash scripts/test-deb.sh || deb_rc=$?
step deb
ddi_rc=0
reap "$ddi_pid" "$DDI_LOG" "the DDI scenario" || ddi_rc=$?
step qemu-ddi
if ((deb_rc || ddi_rc)); then
  echo "test: failed: the package's test (exit $deb_rc), the DDI scenario (exit $ddi_rc)" >&2
  exit 1
fi
