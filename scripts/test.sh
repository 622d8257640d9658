#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the privileged end-to-end tests
# (network namespaces, cgroups, iptables) that drive the real binaries and kubectl.
# Run as root; with CI set, privileged tests fail instead of skipping when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --locked
# The Python kubernetes client, a real peer of the API server's tests.
if [ ! -x target/pyk8s/bin/python ]; then
  python3 -m venv target/pyk8s
  target/pyk8s/bin/pip install -q kubernetes
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast --lib --bins --tests 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "minion: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
