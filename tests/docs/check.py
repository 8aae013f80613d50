#!/usr/bin/env python3
"""Checks that the READMEs tell a newcomer only things that work on a fresh clone.

    python3 tests/docs/check.py          # static checks, a second or so
    python3 tests/docs/check.py --run    # also runs the README blocks marked quick (below)

Static checks, on every README.md in the repository and on shared/API.md:
- every link points inside the repository, at a file that exists (and a heading that exists,
  for `#anchor` links); the only web addresses allowed are loopback ones (the local server);
- every repository path named in `code` exists;
- every command in a ```sh block, and every inline `code` that is a command:
  - names a program a fresh clone has: a repository script (executable, if run directly),
    a workspace binary under target/, or a common tool (cargo, npm, python3, ...), never a
    bare `signalpost` (it is not on PATH until `cargo install --path functions/signalpost`);
  - `cargo -p P` names a workspace package, `--test T` one of its test targets, `--bin B` and
    `target/<profile>/B` one of its binaries;
  - `npm --prefix D run S` names a script of D/package.json, and D's `npm ci` comes first in
    the same block (a fresh clone has no node_modules);
- the configuration tables agree with the code: the variables the Rust sources read are
  exactly those of README.md's Configuration table, and shared/API.md's tables name no other.

With --run, each ```sh block of README.md that follows an `<!-- check: run -->` comment runs
as written, from the repository root, under `bash -euo pipefail`.
"""

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "apt-get", "aws", "bash", "cargo", "cd", "curl", "export", "git", "node", "npm", "openssl",
    "pip", "python3", "sam", "sh",
}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>]+)>")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LOOPBACK = re.compile(r"^https?://(127\.0\.0\.1|localhost|\[::1\])[:/]")
QUICK_MARK = "<!-- check: run -->"


def documents():
    readmes = sorted(p for p in ROOT.rglob("README.md") if tracked(p))
    contract = ROOT / "shared/API.md"
    return readmes + [contract] if contract.exists() else readmes


def tracked(path):
    parts = path.relative_to(ROOT).parts
    return not any(part in ("target", "node_modules") or part.startswith(".") for part in parts)


def workspace():
    """{package name: {"tests": set, "bins": set}} from the workspace's Cargo.toml files."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    packages = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        bins = {b["name"] for b in manifest.get("bin", [])}
        if not bins and (ROOT / member / "src/main.rs").exists():
            bins = {name}
        tests = {t["name"] for t in manifest.get("test", [])}
        tests |= {p.stem for p in (ROOT / member / "tests").glob("*.rs")}
        packages[name] = {"tests": tests, "bins": bins}
    return packages


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def blocks(text):
    """(language, first line number, body, marked quick) of each fenced block."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            previous = next((l for l in reversed(lines[:start]) if l.strip()), "")
            found.append((fence.group(1), start + 2, "\n".join(body), previous.strip() == QUICK_MARK))
        i += 1
    return found


