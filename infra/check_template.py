#!/usr/bin/env python3
"""Checks of infra/template.yaml that the linters cannot make: will a first deploy work?

    check_template.py template [--transformed PATH] [--calls infra/iam-calls.json]
    check_template.py record FRESH.json... [--update]

`template` reads the SAM-transformed template (infra/sam_transform.py writes it; that is what
CloudFormation will create) and checks:
  cors        the HTTP API's `x-amazon-apigateway-cors` is an object (not a bare intrinsic that
              SAM made the whole block of) with origins from CorsOrigins, the contract's
              methods and headers, `Retry-After` exposed and a max-age;
  parameters  every Number parameter feeding a SIGNALPOST_ variable has the range and default
              that shared/src/config.rs enforces (read from both files), and every parameter
              has a default its own constraints accept, so a guided deploy can take them all
              (and none is NoEcho, whose default the guided deploy does not offer);
  rules       the template's Rules accept TurnUrls and TurnSecretArn both empty or both set,
              and refuse one without the other (evaluated here for the four cases);
  concurrency the poll function's reserved concurrency comes from a parameter that 0 turns
              off and whose maximum leaves the account's 100 unreserved executions free;
  cloudfront  the opt-in distribution in front of the API (EnableCloudFront, default off):
              HTTP/2 and HTTP/3, caching disabled (the managed CachingDisabled policy on
              every behaviour), every viewer header and query string but Host forwarded
              (AllViewerExceptHostHeader), the contract's methods allowed, an origin read
              timeout of at least MaxWait's maximum + ORIGIN_TIMEOUT_MARGIN s and at most 60,
              and its URL in the outputs;
  iam         each function's IAM policies grant exactly the DynamoDB and Secrets Manager
              actions (and resources, and `dynamodb:LeadingKeys`) recorded in
              infra/iam-calls.json: a grant no function call needs fails, and so does a
              recorded call without a grant. Other services are not recorded, so not compared.

`record` compares fresh recordings (tests/watch/run.sh makes them: the black-box suite through
`cargo lambda watch` on moto behind tests/watch/record_aws.py, and tests/watch/secret_arn.py)
with infra/iam-calls.json: a call not in it fails (the code now needs a permission: add it to
the record with --update and to the template); a recorded call not seen this run is a note
(rare paths such as a stalled writer's gap are not reached by every run).

Prints one line per check and `N passed, M failed`; exits 1 on any failure. Stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS = ROOT / "infra" / "iam-calls.json"
CONFIG_RS = ROOT / "shared" / "src" / "config.rs"

# Lambda keeps this many of the account's concurrent executions unreserved.
UNRESERVED_MINIMUM = 100
# The default account limit of concurrent executions.
DEFAULT_ACCOUNT_LIMIT = 1000
# CloudFront's managed policies (ids as CloudFormation takes them).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
# A distribution's origin read timeout covers the longest poll (MaxWait) plus this: the poll's
# last store read and its response, and API Gateway's own 30 s integration limit, so that the
# API's answer, not a CloudFront 504, reaches the browser.
ORIGIN_TIMEOUT_MARGIN = 10
# CloudFront's longest origin read timeout without a quota raise, and its default.
ORIGIN_TIMEOUT_MAX = 60
ORIGIN_TIMEOUT_DEFAULT = 30
# The services whose calls tests/watch/record_aws.py records; grants of other services (the
# managed logging and tracing policies, or a queue) are not compared with the record.
RECORDED_SERVICES = ("dynamodb:", "secretsmanager:")


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {why}" if why else ""))

    def done(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


# --- cors --------------------------------------------------------------------------------


def check_cors(template: dict, report: Report) -> None:
    apis = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    for api in apis:
        cors = (api["Properties"].get("Body") or {}).get("x-amazon-apigateway-cors")
        if not isinstance(cors, dict) or any(key.startswith("Fn::") for key in cors):
            report.check(False, "cors: x-amazon-apigateway-cors is an object",
                         f"found {json.dumps(cors)[:200]}")
            continue
        lower = lambda values: {str(v).lower() for v in values or []}  # noqa: E731
        problems = []
        if cors.get("allowOrigins") != {"Fn::Split": [",", {"Ref": "CorsOrigins"}]}:
            problems.append(f"allowOrigins is {cors.get('allowOrigins')}, not the CorsOrigins list")
        if not {"get", "post", "delete", "options"} <= lower(cors.get("allowMethods")):
            problems.append(f"allowMethods {cors.get('allowMethods')} lacks GET, POST, DELETE or OPTIONS")
        if not {"authorization", "content-type"} <= lower(cors.get("allowHeaders")):
            problems.append(f"allowHeaders {cors.get('allowHeaders')} lacks authorization or content-type")
        if "retry-after" not in lower(cors.get("exposeHeaders")):
            problems.append("Retry-After is not exposed")
        if not isinstance(cors.get("maxAge"), int) or cors["maxAge"] <= 0:
            problems.append("no maxAge")
        report.check(not problems, "cors: an object with origins, methods, headers, "
                     "Retry-After exposed and max-age", "; ".join(problems))
    if not apis:
        report.check(False, "cors", "no AWS::ApiGatewayV2::Api in the template")


# --- parameters --------------------------------------------------------------------------


def rust_int(expression: str, constants: dict[str, int]) -> int:
    """Evaluates a Rust integer expression of literals, constants, + and *."""
    ops = {ast.Add: operator.add, ast.Mult: operator.mul, ast.Sub: operator.sub}

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return constants[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"cannot evaluate {expression!r}")

    return walk(ast.parse(expression.strip(), mode="eval").body)


def code_ranges(source: str) -> dict[str, tuple[int, int, int]]:
    """SIGNALPOST_ variable -> (default, min, max) from config.rs's `number(...)` calls."""
    constants: dict[str, int] = {}
    for name, value in re.findall(r"const (\w+): u64 = ([^;]+);", source):
        constants[name] = rust_int(value, constants)
    found = {}
    pattern = r'number\(\s*&var,\s*"(SIGNALPOST_\w+)",\s*([^,]+?),\s*([^,]+?)\.\.=([^,)]+?),?\s*\)'
    for name, default, low, high in re.findall(pattern, source, re.S):
        found[name] = tuple(rust_int(v, constants) for v in (default, low, high))
    return found


