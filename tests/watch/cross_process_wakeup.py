#!/usr/bin/env python3
"""A post handled by the `post` function wakes a long poll held by the `poll` function.

Under `cargo lambda watch` (as on AWS) they are separate processes that share only the store,
so this is the adaptive store poll of shared/src/wakeup.rs at work, not in-process notify.

    cross_process_wakeup.py BASE_URL WATCH_LOG   # e.g. http://127.0.0.1:9000 watch.log

The post is sent once the poll function has logged that the long poll is waiting, after its
first read of the inbox (the watch's output, WATCH_LOG, with `signalpost_shared=debug` for
the functions): an observable event, not a guessed sleep. Prints the wait and exits non-zero unless the poll returned the message
within 3 s of the post.
"""

import json
import os
import sys
import threading
import time
import urllib.request
import uuid


def call(method, url, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=40) as response:
        return response.status, json.loads(response.read() or b"null")


def waiting_polls(log, room):
    """How many polls of `room` the poll function has logged as waiting (shared/src/signalling.rs)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as lines:
            return sum(1 for line in lines if "long poll waiting" in line and room in line)
    except FileNotFoundError:
        return 0


def main():
    base = sys.argv[1].rstrip("/")
    log = sys.argv[2]
    if not os.path.exists(log):
        raise SystemExit(f"no watch log at {log}")
    room = f"wakeup-{uuid.uuid4().hex[:12]}"
    _, alice = call("POST", f"{base}/v1/rooms/{room}/peers", body={"name": "alice"})
    _, bob = call("POST", f"{base}/v1/rooms/{room}/peers", body={"name": "bob"})
    messages = f"{base}/v1/rooms/{room}/messages"
    # Warm both functions first: under watch a function's first call starts its process
    # (`cargo run`), which would be timed here otherwise.
    call("POST", messages, bob["token"], {"to": alice["peer"], "type": "message", "data": "warm-up"})
    _, first = call("GET", f"{messages}?wait=0", alice["token"])
    result = {}

    def poll():
        started = time.monotonic()
        _, body = call("GET", f"{messages}?wait=20&after={first['cursor']}", alice["token"])
        result["ended"] = time.monotonic()
        result["elapsed"] = result["ended"] - started
        result["body"] = body

    poller = threading.Thread(target=poll)
    poller.start()
    # Wait (bounded) until the poll function has read the inbox once and is waiting.
    deadline = time.monotonic() + 30
    while waiting_polls(log, room) < 1:
        if time.monotonic() > deadline or not poller.is_alive():
            raise SystemExit(f"the poll function never logged the long poll waiting in {log}: "
                             "are the functions logging with signalpost_shared=debug?")
        time.sleep(0.01)
    sent = time.monotonic()
    status, _ = call("POST", messages, bob["token"], {"to": alice["peer"], "type": "message", "data": "wake"})
    posted = time.monotonic() - sent
    assert status == 202, status
    poller.join(timeout=30)
    delivered = [m for m in result.get("body", {}).get("messages", []) if m.get("data") == "wake"]
    waited = result.get("elapsed", float("inf"))
    after_post = result["ended"] - sent if "ended" in result else float("inf")
    print(f"cross-process wake-up: poll returned {after_post:.2f} s after the post ({waited:.2f} s "
          f"after it began; the post answered in {posted * 1000:.0f} ms), message delivered: "
          f"{bool(delivered)}")
    if not delivered or after_post > 3.0:
        print("FAIL: the post in the post function did not wake the poll function's poll", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
