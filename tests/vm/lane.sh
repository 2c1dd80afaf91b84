#!/usr/bin/env bash
# The cgroup v2 lane of tests/run.sh: builds the workspace on the host as tests/run.sh does
# (a no-op after its build step), then boots the pure cgroup v2 guest
# (tests/vm/run.sh) once and runs tests/vm/lane-guest.sh in it: the cgroup root check, the
# linux-executor root tests (the real v2 driver) and a chosen set of end-to-end cases
# against containerd 2.1. The guest never compiles: it runs the prebuilt test binaries.
#
#   tests/vm/lane.sh [run.sh options]      e.g. tests/vm/lane.sh --mem 8G
#
# Environment: CARGO_TARGET_DIR as for cargo; AMPHI_VM_SUITES (default
# "lifecycle control features attack") picks the e2e test binaries; AMPHI_TEST_THREADS (default 2).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
export CARGO_TARGET_DIR=$target
suites=${AMPHI_VM_SUITES:-lifecycle control features attack}

say() { echo "vm-lane: $*" >&2; }

# The same build as tests/run.sh's build step (the whole workspace, so features unify the
# same way and nothing is rebuilt after it), then the test executables from cargo's JSON
# messages (a no-op build).
cargo build --workspace --all-targets
exes=$(cargo test --workspace --no-run --message-format=json |
  grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//')
# The executable of the test target named $1 (its crate name).
pick() { grep -E "/deps/$1-[0-9a-f]+\$" <<<"$exes" | tail -n 1; }

args=()
unit=$(pick amphi_linux_executor)
[ -x "$unit" ] || { say "ERROR: no linux-executor test binary"; exit 1; }
args+=("linux-executor=$unit")
for s in $suites; do
  exe=$(pick "$s")
  [ -x "$exe" ] || { say "ERROR: no test binary for the $s suite"; exit 1; }
  args+=("$s=$exe")
done

export AMPHI_SHIM=${AMPHI_SHIM:-$target/debug/containerd-shim-amphi-v1}
export AMPHI_CONTAINERD_VERSIONS=2.1
exec "$repo/tests/vm/run.sh" "$@" -- "$repo/tests/vm/lane-guest.sh" "${args[@]}"
