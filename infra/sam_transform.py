#!/usr/bin/env python3
"""Runs the AWS::Serverless transform on infra/template.yaml offline, as CloudFormation will.

cfn-lint checks the SAM resources against SAM's schema but no longer runs the transform, so
errors that only the translator reports (a bad event, policy or route setting) would
otherwise surface only at deploy. This uses aws-sam-translator, the library behind that
transform, with the local CodeUri replaced by a placeholder S3 URI the way `sam package`
replaces it. No AWS call is made (the region is a fixed placeholder).

Writes the plain CloudFormation to the path given (default
target/infra/template.transformed.json) so cfn-lint can check the generated resources too.
`--template PATH` transforms another template (infra/test_checks.py feeds it broken copies).
Exits 1 on a translator error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path,
                        default=ROOT / "target" / "infra" / "template.transformed.json")
    parser.add_argument("--template", type=Path, default=ROOT / "infra" / "template.yaml")
    args = parser.parse_args()
    out = args.out
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    from cfnlint.decode import decode
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    template, errors = decode(str(args.template))
    if errors:
        for error in errors:
            print(f"FAIL {error}")
        return 1
    # decode returns str subclasses that remember their line numbers; plain JSON for SAM.
    template = json.loads(json.dumps(template))

    placeholder = "s3://signalpost-artifacts/placeholder.zip"
    if "CodeUri" in template.get("Globals", {}).get("Function", {}):
        template["Globals"]["Function"]["CodeUri"] = placeholder
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = placeholder

    class NoManagedPolicies:
        """The template names no managed policies by name, so none need looking up."""

        def load(self):
            return {}

    try:
        result = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"FAIL SAM transform: {cause.message}")
        return 1

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    types: dict[str, int] = {}
    for resource in result["Resources"].values():
        types[resource["Type"]] = types.get(resource["Type"], 0) + 1
    summary = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    print(f"SAM transform ok: {summary}")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
