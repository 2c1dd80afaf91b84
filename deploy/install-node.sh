#!/usr/bin/env bash
# Install amphi on a node that already runs containerd:
#   sudo deploy/install-node.sh <path to containerd-shim-amphi-v1> [--configure]
# Copies the shim to /usr/local/bin (containerd finds containerd-shim-amphi-v1 on PATH)
# and, with --configure, appends the runtime section matching the running containerd's
# config version to /etc/containerd/config.toml (it never rewrites existing sections).
set -euo pipefail
bin=${1:?usage: install-node.sh <path to containerd-shim-amphi-v1> [--configure]}
configure=${2:-}
here=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" = 0 ] || { echo "install-node: run as root" >&2; exit 1; }
[ -x "$bin" ] || { echo "install-node: $bin is not an executable" >&2; exit 1; }
install -m 0755 "$bin" /usr/local/bin/containerd-shim-amphi-v1
/usr/local/bin/containerd-shim-amphi-v1 -v

if [ "$configure" = "--configure" ]; then
  conf=/etc/containerd/config.toml
  major=$(containerd --version | sed -E 's/.* v?([0-9]+)\..*/\1/')
  snippet="$here/containerd/config-v2.toml"
  [ "$major" -ge 2 ] && snippet="$here/containerd/config-v3.toml"
  if [ -f "$conf" ] && grep -q 'runtimes.amphi\]' "$conf"; then
    echo "install-node: $conf already has an amphi runtime; left unchanged"
  else
    mkdir -p "$(dirname "$conf")"
    if [ ! -s "$conf" ]; then
      cat "$snippet" > "$conf"
    else
      # The existing file declares its own version; append only the runtime table.
      sed -n '/^\[plugins/,$p' "$snippet" >> "$conf"
    fi
    echo "install-node: added the amphi runtime to $conf; restart containerd to load it"
  fi
fi
