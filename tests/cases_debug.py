# SPDX-License-Identifier: GPL-2.0
"""Tests for the debug guest kernel only (scripts/debug-kernel.sh: KASAN,
lockdep, kmemleak, DEBUG_VM, fault injection).  tests/run.py plans them on
that kernel (KDBG) alone; on another kernel they skip.

  kmemleak_after_rmmod  a full inflate/deflate/rmmod leaves no leak
  probe_fail_nth        every allocation of probe fails in turn
  restore_fail_nth      the allocations of a suspend cycle fail in turn
                        until the balloon's restore failed 5 times
  fail_page_alloc_moving  inflate, deflate and a pressure run with 10 %
                          of page allocations failing converge, leak
                          nothing
  failslab_stats_reporting  statistics and free page reporting carry on
                          after slab allocations failed beneath them

Every other debug-tier test (DEBUG_TIER in run.py) is a normal test that
also runs on KDBG, where any KASAN, lockdep, UBSAN, KFENCE, ODEBUG or
DEBUG_VM line on the console fails it (scripts/vm.py BAD_CONSOLE).
"""

import os
import re
import time

from run import (test, log, TestSkip, TestFail, RAM, exact_free_kb,
                 check_no_leak, traced_pfns)
from vm import GiB, MiB

KMEMLEAK = '/sys/kernel/debug/kmemleak'
FAULT_DIRS = ('/sys/kernel/debug/failslab',
              '/sys/kernel/debug/fail_page_alloc')
BIND = '/sys/bus/virtio/drivers/vballoon'
# errnos a failed probe may return: allocation failures, and what the
# virtio core or the driver core turn them into.
CLEAN_ERRNOS = {'ENOMEM', 'EIO', 'ENODEV', 'ENOENT', 'EINVAL', 'EBUSY',
                'ENOSPC'}
MAX_NTH = 400
# What register_irq_proc() creates in /proc/irq/N.
IRQ_PROC_FILES = ('smp_affinity', 'affinity_hint', 'smp_affinity_list',
                  'node', 'effective_affinity', 'effective_affinity_list',
                  'spurious')
# make-it-fail on every kernel worker thread (fail_page_alloc task-filter).
MARK_KWORKERS = ('for p in /proc/[0-9]*; do case "$(cat $p/comm 2>/dev/null)"'
                 ' in kworker*) echo 1 > $p/make-it-fail;; esac; done '
                 '2>/dev/null; true')


def need_debug(ctx, v):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon on the debug kernel only')
    rc, _ = v.sh('test -e %s && test -e /proc/self/fail-nth' % KMEMLEAK)
    if rc != 0:
        raise TestSkip('not the debug kernel (no kmemleak or fail-nth)')


def faults_quiet(v):
    """Let failslab and fail_page_alloc fail any allocation (by default
    they skip those that may sleep, and page allocations of order 0),
    without the stack dump they print for each injected failure."""
    for d in FAULT_DIRS:
        v.sh_ok('echo N > %s/ignore-gfp-wait; echo 0 > %s/verbose'
                % (d, d))
    v.sh_ok('echo N > /sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem;'
            ' echo 0 > /sys/kernel/debug/fail_page_alloc/min-order')


def kmemleak_report(v):
    """Scan twice (an object is reported once it stayed unreferenced
    through a scan and is older than 5 s) and return the report."""
    time.sleep(6)
    v.sh_ok('echo scan > %s' % KMEMLEAK, 600)
    v.sh_ok('echo scan > %s' % KMEMLEAK, 600)
    return v.sh_ok('cat %s' % KMEMLEAK, 120).strip()


def check_kmemleak(ctx, v, what):
    rep = kmemleak_report(v)
    objs = re.findall(r'unreferenced object', rep)
    log('%s: kmemleak reports %d object(s)' % (what, len(objs)))
    if objs:
        log(rep[:3000])
    ctx.check(not objs, '%s: kmemleak: expected nothing, got %d '
              'unreferenced object(s): %s' % (what, len(objs),
                                              ' '.join(rep.split())[:300]))


