#!/usr/bin/env bash
# Lints the SAM template and checks that every list of the routes agrees. Exits non-zero on
# any finding. Calls no AWS endpoint and no other service.
#
#   1. cfn-lint on infra/template.yaml (SAM resources against SAM's schema);
#   2. the AWS::Serverless transform run offline (infra/sam_transform.py), and cfn-lint on
#      its output, which checks what CloudFormation will really create (IAM action names,
#      the stage's route settings) where linting the SAM form cannot see;
#   3. checkov on infra/template.yaml (its skip comments live in the template; the generated
#      form is not fed to it, as it would lose them);
#   4. `sam validate --lint`, only if sam is already installed;
#   5. infra/check_routes.py: template, Cargo.toml watch router and shared/openapi.yaml agree,
#      and unknown routes reach the function answering problem+json 404s ($default);
#   6. infra/check_template.py on the transformed template: what makes a first deploy work
#      (CORS block, parameter ranges equal to config.rs, the TURN Rules, poll concurrency) and
#      IAM grants equal to the calls recorded in infra/iam-calls.json;
#   7. infra/test_checks.py: each check of 5 and 6 fails on a copy with its defect.
#
# The tools live in a virtualenv at target/venv-infra (rebuilt by `cargo clean`), pinned so
# that a new linter release cannot break the build without a commit. Findings are fixed or
# justified in infra/template.yaml itself, never silenced here.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/venv-infra"
template="infra/template.yaml"
transformed="target/infra/template.transformed.json"
requirements=(cfn-lint==1.58.0 checkov==3.3.30 aws-sam-translator==1.115.0)
cd "$root"
# sam would otherwise report usage metrics to AWS.
export SAM_CLI_TELEMETRY=0

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv"
    python3 -m venv "$venv"
fi
stamp="$venv/.infra-requirements"
if [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
    echo "installing ${requirements[*]}"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$stamp"
fi

status=0
run() {
    echo "+ $*"
    if ! "$@"; then
        status=1
    fi
}

run "$venv/bin/cfn-lint" "$template"
if "$venv/bin/python" infra/sam_transform.py "$transformed"; then
    run "$venv/bin/cfn-lint" "$transformed"
    run "$venv/bin/python" infra/check_template.py template --transformed "$transformed"
else
    status=1
fi
# --skip-download: checkov otherwise fetches guideline links from its vendor's API.
run "$venv/bin/checkov" -f "$template" --quiet --compact --skip-download
if command -v sam >/dev/null 2>&1; then
    run sam validate --lint --template-file "$template"
else
    echo "sam not installed: skipping sam validate --lint"
fi
run "$venv/bin/python" infra/check_routes.py
run "$venv/bin/python" infra/test_checks.py

if ((status)); then
    echo "infra lint: FAILED"
else
    echo "infra lint: clean"
fi
exit "$status"
