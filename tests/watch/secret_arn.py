#!/usr/bin/env python3
"""Secrets by ARN: the functions read their secrets from Secrets Manager at cold start.

    secret_arn.py TARGET_DIR [--calls OUT.json]   # TARGET_DIR e.g. target/debug; needs
                                                  # moto_server and boto3 (moto[server])

Starts moto on loopback behind the recording proxy (record_aws.py), stores a signing secret
and a TURN secret in it, then starts each function binary under the stub Lambda Runtime API
of cold_start.py with the environment infra/template.yaml gives it: SIGNALPOST_SECRET_ARN for
every function; SIGNALPOST_TURN_URLS and SIGNALPOST_TURN_SECRET_ARN for ice-servers only.
Checks that:
  - every function starts and answers its event;
  - the join's token is signed (HS256) with the stored signing secret;
  - ice-servers hands out TURN credentials made with the stored TURN secret (coturn's REST
    scheme: base64 HMAC-SHA1 of the username);
  - neither secret's value appears in any function's output;
  - an unknown ARN, of either secret, stops the start with a message naming it, and a
    non-zero exit status.
With --calls, writes which Secrets Manager calls each function made, secrets named as the
template names them (SigningSecret, TurnSecretArn), for infra/check_template.py.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import FUNCTIONS, Stub, event  # noqa: E402

SECRET = "s3cret-from-secrets-manager-" + os.urandom(6).hex()
TURN_SECRET = "turn-s3cret-from-secrets-manager-" + os.urandom(6).hex()
TURN_URLS = "turn:turn.example:3478"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url):
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.2)
    return False


def start_moto():
    port = free_port()
    moto = shutil.which("moto_server")
    if moto is None:
        raise SystemExit("moto_server not found: pip install 'moto[server]'")
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    if wait_for(endpoint + "/moto-api/"):
        return process, endpoint
    process.kill()
    raise SystemExit("moto_server did not start")


def start_recorder(upstream, out):
    port_file = out + ".port"
    if os.path.exists(port_file):
        os.remove(port_file)
    recorder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "record_aws.py")
    process = subprocess.Popen([sys.executable, recorder, upstream, out, "--port-file", port_file])
    for _ in range(100):
        if os.path.exists(port_file):
            with open(port_file, encoding="ascii") as f:
                return process, f"http://127.0.0.1:{f.read().strip()}"
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the recording proxy did not start")


def run_function(binary, function, payload, env_extra, database=None):
    """Runs one function for one event; `database` (a SQLite path) lets calls share a store."""
    stub = Stub(payload)
    with tempfile.TemporaryDirectory() as directory:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALPOST_", "AWS_"))}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": stub.address,
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "secret-arn",
            "SIGNALPOST_DB": database or os.path.join(directory, "signalpost.db"),
            "RUST_LOG": "debug",
            **env_extra,
        })
        process = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finished = stub.done.wait(20)
        if finished:
            process.kill()
        try:
            stdout, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        stub.close()
    return stub.response, process.returncode, (stdout + stderr).decode(errors="replace")


def ice_servers_event(token):
    payload = event("ice-servers")
    payload["rawPath"] = payload["requestContext"]["http"]["path"] = "/v1/ice-servers"
    payload["routeKey"] = payload["requestContext"]["routeKey"] = "GET /v1/ice-servers"
    payload["headers"]["authorization"] = f"Bearer {token}"
    return payload


def verify_hs256(token, secret):
    header, payload, signature = token.split(".")
    expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return hmac.compare_digest(expected, given)


def turn_credential(secret, username):
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target_dir")
    parser.add_argument("--calls", help="write the Secrets Manager calls of each function here")
    args = parser.parse_args()
    import boto3

    moto, endpoint = start_moto()
    scratch = tempfile.mkdtemp()
    record = os.path.join(scratch, "calls.json")
    recorder, proxy = start_recorder(endpoint, record)
    passed = 0
    try:
        aws = {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": proxy,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        arn = client.create_secret(Name="signalpost-signing", SecretString=SECRET)["ARN"]
        turn_arn = client.create_secret(Name="signalpost-turn", SecretString=TURN_SECRET)["ARN"]
        labels = {arn: "SigningSecret", turn_arn: "TurnSecretArn"}

        # The environment of each function in infra/template.yaml, secrets by ARN.
        def template_env(function):
            env = {**aws, "SIGNALPOST_SECRET_ARN": arn}
            if function == "ice-servers":
                env.update({"SIGNALPOST_TURN_URLS": TURN_URLS, "SIGNALPOST_TURN_SECRET_ARN": turn_arn})
            return env

        token = None
        # join and the later ice-servers call share a store: ice-servers answers members only.
        members = os.path.join(scratch, "members.db")
        for function in FUNCTIONS:
            binary = os.path.join(args.target_dir, function)
            response, _, output = run_function(binary, function, event(function), template_env(function),
                                               database=members if function == "join" else None)
            assert response is not None, f"{function}: no response; output:\n{output}"
            assert response["statusCode"] < 500, (function, response)
            assert SECRET not in output and TURN_SECRET not in output, \
                f"{function}: a secret's value appeared in its output"
            if function == "join":
                assert response["statusCode"] == 201, response
                token = json.loads(response["body"])["token"]
                assert verify_hs256(token, SECRET), "the token is not signed with the stored secret"
                print(f"ok   join with SIGNALPOST_SECRET_ARN={arn}: 201, token signed with the stored secret")
            else:
                print(f"ok   {function} started with the template's secret ARNs: {response['statusCode']}")
            passed += 1

        binary = os.path.join(args.target_dir, "ice-servers")
        response, _, output = run_function(binary, "ice-servers", ice_servers_event(token),
                                           template_env("ice-servers"), database=members)
        assert response is not None and response["statusCode"] == 200, (response, output)
        turn = [s for s in json.loads(response["body"])["iceServers"] if s.get("credential")]
        assert turn and turn[0]["urls"] == [TURN_URLS], response["body"]
        assert turn[0]["credential"] == turn_credential(TURN_SECRET, turn[0]["username"]), \
            "the TURN credential is not made with the stored TURN secret"
        assert TURN_SECRET not in output
        print("ok   ice-servers with SIGNALPOST_TURN_SECRET_ARN: TURN credential made with the stored secret")
        passed += 1
        # What the template's environment makes the functions call (the refused starts
        # below ask for unknown secrets).
        with open(record, encoding="utf-8") as f:
            calls = json.load(f)

        for variable, valid in (("SIGNALPOST_SECRET_ARN", arn), ("SIGNALPOST_TURN_SECRET_ARN", turn_arn)):
            env = {**template_env("ice-servers"), variable: valid + "-missing"}
            response, status, output = run_function(binary, "ice-servers", event("ice-servers"), env)
            assert response is None and status not in (0, None), (response, status)
            assert "cannot read" in output and "-missing" in output, output
            print(f"ok   unknown {variable}: start refused (exit {status}): "
                  + next(line for line in output.splitlines() if "cannot read" in line)[:160])
            passed += 1
    finally:
        recorder.terminate()
        recorder.wait()
        moto.kill()
        moto.wait()
    if args.calls:
        named = {
            function: {action: sorted(labels.get(secret, secret) for secret in secrets)
                       for action, secrets in actions.items()}
            for function, actions in calls.items()
        }
        with open(args.calls, "w", encoding="utf-8") as f:
            json.dump(named, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"wrote the Secrets Manager calls of each function to {args.calls}")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
