#!/usr/bin/env bash
# Turns the cached Debian 12 image (scripts/vm/build-image.sh) into a local Vagrant box
# for the libvirt provider, and adds it as `minion/debian12` (`--no-add` to only build).
# The box adds to the image: openssh-server, sudo, qemu-guest-agent, rsync, a `vagrant`
# user (passwordless sudo, Vagrant's insecure public key), systemd-networkd with DHCP and
# IPv4 link-local on every NIC, and the host's kubectl when there is one. It boots the
# image's kernel with the tiny initramfs (both shipped inside the box, wired up by the
# box's own Vagrantfile), so the disk needs no bootloader.
# Output: $MINION_VM_CACHE/minion-debian12.box (default /var/cache/minion-vm).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (chroot)"
add=1
for a in "$@"; do
  case "$a" in
    --no-add) add=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
  esac
done
command -v qemu-img >/dev/null || die "qemu-img is missing (package qemu-utils)"
bash "$here/build-image.sh"

work=$(mktemp -d /var/tmp/minion-box.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
log "copying the image's root filesystem"
cp -a "$CACHE/rootfs" "$root"

# Install the box's packages in a private mount namespace: the /proc and /dev mounts the
# package scripts need vanish with it, whatever happens.
key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1 || true)
[ -n "$key" ] || die "Vagrant's insecure public key (keys/vagrant.pub) not found: install vagrant"
cp "$key" "$root/tmp/vagrant.pub"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cat > "$root/tmp/setup.sh" <<'EOF'
set -eu
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends openssh-server sudo qemu-guest-agent rsync
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
useradd -m -s /bin/bash vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant; chmod 440 /etc/sudoers.d/vagrant
echo 'vagrant:vagrant' | chpasswd
echo 'UseDNS no' > /etc/ssh/sshd_config.d/vagrant.conf
systemctl enable ssh.service systemd-networkd.service qemu-guest-agent.service >/dev/null 2>&1 || true
rm -f /tmp/vagrant.pub /tmp/setup.sh
EOF
log "installing openssh-server, sudo, qemu-guest-agent, rsync into the box"
unshare -m --propagation private sh -c "
  mount -t proc proc '$root/proc' && mount --rbind /dev '$root/dev' && mount -t sysfs sys '$root/sys' &&
  chroot '$root' sh /tmp/setup.sh" >"$work/setup.log" 2>&1 \
  || { tail -n 20 "$work/setup.log" >&2; die "box setup failed"; }

# Networking: DHCP where there is a server (QEMU user networking), else IPv4 link-local
# (the loopback UDP tunnel NIC vagrant-libvirt reads the address of).
cat > "$root/etc/systemd/network/50-vagrant.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=ipv4
EOF
echo 'nameserver 10.0.2.3' > "$root/etc/resolv.conf"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
rm -f "$root/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
# qemu-guest-agent starts from its udev rule when the virtio port appears.
echo minion > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 minion\n' > "$root/etc/hosts"
if [ -x /usr/bin/kubectl ]; then cp /usr/bin/kubectl "$root/usr/bin/kubectl"; fi

log "making box.img (qcow2, 16 GiB virtual)"
truncate -s 16G "$work/root.raw"
mkfs.ext4 -q -F -L minion-root -d "$root" "$work/root.raw"
rm -rf "$root"
mkdir -p "$work/box"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/box/box.img"
rm -f "$work/root.raw"
cp "$CACHE/vmlinuz" "$CACHE/initrd.img" "$work/box/"
cat > "$work/box/metadata.json" <<'EOF'
{"provider": "libvirt", "format": "qcow2", "virtual_size": 16}
EOF
cat > "$work/box/Vagrantfile" <<'EOF'
# The box's own defaults: boot its kernel and tiny initramfs directly (the disk is a bare
# ext4 filesystem, no bootloader).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    lv.cmd_line = "console=ttyS0 panic=-1 quiet"
    lv.disk_bus = "virtio"
  end
end
EOF
out="$CACHE/minion-debian12.box"
tar -C "$work/box" -cf "$out.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$out.tmp" "$out"
log "box: $out ($(du -h "$out" | cut -f1))"
if [ "$add" = 1 ]; then
  vagrant box add --force --name minion/debian12 "$out" >&2
  log "added as minion/debian12"
fi
