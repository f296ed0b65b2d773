#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh [bench.py options]     (what `make bench` runs)
#
# Install what is missing, build vballoon for both test kernels, the static
# guest programs and the host's madv_bench, then compare vballoon with the
# in-tree virtio_balloon (scripts/bench.py; --quick for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."

VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
export VB_CACHE

bash scripts/deps.sh
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env"

for k in "$K61" "$K612"; do
	make -s KDIR="/usr/src/linux-headers-$k"
done
make -s -C tests/guest

mkdir -p build/bench
gcc -O2 -Wall -Wextra -o build/bench/madv_bench scripts/madv_bench.c

exec python3 scripts/bench.py "$@"
