#!/usr/bin/env bash
# Runs a command against throw-away DynamoDB- and SQS-compatible servers (moto) on loopback:
#   tests/with-moto.sh cargo test -p signalpost-shared
# moto is installed into <repo>/target/venv-moto on first use, so a clean CI machine needs
# nothing but python3. The server is stopped when the command ends, whatever its outcome,
# and the script exits with the command's status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/venv-moto"

if [ ! -x "$venv/bin/moto_server" ]; then
    echo "with-moto: installing moto[server] into $venv" >&2
    mkdir -p "$repo/target"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]' >&2
fi

port="$("$venv/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
log="$(mktemp -t moto-server.XXXXXX.log)"
# moto_server itself serves requests on many threads without a lock around DynamoDB's
# conditional writes and transactions, so concurrent requests can interleave a condition
# check with another request's write: concurrent joins then overfill rooms, and reads see
# half-applied transactions. Real DynamoDB applies each request atomically; serving one
# request at a time gives moto the same guarantee.
"$venv/bin/python" - 127.0.0.1 "$port" >"$log" 2>&1 <<'PY' &
import os
import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
run_simple(
    host,
    port,
    DomainDispatcherApplication(create_backend_app),
    threaded=False,
    request_handler=MotoRequestHandler,
)
PY
moto_pid=$!

# SQS (the wake-ups) gets a moto of its own, served on many threads: a ReceiveMessage waits up
# to 20 s for a message, which would hold up every DynamoDB request on the one-at-a-time
# server above.
sqs_port="$("$venv/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
sqs_log="$(mktemp -t moto-sqs.XXXXXX.log)"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$sqs_port" >"$sqs_log" 2>&1 &
sqs_pid=$!

stop_moto() {
    kill "$moto_pid" "$sqs_pid" 2>/dev/null || true
    wait "$moto_pid" "$sqs_pid" 2>/dev/null || true
    rm -f "$log" "$sqs_log"
}
trap stop_moto EXIT

# Waits (bounded) until the moto with pid $1 answers on $2; prints its log $3 if it does not.
wait_for_moto() {
    for _ in $(seq 1 100); do
        if ! kill -0 "$1" 2>/dev/null; then
            break
        fi
        if "$venv/bin/python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)' "$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "with-moto: moto_server did not start on $2; its log:" >&2
    cat "$3" >&2
    return 1
}

endpoint="http://127.0.0.1:$port"
sqs_endpoint="http://127.0.0.1:$sqs_port"
wait_for_moto "$moto_pid" "$endpoint" "$log" || exit 1
wait_for_moto "$sqs_pid" "$sqs_endpoint" "$sqs_log" || exit 1

export AWS_ENDPOINT_URL_DYNAMODB="$endpoint"
export SIGNALPOST_TEST_DYNAMODB_ENDPOINT="$endpoint"
export AWS_ENDPOINT_URL_SQS="$sqs_endpoint"
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing

status=0
"$@" || status=$?
exit "$status"
