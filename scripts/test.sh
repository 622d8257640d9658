#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the privileged end-to-end tests
# (network namespaces, cgroups, iptables) that drive the real binaries and kubectl.
# Run as root; with CI set, privileged tests fail instead of skipping when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
