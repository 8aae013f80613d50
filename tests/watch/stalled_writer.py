#!/usr/bin/env python3
"""A stalled writer through the Lambda functions: a poll skips past it, nothing is lost.

    stalled_writer.py BASE_URL RECORDER_URL    # a watch on DynamoDB, whose functions reach
                                               # moto through tests/watch/record_aws.py

Alice, bob and carol join. The recorder holds alice's post to bob in its inbox write (after
its sequence number is allocated) for 2.8 s, under the SDK's 3 s operation timeout. Carol
posts to bob meanwhile, and her message lands after the hole alice's left. Bob's poll finds
the gap, asks how old the allocation is (a GetItem of bob's member item), and once it is
older than the gap timeout (2 s) writes a tombstone over it; alice's late commit then fails
its condition, and she allocates afresh and retries. (If bob's poll is slower than alice, her
commit simply fills the hole.) Checks that both posts are accepted, both messages are
delivered exactly once, and that the poll function called GetItem: this is the path that
needs it, so the IAM record (infra/iam-calls.json) holds it from a run, not from reading the
code.
"""

import json
import os
import sys
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cross_process_wakeup import call  # noqa: E402


def main():
    base, recorder = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    room = f"stall-{uuid.uuid4().hex[:12]}"
    peers = {name: call("POST", f"{base}/v1/rooms/{room}/peers", body={"name": name})[1]
             for name in ("bob", "alice", "carol")}
    bob = peers["bob"]
    messages = f"{base}/v1/rooms/{room}/messages"
    # Bob's cursor after the peer-joined messages of alice and carol.
    _, first = call("GET", f"{messages}?wait=0", bob["token"])
    call("POST", f"{recorder}/_record/hold", body={"action": "PutItem", "key": "INBOX#*", "ms": 2800})

    posted = {}

    def post(name, delay):
        time.sleep(delay)
        started = time.monotonic()
        status, _ = call("POST", messages, peers[name]["token"],
                         {"to": bob["peer"], "type": "message", "data": name})
        posted[name] = (status, time.monotonic() - started)

    writers = [threading.Thread(target=post, args=("alice", 0.0)),
               threading.Thread(target=post, args=("carol", 0.4))]
    for writer in writers:
        writer.start()
    received, cursor, deadline = [], first["cursor"], time.monotonic() + 30

    def delivered(name):
        return [m for m in received if m.get("data") == name]

    while time.monotonic() < deadline and not (delivered("alice") and delivered("carol")):
        _, body = call("GET", f"{messages}?wait=5&after={cursor}", bob["token"])
        received += body["messages"]
        cursor = body["cursor"]
    for writer in writers:
        writer.join(timeout=30)
    # One more read: a duplicate would show up now.
    _, body = call("GET", f"{messages}?wait=0&after={cursor}", bob["token"])
    received += body["messages"]
    with urllib.request.urlopen(f"{recorder}/_record/calls", timeout=10) as response:
        calls = json.loads(response.read())
    readers = [caller for caller, actions in calls.items()
               if caller in ("poll", "process:signalpost") and "ROOM#*" in actions.get("dynamodb:GetItem", [])]
    order = [m["data"] for m in received if m.get("data") in ("alice", "carol")]
    print(f"stalled writer: alice's post {posted.get('alice')}, carol's {posted.get('carol')} "
          f"(status, seconds); bob got {order}; gap check by GetItem in: {readers or 'none'}")
    assert posted.get("alice", (0,))[0] == 202 and posted.get("carol", (0,))[0] == 202, posted
    assert len(delivered("alice")) == 1 and len(delivered("carol")) == 1, received
    assert readers, f"no poll read the member item for the gap: {calls}"


if __name__ == "__main__":
    main()
