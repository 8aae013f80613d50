#!/usr/bin/env python3
"""Start-to-ready times of the Lambda function binaries, under a minimal Lambda Runtime API.

    cold_start.py [--runs N] TARGET_DIR      # e.g. target/release (x86_64 release binaries)

For each function it starts the binary with AWS_LAMBDA_RUNTIME_API pointing at a stub served
here on 127.0.0.1 (GET .../invocation/next hands out one API Gateway v2 event, then holds;
POST .../response records the answer; the Extensions API takes the poll function's
graceful-shutdown extension, as Lambda does) and measures, from exec:
  - ready: the first GET /2018-06-01/runtime/invocation/next (init done: config, store, router);
  - first response: the POST of the response to the first event — GET /v1/health on
    ice-servers, a join on join; the other functions get GET /v1/health too, which they answer
    with 405 after routing (still a full invocation).
Each function runs N times (default 5) with a fresh SQLite file; the median is printed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FUNCTIONS = ["join", "post", "poll", "leave", "ice-servers"]


def event(function):
    if function == "join":
        method, path, body, params = "POST", "/v1/rooms/cold/peers", '{"name":"cold"}', {"room": "cold"}
    else:
        method, path, body, params = "GET", "/v1/health", None, {}
    now = int(time.time() * 1000)
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "stub.example", "content-type": "application/json", "user-agent": "cold-start"},
        "pathParameters": params,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "stub",
            "domainName": "stub.example",
            "domainPrefix": "stub",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "cold-start"},
            "requestId": "cold-start-1",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": now,
        },
        "body": body,
        "isBase64Encoded": False,
    }


class ExtensionsApi:
    """The two Extensions API endpoints a function's internal extension uses, as Lambda answers
    them: POST .../extension/register (answered with an identifier, or with
    `register_status` when that is not 200, or never when it is None), and
    GET .../extension/event/next, held until close() (an extension subscribed to no events
    gets none). A base path before /2020-01-01 (as under `cargo lambda watch`) is accepted."""

    def __init__(self, register_status=200):
        self.register_status = register_status
        self.registrations = []  # (Lambda-Extension-Name, body) of each register request
        self.waiting = threading.Event()  # an event/next was asked for
        self.closed = threading.Event()

    def handle(self, handler):
        """Answers `handler`'s request if it is for the Extensions API; False otherwise."""
        path = handler.path
        if "/2020-01-01/extension/" not in path:
            return False
        if handler.command == "POST" and path.endswith("/extension/register"):
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length).decode(errors="replace")
            self.registrations.append((handler.headers.get("Lambda-Extension-Name"), body))
            if self.register_status is None:
                self.closed.wait(60)
                return True
            handler.send_response(self.register_status)
            if self.register_status == 200:
                handler.send_header("Lambda-Extension-Identifier", f"ext-{len(self.registrations)}")
            handler.send_header("Content-Type", "application/json")
            reply = b'{"functionName":"stub","functionVersion":"$LATEST","handler":"bootstrap"}'
            handler.send_header("Content-Length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
            return True
        if handler.command == "GET" and path.endswith("/extension/event/next"):
            if not handler.headers.get("Lambda-Extension-Identifier"):
                handler.send_response(403)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return True
            self.waiting.set()
            self.closed.wait(600)
            return True
        handler.send_response(404)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True

    def close(self):
        self.closed.set()


class Stub:
    """One run's Runtime API: the first /next gets the event, later ones wait for the end."""

    def __init__(self, payload):
        self.payload = json.dumps(payload).encode()
        self.extensions = ExtensionsApi()
        self.next_at = None
        self.response_at = None
        self.response = None
        self.error = None
        self.done = threading.Event()
        self.nexts = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if stub.extensions.handle(self):
                    return
                if self.path.endswith("/runtime/invocation/next"):
                    stub.nexts += 1
                    if stub.nexts == 1:
                        stub.next_at = time.perf_counter()
                        self.send_response(200)
                        self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-start-1")
                        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                         "arn:aws:lambda:us-east-1:123456789012:function:cold")
                        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(stub.payload)))
                        self.end_headers()
                        self.wfile.write(stub.payload)
                    else:
                        stub.done.wait(30)
                        self.send_response(500)
                        self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_POST(self):
                if stub.extensions.handle(self):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.endswith("/response"):
                    stub.response_at = time.perf_counter()
                    stub.response = json.loads(body)
                else:
                    stub.error = (self.path, body.decode(errors="replace"))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                stub.done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        host, port = self.server.server_address
        return f"{host}:{port}"

    def close(self):
        self.done.set()
        self.extensions.close()
        self.server.shutdown()


def run_once(binary, function):
    stub = Stub(event(function))
    with tempfile.TemporaryDirectory() as directory:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALPOST_", "AWS_"))}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": stub.address,
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
            "SIGNALPOST_SECRET": "cold-start-secret-of-at-least-32-bytes",
            "SIGNALPOST_DB": os.path.join(directory, "signalpost.db"),
            "RUST_LOG": "warn",
        })
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stub.done.wait(30)
        process.kill()
        _, stderr = process.communicate()
        stub.close()
    if stub.error or stub.response is None:
        raise SystemExit(f"{function}: no response ({stub.error}); stderr: {stderr.decode(errors='replace')}")
    return ((stub.next_at - started) * 1000, (stub.response_at - started) * 1000,
            stub.response.get("statusCode"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target_dir")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'function':<12} {'size':>9} {'exec→/next':>11} {'exec→response':>14}  status")
    for function in FUNCTIONS:
        binary = os.path.join(args.target_dir, function)
        runs = [run_once(binary, function) for _ in range(args.runs)]
        ready = statistics.median(r[0] for r in runs)
        responded = statistics.median(r[1] for r in runs)
        size = os.path.getsize(binary)
        print(f"{function:<12} {size / 1e6:>7.2f}MB {ready:>9.1f}ms {responded:>12.1f}ms  {runs[0][2]}")


if __name__ == "__main__":
    sys.exit(main())
