# SPDX-License-Identifier: GPL-2.0
"""Host interoperability: what the host sees, whatever the host is.

- request layouts: the chained layout frees host huge pages on a
  hugetlb-backed guest, the single-descriptor layout (for hosts that read
  only the head descriptor) frees none, and in both the PFNs QEMU received
  (its virtio_balloon_handle_output trace events) equal what the guest
  counts;
- REPORTING is declined when the guest poisons freed pages and the host
  has no page-poison;
- actual is rewritten when the driver starts, so a host that kept it over a
  guest reset sees the truth;
- a broken device stops the worker with one error and rmmod still works.

Loaded by tests/run.py (tests/cases_*.py)."""

import os
import re
import time

from run import (test, log, TestSkip, RAM, exact_free_kb, check_no_leak,
                 traced_pfns)
from vm import GiB, MiB, host_meminfo

HUGE_MEM = 1 * GiB          # hugetlb-backed guest size
HUGE_INFLATE = 512 * MiB    # what it balloons
STATS = '/sys/kernel/debug/vballoon/virtio*'


def need_vballoon(ctx, what):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon %s only' % what)


def bound_line(v):
    rc, out = v.sh("dmesg | grep 'vballoon.*bound:' | tail -n 1")
    return out.strip()


def hugepages_reserve(need):
    """Make sure the host has `need` free 2 MiB pages; return the old
    nr_hugepages to restore, or raise TestSkip."""
    mi = host_meminfo()
    if mi.get('Hugepagesize') != 2048:
        raise TestSkip('host huge page size is not 2 MiB')
    path = '/proc/sys/vm/nr_hugepages'
    with open(path) as f:
        old = int(f.read())
    if mi.get('HugePages_Free', 0) >= need:
        return None
    try:
        with open(path, 'w') as f:
            f.write('%d\n' % (old + need - mi.get('HugePages_Free', 0)))
    except OSError as e:
        raise TestSkip('cannot raise %s: %s' % (path, e))
    if host_meminfo().get('HugePages_Free', 0) < need:
        hugepages_restore(old)
        raise TestSkip('host could not provide %d free huge pages' % need)
    return old


def hugepages_restore(old):
    if old is not None:
        with open('/proc/sys/vm/nr_hugepages', 'w') as f:
            f.write('%d\n' % old)


