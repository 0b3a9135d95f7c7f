#!/usr/bin/env bash
# The test command: sets up a new machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's seconds, at the end (the CI budget is 30 minutes on 2 cores).
t_last=$SECONDS
steps=()
step() { steps+=("$1 $((SECONDS - t_last)) s"); t_last=$SECONDS; }
trap 'printf "test: %s\n" "${steps[@]}" "total $SECONDS s"' EXIT
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
# End to end on a booting QEMU machine (TCG): prints "qemu: N boots, M/11
# scenarios passed, C/11 negative controls caught" and fails if any scenario
# failed or any negative control (a scenario expecting a wrong outcome) passed.
bash qemu/run-tests.sh
step qemu
# The stripped static binary that run built is at most 6 MiB (issue 13;
# docs/architecture.md, "The release binary").
bash scripts/check-binary-size.sh
step binary-size
# The Debian package from that binary (issue 16): built with cargo-deb,
# checked by lintian, installed on this machine with dpkg -i, its binary,
# man page, units and bash completion checked, then removed and purged
# without a file left behind (docs/packaging.md).
bash scripts/test-deb.sh
step deb
# The OTA agent on the booting machine: takes an update from a signed feed
# served on the host's 127.0.0.1, commits it, then a bad release rolls back
# and is not retried.
bash qemu/scenario-agent.sh
step qemu-agent
# The DDI backend on the booting machine (issue 15): the guest's agent takes
# an update from goosebit on the host's 127.0.0.1 (the same restricted
# forwarding), goosebit shows "Finished" with the new version; a release
# whose health check fails rolls back and goosebit shows "Error" with why.
bash qemu/scenario-ddi.sh
step qemu-ddi
