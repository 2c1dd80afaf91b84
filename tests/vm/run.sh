#!/usr/bin/env bash
# Boots a pure cgroup v2 Linux guest under QEMU (software emulation) and runs one command
# in it, with the host's `/` as its root (read-only 9p under a tmpfs overlay), the host's
# working directory and the environment the tests need. The command's output is streamed
# to stdout; the script exits with the command's exit status. See tests/vm/README.md.
#
#   tests/vm/run.sh [--systemd] [--apparmor] [--mem 8G] [--cpus 2] [--timeout 2400] -- <command...>
#
#   --systemd    boot /lib/systemd/systemd as PID 1; a unit (amphi-vm.service) runs the command
#   --apparmor   kernel command line `apparmor=1 security=apparmor`
#   --mem SIZE   guest memory (QEMU -m syntax), default $AMPHI_VM_MEM or 8G
#   --cpus N     vCPUs, default $AMPHI_VM_CPUS or 2 (at most 2: the machine is shared)
#   --timeout S  seconds before QEMU is killed and the run fails, default $AMPHI_VM_TIMEOUT or 2400
#
# Passed into the guest: PATH, HOME, USER, TERM, LANG, and every variable whose name starts
# with AMPHI_, CARGO, RUST or RUSTUP_ (e.g. CARGO_TARGET_DIR). Exit status 125 means the
# guest never reported one (boot failure, crash or timeout): the kernel console log is
# printed. Needs root, qemu-system-x86 and what tests/vm/prepare.sh needs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AMPHI_VM_CACHE:-/var/cache/amphi/vm}
mode=plain
apparmor=0
mem=${AMPHI_VM_MEM:-8G}
cpus=${AMPHI_VM_CPUS:-2}
timeout=${AMPHI_VM_TIMEOUT:-2400}

say() { echo "vm: $*" >&2; }
die() { say "ERROR: $*"; exit 125; }
usage() { sed -n '7,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --systemd) mode=systemd ;;
    --apparmor) apparmor=1 ;;
    --mem) mem=${2:?--mem needs a size}; shift ;;
    --cpus) cpus=${2:?--cpus needs a count}; shift ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) say "unknown option $1"; usage ;;
  esac
  shift
done
[ $# -gt 0 ] || { say "no command given"; usage; }
case "$cpus" in 1|2) ;; *) die "--cpus $cpus: use 1 or 2 (the machine is shared)" ;; esac
case "$timeout" in ''|*[!0-9]*) die "--timeout $timeout is not a number of seconds" ;; esac

[ "$(id -u)" -eq 0 ] || die "run as root (the guest's root is the host's / shared with its owners)"
command -v qemu-system-x86_64 >/dev/null 2>&1 ||
  die "qemu-system-x86_64 not found (Debian's qemu-system-x86; run deploy/install-deps.sh)"

kdir=$("$here/prepare.sh") || die "tests/vm/prepare.sh failed"
kver=$(cat "$cache/kernel-version")

mkdir -p "$cache/runs"
# Run directories left by a run.sh killed with SIGKILL: their QEMU (pid file) is gone.
for old in "$cache"/runs/run.*; do
  [ -d "$old" ] || continue
  if [ -s "$old/qemu.pid" ]; then
    kill -0 "$(cat "$old/qemu.pid")" 2>/dev/null || rm -rf "$old"
  elif [ -n "$(find "$old" -maxdepth 0 -mmin +120)" ]; then
    rm -rf "$old"
  fi
done
run=$(mktemp -d "$cache/runs/run.XXXXXX")
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    say "stopping QEMU (pid $qpid)"
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  if [ "${AMPHI_VM_KEEP:-0}" = 1 ]; then
    say "kept the run directory $run"
  else
    rm -rf "$run"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The run directory is the guest's /mnt/amphi-vm: scripts in, exit status and timings out.
cp "$here/guest.sh" "$here/command.sh" "$run/"
chmod 755 "$run/guest.sh" "$run/command.sh"
echo "$kver" > "$run/kernel-version"
echo "$kdir/root/lib/modules/$kver" > "$run/modules-dir"
echo "$mode" > "$run/mode"
pwd > "$run/cwd"
printf '%s\0' "$@" > "$run/argv"
: > "$run/env"
while IFS= read -r name; do
  case "$name" in
    PATH|HOME|USER|TERM|LANG|AMPHI_*|CARGO*|RUST*) printf '%s=%s\0' "$name" "${!name}" >> "$run/env" ;;
  esac
done < <(compgen -e)
printf '%s\0' "AMPHI_VM=1" >> "$run/env"
if [ "$mode" = systemd ]; then
  cat > "$run/amphi-vm.target" <<'EOF'
[Unit]
Description=amphi test command in the cgroup v2 guest
Requires=amphi-vm.service dbus.socket
After=amphi-vm.service dbus.socket
AllowIsolate=yes
EOF
  cat > "$run/amphi-vm.service" <<'EOF'
[Unit]
Description=amphi test command
After=dbus.socket systemd-journald.service

[Service]
Type=oneshot
ExecStart=/mnt/amphi-vm/command.sh /mnt/amphi-vm
StandardInput=null
StandardOutput=null
StandardError=journal+console
Delegate=yes
EOF
fi

append="console=ttyS0 panic=-1 quiet loglevel=4"
if [ "$apparmor" = 1 ]; then
  append+=" apparmor=1 security=apparmor"
fi

# TCG, not KVM: a KVM guest hangs after the BIOS on this machine kind.
qemu=(qemu-system-x86_64 -name amphi-vm -nodefaults -no-user-config -display none -no-reboot
  -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem"
  -kernel "$kdir/root/boot/vmlinuz-$kver" -initrd "$kdir/initramfs.gz" -append "$append"
  -serial "file:$run/console.log"
  -chardev stdio,id=out,signal=off -serial chardev:out
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap
  -virtfs "local,path=$run,mount_tag=amphivm,security_model=passthrough,multidevs=remap"
  -pidfile "$run/qemu.pid")

say "booting $kver ($mode, ${cpus} vCPU, $mem, timeout ${timeout}s): $*"
start=$SECONDS
# pdeathsig: even a SIGKILL of this script stops QEMU (timeout passes the TERM on).
setpriv --pdeathsig TERM timeout --kill-after=30 "$timeout" "${qemu[@]}" < /dev/null &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=
elapsed=$((SECONDS - start))

if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
  say "ERROR: the guest did not finish within ${timeout}s: QEMU killed"
fi
if [ ! -s "$run/rc" ]; then
  say "ERROR: the guest reported no exit status (QEMU exit $qrc after ${elapsed}s); kernel console:"
  tail -n 60 "$run/console.log" >&2 || true
  exit 125
fi
rc=$(cat "$run/rc")
say "guest up after $(cat "$run/boot-seconds" 2>/dev/null || echo '?')s of guest uptime; command exit $rc after $(cat "$run/end-seconds" 2>/dev/null || echo '?')s uptime; ${elapsed}s wall in QEMU"
if [ "$rc" -ne 0 ] && [ -s "$run/console.log" ]; then
  say "last lines of the kernel console:"
  tail -n 20 "$run/console.log" >&2 || true
fi
exit "$rc"
