#!/usr/bin/env bash
# The booting machine's lane of the test command (scripts/test.sh runs it
# beside the cargo lane, docs/testing.md "The test command's two lanes"):
# the end-to-end scenarios under QEMU, the release binary's size bound, the
# OTA agent's scenario, then what the Debian package's test needs built
# (the static slotctl-dbus, cargo-deb). QEMU's TCG runs the guest's one vCPU
# on one host core, so this lane leaves the other core to cargo.
#
# Prints "boots: STEP N s" for each step at the end, and exits non-zero at
# the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

t_last=$SECONDS
steps=()
step() { steps+=("$1 $((SECONDS - t_last)) s"); t_last=$SECONDS; }
trap 'printf "boots: %s\n" "${steps[@]}" "total $SECONDS s"' EXIT

# End to end on a booting QEMU machine (TCG): prints "qemu: N boots, M/11
# scenarios passed, C/11 negative controls caught" and fails if any scenario
# failed or any negative control (a scenario expecting a wrong outcome) passed.
# It builds the static release slotctl first (qemu/lib.sh).
bash qemu/run-tests.sh
step qemu
# The stripped static binary that run built is at most 6 MiB (issue 13;
# docs/architecture.md, "The release binary").
bash scripts/check-binary-size.sh
step binary-size
# The OTA agent on the booting machine: takes an update from a signed feed
# served on the host's 127.0.0.1, commits it, then a bad release rolls back
# and is not retried.
bash qemu/scenario-agent.sh
step qemu-agent
# What scripts/test-deb.sh builds from, made here where a core is free:
# the static slotctl-dbus and cargo-deb (scripts/build-deb.sh).
bash scripts/build-deb.sh --prepare
step deb-prepare