def prose(text):
    """The document without its fenced blocks (their lines blanked, so numbers stay right)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return out


def commands(script):
    """Simple commands of a shell snippet: continuation lines joined, comments dropped, split
    on && ; || and pipes."""
    script = script.replace("\\\n", " ")
    for line in script.splitlines():
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError:
            continue
        command = []
        for token in tokens + [";"]:
            if token and set(token) <= set(";&|"):
                if command:
                    yield command
                command = []
            else:
                command.append(token)


class Checker:
    def __init__(self):
        self.errors = []
        self.packages = workspace()
        self.bins = {b for p in self.packages.values() for b in p["bins"]}

    def error(self, where, message):
        self.errors.append(f"{where}: {message}")

    def repo_path(self, where, cwd, token, executable=False):
        """Check a token that names a path of the repository (relative to cwd)."""
        token = token.replace("$PWD/", "").replace("${PWD}/", "").rstrip(",.;:)")
        if token.startswith("/") or "$" in token or "<" in token or "*" in token or "…" in token or "..." in token:
            return
        path = (ROOT / cwd / token).resolve()
        try:
            relative = path.relative_to(ROOT).as_posix()
        except ValueError:
            return self.error(where, f"{token} is outside the repository")
        if relative.startswith("target/"):
            parts = relative.split("/")
            if len(parts) == 3 and parts[1] in ("debug", "release") and parts[2] not in self.bins:
                self.error(where, f"{token}: no workspace binary is called {parts[2]}")
            return
        if not path.exists():
            return self.error(where, f"{token} does not exist in the repository")
        if executable and not path.is_dir() and not path.stat().st_mode & 0o111:
            self.error(where, f"{token} is run directly but is not executable")

    def looks_like_path(self, token, relative=True):
        """A token naming a repository path: it starts with a top-level folder or file (or,
        with `relative`, with ./ or ../). Absolute paths are the reader's own machine."""
        first = token.replace("$PWD/", "").split("/")[0]
        return "/" in token and (first in TOP_LEVEL or relative and first in ("..", "."))

    def command(self, where, cwd, words, block_text):
        while words and ENV_ASSIGNMENT.match(words[0]):
            value = words.pop(0).split("=", 1)[1]
            if value.startswith("$("):  # VAR=$(command ...) [command]: check both commands
                words.insert(0, value[2:])
                end = next((i for i, w in enumerate(words) if w.endswith(")")), len(words) - 1)
                self.command(where, cwd, [*words[:end], words[end].removesuffix(")")], block_text)
                words = words[end + 1:]
            elif self.looks_like_path(value):
                self.repo_path(where, cwd, value)
        if not words or words[0].startswith("$"):  # `$tool args`: a variable set earlier
            return cwd
        program, args = words[0], words[1:]
        if program == "cd" and args:
            return (Path(cwd) / args[0]).as_posix()
        if "/" in program:
            self.repo_path(where, cwd, program, executable=True)
        elif program == "signalpost":
            self.error(where, "`signalpost` is not on PATH on a fresh clone: use "
                       "`cargo run --release -p signalpost-server -- …` or say how to install it")
        elif program not in TOOLS and not ENV_ASSIGNMENT.match(program):
            self.error(where, f"`{program}`: a program a fresh clone does not have")
        for i, arg in enumerate(args):
            value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
            if self.looks_like_path(value):
                self.repo_path(where, cwd, value)
            if program == "cargo" and arg in ("-p", "--package") and i + 1 < len(args):
                if args[i + 1] not in self.packages:
                    self.error(where, f"cargo: no workspace package {args[i + 1]}")
        if program == "cargo":
            self.cargo_targets(where, args)
        if program == "npm":
            self.npm(where, cwd, args, block_text)
        return cwd

    def cargo_targets(self, where, args):
        named = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-p", "--package")]
        for flag, kind in (("--test", "tests"), ("--bin", "bins")):
            if flag in args[:-1]:
                target = args[args.index(flag) + 1]
                owners = [p for p in named or self.packages if target in self.packages.get(p, {}).get(kind, ())]
                if not owners:
                    self.error(where, f"cargo {flag} {target}: no such target in {named or 'the workspace'}")

    def npm(self, where, cwd, args, block_text):
        prefix = args[args.index("--prefix") + 1] if "--prefix" in args[:-1] else "."
        rest = [a for a in args if a not in ("--prefix", prefix)]
        script = rest[1] if rest[:1] == ["run"] and len(rest) > 1 else rest[0] if rest[:1] == ["test"] else None
        if script is None:  # npm ci, npm install: nothing of ours to check
            return
        directory = Path(cwd) / prefix
        manifest = ROOT / directory / "package.json"
        if not manifest.exists():
            return self.error(where, f"npm: no {directory.as_posix()}/package.json")
        if script not in json.loads(manifest.read_text()).get("scripts", {}):
            self.error(where, f"npm: {directory.as_posix()}/package.json has no script {script}")
        if not re.search(rf"(npm --prefix {re.escape(prefix)} ci\b|cd {re.escape(prefix)} && npm ci\b)", block_text) \
                and not (prefix == "." and re.search(r"\bnpm ci\b", block_text)):
            self.error(where, f"npm {' '.join(args)}: a fresh clone needs `npm --prefix {prefix} ci` first, "
                       "in the same block")

    def document(self, path):
        text = path.read_text()
        name = path.relative_to(ROOT).as_posix()
        is_readme = path.name == "README.md"
        for number, line in enumerate(prose(text), 1):
            where = f"{name}:{number}"
            for match in LINK.finditer(line):
                self.link(where, path, match.group(1) or match.group(2))
            for match in INLINE_CODE.finditer(line):
                code = match.group(1).strip()
                words = code.split()
                if len(words) == 1 and self.looks_like_path(code, relative=False):
                    self.repo_path(where, ".", code)
                elif is_readme and len(words) > 1 and (words[0] in ("cargo", "npm", "python3", "signalpost")
                                                      or self.looks_like_path(words[0])):
                    for words_ in commands(code):
                        self.command(where, ".", words_, code)
        if not is_readme:
            return
        for language, start, body, _ in blocks(text):
            if language not in ("sh", "bash"):
                continue
            cwd = "."
            for words in commands(body):
                cwd = self.command(f"{name}:{start}", cwd, words, body)

    def link(self, where, document, target):
        if re.match(r"^[a-z]+:", target):
            if not LOOPBACK.match(target):
                self.error(where, f"link {target} points outside the repository")
            return
        file, _, anchor = target.partition("#")
        destination = (document.parent / file).resolve() if file else document
        if not destination.exists() or ROOT not in destination.parents and destination != ROOT:
            return self.error(where, f"link {target} names nothing in the repository")
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            self.error(where, f"link {target}: no heading #{anchor} in {file or document.name}")

    def configuration(self):
        sources = [*ROOT.glob("shared/src/**/*.rs"), *ROOT.glob("functions/*/src/**/*.rs")]
        read = set()
        for source in sources:
            read |= set(re.findall(r'"(SIGNALPOST_[A-Z0-9_]+)"', source.read_text()))
        read = {v for v in read if not v.startswith("SIGNALPOST_TEST_")}
        readme = table_variables(ROOT / "README.md", "## Configuration")
        for variable in sorted(read - readme):
            self.error("README.md Configuration", f"{variable} is read by the code but not in the table")
        for variable in sorted(readme - read):
            self.error("README.md Configuration", f"{variable} is in the table but nothing reads it")
        if not (ROOT / "shared/API.md").exists():
            return self.error("shared/API.md", "the contract is missing")
        contract = table_variables(ROOT / "shared/API.md", None)
        for variable in sorted(contract - read):
            self.error("shared/API.md", f"{variable} is in a configuration table but nothing reads it")
        for variable in sorted(read - contract):
            self.error("shared/API.md", f"{variable} is read by the code but in no configuration table")


def table_variables(path, section):
    """Variables in the first column of the tables of `section` (or of the whole file)."""
    inside, variables = section is None, set()
    for line in path.read_text().splitlines():
        if section and line.startswith("#"):
            inside = line.strip() == section
        if inside and line.startswith("| `SIGNALPOST_"):
            variables |= set(re.findall(r"`(SIGNALPOST_[A-Z0-9_]+)`", line.split("|")[1]))
    return variables


TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"}


def run_quick_blocks():
    failed = 0
    for _, start, body, quick in blocks((ROOT / "README.md").read_text()):
        if not quick:
            continue
        print(f"--- README.md:{start}\n{body}", flush=True)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=ROOT)
        if result.returncode != 0:
            print(f"FAIL: README.md:{start} exited with {result.returncode}", file=sys.stderr)
            failed += 1
    return failed


def main():
    checker = Checker()
    for path in documents():
        checker.document(path)
    checker.configuration()
    for error in checker.errors:
        print(f"  {error}")
    print(f"== README check: {len(documents())} documents, {len(checker.errors)} problems")
    failed = run_quick_blocks() if "--run" in sys.argv[1:] else 0
    return 1 if checker.errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
