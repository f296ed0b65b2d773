#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# mkinitramfs.sh KVER DRIVER OUT [extra-module...]
#
# Build a small busybox initramfs (cpio newc, gzip) for testing vballoon in
# a QEMU guest running kernel KVER (unpacked under $VB_CACHE/kernel/KVER).
#
#   DRIVER  vballoon  - build/KVER/vballoon.ko from this repository ($VB_KO
#                       instead when set: tests/deb_test.sh boots the
#                       module DKMS built from the Debian package)
#           inkernel  - the distribution's virtio_balloon module
#           none      - no balloon driver at all
#   extra-module      - further modules of KVER (e.g. virtio_blk ext4); their
#                       dependencies are resolved and they are loaded at boot.
#
# The balloon driver is put into the image but NOT loaded at boot, unless the
# kernel command line says vb.load=1; the guest shell offers `vb-load` and
# `vb-unload` for that.  Transports (virtio_pci, virtio_mmio) and
# virtio_console are loaded at boot.  The guest shell for the host runs on
# /dev/ttyS1 (or vb.tty=<dev>, e.g. hvc0 on microvm); the kernel console is
# whatever console= says (ttyS0).
set -euo pipefail

usage() {
	echo "usage: $0 KVER vballoon|inkernel|none OUT [extra-module...]" >&2
	exit 2
}
[ $# -ge 3 ] || usage

kver=$1
driver=$2
out=$3
shift 3
extras=("$@")

root=$(cd "$(dirname "$0")/.." && pwd)
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
kroot=$VB_CACHE/kernel/$kver
mdir=$kroot/lib/modules/$kver
busybox=${BUSYBOX:-/bin/busybox}
guestbin=${VB_GUEST_BIN:-$root/build/guest}

die() { echo "mkinitramfs: $*" >&2; exit 1; }

[ -d "$mdir" ] || die "no modules for $kver under $mdir (run scripts/deps.sh)"
[ -x "$busybox" ] || die "no static busybox at $busybox"
case $driver in
vballoon|inkernel|none) ;;
*) usage ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/vb-initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,run,mnt,etc/vb,lib/modules,root}

# --- module index: normalised module name -> file --------------------------
declare -A modfile=() builtin=() seen=()
while IFS= read -r -d '' f; do
	b=${f##*/}
	b=${b%%.ko*}
	modfile[${b//-/_}]=$f
done < <(find "$mdir/kernel" -name '*.ko*' -print0)
if [ -f "$mdir/modules.builtin" ]; then
	while IFS= read -r l; do
		b=${l##*/}
		b=${b%%.ko*}
		builtin[${b//-/_}]=1
	done <"$mdir/modules.builtin"
fi

# Copy one module file (decompressed) to the image as lib/modules/NAME.ko.
install_mod() {
	local name=$1 src=$2 dst=$r/lib/modules/$1.ko
	case $src in
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -qdc "$src" >"$dst" ;;
	*.ko) cp "$src" "$dst" ;;
	*) die "unknown module format: $src" ;;
	esac
}

# resolve NAME LISTFILE: append NAME's dependencies, then NAME, to LISTFILE
# (each module once over the whole image).  Built-in modules are skipped;
# a module that exists nowhere is an error.
resolve() {
	local name=${1//-/_} list=$2 deps d
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	[ -n "${builtin[$name]:-}" ] && return 0
	[ -n "${modfile[$name]:-}" ] || die "module $name not found for $kver"
	deps=$(modinfo -F depends "${modfile[$name]}")
	for d in ${deps//,/ }; do
		resolve "$d" "$list"
	done
	install_mod "$name" "${modfile[$name]}"
	echo "$name" >>"$list"
}

: >"$r/etc/vb/boot.list"
: >"$r/etc/vb/balloon.list"
# ext4 asks the crypto API for crc32c at mount time; that is no modinfo
# dependency, so bring the generic implementation along.
for m in "${extras[@]}"; do
	if [ "${m//-/_}" = ext4 ] && [ -n "${modfile[crc32c_generic]:-}" ]; then
		extras+=(crc32c_generic)
		break
	fi
done
for m in virtio_pci virtio_mmio virtio_console "${extras[@]}"; do
	resolve "$m" "$r/etc/vb/boot.list"
done

case $driver in
vballoon)
	ko=${VB_KO:-$root/build/$kver/vballoon.ko}
	[ -f "$ko" ] || die "$ko not built (make KDIR=/usr/src/linux-headers-$kver)"
	for d in $(modinfo -F depends "$ko" | tr ',' ' '); do
		resolve "$d" "$r/etc/vb/balloon.list"
	done
	cp "$ko" "$r/lib/modules/vballoon.ko"
	echo vballoon >>"$r/etc/vb/balloon.list"
	echo vballoon >"$r/etc/vb/driver"
	;;
inkernel)
	resolve virtio_balloon "$r/etc/vb/balloon.list"
	echo virtio_balloon >"$r/etc/vb/driver"
	;;
none)
	echo none >"$r/etc/vb/driver"
	;;
esac
echo "$kver" >"$r/etc/vb/kver"

# --- busybox and guest programs ---------------------------------------------
cp "$busybox" "$r/bin/busybox"
for a in $("$busybox" --list); do
	[ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
done
for a in modprobe insmod rmmod lsmod poweroff reboot halt; do
	ln -sf ../bin/busybox "$r/sbin/$a"
done
if [ -d "$guestbin" ]; then
	for p in "$guestbin"/*; do
		[ -f "$p" ] && [ -x "$p" ] && cp "$p" "$r/bin/"
	done
else
	echo "mkinitramfs: warning: no guest programs in $guestbin" >&2
fi

# --- helper scripts ---------------------------------------------------------
cat >"$r/bin/vb-load" <<'EOF'
#!/bin/sh
# Load the balloon driver chosen at image build time (and its dependencies).
rc=0
for m in $(cat /etc/vb/balloon.list); do
	[ -d "/sys/module/$m" ] && continue
	insmod "/lib/modules/$m.ko" "$@" || rc=1
done
exit $rc
EOF
cat >"$r/bin/vb-unload" <<'EOF'
#!/bin/sh
# Unload the balloon driver (dependencies stay).
d=$(cat /etc/vb/driver)
[ "$d" = none ] && exit 0
[ -d "/sys/module/$d" ] || exit 0
exec rmmod "$d"
EOF
cat >"$r/init" <<'EOF'
#!/bin/sh
# vballoon test guest init.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts

tty=ttyS1
load=0
for a in $(cat /proc/cmdline); do
	case $a in
	vb.tty=*) tty=${a#vb.tty=} ;;
	vb.load=*) load=${a#vb.load=} ;;
	esac
done

for m in $(cat /etc/vb/boot.list); do
	insmod "/lib/modules/$m.ko" || echo "vb-init: insmod $m failed"
done
if [ "$load" = 1 ]; then
	vb-load || echo "vb-init: loading balloon driver failed"
fi

i=0
while [ ! -c "/dev/$tty" ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -c "/dev/$tty" ] || echo "vb-init: no /dev/$tty"
echo "vb-init: ready, shell on /dev/$tty, driver $(cat /etc/vb/driver)"

cd /root
while :; do
	# Keep the tty open from before stty until the shell runs, so that no
	# input is lost; the host sends nothing before it sees the banner.
	setsid sh -c "exec </dev/$tty >/dev/$tty 2>&1; stty raw -echo; echo @@VB-READY; exec sh"
	sleep 0.2
done
EOF
chmod 755 "$r/init" "$r/bin/vb-load" "$r/bin/vb-unload"

mkdir -p "$(dirname "$out")"
(cd "$r" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
