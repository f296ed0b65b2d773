# SPDX-License-Identifier: GPL-2.0
"""vballoon ABI tests: the sysfs contract (Documentation/ABI/testing/
sysfs-driver-vballoon), guest target and floor against the host, a host
that keeps changing its mind, the debugfs counters and the tracepoints.

Loaded by tests/run.py (tests/cases_*.py)."""

import random
import re
import time

from run import test, log, TestFail, TestSkip, RAM, KiB  # noqa: F401
from vm import GiB, MiB, VMError

# Console lines that mean the kernel got stuck somewhere.
STUCK = re.compile(r'soft lockup|hung_task|blocked for more than|'
                   r'rcu.*stall', re.I)


def need_vballoon(ctx):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon sysfs/debugfs/tracepoint ABI only')


def parse_tap(out):
    """kselftest TAP output -> (number of ok, [(name, [diagnostics])] of the
    failed tests).  Diagnostics are the '#' lines since the test's RUN."""
    oks, fails, diag = 0, [], []
    for line in out.splitlines():
        s = line.strip()
        if s.startswith('#  RUN') or s.startswith('# RUN'):
            diag = []
        elif s.startswith('#'):
            diag.append(s.lstrip('# ').strip())
        elif s.startswith('not ok'):
            fails.append((s, [d for d in diag if d and 'RUN' not in d]))
            diag = []
        elif s.startswith('ok '):
            oks += 1
            diag = []
    return oks, fails


