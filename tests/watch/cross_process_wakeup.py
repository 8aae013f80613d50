#!/usr/bin/env python3
"""A post handled by the `post` function wakes a long poll held by the `poll` function.

Under `cargo lambda watch` (as on AWS) they are separate processes that share only the store,
so this is the adaptive store poll of shared/src/wakeup.rs at work, not in-process notify.

    cross_process_wakeup.py BASE_URL      # e.g. http://127.0.0.1:9000

Prints the wait and exits non-zero unless the poll returned the message within 3 s of the post.
"""

import json
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


def main():
    base = sys.argv[1].rstrip("/")
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
        result["elapsed"] = time.monotonic() - started
        result["body"] = body

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.0)  # the poll is waiting in the poll function by now
    sent = time.monotonic()
    status, _ = call("POST", messages, bob["token"], {"to": alice["peer"], "type": "message", "data": "wake"})
    posted = time.monotonic() - sent
    assert status == 202, status
    poller.join(timeout=30)
    delivered = [m for m in result.get("body", {}).get("messages", []) if m.get("data") == "wake"]
    waited = result.get("elapsed", float("inf"))
    print(f"cross-process wake-up: poll returned after {waited:.2f} s (post sent 1.0 s into "
          f"it, answered in {posted * 1000:.0f} ms), message delivered: {bool(delivered)}")
    if not delivered or waited > 4.0:
        print("FAIL: the post in the post function did not wake the poll function's poll", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
