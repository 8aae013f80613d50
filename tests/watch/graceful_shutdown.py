#!/usr/bin/env python3
"""The poll function gives its SQS wake-up queue back when Lambda shuts its environment down.

    graceful_shutdown.py TARGET_DIR   # e.g. target/debug; inside tests/with-moto.sh, with
                                      # SIGNALPOST_TABLE created; needs boto3 (moto's venv)

Lambda sends SIGTERM before ending an execution environment only to a process that registered
an extension, and allows an internal extension 500 ms before SIGKILL. The `poll` binary runs
under the stub Runtime API of concurrent_polls.py, whose Extensions API (cold_start.py) answers
as Lambda does, on moto DynamoDB and SQS; the standalone `signalpost` server on the same table
takes the join. Checked:
  - registered: the poll registers one extension subscribed to no events and asks for its
    next event (else Lambda would not end Init); a held poll creates the process's queue
    `<table>-wake-…`; on SIGTERM the process exits with status 0 within 1 s (Lambda's 500 ms
    plus process start-up slack on a busy machine; the time is printed) and the queue is gone;
  - registration refused (500), and unanswered: the poll still serves its event (200).
"""

import json
import os
import signal
import subprocess
import sys
import time

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import ExtensionsApi  # noqa: E402
from concurrent_polls import (  # noqa: E402
    Runtime, call, poll_event, start_standalone, wait_for, wait_until_healthy)

SECRET = "graceful-shutdown-secret-of-at-least-32-bytes"
EXIT_BUDGET_S = 1.0


def queues(sqs, table):
    listed = sqs.list_queues(QueueNamePrefix=f"{table}-wake-")
    return set(listed.get("QueueUrls", []))


def start_poll(target_dir, env, runtime):
    return subprocess.Popen([os.path.join(target_dir, "poll")],
                            env={**env,
                                 "AWS_LAMBDA_RUNTIME_API": runtime.address,
                                 "AWS_LAMBDA_FUNCTION_NAME": "poll",
                                 "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                                 "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process):
    """Ends the process if it still runs; its stderr (once: later calls give "")."""
    if process.poll() is None:
        process.kill()
    if process.stderr is None or process.stderr.closed:
        return ""
    return process.communicate()[1].decode(errors="replace")


def registered_then_sigterm(target_dir, env, peer, sqs, table):
    runtime = Runtime()
    process = start_poll(target_dir, env, runtime)
    try:
        wait_for(runtime.extensions.waiting.is_set, 30,
                 "the poll function did not register an extension and ask for its next event")
        name, body = runtime.extensions.registrations[0]
        assert len(runtime.extensions.registrations) == 1, runtime.extensions.registrations
        assert name, "no Lambda-Extension-Name"
        assert json.loads(body) == {"events": []}, f"subscribed to {body}"
        before = queues(sqs, table)
        runtime.expected = 1
        runtime.events.put(("held", poll_event(peer["room"], peer["token"], peer["cursor"], 20, "held")))
        wait_for(lambda: queues(sqs, table) - before, 15,
                 "the held poll created no wake-up queue")
        created = queues(sqs, table) - before
        assert runtime.in_flight() == 1, "the poll is not held"
        sent = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = None
        took = time.perf_counter() - sent
        left = created & queues(sqs, table)
        stderr = stop(process)
        print(f"registered: queue {sorted(created)}; SIGTERM → exit {status} in {took * 1000:.0f} ms; "
              f"queue left behind: {bool(left)}")
        failures = []
        if status != 0:
            failures.append(f"the process ended with {status}, not 0, on SIGTERM")
        if took > EXIT_BUDGET_S:
            failures.append(f"it took {took:.2f} s to exit, over {EXIT_BUDGET_S} s")
        if left:
            failures.append(f"its queue is still there: {sorted(left)}")
        if failures:
            raise SystemExit("FAIL: " + "; ".join(failures) + f"\nstderr: {stderr}")
    finally:
        stop(process)
        runtime.extensions.close()
        runtime.server.shutdown()


def serves_without_registration(target_dir, env, peer, register_status):
    what = "unanswered" if register_status is None else f"refused ({register_status})"
    runtime = Runtime(ExtensionsApi(register_status))
    process = start_poll(target_dir, env, runtime)
    try:
        runtime.expected = 1
        request_id = f"after-{register_status}"
        runtime.events.put((request_id, poll_event(peer["room"], peer["token"], peer["cursor"], 1, request_id)))
        wait_for(runtime.all_answered.is_set, 30,
                 lambda: f"registration {what}: the poll was not answered; stderr: {stop(process)}")
        assert runtime.extensions.registrations, "the poll did not try to register"
        assert not runtime.errors, runtime.errors
        status = runtime.answers[request_id][1].get("statusCode")
        assert status == 200, f"registration {what}: the poll answered {status}"
        print(f"registration {what}: the poll still served ({status})")
    finally:
        stop(process)
        runtime.extensions.close()
        runtime.server.shutdown()


def main():
    target_dir = sys.argv[1] if len(sys.argv) > 1 else "target/debug"
    table = os.environ.get("SIGNALPOST_TABLE")
    if not table or not os.environ.get("AWS_ENDPOINT_URL_SQS"):
        raise SystemExit("FAIL: run inside tests/with-moto.sh with SIGNALPOST_TABLE created")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIGNALPOST_", "AWS_LAMBDA_"))}
    env.update({"SIGNALPOST_TABLE": table, "SIGNALPOST_SECRET": SECRET, "RUST_LOG": "info"})
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
                       region_name=os.environ.get("AWS_REGION", "us-east-1"))
    server, base = start_standalone(target_dir, env)
    try:
        wait_until_healthy(base)
        room = f"shutdown-{os.getpid()}"
        _, joined = call(base, "POST", f"/v1/rooms/{room}/peers", {"name": "waiting"})
        peer = {"room": room, "token": joined["token"]}
        _, polled = call(base, "GET", f"/v1/rooms/{room}/messages?wait=0", token=peer["token"])
        peer["cursor"] = polled["cursor"]
        registered_then_sigterm(target_dir, env, peer, sqs, table)
        serves_without_registration(target_dir, env, peer, 500)
        serves_without_registration(target_dir, env, peer, None)
        print("graceful shutdown: ok")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
