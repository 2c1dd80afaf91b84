#!/usr/bin/env bash
# THE test command: installs what is missing, then format check, lints, build, and every
# test (unit tests and the end-to-end suites against containerd 1.6, 1.7 and 2.1), then the
# cgroup v2 lane: the cgroup root tests and a set of e2e suites in a pure cgroup v2 guest.
# Run as root from anywhere:  sudo ./tests/run.sh
#
# Environment (all optional):
#   CARGO_TARGET_DIR            cargo's target dir (CI sets a persistent one)
#   AMPHI_CONTAINERD_VERSIONS   e2e versions, comma list (default 1.6,1.7,2.1)
#   AMPHI_E2E_RUNTIME           runtime for the e2e cases (default io.containerd.amphi.v1)
#   AMPHI_TEST_THREADS          parallel tests per binary (default 2)
#   AMPHI_SKIP_INSTALL=1        do not run deploy/install-deps.sh (the checks still run)
#   AMPHI_SKIP_VM=1             skip the cgroup v2 lane (tests/vm: a QEMU guest, ~15 min)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
threads=${AMPHI_TEST_THREADS:-2}

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: run as root (the end-to-end tests start containerd daemons)" >&2
  exit 1
fi

declare -a names=() results=() times=()
failed=0

step() {
  local name=$1
  shift
  echo
  echo "==== $name: $*"
  local start=$SECONDS
  "$@"
  local rc=$?
  names+=("$name")
  times+=("$((SECONDS - start))s")
  if [ "$rc" -eq 0 ]; then
    results+=("ok")
  else
    results+=("FAILED (exit $rc)")
    failed=1
  fi
  return "$rc"
}

summary() {
  echo
  echo "==== summary (runtime ${AMPHI_E2E_RUNTIME:-io.containerd.amphi.v1}, containerd ${AMPHI_CONTAINERD_VERSIONS:-1.6,1.7,2.1})"
  local i
  for i in "${!names[@]}"; do
    printf '  %-8s %-20s %s\n' "${times[$i]}" "${names[$i]}" "${results[$i]}"
  done
  if [ "$failed" -eq 0 ]; then
    echo "ALL PASSED"
  else
    echo "FAILED"
  fi
}
trap summary EXIT

if [ "${AMPHI_SKIP_INSTALL:-0}" != 1 ]; then
  step install-deps ./deploy/install-deps.sh || exit 1
fi
# Each step runs even when an earlier check failed, so one run reports everything; the
# build must pass for the tests to mean anything.
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --all-targets || exit 1
step test cargo test --workspace --no-fail-fast -- --test-threads="$threads"
if [ "${AMPHI_SKIP_VM:-0}" != 1 ]; then
  step vm-cgroup-v2 tests/vm/lane.sh
fi
exit "$failed"
