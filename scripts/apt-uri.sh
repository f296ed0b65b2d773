# SPDX-License-Identifier: GPL-2.0
#
# Sourced by scripts/deps.sh and scripts/chroot-lib.sh.
#
# debian_uri: print the URI of the Debian archive this machine's apt sources
# use for bookworm (one-line sources.list entries or deb822 .sources
# stanzas), so that further suites (bookworm-backports, trixie) come from the
# same mirror and no mirror host name lives in this repository.
debian_uri() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk 'BEGIN { RS = ""; FS = "\n" }
		     {
			uri = ""; hit = 0
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
				if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) hit = 1
			}
			if (hit && uri != "") { print uri; exit }
		     }' "$f"
	done
}
