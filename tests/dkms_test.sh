#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# tests/dkms_test.sh [KVER...]
#
# Check that vballoon's dkms.conf works: for each test kernel (K61 and K612
# of $VB_CACHE/kernels.env unless kernel releases are given), copy the
# tracked build files into a throw-away source tree and run DKMS add, build,
# install, status and remove on private trees (--dkmstree, --sourcetree,
# --installtree), then check the installed module with modinfo.
#
# Nothing is left in the real /lib/modules or /var/lib/dkms: --no-depmod
# keeps DKMS from running depmod on /lib/modules/<kernel> (it ignores
# --installtree there), and both places, plus `dkms status`, are compared
# before and after.  The one exception is DKMS's module signing key
# (/var/lib/dkms/mok.key, mok.pub), which it creates on first use.
#
# Output is TAP; the exit status is non-zero if any check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
MOD=vballoon
VER=$(cat "$root/VERSION")
STEP_TIMEOUT=${DKMS_STEP_TIMEOUT:-300}

# shellcheck source=tests/tap.sh
. "$root/tests/tap.sh"

if ! command -v dkms >/dev/null; then
	echo "1..1"
	echo "not ok 1 - dkms not installed (run scripts/deps.sh)"
	exit 1
fi

if [ $# -gt 0 ]; then
	kernels=("$@")
else
	# shellcheck source=/dev/null
	. "$VB_CACHE/kernels.env" || { echo "not ok 1 - no $VB_CACHE/kernels.env"; exit 1; }
	kernels=("$K61" "$K612")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vb-dkms.XXXXXX")
cleanup() {
	local k
	for k in "${kernels[@]}"; do
		[ -d "$tmp/$k/dkms/$MOD" ] || continue
		dkms remove -m "$MOD" -v "$VER" --all --no-depmod \
			--dkmstree "$tmp/$k/dkms" --sourcetree "$tmp/$k/src" \
			--installtree "$tmp/$k/install" >/dev/null 2>&1 || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# What the real DKMS and module trees look like; compared at the end.
real_state() {
	dkms status 2>&1
	find /var/lib/dkms -mindepth 1 ! -name mok.key ! -name mok.pub \
		-printf '%P %y %s %T@\n' 2>/dev/null | sort
	local k
	for k in "${kernels[@]}"; do
		find "/lib/modules/$k" -printf '%P %y %s %T@\n' 2>/dev/null | sort
	done
}
before=$(real_state)

# The tracked files a build needs (the working tree's content of them).
files() {
	local paths=(Makefile Kbuild VERSION dkms.conf src include scripts LICENSE)
	if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$root" ls-files -- "${paths[@]}"
	else
		(cd "$root" && find "${paths[@]}" -type f ! -path '*/__pycache__/*')
	fi
}

t_start=$(date +%s)
for k in "${kernels[@]}"; do
	t_k=$(date +%s)
	w=$tmp/$k
	src=$w/src/$MOD-$VER
	ksrc=/usr/src/linux-headers-$k
	trees=(--dkmstree "$w/dkms" --sourcetree "$w/src" --installtree "$w/install")
	mkdir -p "$src" "$w/dkms" "$w/install"

	if [ ! -f "$ksrc/include/generated/utsrelease.h" ]; then
		not_ok "dkms $k headers ($ksrc missing; run scripts/deps.sh)"
		continue
	fi

	out=$(cd "$root" && files | while IFS= read -r f; do
		[ -f "$f" ] && cp --parents -p "$f" "$src/"; done 2>&1)
	if [ -f "$src/dkms.conf" ] && [ -f "$src/Makefile" ]; then
		ok "dkms $k source tree ($(find "$src" -type f | wc -l) files)"
	else
		not_ok "dkms $k source tree" "$out"
		continue
	fi

	check "dkms $k add" timeout "$STEP_TIMEOUT" \
		dkms add -m "$MOD" -v "$VER" "${trees[@]}" || continue

	if ! check "dkms $k build" timeout "$STEP_TIMEOUT" \
		dkms build -m "$MOD" -v "$VER" -k "$k" --kernelsourcedir "$ksrc" \
		"${trees[@]}"; then
		# DKMS keeps the compiler's output in make.log.
		log=$w/dkms/$MOD/$VER/build/make.log
		[ -f "$log" ] && tail -n 25 "$log" | sed 's/^/#   make.log: /'
		continue
	fi

	# DKMS refuses to install into a kernel whose directory is missing.
	mkdir -p "$w/install/$k"
	check "dkms $k install" timeout "$STEP_TIMEOUT" \
		dkms install -m "$MOD" -v "$VER" -k "$k" --kernelsourcedir "$ksrc" \
		--no-depmod "${trees[@]}" || continue

	ko=$(find "$w/install/$k" -name "$MOD.ko*" | head -n 1)
	if [ -n "$ko" ]; then
		ok "dkms $k installed module (${ko#"$w/install/"})"
	else
		not_ok "dkms $k installed module" "$(find "$w/install" | head -n 20)"
		continue
	fi

	# modinfo reads .ko.xz/.ko.gz too, should DKMS compress.
	name=$(modinfo -F name "$ko" 2>&1)
	vermagic=$(modinfo -F vermagic "$ko" 2>&1)
	version=$(modinfo -F version "$ko" 2>&1)
	if [ "$name" = "$MOD" ]; then
		ok "dkms $k modinfo name $name"
	else
		not_ok "dkms $k modinfo name" "name: $name"
	fi
	if [ "$version" = "$VER" ]; then
		ok "dkms $k modinfo version $version"
	else
		not_ok "dkms $k modinfo version" "version: $version" "expected: $VER (VERSION)"
	fi
	if [ "${vermagic%% *}" = "$k" ]; then
		ok "dkms $k modinfo vermagic ${vermagic%% *}"
	else
		not_ok "dkms $k modinfo vermagic" "vermagic: $vermagic" "expected: $k"
	fi

	st=$(dkms status -m "$MOD" -v "$VER" -k "$k" "${trees[@]}" 2>&1)
	if printf '%s\n' "$st" | grep -q "$MOD/$VER, $k, .*: installed"; then
		ok "dkms $k status installed"
	else
		not_ok "dkms $k status installed" "$st"
	fi

	if check "dkms $k remove" timeout "$STEP_TIMEOUT" \
		dkms remove -m "$MOD" -v "$VER" --all --no-depmod "${trees[@]}"; then
		left=$(find "$w/install" -name "$MOD.ko*")
		if [ -z "$left" ] && [ ! -e "$w/dkms/$MOD/$VER" ]; then
			ok "dkms $k remove left nothing behind"
		else
			not_ok "dkms $k remove left nothing behind" "$left" \
				"$(find "$w/dkms" | head -n 20)"
		fi
	fi
	echo "# $k: $(($(date +%s) - t_k)) s"
done

after=$(real_state)
if [ "$before" = "$after" ]; then
	ok "dkms real /lib/modules, /var/lib/dkms and dkms status untouched"
else
	not_ok "dkms real /lib/modules, /var/lib/dkms and dkms status untouched" \
		"$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after"))"
fi

echo "1..$n"
echo "# $((n - failed)) passed, $failed failed in $(($(date +%s) - t_start)) s"
[ "$failed" -eq 0 ]
