#!/usr/bin/env bash
# Installs what minion needs on a Debian/Ubuntu machine, as root: the build toolchain,
# the kernel tools the lab and tests use, and the real peers used by tests/benchmarks.
set -euo pipefail

packages=(
  build-essential pkg-config ca-certificates curl git libseccomp-dev openssl protobuf-compiler
  iproute2 iptables conntrack util-linux procps kmod
  busybox-static dnsutils sqlite3 python3 python3-venv
  runc crun containernetworking-plugins containerd
  nftables docker-registry skopeo umoci dnsperf unbound etcd-server
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # Peers such as unbound, etcd and the registry are started by the tests themselves,
  # privately; keep their packages from starting system-wide services on install.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$guard" ]; then rm -f "$guard"; fi
fi

# kubectl: the real client. Prefer one already installed; otherwise Debian's package.
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl 2>/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client
fi

# Rust: the machine's toolchain if present, else rustup's stable.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
