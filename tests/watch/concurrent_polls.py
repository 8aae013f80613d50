#!/usr/bin/env python3
"""One `poll` process holding 1,000 waiting long polls, as on Lambda Managed Instances.

    concurrent_polls.py [--polls N] [--woken K] TARGET_DIR   # e.g. target/debug

The poll binary runs with AWS_LAMBDA_MAX_CONCURRENCY=N under a stub Lambda Runtime API served
here (the runtime client then keeps N invocations in flight in the one process), on a SQLite
file it shares with the standalone `signalpost` binary of TARGET_DIR, which takes the joins
and the posts, as the join and post functions would. N peers (rooms of two) each get one
poll event with its own `wait` (6 to 12 s). Two seconds in, K peers get a message each.

Checked:
  - all N invocations are in flight in the poll process at once (the stub hands out every
    event before the first poll could end);
  - each of the K recipients gets exactly its own message, well before its `wait`;
  - every other poll answers empty, no sooner than its `wait` and at most a few seconds
    after it (nothing queues behind anything else);
  - the process's resident memory while holding them, printed (target: at most 150 MB;
    the test fails above --max-rss-mb, default 150).
"""

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import ExtensionsApi, event  # noqa: E402

SECRET = "concurrent-polls-secret-of-at-least-32-bytes"
LATE_SLACK_S = 4.0  # a loaded 2-core machine: how late past its wait an empty poll may end


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Runtime:
    """A Runtime API that hands out queued events to however many workers ask for them."""

    def __init__(self, extensions=None):
        # The poll function registers its graceful-shutdown extension at start-up.
        self.extensions = extensions or ExtensionsApi()
        self.events = queue.Queue()
        self.handed = {}  # request id -> perf_counter when handed out
        self.answers = {}  # request id -> (perf_counter, response document)
        self.errors = []
        self.lock = threading.Lock()
        self.all_answered = threading.Event()
        self.expected = 0
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if runtime.extensions.handle(self):
                    return
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_response(404)
                    self.end_headers()
                    return
                request_id, payload = runtime.events.get()
                body = json.dumps(payload).encode()
                with runtime.lock:
                    runtime.handed[request_id] = time.perf_counter()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:poll")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                if runtime.extensions.handle(self):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request_id = self.path.split("/")[-2]
                now = time.perf_counter()
                with runtime.lock:
                    if self.path.endswith("/response"):
                        runtime.answers[request_id] = (now, json.loads(body))
                    else:
                        runtime.errors.append((self.path, body.decode(errors="replace")))
                    if len(runtime.answers) + len(runtime.errors) >= runtime.expected:
                        runtime.all_answered.set()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 4096  # every worker of the runtime client connects at once

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        host, port = self.server.server_address
        return f"{host}:{port}"

    def in_flight(self):
        with self.lock:
            return len(self.handed) - len(self.answers) - len(self.errors)


def call(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"null")


def poll_event(room, token, cursor, wait, request_id):
    document = event("poll")
    path = f"/v1/rooms/{room}/messages"
    query = f"wait={wait}&after={cursor}"
    document.update({
        "routeKey": f"GET {path}",
        "rawPath": path,
        "rawQueryString": query,
        "queryStringParameters": {"wait": str(wait), "after": cursor},
        "pathParameters": {"room": room},
    })
    document["headers"]["authorization"] = f"Bearer {token}"
    document["requestContext"].update({"requestId": request_id, "routeKey": f"GET {path}"})
    document["requestContext"]["http"].update({"method": "GET", "path": path})
    return document


