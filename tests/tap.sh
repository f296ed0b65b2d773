# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# TAP helpers for the shell tests (tests/dkms_test.sh, tests/deb_test.sh):
# ok NAME, not_ok NAME [DIAGNOSTIC...], check NAME CMD... (ok when CMD
# succeeds, else not ok with the tail of its output); $n counts the lines,
# $failed the failures.

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	shift
	# Diagnostics (TAP comments): the tail of whatever output we were given.
	[ $# -gt 0 ] && printf '%s\n' "$@" | tail -n 25 | sed 's/^/#   /'
	return 0
}
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$name"
		return 0
	fi
	not_ok "$name" "$out"
	return 1
}
