#!/usr/bin/env bash
# Builds (once, then reuses) a Debian 12 guest image for running minion under cgroup v2
# and systemd: a debootstrap minbase root filesystem with the kernel and what minion
# needs at runtime, a tiny busybox initramfs that mounts /dev/vda and switch_roots to
# systemd, and a raw ext4 image of the root. Everything lands in $MINION_VM_CACHE
# (default /var/cache/minion-vm):
#   rootfs/      the root filesystem tree (kept: scripts/vm/build-box.sh derives from it)
#   root.raw     ext4 image of rootfs (2 GiB sparse), booted read-only with snapshot=on
#   vmlinuz      the guest kernel
#   initrd.img   the tiny initramfs
# Run as root. `--force` rebuilds everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot)"
force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
  esac
done

mkdir -p "$CACHE"
if [ "$force" = 0 ] && [ -f "$CACHE/root.raw" ] && [ -f "$CACHE/initrd.img" ] && [ -f "$CACHE/vmlinuz" ] \
    && [ "$(cat "$CACHE/image.version" 2>/dev/null)" = "$IMAGE_VERSION" ]; then
  log "reusing cached image in $CACHE (--force to rebuild)"
  exit 0
fi

command -v debootstrap >/dev/null || apt_install debootstrap
command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
command -v cpio >/dev/null || apt_install cpio
[ -x /bin/busybox ] || apt_install busybox-static

packages=systemd-sysv,udev,linux-image-amd64,iproute2,iptables,nftables,conntrack,busybox-static,kmod,procps,util-linux,ca-certificates
rootfs="$CACHE/rootfs"
if [ "$force" = 1 ] || [ ! -f "$rootfs/.debootstrap-done" ]; then
  rm -rf "$rootfs" "$rootfs.tmp"
  mirror=$(debian_mirror)
  log "debootstrap bookworm from $mirror (a few minutes)"
  # In a private mount namespace: the /proc and /sys debootstrap mounts inside the target
  # vanish with it even if it fails half way.
  unshare -m --propagation private debootstrap --variant=minbase --include="$packages" bookworm "$rootfs.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  mv "$rootfs.tmp" "$rootfs"
  touch "$rootfs/.debootstrap-done"
fi

# ---- configure the guest -------------------------------------------------------------
log "configuring the guest"
echo minion-vm > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 minion-vm\n' > "$rootfs/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 0\n' > "$rootfs/etc/fstab"
# A root without password on the serial console only matters for debugging by hand.
chroot "$rootfs" passwd -d root >/dev/null
# Units that cost boot time and do nothing useful in a throwaway guest.
for u in getty@tty1.service serial-getty@ttyS0.service getty.target console-getty.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
         dpkg-db-backup.timer systemd-tmpfiles-clean.timer man-db.timer logrotate.timer \
         systemd-timesyncd.service systemd-networkd-wait-online.service \
         systemd-journal-flush.service systemd-update-utmp.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
done

# The CI hook: runs only when the kernel command line has `minion.ci`. It mounts the 9p
# share tagged `ci`, runs its run.sh, writes run.log and exit-code back, and powers off.
cat > "$rootfs/usr/local/sbin/minion-ci" <<'EOF'
#!/bin/sh
# Guest side of scripts/vm/run-tests.sh.
mkdir -p /mnt/ci
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ci /mnt/ci; then
  echo "minion-ci: cannot mount the 9p share 'ci'" >/dev/console
  systemctl --no-block poweroff
  exit 1
fi
rc=0
sh /mnt/ci/run.sh >/mnt/ci/run.log 2>&1 || rc=$?
echo "$rc" >/mnt/ci/exit-code
sync
umount /mnt/ci || true
systemctl --no-block poweroff
EOF
chmod 755 "$rootfs/usr/local/sbin/minion-ci"
cat > "$rootfs/etc/systemd/system/minion-ci.service" <<'EOF'
[Unit]
Description=minion CI hook (runs /mnt/ci/run.sh from the 9p share, then powers off)
ConditionKernelCommandLine=minion.ci
After=local-fs.target systemd-modules-load.service
Wants=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/minion-ci
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/minion-ci.service "$rootfs/etc/systemd/system/multi-user.target.wants/minion-ci.service"
# minion's runtime needs these modules in a cgroup-v2/netfilter guest; load them at boot.
printf '9p\n9pnet_virtio\noverlay\nbr_netfilter\nveth\nbridge\n' > "$rootfs/etc/modules-load.d/minion.conf"

# ---- kernel and tiny initramfs -------------------------------------------------------
kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | sort -V | tail -n1)")
log "kernel $kver"
cp "$rootfs/boot/vmlinuz-$kver" "$CACHE/vmlinuz"

ird=$(mktemp -d)
trap 'rm -rf "$ird"' EXIT
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$ird/bin/busybox"
: > "$ird/modules.order"
for m in virtio_pci virtio_blk ext4 9p 9pnet_virtio; do
  # `insmod /path` lines (paths under $rootfs) in dependency order; builtins print `builtin name`.
  modprobe -d "$rootfs" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
    base=$(basename "$ko"); base=${base%.xz}; base=${base%.zst}
    grep -qx "/modules/$base" "$ird/modules.order" && continue
    case "$ko" in
      *.xz) xz -dc "$ko" > "$ird/modules/$base" ;;
      *.zst) zstd -qdc "$ko" > "$ird/modules/$base" ;;
      *) cp "$ko" "$ird/modules/$base" ;;
    esac
    echo "/modules/$base" >> "$ird/modules.order"
  done
done
cat > "$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if ! mount -t ext4 /dev/vda /newroot; then
  echo "initramfs: cannot mount /dev/vda"; poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initrd.img"
log "initramfs: $(wc -l < "$ird/modules.order") modules, $(du -h "$CACHE/initrd.img" | cut -f1)"

# ---- ext4 image -----------------------------------------------------------------------
log "making root.raw (ext4, 2 GiB sparse)"
rm -f "$CACHE/root.raw.tmp"
truncate -s 2G "$CACHE/root.raw.tmp"
mkfs.ext4 -q -F -L minion-root -d "$rootfs" "$CACHE/root.raw.tmp"
mv "$CACHE/root.raw.tmp" "$CACHE/root.raw"
echo "$IMAGE_VERSION" > "$CACHE/image.version"
log "image ready: $CACHE/root.raw ($(du -h "$CACHE/root.raw" | cut -f1) used)"
