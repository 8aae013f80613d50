#!/usr/bin/env python3
"""Mutation check of the core guarantees: each mutation below breaks one guarantee with a
one-line change, and the narrow test that claims to prove that guarantee must then fail.

    tests/mutation/check.py            # every mutation
    tests/mutation/check.py expiry     # those whose name contains "expiry"

How: the tracked (and untracked, not ignored) files are copied to target/mutation-tree, each
mutation is applied there in turn, the test is built (which must succeed) and run (which must
fail, with its one test failing), and the file is restored. The copy builds into this repo's
target directory, so the dependencies are never rebuilt: a mutation recompiles the workspace
crates above the mutated file only. DynamoDB mutations run under tests/with-moto.sh.

Each mutation names its line by a short pattern that must occur exactly once in the file:
when other work moves or rewrites that line the check fails loudly ("pattern not found"),
so the list is updated instead of silently testing nothing.

Exits non-zero if any mutation survives or cannot be applied.
"""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
TREE = os.path.join(ROOT, "target", "mutation-tree")

API = ["-p", "signalpost-server", "--test", "api"]
SHARED_LIB = ["-p", "signalpost-shared", "--lib"]


@dataclass
class Mutation:
    name: str
    path: str
    find: str
    replace: str
    test_target: list
    test: str
    moto: bool = False


MUTATIONS = [
    # Store-level guarantees first: they rebuild only the shared crate's unit tests.
    Mutation(
        "expiry: SQLite reads skip the expiry filter",
        "shared/src/store/sqlite.rs",
        "seq > ?3 AND expires_at > ?4\n             ORDER BY seq",
        "seq > ?3 AND ?4 = ?4\n             ORDER BY seq",
        SHARED_LIB, "store::sqlite::tests::expired_messages_are_never_read",
    ),
    Mutation(
        "idempotency: SQLite drops the lookup of earlier ids",
        "shared/src/store/sqlite.rs",
        "let previous = previous_ids(transaction, &request)?;",
        "let previous: Vec<Option<MessageId>> = previous_ids(transaction, &request)?"
        ".into_iter().map(|_| None).collect();",
        SHARED_LIB, "store::sqlite::tests::repeated_client_ids_are_stored_once",
    ),
    Mutation(
        "order: SQLite stores a batch reversed",
        "shared/src/store/sqlite.rs",
        "        .map(|(message, _)| message.clone())\n        .collect();",
        "        .map(|(message, _)| message.clone())\n        .rev()\n        .collect();",
        SHARED_LIB, "store::sqlite::tests::post_delivers_in_order_with_contiguous_sequence",
    ),
    Mutation(
        "expiry: DynamoDB reads skip the expiry filter",
        "shared/src/store/dynamo/items.rs",
        "if void || expires_at_ms <= now {",
        "if void {",
        SHARED_LIB, "store::dynamo::tests::expired_messages_are_never_read", moto=True,
    ),
    # Black-box guarantees: they rebuild the shared crate, the server and the API suite.
    Mutation(
        "wake-up: a post does not wake the waiting poll",
        "shared/src/signalling.rs",
        "self.wakeups.wake(&grant.room, &posted.recipients);",
        "",
        API, "delivery::a_waiting_poll_wakes_when_a_message_arrives",
    ),
    Mutation(
        "tokens: the room in the token is not checked against the path",
        "shared/src/http/extract.rs",
        "if &grant.room == room {",
        "if true {",
        API, "hostile::a_token_cannot_act_for_another_peer_or_room",
    ),
]


def log(text):
    print(f"mutation: {text}", flush=True)


def in_copy(path, text):
    """The copy's version of a file: the same, except that the workspace's version gets a
    `-mutation` suffix. Cargo names a workspace crate's build outputs by its name and version,
    not its path, so without it the mutated copy would overwrite the real tree's outputs in
    the shared target directory (and the real tree would then test a mutant)."""
    if path == "Cargo.toml":
        marker = '[workspace.package]\nversion = "'
        start = text.index(marker) + len(marker)
        end = text.index('"', start)
        text = f"{text[:end]}-mutation{text[end:]}"
    return text


