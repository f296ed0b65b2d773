#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh [bench.py options]     (what `make bench` runs)
#
# Install what is missing, build vballoon for both test kernels, the static
# guest programs and the host's madv_bench, then compare vballoon with the
# in-tree virtio_balloon (scripts/bench.py; --quick for a smoke run).
# `make bench BENCH_ARGS="--kernels K73"` (any --kernels naming K73) also
# sets up the trixie root and builds for Linux 7.3 there.
set -euo pipefail
cd "$(dirname "$0")/.."

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
export VB_CACHE

k73=0
case " $* " in
*K73*) k73=1 ;;
esac
VB_K73=$k73 bash scripts/deps.sh
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env"

for k in "$K61" "$K612"; do
	make -s KDIR="/usr/src/linux-headers-$k"
done
[ "$k73" = 0 ] || make -s k73
make -s -C tests/guest

mkdir -p build/bench
gcc -O2 -Wall -Wextra -o build/bench/madv_bench scripts/madv_bench.c

exec python3 scripts/bench.py "$@"
