#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine (as root) to a running minion lab with
# the example app: installs what is missing, builds, brings up the lab "minion" in
# network namespaces, applies examples/web.yaml and waits for the pods.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --bins
lab=target/release/minion-lab
name=${MINION_LAB:-minion}
$lab up --name "$name"
$lab kubectl "$name" -- apply -f examples/web.yaml
$lab kubectl "$name" -- wait --for=condition=Ready pod -l app=web --timeout=120s
$lab kubectl "$name" -- get nodes -o wide
$lab kubectl "$name" -- get pods,svc -o wide
ip=$($lab kubectl "$name" -- get svc web -o jsonpath='{.spec.clusterIP}')
echo
echo "curl the Service from the node:   $lab exec $name node-1 -- curl -s http://$ip/"
echo "watch the NAT counters:           $lab exec $name node-1 -- iptables -t nat -L KUBE-SERVICES -n -v"
echo "tear it all down:                 $lab down $name"
