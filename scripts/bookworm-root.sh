#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# bookworm-root.sh setup | run CMD [ARG...]
#
# A Debian bookworm root as a guest admin's machine has it, for installing
# the vballoon-dkms package (tests/deb_test.sh) without touching this
# machine: debootstrap minbase with dkms, and the headers of the two
# bookworm test kernels (linux-headers-$K61 from bookworm,
# linux-headers-$K612 from bookworm-backports; $VB_CACHE/kernels.env,
# written by scripts/deps.sh).  Kept under $VB_CACHE/bookworm-root, made
# in a temporary directory and moved into place when complete; a root
# stamped with other kernels is made again.
#
#   setup  make the root if it is missing or stale (idempotent)
#   run    run CMD in the root, this checkout mounted at its own path.
#          With VB_ROOT_UPPER=DIR the root is a throw-away overlay whose
#          changes land in DIR (see scripts/chroot-lib.sh).
#
# Its apt sources are the machine's own bookworm sources; no mirror host
# name lives in this repository.
set -euo pipefail

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
top=$(cd "$(dirname "$0")/.." && pwd)
root=$VB_CACHE/bookworm-root
export DEBIAN_FRONTEND=noninteractive

log() { printf 'bookworm-root: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env" 2>/dev/null || die "no $VB_CACHE/kernels.env (run scripts/deps.sh)"
if [ -z "${K61:-}" ] || [ -z "${K612:-}" ]; then
	die "no K61/K612 in $VB_CACHE/kernels.env"
fi

# shellcheck source=scripts/chroot-lib.sh
. "$top/scripts/chroot-lib.sh"

root_pkgs=(dkms kmod xz-utils)
stamp="bookworm root: ${root_pkgs[*]} linux-headers-$K61 linux-headers-$K612"

root_ok() {
	[ -f "$root/.vb-stamp" ] && [ "$(cat "$root/.vb-stamp")" = "$stamp" ]
}

make_root() {
	local tmp=$root.tmp t0=$SECONDS k blog=$VB_CACHE/bookworm-root.log
	bootstrap "$tmp" bookworm "$blog" "${root_pkgs[@]}"
	# The machine's own bookworm sources (security updates carry the 6.1
	# headers' ABI), as a bookworm guest has them, and backports.
	rm -f "$tmp/etc/apt/sources.list"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && grep -q bookworm "$f" && cp "$f" "$tmp$f"
	done
	grep -rqs bookworm-backports "$tmp/etc/apt/" ||
		echo "deb $(debian_uri | head -n1) bookworm-backports main" \
			>"$tmp/etc/apt/sources.list.d/bookworm-backports.list"
	log "installing linux-headers-$K61 and (bookworm-backports) linux-headers-$K612"
	in_root "$tmp" sh -c "apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends linux-headers-$K61 &&
		apt-get install -y -qq --no-install-recommends -t bookworm-backports \
			linux-headers-$K612 && apt-get clean" >>"$blog" 2>&1 ||
		die "installing the headers failed, see $blog"
	for k in "$K61" "$K612"; do
		[ -f "$tmp/usr/src/linux-headers-$k/include/generated/utsrelease.h" ] ||
			die "no linux-headers-$k in the root"
	done
	echo "$stamp" >"$tmp/.vb-stamp"
	rm -rf "$root"
	mv "$tmp" "$root"
	log "root built in $((SECONDS - t0)) s"
}

# setup holds the lock exclusively (it may replace the root); commands run
# in the root hold it shared.
case ${1:-} in
setup)
	mkdir -p "$VB_CACHE"
	exec 9>"$VB_CACHE/bookworm-root.lock"
	flock 9
	if root_ok; then
		log "root complete: $root"
	else
		make_root
	fi
	;;
run)
	shift
	[ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
	exec 9>"$VB_CACHE/bookworm-root.lock"
	flock -s 9
	root_ok || die "no complete root at $root (run: $0 setup)"
	in_root "$root" "$@"
	;;
*)
	echo "usage: $0 setup | run CMD [ARG...]" >&2
	exit 2
	;;
esac
