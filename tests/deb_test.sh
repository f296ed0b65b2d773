#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# tests/deb_test.sh: the vballoon-dkms package as a guest admin meets it.
#
#   1. `make deb` (scripts/deb.sh) builds it and lintian reports no error
#      or warning;
#   2. in a throw-away overlay of the cached bookworm root
#      (scripts/bookworm-root.sh: dkms and the 6.1 and 6.12 headers),
#      `apt-get install ./vballoon-dkms_<version>_all.deb` makes DKMS build
#      and install the module for both kernels (modinfo: version from
#      VERSION, vermagic; the same srcversion as this checkout's build),
#      and writes /etc/modprobe.d/vballoon.conf; the manual page is there;
#   3. `apt-get remove vballoon-dkms` takes the modules, the DKMS tree,
#      the sources and the modprobe file away again;
#   4. the module DKMS built for 6.1 boots in a 6.1 guest and inflates and
#      deflates with the host seeing it (tests/run.py inflate_deflate with
#      VB_KO pointing at it).
#
# The cached root is never changed (every change lands in the overlay's
# upper directory, deleted at the end).  Output is TAP; the exit status is
# non-zero if any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
VER=$(cat "$root/VERSION")
PKG=vballoon-dkms
t_start=$(date +%s)

# shellcheck source=tests/tap.sh
. "$root/tests/tap.sh"
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env" || { echo "not ok 1 - no $VB_CACHE/kernels.env"; exit 1; }

out=$root/build/deb
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vb-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

finish() {
	echo "1..$n"
	echo "# $((n - failed)) passed, $failed failed in $(($(date +%s) - t_start)) s"
	[ "$failed" -eq 0 ]
	exit
}

# in_bw CMD...: run CMD (a sh -c script) in the throw-away root.
in_bw() {
	VB_ROOT_UPPER=$tmp/overlay bash "$root/scripts/bookworm-root.sh" run \
		sh -c "$1"
}

check "make deb (dpkg-buildpackage, lintian without errors or warnings)" \
	bash "$root/scripts/deb.sh" || finish
deb=$out/${PKG}_${VER}_all.deb
check "bookworm root with dkms, linux-headers-$K61 and -$K612" \
	bash "$root/scripts/bookworm-root.sh" setup || finish

t0=$(date +%s)
check "apt-get install ./${deb##*/} (DKMS builds for both kernels)" \
	in_bw "apt-get install -y --no-install-recommends $deb" || finish
echo "# install took $(($(date +%s) - t0)) s"

ko61=
for k in "$K61" "$K612"; do
	st=$(in_bw "dkms status vballoon/$VER -k $k" 2>&1)
	if printf '%s\n' "$st" | grep -q "vballoon/$VER, $k, .*: installed"; then
		ok "dkms status $k: installed"
	else
		not_ok "dkms status $k: installed" "$st"
	fi
	ko=$(in_bw "ls /lib/modules/$k/updates/dkms/vballoon.ko*" 2>/dev/null | head -n1)
	if [ -z "$ko" ]; then
		not_ok "module installed for $k" "$(in_bw "find /lib/modules/$k -name 'vballoon*'" 2>&1)"
		continue
	fi
	# Copy it out through the checkout (mounted read-write in the root).
	f=$out/dkms-$k/${ko##*/}
	in_bw "mkdir -p $out/dkms-$k && cp $ko $out/dkms-$k/"
	if [ ! -f "$f" ]; then
		not_ok "module installed for $k" "cannot copy $ko out of the root"
		continue
	fi
	ok "module installed for $k (${ko#/lib/modules/})"
	info="version $(modinfo -F version "$f") vermagic $(modinfo -F vermagic "$f" | cut -d' ' -f1)"
	if [ "$info" = "version $VER vermagic $k" ]; then
		ok "modinfo $k: $info"
	else
		not_ok "modinfo $k: version $VER vermagic $k" "$info"
	fi
	# Same sources, same srcversion: the package carries this tree.
	mine=$root/build/$k/vballoon.ko
	if [ -f "$mine" ]; then
		a=$(modinfo -F srcversion "$f") b=$(modinfo -F srcversion "$mine")
		if [ "$a" = "$b" ]; then
			ok "srcversion $k: $a, as this checkout's build"
		else
			not_ok "srcversion $k: as this checkout's build" "DKMS $a, build/$k $b"
		fi
	fi
	[ "$k" = "$K61" ] && ko61=$f
done

check "/etc/modprobe.d/vballoon.conf blacklists virtio_balloon" \
	in_bw "grep -qx 'blacklist virtio_balloon' /etc/modprobe.d/vballoon.conf"
check "manual page vballoon(4) installed" \
	in_bw "test -s /usr/share/man/man4/vballoon.4.gz"

check "apt-get remove $PKG" in_bw "apt-get remove -y $PKG"
left=$(in_bw "find /lib/modules /var/lib/dkms /usr/src /etc/modprobe.d \
	-name 'vballoon*'; dkms status vballoon" 2>&1)
if [ -z "$left" ]; then
	ok "remove left no module, DKMS tree, sources or modprobe file"
else
	not_ok "remove left no module, DKMS tree, sources or modprobe file" "$left"
fi

if [ -n "$ko61" ]; then
	echo "# booting $K61 with $ko61"
	log=$tmp/guest.log
	VB_KO=$ko61 python3 "$root/tests/run.py" --no-build --kernel K61 \
		--qemu 7.2 --jobs 1 -k inflate_deflate >"$log" 2>&1
	if grep -qE '^1 passed, 0 failed' "$log"; then
		ok "$K61 guest: the DKMS-built module inflates and deflates (inflate_deflate)"
	else
		not_ok "$K61 guest: the DKMS-built module inflates and deflates" "$(cat "$log")"
	fi
else
	not_ok "$K61 guest: no DKMS-built module to boot"
fi
finish
