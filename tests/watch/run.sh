#!/usr/bin/env bash
# The black-box API suite (tests/api) through the Lambda functions under `cargo lambda watch`,
# on both stores:
#
#   tests/watch/run.sh            # SQLite, then DynamoDB on moto
#   tests/watch/run.sh sqlite     # one store only
#   tests/watch/run.sh dynamodb
#
# 1. installs cargo-lambda into target/venv-cargo-lambda if `cargo lambda` is missing;
# 2. builds the five functions (dev profile), so no watch compiles during the tests;
# 3. smoke-tests one watch by hand: health, unknown route, our CORS on preflight, and a post in
#    the post function waking a long poll held by the poll function (the store poll of
#    shared/src/wakeup.rs: separate processes share nothing else);
# 4. (SQLite) tests/watch/concurrent_polls.py: one poll process with
#    AWS_LAMBDA_MAX_CONCURRENCY=1000 under a stub Lambda Runtime API holds 1,000 waiting polls
#    at once, as on Lambda Managed Instances, and reports its memory;
#    and tests/watch/emf.py: the join function's CloudWatch EMF lines and JSON request log,
#    checked against the format's rules;
# 5. runs the suite with SIGNALPOST_TEST_TARGET=watch: the harness (tests/support/watch.rs)
#    starts one watch per test environment, each on a free loopback port with its own SQLite
#    file, and stops them (their whole process groups) when the tests end.
# DynamoDB: moto on loopback, SIGNALPOST_TABLE and AWS_ENDPOINT_URL_DYNAMODB passed through to
# the functions, the table created first with `signalpost create-table`. The functions reach
# moto through tests/watch/record_aws.py, which records each function's calls; then
# tests/watch/secret_arn.py starts each function with its secrets by ARN (recording those
# calls too), and infra/check_template.py fails on a call infra/iam-calls.json (the record the
# template's IAM policies are checked against) does not hold.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target"
stores=("${@:-sqlite dynamodb}")
read -r -a stores <<<"${stores[*]}"

section() { printf '\n=== %s\n' "$*"; }

# --- cargo-lambda -------------------------------------------------------------------------
# shellcheck source=tests/ensure-cargo-lambda.sh
source tests/ensure-cargo-lambda.sh

section "building the functions"
cargo build --locked -p signalpost-fn-join -p signalpost-fn-post -p signalpost-fn-poll \
    -p signalpost-fn-leave -p signalpost-fn-ice-servers -p signalpost-server --tests

# --- one watch by hand ------------------------------------------------------------------------
free_port() { python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

watch_pid=""
watch_dir=""
stop_watch() {
    if [ -n "$watch_pid" ]; then
        # The watch leads its own process group (setsid): cargo, and every function process.
        kill -TERM -"$watch_pid" 2>/dev/null || true
        sleep 1
        kill -KILL -"$watch_pid" 2>/dev/null || true
        watch_pid=""
    fi
    [ -n "$watch_dir" ] && rm -rf "$watch_dir"
    watch_dir=""
}
moto_pid=""
recorder_pid=""
stop_all() {
    stop_watch
    if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
    if [ -n "$recorder_pid" ]; then kill "$recorder_pid" 2>/dev/null || true; fi
}
trap stop_all EXIT

# Starts a watch in a fresh directory (where the relative SIGNALPOST_DB of the workspace
# metadata puts its own SQLite file) and waits, bounded, until /v1/health answers 200.
start_watch() {
    watch_dir="$(mktemp -d)"
    local port
    port="$(free_port)"
    base="http://127.0.0.1:$port"
    (cd "$watch_dir" && exec setsid cargo lambda watch --manifest-path "$root/Cargo.toml" \
        --invoke-address 127.0.0.1 --invoke-port "$port" --disable-cors --concurrency 16 \
        --ignore-changes --quiet >"$watch_dir/watch.log" 2>&1 </dev/null) &
    watch_pid=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$watch_pid" 2>/dev/null; then break; fi
        if [ "$(curl -s -m 60 -o /dev/null -w '%{http_code}' "$base/v1/health")" = 200 ]; then
            return 0
        fi
        sleep 1
    done
    echo "cargo lambda watch did not become ready; its log:" >&2
    cat "$watch_dir/watch.log" >&2
    return 1
}

smoke() {
    section "smoke test through one watch ($1)"
    start_watch
    local body status
    body="$(curl -s -m 30 "$base/v1/no-such-route")"
    echo "unknown route: $body"
    grep -q 'urn:signalpost:not-found' <<<"$body"
    local origins
    origins="$(curl -s -m 30 -D - -o /dev/null -X OPTIONS "$base/v1/rooms/r/messages" \
        -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST' |
        grep -ci '^access-control-allow-origin:')"
    echo "preflight: $origins Access-Control-Allow-Origin header(s)"
    [ "$origins" = 1 ]
    python3 "$root/tests/watch/cross_process_wakeup.py" "$base"
    if [ -n "${2:-}" ]; then
        # $2: the recording proxy between the functions and moto, which can stall a writer.
        python3 "$root/tests/watch/stalled_writer.py" "$base" "$2"
    fi
    stop_watch
}

