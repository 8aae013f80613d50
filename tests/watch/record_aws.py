#!/usr/bin/env python3
"""A recording proxy for AWS JSON APIs (DynamoDB, Secrets Manager) on loopback.

    record_aws.py UPSTREAM OUT.json [--port-file FILE]

Listens on a free 127.0.0.1 port (written to --port-file when given), forwards every request
unchanged to UPSTREAM (a moto server) and records, per calling Lambda function, which actions
it called and on what:
  - DynamoDB: the action (TransactWriteItems is split into the per-item actions IAM
    authorizes it by: PutItem, UpdateItem, DeleteItem, ConditionCheckItem) and the kinds of
    partition keys it touched (`ROOM#*`, `INBOX#*`, ...; a key without `#`, such as `HEALTH`,
    as itself), which is what a `dynamodb:LeadingKeys` condition would have to allow;
  - Secrets Manager: the action and the secret id.
The caller is found from the connection: the process owning the client end of the socket
(/proc/net/tcp and /proc/PID/fd), and its AWS_LAMBDA_FUNCTION_NAME, which the Lambda runtime
(and `cargo lambda watch`) give every function. Other callers are recorded under their
executable's name. OUT.json is rewritten after every new observation, so it is complete
whenever the proxy is stopped; infra/check_template.py compares it with the template's IAM
policies.

It can also stall a writer, so that paths only a slow or dying writer reaches are exercised
(and recorded) too: `POST /_record/hold` with `{"action": "PutItem", "key": "INBOX#*",
"ms": 3500}` holds the next matching request that long before forwarding it
(tests/watch/stalled_writer.py uses it); `GET /_record/calls` answers the record so far.
Stdlib only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


class Recorder:
    """function -> "service:Action" -> sorted list of what it touched."""

    def __init__(self, path: str):
        self.path = path
        self.calls: dict[str, dict[str, set[str]]] = {}
        self.lock = threading.Lock()

    def add(self, function: str, action: str, touched: set[str]) -> None:
        with self.lock:
            actions = self.calls.setdefault(function, {})
            if action in actions and touched <= actions[action]:
                return
            actions.setdefault(action, set()).update(touched)
            data = {
                fn: {act: sorted(things) for act, things in sorted(actions.items())}
                for fn, actions in sorted(self.calls.items())
            }
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)


def socket_inode(client_port: int, server_port: int) -> str | None:
    """The inode of the loopback socket whose local port is the client's."""
    want_local = f":{client_port:04X}"
    want_remote = f":{server_port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                        return fields[9]
        except OSError:
            continue
    return None


def owner_of(inode: str) -> str | None:
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return pid
        except OSError:
            continue
    return None


def function_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for entry in f.read().split(b"\0"):
                if entry.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
                    return entry.split(b"=", 1)[1].decode()
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return "process:" + f.read().strip()
    except OSError:
        return "unknown"


def key_kind(value) -> str | None:
    """The kind of a `pk` attribute value, as a `dynamodb:LeadingKeys` pattern would name it:
    `ROOM#r1` -> `ROOM#*`; a key without `#` (`HEALTH`) stands for itself."""
    if isinstance(value, dict) and isinstance(value.get("S"), str):
        kind, hash_sign, _ = value["S"].partition("#")
        return kind + hash_sign + ("*" if hash_sign else "")
    return None


def dynamodb_calls(action: str, body: dict) -> list[tuple[str, set[str]]]:
    """(IAM action, partition-key kinds) of one DynamoDB request."""
    if action == "TransactWriteItems":
        calls = []
        for item in body.get("TransactItems", []):
            for kind, iam_action in TRANSACT_ITEM_ACTIONS.items():
                if kind in item:
                    part = item[kind]
                    pk = (part.get("Key") or part.get("Item") or {}).get("pk")
                    calls.append((iam_action, {k for k in [key_kind(pk)] if k}))
        return calls
    touched = set()
    pk = (body.get("Key") or body.get("Item") or {}).get("pk")
    if key_kind(pk):
        touched.add(key_kind(pk))
    if action == "Query":
        # `pk = :pk`, with the value among the expression attribute values.
        names = body.get("ExpressionAttributeNames") or {}
        expression = body.get("KeyConditionExpression") or ""
        for placeholder, value in (body.get("ExpressionAttributeValues") or {}).items():
            for name in [n for n, a in names.items() if a == "pk"] + ["pk"]:
                if re.search(rf"(^|\W){re.escape(name)}\s*=\s*{re.escape(placeholder)}(\W|$)", expression):
                    if key_kind(value):
                        touched.add(key_kind(value))
    return [(action, touched)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream")
    parser.add_argument("out")
    parser.add_argument("--port-file")
    args = parser.parse_args()

    upstream = urllib.parse.urlsplit(args.upstream)
    recorder = Recorder(args.out)
    holds: list[dict] = []  # {"action", "key", "ms"}: each holds one matching request
    holds_lock = threading.Lock()

    def take_hold(action: str, touched: set[str]) -> float:
        with holds_lock:
            for hold in holds:
                if hold["action"] == action and hold["key"] in touched:
                    holds.remove(hold)
                    return hold["ms"] / 1000
        return 0.0
    owners: dict[tuple[str, int], str] = {}
    owners_lock = threading.Lock()

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm on, the client's
        # delayed ACK would hold every response on a kept-alive connection for ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def caller(self) -> str:
            client = self.client_address
            with owners_lock:
                known = owners.get(client)
            if known is None:
                inode = socket_inode(client[1], self.server.server_address[1])
                pid = owner_of(inode) if inode else None
                known = function_of(pid) if pid else "unknown"
                with owners_lock:
                    owners[client] = known
            return known

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/_record/calls":
                with recorder.lock:
                    data = json.dumps({f: {a: sorted(t) for a, t in acts.items()}
                                       for f, acts in recorder.calls.items()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if self.path == "/_record/hold":
                with holds_lock:
                    holds.append(json.loads(body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = self.headers.get("X-Amz-Target") or ""
            service, _, action = target.partition(".")
            hold = 0.0
            if action:
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    request = {}
                function = self.caller()
                if service.startswith("DynamoDB_"):
                    for iam_action, touched in dynamodb_calls(action, request):
                        recorder.add(function, f"dynamodb:{iam_action}", touched)
                        hold = hold or take_hold(iam_action, touched)
                elif service == "secretsmanager":
                    secret = request.get("SecretId")
                    recorder.add(function, f"secretsmanager:{action}", {secret} if secret else set())
                else:
                    recorder.add(function, f"{service}:{action}", set())
            if hold:
                time.sleep(hold)
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    if args.port_file:
        with open(args.port_file + ".tmp", "w", encoding="ascii") as f:
            f.write(str(server.server_address[1]))
        os.replace(args.port_file + ".tmp", args.port_file)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("{}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
