# SPDX-License-Identifier: GPL-2.0
"""Lifecycle tests: suspend/resume (freeze/restore) with a full balloon
and during inflation; hot-unplug during inflation."""

import contextlib
import time

from run import (test, log, TestSkip, RAM, KiB, exact_free_kb,
                 check_no_leak, leak_baseline)
from vm import GiB, MiB


@contextlib.contextmanager
def pm_test_guest(ctx):
    """A booted guest with vballoon loaded; skip unless the guest kernel
    has /sys/power/pm_test."""
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')
    with ctx.boot() as v:
        ctx.load(v)
        rc, _ = v.sh('test -w /sys/power/pm_test')
        if rc != 0:
            raise TestSkip('guest kernel has no /sys/power/pm_test')
        yield v


def suspend_cycle(v, timeout):
    """One suspend to mem that stops after the devices (pm_test=devices):
    freeze, then restore.  The shell's output: rc=0 on success."""
    _, out = v.sh('echo devices > /sys/power/pm_test && '
                  'echo mem > /sys/power/state; echo rc=$?; '
                  'echo none > /sys/power/pm_test', timeout)
    return out.strip()


@test('suspend_resume')
def t_suspend_resume(ctx):
    """A device suspend/resume cycle (pm_test=devices) with 1 GiB ballooned:
    freeze gives every page back and resets the device, restore brings the
    balloon back to the host's target, and actual, current_kb and the
    pages held agree afterwards.  The host keeps the memory it got back
    (QEMU RSS)."""
    with pm_test_guest(ctx) as v:
        total0 = v.meminfo()['MemTotal']
        ctx.require(ctx.touch_most(v), 'could not touch the guest\'s memory '
                    'before inflating')
        rss0 = v.rss_kib()
        target = 1 * GiB
        ballooned_kb = (RAM - target) // KiB
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate did not complete')
        rss1 = ctx.check_rss_drop(v, rss0, ballooned_kb, 'inflate to 1 GiB')
        total1 = v.meminfo()['MemTotal']

        t0 = time.monotonic()
        out = suspend_cycle(v, 180)
        log('suspend/resume cycle took %.1f s: %s'
            % (time.monotonic() - t0, out))
        ctx.check('rc=0' in out, 'suspend to mem (pm_test=devices): '
                  'expected rc=0, got %s' % out)
        rc, out = v.sh('dmesg | grep -E "PM: suspend (entry|exit)"')
        ctx.check('suspend exit' in out,
                  'dmesg should show a completed suspend cycle, got: %s'
                  % out.strip())

        # Restore re-inflates to the target the host still asks for.
        ctx.require(ctx.wait_balloon(v, target, 120, 'restore') is not None,
                    'balloon did not come back after resume')
        time.sleep(1)
        ctx.check_views(v, 'after resume', want=RAM - target)
        # Freeze handed the pages back to the guest, restore took them
        # again: whichever pages it took, the host must not have grown.
        rss2 = v.rss_kib()
        log('QEMU RSS after inflate %d MiB, after resume %d MiB'
            % (rss1 // 1024, rss2 // 1024))
        ctx.check(rss2 <= rss1 + 0.1 * ballooned_kb,
                  'QEMU RSS after resume: expected <= %d kB (after inflate '
                  '%d kB + 10%% of the balloon), got %d kB'
                  % (rss1 + 0.1 * ballooned_kb, rss1, rss2))
        total2 = v.meminfo()['MemTotal']
        ctx.check(total2 == total1,
                  'MemTotal after resume: expected %d kB (as before '
                  'suspend), got %d kB' % (total1, total2))

        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        time.sleep(0.5)
        total3 = v.meminfo()['MemTotal']
        ctx.check(total3 == total0,
                  'MemTotal after deflate: expected %d kB, got %d kB'
                  % (total0, total3))
        ctx.touch(v, 1200)


def start_inflation(ctx, v, target, at_least=128 * MiB, timeout=120):
    """Ask for a balloon of RAM - target and return once at least
    `at_least` bytes of it are in (query-balloon), the ballooned bytes
    then.  The test fails unless that is still short of the balloon asked
    for: what follows must happen while the balloon is inflating."""
    v.balloon(target)
    deadline = time.monotonic() + timeout
    while True:
        mid = RAM - v.query_balloon()
        if mid >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ctx.require(mid >= at_least, 'inflation to %d MiB: not %d MiB in after '
                '%d s (%d MiB)' % (target // MiB, at_least // MiB, timeout,
                                   mid // MiB))
    ctx.check(mid < RAM - target, 'inflation to %d MiB had finished before '
              'the test could act on it' % (target // MiB))
    return mid


@test('suspend_during_inflate', timeout=900)
def t_suspend_during_inflate(ctx):
    """A device suspend/resume cycle (pm_test=devices) while a 1.25 GiB
    inflation is running (not 1.5: the debug kernel's floor would stop
    it): freeze stops the worker and gives every page back, restore
    inflates to the host's target, and query-balloon,
    current_kb and the pages held agree; QEMU's RSS fell by >= 90 % of
    the balloon.  Deflating afterwards brings MemTotal back and the guest
    touches 1.5 GiB."""
    with pm_test_guest(ctx) as v:
        total0 = v.meminfo()['MemTotal']
        ctx.require(ctx.touch_most(v), 'could not touch the guest\'s memory '
                    'before inflating')
        rss0 = v.rss_kib()
        target = 768 * MiB
        mid = start_inflation(ctx, v, target)
        out = suspend_cycle(v, 300)
        log('suspended at %d MiB into a 1.25 GiB inflation: %s'
            % (mid // MiB, out))
        ctx.check('rc=0' in out, 'suspend to mem (pm_test=devices) during '
                  'inflation: expected rc=0, got %s' % out)
        ctx.require(ctx.wait_balloon(v, target, 300, 'after resume')
                    is not None, 'balloon did not reach its target after '
                    'resume')
        time.sleep(1)
        ctx.check_views(v, 'after resume', want=RAM - target)
        ctx.check_rss_drop(v, rss0, (RAM - target) // KiB,
                           'suspend during inflation, then resume')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 300, 'deflate')
        time.sleep(0.5)
        total1 = v.meminfo()['MemTotal']
        ctx.check(total1 == total0, 'MemTotal after deflate: expected %d '
                  'kB, got %d kB' % (total0, total1))
        ctx.touch_most(v)


@test('device_del_inflating', timeout=900)
def t_device_del_inflating(ctx):
    """Hot-unplug the PCI balloon (QMP device_del, ACPI hotplug) while a
    1.5 GiB inflation is running: the device goes (DEVICE_DELETED), every
    page is back in the guest (MemTotal, free memory to the page after
    rmmod), the driver is unbound and rmmod works; the guest touches
    its memory (1.5 GiB; less on the debug kernel) afterwards."""
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')
    with ctx.boot() as v:
        f0 = leak_baseline(ctx, v)
        ctx.load(v)
        total0 = v.meminfo()['MemTotal']
        mid = start_inflation(ctx, v, 512 * MiB)
        v.qmp('device_del', id='balloon0')
        deadline = time.monotonic() + 120
        gone = False
        while not gone and time.monotonic() < deadline:
            v.qmp('query-status')  # collects pending events
            gone = any(e.get('event') == 'DEVICE_DELETED' and
                       e.get('data', {}).get('device') == 'balloon0'
                       for e in v.qmp_events)
            time.sleep(0.25)
        ctx.require(gone, 'device_del at %d MiB into an inflation: no '
                    'DEVICE_DELETED within 120 s' % (mid // MiB))
        log('device_del at %d MiB into a 1.5 GiB inflation: device gone '
            'after %.1f s' % (mid // MiB, 120 - (deadline - time.monotonic())))
        total1 = v.meminfo()['MemTotal']
        ctx.check(total1 == total0, 'MemTotal after unplug: expected %d kB '
                  '(as before the inflation), got %d kB' % (total0, total1))
        rc, out = v.sh('ls /sys/bus/virtio/drivers/vballoon/ | grep virtio')
        ctx.check(rc != 0, 'device still bound after unplug: %s'
                  % out.strip())
        ctx.unload(v)
        check_no_leak(ctx, f0, exact_free_kb(v), 'unplug during inflation '
                      'and rmmod')
        ctx.touch_most(v)