def parameter_variables(template: dict) -> dict[str, str]:
    """Parameter -> the SIGNALPOST_ variable it feeds (in any function's environment)."""
    fed = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = ((resource["Properties"].get("Environment") or {}).get("Variables")) or {}
        for variable, value in variables.items():
            if isinstance(value, dict) and set(value) == {"Ref"}:
                fed[value["Ref"]] = variable
    return fed


def default_is_valid(spec: dict) -> bool:
    # `sam deploy --guided` asks for a NoEcho parameter without offering its default, and
    # insists on an answer.
    if "Default" not in spec or spec.get("NoEcho") in (True, "true", "True"):
        return False
    default = spec["Default"]
    if "AllowedValues" in spec and str(default) not in {str(v) for v in spec["AllowedValues"]}:
        return False
    if spec["Type"] == "Number":
        number = float(default)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return False
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return False
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], str(default)):
        return False
    return True


def check_parameters(template: dict, config_rs: Path, report: Report) -> None:
    source = config_rs.read_text(encoding="utf-8")
    code = code_ranges(source)
    params = template.get("Parameters") or {}
    fed = parameter_variables(template)
    # The code also wants presence_timeout >= max_wait + N, a comparison of two parameters
    # CloudFormation cannot express: the template takes the floor for the largest MaxWait.
    floor = re.search(r"presence_timeout < max_wait \+ (\d+)", source)
    bad_defaults = [name for name, spec in sorted(params.items()) if not default_is_valid(spec)]
    report.check(not bad_defaults, f"parameters: all {len(params)} have a default their own constraints "
                 "accept (a guided deploy can take every default)", f"not: {bad_defaults}")
    for name, spec in sorted(params.items()):
        variable = fed.get(name)
        if spec["Type"] != "Number" or variable is None:
            continue
        if variable not in code:
            report.check(False, f"parameters: {name} ({variable})", "config.rs reads no such number")
            continue
        default, low, high = code[variable]
        if variable == "SIGNALPOST_PRESENCE_TIMEOUT":
            if floor is None or "SIGNALPOST_MAX_WAIT" not in code:
                report.check(False, f"parameters: {name}", "config.rs's max_wait + N floor not found")
                continue
            low = max(low, code["SIGNALPOST_MAX_WAIT"][2] + int(floor.group(1)))
        found = (int(spec.get("Default", -1)), int(spec.get("MinValue", -1)), int(spec.get("MaxValue", -1)))
        report.check(found == (default, low, high),
                     f"parameters: {name} = {variable}: default {default}, {low}..={high} as config.rs",
                     f"the template has default {found[0]}, {found[1]}..={found[2]} "
                     "(-1: missing)")


# --- rules -------------------------------------------------------------------------------


