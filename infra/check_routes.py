#!/usr/bin/env python3
"""Checks that every place listing the HTTP routes agrees on routes, methods and functions.

Sources compared, route by route:
  contract   the routes of shared/API.md, hard-coded below (with the function serving each)
  template   the HttpApi events of infra/template.yaml (function = its Metadata Binary)
  router     [workspace.metadata.lambda.watch.router] in the root Cargo.toml
  openapi    paths and methods of shared/openapi.yaml, when that file exists (it names no
             functions, so only route and method are compared)

Every contract route must appear in every source with the same function; a route found in
any source but not in the contract fails too. Not failures, but printed as notes:
  - OPTIONS operations in the OpenAPI document (preflight is answered by API Gateway's CORS
    configuration in the cloud, and by the ice-servers function's CORS layer under
    `cargo lambda watch --disable-cors`, never by a route of the contract);
  - OpenAPI operations marked `x-signalpost-extension: true` that neither the template nor
    the router serves (standalone-only extensions);
The API Gateway catch-all (`$default`) is checked as one more item: the template and the
router must both have one (without it API Gateway answers unknown routes with its own
`{"message":"Not Found"}`, and watch with its own body, not the contract's problem+json 404),
and both must go to the function that answers unknown routes.

Prints one line per checked item and ends with `N passed, M failed`; exits 1 on any failure.
Stdlib only; uses PyYAML when it is importable (the lint virtualenv has it) and a small
indentation-based reader otherwise. `--no-yaml` forces the reader (to test it).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# shared/API.md, "Routes": (method, path) -> function (binary name).
CONTRACT: dict[tuple[str, str], str] = {
    ("POST", "/v1/rooms/{room}/peers"): "join",
    ("POST", "/v1/rooms/{room}/messages"): "post",
    ("GET", "/v1/rooms/{room}/messages"): "poll",
    ("DELETE", "/v1/rooms/{room}/peers/{peer}"): "leave",
    ("POST", "/v1/rooms/{room}/peers/{peer}/leave"): "leave",
    ("GET", "/v1/ice-servers"): "ice-servers",
    ("GET", "/v1/health"): "ice-servers",
}
# The function that answers unknown routes with the contract's problem+json 404.
CATCH_ALL_FUNCTION = "ice-servers"
CATCH_ALL = ("ANY", "$default")

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@dataclass
class Source:
    """Routes of one source: (method, path) -> function, or None where it names none."""

    name: str
    routes: dict[tuple[str, str], str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    names_functions: bool = True

    def add(self, method: str, path: str, function: str | None) -> None:
        key = (method.upper(), normalize_path(path))
        if key in self.routes and self.routes[key] != function:
            self.errors.append(f"{self.name}: {key[0]} {key[1]} listed twice")
        self.routes[key] = function


def normalize_path(path: str) -> str:
    """One spelling for greedy parameters: API Gateway `{proxy+}`, matchit `{*rest}`."""
    if path in ("$default", "/$default"):
        return "$default"
    path = re.sub(r"\{\*[^}]*\}", "{*}", path)
    return re.sub(r"\{[^}]*\+\}", "{*}", path)


def is_catch_all(key: tuple[str, str]) -> bool:
    return key[1] == "$default" or key[1] in ("/{*}", "{*}")


# --- YAML --------------------------------------------------------------------------------


def load_yaml(path: Path, use_yaml: bool):
    """PyYAML with CloudFormation's short tags (!Ref, !Sub, ...) kept as plain values."""
    if not use_yaml:
        return None
    try:
        import yaml
    except ImportError:
        return None

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)


def yaml_lines(path: Path):
    """(indent, key, value) for each `key: value` line; comments and blanks skipped."""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"^( *)(-\s+)?(['\"]?)([^'\":#][^:]*?|\$default)\3:(?:\s+(.*?))?\s*(?:#.*)?$", raw)
        if not m:
            continue
        indent = len(m.group(1)) + (len(m.group(2)) if m.group(2) else 0)
        value = (m.group(5) or "").strip().strip("'\"")
        yield indent, m.group(4).strip(), value


# --- template.yaml -----------------------------------------------------------------------


