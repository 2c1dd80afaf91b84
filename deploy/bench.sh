#!/usr/bin/env bash
# Benchmark amphi against containerd's runc shim (start latency and memory per container)
# on one private containerd, with a RELEASE build of the shim.
# Run as root:  sudo ./deploy/bench.sh [--containerd 1.6|1.7|2.1] [--runs N] [--warmup W]
#                                      [--containers K] [--shim PATH]
# Needs what deploy/install-deps.sh installs (containerd 1.6/1.7/2.1, runc, umoci, busybox).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "deploy/bench.sh: run as root (it starts containerd and containers)" >&2
  exit 1
fi

# The shim as it is installed (static release build, see deploy/build-release.sh).
shim=$(./deploy/build-release.sh | tail -n 1)
cargo build -p amphi-e2e --bin amphi-bench
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
# A --shim PATH among the arguments overrides this.
export AMPHI_SHIM="$shim"
exec "$target/debug/amphi-bench" "$@"
