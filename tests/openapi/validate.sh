#!/usr/bin/env bash
# Validates shared/openapi.yaml against the OpenAPI 3.1 specification, then checks that
# schemathesis can load it and build requests for every operation (what the fuzzing run
# against a live server needs). Exits non-zero if either fails.
#
# Usage: tests/openapi/validate.sh [--no-schemathesis]
# Uses (and creates if missing) the virtualenv target/venv-openapi.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
doc="$repo/shared/openapi.yaml"
venv="$repo/target/venv-openapi"
check_schemathesis=1
[[ "${1:-}" == "--no-schemathesis" ]] && check_schemathesis=0

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

if ! "$py" -c "import openapi_spec_validator" 2>/dev/null; then
    echo "installing openapi-spec-validator"
    "$py" -m pip install --quiet openapi-spec-validator
fi

echo "== openapi-spec-validator $("$py" -c 'from importlib.metadata import version; print(version("openapi-spec-validator"))')"
if ! "$venv/bin/openapi-spec-validator" --schema 3.1.0 "$doc"; then
    echo "FAIL: $doc is not a valid OpenAPI 3.1 document" >&2
    exit 1
fi

# Beyond the meta-schema: every $ref resolves, operationIds are unique, every operation
# lists its error responses as application/problem+json, and every response declares
# Cache-Control (the contract: every response carries Cache-Control: no-store).
"$py" "$repo/tests/openapi/lint.py" "$doc" || { echo "FAIL: contract lint" >&2; exit 1; }

if [[ $check_schemathesis == 1 ]]; then
    if ! "$py" -c "import schemathesis" 2>/dev/null; then
        echo "installing schemathesis"
        "$py" -m pip install --quiet schemathesis
    fi
    echo "== schemathesis $("$py" -c 'from importlib.metadata import version; print(version("schemathesis"))')"
    "$py" "$repo/tests/openapi/st_load.py" "$doc" || { echo "FAIL: schemathesis cannot use $doc" >&2; exit 1; }
fi

echo "OK: $doc is valid"