def evaluate(node, values: dict[str, str]):
    if isinstance(node, dict) and len(node) == 1:
        (fn, args), = node.items()
        if fn == "Ref":
            return values[args]
        if fn == "Fn::Equals":
            return evaluate(args[0], values) == evaluate(args[1], values)
        if fn == "Fn::Not":
            return not evaluate(args[0], values)
        if fn == "Fn::And":
            return all(evaluate(a, values) for a in args)
        if fn == "Fn::Or":
            return any(evaluate(a, values) for a in args)
        raise ValueError(f"cannot evaluate {fn}")
    return node


def rules_accept(template: dict, values: dict[str, str]) -> bool:
    for rule in (template.get("Rules") or {}).values():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], values):
            continue
        if not all(evaluate(a["Assert"], values) for a in rule.get("Assertions", [])):
            return False
    return True


def check_rules(template: dict, report: Report) -> None:
    params = template.get("Parameters") or {}
    values = {name: str(spec.get("Default", "")) for name, spec in params.items()}
    for urls, arn, expected in (
        ("", "", True),
        ("turn:t.example:3478", "", False),
        ("", "arn:aws:secretsmanager:us-east-1:123456789012:secret:turn-AbCdEf", False),
        ("turn:t.example:3478", "arn:aws:secretsmanager:us-east-1:123456789012:secret:turn-AbCdEf", True),
    ):
        case = {**values, "TurnUrls": urls, "TurnSecretArn": arn}
        try:
            accepted = rules_accept(template, case)
        except (KeyError, ValueError) as error:
            report.check(False, "rules: TURN pair", f"cannot evaluate the Rules: {error}")
            return
        label = f"TurnUrls {'set' if urls else 'empty'}, TurnSecretArn {'set' if arn else 'empty'}"
        report.check(accepted == expected,
                     f"rules: {label}: {'accepted' if expected else 'refused before any resource is made'}",
                     f"the Rules {'accept' if accepted else 'refuse'} it")


# --- concurrency -------------------------------------------------------------------------


def deployed_functions(template: dict) -> list[tuple[str, str, dict]]:
    """(binary, logical id, resource) of every AWS::Lambda::Function. A binary may be deployed
    twice: poll on classic Lambda and, under a condition, on Lambda Managed Instances."""
    return [
        (r["Metadata"]["BuildProperties"]["Binary"], logical_id, r)
        for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function"
    ]


def functions(template: dict) -> dict[str, dict]:
    """Binary name -> its classic AWS::Lambda::Function resource (the Managed Instances copy
    of poll reserves no concurrency: its capacity provider bounds it)."""
    return {
        binary: r
        for binary, _, r in deployed_functions(template)
        if r.get("Condition") != "PollOnManagedInstances"
    }


def check_concurrency(template: dict, report: Report) -> None:
    fns = functions(template)
    reserved = fns.get("poll", {}).get("Properties", {}).get("ReservedConcurrentExecutions")
    params = template.get("Parameters") or {}
    conditions = template.get("Conditions") or {}
    ok = (isinstance(reserved, dict) and "Fn::If" in reserved
          and reserved["Fn::If"][2] == {"Ref": "AWS::NoValue"}
          and isinstance(reserved["Fn::If"][1], dict) and "Ref" in reserved["Fn::If"][1])
    if not ok:
        report.check(False, "concurrency: poll reserves concurrency from a parameter",
                     f"ReservedConcurrentExecutions is {reserved}")
        return
    condition, param = reserved["Fn::If"][0], reserved["Fn::If"][1]["Ref"]
    spec = params.get(param, {})
    # Ref of a Number parameter is its text; either spelling of zero compares equal.
    off_at_zero = conditions.get(condition) in (
        {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, zero]}]} for zero in ("0", 0))
    headroom = DEFAULT_ACCOUNT_LIMIT - UNRESERVED_MINIMUM
    report.check(off_at_zero and spec.get("MinValue") == 0,
                 f"concurrency: {param}=0 reserves nothing (accounts too small to reserve any)",
                 f"condition {condition} is {conditions.get(condition)}, MinValue {spec.get('MinValue')}")
    report.check(0 < int(spec.get("MaxValue", 10**9)) <= headroom
                 and 0 < int(spec.get("Default", 0)) <= headroom // 2,
                 f"concurrency: {param} at most {headroom} (the default account limit less the "
                 f"{UNRESERVED_MINIMUM} Lambda keeps unreserved), default {spec.get('Default')} "
                 "leaves half of that to every other function",
                 f"MaxValue {spec.get('MaxValue')}, Default {spec.get('Default')}")
    others = [name for name, r in fns.items() if name != "poll"
              and "ReservedConcurrentExecutions" in r["Properties"]]
    report.check(not others, "concurrency: only poll reserves (the others share the rest)",
                 f"{others} reserve too")


