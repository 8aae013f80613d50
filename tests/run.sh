#!/usr/bin/env bash
# The whole test suite, as the README promises: run it from a fresh clone and it installs what
# it needs (Python tools into virtualenvs under target/), starts what the tests need, and
# stops it again. Exits non-zero on the first failing part.
#
#   1. Rust: unit tests, property tests, the store conformance suite and the black-box API
#      suite (hostile clients included) against the real signalpost binary;
#   2. the OpenAPI document: valid OpenAPI 3.1, loadable by schemathesis;
#   3. schemathesis against that binary: every response matches the document, no 5xx;
#   4. the SAM template: cfn-lint, checkov, and the route lists agreeing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n=== %s\n' "$*"; }

section "Rust tests (SQLite store, standalone server)"
cargo test --workspace --locked

section "OpenAPI document"
bash tests/openapi/validate.sh

section "Fuzzing the server against the OpenAPI document"
# Uses the signalpost binary the Rust tests just built.
bash tests/openapi/fuzz.sh

section "Infrastructure template"
bash infra/lint.sh

section "all tests passed"