def wait_for(predicate, seconds, what):
    """Waits, bounded, until predicate(); `what` (a string, or a function giving one at the
    time of failure) says what went wrong otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"FAIL: {what() if callable(what) else what} (waited {seconds} s)")


def start_standalone(target_dir, env):
    """Starts the standalone server with `env` on a free loopback port; returns the process and
    its base URL. Call wait_until_healthy inside the caller's try, so that a server that never
    answers is still stopped."""
    port = free_port()
    server = subprocess.Popen([os.path.join(target_dir, "signalpost")],
                              env={**env, "SIGNALPOST_LISTEN": f"127.0.0.1:{port}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def wait_until_healthy(base):
    def healthy():
        try:
            return call(base, "GET", "/v1/health")[0] == 200
        except OSError:
            return False

    wait_for(healthy, 60, "the standalone server did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target_dir")
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--woken", type=int, default=100)
    parser.add_argument("--max-rss-mb", type=float, default=150.0)
    args = parser.parse_args()
    polls, woken = args.polls, args.woken
    assert polls % 2 == 0 and woken <= polls // 2, "--woken is at most half of --polls"

    runtime = Runtime()
    directory = tempfile.mkdtemp(prefix="concurrent-polls-")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALPOST_", "AWS_"))}
    base_env.update({
        "SIGNALPOST_SECRET": SECRET,
        "SIGNALPOST_DB": os.path.join(directory, "signalpost.db"),
        "SIGNALPOST_RATE_LIMIT": "100000",
        # 1,000 joins from one address: lift the per-client limits (tests/api/limits.rs).
        "SIGNALPOST_JOIN_LIMIT": "off",
        "SIGNALPOST_POLL_LIMIT": "off",
        "SIGNALPOST_POST_LIMIT": "off",
        "SIGNALPOST_MAX_CLIENT_CONNECTIONS": "100000",
        "RUST_LOG": "warn",
    })
    server, base = start_standalone(args.target_dir, base_env)
    poll_env = {**base_env,
                "AWS_LAMBDA_RUNTIME_API": runtime.address,
                "AWS_LAMBDA_FUNCTION_NAME": "poll",
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
                "AWS_LAMBDA_MAX_CONCURRENCY": str(polls)}
    poll = None
    try:
        wait_until_healthy(base)
        # Rooms of two; each peer's first poll (wait 0) takes its backlog (peer-joined), so
        # the held polls start from a cursor with nothing pending.
        peers = []
        for pair in range(polls // 2):
            room = f"lmi-{pair}"
            for _ in range(2):
                _, joined = call(base, "POST", f"/v1/rooms/{room}/peers", {"name": "p"})
                peers.append({"room": room, "peer": joined["peer"], "token": joined["token"]})
        for peer in peers:
            _, body = call(base, "GET", f"/v1/rooms/{peer['room']}/messages?wait=0",
                           token=peer["token"])
            peer["cursor"] = body["cursor"]

        poll = subprocess.Popen([os.path.join(args.target_dir, "poll")], env=poll_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for index, peer in enumerate(peers):
            peer["id"] = f"poll-{index}"
            peer["wait"] = 6 + index % 7  # 6..12 s
            runtime.expected += 1
            runtime.events.put((peer["id"],
                                poll_event(peer["room"], peer["token"], peer["cursor"],
                                           peer["wait"], peer["id"])))
        wait_for(lambda: len(runtime.handed) == polls, 30,
                 lambda: f"the poll process took only {len(runtime.handed)} of {polls} events at once")
        all_handed = time.perf_counter()
        first_handed = min(runtime.handed.values())
        # Every poll is held: none can have ended before the shortest wait.
        assert runtime.in_flight() == polls, f"{runtime.in_flight()} in flight, not {polls}"
        print(f"{polls} polls in flight in one poll process "
              f"(all handed out {all_handed - first_handed:.2f} s after the first)")

        time.sleep(max(0.0, 2.0 - (time.perf_counter() - first_handed)))
        # The other peer of each woken peer's room sends it one message.
        recipients = {}
        for pair in range(woken):
            target, sender = peers[2 * pair], peers[2 * pair + 1]
            status, _ = call(base, "POST", f"/v1/rooms/{sender['room']}/messages",
                             {"to": target["peer"], "type": "message", "data": f"for {target['id']}"},
                             token=sender["token"])
            assert status == 202
            recipients[target["id"]] = time.perf_counter()
        held_rss = rss_kb(poll.pid) / 1024
        print(f"poll process RSS holding {polls} polls: {held_rss:.1f} MB")

        wait_for(runtime.all_answered.is_set, 60, "not every poll answered")
        peak_rss = rss_kb(poll.pid, "VmHWM") / 1024
        assert not runtime.errors, f"invocation errors: {runtime.errors[:3]}"

        failures = []
        late = []
        for peer in peers:
            answered, response = runtime.answers[peer["id"]]
            elapsed = answered - runtime.handed[peer["id"]]
            if response.get("statusCode") != 200:
                failures.append(f"{peer['id']}: status {response.get('statusCode')}")
                continue
            messages = json.loads(response["body"])["messages"]
            if peer["id"] in recipients:
                delay = answered - recipients[peer["id"]]
                if [m.get("data") for m in messages] != [f"for {peer['id']}"]:
                    failures.append(f"{peer['id']}: woken with {messages}")
                elif elapsed >= peer["wait"]:
                    failures.append(f"{peer['id']}: its message came only at its wait ({delay:.1f} s after the post)")
                late.append(delay)
            else:
                if messages:
                    failures.append(f"{peer['id']}: not a recipient but got {messages}")
                if elapsed < peer["wait"] - 0.05:
                    failures.append(f"{peer['id']}: answered after {elapsed:.2f} s, before its wait {peer['wait']} s")
                elif elapsed > peer["wait"] + LATE_SLACK_S:
                    failures.append(f"{peer['id']}: answered after {elapsed:.2f} s, {elapsed - peer['wait']:.2f} s past its wait")
        empty_overrun = sorted(
            runtime.answers[p["id"]][0] - runtime.handed[p["id"]] - p["wait"]
            for p in peers if p["id"] not in recipients)
        late.sort()
        print(f"woken: {len(recipients)} recipients, post → answer median {late[len(late) // 2]:.2f} s, "
              f"max {late[-1]:.2f} s")
        print(f"empty polls: {len(empty_overrun)}, answered after their wait by median "
              f"{empty_overrun[len(empty_overrun) // 2] * 1000:.0f} ms, max {empty_overrun[-1] * 1000:.0f} ms")
        print(f"poll process peak RSS (VmHWM): {peak_rss:.1f} MB (target ≤ {args.max_rss_mb:.0f} MB)")
        if failures:
            print("\n".join(failures[:20]))
            raise SystemExit(f"FAIL: {len(failures)} poll(s) misbehaved")
        if peak_rss > args.max_rss_mb:
            raise SystemExit(f"FAIL: peak RSS {peak_rss:.1f} MB over {args.max_rss_mb} MB")
        print("concurrent polls: ok")
    finally:
        for process in (poll, server):
            if process is not None:
                process.kill()
                process.wait()
        runtime.extensions.close()
        runtime.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
