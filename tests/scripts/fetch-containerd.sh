#!/usr/bin/env bash
# Fetch containerd builds from Debian's archive into a private directory, without
# installing them system-wide. Usage: fetch-containerd.sh <dest-dir> <suite>=<version>...
#   e.g. fetch-containerd.sh /var/cache/amphi/containerd trixie=1.7.24 sid=2.1.9
# Each version lands in <dest-dir>/<version>/usr/bin/{containerd,ctr}. Idempotent.
set -euo pipefail
dest=${1:?usage: fetch-containerd.sh <dest-dir> <suite>=<version>...}
shift
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for pair in "$@"; do
  suite=${pair%%=*}
  want=${pair#*=}
  if [ -x "$dest/$want/usr/bin/containerd" ]; then
    continue
  fi
  apt_dir="$work/apt-$suite"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/preferences.d" "$apt_dir/etc/sources.list.d"
  echo "deb http://deb.debian.org/debian $suite main" > "$apt_dir/etc/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::State::status=/dev/null"
        -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -qq
  # The archive keeps one version per suite; accept a newer patch if the exact one is gone.
  avail=$(apt-cache "${opts[@]}" madison containerd | awk '{print $3}' | head -n 1)
  [ -n "$avail" ] || { echo "fetch-containerd: no containerd in $suite" >&2; exit 1; }
  case "$avail" in
    "$want"*) ;;
    *) echo "fetch-containerd: $suite has containerd $avail, wanted $want; using $avail" >&2 ;;
  esac
  (cd "$work" && apt-get "${opts[@]}" download "containerd=$avail" >/dev/null)
  mkdir -p "$dest/$want.tmp"
  dpkg -x "$work"/containerd_*.deb "$dest/$want.tmp"
  rm -f "$work"/containerd_*.deb
  rm -rf "$dest/$want"
  mv "$dest/$want.tmp" "$dest/$want"
  echo "fetch-containerd: $dest/$want ($("$dest/$want/usr/bin/containerd" --version | awk '{print $3}'))" >&2
done
