# SPDX-License-Identifier: GPL-2.0
"""The floor is memory the guest can still use (issue 17).

A host that asks for a 16 MiB guest gets a balloon that stops where the
guest's usable memory (MemAvailable plus the per-CPU free lists) is at
floor_kb; the guest stays responsive, forks, and runs a program as large
as the floor without an OOM kill.  Raising floor_kb gives memory back at
once; lowering it lets the balloon follow the host again.  Every balloon
size is checked in the guest (current_kb, debugfs) and on the host
(query-balloon, QEMU RSS).

Loaded by tests/run.py (tests/cases_*.py)."""

import time

from run import test, log, TestSkip, KiB
from vm import MiB, VMError

HOST_TARGET = 16 * MiB        # what the host asks the guest to shrink to
SLEEPERS = 150
WATCH_S = 60                  # how long the guest must keep answering
ANSWER_S = 2.0                # ... within this many seconds each time


def need_vballoon(ctx):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon floor_kb only')


def usable_kb(v):
    """(MemAvailable + pages on the per-CPU free lists, MemAvailable), kB:
    what the driver counts as memory the guest can still use."""
    avail = v.meminfo()['MemAvailable']
    out = v.sh_ok('cat /proc/zoneinfo')
    pcp = sum(int(ln.split()[1]) for ln in out.splitlines()
              if ln.strip().startswith('count:'))
    return avail + pcp * 4, avail


def buddy_keep(v):
    """Free memory in blocks of order >= 3, in kB (/proc/buddyinfo)."""
    total = 0
    for ln in v.sh_ok('cat /proc/buddyinfo').splitlines():
        counts = [int(x) for x in ln.split()[4:]]
        total += sum(n << o for o, n in enumerate(counts) if o >= 3)
    return total * 4