suite() {
    section "black-box suite through cargo lambda watch ($1)"
    SIGNALPOST_TEST_TARGET=watch cargo test --locked -p signalpost-server --test api -- --test-threads 4
}

for store in "${stores[@]}"; do
    case "$store" in
    sqlite)
        smoke "SQLite"
        section "one poll process holding 1,000 waiting polls (AWS_LAMBDA_MAX_CONCURRENCY=1000)"
        python3 tests/watch/concurrent_polls.py "$target/debug"
        section "the functions' metrics (CloudWatch EMF) and request log under a stub Runtime API"
        python3 tests/watch/emf.py "$target/debug"
        suite "SQLite"
        ;;
    dynamodb)
        # Never skipped: a run that passes must have covered both stores.
        if ! "$target/debug/signalpost" create-table --help >/dev/null 2>&1; then
            echo "FAIL: $target/debug/signalpost create-table does not run, so the DynamoDB leg cannot run" >&2
            exit 1
        fi
        if [ ! -f tests/with-moto.sh ]; then
            echo "FAIL: tests/with-moto.sh is missing, so the DynamoDB leg cannot run" >&2
            exit 1
        fi
        section "DynamoDB on moto"
        SIGNALPOST_TABLE="signalpost-watch-$$" bash tests/with-moto.sh bash -c '
            set -euo pipefail
            "$CARGO_TARGET_DIR/debug/signalpost" create-table
            exec "$0" dynamodb-inside-moto' "${BASH_SOURCE[0]}"
        ;;
    dynamodb-inside-moto)
        # Inside with-moto.sh: SIGNALPOST_TABLE and the AWS variables are set, and the
        # harness passes them through to the functions.
        records="$target/infra"
        mkdir -p "$records"
        rm -f "$records/recorder.port"
        python3 tests/watch/record_aws.py "$AWS_ENDPOINT_URL_DYNAMODB" "$records/calls-dynamodb.json" \
            --port-file "$records/recorder.port" &
        recorder_pid=$!
        for _ in $(seq 1 100); do
            [ -s "$records/recorder.port" ] && break
            sleep 0.1
        done
        export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$(cat "$records/recorder.port")"
        smoke "DynamoDB" "$AWS_ENDPOINT_URL_DYNAMODB"
        section "the poll function gives its wake-up queue back on SIGTERM (Lambda's shutdown)"
        "$target/venv-moto/bin/python" tests/watch/graceful_shutdown.py "$target/debug"
        suite "DynamoDB"
        kill "$recorder_pid"
        recorder_pid=""
        section "each function's AWS calls, against the record of infra/iam-calls.json"
        PATH="$target/venv-moto/bin:$PATH" "$target/venv-moto/bin/python" tests/watch/secret_arn.py \
            "$target/debug" --calls "$records/calls-secrets.json"
        python3 infra/check_template.py record "$records/calls-dynamodb.json" "$records/calls-secrets.json"
        ;;
    *)
        echo "unknown store: $store (sqlite or dynamodb)" >&2
        exit 2
        ;;
    esac
done
section "watch tests passed"
