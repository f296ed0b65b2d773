#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Keep our files clean: checkpatch.pl --strict (from linux-source-6.1, used
# in place), and for each test kernel a W=1 build with sparse on every file
# (C=2).  Any diagnostic that names one of our files fails.  Prints one
# "ok"/"not ok" line per check and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env"
checkpatch=$VB_CACHE/linux-source-6.1/scripts/checkpatch.pl
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

files=$(ls src/*.c include/*.h)
# checkpatch wants its spelling and const_structs lists beside it.
perl "$checkpatch" --strict --no-tree --terse --show-types \
	--ignore FILE_PATH_CHANGES,SPDX_LICENSE_TAG \
	-f $files >"$log/checkpatch" 2>&1
grep -q -E '(WARNING|ERROR|CHECK):' "$log/checkpatch"
report "checkpatch --strict" "$((1 - $?))" "$log/checkpatch"

for k in "$K61" "$K612"; do
	out=build/lint-$k
	rm -rf "$out"
	mkdir -p "$out/src" "$out/include" "$out/gen"
	cp -p Kbuild "$out/"
	cp -p src/*.c "$out/src/"
	cp -p include/*.h "$out/include/"
	scripts/probe-api.sh "/usr/src/linux-headers-$k" "$out/gen/vb_autoconf.h"
	make -s -C "/usr/src/linux-headers-$k" M="$PWD/$out" W=1 C=2 \
		CHECK="sparse" modules >"$log/build-$k" 2>&1
	rc=$?
	# Diagnostics about our own files only (kernel headers have their own).
	grep -E "$out/(src|include|gen)/[^:]+:[0-9]+" "$log/build-$k" >"$log/ours-$k"
	if [ $rc -ne 0 ] || [ -s "$log/ours-$k" ]; then
		cat "$log/ours-$k" >>"$log/build-$k.short"
		tail -n 30 "$log/build-$k" >>"$log/build-$k.short"
		report "W=1 + sparse C=2 on $k" 1 "$log/build-$k.short"
	else
		report "W=1 + sparse C=2 on $k" 0 /dev/null
	fi
	rm -rf "$out"
done
exit $fail
