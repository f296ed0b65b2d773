#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# deb.sh: `make deb`.  Build the vballoon-dkms Debian package from the
# tracked files of this checkout (their working-tree content, so what is
# built is what `git status` shows), with Debian's own tooling (debian/,
# debhelper, dh-dkms), in build/deb/vballoon-<version>/, then run lintian
# on the result.  Prints the path of the .deb last.
#
# Installs debhelper, dh-dkms, lintian and fakeroot when missing (Debian
# packages only; no other network).  Exit status non-zero if the build
# fails or lintian reports an error or a warning.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ver=$(cat "$top/VERSION")
out=$top/build/deb
stage=$out/vballoon-$ver
export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { printf 'deb: %s\n' "$*" >&2; }

pkgs=(debhelper dh-dkms dpkg-dev fakeroot lintian)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ $SUDO apt-get update -qq >/dev/null &&
		  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# The tracked files, or every file outside build/ in a tree without git.
files() {
	if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$top" ls-files
	else
		(cd "$top" && find . -path ./build -prune -o -path '*/__pycache__' \
			-prune -o -type f -print | sed 's|^\./||')
	fi
}

rm -rf "$out"
mkdir -p "$stage"
(cd "$top" && files | while IFS= read -r f; do
	[ -f "$f" ] && cp --parents -p "$f" "$stage/"
done)
log "building vballoon-dkms $ver in $stage"
(cd "$stage" && dpkg-buildpackage -us -uc --build=full) >"$out/build.log" 2>&1 || {
	tail -n 30 "$out/build.log" >&2
	log "dpkg-buildpackage failed, see $out/build.log"
	exit 1
}
deb=$out/vballoon-dkms_${ver}_all.deb
[ -f "$deb" ] || { log "no $deb"; exit 1; }

log "lintian"
changes=$(ls "$out"/vballoon_"$ver"_*.changes)
lintian --fail-on error,warning --info --display-info "$changes" "$deb" \
	>"$out/lintian.log" 2>&1 || {
	cat "$out/lintian.log" >&2
	log "lintian reports errors or warnings (above)"
	exit 1
}
sed 's/^/deb: lintian: /' "$out/lintian.log" >&2
echo "$deb"
