# SPDX-License-Identifier: GPL-2.0
"""Lifecycle tests: suspend/resume (freeze/restore) with a full balloon."""

import time

from run import test, log, TestSkip, RAM, KiB
from vm import GiB, MiB


def balloon_state(ctx, v):
    """(query-balloon ballooned bytes, current_kb * KiB, held_pages * 4 KiB)."""
    held = ctx.vb_stats(v)['held_pages'] * 4096
    return RAM - v.query_balloon(), ctx.attr(v, 'current_kb') * KiB, held


@test('suspend_resume')
def t_suspend_resume(ctx):
    """A device suspend/resume cycle (pm_test=devices) with 1 GiB ballooned:
    freeze gives every page back and resets the device, restore brings the
    balloon back to the host's target, and actual, current_kb and the
    pages held agree afterwards.  The host keeps the memory it got back
    (QEMU RSS)."""
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')
    with ctx.boot() as v:
        ctx.load(v)
        rc, _ = v.sh('test -w /sys/power/pm_test')
        if rc != 0:
            raise TestSkip('guest kernel has no /sys/power/pm_test')
        total0 = v.meminfo()['MemTotal']
        ctx.require(ctx.touch(v, 1536), 'guest could not touch 1.5 GiB')
        rss0 = v.rss_kib()
        target = 1 * GiB
        ballooned_kb = (RAM - target) // KiB
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate did not complete')
        rss1 = ctx.check_rss_drop(v, rss0, ballooned_kb, 'inflate to 1 GiB')
        total1 = v.meminfo()['MemTotal']

        t0 = time.monotonic()
        rc, out = v.sh('echo devices > /sys/power/pm_test && '
                       'echo mem > /sys/power/state; echo rc=$?; '
                       'echo none > /sys/power/pm_test', 180)
        log('suspend/resume cycle took %.1f s: %s'
            % (time.monotonic() - t0, out.strip()))
        ctx.check('rc=0' in out, 'suspend to mem (pm_test=devices): '
                  'expected rc=0, got %s' % out.strip())
        rc, out = v.sh('dmesg | grep -E "PM: suspend (entry|exit)"')
        ctx.check('suspend exit' in out,
                  'dmesg should show a completed suspend cycle, got: %s'
                  % out.strip())

        # Restore re-inflates to the target the host still asks for.
        ctx.require(ctx.wait_balloon(v, target, 120, 'restore') is not None,
                    'balloon did not come back after resume')
        time.sleep(1)
        q, cur, held = balloon_state(ctx, v)
        log('after resume: query-balloon %d MiB ballooned, current_kb %d MiB,'
            ' held %d MiB' % (q // MiB, cur // MiB, held // MiB))
        ctx.check(q == cur == held == RAM - target,
                  'after resume expected ballooned == current_kb == held == '
                  '%d MiB, got %d / %d / %d MiB'
                  % ((RAM - target) // MiB, q // MiB, cur // MiB,
                     held // MiB))
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
