#!/usr/bin/env python3
"""Tests of the template checks: each must fail on the defect it exists for.

    test_checks.py          # in the lint virtualenv (infra/lint.sh runs it)

For each case, a copy of infra/template.yaml (or of shared/src/config.rs, or of the call
record) gets one defect, goes through the SAM transform like the real one, and the checker
that guards against that defect must exit 1 with the expected FAIL line. The unchanged files
must pass. Prints one line per case and `N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "infra" / "template.yaml").read_text(encoding="utf-8")
CONFIG_RS = (ROOT / "shared" / "src" / "config.rs").read_text(encoding="utf-8")
CALLS = json.loads((ROOT / "infra" / "iam-calls.json").read_text(encoding="utf-8"))


def replaced(text: str, old: str, new: str, regex: bool = False) -> str:
    result = re.sub(old, new, text, count=1, flags=re.S) if regex else text.replace(old, new, 1)
    if result == text:
        raise SystemExit(f"test_checks: the mutation found nothing to change: {old[:80]!r}")
    return result


def without_catch_all(t: str) -> str:
    return replaced(t, r"\n        CatchAll:\n.*?Path: \$default\n", "\n", regex=True)


def cors_configuration(t: str) -> str:
    # The defect this issue found: CorsConfiguration with an intrinsic in AllowOrigins.
    return replaced(t, r"      DefinitionBody:\n.*?maxAge: 7200\n", """      CorsConfiguration:
        AllowOrigins: !Split [",", !Ref CorsOrigins]
        AllowMethods: [GET, POST, DELETE, OPTIONS]
        AllowHeaders: [authorization, content-type]
        ExposeHeaders: [retry-after]
        MaxAge: 7200