def start(ctx, v, faults=False):
    """Skip unless on the debug kernel; with faults, set fault injection
    up (faults_quiet); forget what kmemleak found so far, measure free
    memory, insmod.  Returns the free memory measured."""
    need_debug(ctx, v)
    if faults:
        faults_quiet(v)
    v.sh_ok('echo clear > %s' % KMEMLEAK, 300)
    f0 = exact_free_kb(v)
    ctx.load(v)
    return f0


def unload_no_leak(ctx, v, f0, what):
    """rmmod, then free memory as before insmod (f0) and no kmemleak
    report."""
    ctx.unload(v)
    check_no_leak(ctx, f0, exact_free_kb(v), 'before insmod vs after '
                  + what)
    check_kmemleak(ctx, v, 'after ' + what)


@test('kmemleak_after_rmmod', timeout=1200, debug_only=True)
def t_kmemleak(ctx):
    """Debug kernel: insmod, inflate 1 GiB, deflate, inflate again and
    rmmod while inflated: kmemleak then reports nothing (every report
    since boot is cleared first) and free memory is back to the page."""
    with ctx.boot() as v:
        f0 = start(ctx, v)
        v.balloon(RAM - GiB)
        ctx.wait_balloon(v, RAM - GiB, 300, 'inflate 1 GiB')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 300, 'deflate')
        v.balloon(RAM - 512 * MiB)
        ctx.wait_balloon(v, RAM - 512 * MiB, 300, 'inflate 512 MiB')
        unload_no_leak(ctx, v, f0, 'rmmod')


def fail_nth(ctx, v, n, path, value, what, errnos):
    """Write value to path with the Nth fallible call of the write failing
    (the guest's vb_failnth).  A failed write must fail with a clean errno;
    errnos counts them by name.  Returns the write's return code and
    whether the write reached its Nth call (when not, the walk is over)."""
    out = v.sh_ok('vb_failnth %d %s %s' % (n, path, value), 120)
    m = re.search(r'rc=(-?\d+) errno=(\S+) injected=(\d)', out)
    ctx.require(m, 'vb_failnth %d: unexpected output %r'
                % (n, out.strip()[-200:]))
    rc, err = int(m.group(1)), m.group(2)
    if rc != 0:
        errnos[err] = errnos.get(err, 0) + 1
        ctx.check(err in CLEAN_ERRNOS, '%s with call %d failing: expected '
                  'a clean errno, got %s' % (what, n, err))
    return rc, m.group(3) != '0'


def trace_balloon(v, on):
    """Switch QEMU's virtio_balloon_handle_output trace event."""
    v.qmp('trace-event-set-state', name='virtio_balloon_handle_output',
          enable=on)


def check_host_took(ctx, v, trace, at, size, what):
    """The host's eyes on an inflation by size bytes: QEMU's trace of
    virtio_balloon_handle_output from byte offset at on names that many
    distinct pages, and QEMU's pagemap holds memory for none of them."""
    time.sleep(0.3)
    pfns = traced_pfns(trace, at)
    addr = v.guest_ram_addr()
    ctx.require(addr is not None, '%s: guest RAM not found in QEMU\'s '
                'mappings' % what)
    kept = pfns & v.resident_pages(addr)
    log('%s: QEMU traced %d pages, %d still resident'
        % (what, len(pfns), len(kept)))
    ctx.check(len(pfns) == size >> 12 and not kept, '%s: expected QEMU to '
              'take %d pages and hold none of them, traced %d, %d still '
              'resident' % (what, size >> 12, len(pfns), len(kept)))


