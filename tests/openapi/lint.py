"""Contract checks on shared/openapi.yaml that the OpenAPI meta-schema cannot express.

The routes, which of them need the Bearer token, their status codes and the status -> problem
code table come from the prose contract next to the document, shared/API.md
(contract_md.py reads it), so the two documents cannot drift apart.
"""

import sys
from pathlib import Path

import yaml

from contract_md import read_contract

# Every route answers the CORS preflight OPTIONS, except this extension route.
NO_PREFLIGHT = {"/v1/openapi.yaml"}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def main(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    contract = read_contract(Path(path).with_name("API.md"))
    ROUTES, CODES = contract.routes, contract.codes
    errors = []
    if not ROUTES or not CODES:
        errors.append("API.md: found no routes or no problem codes: has its format changed?")

    def resolve(node, seen=()):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                errors.append(f"unresolvable or cyclic $ref {ref}")
                return {}
            seen = (*seen, ref)
            target = doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    errors.append(f"dangling $ref {ref}")
                    return {}
                target = target[part]
            node = target
        return node

    def walk_refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node)
            for value in node.values():
                walk_refs(value)
        elif isinstance(node, list):
            for value in node:
                walk_refs(value)

    walk_refs(doc)

    def problem_code(schema):
        """The urn:signalpost code a problem schema pins with `const`, if any."""
        schema = resolve(schema)
        for part in schema.get("allOf", []):
            part = resolve(part)
            const = part.get("properties", {}).get("type", {}).get("const")
            if const:
                return const
        return None

    found = set()
    operation_ids = {}
    for route, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {route}"
            if method == "options":
                continue
            found.add((route, method))
            op_id = op.get("operationId")
            if not op_id:
                errors.append(f"{where}: no operationId")
            elif op_id in operation_ids:
                errors.append(f"{where}: operationId {op_id} also used by {operation_ids[op_id]}")
            else:
                operation_ids[op_id] = where
            if "security" not in op:
                errors.append(f"{where}: no explicit security (use [] for none)")
            bearer = any("bearerAuth" in req for req in op.get("security", []))
            if bearer != ((route, method) in contract.bearer):
                errors.append(f"{where}: Bearer in one document, not in the other (API.md heading: ' (Bearer)')")
            for status, response in op.get("responses", {}).items():
                response = resolve(response)
                headers = response.get("headers", {})
                cache = resolve(headers.get("Cache-Control", {}))
                if not cache.get("required") or resolve(cache.get("schema", {})).get("const") != "no-store":
                    errors.append(f"{where} {status}: Cache-Control: no-store not declared as required")
                if status in ("429", "503") and not resolve(headers.get("Retry-After", {})).get("required"):
                    errors.append(f"{where} {status}: Retry-After not declared as required")
                if status[0] in "45":
                    content = response.get("content", {})
                    if list(content) != ["application/problem+json"]:
                        errors.append(f"{where} {status}: error body must be application/problem+json only")
                        continue
                    want = f"urn:signalpost:{CODES.get(status, '?')}"
                    got = problem_code(content["application/problem+json"].get("schema", {}))
                    if got != want:
                        errors.append(f"{where} {status}: problem type {got}, contract says {want}")
            statuses = set(op.get("responses", {}))
            if bearer and "401" not in statuses:
                errors.append(f"{where}: Bearer route without 401")
            if bearer and "{room}" in route and "403" not in statuses:
                errors.append(f"{where}: a token can be used outside its room here, but no 403")
            if "500" not in statuses:
                errors.append(f"{where}: no 500")
        if route not in NO_PREFLIGHT and "options" not in item:
            errors.append(f"{route}: no CORS preflight OPTIONS")

    # The status codes each API.md route section names: every error status it names is
    # declared by one of its operations, and every success status declared is named.
    for section in contract.sections:
        declared = set()
        for route, method in section.routes:
            declared |= set(doc["paths"].get(route, {}).get(method, {}).get("responses", {}))
        for status in sorted(s for s in section.statuses if s[0] in "45" and s not in declared):
            errors.append(f"API.md '{section.title}' names {status}, which its operations do not declare")
        for status in sorted(s for s in declared if s[0] == "2" and s not in section.statuses):
            errors.append(f"{section.title}: success status {status} is not in API.md")

    for route, method in sorted(ROUTES - found):
        errors.append(f"contract route missing: {method.upper()} {route}")
    for route, method in sorted(found - ROUTES):
        errors.append(f"route not in the contract: {method.upper()} {route}")

    problem = resolve(doc["components"]["schemas"]["Problem"])
    enum = set(problem["properties"]["type"]["enum"])
    want = {f"urn:signalpost:{code}" for code in CODES.values()}
    if enum != want:
        errors.append(f"Problem.type enum differs from the contract: {sorted(enum ^ want)}")

    for error in errors:
        print(f"  {error}")
    print(f"== contract lint: {len(found)} operations, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
