#!/usr/bin/env bash
# Side-by-side with the PeerJS server (issue 7): installs this folder's Node packages, runs
# the message ping-pong and the browser call setup against both servers in one go, and
# prints a Markdown table for the README. Needs Node 20+, Debian's chromium, and a built
# signalpost binary:
#   SIGNALPOST_BIN=/path/to/signalpost tests/bench/peerjs/run.sh
# Env passed through: N, WARMUP, SETTLE_MS, HTTP (pingpong.mjs); RUNS, CHROMIUM (call-setup.mjs).
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${SIGNALPOST_BIN:-}" ]]; then
  SIGNALPOST_BIN="$(cd ../../.. && pwd)/target/release/signalpost"
fi
if [[ ! -x "$SIGNALPOST_BIN" ]]; then
  echo "run.sh: no signalpost binary at $SIGNALPOST_BIN: build it (cargo build --release -p signalpost-server) or set SIGNALPOST_BIN" >&2
  exit 2
fi
export SIGNALPOST_BIN
npm ci --no-audit --no-fund --loglevel=error

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== machine: $(nproc) CPUs, $(cut -d' ' -f1-3 /proc/loadavg) load"
echo "== message ping-pong (pingpong.mjs)"
JSON="$out/pingpong.json" timeout 900 node pingpong.mjs
echo
echo "== call setup in headless Chromium (call-setup.mjs)"
JSON="$out/call-setup.json" timeout 900 node call-setup.mjs
echo
echo "== table for the README"
echo
node table.mjs "$out/pingpong.json" "$out/call-setup.json"
