#!/usr/bin/env bash
# The whole test suite, as the README promises: run it from a fresh clone and it installs what
# it needs (Python tools into virtualenvs under target/), starts what the tests need, and
# stops it again. Exits non-zero on the first failing part.
#
#   1. Rust: unit tests, property tests, the store conformance suite (SQLite, and DynamoDB on
#      a local moto server) and the black-box API suite (hostile clients included) against
#      the real signalpost binary, on both stores; the reliability suite;
#      the black-box suite once more over HTTPS (SIGNALPOST_TEST_TLS=1);
#   1a. the mutation check (tests/mutation/check.py): each core guarantee's test must fail
#      when a one-line mutation breaks that guarantee;
#   1b. the same black-box suite through the five Lambda functions under `cargo lambda watch`
#      (installed from PyPI if missing), on SQLite and on DynamoDB, recording each function's
#      DynamoDB and Secrets Manager calls for the IAM check;
#   2. the OpenAPI document: valid OpenAPI 3.1, loadable by schemathesis;
#   3. schemathesis against that binary: every response matches the document, no 5xx;
#   4. the SAM template: cfn-lint, checkov, the route lists agreeing, and what a first deploy
#      needs (infra/check_template.py: CORS, parameter ranges, Rules, concurrency, IAM grants
#      equal to the calls 1b recorded);
#   5. real-browser end-to-end calls: headless Chromium (Debian's package: `apt-get install
#      chromium`; .ci/run installs it) through web/signalpost.js and the demo page;
#   6. the README blocks marked quick, run as written (tests/docs/check.py --run; its static
#      checks also run first of all, in a second: links stay inside the repository, commands
#      name scripts, packages and paths that exist, configuration tables match the code);
#   7. the five Lambda functions' arm64 release sizes, printed and held to the README's table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n=== %s\n' "$*"; }

section "READMEs and the contract: links, commands, configuration tables"
python3 tests/docs/check.py

# One DynamoDB-compatible server (moto, installed into target/venv-moto) for the Rust tests:
# the store conformance suite runs on SQLite and on DynamoDB, and so does the black-box suite.
section "Rust tests: SQLite and DynamoDB stores, standalone server"
tests/with-moto.sh bash -c '
    set -e
    cargo test --workspace --locked
    echo "--- the black-box API suite again, on DynamoDB"
    SIGNALPOST_TEST_STORE=dynamodb cargo test --locked -p signalpost-server --test api
    echo "--- the black-box API suite again, over HTTPS (HTTP/2 for the client, raw requests over TLS)"
    # Skipped: its non-reading clients write plain HTTP on raw TCP, which an HTTPS server
    # refuses at the handshake, so there it proves nothing (tests/api/tls.rs stalls HTTP/2).
    SIGNALPOST_TEST_TLS=1 cargo test --locked -p signalpost-server --test api -- \
        --skip limits::clients_that_never_read_cannot_exhaust_memory
'

section "Mutation check: the core guarantees' tests fail when the guarantee is broken"
# One-line mutations (no wake-up, no expiry filter, no idempotency lookup, a reversed batch,
# no room check on tokens) in a copy of the tree under target/, each against its narrow test.
python3 tests/mutation/check.py

section "The API suite through the Lambda functions under cargo lambda watch, on both stores"
bash tests/watch/run.sh

section "OpenAPI document"
bash tests/openapi/validate.sh

section "Fuzzing the server against the OpenAPI document"
# Uses the signalpost binary the Rust tests just built.
bash tests/openapi/fuzz.sh

section "Infrastructure template"
bash infra/lint.sh

section "Browser end-to-end tests (headless Chromium)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    echo "Chromium is missing at $chromium: install it with 'apt-get install chromium' (or set CHROMIUM)" >&2
    exit 1
fi
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
SIGNALPOST_BIN="$PWD/target/debug/signalpost" CHROMIUM="$chromium" npm --prefix tests/e2e test

section "README blocks marked quick, run as written"
python3 tests/docs/check.py --run

section "Lambda function sizes (arm64 release, as deployed)"
bash tests/function_sizes.sh

section "all tests passed"
