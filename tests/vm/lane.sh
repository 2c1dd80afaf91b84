#!/usr/bin/env bash
# The cgroup v2 lane of tests/run.sh: builds the shim and the test binaries on the host (a
# no-op when the workspace build already did), then boots the pure cgroup v2 guest
# (tests/vm/run.sh) once and runs tests/vm/lane-guest.sh in it: the cgroup root check, the
# linux-executor root tests (the real v2 driver) and a chosen set of end-to-end cases
# against containerd 2.1. The guest never compiles: it runs the prebuilt test binaries.
#
#   tests/vm/lane.sh [run.sh options]      e.g. tests/vm/lane.sh --mem 8G
#
# Environment: CARGO_TARGET_DIR as for cargo; AMPHI_VM_SUITES (default
# "lifecycle control features") picks the e2e test binaries; AMPHI_TEST_THREADS (default 2).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
export CARGO_TARGET_DIR=$target
suites=${AMPHI_VM_SUITES:-lifecycle control features}

say() { echo "vm-lane: $*" >&2; }

# The executable of test target $1 (its crate name), from cargo's JSON build messages.
test_exe() {
  local name=$1
  shift
  cargo test "$@" --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' |
    grep -E "/deps/${name}-[0-9a-f]+\$" | tail -n 1
}

cargo build -p amphi-shim
cargo test -p amphi-linux-executor --lib --no-run
args=()
unit=$(test_exe amphi_linux_executor -p amphi-linux-executor --lib)
[ -x "$unit" ] || { say "ERROR: no linux-executor test binary"; exit 1; }
args+=("linux-executor=$unit")
for s in $suites; do
  cargo test -p amphi-e2e --test "$s" --no-run
  exe=$(test_exe "$s" -p amphi-e2e --test "$s")
  [ -x "$exe" ] || { say "ERROR: no test binary for the $s suite"; exit 1; }
  args+=("$s=$exe")
done

export AMPHI_SHIM=${AMPHI_SHIM:-$target/debug/containerd-shim-amphi-v1}
export AMPHI_CONTAINERD_VERSIONS=2.1
exec "$repo/tests/vm/run.sh" "$@" -- "$repo/tests/vm/lane-guest.sh" "${args[@]}"
