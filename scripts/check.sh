#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Body of `make check`: install what is missing, build the module for both
# test kernels, lint, build the guest programs and run the guest test suite
# on both kernels.  Every step is one counted item; the last line is
# "N passed, N failed, N skipped" over all of them (build and lint steps
# and every test of the suite included; a skip is not a pass).
#
# Environment:
#   VB_TEST_ARGS  extra arguments for tests/run.py (e.g. "-k transport")
#   VB_DRIVER     driver under test (vballoon, default; or inkernel)
#   VB_SLICE      check (default: what CI runs) or full (make check-full:
#                 every test on every kernel and QEMU); tests/README.md
#   VB_KERNELS    kernels for the suite (default all = K61,K612)
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

item "deps" bash scripts/deps.sh
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env" || { echo "no $VB_CACHE/kernels.env"; echo "$passed passed, $((failed + 1)) failed, $skipped skipped"; exit 1; }

for k in "$K61" "$K612"; do
	item "build module $k" make KDIR="/usr/src/linux-headers-$k"
done
# Linux 7.3 (trixie root) only when asked: make check-full does.
if [ "${VB_K73:-0}" = 1 ]; then
	item "build module ${K73:-K73} (trixie root)" make k73
fi

if make -n lint >/dev/null 2>&1; then
	item "lint" make lint
else
	n=$((n + 1))
	skipped=$((skipped + 1))
	echo "ok $n - lint # SKIP no lint target in the Makefile"
fi

item "build guest programs" make -C tests/guest

# The suite prints its own TAP lines and "N passed, N failed, N skipped".
n=$((n + 1))
slice=${VB_SLICE:-check}
echo "# tests/run.py --slice $slice --qemu all ${VB_TEST_ARGS:-}"
suite_log=$logdir/suite.log
# shellcheck disable=SC2086
python3 tests/run.py --no-build --kernel "${VB_KERNELS:-all}" \
	--driver "${VB_DRIVER:-vballoon}" --slice "$slice" --qemu all \
	${VB_TEST_ARGS:-} 2>&1 | tee "$suite_log"
suite_rc=${PIPESTATUS[0]}
summary_re='^([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$'
summary=$(grep -E "$summary_re" "$suite_log" | tail -n 1)
if [[ $summary =~ $summary_re ]]; then
	sp=${BASH_REMATCH[1]}
	sf=${BASH_REMATCH[2]}
	ss=${BASH_REMATCH[3]}
	passed=$((passed + sp))
	failed=$((failed + sf))
	skipped=$((skipped + ss))
	if [ "$suite_rc" -ne 0 ] && [ "$sf" -eq 0 ]; then
		failed=$((failed + 1))
		echo "not ok - tests/run.py exited $suite_rc"
	fi
else
	failed=$((failed + 1))
	echo "not ok - tests/run.py gave no summary (exit status $suite_rc)"
fi

# Real host tools: DKMS on private trees, libvirt with a private daemon.
item "dkms add/build/install (both kernels)" bash tests/dkms_test.sh
item "libvirt setmem/dommemstat (both kernels)" python3 tests/libvirt_test.py --no-build

# A smoke run of the benchmark (no timing assertions: it fails only when
# something functionally broke).
item "bench --quick (smoke)" bash scripts/bench.sh --quick

echo "# make check took $(($(date +%s) - t_start)) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
