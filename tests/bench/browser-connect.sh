#!/usr/bin/env bash
# Browser call setup on the four deployment shapes, in one run (issue 11's figure; README,
# "In the browser"): the standalone server and the five functions under `cargo lambda watch`,
# each on SQLite and on DynamoDB + SQS (moto), plus each with SIGNALPOST_WAKEUPS=false.
#   tests/bench/browser-connect.sh                 # RUNS=7 measured runs per shape
#   SHAPES=watch-sqlite RUNS=3 TRACE=1 tests/bench/browser-connect.sh
# A benchmark, not a test: tests/e2e/measure-connect.mjs prints the figures and asserts
# nothing. Debug builds throughout, since watch runs the functions' dev profile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target"

# shellcheck source=tests/ensure-cargo-lambda.sh
source tests/ensure-cargo-lambda.sh
cargo build --locked -p signalpost-fn-join -p signalpost-fn-post -p signalpost-fn-poll \
    -p signalpost-fn-leave -p signalpost-fn-ice-servers -p signalpost-server
[ -d tests/e2e/node_modules/playwright-core ] ||
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)

export SIGNALPOST_BIN="$target/debug/signalpost"
export RUNS="${RUNS:-7}"
export SHAPES="${SHAPES:-standalone-sqlite,watch-sqlite,watch-sqlite-nowake,standalone-dynamodb,watch-dynamodb,watch-dynamodb-nowake}"
exec tests/with-moto.sh node tests/e2e/measure-connect.mjs
