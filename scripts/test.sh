#!/usr/bin/env bash
# The test command: sets up a new machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# End to end on a booting QEMU machine (TCG): prints "qemu: N boots, M/7
# scenarios passed" and fails if any scenario failed.
bash qemu/run-tests.sh