def expect_irq_proc_warning(ctx):
    """Where the balloon has MSI-X (QEMU 10.0), find_vqs gives its
    vectors /proc/irq/N entries: register_irq_proc() does not check its
    proc_create() calls, one of which the Nth failure can hit, and
    freeing the vector later (remove, freeze, an unwound probe or
    restore) warns that the entry is missing.  That warning, from the
    IRQ core freeing our vectors, and no other."""
    ctx.expect_warning(r"\bname '(%s)'\s*$" % '|'.join(IRQ_PROC_FILES),
                       r'WARNING: .* remove_proc_entry\b',
                       r'\bunregister_irq_proc\b',
                       r'\bpci_free_irq_vectors\b')


@test('probe_fail_nth', timeout=1800, debug_only=True)
def t_probe_fail_nth(ctx):
    """Debug kernel: with vballoon loaded but unbound, bind it with the
    Nth fallible call of the bind failing, for N = 1, 2, ... until a bind
    makes fewer than N calls.  Each try: the write fails with a clean
    errno and the device stays unbound, or it succeeds and the device
    works (unbound again for the next N); the console stays clean.
    Afterwards a normal bind inflates and deflates, rmmod leaves no
    kmemleak report and free memory is back to the page."""
    # The driver core reports each failed probe, and a failure to create
    # the sysfs attributes (it then calls remove); nothing else.
    ctx.expect_console(r'vballoon: probe of virtio\d+ failed with error '
                       r'-(12|5|19|2|22|16|28)$')
    ctx.expect_console(r'vballoon virtio\d+: device_add_groups\(\) '
                       r'failed$')
    expect_irq_proc_warning(ctx)
    with ctx.boot() as v:
        f0 = start(ctx, v, faults=True)
        dev = v.sysfs_dir().rsplit('/', 1)[1]
        v.sh_ok('echo %s > %s/unbind' % (dev, BIND))
        failed, bound, n = {}, 0, 0
        for n in range(1, MAX_NTH + 1):
            rc, reached = fail_nth(ctx, v, n, BIND + '/bind', dev, 'bind',
                                   failed)
            is_bound = v.sysfs_dir() is not None
            if rc != 0:
                ctx.check(not is_bound, 'bind with call %d failing: '
                          'failed but the device is bound' % n)
            else:
                bound += 1
                ctx.check(is_bound, 'bind with call %d failing: '
                          'succeeded but the device is not bound' % n)
            if is_bound:
                v.sh_ok('echo %s > %s/unbind' % (dev, BIND))
            if not reached:
                break
        else:
            ctx.check(False, 'bind still reached its %dth fallible call'
                      % MAX_NTH)
        log('bind tried with calls 1..%d failing: %d failed (%s), %d bound '
            'anyway' % (n, sum(failed.values()),
                        ', '.join('%s x%d' % kv for kv in failed.items()),
                        bound))
        ctx.check(sum(failed.values()) > 0, 'no bind ever failed: the '
                  'fault injection did not reach probe')
        # Probe failures print an error line naming the device; expected.
        v.sh('dmesg -c >/dev/null')
        v.sh_ok('echo %s > %s/bind' % (dev, BIND))
        ctx.require(v.sysfs_dir() is not None, 'a normal bind after the '
                    'loop: device not bound')
        v.balloon(RAM - 512 * MiB)
        ctx.wait_balloon(v, RAM - 512 * MiB, 300, 'inflate after the loop')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 300, 'deflate after the loop')
        unload_no_leak(ctx, v, f0, 'the loop and rmmod')


# With pm_async=1, runs the serial ports' callbacks in the PM core's async
# threads (their fail-nth is 0) and the balloon's in the task that writes
# /sys/power/state: the port with the test's shell resumes right after
# the balloon, and a failure in its resume cuts the shell off for good.
# PCI devices other than the balloon are async by default; each async
# device costs the task one allocation per phase, so no more are made
# async.  The power/async files need CONFIG_PM_ADVANCED_DEBUG.
SERIAL_ASYNC = (
    'for f in /sys/bus/pnp/drivers/serial/*/power/async '
    '/sys/devices/platform/serial8250/power/async; do '
    'if test -e $f; then echo enabled > $f || exit 1; fi; done; '
    'echo disabled > /sys/bus/pci/devices/{pci}/power/async && '
    'echo disabled > /sys/bus/virtio/devices/{dev}/power/async && '
    'echo 1 > /sys/power/pm_async')