def read_template(path: Path, use_yaml: bool) -> Source:
    src = Source("template")
    doc = load_yaml(path, use_yaml)
    if doc is not None:
        for logical_id, res in (doc.get("Resources") or {}).items():
            if res.get("Type") != "AWS::Serverless::Function":
                continue
            binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
            events = (res.get("Properties") or {}).get("Events") or {}
            for event in events.values():
                if event.get("Type") != "HttpApi":
                    continue
                props = event.get("Properties") or {}
                add_template_event(src, logical_id, binary, props.get("Method"), props.get("Path"))
        return src

    # Indentation reader: Resources at 0, a resource at 2, its Type/Metadata/Properties at 4.
    section = None
    resource = rtype = binary = None
    events: list[dict[str, str]] = []
    in_events = False
    events_indent = 0

    def flush():
        if rtype == "AWS::Serverless::Function":
            for ev in events:
                if ev.get("Type") == "HttpApi":
                    add_template_event(src, resource, binary, ev.get("Method"), ev.get("Path"))

    for indent, key, value in yaml_lines(path):
        if indent == 0:
            section = key
            continue
        if section != "Resources":
            continue
        if indent == 2:
            flush()
            resource, rtype, binary, events, in_events = key, None, None, [], False
            continue
        if indent == 4 and key == "Type":
            rtype = value
        elif key == "Binary":
            binary = value
        elif key == "Events" and indent == 6:
            in_events, events_indent = True, indent
        elif in_events and indent <= events_indent:
            in_events = False
        if in_events and indent == events_indent + 2:
            events.append({})
        elif in_events and events and key in ("Type", "Method", "Path") and value:
            events[-1][key] = value
    flush()
    return src


def add_template_event(src: Source, logical_id, binary, method, path) -> None:
    if not binary:
        src.errors.append(f"template: {logical_id} has no Metadata.BuildProperties.Binary")
        return
    # SAM: an HttpApi event without Path/Method is the $default route for any method.
    src.add(str(method or "ANY"), str(path or "$default"), str(binary))


# --- Cargo.toml --------------------------------------------------------------------------


def read_router(path: Path) -> Source:
    src = Source("router")
    with path.open("rb") as f:
        cargo = tomllib.load(f)
    router = cargo.get("workspace", {}).get("metadata", {}).get("lambda", {}).get("watch", {})
    router = router.get("router")
    if not isinstance(router, dict):
        src.errors.append(f"router: no [workspace.metadata.lambda.watch.router] in {path}")
        return src
    for route_path, targets in router.items():
        if isinstance(targets, str):  # "/path" = "function": every method
            src.add("ANY", route_path, targets)
            continue
        for target in targets:
            src.add(str(target.get("method", "ANY")), route_path, target.get("function"))
    return src


# --- openapi.yaml ------------------------------------------------------------------------


def read_openapi(path: Path, use_yaml: bool) -> Source:
    src = Source("openapi", names_functions=False)
    doc = load_yaml(path, use_yaml)
    operations: list[tuple[str, str, bool]] = []  # (method, path, is_extension)
    prefix = ""
    if doc is not None:
        for server in doc.get("servers") or []:
            url = str(server.get("url", ""))
            if url.rstrip("/").endswith("/v1"):
                prefix = "/v1"
        for route_path, item in (doc.get("paths") or {}).items():
            for method, op in (item or {}).items():
                if method in HTTP_METHODS:
                    ext = isinstance(op, dict) and op.get("x-signalpost-extension") is True
                    operations.append((method, route_path, ext))
    else:
        section = None
        current_path = None
        for indent, key, value in yaml_lines(path):
            if indent == 0:
                section = key
                continue
            if section == "servers" and key == "url" and value.rstrip("/").endswith("/v1"):
                prefix = "/v1"
            if section != "paths":
                continue
            if indent == 2:
                current_path = key
            elif indent == 4 and current_path and key in HTTP_METHODS:
                operations.append((key, current_path, False))
            elif indent == 6 and key == "x-signalpost-extension" and value == "true" and operations:
                m, p, _ = operations[-1]
                operations[-1] = (m, p, True)

    for method, route_path, ext in operations:
        if prefix and not route_path.startswith("/v1"):
            route_path = prefix + route_path
        if method == "options":
            continue
        src.add(method, route_path, None)
        if ext:
            src.notes.append(f"{method.upper()} {route_path}")
    if any(m == "options" for m, _, _ in operations):
        src.notes.insert(0, "OPTIONS")
    return src


