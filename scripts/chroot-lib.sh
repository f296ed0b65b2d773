# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# Sourced by scripts/trixie-root.sh and scripts/bookworm-root.sh: making a
# Debian root with debootstrap from the machine's own archive, and running
# commands in one.  Needs $top (this checkout) and a log() and die().

# shellcheck source=scripts/apt-uri.sh
. "${top:?}/scripts/apt-uri.sh"

# in_root DIR CMD...: run CMD chrooted in DIR with /dev, /proc and this
# checkout mounted (at its own path), in a mount namespace of its own, so
# the mounts vanish with the command.  With VB_ROOT_UPPER=UPPER set, DIR
# is only the lower layer of an overlay whose changes all land in UPPER
# (a directory made here): a throw-away root that leaves DIR untouched.
in_root() {
	local dir=$1
	shift
	mkdir -p "$dir$top"
	if [ -n "${VB_ROOT_UPPER:-}" ]; then
		mkdir -p "$VB_ROOT_UPPER/upper" "$VB_ROOT_UPPER/work" \
			"$VB_ROOT_UPPER/merged"
	fi
	# shellcheck disable=SC2016
	unshare --mount --propagation private -- sh -euc '
		dir=$1 top=$2 upper=$3
		shift 3
		if [ -n "$upper" ]; then
			mount -t overlay overlay -o "lowerdir=$dir,upperdir=$upper/upper,workdir=$upper/work" "$upper/merged"
			dir=$upper/merged
		fi
		mount --rbind /dev "$dir/dev"
		mount -t proc proc "$dir/proc"
		mount --bind "$top" "$dir$top"
		exec chroot "$dir" env -i \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
			sh -c "cd \"\$0\" && exec \"\$@\"" "$top" "$@"
	' vb-chroot "$dir" "$top" "${VB_ROOT_UPPER:-}" "$@"
}

# bootstrap DIR SUITE LOG PKG...: a minbase root of SUITE in DIR (made
# afresh) with PKG..., whose apt sources are SUITE and SUITE-backports on
# the machine's archive; services never start in it.
bootstrap() {
	local dir=$1 suite=$2 blog=$3 uri
	shift 3
	uri=$(debian_uri | head -n1)
	[ -n "$uri" ] || die "no bookworm apt source to take the archive URI from"
	command -v debootstrap >/dev/null || {
		log "installing debootstrap"
		apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	}
	rm -rf "$dir"
	log "debootstrap $suite from $uri into $dir"
	debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" \
		--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
		"$suite" "$dir" "$uri" >"$blog" 2>&1 ||
		die "debootstrap failed, see $blog"
	printf 'deb %s %s main\ndeb %s %s-backports main\n' \
		"$uri" "$suite" "$uri" "$suite" >"$dir/etc/apt/sources.list"
	cp /etc/resolv.conf "$dir/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 755 "$dir/usr/sbin/policy-rc.d"
}