def irq_mode(v, dev):
    """How the balloon's interrupts are set up now, from /proc/interrupts:
    'per-vq' (an MSI-X vector per queue), 'shared' (one MSI-X vector for
    the queues), 'intx' or 'none'."""
    names = set(re.findall(r'\b(%s(?:-\S+)?)\s*$' % re.escape(dev),
                           v.sh_ok('cat /proc/interrupts'), re.M))
    if '%s-virtqueues' % dev in names:
        return 'shared'
    if any(x.startswith(dev + '-') and x != dev + '-config' for x in names):
        return 'per-vq'
    return 'intx' if dev in names else 'none'


@test('restore_fail_nth', timeout=2400, debug_only=True)
def t_restore_fail_nth(ctx):
    """Debug kernel: freeze and restore with allocations failing in turn.
    The balloon's callbacks run in the task that writes /sys/power/state,
    the serial ports' in the PM core's async threads (power/async); 64
    MiB are ballooned.  One suspend cycle (pm_test=devices) per N with
    the Nth fallible call of that task failing, N = 1, 2, ... until a
    cycle makes fewer than N calls: the suspend path, the balloon's
    freeze, its restore and the resume path.  Each write fails with a
    clean errno or succeeds; a restore that failed is reported, and a
    plain cycle then brings the balloon back; a restore that fell back to
    fewer interrupt vectors (MSI-X per queue, shared, INTx) must work: the
    first time in each such mode the balloon inflates 32 MiB (the three
    views agree; QEMU's trace names 8192 pages and its pagemap holds none
    of them) and deflates back; the walk must have failed or degraded the
    restore at least once.
    Afterwards the balloon is back at its size, inflates and deflates as
    the host asks (query-balloon, current_kb and held_pages agree, and
    QEMU RSS falls by the 512 MiB inflated, memory the guest touched
    first), and rmmod leaves no kmemleak report and free memory back to
    the page."""
    expect_irq_proc_warning(ctx)
    trace = os.path.join(ctx.runner.tmp, 'restore-fail-nth.trace')
    with ctx.boot(extra_qemu_args=[
            '-trace', 'enable=virtio_balloon_handle_output,file=' +
            trace]) as v:
        # Traced only where checked: each cycle moves the whole balloon.
        trace_balloon(v, False)
        # Touched first, so that the host has something to get back.
        ctx.touch(v, 768)
        rss0 = v.rss_kib()
        f0 = start(ctx, v, faults=True)
        dev = v.sysfs_dir().rsplit('/', 1)[1]
        pci = v.sh_ok('basename $(dirname $(readlink -f '
                      '/sys/bus/virtio/devices/%s))' % dev).strip()
        mine = '%s: PM: failed to resume' % pci
        rc, _ = v.sh('test -e /sys/bus/pci/devices/%s/power/async' % pci)
        ctx.require(rc == 0, 'no power/async in sysfs: the debug kernel '
                    'lacks CONFIG_PM_ADVANCED_DEBUG')
        v.sh_ok(SERIAL_ASYNC.format(pci=pci, dev=dev))
        v.sh_ok('echo devices > /sys/power/pm_test; p=/sys/module/suspend/'
                'parameters/pm_test_delay; if test -w $p; then echo 0 > $p;'
                ' fi')
        mode0 = irq_mode(v, dev)
        log('the balloon\'s interrupts: %s' % mode0)
        v.balloon(RAM - 64 * MiB)
        ctx.wait_balloon(v, RAM - 64 * MiB, 120, 'inflate 64 MiB')
        v.sh('dmesg -c >/dev/null')
        errnos, failed, degraded, n = {}, [], {}, 0
        try:
            for n in range(1, MAX_NTH + 1):
                _, reached = fail_nth(ctx, v, n, '/sys/power/state', 'mem',
                                      'suspend', errnos)
                if mine in v.sh_ok('dmesg -c'):
                    failed.append(n)
                    v.sh_ok('echo mem > /sys/power/state')
                    ctx.check(mine not in v.sh_ok('dmesg -c'), 'a plain '
                              'cycle after restore failed with call %d '
                              'failing: the balloon did not resume' % n)
                else:
                    mode = irq_mode(v, dev)
                    if mode != mode0 and mode not in degraded:
                        # The first time in this mode: the balloon moves,
                        # once back at 64 MiB (the freeze gave all back).
                        ctx.wait_balloon(v, RAM - 64 * MiB, 120, 'balloon '
                                         'back with %s interrupts' % mode)
                        at = os.path.getsize(trace)
                        trace_balloon(v, True)
                        v.balloon(RAM - 96 * MiB)
                        ctx.wait_balloon(v, RAM - 96 * MiB, 120, 'inflate '
                                         'with %s interrupts' % mode)
                        ctx.check_views(v, 'with %s interrupts' % mode,
                                        want=96 * MiB)
                        check_host_took(ctx, v, trace, at, 32 * MiB,
                                        'inflate by 32 MiB with %s '
                                        'interrupts' % mode)
                        trace_balloon(v, False)
                        v.balloon(RAM - 64 * MiB)
                        ctx.wait_balloon(v, RAM - 64 * MiB, 120, 'deflate '
                                         'with %s interrupts' % mode)
                    if mode != mode0:
                        degraded.setdefault(mode, []).append(n)
                if not reached:
                    break
            else:
                ctx.check(False, 'the suspend cycle still reached its %dth '
                          'fallible call' % MAX_NTH)
        finally:
            v.sh('echo none > /sys/power/pm_test')
        log('suspend cycles with calls 1..%d failing: %d writes failed (%s);'
            ' the balloon\'s restore failed with calls %s; it came back '
            'with other interrupts with calls %s' % (
                n, sum(errnos.values()),
                ', '.join('%s x%d' % kv for kv in errnos.items()) or '-',
                failed, ', '.join('%s: %s' % kv for kv in degraded.items())
                or '-'))
        ctx.check(failed or degraded, 'no failure reached the balloon\'s '
                  'restore: it never failed nor changed its interrupts')
        ctx.wait_balloon(v, RAM - 64 * MiB, 120, 'balloon back after the '
                         'cycles')
        ctx.check_views(v, 'after the cycles', want=64 * MiB)
        v.balloon(RAM - 512 * MiB)
        ctx.wait_balloon(v, RAM - 512 * MiB, 300, 'inflate after the cycles')
        ctx.check_views(v, 'inflated after the cycles', want=512 * MiB)
        ctx.check_rss_drop(v, rss0, 512 * 1024, 'inflate to 512 MiB after '
                           'the cycles')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 300, 'deflate after the cycles')
        unload_no_leak(ctx, v, f0, 'the cycles and rmmod')


