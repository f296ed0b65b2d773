# SPDX-License-Identifier: GPL-2.0
"""The guest's memory management (issue 11): balloon pages are
PageOffline, memory holding balloon pages can go offline, and an OOM
bound to one NUMA node takes balloon pages of that node back instead of
killing.

Loaded by tests/run.py (tests/cases_*.py)."""

import re
import time

from run import test, log, TestSkip, RAM
from vm import GiB, MiB, VMError

PAGE = 4096


def need_vballoon(ctx):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')


def kpf(v, start=None, nr=None):
    """(offline, nopage, frames) page counts from /proc/kpageflags over
    the whole file or [start, start + nr)."""
    arg = '' if start is None else ' %d %d' % (start, nr)
    out = v.sh_ok('vb_kpf' + arg, timeout=120)
    m = re.search(r'offline (\d+) nopage (\d+) frames (\d+)', out)
    if not m:
        raise VMError('vb_kpf: unexpected output %r' % out[-200:])
    return tuple(int(x) for x in m.groups())


def ballooned_pages(v):
    return (RAM - v.query_balloon()) // PAGE


@test('page_offline_flags')
def t_page_offline_flags(ctx):
    """Every balloon page is PageOffline (/proc/kpageflags KPF_OFFLINE),
    and none is once the balloon is empty: the count matches what the
    host sees ballooned and QEMU's RSS falls by as much."""
    with ctx.boot() as v:
        ctx.load(v)
        off0 = kpf(v)[0]
        ctx.touch(v, 1100)
        rss0 = v.rss_kib()
        v.balloon(RAM - GiB)
        ctx.require(ctx.wait_balloon(v, RAM - GiB, 120, 'inflate')
                    is not None, 'inflate to 1 GiB did not complete')
        ctx.check_rss_drop(v, rss0, GiB // 1024)
        off1 = kpf(v)[0]
        held = ballooned_pages(v)
        log('PageOffline pages: %d before, %d with %d pages ballooned '
            '(query-balloon)' % (off0, off1, held))
        ctx.check(off1 - off0 == held,
                  'expected one PageOffline page per ballooned page: %d '
                  'ballooned (query-balloon), %d PageOffline (%d before '
                  'inflating)' % (held, off1, off0))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        off2 = kpf(v)[0]
        log('PageOffline pages after deflating: %d' % off2)
        ctx.check(off2 == off0, 'expected %d PageOffline pages after '
                  'deflating, got %d' % (off0, off2))


def memory_blocks(v):
    """(block size in pages, [(block number, state)]) from sysfs."""
    size = int(v.sh_ok('cat /sys/devices/system/memory/block_size_bytes')
               .strip(), 16) // PAGE
    out = v.sh_ok('for d in /sys/devices/system/memory/memory*; do '
                  'echo "${d##*memory} $(cat $d/state)"; done')
    blocks = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 2 and parts[0].isdigit():
            blocks.append((int(parts[0]), parts[1]))
    return size, sorted(blocks)


def allow_unmovable_dumps(ctx, v):
    """A block that fails to go offline makes the kernel dump the page
    that stopped it ("page dumped because: unmovable page").  Accept those
    dumps for pages that are not the balloon's (slab, page tables); a
    balloon page there would mean offlining cannot take ours."""
    pfns = re.findall(r'refcount:\d+ mapcount:\S+ mapping:\S+ index:\S+ '
                      r'pfn:(0x[0-9a-f]+)', v.console_text())
    if not pfns:
        return
    ours = [p for p in pfns if kpf(v, int(p, 16), 1)[0]]
    log('pages the kernel named as unmovable: %s; of them the balloon\'s '
        '(PageOffline): %s' % (pfns, ours or 'none'))
    ctx.check(not ours, 'a balloon page kept memory from going offline: '
              'pfn %s' % ours)
    if not ours:
        ctx.expect_console(r'page dumped because: unmovable page')
        ctx.expect_console(r'refcount:\d+ mapcount:\S+ mapping:\S+ '
                           r'index:\S+ pfn:(%s)\b' % '|'.join(pfns))


@test('offline_memory_block', timeout=900)
def t_offline_memory_block(ctx):
    """A memory block that holds balloon pages goes offline: the balloon
    gives those pages back through the host, takes as many elsewhere and
    keeps its size; QEMU's RSS does not grow by the block.  Without this
    the block's PageOffline pages would make offlining retry forever.
    The block comes back online and the balloon empties cleanly."""
    need_vballoon(ctx)
    target = RAM - 1280 * MiB
    with ctx.boot() as v:
        ctx.load(v)
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate to 1.25 GiB did not complete')
        size, blocks = memory_blocks(v)
        ctx.require(blocks, 'no memory blocks in sysfs')
        s0 = ctx.vb_stats(v)
        rss0 = v.rss_kib()
        done = None
        tried = []
        # From the top down: the kernel's own allocations sit low.
        for n, state in reversed(blocks):
            if state != 'online' or len(tried) >= 6:
                continue
            held_here = kpf(v, n * size, size)[0]
            if held_here < size // 4:
                continue
            rc, out = v.sh('echo offline > /sys/devices/system/memory/'
                           'memory%d/state' % n, timeout=120)
            tried.append((n, held_here, rc))
            if rc == 0:
                done = (n, held_here)
                break
        log('offline attempts (block, balloon pages in it, rc): %s'
            % tried)
        allow_unmovable_dumps(ctx, v)
        ctx.require(done is not None, 'expected a memory block holding '
                    'balloon pages to go offline, none did: %s' % tried)
        n, held_here = done
        state = v.sh_ok('cat /sys/devices/system/memory/memory%d/state'
                        % n).strip()
        ctx.check(state == 'offline', 'memory%d: expected state offline, '
                  'got %s' % (n, state))
        s1 = ctx.vb_stats(v)
        gave = s1['offline_evicted_pages'] - s0['offline_evicted_pages']
        log('memory%d offline: it held %d balloon pages, the driver gave '
            'back %d (%d evictions)'
            % (n, held_here, gave,
               s1['offline_evictions'] - s0['offline_evictions']))
        ctx.check(gave == held_here, 'expected the driver to give back the '
                  '%d balloon pages of memory%d, it gave back %d'
                  % (held_here, n, gave))
        # The balloon takes as many again elsewhere.
        took = ctx.wait_balloon(v, target, 60, 'refill after offlining')
        if took is not None:
            log('balloon back at 1.25 GiB %.1f s after offlining' % took)
        off = kpf(v)[0]
        held = ctx.vb_stats(v)['held_pages']
        ctx.check(off == held and held == ballooned_pages(v),
                  'after offlining: expected PageOffline pages = held_pages '
                  '= ballooned pages, got %d, %d, %d'
                  % (off, held, ballooned_pages(v)))
        rss1 = v.rss_kib()
        log('QEMU RSS %d MiB before offlining, %d MiB after'
            % (rss0 // 1024, rss1 // 1024))
        ctx.check(rss1 <= rss0 + 64 * 1024, 'expected QEMU RSS not to grow '
                  'by the offlined block: %d -> %d MiB'
                  % (rss0 // 1024, rss1 // 1024))

        rc, out = v.sh('echo online > /sys/devices/system/memory/'
                       'memory%d/state' % n, timeout=60)
        ctx.check(rc == 0, 'memory%d back online: rc %d: %s'
                  % (n, rc, out.strip()[-200:]))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        off = kpf(v)[0]
        ctx.check(off == 0, 'after deflating: expected no PageOffline '
                  'page, got %d' % off)


NUMA_ARGS = ['-object', 'memory-backend-ram,id=m0,size=1G',
             '-object', 'memory-backend-ram,id=m1,size=1G',
             '-numa', 'node,nodeid=0,cpus=0,memdev=m0',
             '-numa', 'node,nodeid=1,cpus=1,memdev=m1']


def node_pfns(v, node):
    """[(start pfn, pages)] of the memory blocks of a NUMA node."""
    size = int(v.sh_ok('cat /sys/devices/system/memory/block_size_bytes')
               .strip(), 16) // PAGE
    out = v.sh_ok('ls /sys/devices/system/node/node%d' % node)
    return [(int(m.group(1)) * size, size)
            for m in re.finditer(r'\bmemory(\d+)\b', out)]


def node_offline(v, ranges):
    return sum(kpf(v, s, n)[0] for s, n in ranges)


@test('numa_bound_oom', timeout=900)
def t_numa_bound_oom(ctx):
    """Two 1 GiB NUMA nodes, DEFLATE_ON_OOM, a 1.2 GiB balloon: a program
    bound to node 1 (MPOL_BIND) touches 700 MiB and completes with no OOM
    kill.  The guest as a whole is not short, so the shrinker's gate
    opens late if at all: the OOM notifier gives back balloon pages, those
    of node 1.  An OOM notifier runs only inside the OOM killer, so each
    of its deflations is a kill avoided."""
    need_vballoon(ctx)
    target = RAM - 1229 * MiB
    # One socket per node: CPUs of one socket on two nodes make the
    # kernel warn about the topology at boot.
    with ctx.boot(balloon_opts='deflate-on-oom=on', smp='2,sockets=2',
                  extra_qemu_args=NUMA_ARGS) as v:
        ctx.load(v)
        nodes = v.sh_ok('cat /sys/devices/system/node/online').strip()
        ctx.require(nodes == '0-1', 'expected NUMA nodes 0-1, got %r'
                    % nodes)
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate to 1.2 GiB did not complete')
        n1 = node_pfns(v, 1)
        b1 = node_offline(v, n1)
        s0 = ctx.vb_stats(v)
        oom0 = v.vmstat().get('oom_kill', 0)
        log('balloon %d MiB, %d MiB of it on node 1'
            % (ballooned_pages(v) * PAGE // MiB, b1 * PAGE // MiB))
        t0 = time.monotonic()
        rc, out = v.sh('vb_touch -m 700 -N 1', timeout=400)
        log('vb_touch -m 700 -N 1: rc %d in %.1f s: %s'
            % (rc, time.monotonic() - t0, out.strip()[-200:]))
        oom1 = v.vmstat().get('oom_kill', 0)
        s1 = ctx.vb_stats(v)
        b1_after = node_offline(v, n1)
        d = {k: s1[k] - s0[k] for k in ('oom_deflations', 'oom_pages',
                                        'pressure_pages',
                                        'floor_deflated_pages')}
        log('counters: %s; node 1 balloon pages %d -> %d MiB'
            % (' '.join('%s=+%d' % kv for kv in d.items()),
               b1 * PAGE // MiB, b1_after * PAGE // MiB))
        ctx.check(rc == 0, 'vb_touch bound to node 1: expected rc 0, got '
                  '%d: %s' % (rc, out.strip()[-200:]))
        ctx.check(oom1 == oom0, 'expected no OOM kill, oom_kill went %d '
                  '-> %d' % (oom0, oom1))
        ctx.check(d['oom_pages'] > 0, 'expected the OOM notifier to give '
                  'pages back, oom_pages did not move')
        ctx.check(b1_after < b1, 'expected the balloon to give back pages '
                  'of node 1, it held %d MiB there before and %d MiB after'
                  % (b1 * PAGE // MiB, b1_after * PAGE // MiB))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