# --- cloudfront --------------------------------------------------------------------------


def check_cloudfront(template: dict, report: Report) -> None:
    resources = template["Resources"]
    distributions = {k: r for k, r in resources.items() if r["Type"] == "AWS::CloudFront::Distribution"}
    if not distributions:
        report.check(False, "cloudfront", "no AWS::CloudFront::Distribution in the template")
        return
    params = template.get("Parameters") or {}
    conditions = template.get("Conditions") or {}
    max_wait = int((params.get("MaxWait") or {}).get("MaxValue", 10**9))
    want_timeout = max_wait + ORIGIN_TIMEOUT_MARGIN
    for name, resource in sorted(distributions.items()):
        condition = conditions.get(resource.get("Condition"), {})
        equals = condition.get("Fn::Equals", [None, None])
        param = next((v["Ref"] for v in equals if isinstance(v, dict) and "Ref" in v), None)
        opt_in = (param is not None and "true" in equals
                  and str((params.get(param) or {}).get("Default")) == "false")
        report.check(opt_in, f"cloudfront: {name} is opt-in (a condition on a parameter that defaults to false)",
                     f"condition {resource.get('Condition')} is {condition}")
        config = resource["Properties"]["DistributionConfig"]
        report.check(config.get("HttpVersion") == "http2and3", f"cloudfront: {name} speaks HTTP/2 and HTTP/3",
                     f"HttpVersion is {config.get('HttpVersion')}")
        behaviours = [config.get("DefaultCacheBehavior") or {}] + list(config.get("CacheBehaviors") or [])
        cached = [b.get("PathPattern", "default") for b in behaviours
                  if b.get("CachePolicyId") != CACHING_DISABLED or "ForwardedValues" in b]
        report.check(not cached, f"cloudfront: {name} caches nothing (CachingDisabled on every behaviour)",
                     f"behaviours {cached} use another cache policy or legacy cache settings")
        unforwarded = [b.get("PathPattern", "default") for b in behaviours
                       if b.get("OriginRequestPolicyId") != ALL_VIEWER_EXCEPT_HOST_HEADER]
        report.check(not unforwarded, f"cloudfront: {name} forwards every viewer header and query string "
                     "but Host (AllViewerExceptHostHeader)", f"behaviours {unforwarded} do not")
        methods = [b.get("PathPattern", "default") for b in behaviours
                   if not {"GET", "POST", "DELETE", "OPTIONS"} <= set(b.get("AllowedMethods") or [])]
        report.check(not methods, f"cloudfront: {name} allows GET, POST, DELETE and OPTIONS",
                     f"behaviours {methods} do not")
        for origin in config.get("Origins") or []:
            custom = origin.get("CustomOriginConfig") or {}
            timeout = int(custom.get("OriginReadTimeout", ORIGIN_TIMEOUT_DEFAULT))
            report.check(want_timeout <= timeout <= ORIGIN_TIMEOUT_MAX,
                         f"cloudfront: {name} origin {origin.get('Id')} read timeout {timeout} s covers the "
                         f"longest poll: MaxWait up to {max_wait} + {ORIGIN_TIMEOUT_MARGIN} s, at most "
                         f"{ORIGIN_TIMEOUT_MAX} s", f"it must be {want_timeout}..={ORIGIN_TIMEOUT_MAX}")
        outputs = [o for o in (template.get("Outputs") or {}).values()
                   if name in json.dumps(o.get("Value"))]
        report.check(bool(outputs), f"cloudfront: {name}'s URL is an output", "no output names it")


# --- iam ---------------------------------------------------------------------------------


def resource_name(resource) -> str:
    if isinstance(resource, dict) and "Ref" in resource:
        return resource["Ref"]
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return resource["Fn::GetAtt"][0]
    return json.dumps(resource)


