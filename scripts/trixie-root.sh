#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# trixie-root.sh setup | build [MAKE-ARGS...] | run CMD [ARG...]
#
# Linux 7.3 (Debian trixie-backports) cannot be built for on bookworm: its
# headers want trixie's gcc-14 and kbuild.  This keeps a trixie root made
# with debootstrap under $VB_CACHE/trixie-root and builds vballoon in it.
#
#   setup   make the root if it is missing or incomplete (built in a temp
#           directory, moved into place when complete), with build-essential,
#           gcc-14, kmod and linux-headers-$K73 from trixie-backports, a
#           sparse that can check 7.3 (see setup_sparse) and dkms; unpack
#           the 7.3 guest kernel (linux-binary-, linux-modules-,
#           linux-base-) under $VB_CACHE/kernel/$K73 as
#           scripts/mkinitramfs.sh and scripts/vm.py expect it; record K73=<release> in $VB_CACHE/kernels.env.
#           Idempotent: whatever is complete is skipped.
#   build   setup, then `make KDIR=/usr/src/linux-headers-$K73 MAKE-ARGS`
#           in the root (`make k73` calls this): build/$K73/vballoon.ko.
#           Like `make KDIR=...`, it does nothing when that is up to date.
#   run     run CMD in the root, this checkout mounted at its own path, e.g.
#           run make -C /usr/src/linux-headers-$K73 M=$PWD/build/$K73 W=1 C=2
#
# The archive URI is the one the machine's apt sources use for bookworm;
# no mirror host name lives in this repository.  Mounts are made in a
# private mount namespace, so they vanish with the command and never show
# outside it.
#
# Environment: VB_CACHE (/var/cache/vballoon), VB_K73_REL (the 7.3 kernel
# release, default below).
set -euo pipefail

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
rel=${VB_K73_REL:-7.3.4+deb13-amd64}
top=$(cd "$(dirname "$0")/.." && pwd)
root=$VB_CACHE/trixie-root
kroot=$VB_CACHE/kernel/$rel
envf=$VB_CACHE/kernels.env
# What a complete root holds; a root stamped with anything else is rebuilt.
root_pkgs=(build-essential gcc-14 sparse kmod xz-utils)
stamp="trixie root: ${root_pkgs[*]} linux-headers-$rel"
export DEBIAN_FRONTEND=noninteractive

