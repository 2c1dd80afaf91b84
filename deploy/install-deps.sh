#!/usr/bin/env bash
# Installs everything amphi's build, tests and demo need on Debian 12 (bookworm). Run as
# root. Idempotent: packages already installed and containerd builds already fetched are
# left alone, so a second run only checks.
#
#   deploy/install-deps.sh
#
# Environment: AMPHI_CONTAINERD_DIR (default /var/cache/amphi/containerd) receives the
# containerd 1.7.24 (trixie) and 2.1.9 (sid) builds the end-to-end suite also runs against.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
containerd_dir=${AMPHI_CONTAINERD_DIR:-/var/cache/amphi/containerd}
min_rust=1.90

say() { echo "install-deps: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages)"

# What the tests use: containerd 1.6 (daemon, ctr, runc shim) and runc as the reference
# runtime, umoci + tar + busybox-static to build the test image, protoc for the ttrpc/prost
# build scripts, iproute2 for network checks, skopeo for image layouts, libseccomp-dev and
# pkg-config to build and link the seccomp support (statically in the release binary);
# qemu-system-x86, kmod (depmod) and apparmor (apparmor_parser) for the cgroup v2 lane in a
# VM (tests/vm).
packages=(
  containerd runc umoci busybox-static skopeo protobuf-compiler iproute2
  ca-certificates tar coreutils util-linux procps gcc libc6-dev libseccomp-dev pkg-config
  qemu-system-x86 kmod apparmor
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing: ${missing[*]}"
  # No service may start during the install (there is no systemd here, and tests run
  # their own daemons): a policy-rc.d that denies every start, removed afterwards.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  before=$(pgrep -x containerd || true)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
  if [ "$created_policy" -eq 1 ]; then
    rm -f /usr/sbin/policy-rc.d
  fi
  # Stop any containerd the package managed to start anyway (only ones that appeared now).
  for pid in $(pgrep -x containerd || true); do
    if ! grep -qx "$pid" <<<"$before"; then
      say "stopping containerd $pid started by the package install"
      kill "$pid" 2>/dev/null || true
    fi
  done
else
  say "Debian packages already installed"
fi

for f in /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc \
         /usr/bin/umoci /bin/busybox /usr/bin/protoc; do
  [ -x "$f" ] || die "$f is missing after the install"
done

# Rust: no rustup download is possible offline, so only check.
for tool in cargo rustc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ -x "${HOME:-/root}/.cargo/bin/$tool" ]; then
      die "$tool is in ${HOME:-/root}/.cargo/bin but not on PATH: export PATH=\"\$HOME/.cargo/bin:\$PATH\" (sudo resets PATH: use sudo -E env PATH=\"\$PATH\" ...)"
    fi
    die "$tool not found: install a Rust toolchain >= $min_rust (rustup) and put it on PATH"
  fi
done
rust_version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$min_rust" "$rust_version" | sort -V | head -n1)" != "$min_rust" ]; then
  die "rustc $rust_version is too old: amphi needs >= $min_rust (edition 2024, let chains)"
fi
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
# The Wasm end-to-end suite builds a WASI 0.2 component fixture (tests/fixtures/wasm).
rustup target add wasm32-wasip2 >/dev/null 2>&1 || die "rustup target add wasm32-wasip2 failed (the Wasm e2e suite builds a component with it)"

# containerd 1.7 and 2.1 for the version matrix, unpacked privately (never installed).
"$repo/tests/scripts/fetch-containerd.sh" "$containerd_dir" trixie=1.7.24 sid=2.1.9
for v in 1.7.24 2.1.9; do
  for b in containerd ctr containerd-shim-runc-v2; do
    [ -x "$containerd_dir/$v/usr/bin/$b" ] || die "$containerd_dir/$v/usr/bin/$b is missing"
  done
done

# The cgroup v2 lane's guest (tests/vm): Debian's kernel, unpacked, and its initramfs,
# cached under /var/cache/amphi/vm (AMPHI_VM_CACHE).
[ -x /usr/bin/qemu-system-x86_64 ] || die "/usr/bin/qemu-system-x86_64 is missing after the install"
vm_kernel=$("$repo/tests/vm/prepare.sh") || die "tests/vm/prepare.sh failed"

say "ok: containerd $(/usr/bin/containerd --version | awk '{print $3}'), runc $(/usr/sbin/runc --version | awk 'NR==1{print $3}'), rustc $rust_version, fetched containerd in $containerd_dir: $(ls "$containerd_dir" | tr '\n' ' '), VM kernel $vm_kernel"