def settle(ctx, v, what, timeout=180):
    try:
        cur, took = v.wait_balloon_stable(still=5, timeout=timeout)
    except VMError as e:
        ctx.require(False, '%s: query-balloon never settled: %s' % (what, e))
    log('%s: settled after %.1f s at query-balloon %d MiB'
        % (what, took, cur // MiB))
    return cur


def fault_in(v):
    """Touch nearly all free guest memory once, so that QEMU's RSS covers
    guest RAM before the balloon takes it."""
    avail = v.meminfo()['MemAvailable'] // 1024
    rc, out = v.sh('vb_touch -m %d' % max(avail - 48, 16), 300)
    return rc == 0


def floor_at_host_16m(ctx, **boot):
    need_vballoon(ctx)
    with ctx.boot(**boot) as v:
        ctx.load(v)
        ram_kb = v.mem_bytes // KiB
        floor = ctx.attr(v, 'floor_kb')
        ctx.require(floor, 'floor_kb: expected a default, got %s' % floor)
        mi0 = v.meminfo()
        log('%d MiB guest, %d vCPU: default floor_kb %d (%d MiB); MemTotal '
            '%d kB, MemAvailable %d kB before ballooning'
            % (ram_kb // 1024, v.smp, floor, floor // 1024, mi0['MemTotal'],
               mi0['MemAvailable']))
        fault_in(v)
        rss0 = v.rss_kib()
        v.balloon(HOST_TARGET)
        cur = settle(ctx, v, 'host target 16 MiB')
        ballooned = ctx.check_views(v, 'at the floor', tries=20) // KiB
        rss1 = v.rss_kib()
        use, avail = usable_kb(v)
        keep = buddy_keep(v)
        log('at the floor: balloon %d MiB, query-balloon %d MiB, '
            'MemAvailable %d kB, usable (+pcp) %d kB, floor_kb %d, free in '
            'order>=3 blocks %d kB; QEMU RSS %d -> %d MiB'
            % (ballooned // 1024, cur // MiB, avail, use, floor, keep,
               rss0 // 1024, rss1 // 1024))
        ctx.check(cur > HOST_TARGET, 'the floor must stop the balloon above '
                  'the host target: query-balloon %d MiB' % (cur // MiB))
        # The balloon stops with MemAvailable at floor + slack (slack =
        # floor/16, >= 4 MiB); the per-CPU lists move MemAvailable by up
        # to ~30 MiB after that (the usable figure includes them).
        ctx.check(use >= floor - 2048, 'at the floor: expected usable memory '
                  '(MemAvailable + pcp) >= floor_kb %d kB, got %d kB'
                  % (floor, use))
        ctx.check(avail >= floor - 8192, 'at the floor: expected MemAvailable '
                  '>= floor_kb %d kB (less 8 MiB of per-CPU list movement), '
                  'got %d kB' % (floor, avail))
        ctx.check(avail <= floor + max(floor // 8, 8192) + 32768,
                  'at the floor: expected the balloon to take what is above '
                  'the floor (MemAvailable <= floor + band), got %d kB for '
                  'floor_kb %d' % (avail, floor))
        ctx.check(rss0 - rss1 >= 0.85 * ballooned,
                  'QEMU RSS: expected a drop of >= 85%% of the %d MiB '
                  'ballooned, got %d -> %d MiB' % (ballooned // 1024,
                                                   rss0 // 1024,
                                                   rss1 // 1024))
        rc, out = v.sh('dmesg | grep -c "stopping at"')
        n = int(out.strip()) if out.strip().isdigit() else -1
        ctx.check(n == 1, 'expected exactly one notice that the floor stops '
                  'the balloon, got %d' % n)
        rc, out = v.sh('dmesg | grep "stopping at" | tail -1')
        log('notice: %s' % out.strip())
        ctx.check(str(floor) in out, 'the notice should name floor_kb %d: %r'
                  % (floor, out.strip()))

        oom0 = v.vmstat().get('oom_kill', 0)
        s0 = ctx.vb_stats(v)
        # Forked sleepers, then a program as large as the floor less 16 MiB
        # (at least half the floor: the debug kernel's 512 MiB guest has a
        # 16 MiB floor) that holds its memory for a while; the shell must
        # keep answering.
        t0 = time.monotonic()
        v.sh_ok('i=0; while [ $i -lt %d ]; do sleep 100000 & i=$((i+1)); '
                'done' % SLEEPERS, 120)
        rc, out = v.sh("ps | grep -c '[s]leep 100000'")
        nsleep = int(out.strip()) if out.strip().isdigit() else -1
        log('%s sleepers running after %.1f s' % (nsleep,
                                                  time.monotonic() - t0))
        ctx.check(nsleep == SLEEPERS, 'expected %d sleepers, got %d'
                  % (SLEEPERS, nsleep))
        prog = max(floor // 1024 - 16, floor // 2048)
        v.sh_ok("rm -f /tmp/f.rc; sh -c 'vb_touch -m %d -s 20 > /tmp/f.out "
                "2>&1; echo $? > /tmp/f.rc' < /dev/null > /dev/null 2>&1 &"
                % prog)
        slow, worst, checks, res = [], 0.0, 0, None
        while time.monotonic() - t0 < WATCH_S or res is None:
            ctx.require(time.monotonic() - t0 < 240, 'vb_touch %d MiB still '
                        'running after 240 s' % prog)
            t1 = time.monotonic()
            rc, out = v.sh('cat /tmp/f.rc 2>/dev/null; echo alive', 60)
            dt = time.monotonic() - t1
            checks += 1
            worst = max(worst, dt)
            if dt > ANSWER_S:
                slow.append(round(dt, 1))
            lines = out.split()
            if res is None and lines and lines[0].isdigit():
                res = int(lines[0])
            time.sleep(max(0.0, 1.0 - dt))
        out = v.sh('cat /tmp/f.out')[1]
        q_during = ctx.check_views(v, 'after the program',
                                   tries=20) // KiB
        s1 = ctx.vb_stats(v)
        oom1 = v.vmstat().get('oom_kill', 0)
        log('vb_touch %d MiB with %d sleepers: rc %s: %s' % (
            prog, nsleep, res, out.strip()[-100:]))
        log('%d checks in %.0f s, slowest answer %.2f s; OOM kills %d -> %d; '
            'floor_deflations +%d (%d MiB), floor_stops %d; balloon %d MiB'
            % (checks, time.monotonic() - t0, worst, oom0, oom1,
               s1.get('floor_deflations', 0) - s0.get('floor_deflations', 0),
               (s1.get('floor_deflated_pages', 0) -
                s0.get('floor_deflated_pages', 0)) * 4 // 1024,
               s1.get('floor_stops', 0), q_during // 1024))
        ctx.check(res == 0, 'vb_touch %d MiB (floor_kb - 16 MiB, at least '
                  'half the floor) with %d sleepers at the floor: expected '
                  'rc 0, got %s: %s'
                  % (prog, SLEEPERS, res, out.strip()[-200:]))
        ctx.check(not slow, 'the guest must answer within %.0f s at every '
                  'check: %d of %d were slower: %s s' % (
                      ANSWER_S, len(slow), checks, slow[:5]))
        ctx.check(oom1 == oom0, 'expected 0 OOM kills, oom_kill went %d -> '
                  '%d' % (oom0, oom1))
        v.sh('kill $(pidof sleep) 2>/dev/null; true', 60)
        v.balloon(v.mem_bytes)
        ctx.wait_balloon(v, v.mem_bytes, 120, 'deflate')
        ctx.check_views(v, 'deflated', tries=20)


@test('floor_host16m_2g', timeout=420, serial=True)
def t_floor_host16m_2g(ctx):
    """2 GiB guest, default floor, host target 16 MiB: the balloon stops
    with usable memory at floor_kb (host and guest views agree, QEMU RSS
    drops), one notice; 150 sleepers and a floor_kb - 16 MiB program run
    with no OOM kill while the guest answers within 2 s for 60 s."""
    floor_at_host_16m(ctx)


@test('floor_host16m_512m_1cpu', timeout=420, serial=True)
def t_floor_host16m_512m(ctx):
    """The same on a 512 MiB guest with one vCPU."""
    floor_at_host_16m(ctx, mem='512M', smp=1)


@test('floor_host16m_doom', timeout=420, serial=True)
def t_floor_host16m_doom(ctx):
    """The same with deflate-on-oom=on (the shrinker and pressure_reserve
    in play)."""
    floor_at_host_16m(ctx, balloon_opts='deflate-on-oom=on')


@test('floor_raise_lower', timeout=420, serial=True)
def t_floor_raise_lower(ctx):
    """At the floor with the host asking for 16 MiB: raising floor_kb by
    256 MiB gives memory back at once (usable memory >= the new floor);
    lowering it again lets the balloon follow the host back down."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        floor0 = ctx.attr(v, 'floor_kb')
        v.balloon(HOST_TARGET)
        settle(ctx, v, 'host target 16 MiB')
        b0 = ctx.check_views(v, 'at the default floor',
                             tries=20) // KiB
        use0, _ = usable_kb(v)

        floor1 = floor0 + 256 * 1024
        # What usable memory lacks of the new floor: the balloon gives
        # back that much and the slack on top.  Usable memory at the old
        # floor is floor + slack plus what the per-CPU lists hold (up to
        # ~40 MiB), so this is less than 256 MiB.
        need = max(0, floor1 - use0)
        t0 = time.monotonic()
        rc, out = ctx.write_attr(v, 'floor_kb', floor1)
        ctx.require(rc == 0, 'floor_kb <- %d: rc %d %s' % (floor1, rc, out))
        back = None
        while time.monotonic() - t0 < 10:
            if v.query_balloon() >= (v.mem_bytes - (b0 - need) * KiB):
                back = time.monotonic() - t0
                break
            time.sleep(0.1)
        cur = settle(ctx, v, 'floor raised by 256 MiB', 60)
        b1 = ctx.check_views(v, 'raised floor', tries=20) // KiB
        use1, avail1 = usable_kb(v)
        log('floor_kb %d -> %d: balloon %d -> %d MiB (query-balloon %d '
            'MiB), usable %d -> %d kB, MemAvailable %d kB; %s'
            % (floor0, floor1, b0 // 1024, b1 // 1024, cur // MiB, use0,
               use1, avail1, 'gave back the %d MiB needed within %.2f s'
               % (need // 1024, back) if back is not None else
               'NOT %d MiB back within 10 s' % (need // 1024)))
        ctx.check(back is not None and back <= 3.0,
                  'raising floor_kb by 256 MiB: expected the balloon to give '
                  'the %d kB usable memory lacked back within 3 s, got %s'
                  % (need, '%.2f s' % back if back is not None
                     else 'not in 10 s'))
        ctx.check(use1 >= floor1 - 2048, 'raised floor: expected usable >= '
                  'floor_kb %d kB, got %d kB' % (floor1, use1))

        t0 = time.monotonic()
        ctx.write_attr(v, 'floor_kb', floor0)
        cur = settle(ctx, v, 'floor lowered again', 120)
        b2 = ctx.check_views(v, 'lowered floor', tries=20) // KiB
        use2, _ = usable_kb(v)
        log('floor_kb back to %d: balloon %d MiB after %.1f s, usable %d kB'
            % (floor0, b2 // 1024, time.monotonic() - t0, use2))
        ctx.check(b2 >= b1 + 200 * 1024, 'lowering floor_kb: expected the '
                  'balloon to follow the host again (>= %d MiB), got %d MiB'
                  % ((b1 + 200 * 1024) // 1024, b2 // 1024))
        ctx.check(floor0 - 2048 <= use2 <= floor0 + 64 * 1024,
                  'lowered floor: expected usable near floor_kb %d kB, got '
                  '%d kB' % (floor0, use2))
        rc, out = v.sh('dmesg | grep -c "stopping at"')
        log('notices: %s' % out.strip())
        v.balloon(v.mem_bytes)
        ctx.wait_balloon(v, v.mem_bytes, 120, 'deflate')
        ctx.check_views(v, 'deflated', tries=20)

