#!/usr/bin/env bash
# THE setup + demo command: installs what is missing, builds the shim and the demo, then
# runs the demo against a private containerd 2.1 (never the host's containerd).
# Run as root:  sudo ./deploy/demo.sh [--containerd 1.6|1.7|2.1]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
  echo "deploy/demo.sh: run as root (it installs packages and starts containerd)" >&2
  exit 1
fi

./deploy/install-deps.sh
cargo build -p amphi-shim -p amphi-e2e
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
exec "$target/debug/amphi-demo" "$@"
