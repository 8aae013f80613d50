# Sourced, not run: puts `cargo lambda` on PATH, installing cargo-lambda (with the Zig it
# cross-compiles with) from PyPI into target/venv-cargo-lambda when it is missing.
# Needs $target (the cargo target directory) to be set by the caller.
if ! cargo lambda --version >/dev/null 2>&1; then
    cargo_lambda_venv="$target/venv-cargo-lambda"
    if [ ! -x "$cargo_lambda_venv/bin/cargo-lambda" ]; then
        printf '\n=== installing cargo-lambda into %s\n' "$cargo_lambda_venv"
        mkdir -p "$target"
        python3 -m venv "$cargo_lambda_venv"
        "$cargo_lambda_venv/bin/python" -m pip install --quiet --disable-pip-version-check cargo-lambda
    fi
    export PATH="$cargo_lambda_venv/bin:$PATH"
fi
cargo lambda --version