log() { printf 'trixie-root: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"

# in_root, bootstrap (and debian_uri, for the forky source below).
# shellcheck source=scripts/chroot-lib.sh
. "$top/scripts/chroot-lib.sh"

root_ok() {
	[ -f "$root/.vb-stamp" ] && [ "$(cat "$root/.vb-stamp")" = "$stamp" ]
}

make_root() {
	local tmp=$root.tmp t0=$SECONDS
	bootstrap "$tmp" trixie "$VB_CACHE/trixie-root.log" "${root_pkgs[@]}"
	log "installing linux-headers-$rel from trixie-backports"
	in_root "$tmp" sh -c "apt-get update -qq && apt-get install -y -qq \
		--no-install-recommends -t trixie-backports linux-headers-$rel" \
		>>"$VB_CACHE/trixie-root.log" 2>&1 ||
		die "installing linux-headers-$rel failed, see $VB_CACHE/trixie-root.log"
	[ -f "$tmp/usr/src/linux-headers-$rel/include/generated/utsrelease.h" ] ||
		die "no linux-headers-$rel in the root"
	in_root "$tmp" apt-get clean
	echo "$stamp" >"$tmp/.vb-stamp"
	rm -rf "$root"
	mv "$tmp" "$root"
	log "root built in $((SECONDS - t0)) s"
}

# sparse for 7.3.  Under __CHECKER__ the 7.x headers use __typeof_unqual__,
# which trixie's sparse 0.6.4 cannot parse, so kbuild tests the checker with
# scripts/checker-valid.sh and turns C=1/C=2 off when it fails -- and
# Debian's linux-headers package does not ship that script, so C=2 is off
# whatever the checker.  Take forky's sparse (0.6.5~rc1 parses it), unpack
# it (not installed: its package wants forky's gcc) under /opt/sparse-forky
# with /usr/local/bin/sparse pointing at it, and give the headers a
# checker-valid.sh of our own that runs the same test.  The archive is the
# same URI; forky's index is fetched into a private apt state directory,
# without checking Valid-Until (the machine's archive may be a snapshot).
# shellcheck disable=SC2016
checker_valid='#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Put here by vballoon scripts/trixie-root.sh: the Debian headers package
# lacks the checker test kbuild runs.  checker-valid.sh CHECK [CHECKFLAGS]
# prints 1 when CHECK parses __typeof_unqual__, else 0.
command -v "$1" >/dev/null 2>&1 || { echo 0; exit 0; }
t=$(mktemp --suffix=.c) || { echo 0; exit 0; }
printf "int vb_t(const int *p)\n{\n\t__typeof_unqual__(*p) v = *p;\n\n\treturn v;\n}\n" >"$t"
if "$@" "$t" 2>&1 | grep -q error; then echo 0; else echo 1; fi
rm -f "$t"'
setup_sparse() {
	local d=/var/lib/vb-forky cv o
	cv=$root/usr/src/linux-headers-${rel%-*}-common/scripts/checker-valid.sh
	if [ ! -x "$root/opt/sparse-forky/usr/bin/sparse" ]; then
		log "unpacking forky's sparse into $root/opt/sparse-forky"
		rm -rf "$root$d" "$root/opt/sparse-forky"
		mkdir -p "$root$d/lists/partial" "$root$d/dl"
		chmod 777 "$root$d/dl"	# apt's _apt user downloads into it
		sed -n 's/^deb \([^ ]*\) trixie main$/deb \1 forky main/p' \
			"$root/etc/apt/sources.list" >"$root$d/sources.list"
		o="-o Acquire::Check-Valid-Until=false"
		o="$o -o Dir::Etc::sourcelist=$d/sources.list -o Dir::Etc::sourceparts=-"
		o="$o -o Dir::State::Lists=$d/lists -o Dir::Cache::pkgcache="
		o="$o -o Dir::Cache::srcpkgcache="
		in_root "$root" sh -c "apt-get $o update -qq && cd $d/dl &&
			apt-get $o download -qq sparse && mkdir -p /opt/sparse-forky &&
			dpkg-deb -x sparse_*.deb /opt/sparse-forky" \
			>>"$VB_CACHE/trixie-root.log" 2>&1 ||
			die "cannot unpack forky's sparse, see $VB_CACHE/trixie-root.log"
		rm -rf "${root:?}$d"
	fi
	ln -sf /opt/sparse-forky/usr/bin/sparse "$root/usr/local/bin/sparse"
	[ -d "$(dirname "$cv")" ] || die "no $(dirname "$cv")"
	printf '%s\n' "$checker_valid" >"$cv"
	chmod 755 "$cv"
	[ "$(in_root "$root" "${cv#"$root"}" sparse)" = 1 ] ||
		die "sparse in the root does not parse __typeof_unqual__"
}

# DKMS in the root, so tests/dkms_test.sh can build for 7.3 as a trixie
# guest admin's DKMS would (its own step: adding it to root_pkgs would
# rebuild every existing root).
setup_dkms() {
	[ -x "$root/usr/sbin/dkms" ] && return 0
	log "installing dkms in the root"
	in_root "$root" sh -c "apt-get update -qq && apt-get install -y -qq \
		--no-install-recommends dkms && apt-get clean" \
		>>"$VB_CACHE/trixie-root.log" 2>&1 ||
		die "installing dkms failed, see $VB_CACHE/trixie-root.log"
}

# The guest kernel, unpacked (not installed) as deps.sh does for 6.1 and
# 6.12: boot/vmlinuz-REL and lib/modules/REL/.  7.3 splits what
# linux-image-REL held: linux-binary- the image, linux-modules- the modules,
# linux-base- modules.builtin, config and System.map.  The packages are
# merged-/usr (usr/lib/modules/REL/vmlinuz), so lib is a link to usr/lib, as
# on trixie, and boot/ has links to the image, config and System.map.
kernel_pkgs=("linux-binary-$rel" "linux-modules-$rel" "linux-base-$rel")
unpack_kernel() {
	local tmp dl p
	[ -f "$kroot/boot/vmlinuz-$rel" ] && [ -d "$kroot/lib/modules/$rel/kernel" ] &&
		[ -f "$kroot/lib/modules/$rel/modules.builtin" ] && return 0
	log "unpacking guest kernel $rel"
	dl=$root/tmp/vb-dl
	rm -rf "$dl"
	mkdir -p "$dl"
	chmod 777 "$dl"	# apt's _apt user downloads into it
	in_root "$root" sh -c "cd /tmp/vb-dl && apt-get download -qq \
		${kernel_pkgs[*]}" >/dev/null ||
		die "cannot download ${kernel_pkgs[*]}"
	tmp=$kroot.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp/boot"
	for p in "$dl"/*.deb; do
		dpkg-deb -x "$p" "$tmp"
	done
	rm -rf "$dl"
	for p in vmlinuz modules.builtin kernel; do
		[ -e "$tmp/usr/lib/modules/$rel/$p" ] ||
			die "no usr/lib/modules/$rel/$p in ${kernel_pkgs[*]}"
	done
	[ -e "$tmp/lib" ] || ln -s usr/lib "$tmp/lib"
	ln -sf "../usr/lib/modules/$rel/vmlinuz" "$tmp/boot/vmlinuz-$rel"
	for p in config System.map; do
		if [ -f "$tmp/usr/lib/modules/$rel/$p" ]; then
			ln -sf "../usr/lib/modules/$rel/$p" "$tmp/boot/$p-$rel"
		fi
	done
	rm -rf "$kroot"
	mv "$tmp" "$kroot"
}

# K73=<release> in kernels.env, for `tests/run.py --kernel K73`.  Only
# added to a file deps.sh already wrote (it writes K61/K612 into an empty
# one); 'all' stays K61 and K612.
record_env() {
	if ! grep -qs '^K61=' "$envf"; then
		log "no $envf yet (scripts/deps.sh writes it); K73 not recorded"
		return 0
	fi
	grep -qx "K73=$rel" "$envf" && return 0
	sed -i '/^K73=/d' "$envf"
	echo "K73=$rel" >>"$envf"
}

# setup holds the lock exclusively (it may replace the root); commands run
# in the root hold it shared, so the root is not replaced under them.
setup() {
	mkdir -p "$VB_CACHE"
	exec 9>"$VB_CACHE/trixie-root.lock"
	flock 9
	if root_ok; then
		log "root complete: $root"
	else
		make_root
	fi
	setup_sparse
	setup_dkms
	unpack_kernel
	record_env
	exec 9>&-
}

case ${1:-} in
setup)
	setup
	log "ok: K73=$rel root=$root kernel=$kroot"
	;;
build)
	shift
	setup
	exec 9>"$VB_CACHE/trixie-root.lock"
	flock -s 9
	in_root "$root" make KDIR="/usr/src/linux-headers-$rel" "$@"
	;;
run)
	shift
	[ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
	exec 9>"$VB_CACHE/trixie-root.lock"
	flock -s 9
	root_ok || die "no complete root at $root (run: $0 setup)"
	in_root "$root" "$@"
	;;
*)
	echo "usage: $0 setup | build [MAKE-ARGS...] | run CMD [ARG...]" >&2
	exit 2
	;;
esac
