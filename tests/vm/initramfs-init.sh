#!/bin/sh
# /init of the cgroup v2 guest's initramfs (busybox sh; built by tests/vm/prepare.sh).
# Loads the virtio, 9p and overlay modules, mounts the host's `/` (9p tag `hostroot`,
# read-only) under an overlay with a tmpfs upper layer, mounts the run directory (9p tag
# `amphivm`, writable) at /mnt/amphi-vm, and switch_roots into the overlay running
# /mnt/amphi-vm/guest.sh (tests/vm/guest.sh) with bash as PID 1.
# Any failure powers the guest off; the host then finds no exit status and fails loudly.
export PATH=/bin
/bin/busybox --install -s /bin

fail() {
  echo "vm-init: ERROR: $*" >&2
  echo "vm-init: ERROR: $*" > /dev/ttyS0
  sync
  poweroff -f
  sleep 60
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"

while read -r m; do
  insmod "/modules/$m" || fail "insmod $m"
done < /modules/order

opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" hostroot /host || fail "mount the host's / (9p hostroot)"
mount -t tmpfs -o mode=755 tmpfs /upper || fail "mount the overlay's tmpfs"
mkdir -p /upper/upper /upper/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/upper,workdir=/upper/work,xino=on /newroot ||
  fail "mount the overlay root"
mkdir -p /newroot/mnt/amphi-vm
mount -t 9p -o "$opts" amphivm /newroot/mnt/amphi-vm || fail "mount the run directory (9p amphivm)"
[ -f /newroot/mnt/amphi-vm/guest.sh ] || fail "/mnt/amphi-vm/guest.sh is missing"

for d in dev proc sys; do
  mount --move "/$d" "/newroot/$d" || fail "move /$d"
done
exec switch_root /newroot /bin/bash /mnt/amphi-vm/guest.sh