def layout_test(ctx, layout):
    need_vballoon(ctx, 'layout parameter')
    old = hugepages_reserve(HUGE_MEM // (2 * MiB))
    trace = os.path.join(ctx.runner.tmp, 'layout-%s.trace' % layout)
    args = ['-object', 'memory-backend-memfd,id=mem,size=%d,hugetlb=on,'
            'hugetlbsize=2M' % HUGE_MEM,
            '-machine', 'memory-backend=mem',
            '-trace', 'enable=virtio_balloon_handle_output,file=' + trace]
    try:
        with ctx.boot(mem='%dM' % (HUGE_MEM // MiB),
                      extra_qemu_args=args) as v:
            rc, out = v.sh('vb-load layout=%s' % layout, 60)
            ctx.require(rc == 0, 'vb-load layout=%s: rc %d %s'
                        % (layout, rc, out.strip()[-200:]))
            line = bound_line(v)
            ctx.check('layout %s' % layout in line,
                      'bound line: expected "layout %s", got %r'
                      % (layout, line))
            ctx.require(ctx.touch(v, 700), 'guest could not touch 700 MiB')
            free0 = host_meminfo()['HugePages_Free']
            target = HUGE_MEM - HUGE_INFLATE
            v.balloon(target)
            ctx.require(ctx.wait_balloon(v, target, 120, 'inflate')
                        is not None, 'inflate did not complete')
            time.sleep(0.5)
            freed_mib = (host_meminfo()['HugePages_Free'] - free0) * 2
            held_kb = ctx.attr(v, 'current_kb')
            log('layout %s: host huge pages freed %d MiB of %d MiB '
                'ballooned; current_kb %s'
                % (layout, freed_mib, HUGE_INFLATE // MiB, held_kb))
            if layout == 'chain':
                ctx.check(freed_mib >= 0.9 * HUGE_INFLATE // MiB,
                          'chain layout: expected >= 90%% of %d MiB of host '
                          'huge pages freed, got %d MiB'
                          % (HUGE_INFLATE // MiB, freed_mib))
            else:
                # Other processes may move the host pool by a page or two.
                ctx.check(abs(freed_mib) <= 8,
                          'single layout: expected no host huge page freed '
                          '(QEMU frees one only when its 512 PFNs come in '
                          'one element), got %d MiB' % freed_mib)
        pfns = traced_pfns(trace)
        log('layout %s: QEMU traced %d distinct PFNs (%d MiB)'
            % (layout, len(pfns), len(pfns) // 256))
        ctx.check(held_kb is not None and len(pfns) * 4 == held_kb,
                  'PFNs QEMU received: expected current_kb/4 = %s, got %d'
                  % (None if held_kb is None else held_kb // 4, len(pfns)))
        ctx.check(len(pfns) * 4096 == HUGE_INFLATE,
                  'PFNs QEMU received: expected %d, got %d'
                  % (HUGE_INFLATE // 4096, len(pfns)))
    finally:
        hugepages_restore(old)
        try:
            os.unlink(trace)
        except OSError:
            pass


@test('layout_chain_hugetlb', serial=True)
def t_layout_chain(ctx):
    """layout=chain on a hugetlb-backed guest: 512 MiB ballooned frees
    >= 90 % of it in host huge pages; QEMU's traced PFNs equal
    current_kb."""
    layout_test(ctx, 'chain')


@test('layout_single_hugetlb', serial=True)
def t_layout_single(ctx):
    """layout=single (one <= 256-PFN descriptor per element, for hosts that
    read only the head descriptor): no host huge page is freed, and QEMU's
    traced PFNs still equal current_kb."""
    layout_test(ctx, 'single')


@test('layout_param_rejects_garbage')
def t_layout_param(ctx):
    """insmod layout=bogus fails with EINVAL and a clear message; auto
    picks the chained layout on QEMU (modern and legacy PCI, mmio)."""
    need_vballoon(ctx, 'layout parameter')
    with ctx.boot() as v:
        rc, out = v.sh('vb-load layout=bogus')
        ctx.check(rc != 0, 'insmod layout=bogus: expected failure, got rc 0')
        rc, out = v.sh('dmesg | grep "layout=bogus"')
        ctx.check('expected auto, chain or single' in out,
                  'dmesg: expected a clear layout error, got %r'
                  % out.strip())
        v.sh('dmesg -c >/dev/null')
        ctx.load(v)
        line = bound_line(v)
        ctx.check('layout chain' in line,
                  'auto on QEMU (modern PCI): expected "layout chain", got %r'
                  % line)
    with ctx.boot(transport='pci-legacy') as v:
        ctx.load(v)
        line = bound_line(v)
        ctx.check('layout chain' in line,
                  'auto on QEMU (legacy PCI): expected "layout chain", got %r'
                  % line)


@test('reporting_declined_when_poisoning', timeout=600)
def t_reporting_poison(ctx):
    """free-page-reporting=on,page-poison=off with page_poison=1 in the
    guest: REPORTING is declined (the bound line says why), touch / free /
    touch 1 GiB leaves no poison corruption, and QEMU keeps the freed
    memory resident (nothing was reported)."""
    need_vballoon(ctx, 'bound line')
    with ctx.boot(balloon_opts='free-page-reporting=on,page-poison=off',
                  append='page_poison=1') as v:
        ctx.load(v)
        line = bound_line(v)
        log(line)
        ctx.check('reporting off (guest poisons freed pages, host has no '
                  'page-poison)' in line,
                  'bound line: expected reporting off and why, got %r' % line)
        ctx.check('page-poison off' in line,
                  'bound line: expected page-poison off, got %r' % line)
        for i in range(2):
            ctx.touch(v, 1024)
            rss = v.rss_kib()
            time.sleep(5)
            rss2 = v.rss_kib()
            log('round %d: QEMU RSS %d MiB after the touch, %d MiB 5 s '
                'later' % (i, rss // 1024, rss2 // 1024))
            ctx.check(rss - rss2 < 128 * 1024,
                      'nothing reported: expected QEMU RSS to stay, it '
                      'dropped %d MiB' % ((rss - rss2) // 1024))
        rc, out = v.sh('dmesg | grep -iE "memory corruption|poison" | '
                       'grep -v "Kernel command line" | head -n 5')
        bad = [ln for ln in out.splitlines()
               if re.search(r'corrupt|mismatch|overwritten', ln, re.I)]
        ctx.check(not bad, 'dmesg: expected no poison corruption, got %s'
                  % bad[:2])


@test('reset_rewrites_actual', timeout=600)
def t_reset_actual(ctx):
    """QMP system_reset with 1 GiB ballooned: QEMU keeps actual over the
    reset; once the rebooted guest loads the driver, query-balloon shows
    the truth (all RAM, as the host now asks for) and then follows a new
    target; after rmmod it shows all RAM."""
    need_vballoon(ctx, 'actual handling')
    with ctx.boot() as v:
        ctx.load(v)
        ctx.require(ctx.touch(v, 1024), 'guest could not touch 1 GiB')
        v.balloon(GiB)
        ctx.require(ctx.wait_balloon(v, GiB, 120, 'inflate') is not None,
                    'inflate did not complete')
        # The harness runs QEMU with -no-reboot: make a reset a reset.
        v.qmp('set-action', reboot='reset')
        v.qmp('system_reset')
        v._wait_shell(120)
        v.balloon(RAM)
        time.sleep(1)
        stale = v.query_balloon()
        log('after system_reset, before the driver loads: query-balloon '
            '%d MiB (QEMU keeps actual over a reset)' % (stale // MiB))
        ctx.load(v)
        took = ctx.wait_balloon(v, RAM, 20, 'after probe')
        ctx.check(took is not None, 'probe did not rewrite actual')
        ctx.require(ctx.touch(v, 1024), 'guest could not touch 1 GiB')
        rss0 = v.rss_kib()
        v.balloon(1536 * MiB)
        ctx.wait_balloon(v, 1536 * MiB, 120, 'new target after reset')
        ctx.check(ctx.attr(v, 'current_kb') == 512 * 1024,
                  'current_kb: expected %d, got %s'
                  % (512 * 1024, ctx.attr(v, 'current_kb')))
        rss1 = v.rss_kib()
        log('QEMU RSS %d -> %d MiB' % (rss0 // 1024, rss1 // 1024))
        ctx.check(rss0 - rss1 >= 0.9 * 512 * 1024,
                  'QEMU RSS drop for 512 MiB ballooned after the reset: '
                  'expected >= 90 %%, got %d MiB' % ((rss0 - rss1) // 1024))
        ctx.unload(v)
        ctx.wait_balloon(v, RAM, 30, 'after rmmod')


@test('broken_device_stops_worker', timeout=600)
def t_broken(ctx):
    """The device breaks during a 1.5 GiB inflation (debugfs
    inject_broken): one "device is broken" error, the worker stops (the
    guest idles), rmmod returns every page and query-balloon shows all
    RAM."""
    need_vballoon(ctx, 'fault injection')
    with ctx.boot() as v:
        f0 = exact_free_kb(v)
        ctx.load(v)
        v.balloon(512 * MiB)
        time.sleep(0.5)
        rc, out = v.sh('for f in %s/inject_broken; do echo 1 > $f; done'
                       % STATS)
        ctx.require(rc == 0, 'inject_broken: rc %d %s' % (rc, out.strip()))
        time.sleep(2)
        rc, out = v.sh('dmesg | grep -c "device is broken"')
        ctx.check(out.strip() == '1', 'expected one "device is broken" '
                  'line, got %s' % out.strip())
        at = v.query_balloon()

        def busy():
            rc, out = v.sh('head -n 1 /proc/stat')
            f = [int(x) for x in out.split()[1:]]
            return sum(f) - f[3] - f[4], sum(f)
        b0, t0 = busy()
        time.sleep(5)
        b1, t1 = busy()
        frac = (b1 - b0) / max(1, t1 - t0)
        log('broken at %d MiB ballooned; guest CPU busy %.1f %% over 5 s'
            % ((RAM - at) // MiB, 100 * frac))
        ctx.check(frac < 0.25, 'a stopped worker: expected the guest '
                  'mostly idle, got %.0f %% busy' % (100 * frac))
        ctx.check(v.query_balloon() == at,
                  'balloon moved after the device broke: %d -> %d MiB'
                  % (at // MiB, v.query_balloon() // MiB))
        ctx.unload(v)
        ctx.wait_balloon(v, RAM, 30, 'after rmmod of a broken device')
        check_no_leak(ctx, f0, exact_free_kb(v),
                      'before insmod vs after rmmod of a broken device')
        # The one expected error line must not fail the harness's dmesg
        # check.
        v.sh('dmesg -c >/dev/null')
