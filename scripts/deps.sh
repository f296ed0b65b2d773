#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything vballoon's build, tests and benchmarks need, from
# Debian packages only.  Idempotent: whatever is already present is skipped.
#
# Guest kernels (6.1 from bookworm, 6.12 from bookworm-backports) are not
# installed as the host's kernel: their packages are downloaded and unpacked
# under $VB_CACHE.  Their headers are installed normally (/usr/src).
#
# Prints shell assignments of the resolved kernel versions to
# $VB_CACHE/kernels.env, which the Makefile and the runner source.
set -euo pipefail

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { printf 'deps: %s\n' "$*" >&2; }

updated=0
apt_update() {
	[ "$updated" -eq 1 ] && return 0
	log "apt-get update"
	$SUDO apt-get update -qq >/dev/null
	updated=1
}

# bookworm-backports carries the 6.12 kernel.  Its source is written with
# the URI the machine already uses for bookworm, so no mirror host name
# lives in this repository.
# shellcheck source=scripts/apt-uri.sh
. "$(dirname "$0")/apt-uri.sh"
bp_list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	uri=$(debian_uri | head -n1)
	[ -n "$uri" ] || { log "no bookworm apt source to derive bookworm-backports from"; exit 1; }
	log "adding bookworm-backports apt source ($uri)"
	echo "deb $uri bookworm-backports main" | $SUDO tee "$bp_list" >/dev/null
	apt_update
fi

pkgs=(qemu-system-x86 qemu-utils busybox-static cpio kmod sparse xz-utils
      gcc make libc6-dev libelf-dev python3 linux-source-6.1 e2fsprogs
      gnuplot-nox dkms)
# scripts/debug-kernel.sh: what building a kernel from linux-source-6.1 takes.
pkgs+=(flex bison bc libssl-dev)
# tests/libvirt_test.py: libvirtd, virtlogd, virsh and libvirt's QEMU driver.
pkgs+=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done

# Resolve the concrete kernel ABI names once and remember them.
mkdir -p "$VB_CACHE"
envf=$VB_CACHE/kernels.env
if [ ! -s "$envf" ]; then
	apt_update
	k61=$(apt-cache depends linux-image-amd64=$(apt-cache madison linux-image-amd64 |
		awk '$3 ~ /^6\.1\./ {print $3; exit}') | awk '/Depends: linux-image-/ {sub("linux-image-", "", $2); print $2; exit}')
	k612=$(apt-cache depends linux-image-amd64=$(apt-cache madison linux-image-amd64 |
		awk '$3 ~ /^6\.12\./ {print $3; exit}') | awk '/Depends: linux-image-/ {sub("linux-image-", "", $2); print $2; exit}')
	[ -n "$k61" ] && [ -n "$k612" ] || { log "cannot resolve kernel versions"; exit 1; }
	printf 'K61=%s\nK612=%s\n' "$k61" "$k612" >"$envf"
fi
# shellcheck source=/dev/null
. "$envf"

for k in "$K61" "$K612"; do
	[ -d "/usr/src/linux-headers-$k" ] || missing+=("linux-headers-$k")
done

if [ "${#missing[@]}" -gt 0 ]; then
	apt_update
	log "installing: ${missing[*]}"
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Guest kernel images: unpack, do not install.
for k in "$K61" "$K612"; do
	dst=$VB_CACHE/kernel/$k
	[ -f "$dst/boot/vmlinuz-$k" ] && continue
	apt_update
	log "unpacking guest kernel $k"
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -qq "linux-image-$k" >/dev/null)
	mkdir -p "$dst.tmp"
	dpkg-deb -x "$tmp"/linux-image-*.deb "$dst.tmp"
	rm -rf "$tmp" "$dst"
	mv "$dst.tmp" "$dst"
done

# checkpatch.pl and kselftest_harness.h are used from linux-source-6.1's
# tarball; unpack only the files we use.
src=$VB_CACHE/linux-source-6.1
if [ ! -f "$src/scripts/checkpatch.pl" ]; then
	tarball=$(ls /usr/src/linux-source-6.1.tar.* | head -n1)
	log "unpacking checkpatch and kselftest harness from $tarball"
	mkdir -p "$src.tmp"
	tar -xf "$tarball" -C "$src.tmp" --strip-components=1 --wildcards \
		'*/scripts/checkpatch.pl' '*/scripts/spelling.txt' \
		'*/scripts/const_structs.checkpatch' \
		'*/tools/testing/selftests/kselftest_harness.h' \
		'*/tools/testing/selftests/kselftest.h'
	rm -rf "$src"
	mv "$src.tmp" "$src"
fi

# QEMU 10.0 for the test matrix (tests/run.py, VB_QEMU=10.0), from
# bookworm-backports: downloaded and unpacked under $VB_CACHE/qemu-10.0,
# never installed, so the system QEMU 7.2 stays what it is.  It runs with
# bookworm's libraries given QEMU_MODULE_DIR=$q10/usr/lib/x86_64-linux-gnu/qemu
# (otherwise it loads 7.2's modules and aborts) and
# -L $q10/usr/share/qemu -L /usr/share/seabios; scripts/vm.py does that.
q10=$VB_CACHE/qemu-10.0
q10_pkgs=(qemu-system-x86 qemu-system-common qemu-system-data qemu-system-gui
	  qemu-system-modules-opengl qemu-system-modules-spice)
q10_version() {
	apt-cache madison qemu-system-x86 2>/dev/null |
		awk '$3 ~ /^1:10\.0\./ { print $3; exit }'
}
if [ ! -x "$q10/usr/bin/qemu-system-x86_64" ]; then
	ver=$(q10_version)
	if [ -z "$ver" ]; then
		apt_update
		ver=$(q10_version)
	fi
	[ -n "$ver" ] || { log "no QEMU 10.0 in the apt sources (bookworm-backports)"; exit 1; }
	log "unpacking QEMU $ver into $q10"
	tmp=$(mktemp -d)
	chmod 755 "$tmp"	# apt's _apt user downloads into it
	(cd "$tmp" && apt-get download -qq "${q10_pkgs[@]/%/=$ver}" >/dev/null)
	rm -rf "$q10.tmp"
	mkdir -p "$q10.tmp"
	for deb in "$tmp"/*.deb; do
		dpkg-deb -x "$deb" "$q10.tmp"
	done
	rm -rf "$tmp" "$q10"
	mv "$q10.tmp" "$q10"
fi
# A missing optional library of one of its modules (libpipewire) only warns.
q10_ver=$(QEMU_MODULE_DIR=$q10/usr/lib/x86_64-linux-gnu/qemu \
	"$q10/usr/bin/qemu-system-x86_64" --version 2>/dev/null || true)
case $q10_ver in
*"version 10.0"*) ;;
*) log "$q10/usr/bin/qemu-system-x86_64 does not run: ${q10_ver:-no output}"; exit 1 ;;
esac

log "ok: K61=$K61 K612=$K612 cache=$VB_CACHE"

# Linux 7.3 (Debian trixie-backports), only when asked (VB_K73=1, or
# `make deps-k73`): a trixie root to build in, the guest kernel unpacked
# under $VB_CACHE/kernel, and K73=<release> added to kernels.env.
if [ "${VB_K73:-0}" = 1 ]; then
	bash "$(dirname "$0")/trixie-root.sh" setup
fi