# --- comparison --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=ROOT / "infra" / "template.yaml")
    parser.add_argument("--cargo", type=Path, default=ROOT / "Cargo.toml")
    parser.add_argument("--openapi", type=Path, default=ROOT / "shared" / "openapi.yaml")
    parser.add_argument("--no-yaml", action="store_true", help="do not use PyYAML")
    args = parser.parse_args()
    use_yaml = not args.no_yaml

    sources = [read_template(args.template, use_yaml), read_router(args.cargo)]
    openapi = None
    if args.openapi.exists():
        openapi = read_openapi(args.openapi, use_yaml)
        sources.append(openapi)
    else:
        print(f"note: {args.openapi.relative_to(ROOT) if args.openapi.is_relative_to(ROOT) else args.openapi}"
              " does not exist yet; checking against the contract table only")

    passed = failed = 0
    for src in sources:
        for error in src.errors:
            print(f"FAIL {error}")
            failed += 1

    extensions = set()
    if openapi is not None:
        for note in openapi.notes:
            if note == "OPTIONS":
                print("note: openapi OPTIONS operations skipped: preflight is answered by API Gateway's "
                      "CORS configuration in the cloud, never by a route of the contract")
            else:
                method, route_path = note.split(" ", 1)
                extensions.add((method, normalize_path(route_path)))

    keys = set(CONTRACT)
    for src in sources:
        keys.update(src.routes)
    label = "  ".join(s.name for s in sources)

    def sort_key(key):
        return (is_catch_all(key), key[1], key[0])

    mirrored = 0
    router = next(s for s in sources if s.name == "router")

    for key in sorted(keys, key=sort_key):
        method, route_path = key
        if is_catch_all(key):
            continue
        problems = []
        expected = CONTRACT.get(key)
        if expected is None:
            only_router = [s.name for s in sources if key in s.routes] == [router.name]
            if only_router and router.routes[key] == CATCH_ALL_FUNCTION:
                # Watch matches a path before its method and has no fallback to "{*rest}", so
                # the router sends a known path's other methods to the catch-all function
                # explicitly, for its 405 problem document (and OPTIONS, for our CORS layer):
                # the local mirror of API Gateway's $default, not a route of the contract.
                mirrored += 1
                continue
            served = [s for s in sources if s.names_functions and key in s.routes]
            if key in extensions and not served:
                print(f"note: {method} {route_path}: extension in openapi, not served on Lambda "
                      "(standalone only)")
                continue
            problems.append("not in the contract (shared/API.md)")
            expected = next((s.routes[key] for s in served), None)
        for src in sources:
            if key not in src.routes:
                problems.append(f"missing in {src.name}")
            elif src.names_functions and src.routes[key] != expected:
                problems.append(f"{src.name} routes it to {src.routes[key]}, expected {expected}")
        if problems:
            failed += 1
            print(f"FAIL {method:<6} {route_path} -> {expected or '?'}: " + "; ".join(problems))
        else:
            passed += 1
            print(f"ok   {method:<6} {route_path} -> {expected}  [{label}]")

    # The catch-all: the template's $default and the router's {*rest}, both required.
    template, router = sources[0], sources[1]
    t_catch = {k: v for k, v in template.routes.items() if is_catch_all(k)}
    r_catch = {k: v for k, v in router.routes.items() if is_catch_all(k)}
    problems = []
    if not t_catch:
        problems.append("the template has no $default route (an HttpApi event with Path $default, "
                        "Method ANY): API Gateway would answer unknown routes with its own 404 body")
    if not r_catch:
        problems.append("the router has no catch-all (\"/{*rest}\"): watch would answer unknown "
                        "routes with its own 404 body")
    if set(t_catch) - {CATCH_ALL}:
        problems.append("template catch-all must be the HttpApi event Path $default, Method ANY, "
                        f"found {sorted(t_catch)}")
    for name, found in (("template", t_catch), ("router", r_catch)):
        for k, fn in found.items():
            if fn != CATCH_ALL_FUNCTION:
                problems.append(f"{name} routes {k[0]} {k[1]} to {fn}, expected {CATCH_ALL_FUNCTION}")
    where = " ".join(n for n, f in (("template", t_catch), ("router", r_catch)) if f)
    if problems:
        failed += 1
        print(f"FAIL catch-all -> {CATCH_ALL_FUNCTION}: " + "; ".join(problems))
    else:
        passed += 1
        print(f"ok   catch-all (unknown routes) -> {CATCH_ALL_FUNCTION}  [{where}]")

    if mirrored:
        print(f"note: {mirrored} router entries send a known path's other methods to "
              f"{CATCH_ALL_FUNCTION}, mirroring API Gateway's $default for cargo lambda watch")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
