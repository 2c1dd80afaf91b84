#!/bin/bash
# Stage 2 of the cgroup v2 guest (PID 1 after switch_root; copied by tests/vm/run.sh into
# the run directory, which the guest sees at /mnt/amphi-vm). The root is an overlay of the
# host's `/` (read-only 9p) with a tmpfs upper layer.
#
# Prepares what the tests need (proc, sys, devtmpfs, devpts, tmpfs on /run /tmp /var/tmp
# /var/lib/amphi /var/lib/containerd, pure cgroup2 on /sys/fs/cgroup, the unpacked kernel's
# modules on /lib/modules/<version>, loopback up), then runs the command from
# /mnt/amphi-vm/command in /mnt/amphi-vm/cwd with the environment in /mnt/amphi-vm/env,
# output on the second serial port (the host's stdout), and writes its exit status to
# /mnt/amphi-vm/rc. With `systemd` in /mnt/amphi-vm/mode it hands PID 1 to systemd instead,
# which runs the same command from a unit (amphi-vm.service). Always ends in poweroff -f.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
share=/mnt/amphi-vm
console=/dev/ttyS0

log() { echo "vm-guest: $*" > "$console"; }
off() {
  sync
  umount "$share" 2>/dev/null
  poweroff -f
  sleep 600
}
fail() {
  log "ERROR: $*"
  echo "vm-guest: ERROR: $*" > /dev/ttyS1
  off
}

must() { "$@" || fail "$*"; }

read -r kver < "$share/kernel-version" || fail "no $share/kernel-version"
read -r mode < "$share/mode" || mode=plain

must mkdir -p /dev/pts
must mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
must mkdir -p /dev/shm
must mount -t tmpfs -o mode=1777 shm /dev/shm
# The command's directory and cargo's target directory come from the host's `/`; the tmpfs
# mounted below over a parent of theirs (a repository cloned under /tmp, say) would hide
# them, so they are carried over onto it with a bind mount.
read -r cwd < "$share/cwd" || cwd=
target=$(tr '\0' '\n' < "$share/env" | sed -n 's/^CARGO_TARGET_DIR=//p')
keep=()
for p in "$cwd" "$target"; do
  case "$p" in /tmp/*|/var/tmp/*|/run/*) ;; *) continue ;; esac
  must mkdir -p "/mnt/keep/${#keep[@]}"
  must mount --bind "$p" "/mnt/keep/${#keep[@]}"
  keep+=("$p")
done
must mount -t tmpfs -o mode=755 tmpfs /run
must mount -t tmpfs -o mode=1777 tmpfs /tmp
must mount -t tmpfs -o mode=1777 tmpfs /var/tmp
for i in "${!keep[@]}"; do
  must mkdir -p "${keep[$i]}"
  must mount --move "/mnt/keep/$i" "${keep[$i]}"
done
# containerd's overlayfs snapshotter refuses an overlayfs upper layer: tmpfs for its state.
for d in /var/lib/amphi /var/lib/containerd /var/lib/cni; do
  must mkdir -p "$d"
  must mount -t tmpfs -o mode=711 tmpfs "$d"
done
read -r modules < "$share/modules-dir" || fail "no $share/modules-dir"
must mkdir -p "/lib/modules/$kver"
must mount --bind "$modules" "/lib/modules/$kver"
mount -t securityfs securityfs /sys/kernel/security || log "cannot mount securityfs"
mkdir -p /dev/mqueue && mount -t mqueue mqueue /dev/mqueue || log "cannot mount mqueue"

if [ "$mode" = systemd ]; then
  # systemd mounts cgroup2 itself (252 defaults to the unified hierarchy).
  must mkdir -p /run/systemd/system
  must cp "$share/amphi-vm.service" /run/systemd/system/amphi-vm.service
  must cp "$share/amphi-vm.target" /run/systemd/system/amphi-vm.target
  log "starting systemd"
  exec /lib/systemd/systemd --unit=amphi-vm.target --log-target=console --show-status=0
  fail "exec /lib/systemd/systemd"
fi

# Pure cgroup v2: the host's v1 mounts under /sys/fs/cgroup are not carried over (sysfs is
# the guest's own); one cgroup2 hierarchy on /sys/fs/cgroup itself.
must mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
# Controllers for the children of the root (amphi and runc create cgroups right below it).
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
    log "cannot enable the $c controller for children of the root"
done
ip link set lo up || fail "ip link set lo up"
hostname amphi-vm

exec "$share/command.sh" "$share"
