#!/usr/bin/env python3
"""SIGNALPOST_SECRET_ARN: a function reads its signing secret from Secrets Manager at cold start.

    tests/with-moto.sh target/venv-moto/bin/python tests/watch/secret_arn.py target/debug

Uses the moto server of tests/with-moto.sh (its endpoint serves every AWS service, Secrets
Manager included; boto3 comes with moto in target/venv-moto). Stores a secret in it, then
starts the `join` binary under the stub Lambda Runtime API of cold_start.py with only
SIGNALPOST_SECRET_ARN set (and AWS_ENDPOINT_URL_SECRETS_MANAGER pointing at moto). Checks that:
  - the join succeeds and its token is signed (HS256) with the stored secret;
  - the secret's value appears nowhere in the function's output;
  - an unknown ARN stops the start with a message naming it, and a non-zero exit status.
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import Stub, event  # noqa: E402

SECRET = "s3cret-from-secrets-manager-" + os.urandom(6).hex()


def moto_endpoint():
    endpoint = os.environ.get("SIGNALPOST_TEST_DYNAMODB_ENDPOINT")
    if not endpoint:
        raise SystemExit("no moto endpoint: run this through tests/with-moto.sh")
    return endpoint


def run_join(binary, env_extra):
    stub = Stub(event("join"))
    with tempfile.TemporaryDirectory() as directory:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALPOST_", "AWS_"))}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": stub.address,
            "AWS_LAMBDA_FUNCTION_NAME": "join",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/join",
            "AWS_LAMBDA_LOG_STREAM_NAME": "secret-arn",
            "SIGNALPOST_DB": os.path.join(directory, "signalpost.db"),
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


def verify_hs256(token, secret):
    header, payload, signature = token.split(".")
    expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return hmac.compare_digest(expected, given)


def main():
    binary = os.path.join(sys.argv[1], "join")
    import boto3

    endpoint = moto_endpoint()
    aws = {
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = client.create_secret(Name=f"signalpost-signing-{os.urandom(4).hex()}", SecretString=SECRET)["ARN"]

    response, _, output = run_join(binary, {**aws, "SIGNALPOST_SECRET_ARN": arn})
    assert response is not None, f"no response; output:\n{output}"
    assert response["statusCode"] == 201, response
    token = json.loads(response["body"])["token"]
    assert verify_hs256(token, SECRET), "the token is not signed with the stored secret"
    assert SECRET not in output, "the secret's value appeared in the function's output"
    print(f"ok   join with SIGNALPOST_SECRET_ARN={arn}: 201, token signed with the stored secret")

    response, status, output = run_join(binary, {**aws, "SIGNALPOST_SECRET_ARN": arn + "-missing"})
    assert response is None and status not in (0, None), (response, status)
    assert "cannot read the signing secret" in output and "-missing" in output, output
    print(f"ok   unknown ARN: start refused (exit {status}): "
          + next(line for line in output.splitlines() if "cannot read" in line)[:160])
    print("2 passed, 0 failed")


if __name__ == "__main__":
    main()
