#!/bin/bash
# Runs the test command inside the cgroup v2 guest, then powers the guest off. Called by
# tests/vm/guest.sh (PID 1) or by systemd's amphi-vm.service with the run directory as $1.
# Reads `argv` and `env` (NUL-separated) and `cwd` from it; the command's output goes to
# the second serial port (the host's stdout); its exit status goes to `rc`.
set -u
share=${1:?usage: command.sh <run dir>}
out=/dev/ttyS1

cut -d' ' -f1 /proc/uptime > "$share/boot-seconds"
stty -F "$out" raw -echo 2>/dev/null
mapfile -d '' argv < "$share/argv"
mapfile -d '' envs < "$share/env"
read -r cwd < "$share/cwd"
if cd "$cwd"; then
  env -i "${envs[@]}" "${argv[@]}" < /dev/null > "$out" 2>&1
  rc=$?
else
  echo "vm: cannot cd to $cwd in the guest" > "$out"
  rc=126
fi
cut -d' ' -f1 /proc/uptime > "$share/end-seconds"
echo "$rc" > "$share/rc.tmp" && mv "$share/rc.tmp" "$share/rc"
sync
/bin/busybox poweroff -f