def write(path, text):
    """Writes a file of the copy. The modification time is now, so that cargo rebuilds what
    depends on it, also when the content goes back to an earlier version."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def copy_tree():
    """Brings TREE up to date with the working tree's files (not target/): only files whose
    content differs are written, so unchanged crates do not rebuild; files that are gone are
    removed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    files = {path for path in listed if path and os.path.isfile(os.path.join(ROOT, path))}
    for directory, _, names in os.walk(TREE):
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), TREE)
            if relative not in files:
                os.remove(os.path.join(directory, name))
    for path in files:
        source, copy = os.path.join(ROOT, path), os.path.join(TREE, path)
        try:
            with open(source, encoding="utf-8") as file:
                wanted = in_copy(path, file.read())
        except UnicodeDecodeError:
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copyfile(source, copy)
            continue
        try:
            with open(copy, encoding="utf-8") as file:
                if file.read() == wanted:
                    continue
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        write(copy, wanted)


def restore_real_binary():
    """The copy's API tests leave its (mutated) `signalpost` at target/debug/signalpost, the
    path every tree's tests run: build the real one again, so later stages use it."""
    subprocess.run(["cargo", "build", "--locked", "--quiet", "-p", "signalpost-server"],
                   cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": TARGET})


def cargo(mutation, build_only):
    # Not --locked: the copy's lock file takes the copy's workspace version (offline).
    command = ["cargo", "test", "--offline", "--manifest-path", os.path.join(TREE, "Cargo.toml"),
               *mutation.test_target]
    command += ["--no-run"] if build_only else ["--", "--exact", mutation.test]
    if mutation.moto and not build_only:
        command = [os.path.join(ROOT, "tests", "with-moto.sh"), *command]
    env = {**os.environ, "CARGO_TARGET_DIR": TARGET}
    env.pop("SIGNALPOST_TEST_TARGET", None)
    env.pop("SIGNALPOST_TEST_STORE", None)
    return subprocess.run(command, cwd=TREE, env=env, capture_output=True, text=True,
                          timeout=1800)


def check(mutation):
    """Applies `mutation` in the copy, builds, runs its test; returns a verdict line, or raises
    SystemExit when the mutation cannot be applied or built."""
    original_path = os.path.join(ROOT, mutation.path)
    with open(original_path, encoding="utf-8") as file:
        original = file.read()
    found = original.count(mutation.find)
    if found != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: pattern {mutation.find!r} found {found} times in "
            f"{mutation.path} (expected once): the code moved; update tests/mutation/check.py")
    copy_path = os.path.join(TREE, mutation.path)
    try:
        with open(copy_path, "w", encoding="utf-8") as file:
            file.write(original.replace(mutation.find, mutation.replace))
        started = time.monotonic()
        built = cargo(mutation, build_only=True)
        if built.returncode != 0:
            raise SystemExit(f"mutation {mutation.name!r} does not build:\n{built.stderr[-4000:]}")
        build_seconds = time.monotonic() - started
        started = time.monotonic()
        ran = cargo(mutation, build_only=False)
        run_seconds = time.monotonic() - started
    finally:
        write(copy_path, original)
    output = ran.stdout + ran.stderr
    killed = ran.returncode != 0 and "0 passed; 1 failed" in output
    timing = f"(build {build_seconds:.0f} s, test {run_seconds:.0f} s)"
    if killed:
        return True, f"killed   {mutation.name}: {mutation.test} failed {timing}"
    if ran.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise SystemExit(f"mutation {mutation.name!r}: the test run failed without its test "
                         f"failing (not run? wrong name?):\n{tail}")
    return False, f"SURVIVED {mutation.name}: {mutation.test} still passes {timing}"


def main():
    wanted = sys.argv[1:]
    chosen = [m for m in MUTATIONS if not wanted or any(w in m.name for w in wanted)]
    if not chosen:
        raise SystemExit(f"no mutation matches {wanted}")
    # Check every pattern before the long part, so that drift fails at once.
    for mutation in chosen:
        with open(os.path.join(ROOT, mutation.path), encoding="utf-8") as file:
            if file.read().count(mutation.find) != 1:
                raise SystemExit(
                    f"mutation {mutation.name!r}: pattern {mutation.find!r} is not found exactly "
                    f"once in {mutation.path}: the code moved; update tests/mutation/check.py")
    log(f"copying the tree to {TREE}")
    copy_tree()
    verdicts = []
    try:
        for mutation in chosen:
            log(f"{mutation.name} ({mutation.path})")
            killed, verdict = check(mutation)
            log(verdict)
            verdicts.append((killed, verdict))
    finally:
        if any(mutation.test_target == API for mutation in chosen):
            restore_real_binary()
    survived = [verdict for killed, verdict in verdicts if not killed]
    print(f"\n{len(verdicts) - len(survived)} of {len(verdicts)} mutations killed")
    for verdict in survived:
        print(verdict)
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
