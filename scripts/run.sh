#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Body of `make run`: build vballoon for one kernel (KVER: K61 (default),
# K612, K73 or a release name), boot a 2 GiB guest that loads it, and show
# the host's and the guest's view before, during and after a 1 GiB
# inflation.
#
#   KVER=K612 make run
#   KVER=K73 make run            # Linux 7.3: built in the trixie root
#   DRIVER=inkernel make run     # the same with the in-tree virtio_balloon
set -euo pipefail

cd "$(dirname "$0")/.."
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}

kver=${KVER:-K61}
if [ "$kver" = K73 ]; then
	VB_K73=1 bash scripts/deps.sh
else
	bash scripts/deps.sh
fi
# shellcheck source=/dev/null
. "$VB_CACHE/kernels.env"
k73=${K73:-}
case $kver in
K61) kver=$K61 ;;
K612) kver=$K612 ;;
K73) kver=$K73 ;;
esac
driver=${DRIVER:-vballoon}

if [ "$driver" = vballoon ] && [ -n "$k73" ] && [ "$kver" = "$k73" ]; then
	make k73
elif [ "$driver" = vballoon ]; then
	make KDIR="/usr/src/linux-headers-$kver"
fi
make -s -C tests/guest

exec python3 - "$kver" "$driver" <<'EOF'
import os
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), 'scripts'))
from vm import VM, GiB, MiB  # noqa: E402

kver, driver = sys.argv[1], sys.argv[2]


def show(v, title):
    print('--- %s' % title)
    print('host : %s; QEMU RSS %d MiB (THP %d MiB)' % (
        v.hmp('info balloon').strip(), v.rss_kib() // 1024,
        v.anon_huge_kib() // 1024))
    mi = v.meminfo()
    line = 'guest: MemTotal %d MiB, MemFree %d MiB' % (
        mi['MemTotal'] // 1024, mi['MemFree'] // 1024)
    d = v.sysfs_dir()
    if d:
        for attr in ('current_kb', 'target_kb', 'host_target_kb',
                     'floor_kb'):
            rc, out = v.sh('cat %s/%s 2>/dev/null' % (d, attr))
            if rc == 0 and out.strip():
                line += ', %s %s' % (attr, out.strip())
    print(line, flush=True)


print('booting a 2 GiB %s guest with %s ...' % (kver, driver), flush=True)
with VM(kver, driver, load_driver=True) as v:
    print('booted in %.1f s' % v.boot_time)
    deadline = time.monotonic() + 30
    while v.sysfs_dir() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    v.sh_ok('vb_touch -m 1024', 300)
    show(v, 'guest touched 1 GiB and freed it')
    t0 = time.monotonic()
    v.balloon(GiB)
    v.wait_balloon(GiB, 120)
    show(v, 'inflated to 1 GiB in %.2f s' % (time.monotonic() - t0))
    t0 = time.monotonic()
    v.balloon(2 * GiB)
    v.wait_balloon(2 * GiB, 120)
    show(v, 'deflated to 2 GiB in %.2f s' % (time.monotonic() - t0))
    bad = v.bad_console_lines()
    if bad:
        print('console problems:\n  ' + '\n  '.join(bad[:10]))
        sys.exit(1)
    print('console clean')
EOF
