#!/usr/bin/env bash
# The reliability suites' runs for scripts/test.sh (docs/reliability.md,
# docs/testing.md): each argument is "MANIFEST EXECUTABLE", a test
# executable cargo built and the Cargo.toml of its package. Runs each in its
# package's folder, as cargo test does, with `--nocapture reliability_` so
# their counts (crash states, fuzz cases, tampering cases) reach the log.
# Runs them all; exits non-zero if any failed.
set -uo pipefail
rc=0
for line in "$@"; do
  read -r manifest exe <<<"$line"
  echo "test: reliability: ${exe##*/}"
  (cd "$(dirname "$manifest")" && "$exe" --nocapture reliability_) || rc=1
done
exit "$rc"
