#!/usr/bin/env python3
"""The Lambda functions' metrics (CloudWatch Embedded Metric Format) and request log, checked
against the format's rules, under the stub Runtime API of cold_start.py.

    emf.py TARGET_DIR      # e.g. target/debug, after building signalpost-fn-join

Runs `join` on one join event with AWS_LAMBDA_LOG_FORMAT=JSON and reads its stdout line by
line as it comes. Checks:
  - every EMF line: an `_aws` object with an integer Timestamp (ms, near now) and a
    CloudWatchMetrics array of directives, each with Namespace `signalpost`, Dimensions
    [["function"]], 1-100 Metrics with a Name (and a valid Unit if any); every dimension key
    at the top level as a string; every metric named has a value at the top level (a number,
    or at most 100 numbers);
  - the metrics of the join are there: joins 1, requests 1 for the join route (2xx), a store
    join operation;
  - the EMF lines came after the response was posted (the flush adds no latency);
  - one JSON request log line with the invocation's request id, the route template, 201;
  - the peer token of the response appears nowhere in stdout.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import Stub, event  # noqa: E402

UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
         "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
         "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
         "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
         "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


def validate(document):
    """The EMF specification's rules for one document; returns the metrics it defines."""
    aws = document["_aws"]
    assert isinstance(aws, dict), "_aws is an object"
    assert isinstance(aws["Timestamp"], int), "Timestamp is an integer"
    assert abs(aws["Timestamp"] - time.time() * 1000) < 3_600_000, "Timestamp is ms near now"
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives, "CloudWatchMetrics is a non-empty array"
    names = []
    for directive in directives:
        assert directive["Namespace"] == "signalpost", directive
        assert directive["Dimensions"] == [["function"]], directive
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(document.get(key), str), f"dimension {key} at the top level"
        metrics = directive["Metrics"]
        assert 1 <= len(metrics) <= 100, "1 to 100 metrics per directive"
        for metric in metrics:
            name = metric["Name"]
            assert isinstance(name, str) and 1 <= len(name) <= 1024, metric
            assert metric.get("Unit", "None") in UNITS, metric
            value = document[name]
            if isinstance(value, list):
                assert 1 <= len(value) <= 100 and all(isinstance(v, (int, float)) for v in value), name
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), name
            names.append(name)
    return names


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target/debug"
    stub = Stub(event("join"))
    lines = []
    with tempfile.TemporaryDirectory() as directory:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALPOST_", "AWS_"))}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": stub.address,
            "AWS_LAMBDA_FUNCTION_NAME": "join",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "SIGNALPOST_SECRET": "emf-test-secret-of-at-least-32-bytes-long",
            "SIGNALPOST_DB": os.path.join(directory, "signalpost.db"),
            "SIGNALPOST_WAKEUPS": "false",
        })
        process = subprocess.Popen([os.path.join(target, "join")], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def read():
            for line in process.stdout:
                lines.append((time.perf_counter(), line.decode(errors="replace").rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        stub.done.wait(30)
        # The flush follows the posted response; give it a moment, then end the process.
        deadline = time.time() + 10
        while time.time() < deadline and not any('"_aws"' in line for _, line in lines):
            time.sleep(0.05)
        time.sleep(0.2)
        process.kill()
        _, stderr = process.communicate()
        reader.join(5)
        stub.close()
    if stub.response is None:
        raise SystemExit(f"no response ({stub.error}); stderr: {stderr.decode(errors='replace')}")
    token = json.loads(stub.response["body"])["token"]
    failures = []
    emf, logs = [], []
    for at, line in lines:
        if token in line:
            failures.append(f"the peer token is in stdout: {line}")
        try:
            document = json.loads(line)
        except ValueError:
            failures.append(f"not JSON although AWS_LAMBDA_LOG_FORMAT=JSON: {line}")
            continue
        if "_aws" in document:
            try:
                validate(document)
            except (AssertionError, KeyError, TypeError) as error:
                failures.append(f"invalid EMF ({error!r}): {line}")
            emf.append((at, document))
        else:
            logs.append(document)
    if not emf:
        failures.append("no EMF line")
    if any(at < stub.response_at for at, _ in emf):
        failures.append("an EMF line was written before the response was posted")

    def total(name, **labels):
        return sum(d.get(name, 0) for _, d in emf
                   if d.get("function") == "join" and all(d.get(k) == v for k, v in labels.items()))

    if total("joins") != 1:
        failures.append(f"joins is {total('joins')}, not 1")
    if total("requests", route="POST /v1/rooms/:room/peers", status_class="2xx") != 1:
        failures.append("no request counted for the join route")
    if total("store_operations", op="join") != 1:
        failures.append("no store join operation counted")
    requests = [log for log in logs if log.get("fields", {}).get("message") == "request"]
    if len(requests) != 1:
        failures.append(f"{len(requests)} request log lines, not 1: {logs}")
    else:
        fields = requests[0]["fields"]
        expected = {"request_id": "cold-start-1", "route": "POST /v1/rooms/:room/peers", "status": 201}
        for key, value in expected.items():
            if fields.get(key) != value:
                failures.append(f"request log {key} is {fields.get(key)!r}, not {value!r}")
        if "duration_ms" not in fields:
            failures.append("the request log has no duration")
    for _, document in emf:
        print(json.dumps(document))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print(f"emf: {len(emf)} EMF lines valid, request log line checked: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
