# Shared helpers for scripts/vm/*.sh (sourced, not run).
# The VM path: a Debian 12 guest booted with QEMU's software emulation (TCG), because the
# CI machines are VMs whose /dev/kvm cannot boot a stock kernel (see docs in vagrant/README.md).

CACHE=${MINION_VM_CACHE:-/var/cache/minion-vm}
# Bump when the image recipe changes: a cached image with another version is rebuilt.
IMAGE_VERSION=3

log() { printf 'minion-vm: %s\n' "$*" >&2; }
die() { printf 'minion-vm: error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this host already uses (deb822 or one-line sources), else deb.debian.org.
debian_mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -v security | grep -oE 'https?://[^ ]+' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# Prints the path of qemu-system-x86_64, installing Debian's qemu-system-x86 when missing,
# but only when that removes, upgrades or downgrades nothing already installed (on the CI
# machines qemu-utils comes from bookworm-backports and Debian's qemu-system-x86 would
# remove it: then install the matching backports qemu-system-x86 yourself).
ensure_qemu() {
  if command -v qemu-system-x86_64 >/dev/null 2>&1; then command -v qemu-system-x86_64; return; fi
  local sim
  sim=$(DEBIAN_FRONTEND=noninteractive apt-get install -s -q --no-install-recommends qemu-system-x86 2>/dev/null || true)
  if echo "$sim" | grep -q '^Inst qemu-system-x86 ' && ! echo "$sim" | grep -qE '^Remv |^Inst [^ ]+ \['; then
    apt_install qemu-system-x86 >&2 && command -v qemu-system-x86_64 && return
  fi
  die "qemu-system-x86_64 is missing and installing Debian's qemu-system-x86 would change installed packages; install a qemu-system-x86 matching your qemu-utils (e.g. from bookworm-backports)"
}
