#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Keep our files clean: checkpatch.pl --strict (from linux-source-6.1, used
# in place), and for each test kernel a W=1 build with sparse on every file
# (C=2).  Any diagnostic that names one of our files fails.  Prints one
# "ok"/"not ok" line per check and exits non-zero if any failed.
#
# A check also fails when its tool did not really run: checkpatch must
# print its "total:" line for every file; the build must produce one object
# per source file and the module, kbuild must log a CHECK line for every
# source file, and a canary module built beside ours must draw the sparse
# warning and the W=1 warning it was written to draw.
#
# Linux 7.3 is checked in the trixie root (scripts/trixie-root.sh: its gcc-14
# and its sparse) whenever kernels.env names K73, i.e. once `make deps-k73`
# (or make check, which sets it up) has run; VB_K73=0 leaves it out.
#
# Environment (or make variables, e.g. `make lint CHECK=false`), to point
# the checks at other tools, or to prove that a missing tool fails:
#   CHECKPATCH  checkpatch.pl to run
#   CHECK       the C checker kbuild runs (default sparse)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env" || { echo "not ok - lint: no $VB_CACHE/kernels.env"; exit 1; }
checkpatch=${CHECKPATCH:-$VB_CACHE/linux-source-6.1/scripts/checkpatch.pl}
checker=${CHECK:-sparse}
fail=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

report() {	# name status logfile
	if [ "$2" -eq 0 ]; then
		echo "ok - lint: $1"
	else
		echo "not ok - lint: $1"
		sed 's/^/#   /' "$3" | head -n 60
		fail=1
	fi
}

srcs=(src/*.c)
files=("${srcs[@]}" include/*.h)

# checkpatch wants its spelling and const_structs lists beside it.  It exits
# 0 when clean, 1 on findings; anything else (perl died, file missing) or a
# file without its "total:" line means it did not check everything.  Not
# --terse: that hides the "total:" line of a clean file.  CAMELCASE is
# ignored: the kernel's page type helpers (__SetPageOffline) are CamelCase
# by design, and --no-tree cannot see their definitions.
cp_log=$log/checkpatch
if [ ! -f "$checkpatch" ]; then
	echo "checkpatch.pl not found at $checkpatch" >"$cp_log"
	report "checkpatch --strict" 1 "$cp_log"
else
	perl "$checkpatch" --strict --no-tree --emacs --show-types \
		--ignore FILE_PATH_CHANGES,SPDX_LICENSE_TAG,CAMELCASE \
		-f "${files[@]}" >"$cp_log" 2>&1
	rc=$?
	st=0
	cp_short=$log/checkpatch.short
	grep -E '(WARNING|ERROR|CHECK):' "$cp_log" >"$cp_short"
	ntotal=$(grep -c -E 'total: [0-9]+ errors, [0-9]+ warnings, ([0-9]+ checks, )?[0-9]+ lines checked' "$cp_log")
	if [ $rc -gt 1 ] || [ "$ntotal" -ne ${#files[@]} ]; then
		echo "checkpatch did not check every file: exit status $rc," \
			"$ntotal of ${#files[@]} files reported" >>"$cp_short"
		tail -n 20 "$cp_log" >>"$cp_short"
	fi
	[ -s "$cp_short" ] && st=1
	report "checkpatch --strict (${#files[@]} files)" $st "$cp_short"
fi

kernels=("$K61" "$K612")
if [ -n "${K73:-}" ] && [ "${VB_K73:-1}" != 0 ]; then
	kernels+=("$K73")
fi
for k in "${kernels[@]}"; do
	out=build/lint-$k
	name="W=1 + sparse C=2 on $k"
	short=$log/build-$k.short
	: >"$short"
	# in_env: run a command where this kernel is built (7.3: the root).
	in_env=()
	if [ "$k" = "${K73:-}" ]; then
		in_env=(scripts/trixie-root.sh run)
		name="$name (trixie root)"
	fi
	# shellcheck disable=SC2016
	if ! "${in_env[@]}" sh -c 'command -v "$1"' sh "${checker%% *}" >/dev/null; then
		echo "C checker '$checker' is not installed" >"$short"
		report "$name" 1 "$short"
		continue
	fi
	rm -rf "$out"
	# Staged as the build stages it, in a directory of its own.
	"${in_env[@]}" make -s --no-print-directory stage \
		KDIR="/usr/src/linux-headers-$k" OUT="$PWD/$out"
	# The canary: one warning only sparse gives (an undeclared global) and
	# one only W=1 gives (an unused static const).
	cat >"$out/vb_lint_canary.c" <<-'EOF'
	// SPDX-License-Identifier: GPL-2.0
	#include <linux/module.h>
	int vb_lint_canary_sparse;
	static const int vb_lint_canary_w1 = 1;
	MODULE_LICENSE("GPL");
	MODULE_DESCRIPTION("vballoon lint canary");
	EOF
	echo 'obj-m += vb_lint_canary.o' >>"$out/Kbuild"
	# No -s: kbuild's "CHECK <file>" lines show that the checker ran.
	"${in_env[@]}" make -C "/usr/src/linux-headers-$k" M="$PWD/$out" \
		W=1 C=2 CHECK="$checker" modules >"$log/build-$k" 2>&1
	rc=$?
	b=$log/build-$k
	[ $rc -eq 0 ] || echo "build failed: exit status $rc" >>"$short"
	# Diagnostics about our own files only (kernel headers have their own).
	# The path is a regex: escape the '.' and '+' of the kernel release.
	out_re=$(printf '%s' "$out" | sed 's/[.+]/\\&/g')
	grep -E "$out_re/(src|include|gen)/[^:]+:[0-9]+" "$b" >>"$short"
	nobj=0
	for c in "${srcs[@]}"; do
		f=${c#src/}
		if [ -f "$out/src/${f%.c}.o" ]; then
			nobj=$((nobj + 1))
		else
			echo "no object built for $c$([ $rc -ne 0 ] ||
				echo ' (not in Kbuild?)')" >>"$short"
		fi
		grep -q -E "^ +CHECK +(.*/)?src/$f\$" "$b" ||
			echo "the checker did not run on $c (no CHECK line)" >>"$short"
	done
	[ "$nobj" -gt 0 ] || echo "zero objects built" >>"$short"
	[ -f "$out/vballoon.ko" ] || echo "vballoon.ko not built" >>"$short"
	grep -q -E "vb_lint_canary\.c:[0-9]+:[0-9]+: warning: symbol 'vb_lint_canary_sparse' was not declared" "$b" ||
		echo "canary: no sparse warning, '$checker' did not run as sparse" >>"$short"
	grep -q -E "vb_lint_canary\.c:[0-9]+:[0-9]+: warning: [^ ]*vb_lint_canary_w1[^ ]* defined but not used" "$b" ||
		echo "canary: no W=1 warning (-Wunused-const-variable)" >>"$short"
	if [ -s "$short" ]; then
		tail -n 30 "$b" >>"$short"
		report "$name" 1 "$short"
	else
		report "$name (${#srcs[@]} files checked)" 0 /dev/null
	fi
	rm -rf "$out"
done
exit $fail