def unwrap_if(value) -> list:
    """Both branches of an Fn::If (the grant exists in some configuration), without NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [v for branch in value["Fn::If"][1:] for v in unwrap_if(branch)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def granted(template: dict, function: dict) -> dict[tuple[str, str], set[str] | None]:
    """(action, resource) -> the LeadingKeys allowed (None: any key)."""
    role = template["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    grants: dict[tuple[str, str], set[str] | None] = {}
    for policy in role["Properties"].get("Policies", []):
        for policy in unwrap_if(policy):
            for statement in policy["PolicyDocument"]["Statement"]:
                if statement.get("Effect") != "Allow":
                    continue
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                resources = statement["Resource"]
                resources = resources if isinstance(resources, list) else [resources]
                condition = statement.get("Condition") or {}
                keys = (condition.get("ForAllValues:StringEquals") or {}).get("dynamodb:LeadingKeys")
                for action in actions:
                    if not action.startswith(RECORDED_SERVICES):
                        continue
                    for resource in resources:
                        grants[(action, resource_name(resource))] = set(keys) if keys else None
    return grants


def recorded(calls: dict, function: str) -> dict[tuple[str, str], set[str]]:
    """(action, resource) -> partition keys touched, from the record (one table)."""
    out = {}
    for action, touched in (calls.get(function) or {}).items():
        if action.startswith("dynamodb:"):
            out[(action, "Table")] = set(touched)
        else:
            for secret in touched:
                out[(action, secret)] = set()
    return out


def check_iam(template: dict, calls: dict, report: Report) -> None:
    for name, _, function in sorted(deployed_functions(template), key=lambda f: f[:2]):
        # Every deployment of a binary is held to what that binary calls.
        grants = granted(template, function)
        needed = recorded(calls, name)
        unused = sorted(set(grants) - set(needed))
        missing = sorted(set(needed) - set(grants))
        report.check(not unused, f"iam: {name} is granted nothing it never calls",
                     "unused: " + ", ".join(f"{a} on {r}" for a, r in unused))
        report.check(not missing, f"iam: {name} is granted everything it calls",
                     "missing: " + ", ".join(f"{a} on {r}" for a, r in missing))
        for key in sorted(set(grants) & set(needed)):
            allowed = grants[key]
            if allowed is None:
                continue
            outside = sorted(needed[key] - allowed)
            report.check(not outside, f"iam: {name} {key[0]} limited to keys {sorted(allowed)}, "
                         f"called on {sorted(needed[key])}", f"called on keys outside it: {outside}")
    strangers = sorted(set(calls) - set(functions(template)))
    if strangers:
        print(f"note: calls recorded for callers that are no function of the template: {strangers}")


# --- record ------------------------------------------------------------------------------


def merge(*records: dict) -> dict:
    out: dict[str, dict[str, set[str]]] = {}
    for record in records:
        for function, actions in record.items():
            for action, touched in actions.items():
                out.setdefault(function, {}).setdefault(action, set()).update(touched)
    return {f: {a: sorted(t) for a, t in sorted(acts.items())} for f, acts in sorted(out.items())}


def only_functions(record: dict) -> dict:
    """Calls of Lambda functions only (the recorder names other callers `process:...`)."""
    return {f: actions for f, actions in record.items() if not f.startswith(("process:", "unknown"))}


def command_record(fresh_paths: list[Path], calls: Path, update: bool) -> int:
    report = Report()
    committed = json.loads(calls.read_text(encoding="utf-8")) if calls.exists() else {}
    fresh = merge(*(only_functions(json.loads(p.read_text(encoding="utf-8"))) for p in fresh_paths))
    for function, actions in fresh.items():
        for action, touched in actions.items():
            known = set((committed.get(function) or {}).get(action, ["<none>"]))
            new = sorted(set(touched) - known) if "<none>" not in known else sorted(touched) or ["(any)"]
            report.check(not new, f"record: {function} {action} {touched} is in {calls.name}",
                         f"new: {new}; the code now calls it, so grant it in infra/template.yaml "
                         "and add it with `infra/check_template.py record ... --update`")
    for function, actions in committed.items():
        for action in actions:
            if action not in (fresh.get(function) or {}):
                print(f"note: {function} {action} is recorded in {calls.name} but was not called this run")
    if update:
        calls.write_text(json.dumps(merge(committed, fresh), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"updated {calls}")
        return 0
    return report.done()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template")
    t.add_argument("--transformed", type=Path,
                   default=ROOT / "target" / "infra" / "template.transformed.json")
    t.add_argument("--calls", type=Path, default=CALLS)
    t.add_argument("--config", type=Path, default=CONFIG_RS, help="the config.rs to compare with")
    r = sub.add_parser("record")
    r.add_argument("fresh", type=Path, nargs="+")
    r.add_argument("--update", action="store_true", help=f"merge the fresh calls into {CALLS.name}")
    r.add_argument("--calls", type=Path, default=CALLS, help="the record to compare with")
    args = parser.parse_args()

    if args.command == "record":
        return command_record(args.fresh, args.calls, args.update)
    template = json.loads(args.transformed.read_text(encoding="utf-8"))
    report = Report()
    check_cors(template, report)
    check_parameters(template, args.config, report)
    check_rules(template, report)
    check_concurrency(template, report)
    check_cloudfront(template, report)
    check_iam(template, json.loads(args.calls.read_text(encoding="utf-8")), report)
    return report.done()


if __name__ == "__main__":
    sys.exit(main())