@test('sysfs_abi', timeout=600)
def t_sysfs_abi(ctx):
    """Run the in-guest kselftest vb_sysfs: every attribute reads as a
    number, bad writes fail with the documented errno and change nothing,
    unprivileged writers are refused, good writes read back rounded."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        total0 = v.meminfo()['MemTotal']
        rc, out = v.sh('vb_sysfs', 300)
        oks, fails = parse_tap(out)
        log('vb_sysfs: rc %d, %d ok, %d not ok' % (rc, oks, len(fails)))
        for name, diag in fails:
            ctx.fail('vb_sysfs %s: %s' % (name, ' | '.join(diag[-8:])))
        ctx.check(oks > 0, 'vb_sysfs: expected TAP results, got none: %s'
                  % out.strip()[-400:])
        ctx.check(rc == 0 or fails, 'vb_sysfs: expected rc 0, got %d' % rc)
        # The program restores what it changed; the balloon is still empty.
        ctx.check(ctx.attr(v, 'target_kb') == 0,
                  'target_kb after vb_sysfs: expected 0, got %s'
                  % ctx.attr(v, 'target_kb'))
        try:
            v.wait_balloon(RAM, 30)
        except VMError as e:
            ctx.fail('balloon after vb_sysfs: expected empty, %s' % e)
        time.sleep(1)
        total = v.meminfo()['MemTotal']
        ctx.check(total == total0, 'MemTotal after vb_sysfs: expected %d kB '
                  '(as before), got %d kB' % (total0, total))


@test('guest_target_above_host', timeout=600)
def t_guest_target_above_host(ctx):
    """target_kb above the host's balloon grows the balloon to target_kb
    (accepted writes act at once: query-balloon follows within 30 s on
    TCG); target_kb 0 returns to the host's target."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        host = RAM - 512 * MiB                       # guest 1.5 GiB
        v.balloon(host)
        ctx.require(ctx.wait_balloon(v, host, 120, 'host inflate')
                    is not None, 'host inflate to 1.5 GiB did not complete')
        ctx.check(ctx.attr(v, 'host_target_kb') == 512 * 1024,
                  'host_target_kb: expected %d, got %s'
                  % (512 * 1024, ctx.attr(v, 'host_target_kb')))

        t0 = time.monotonic()
        rc, out = ctx.write_attr(v, 'target_kb', 1024 * 1024)
        ctx.require(rc == 0, 'target_kb <- 1048576: expected accepted, got '
                    'rc %d %s' % (rc, out.strip()))
        took = ctx.wait_balloon(v, GiB, 30, 'target_kb 1 GiB')
        if took is not None:
            log('target_kb 1 GiB above host 512 MiB: query-balloon 1 GiB '
                'after %.2f s' % (time.monotonic() - t0))
        ctx.check(ctx.attr(v, 'current_kb') == 1024 * 1024,
                  'current_kb: expected %d, got %s'
                  % (1024 * 1024, ctx.attr(v, 'current_kb')))
        ctx.check(ctx.attr(v, 'host_target_kb') == 512 * 1024,
                  'host_target_kb must stay the host\'s: expected %d, got %s'
                  % (512 * 1024, ctx.attr(v, 'host_target_kb')))
        time.sleep(2)
        cur = v.query_balloon()
        ctx.check(cur == GiB, 'balloon must stay at target_kb: expected '
                  'query-balloon %d MiB, got %d MiB' % (GiB // MiB,
                                                       cur // MiB))

        t0 = time.monotonic()
        ctx.write_attr(v, 'target_kb', 0)
        took = ctx.wait_balloon(v, host, 30, 'target_kb 0 (back to host)')
        if took is not None:
            log('target_kb 0: back to the host\'s 512 MiB after %.2f s'
                % (time.monotonic() - t0))
        ctx.check(ctx.attr(v, 'current_kb') == 512 * 1024,
                  'current_kb after target_kb 0: expected %d, got %s'
                  % (512 * 1024, ctx.attr(v, 'current_kb')))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


@test('floor_vs_host', timeout=600)
def t_floor_vs_host(ctx):
    """floor_kb 1 GiB and a host asking for all of RAM: the balloon stops
    with MemAvailable at the floor (floor_kb is memory the guest can still
    use), the host view is stable and agrees, the guest works, and using
    memory below the floor gets it back; no OOM and no warning storm."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        total0 = v.meminfo()['MemTotal']
        floor = 1024 * 1024
        rc, out = ctx.write_attr(v, 'floor_kb', floor)
        ctx.require(rc == 0, 'floor_kb <- %d: expected accepted, got rc %d '
                    '%s' % (floor, rc, out.strip()))
        lines0 = len(v.console_text().splitlines())
        v.balloon(MiB)                     # QMP's minimum: balloon it all
        try:
            cur, took = v.wait_balloon_stable(still=5, timeout=180)
        except VMError as e:
            raise TestFail('host target 1 MiB with floor 1 GiB: '
                           'query-balloon never settled: %s' % e)
        held = ctx.attr(v, 'current_kb')
        mi = v.meminfo()
        pcp = sum(int(ln.split()[1]) for ln in
                  v.sh_ok('cat /proc/zoneinfo').splitlines()
                  if ln.strip().startswith('count:')) * 4
        log('floor 1 GiB, host target 1 MiB: settled after %.1f s at '
            'query-balloon %d MiB; current_kb %s (at most %d); MemTotal '
            '%d kB, MemAvailable %d kB (+pcp %d kB)'
            % (took, cur // MiB, held, total0 - floor, mi['MemTotal'],
               mi['MemAvailable'], pcp))
        # The balloon stops with MemAvailable at floor + slack (floor/16).
        ctx.check(held is not None and held <= total0 - floor,
                  'balloon: expected at most guest RAM - floor = %d kB, got '
                  '%s' % (total0 - floor, held))
        ctx.check(mi['MemAvailable'] + pcp >= floor - 2048,
                  'MemAvailable(+pcp): expected >= floor %d kB, got %d kB'
                  % (floor, mi['MemAvailable'] + pcp))
        ctx.check(mi['MemAvailable'] <= floor + floor // 8 + 16384,
                  'MemAvailable: expected the balloon to take what is above '
                  'floor + 1/8, got %d kB for floor %d kB'
                  % (mi['MemAvailable'], floor))
        ctx.check(held is not None and cur == RAM - held * KiB,
                  'query-balloon: expected RAM - balloon = %s, got %d'
                  % (None if held is None else RAM - held * KiB, cur))
        time.sleep(5)
        cur2 = v.query_balloon()
        ctx.check(cur2 == cur, 'query-balloon must stay put: %d MiB, then '
                  '%d MiB 5 s later' % (cur // MiB, cur2 // MiB))
        rc, out = v.sh('echo alive', timeout=60)
        ctx.require(rc == 0 and 'alive' in out, 'guest shell not answering')
        # 512 MiB of the floor's 1 GiB: MemAvailable drops below the floor,
        # so the balloon gives back about that much (no more than 512 MiB
        # plus the band); the program must not notice.
        ctx.touch(v, 512, '-s 3')
        after = ctx.attr(v, 'current_kb')
        log('after using 512 MiB below the floor: balloon %s -> %s kB'
            % (held, after))
        ctx.check(after is not None and held is not None and
                  after >= held - (512 + 192) * 1024,
                  'using 512 MiB below the floor: expected the balloon to give '
                  'back at most ~512 MiB, %s -> %s kB' % (held, after))
        vs = v.vmstat()
        ctx.check(vs.get('oom_kill', 0) == 0, 'oom_kill: expected 0, got %d'
                  % vs.get('oom_kill', 0))
        new = v.console_text().splitlines()[lines0:]
        ctx.check(len(new) <= 10, 'console while held at the floor: '
                  'expected a quiet console (<= 10 lines), got %d: %s'
                  % (len(new), ' | '.join(new[:3])))
        rc, out = v.sh('dmesg | grep -c vballoon')
        n = int(out.strip() or 0) if out.strip().isdigit() else -1
        ctx.check(0 <= n <= 10, 'dmesg: expected a few vballoon lines, got '
                  '%d (warning storm?)' % n)
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


@test('flapping_target', timeout=900)
def t_flapping_target(ctx):
    """The host changes its target every 10 ms for 30 s (256 MiB..2 GiB
    guest), then settles on 1 GiB: the balloon lands exactly there,
    current_kb and the debugfs count agree, nothing locks up, and rmmod
    is quick and gives all memory back."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        total_unloaded = v.meminfo()['MemTotal']
        ctx.load(v)
        rng = random.Random(0x5eed)
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            v.balloon(rng.randrange(256 * MiB, RAM + 1, 4096))
            n += 1
            time.sleep(0.01)
        v.balloon(GiB)
        log('%d host targets in %.1f s' % (n, time.monotonic() - t0))
        took = ctx.wait_balloon(v, GiB, 120, 'settle on 1 GiB')
        if took is not None:
            log('settled on 1 GiB %.2f s after the last target' % took)
        time.sleep(3)
        cur = v.query_balloon()
        ctx.check(cur == GiB, 'after settling: expected query-balloon '
                  'exactly %d, got %d' % (GiB, cur))
        want_kb = (RAM - GiB) // KiB
        held_kb = ctx.attr(v, 'current_kb')
        st = ctx.vb_stats(v)
        log('current_kb %s, debugfs held_pages %s, inflated %s, deflated %s'
            % (held_kb, st.get('held_pages'), st.get('inflated_pages'),
               st.get('deflated_pages')))
        ctx.check(held_kb == want_kb, 'current_kb: expected %d, got %s'
                  % (want_kb, held_kb))
        ctx.check(st.get('held_pages', -1) * 4 == want_kb,
                  'debugfs held_pages*4: expected %d, got %s'
                  % (want_kb, st.get('held_pages')))
        ctx.check(st.get('inflated_pages', 0) - st.get('deflated_pages', 0)
                  == st.get('held_pages', -1),
                  'debugfs: expected inflated - deflated == held, got '
                  '%s - %s != %s' % (st.get('inflated_pages'),
                                     st.get('deflated_pages'),
                                     st.get('held_pages')))
        stuck = [ln for ln in v.console_text().splitlines()
                 if STUCK.search(ln)]
        ctx.check(not stuck, 'expected no soft lockup / hung task, got: %s'
                  % stuck[:2])
        t1 = time.monotonic()
        rc, out = v.unload_driver(60)
        secs = time.monotonic() - t1
        log('rmmod with 1 GiB ballooned after flapping: %.2f s' % secs)
        ctx.require(rc == 0, 'rmmod: expected rc 0, got %d: %s'
                    % (rc, out.strip()[-200:]))
        ctx.check(secs <= 20, 'rmmod: expected done within 20 s, took %.1f s'
                  % secs)
        total = v.meminfo()['MemTotal']
        ctx.check(abs(total - total_unloaded) <= 1024,
                  'MemTotal after rmmod: expected %d kB (as before load), '
                  'got %d kB' % (total_unloaded, total))
        try:
            v.wait_balloon(RAM, 30)
        except VMError as e:
            ctx.fail('host view after rmmod: expected an empty balloon, %s'
                     % e)


@test('debugfs_counters', timeout=600)
def t_debugfs_counters(ctx):
    """After an inflate to 1 GiB and a deflate to 1.5 GiB the debugfs
    counters agree with sysfs and with each other."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        v.balloon(GiB)
        ctx.require(ctx.wait_balloon(v, GiB, 120, 'inflate') is not None,
                    'inflate to 1 GiB did not complete')
        v.balloon(RAM - 512 * MiB)
        ctx.require(ctx.wait_balloon(v, RAM - 512 * MiB, 120, 'deflate')
                    is not None, 'deflate to 1.5 GiB did not complete')
        st = ctx.vb_stats(v)
        cur_kb = ctx.attr(v, 'current_kb')
        log('debugfs: ' + ', '.join('%s=%d' % kv for kv in sorted(st.items())))
        ctx.require(st, 'debugfs stats: expected counters, got nothing')
        for k in ('held_pages', 'inflated_pages', 'deflated_pages',
                  'inflate_requests', 'deflate_requests', 'chunks_inflated',
                  'host_target_pages', 'guest_target_pages', 'floor_pages'):
            ctx.check(k in st, 'debugfs stats: expected a %s line' % k)
        held = st.get('held_pages', -1)
        ctx.check(held * 4 == cur_kb, 'held_pages*4: expected current_kb '
                  '%s, got %d' % (cur_kb, held * 4))
        ctx.check(cur_kb == 512 * 1024, 'current_kb: expected %d, got %s'
                  % (512 * 1024, cur_kb))
        ctx.check(st.get('inflated_pages', 0) - st.get('deflated_pages', 0)
                  == held, 'expected inflated_pages - deflated_pages == '
                  'held_pages, got %s - %s vs %d'
                  % (st.get('inflated_pages'), st.get('deflated_pages'),
                     held))
        ctx.check(st.get('inflated_pages', 0) >= GiB // 4096,
                  'inflated_pages: expected >= %d, got %s'
                  % (GiB // 4096, st.get('inflated_pages')))
        ctx.check(st.get('deflated_pages', 0) >= 512 * MiB // 4096,
                  'deflated_pages: expected >= %d, got %s'
                  % (512 * MiB // 4096, st.get('deflated_pages')))
        for k in ('inflate_requests', 'deflate_requests', 'chunks_inflated'):
            ctx.check(st.get(k, 0) > 0, '%s: expected > 0, got %s'
                      % (k, st.get(k)))
        ctx.check(st.get('host_target_pages', -1) * 4 ==
                  ctx.attr(v, 'host_target_kb'),
                  'host_target_pages*4: expected host_target_kb %s, got %s'
                  % (ctx.attr(v, 'host_target_kb'),
                     st.get('host_target_pages')))
        ctx.check(st.get('floor_pages', -1) * 4 == ctx.attr(v, 'floor_kb'),
                  'floor_pages*4: expected floor_kb %s, got %s'
                  % (ctx.attr(v, 'floor_kb'), st.get('floor_pages')))
        ctx.check(st.get('guest_target_pages', -1) == 0,
                  'guest_target_pages: expected 0, got %s'
                  % st.get('guest_target_pages'))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate to empty')
        st2 = ctx.vb_stats(v)
        ctx.check(st2.get('held_pages', -1) == 0 and
                  st2.get('inflated_pages') == st2.get('deflated_pages'),
                  'empty balloon: expected held 0 and inflated == deflated, '
                  'got %s / %s / %s' % (st2.get('held_pages'),
                                        st2.get('inflated_pages'),
                                        st2.get('deflated_pages')))


@test('tracepoints', timeout=600)
def t_tracepoints(ctx):
    """vballoon:vballoon_inflate and vballoon_deflate show up in the trace
    buffer for an inflate and a deflate, with the balloon size in held=."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        tr = '/sys/kernel/tracing'
        rc, _ = v.sh('test -d %s/events || mount -t tracefs nodev %s'
                     % (tr, tr))
        rc, out = v.sh('ls %s/events/vballoon' % tr)
        ctx.require(rc == 0 and 'vballoon_inflate' in out and
                    'vballoon_deflate' in out and 'vballoon_pressure' in out,
                    'tracefs events/vballoon: expected inflate, deflate and '
                    'pressure events, got rc %d %r' % (rc, out.strip()))
        v.sh_ok('echo 0 > %s/tracing_on; echo > %s/trace; '
                'echo 1 > %s/events/vballoon/enable; echo 1 > %s/tracing_on'
                % (tr, tr, tr, tr))
        target = RAM - 512 * MiB
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate did not complete')
        v.balloon(RAM)
        ctx.require(ctx.wait_balloon(v, RAM, 120, 'deflate') is not None,
                    'deflate did not complete')
        time.sleep(1)
        out = v.sh_ok('echo 0 > %s/tracing_on; cat %s/trace; '
                      'echo 0 > %s/events/vballoon/enable' % (tr, tr, tr))
        inf = [ln for ln in out.splitlines() if 'vballoon_inflate:' in ln]
        dfl = [ln for ln in out.splitlines() if 'vballoon_deflate:' in ln]
        log('%d inflate and %d deflate trace lines; first: %s | %s'
            % (len(inf), len(dfl), inf[:1], dfl[:1]))
        ctx.check(inf, 'trace: expected vballoon_inflate lines, got none')
        ctx.check(dfl, 'trace: expected vballoon_deflate lines, got none')

        def held(lines):
            return [int(m.group(1)) for m in
                    (re.search(r'held=(\d+)', ln) for ln in lines) if m]
        pages = (RAM - target) // 4096
        ctx.check(pages in held(inf), 'inflate trace: expected a line with '
                  'held=%d, got held=%s' % (pages, held(inf)[-5:]))
        ctx.check(held(dfl)[-1:] == [0], 'deflate trace: expected the last '
                  'line with held=0, got %s' % held(dfl)[-3:])