""", regex=True)


def poll_function(t: str, old: str, new: str) -> str:
    start = t.index("  PollFunction:")
    end = t.index("  LeaveFunction:")
    return t[:start] + replaced(t[start:end], old, new) + t[end:]


def function(t: str, name: str, old: str, new: str) -> str:
    start = t.index(f"  {name}:\n")
    end = t.index("\n  ", t.index("Events:", start))
    return t[:start] + replaced(t[start:end], old, new) + t[end:]


# (name, template mutation, config.rs mutation, calls mutation, checker, expected FAIL prefix)
CASES = [
    ("the $default route deleted", without_catch_all, None, None, "routes", "FAIL catch-all"),
    ("CORS by CorsConfiguration with !Split origins", cors_configuration, None, None, "template",
     "FAIL cors"),
    ("MaxPeers up to 64 (the code refuses more than 25)",
     lambda t: replaced(t, "    MaxValue: 25\n", "    MaxValue: 64\n"), None, None, "template",
     "FAIL parameters: MaxPeers"),
    ("MessageTtl without a maximum", lambda t: replaced(t, "    MaxValue: 604800\n", "", ), None, None,
     "template", "FAIL parameters: MessageTtl"),
    ("config.rs lowers the room capacity", None,
     lambda c: replaced(c, "MAX_ROOM_CAPACITY: u64 = 25", "MAX_ROOM_CAPACITY: u64 = 20"), None, "template",
     "FAIL parameters: MaxPeers"),
    ("a NoEcho parameter (as TurnSecret was: the guided deploy insists on a value)",
     lambda t: replaced(t, '  TurnSecretArn:\n    Type: String\n    Default: ""\n',
                        '  TurnSecretArn:\n    Type: String\n    Default: ""\n    NoEcho: true\n'),
     None, None, "template", "FAIL parameters: all"),
    ("a parameter without a default",
     lambda t: replaced(t, '  StunUrls:\n    Type: String\n    Default: ""\n', "  StunUrls:\n    Type: String\n"),
     None, None, "template", "FAIL parameters: all"),
    ("no Rules tying TurnUrls to TurnSecretArn",
     lambda t: replaced(t, r"\nRules:\n.*?\nConditions:", "\nConditions:", regex=True), None, None,
     "template", "FAIL rules: TurnUrls set, TurnSecretArn empty"),
    ("poll without reserved concurrency",
     lambda t: poll_function(t, "      ReservedConcurrentExecutions: !If\n        - PollConcurrencyReserved\n"
                                "        - !Ref PollReservedConcurrency\n        - !Ref AWS::NoValue\n", ""),
     None, None, "template", "FAIL concurrency"),
    ("join granted ConditionCheckItem it never calls",
     lambda t: function(t, "JoinFunction", "                - dynamodb:Query\n",
                        "                - dynamodb:Query\n                - dynamodb:ConditionCheckItem\n"),
     None, None, "template", "FAIL iam: join is granted nothing it never calls"),
    ("poll not granted the Query it calls",
     lambda t: function(t, "PollFunction", "                - dynamodb:Query\n", ""),
     None, None, "template", "FAIL iam: poll is granted everything it calls"),
    ("health allowed only DescribeTable, as before (it calls GetItem)",
     lambda t: replaced(t, "              Action: dynamodb:GetItem\n              Resource: !GetAtt Table.Arn\n"
                           "              Condition:\n                ForAllValues:StringEquals:\n"
                           "                  dynamodb:LeadingKeys: [HEALTH]\n",
                        "              Action: dynamodb:DescribeTable\n              Resource: !GetAtt Table.Arn\n"),
     None, None, "template", "FAIL iam: ice-servers is granted everything it calls"),
    ("health's GetItem limited to another partition",
     lambda t: replaced(t, "dynamodb:LeadingKeys: [HEALTH]", "dynamodb:LeadingKeys: [ROOM]"),
     None, None, "template", "FAIL iam: ice-servers dynamodb:GetItem limited"),
    ("ice-servers without the TURN secret grant",
     lambda t: replaced(t, "        - !If [HasTurnSecret, {Statement: [{Sid: ReadTurnSecret, Effect: Allow, "
                           "Action: secretsmanager:GetSecretValue, Resource: !Ref TurnSecretArn}]}, "
                           "!Ref AWS::NoValue]\n", ""),
     None, None, "template", "FAIL iam: ice-servers is granted everything it calls"),
    ("the distribution's origin read timeout at CloudFront's default 30 s (a 25 s poll has no margin)",
     lambda t: replaced(t, "OriginReadTimeout: 35", "OriginReadTimeout: 30"), None, None, "template",
     "FAIL cloudfront: Distribution origin http-api read timeout 30 s"),
    ("the distribution without an origin read timeout (CloudFront's default 30 s)",
     lambda t: replaced(t, "              OriginReadTimeout: 35\n", ""), None, None, "template",
     "FAIL cloudfront: Distribution origin http-api read timeout 30 s"),
    ("the distribution caching (managed CachingOptimized)",
     lambda t: replaced(t, "CachePolicyId: 4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
                        "CachePolicyId: 658327ea-f89d-4fab-a63d-7e88639e58f6"), None, None, "template",
     "FAIL cloudfront: Distribution caches nothing"),
    ("the distribution forwarding Host (managed AllViewer: API Gateway would not route it)",
     lambda t: replaced(t, "OriginRequestPolicyId: b689b0a8-53d0-40ab-baf2-68738e2966ac",
                        "OriginRequestPolicyId: 216adef6-5c7f-47e4-b989-5492eafa07d3"), None, None, "template",
     "FAIL cloudfront: Distribution forwards every viewer header"),
    ("the distribution on by default",
     lambda t: replaced(t, '  EnableCloudFront:\n    Type: String\n    Default: "false"',
                        '  EnableCloudFront:\n    Type: String\n    Default: "true"'), None, None, "template",
     "FAIL cloudfront: Distribution is opt-in"),
    ("a call the record does not hold", None, None,
     lambda calls: {**calls, "leave": {**calls.get("leave", {}), "dynamodb:Scan": ["ROOM#*"]}},
     "record", "FAIL record: leave dynamodb:Scan"),
]


def run(cmd: list[str]) -> tuple[int, str]:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


def check(directory: Path, template: str, config_rs: str, calls: dict, checker: str) -> tuple[int, str]:
    template_path = directory / "template.yaml"
    config_path = directory / "config.rs"
    calls_path = directory / "iam-calls.json"
    template_path.write_text(template, encoding="utf-8")
    config_path.write_text(config_rs, encoding="utf-8")
    calls_path.write_text(json.dumps(calls), encoding="utf-8")
    python = sys.executable
    if checker == "routes":
        return run([python, "infra/check_routes.py", "--template", str(template_path)])
    if checker == "record":
        # The fresh record (mutated) against the committed one.
        return run([python, "infra/check_template.py", "record", str(calls_path)])
    transformed = directory / "transformed.json"
    status, output = run([python, "infra/sam_transform.py", str(transformed), "--template", str(template_path)])
    if status:
        return status, output
    return run([python, "infra/check_template.py", "template", "--transformed", str(transformed),
                "--config", str(config_path), "--calls", str((ROOT / "infra" / "iam-calls.json"))])


def main() -> int:
    passed = failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for checker in ("routes", "template", "record"):
            status, output = check(directory, TEMPLATE, CONFIG_RS, CALLS, checker)
            if status == 0:
                passed += 1
                print(f"ok   the unchanged files pass the {checker} check")
            else:
                failed += 1
                print(f"FAIL the unchanged files fail the {checker} check:\n{output}")
        for name, mutate_template, mutate_config, mutate_calls, checker, expected in CASES:
            template = mutate_template(TEMPLATE) if mutate_template else TEMPLATE
            config_rs = mutate_config(CONFIG_RS) if mutate_config else CONFIG_RS
            calls = mutate_calls(CALLS) if mutate_calls else CALLS
            status, output = check(directory, template, config_rs, calls, checker)
            lines = [line for line in output.splitlines() if line.startswith(expected)]
            if status == 1 and lines:
                passed += 1
                print(f"ok   {name}: {lines[0][:150]}")
            else:
                failed += 1
                print(f"FAIL {name}: the {checker} check exited {status} without `{expected}`:\n{output[-2000:]}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
