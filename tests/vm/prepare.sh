#!/usr/bin/env bash
# Prepares the cgroup v2 guest once: Debian's generic amd64 kernel (downloaded with
# `apt-get download`, unpacked with `dpkg -x`, modules indexed with `depmod -b`) and a
# busybox initramfs whose /init mounts the host's `/` over 9p (tests/vm/initramfs-init.sh).
# Everything lands in $AMPHI_VM_CACHE (default /var/cache/amphi/vm); a second run only
# checks. Prints the prepared kernel directory on stdout.
#
#   tests/vm/prepare.sh            # uses the kernel linux-image-amd64 points at
#   AMPHI_VM_KERNEL=6.1.0-57-amd64 tests/vm/prepare.sh
#
# Needs (deploy/install-deps.sh installs them): apt-get, dpkg, kmod (depmod),
# busybox-static (for the initramfs and its cpio), gzip. Runs as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${AMPHI_VM_CACHE:-/var/cache/amphi/vm}

say() { echo "vm/prepare: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for tool in apt-get apt-cache dpkg depmod gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run deploy/install-deps.sh)"
done
[ -x /bin/busybox ] || die "/bin/busybox not found (Debian's busybox-static; run deploy/install-deps.sh)"

# The kernel version: the generic flavour (the cloud flavour has no 9p).
kver=${AMPHI_VM_KERNEL:-}
if [ -z "$kver" ]; then
  if [ -e "$cache/kernel-version" ]; then
    kver=$(cat "$cache/kernel-version")
  else
    kver=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.[0-9.]+-[0-9]+-amd64$/ {sub("linux-image-", "", $2); print $2; exit}')
    [ -n "$kver" ] || die "cannot tell which kernel linux-image-amd64 depends on (apt-get update first?)"
  fi
fi
case "$kver" in
  *-amd64) ;;
  *) die "kernel $kver is not a generic amd64 flavour (the cloud flavour lacks 9p)" ;;
esac

dir=$cache/$kver
mkdir -p "$cache"

# 1. The kernel package, unpacked.
if [ ! -e "$dir/unpacked" ]; then
  say "downloading linux-image-$kver from Debian's archive"
  tmp=$(mktemp -d "$cache/.dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -q "linux-image-$kver" >&2) ||
    die "apt-get download linux-image-$kver failed"
  mkdir -p "$tmp/root"
  dpkg -x "$tmp"/linux-image-*.deb "$tmp/root"
  [ -f "$tmp/root/boot/vmlinuz-$kver" ] || die "the package has no /boot/vmlinuz-$kver"
  depmod -b "$tmp/root" "$kver"
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$tmp/root" "$dir/root"
  rm -rf "$tmp"
  trap - EXIT
  touch "$dir/unpacked"
fi
echo "$kver" > "$cache/kernel-version"
moddir=$dir/root/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep is missing"

# 2. The initramfs: busybox, the modules for 9p + virtio + overlay in modules.dep order, and
# /init. Rebuilt whenever /init, this script or busybox changes.
stamp=$(cat "$here/initramfs-init.sh" "$here/prepare.sh" /bin/busybox | sha256sum | cut -c1-16)
if [ "$(cat "$dir/initramfs.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -s "$dir/initramfs.gz" ]; then
  say "building the initramfs for $kver"
  work=$(mktemp -d "$cache/.initramfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work"/{bin,dev,proc,sys,host,newroot,upper,results,modules}
  cp /bin/busybox "$work/bin/busybox"
  ln -s busybox "$work/bin/sh"
  # modprobe's order: for each wanted module, its modules.dep dependencies from last to
  # first, then the module itself; each file once.
  order=$(awk -v want="virtio_pci 9pnet_virtio 9p overlay" '
    {
      path = $1; sub(":$", "", path)
      name = path; sub(".*/", "", name); sub("\\.ko(\\.[a-z]+)?$", "", name); gsub("-", "_", name)
      deps[name] = ""
      for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i
      file[name] = path
    }
    END {
      n = split(want, w, " ")
      for (k = 1; k <= n; k++) {
        if (!(w[k] in file)) { print "missing " w[k] > "/dev/stderr"; exit 1 }
        m = split(deps[w[k]], d, " ")
        for (j = 1; j <= m; j++) if (!(d[j] in seen)) { seen[d[j]] = 1; print d[j] }
        if (!(file[w[k]] in seen)) { seen[file[w[k]]] = 1; print file[w[k]] }
      }
    }' "$moddir/modules.dep") || die "a module is missing from $moddir/modules.dep"
  : > "$work/modules/order"
  for m in $order; do
    base=${m##*/}
    case "$base" in
      *.ko) cp "$moddir/$m" "$work/modules/$base" ;;
      *.ko.xz) xz -dc "$moddir/$m" > "$work/modules/${base%.xz}"; base=${base%.xz} ;;
      *.ko.zst) zstd -qdc "$moddir/$m" > "$work/modules/${base%.zst}"; base=${base%.zst} ;;
      *) die "unexpected module file $m" ;;
    esac
    echo "$base" >> "$work/modules/order"
  done
  cp "$here/initramfs-init.sh" "$work/init"
  chmod 755 "$work/init"
  (cd "$work" && find . -mindepth 1 | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$dir/initramfs.gz.tmp"
  mv "$dir/initramfs.gz.tmp" "$dir/initramfs.gz"
  echo "$stamp" > "$dir/initramfs.stamp"
  rm -rf "$work"
  trap - EXIT
  say "modules: $(echo "$order" | sed 's|.*/||' | tr '\n' ' ')"
fi

echo "$dir"
