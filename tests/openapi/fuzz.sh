#!/usr/bin/env bash
# Fuzzes the real signalpost server with schemathesis, driven by shared/openapi.yaml: examples,
# boundary coverage and random positive and negative data for every operation, then the
# stateful phase that follows the document's links (join -> send/poll/leave with the token the
# join returned). Fails on any 5xx and on any response the document does not describe (status,
# content type, headers, body schema), on invalid data the server accepts and on valid data it
# refuses.
#
# Builds nothing: the server is $SIGNALPOST_BIN (default target/debug/signalpost, which
# `cargo test --workspace` builds). It runs on a free loopback port with a temporary SQLite
# file, and is stopped on exit.
#
# Usage: tests/openapi/fuzz.sh
#   FUZZ_EXAMPLES  generated cases per operation in the fuzzing phase (default 1000)
#   FUZZ_SEED      schemathesis seed, to replay a run (default: random, printed)
#   FUZZ_STATEFUL_SECONDS  time budget of the stateful phase (default 90)
# Uses (and creates if missing) the virtualenv target/venv-openapi, as validate.sh does.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="${SIGNALPOST_BIN:-$target/debug/signalpost}"
venv="$repo/target/venv-openapi"
examples="${FUZZ_EXAMPLES:-1000}"
seed="${FUZZ_SEED:-$RANDOM$RANDOM}"
# The poll's longest wait while fuzzing. The server allows 25 s, but thousands of positive polls
# (and every poll without `wait`, which defaults to 20 s) each holding the connection that long
# would take hours; so the server runs with a lowered SIGNALPOST_MAX_WAIT, which the contract
# allows, and schemathesis reads a copy of the document whose `wait` says the same (maximum and
# default 1). Nothing else in the copy differs, and values 2..25 become negative data that the
# server must refuse, which checks the lowered-maximum rule as well.
max_wait=1

if [[ ! -x "$bin" ]]; then
    echo "FAIL: no server binary at $bin (build it with cargo build -p signalpost-server, or set SIGNALPOST_BIN)" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import schemathesis" 2>/dev/null; then
    echo "installing schemathesis"
    "$py" -m pip install --quiet schemathesis
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$py" - "$repo/shared/openapi.yaml" "$work/openapi.yaml" "$max_wait" <<'PY'
import sys, yaml
source, dest, max_wait = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = yaml.safe_load(open(source, encoding="utf-8"))
(wait,) = [p for p in doc["paths"]["/v1/rooms/{room}/messages"]["get"]["parameters"] if p["name"] == "wait"]
wait["schema"]["maximum"] = max_wait
wait["schema"]["default"] = min(wait["schema"]["default"], max_wait)
yaml.safe_dump(doc, open(dest, "w", encoding="utf-8"), sort_keys=False, allow_unicode=True)
PY

# Start the server on a free port; it prints its address on stdout once it listens.
env -u SIGNALPOST_TABLE \
    SIGNALPOST_LISTEN=127.0.0.1:0 \
    SIGNALPOST_DB="$work/fuzz.db" \
    SIGNALPOST_SECRET="fuzz-secret-of-at-least-32-bytes-$seed" \
    SIGNALPOST_MAX_WAIT="$max_wait" \
    SIGNALPOST_JOIN_LIMIT=off \
    SIGNALPOST_POLL_LIMIT=off \
    SIGNALPOST_POST_LIMIT=off \
    SIGNALPOST_PRESENCE_TIMEOUT=60 \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$bin" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
url=""
for _ in $(seq 100); do
    url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/stdout" | head -1)"
    [[ -n "$url" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/stderr" >&2
        echo "FAIL: the server exited at start" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -n "$url" ]] || { echo "FAIL: the server never printed its address" >&2; exit 1; }
echo "== fuzzing $bin at $url (seed $seed, $examples cases per operation)"

st="$venv/bin/st"
reports="$target/schemathesis"
mkdir -p "$reports"
common=(--url "$url" --checks all --mode all --seed "$seed" --request-timeout 10
    --generation-database none --no-color --warnings off)
status=0

# 1. Examples, boundary coverage and random data. One worker: with more, the coverage phase on
#    Python 3.11.7 sometimes fails inside the interpreter ("AST constructor recursion depth
#    mismatch"), which is not a server failure.
"$st" --config-file "$repo/tests/openapi/schemathesis.toml" run "$work/openapi.yaml" "${common[@]}" \
    --phases examples,coverage,fuzzing -n "$examples" -w 1 \
    --report junit,ndjson --report-junit-path "$reports/fuzz.xml" \
    --report-ndjson-path "$reports/fuzz.ndjson" || status=1

# 2. Stateful: follows the links with real tokens. ignored_auth is off here because schemathesis
#    counts a token that a link put into Authorization as "generated", so it reports any 2xx
#    as accepting a bad token.
"$st" --config-file "$repo/tests/openapi/schemathesis.toml" run "$work/openapi.yaml" "${common[@]}" \
    --phases stateful --exclude-checks ignored_auth -n "$examples" -w 1 --max-time "${FUZZ_STATEFUL_SECONDS:-90}" \
    --report junit,ndjson --report-junit-path "$reports/stateful.xml" \
    --report-ndjson-path "$reports/stateful.ndjson" || status=1

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL: the server died during the run" >&2
    status=1
fi
if grep -q "panicked" "$work/stderr"; then
    echo "FAIL: the server panicked:" >&2
    grep -m5 "panicked" "$work/stderr" >&2
    status=1
fi
"$py" "$repo/tests/openapi/fuzz_summary.py" "$work/openapi.yaml" "$reports/fuzz.ndjson" "$reports/stateful.ndjson" || true

if [[ $status != 0 ]]; then
    echo "FAIL: schemathesis found contract violations (seed $seed; reports in $reports)" >&2
    exit 1
fi
echo "OK: no server errors, every response matches the document"
