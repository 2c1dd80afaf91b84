#!/usr/bin/env bash
# Builds the shim the way it should be installed: release, statically linked, not
# position-independent. The shim re-executes itself for every container, so the dynamic
# loader and PIE relocations would be paid at every start, and relocated pages are
# private memory in every shim process. Measured with deploy/bench.sh (containerd 2.1.9):
# PSS per container 1.4 MiB static vs 2.8 MiB PIE; start median 0.56x vs 0.63x runc's.
#
#   deploy/build-release.sh        # prints the path of the binary on its last line
#
# The flags need an explicit --target, so they do not reach build scripts and proc macros.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
triple=x86_64-unknown-linux-gnu
# libseccomp (Debian's libseccomp-dev) is linked statically too.
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release -p amphi-shim --target "$triple" >&2
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
echo "$target/$triple/release/containerd-shim-amphi-v1"