@test('fail_page_alloc_moving', timeout=1800, debug_only=True)
def t_fail_page_alloc(ctx):
    """Debug kernel: 10 % of the page allocations of kernel workers (the
    balloon's worker among them) fail (fail_page_alloc with task-filter
    and make-it-fail) while the balloon inflates to 256 MiB and on to
    1 GiB, meets a program that needs part of it back (a pressure run),
    takes it again and deflates: it converges to each target, actual,
    current_kb and held_pages agree (QEMU RSS falls by the 1 GiB), the
    program runs without an OOM kill, and after rmmod free memory is
    back to the page and kmemleak reports nothing.  DEFLATE_ON_OOM on,
    so the program's 1.1 GiB fit in MemTotal and the shrinker answers
    its pressure."""
    def move(size, what):
        v.sh(MARK_KWORKERS)
        v.balloon(RAM - size)
        t = ctx.wait_balloon(v, RAM - size, 600, '%s with 10 %% of page '
                             'allocations failing' % what)
        if t is not None:
            log('%s with failing allocations: %.1f s' % (what, t))
        ctx.check_views(v, what, want=size)

    with ctx.boot(balloon_opts='deflate-on-oom=on') as v:
        # Touched before the balloon takes it, so the host sees it go.
        ctx.touch(v, 1100)
        rss0 = v.rss_kib()
        f0 = start(ctx, v, faults=True)
        d = '/sys/kernel/debug/fail_page_alloc'
        # Only kernel workers (the balloon's worker among them) see the
        # failures: a guest shell whose forks fail could not be driven.
        v.sh_ok('echo Y > %s/task-filter; echo 10 > %s/probability; '
                'echo -1 > %s/times' % (d, d, d))
        try:
            move(256 * MiB, 'inflate to 256 MiB')
            move(GiB, 'inflate to 1 GiB')
            ctx.check_rss_drop(v, rss0, GiB // 1024,
                               'inflate with failing allocations')
            # The pressure run: the program needs ~500 MiB of the balloon.
            s0 = ctx.vb_stats(v)
            mib = min(1100, ctx.avail0_kb // 1024 - 512)
            v.sh(MARK_KWORKERS)
            ctx.touch(v, mib)
            s1 = ctx.vb_stats(v)
            back = sum(s1[k] - s0[k] for k in ('pressure_pages',
                                                'floor_deflated_pages'))
            log('vb_touch %d MiB under a 1 GiB balloon with failing '
                'allocations: %d MiB given back' % (mib, back // 256))
            ctx.check(back > 0, 'pressure run: expected the balloon to give '
                      'pages back (pressure_pages, floor_deflated_pages)')
            move(GiB, 'back to 1 GiB after the pressure run')
            move(0, 'deflate')
        finally:
            v.sh('echo 0 > %s/probability' % d)
        unload_no_leak(ctx, v, f0, 'rmmod')


def hold_mib(v, mib):
    """Start vb_touch holding `mib` MiB in the background (it touches them
    and sleeps); return once it has touched them all."""
    v.sh_ok('vb_touch -m %d -s -1 >/tmp/hold.log 2>&1 & echo $! >/tmp/hold.pid'
            % mib)
    deadline = time.monotonic() + 300
    while 'ok 1' not in v.sh_ok('cat /tmp/hold.log'):
        if time.monotonic() > deadline:
            raise TestFail('vb_touch %d MiB: no "ok 1" within 300 s' % mib)
        time.sleep(1)


def release(v):
    v.sh_ok('kill $(cat /tmp/hold.pid); '
            'while kill -0 $(cat /tmp/hold.pid) 2>/dev/null; do sleep 0.1; '
            'done')


def free_stat(v):
    """stat-free-memory of the first statistics the host gets after this
    call (newer than the newest it has now)."""
    g = v.qmp('qom-get', path=v.balloon_qom_path(), property='guest-stats')
    g = v.guest_stats(prev_update=g.get('last-update', 0), timeout=60)
    return g['stats'].get('stat-free-memory', -1)


def settled_free_stat(v, tolerance=8 * MiB, timeout=90):
    """stat-free-memory once the guest has settled.  Free page reporting
    starts 2 s after pages are freed and keeps the pages it reports out of
    the free lists until the host has discarded them (up to 32 blocks of
    2 or 4 MiB a request), so a reading taken while it runs is short by
    what is in flight; QEMU's timestamp has whole seconds, so the first
    new reading can come 2 s after a free, just when reporting starts.
    Reads once, waits past that delay, then reads until two readings in a
    row agree within `tolerance` bytes and QEMU's RSS (which reporting
    lowers) stayed within 4 MiB across them; logs the readings, returns
    the last."""
    readings = [free_stat(v)]
    time.sleep(3)
    deadline = time.monotonic() + timeout
    rss, cur = v.rss_kib(), free_stat(v)
    readings.append(cur)
    while True:
        prev, rss_prev = cur, rss
        cur = free_stat(v)
        rss = v.rss_kib()
        readings.append(cur)
        if (abs(cur - prev) <= tolerance and abs(rss - rss_prev) <= 4096) \
                or time.monotonic() > deadline:
            log('stat-free-memory settling (MiB): %s'
                % ' '.join(str(r // MiB) for r in readings))
            return cur


@test('failslab_stats_reporting', timeout=1800, debug_only=True)
def t_failslab_stats_reporting(ctx):
    """Debug kernel, free-page-reporting=on, statistics every second: for
    30 s, 10 % of the slab allocations of kernel workers (statistics and
    free page reporting run in workers) fail (failslab with task-filter
    and make-it-fail) while the guest touches and frees 512 MiB over and
    over.  Afterwards the host keeps getting fresh statistics that follow
    the guest (free memory falls by >= 400 MiB while it holds 512 MiB),
    reporting still gives freed memory back (QEMU RSS falls by >= 400 MiB
    within 30 s of the guest freeing 512 MiB), and after rmmod kmemleak
    reports nothing and free memory is back to the page."""
    with ctx.boot(balloon_opts='free-page-reporting=on') as v:
        f0 = start(ctx, v, faults=True)
        v.qmp('qom-set', path=v.balloon_qom_path(),
              property='guest-stats-polling-interval', value=1)
        free0 = free_stat(v)
        d = '/sys/kernel/debug/failslab'
        v.sh_ok('echo Y > %s/task-filter; echo 10 > %s/probability; '
                'echo -1 > %s/times' % (d, d, d))
        rounds, t0 = 0, time.monotonic()
        try:
            while time.monotonic() - t0 < 30:
                v.sh(MARK_KWORKERS)
                ctx.touch(v, 512)
                rounds += 1
        finally:
            v.sh('echo 0 > %s/probability' % d)
        log('30 s of failslab (10 %% of kernel workers\' slab allocations) '
            'while touching and freeing 512 MiB %d times' % rounds)

        # Statistics: fresh ones keep coming and follow the guest.
        free1 = settled_free_stat(v)
        hold_mib(v, 512)
        rss_held = v.rss_kib()
        free2 = free_stat(v)
        log('stat-free-memory: %d MiB at the start, %d MiB after the faults,'
            ' %d MiB holding 512 MiB' % (free0 // MiB, free1 // MiB,
                                         free2 // MiB))
        ctx.check(free1 - free2 >= 400 * MiB, 'statistics after failslab: '
                  'expected stat-free-memory to fall by >= 400 MiB while the '
                  'guest holds 512 MiB, got %d -> %d MiB'
                  % (free1 // MiB, free2 // MiB))

        # Reporting: what the guest frees goes back to the host.
        release(v)
        t1, rss = time.monotonic(), rss_held
        while time.monotonic() - t1 < 30:
            rss = v.rss_kib()
            if rss_held - rss >= 400 * 1024:
                break
            time.sleep(1)
        log('QEMU RSS %d MiB holding 512 MiB, %d MiB %.1f s after freeing '
            'it' % (rss_held // 1024, rss // 1024, time.monotonic() - t1))
        ctx.check(rss_held - rss >= 400 * 1024, 'free page reporting after '
                  'failslab: expected QEMU RSS to fall by >= 400 MiB within '
                  '30 s of the guest freeing 512 MiB, got %d -> %d MiB'
                  % (rss_held // 1024, rss // 1024))
        free3 = settled_free_stat(v)
        ctx.check(free3 - free2 >= 400 * MiB, 'statistics after freeing: '
                  'expected stat-free-memory to rise by >= 400 MiB, got '
                  '%d -> %d MiB' % (free2 // MiB, free3 // MiB))
        unload_no_leak(ctx, v, f0, 'failslab and rmmod')
