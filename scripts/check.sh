#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Body of `make check`: install what is missing (the trixie root for
# Linux 7.3 included), build the module for the three test kernels, lint,
# build and test the Debian package,
# build the guest programs and run the guest test suite on them; build the
# debug kernel (KASAN, lockdep, kmemleak, fault injection) meanwhile and
# run the debug tier on it last.  Every
# step is one counted item; the last line is "N passed, N failed, N
# skipped" over all of them (build and lint steps and every test of the
# suite included; a skip is not a pass).
#
# Environment:
#   VB_TEST_ARGS  extra arguments for tests/run.py (e.g. "-k transport")
#   VB_DRIVER     driver under test (vballoon, default; or inkernel)
#   VB_SLICE      check (default: what CI runs) or full (make check-full:
#                 every test on every kernel and QEMU); tests/README.md
#   VB_KERNELS    kernels for the suite (default K61,K612,K73)
#   VB_K73        0: leave Linux 7.3 out (no trixie root; VB_KERNELS then
#                 defaults to K61,K612)
#   VB_JOBS       guests at a time (default 2; tests/run.py --jobs)
#   VB_DEBUG      0: leave the debug kernel tier out (it is built from
#                 linux-source-6.1 by scripts/debug-kernel.sh, in the
#                 background, and runs the debug tier of the suite)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
root=$PWD
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
logdir=$root/build/check-logs
mkdir -p "$logdir"

passed=0
failed=0
skipped=0
n=0
t_start=$(date +%s)

# item NAME CMD...: run CMD with its output in a log; report ok / not ok.
item() {
	local name=$1 log t0 rc
	shift
	n=$((n + 1))
	log=$logdir/$(echo "$name" | tr -c 'A-Za-z0-9_.-' '_').log
	t0=$(date +%s)
	"$@" >"$log" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		echo "ok $n - $name ($(($(date +%s) - t0)) s)"
	else
		failed=$((failed + 1))
		echo "not ok $n - $name: exit status $rc, log $log"
		tail -n 40 "$log" | sed 's/^/#   /'
	fi
	return $rc
}

export VB_K73=${VB_K73:-1}
item "deps" bash scripts/deps.sh
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env" || { echo "no $VB_CACHE/kernels.env"; echo "$passed passed, $((failed + 1)) failed, $skipped skipped"; exit 1; }

# The debug kernel takes longest to build and the guests leave CPU idle:
# build it at nice 19 beside everything up to the debug tier.
export VB_DEBUG=${VB_DEBUG:-1}
if [ "$VB_DEBUG" = 1 ]; then
	debug_log=$logdir/debug-kernel.log
	VB_DEBUG_NICE=19 bash scripts/debug-kernel.sh >"$debug_log" 2>&1 &
	debug_pid=$!
fi
# The bookworm root for the Debian package test (debootstrap and two
# kernels' headers, about 3 minutes when missing) is made meanwhile too;
# tests/deb_test.sh waits for it (scripts/bookworm-root.sh holds a lock).
bw_log=$logdir/bookworm-root.log
nice -n 19 bash scripts/bookworm-root.sh setup >"$bw_log" 2>&1 &

wait_debug_kernel() {
	local rc=0
	wait "$debug_pid" || rc=$?
	cat "$debug_log"
	return $rc
}

for k in "$K61" "$K612"; do
	item "build module $k" make KDIR="/usr/src/linux-headers-$k"
done
if [ "$VB_K73" = 1 ]; then
	item "build module ${K73:-K73} (trixie root)" make k73
	kernels_default=K61,K612,K73
else
	kernels_default=K61,K612
fi

if make -n lint >/dev/null 2>&1; then
	item "lint" make lint
else
	n=$((n + 1))
	skipped=$((skipped + 1))
	echo "ok $n - lint # SKIP no lint target in the Makefile"
fi

item "build guest programs" make -C tests/guest

# suite KERNELS: run tests/run.py on them; it prints its own TAP lines and
# "N passed, N failed, N skipped", which are added to the totals.
slice=${VB_SLICE:-check}
summary_re='^([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$'
suite() {
	local kernels=$1 log=$logdir/suite-${1//,/-}.log rc summary
	n=$((n + 1))
	echo "# tests/run.py --kernel $kernels --slice $slice --qemu all --jobs ${VB_JOBS:-2} ${VB_TEST_ARGS:-}"
	# shellcheck disable=SC2086
	python3 tests/run.py --no-build --kernel "$kernels" \
		--driver "${VB_DRIVER:-vballoon}" --slice "$slice" --qemu all \
		--jobs "${VB_JOBS:-2}" ${VB_TEST_ARGS:-} 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	summary=$(grep -E "$summary_re" "$log" | tail -n 1)
	if [[ $summary =~ $summary_re ]]; then
		passed=$((passed + BASH_REMATCH[1]))
		failed=$((failed + BASH_REMATCH[2]))
		skipped=$((skipped + BASH_REMATCH[3]))
		if [ "$rc" -ne 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ]; then
			failed=$((failed + 1))
			echo "not ok - tests/run.py exited $rc"
		fi
	else
		failed=$((failed + 1))
		echo "not ok - tests/run.py gave no summary (exit status $rc)"
	fi
}

suite "${VB_KERNELS:-$kernels_default}"

# Real host tools: DKMS on private trees, libvirt with a private daemon.
item "dkms add/build/install (6.1, 6.12)" bash tests/dkms_test.sh
if [ "$VB_K73" = 1 ]; then
	item "dkms add/build/install (7.3, in the trixie root)" \
		scripts/trixie-root.sh run bash tests/dkms_test.sh "$K73"
fi
item "Debian package: make deb, lintian, install/remove in a bookworm root, boot its 6.1 module" \
	bash tests/deb_test.sh
item "libvirt setmem/dommemstat (both kernels)" python3 tests/libvirt_test.py --no-build

# A smoke run of the benchmark (no timing assertions: it fails only when
# something functionally broke).
item "bench --quick (smoke)" bash scripts/bench.sh --quick

# The debug tier: the debug kernel built in the background since deps,
# the module for it, and the debug tier of the suite on it.
if [ "$VB_DEBUG" = 1 ]; then
	item "debug kernel (scripts/debug-kernel.sh, built in the background)" \
		wait_debug_kernel
	# shellcheck source=/dev/null
	. "$VB_CACHE/kernels.env"
	if [ -n "${KDBG:-}" ]; then
		item "build module $KDBG" make KDIR="$VB_CACHE/debug/build"
		suite KDBG
	fi
fi

echo "# make check took $(($(date +%s) - t_start)) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
