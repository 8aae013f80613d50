#!/usr/bin/env bash
# The five Lambda functions as they are deployed: arm64 release `bootstrap`s, built the way
# `sam build` builds them (cargo lambda build --release --arm64), in one cargo invocation so
# the shared dependencies compile once. Prints each one's size in bytes, MB and MiB, and
# fails when one is over the 8 MB target, or when the README's "Function sizes" table says
# something else (more than 0.1 MB off): update the table with the figures printed here.
#
#   tests/function_sizes.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"

# shellcheck source=tests/ensure-cargo-lambda.sh
source tests/ensure-cargo-lambda.sh
if command -v rustup >/dev/null 2>&1 \
    && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
fi

functions=(join post poll leave ice-servers)
packages=()
for function in "${functions[@]}"; do packages+=(-p "signalpost-fn-$function"); done
started=$SECONDS
cargo lambda build --release --arm64 --locked "${packages[@]}"
echo "built in $((SECONDS - started)) s"

python3 - "$target/lambda" README.md "${functions[@]}" <<'PY'
import re
import sys
from pathlib import Path

TARGET_MB = 8.0
TOLERANCE_MB = 0.1
built, readme, functions = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
stated = {
    name: float(mb)
    for name, mb in re.findall(r"^\| (\S+) \| ([\d.]+) MB \([\d.]+ MiB\) \|", readme.read_text(), re.M)
}
problems = []
print(f"{'function':<12} {'bytes':>10} {'MB':>6} {'MiB':>6}   README")
for name in functions:
    size = (built / name / "bootstrap").stat().st_size
    mb, mib = size / 1e6, size / 2**20
    print(f"{name:<12} {size:>10,} {mb:>6.2f} {mib:>6.2f}   {stated.get(name, '-')}")
    if mb > TARGET_MB:
        problems.append(f"{name}: {mb:.2f} MB is over the {TARGET_MB} MB target")
    if name not in stated:
        problems.append(f"{name}: not in the README's size table")
    elif abs(stated[name] - mb) > TOLERANCE_MB:
        problems.append(f"{name}: the README says {stated[name]} MB, the build is {mb:.2f} MB")
for problem in problems:
    print(f"FAIL: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
