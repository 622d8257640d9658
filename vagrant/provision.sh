#!/usr/bin/env bash
# Provisions the minion Vagrant VM (run by vagrant as root, inside the guest).
#   build:    scripts/install-deps.sh + scripts/up.sh from the synced repo (needs a network)
#   prebuilt: the host's minion-* binaries synced to /opt/minion/bin; starts the lab and
#             the example app the way scripts/up.sh does, without installing or building.
# Either way `kubectl` for the vagrant user talks to the lab (through minion-lab, from the
# control plane's network namespace).
set -euo pipefail
mode=${1:-build}
repo=/home/vagrant/minion
cd "$repo"

echo "minion: guest $(uname -r), /sys/fs/cgroup is $(stat -f -c %T /sys/fs/cgroup)"
case "$mode" in
  build)
    bash scripts/install-deps.sh
    bash scripts/up.sh
    lab=$repo/target/release/minion-lab
    ;;
  prebuilt)
    lab=/opt/minion/bin/minion-lab
    [ -x "$lab" ] || { echo "minion: error: $lab missing (build on the host: cargo build --workspace --bins)" >&2; exit 1; }
    for t in kubectl iptables ip nsenter conntrack busybox; do
      command -v "$t" >/dev/null || { echo "minion: error: $t missing in the box" >&2; exit 1; }
    done
    name=minion
    if ! "$lab" status "$name" >/dev/null 2>&1; then
      # Software emulation is slow: wait longer than the lab's default for readiness.
      "$lab" up --name "$name" --timeout 600
    fi
    "$lab" kubectl "$name" -- apply -f examples/web.yaml
    "$lab" kubectl "$name" -- wait --for=condition=Ready pod -l app=web --timeout=600s
    "$lab" kubectl "$name" -- get nodes -o wide
    "$lab" kubectl "$name" -- get pods,svc -o wide
    ;;
  *) echo "minion: error: unknown mode $mode (build or prebuilt)" >&2; exit 1 ;;
esac

# `kubectl` for the vagrant user: the real kubectl, run by minion-lab inside the lab's
# control-plane network namespace (root needed for nsenter).
install -d -o vagrant -g vagrant /home/vagrant/bin
cat > /home/vagrant/bin/kubectl <<EOF
#!/bin/sh
exec sudo $lab kubectl minion -- "\$@"
EOF
chmod 755 /home/vagrant/bin/kubectl
chown vagrant:vagrant /home/vagrant/bin/kubectl
grep -q 'HOME/bin' /home/vagrant/.bashrc 2>/dev/null || echo 'PATH="$HOME/bin:$PATH"' >> /home/vagrant/.bashrc
echo "minion: ready. Try: vagrant ssh -c 'kubectl get nodes -o wide'"
