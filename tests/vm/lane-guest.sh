#!/usr/bin/env bash
# Runs inside the cgroup v2 guest (started by tests/vm/lane.sh through tests/vm/run.sh).
# Arguments: <name>=<test binary> for `linux-executor` and the e2e suites. Checks that the
# cgroup root is pure v2 with the controllers the tests need, runs the linux-executor root
# tests and each suite's cases for containerd 2.1, prints a summary with timings, and exits
# non-zero when anything failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
threads=${AMPHI_TEST_THREADS:-2}

# Which cases of each e2e suite run in the guest (libtest name filters).
filters() {
  case "$1" in
    lifecycle|control|exec|wasm|cri|tty|faults|harness) echo "::v2_1" ;;
    features) echo "memory_limit_oom_kill::v2_1 pids_limit_from_spec::v2_1 task_ps_and_metrics::v2_1" ;;
    # The attacks whose defence differs on cgroup v2: host device nodes (the eBPF program).
    attack) echo "devices::" ;;
    *) echo "::v2_1" ;;
  esac
}

declare -a names=() results=() times=()
failed=0
record() {
  names+=("$1")
  times+=("$2s")
  if [ "$3" -eq 0 ]; then results+=("ok"); else results+=("FAILED (exit $3)"); failed=1; fi
}

echo "==== vm: $(uname -r), $(nproc) vCPU, cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
start=$SECONDS
rc=0
for c in cpuset cpu io memory pids; do
  grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || { echo "vm: controller $c missing"; rc=1; }
done
if grep -q ' - cgroup ' /proc/self/mountinfo; then
  echo "vm: a cgroup v1 hierarchy is mounted:"; grep ' - cgroup ' /proc/self/mountinfo; rc=1
fi
record cgroup-v2-root $((SECONDS - start)) "$rc"

for arg in "$@"; do
  name=${arg%%=*}
  exe=${arg#*=}
  start=$SECONDS
  echo
  if [ "$name" = linux-executor ]; then
    echo "==== vm: linux-executor root tests ($exe)"
    (cd "$repo/linux-executor" && "$exe" cgroup::tests::root_ --test-threads=1 --color=never)
  else
    # shellcheck disable=SC2046 # the filters are words
    echo "==== vm: e2e $name on containerd 2.1: $(filters "$name")"
    (cd "$repo/tests" && "$exe" $(filters "$name") --test-threads="$threads" --color=never)
  fi
  record "$name" $((SECONDS - start)) $?
done

echo
echo "==== vm summary (cgroup v2 guest)"
for i in "${!names[@]}"; do
  printf '  %-8s %-20s %s\n' "${times[$i]}" "${names[$i]}" "${results[$i]}"
done
exit "$failed"
