# SPDX-License-Identifier: GPL-2.0
"""Memory pressure tests: DEFLATE_ON_OOM on and off, page cache against
inflation, pressure while inflating.

The pressure policy (src/vb_shrink.c, src/vb_policy.c): with DEFLATE_ON_OOM a shrinker gives
balloon pages back only when page cache and free memory are both at or
below pressure_reserve, never to the reclaim of its own inflation; after
pressure the balloon holds off (3 s, doubling when pressure returns after a
re-inflation) and then re-inflates to the host's target by itself.
"""

import os
import re
import subprocess
import threading
import time

from run import (test, log, TestSkip, RAM, KiB, OOM_CONSOLE, start_program,
                 program_result)
from vm import MiB, VMError

PAGE = 4096
TARGET = 768 * MiB            # guest size while ballooned
BALLOONED = RAM - TARGET      # 1280 MiB
PROGRAM_MIB = 1200            # what the pressure program maps and touches
# Counters worth logging after pressure.
POLICY_KEYS = ('held_pages', 'pressure_events', 'pressure_pages',
               'pressure_yields', 'reinflated_pages', 'holdoff_doublings',
               'floor_deflations', 'floor_deflated_pages',
               'pressure_debt_pages', 'holdoff_ms', 'holdoff_remaining_ms')


def need_vballoon(ctx):
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon pressure policy and counters only')


def fmt_stats(d, keys=POLICY_KEYS):
    return ' '.join('%s=%s' % (k, d.get(k, '?')) for k in keys)


def oom_kills(v):
    return v.vmstat().get('oom_kill', 0)


def console_ooms(v):
    return [ln.strip() for ln in v.console_text().splitlines()
            if OOM_CONSOLE.search(ln)]


def driver_warnings(v):
    """dmesg lines at warning level or worse that come from vballoon (the
    harness itself fails on err level and on bad console lines)."""
    rc, out = v.sh('dmesg -r', timeout=30)
    bad = []
    for ln in out.splitlines():
        m = re.match(r'<(\d+)>', ln)
        if m and (int(m.group(1)) & 7) <= 4 and 'vballoon' in ln \
                and 'taints kernel' not in ln \
                and 'module verification failed' not in ln:
            bad.append(ln.strip())
    return bad


def check_no_warnings(ctx, v, what):
    w = driver_warnings(v)
    ctx.check(not w, '%s: expected no vballoon warning in dmesg, got %d: %s'
              % (what, len(w), ' | '.join(w[:2])))


class BalloonPoller(threading.Thread):
    """Samples query-balloon every `interval` s in the background (QMP is
    a separate socket from the guest shell, so the main thread may run a
    long guest command meanwhile)."""

    def __init__(self, v, interval=0.25):
        super().__init__(daemon=True)
        self.v = v
        self.interval = interval
        self.samples = []         # (monotonic time, actual bytes)
        self.error = None
        self._stop_ev = threading.Event()

    def run(self):
        while not self._stop_ev.is_set():
            try:
                self.samples.append((time.monotonic(),
                                     self.v.query_balloon()))
            except (VMError, OSError, ValueError) as e:
                self.error = e
                return
            self._stop_ev.wait(self.interval)

    def stop(self):
        self._stop_ev.set()
        self.join(10)
        return self.samples

    def values(self):
        return [a for _, a in self.samples]


def wait_exact(v, target, timeout, interval=0.25):
    """Poll query-balloon until it is exactly the target; return seconds
    taken or None, and the values seen (deduplicated, in order)."""
    want = v.expected_actual(target)
    t0 = time.monotonic()
    seen = []
    while True:
        cur = v.query_balloon()
        if not seen or seen[-1] != cur:
            seen.append(cur)
        if cur == want:
            return time.monotonic() - t0, seen
        if time.monotonic() - t0 > timeout:
            return None, seen
        time.sleep(interval)


def mibs(values, limit=12):
    s = [str(x // MiB) for x in values]
    if len(s) > limit:
        s = s[:limit // 2] + ['...'] + s[-limit // 2:]
    return ' '.join(s)


def inflate_to_target(ctx, v):
    v.balloon(TARGET)
    took = ctx.wait_balloon(v, TARGET, 120, 'inflate')
    ctx.require(took is not None, 'inflate to %d MiB did not complete'
                % (TARGET // MiB))
    log('inflate to %d MiB: %.2f s' % (TARGET // MiB, took))


# ---------------------------------------------------------------------------

@test('pressure_no_oscillation', timeout=900)
def t_pressure_no_oscillation(ctx):
    """DEFLATE_ON_OOM: a 1200 MiB program in a guest ballooned to 768 MiB
    completes without an OOM kill; within 10 s after it exits the balloon
    is back exactly at the host's target and then stays exactly there for
    10 s (no re-inflate/shrink oscillation)."""
    need_vballoon(ctx)
    with ctx.boot(balloon_opts='deflate-on-oom=on') as v:
        ctx.load(v)
        inflate_to_target(ctx, v)
        s0 = ctx.vb_stats(v)
        oom0 = oom_kills(v)
        poll = BalloonPoller(v)
        poll.start()
        t0 = time.monotonic()
        rc, out = v.sh('vb_touch -m %d' % PROGRAM_MIB, timeout=300)
        t_exit = time.monotonic()
        poll.stop()
        log('vb_touch %d MiB under a %d MiB balloon target: rc %d in %.1f s:'
            ' %s' % (PROGRAM_MIB, TARGET // MiB, rc, t_exit - t0,
                     out.strip()[-200:]))
        ctx.check(rc == 0, 'vb_touch %d MiB with DEFLATE_ON_OOM under a %d '
                  'MiB target: expected rc 0, got %d: %s'
                  % (PROGRAM_MIB, TARGET // MiB, rc, out.strip()[-200:]))

        # Back to the target within 10 s of the exit (the shell answering
        # is the exit as far as the host can tell).
        took, seen = wait_exact(v, TARGET, 60)
        back = None if took is None else time.monotonic() - t_exit
        s1 = ctx.vb_stats(v)
        high = max(poll.values() + seen)
        log('during/after the program: highest query-balloon %d MiB '
            '(balloon gave back up to %d MiB of %d); values after exit: %s '
            'MiB' % (high // MiB, (high - TARGET) // MiB, BALLOONED // MiB,
                     mibs(seen)))
        log('counters: %s' % fmt_stats(s1))
        log('pressure: %d events, %d MiB given back, %d MiB re-inflated'
            % (s1['pressure_events'] - s0['pressure_events'],
               (s1['pressure_pages'] - s0['pressure_pages']) * PAGE // MiB,
               (s1.get('reinflated_pages', 0) -
                s0.get('reinflated_pages', 0)) * PAGE // MiB))
        # The shrinker or the floor gives back, whichever sees the shortage
        # first: on the debug kernel (KASAN's shadow makes MemTotal ~290
        # MiB smaller) the floor's poll often does.  Either way the host
        # must see the balloon shrink.
        gave = sum(s1.get(k, 0) - s0.get(k, 0)
                   for k in ('pressure_pages', 'floor_deflated_pages'))
        ctx.check(gave > 0, 'expected the shrinker or the floor to give '
                  'pages back (the program needs more than the guest has), '
                  'pressure_pages and floor_deflated_pages did not move')
        ctx.check(high > v.expected_actual(TARGET),
                  'expected the host to see the balloon give pages back, '
                  'query-balloon never went above %d MiB' % (TARGET // MiB))
        if back is None:
            ctx.fail('after the program: expected query-balloon back at %d '
                     'MiB within 10 s, still not there after 60 s (values '
                     '%s MiB)' % (TARGET // MiB, mibs(seen)))
        else:
            log('balloon back at the target %.2f s after the program '
                'exited' % back)
            ctx.check(back <= 10.0,
                      'after the program: expected query-balloon back at %d '
                      'MiB within 10 s, took %.2f s (holdoff_ms %s, '
                      'doublings %s)' % (TARGET // MiB, back,
                                         s1.get('holdoff_ms'),
                                         s1.get('holdoff_doublings')))

            # Then it stays exactly there.
            want = v.expected_actual(TARGET)
            moved = []
            end = time.monotonic() + 10
            n = 0
            while time.monotonic() < end:
                cur = v.query_balloon()
                n += 1
                if cur != want:
                    moved.append((round(time.monotonic() - (end - 10), 2),
                                  cur // MiB))
                time.sleep(0.25)
            log('stable window: %d samples, %d off target' % (n, len(moved)))
            ctx.check(not moved, 'expected query-balloon to stay exactly at '
                      '%d MiB for 10 s, it moved: %s (s, MiB)'
                      % (TARGET // MiB, moved[:5]))
            s2 = ctx.vb_stats(v)
            ctx.check(s2['pressure_events'] == s1['pressure_events'],
                      'expected no pressure once idle at the target, '
                      'pressure_events went %d -> %d'
                      % (s1['pressure_events'], s2['pressure_events']))

        oom1 = oom_kills(v)
        ctx.check(oom1 == oom0, 'expected no OOM kill, /proc/vmstat oom_kill '
                  'went %d -> %d' % (oom0, oom1))
        ooms = console_ooms(v)
        ctx.check(not ooms, 'expected no OOM lines on the console, got: %s'
                  % ooms[:2])
        check_no_warnings(ctx, v, 'pressure_no_oscillation')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


@test('pressure_doom_off', timeout=900, oom_ok=True)
def t_pressure_doom_off(ctx):
    """Without DEFLATE_ON_OOM the balloon never shrinks under pressure: a
    1200 MiB program in a guest ballooned to 768 MiB fails (ENOMEM) or is
    OOM-killed, query-balloon stays at 768 MiB throughout, the driver gives
    nothing back and prints no warning."""
    need_vballoon(ctx)
    with ctx.boot() as v:
        ctx.load(v)
        inflate_to_target(ctx, v)
        s0 = ctx.vb_stats(v)
        oom0 = oom_kills(v)
        poll = BalloonPoller(v)
        poll.start()
        t0 = time.monotonic()
        try:
            rc, out = v.sh('vb_touch -m %d' % PROGRAM_MIB, timeout=300)
        finally:
            samples = poll.stop()
        took = time.monotonic() - t0
        # Some time after the program, too: nothing comes back late.
        time.sleep(3)
        after = v.query_balloon()
        oom1 = oom_kills(v)
        log('vb_touch %d MiB without DEFLATE_ON_OOM: rc %d in %.1f s: %s'
            % (PROGRAM_MIB, rc, took, out.strip()[-200:]))
        log('OOM kills %d -> %d; %d query-balloon samples: %s MiB; 3 s '
            'later %d MiB' % (oom0, oom1, len(samples),
                              mibs(sorted(set(poll.values()))),
                              after // MiB))
        ctx.check(poll.error is None, 'query-balloon poller failed: %s'
                  % poll.error)
        ctx.check(len(samples) >= 1, 'no query-balloon samples taken')
        want = v.expected_actual(TARGET)
        off = [(round(t - t0, 2), a // MiB) for t, a in samples if a != want]
        ctx.check(not off and after == want,
                  'without DEFLATE_ON_OOM expected query-balloon to stay at '
                  '%d MiB, got %s (s, MiB) during and %d MiB after'
                  % (TARGET // MiB, off[:5], after // MiB))
        failed_cleanly = rc == 1 and 'not ok' in out and 'mmap' in out
        killed = rc != 0 and oom1 > oom0
        ctx.check(failed_cleanly or killed,
                  'without DEFLATE_ON_OOM expected vb_touch %d MiB to fail '
                  'with ENOMEM (rc 1) or be OOM-killed, got rc %d, oom_kill '
                  '%d -> %d: %s' % (PROGRAM_MIB, rc, oom0, oom1,
                                    out.strip()[-200:]))
        s1 = ctx.vb_stats(v)
        log('counters: %s' % fmt_stats(s1))
        ctx.check(s1['held_pages'] == BALLOONED // PAGE,
                  'expected held_pages %d (%d MiB), got %d'
                  % (BALLOONED // PAGE, BALLOONED // MiB, s1['held_pages']))
        for k in ('pressure_events', 'pressure_pages'):
            ctx.check(s1[k] == s0[k] == 0,
                      'without DEFLATE_ON_OOM expected %s 0, got %d -> %d'
                      % (k, s0[k], s1[k]))
        cur = ctx.attr(v, 'current_kb')
        ctx.check(cur == BALLOONED // KiB, 'expected current_kb %d, got %s'
                  % (BALLOONED // KiB, cur))
        check_no_warnings(ctx, v, 'pressure_doom_off')
        rc, out = v.sh('echo alive', 60)
        ctx.require(rc == 0 and 'alive' in out, 'guest shell dead after the '
                    'program')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        ctx.touch(v, PROGRAM_MIB)


# ---------------------------------------------------------------------------

IMG_FILE_MIB = 1200


def pagecache_image(ctx):
    """An ext4 image holding /big (1200 MiB of non-zero data), built once
    per run in the runner's temporary directory (removed with it)."""
    img = os.path.join(ctx.runner.tmp, 'pressure-pagecache.ext4')
    if os.path.exists(img):
        return img
    src = os.path.join(ctx.runner.tmp, 'pressure-pagecache.d')
    os.makedirs(src, exist_ok=True)
    t0 = time.monotonic()
    block = (bytes(range(1, 256)) * 4112)[:MiB]   # no zero byte
    try:
        with open(os.path.join(src, 'big'), 'wb') as f:
            for _ in range(IMG_FILE_MIB):
                f.write(block)
        p = subprocess.run(['mke2fs', '-q', '-F', '-t', 'ext4', '-d', src,
                            img + '.tmp', '%dM' % (IMG_FILE_MIB + 200)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        ctx.require(p.returncode == 0, 'mke2fs -d failed (rc %d): %s'
                    % (p.returncode, p.stdout.strip()[-300:]))
        os.rename(img + '.tmp', img)
    finally:
        subprocess.run(['rm', '-rf', src, img + '.tmp'])
    log('built %d MiB ext4 image with a %d MiB file in %.1f s'
        % (os.path.getsize(img) // MiB, IMG_FILE_MIB,
           time.monotonic() - t0))
    return img


@test('pressure_pagecache', timeout=900)
def t_pressure_pagecache(ctx):
    """DEFLATE_ON_OOM with ~1.2 GiB of page cache (a file read from an ext4
    virtio-blk disk): inflating to 768 MiB reclaims page cache instead of
    shrinking the balloon; the target is reached exactly and at most 1 % of
    the ballooned amount is given back by pressure during the inflation."""
    need_vballoon(ctx)
    img = pagecache_image(ctx)
    drive = ('-drive', 'file=%s,if=virtio,format=raw,readonly=on' % img)
    with ctx.boot(balloon_opts='deflate-on-oom=on',
                  extra_modules=('virtio_blk', 'ext4'),
                  extra_qemu_args=drive) as v:
        ctx.load(v)
        rc, out = v.sh('mount -t ext4 -o ro /dev/vda /mnt', 60)
        ctx.require(rc == 0, 'mount -t ext4 -o ro /dev/vda: expected rc 0, '
                    'got %d: %s' % (rc, out.strip()[-300:]))
        t0 = time.monotonic()
        rc, out = v.sh('cat /mnt/big > /dev/null', 600)
        ctx.require(rc == 0, 'reading /mnt/big: rc %d: %s'
                    % (rc, out.strip()[-300:]))
        mi = v.meminfo()
        file_kb = mi.get('Active(file)', 0) + mi.get('Inactive(file)', 0)
        log('read %d MiB file in %.1f s: Cached %d MiB, file LRU %d MiB, '
            'MemFree %d MiB' % (IMG_FILE_MIB, time.monotonic() - t0,
                                mi['Cached'] // 1024, file_kb // 1024,
                                mi['MemFree'] // 1024))
        ctx.require(file_kb >= 1000 * 1024,
                    'expected >= 1000 MiB of file pages after reading the '
                    'file, got %d MiB (Cached %d MiB)'
                    % (file_kb // 1024, mi['Cached'] // 1024))
        reserve = ctx.attr(v, 'pressure_reserve_kb')
        s0 = ctx.vb_stats(v)
        oom0 = oom_kills(v)

        v.balloon(TARGET)
        took, seen = wait_exact(v, TARGET, 120)
        s1 = ctx.vb_stats(v)
        mi1 = v.meminfo()
        given = s1['pressure_pages'] - s0['pressure_pages']
        limit = BALLOONED // PAGE // 100
        log('inflate to %d MiB against page cache: %s; query-balloon '
            'values %s MiB' % (TARGET // MiB, 'took %.2f s' % took
                               if took is not None else 'NOT reached',
                               mibs(seen)))
        log('after: file LRU %d MiB, MemFree %d MiB, pressure_reserve_kb %s'
            % ((mi1.get('Active(file)', 0) + mi1.get('Inactive(file)', 0))
               // 1024, mi1['MemFree'] // 1024, reserve))
        log('counters: %s' % fmt_stats(s1))
        log('during the inflation: pressure_events +%d, pressure_pages +%d '
            '(limit %d), pressure_yields +%d'
            % (s1['pressure_events'] - s0['pressure_events'], given, limit,
               s1.get('pressure_yields', 0) - s0.get('pressure_yields', 0)))
        ctx.check(took is not None,
                  'inflate to %d MiB against page cache: expected '
                  'query-balloon exactly %d within 120 s, got %s MiB'
                  % (TARGET // MiB, v.expected_actual(TARGET), mibs(seen)))
        ctx.check(given <= limit,
                  'inflating %d MiB against page cache: expected pressure '
                  'to give back <= %d pages (1 %%), got %d pages (%d MiB)'
                  % (BALLOONED // MiB, limit, given, given * PAGE // MiB))
        ctx.check(s1['held_pages'] == BALLOONED // PAGE,
                  'expected held_pages %d, got %d'
                  % (BALLOONED // PAGE, s1['held_pages']))
        # And it stays there (no busy loop against page cache).
        time.sleep(3)
        s2 = ctx.vb_stats(v)
        ctx.check(v.query_balloon() == v.expected_actual(TARGET) and
                  s2['pressure_pages'] == s1['pressure_pages'],
                  'expected the balloon to stay at the target with no more '
                  'pressure deflation, got query-balloon %d MiB, '
                  'pressure_pages %d -> %d' % (v.query_balloon() // MiB,
                                               s1['pressure_pages'],
                                               s2['pressure_pages']))
        ctx.check(oom_kills(v) == oom0, 'expected no OOM kill')
        check_no_warnings(ctx, v, 'pressure_pagecache')
        v.sh('umount /mnt', 60)
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


# ---------------------------------------------------------------------------

@test('pressure_during_inflate', timeout=1500)
def t_pressure_during_inflate(ctx):
    """DEFLATE_ON_OOM: a 1200 MiB program started while the balloon is
    still inflating to 768 MiB, then 5 more pressure cycles: no OOM kill,
    no warning, the target is reached again after every cycle, and
    query-balloon, current_kb and held_pages agree exactly once settled;
    finally the balloon deflates and MemTotal is back."""
    need_vballoon(ctx)
    with ctx.boot(balloon_opts='deflate-on-oom=on') as v:
        ctx.load(v)
        # A 1 s base hold-off (3 s default) keeps six doubling cycles
        # within a few minutes; the doubling itself is still exercised.
        rc, out = ctx.write_attr(v, 'holdoff_ms', 1000)
        ctx.require(rc == 0, 'write holdoff_ms: %s' % out.strip())
        mi0 = v.meminfo()
        oom0 = oom_kills(v)
        s_prev = ctx.vb_stats(v)
        bad_runs, ooms = [], []
        for cycle in range(6):
            tag = 'p%d' % cycle
            t0 = time.monotonic()
            if cycle == 0:
                v.balloon(TARGET)
            start_program(v, tag, PROGRAM_MIB)
            q0 = v.query_balloon()
            log('cycle %d: program started, query-balloon %d MiB%s'
                % (cycle, q0 // MiB, ' (inflation under way)'
                   if cycle == 0 else ''))
            if cycle == 0 and q0 == v.expected_actual(TARGET):
                log('cycle 0: inflation already complete when the program '
                    'started: the overlap was not exercised')
            res = None
            samples = 0
            while res is None:
                ctx.require(time.monotonic() - t0 < 400,
                            'cycle %d: vb_touch still running after 400 s'
                            % cycle)
                (q, cur, held), s = ctx.views(v)
                samples += 1
                if samples <= 4 or samples % 5 == 0:
                    log('cycle %d +%.1f s (moving): ballooned query %d KiB,'
                        ' current_kb %s, held %d KiB; debt %s, holdoff %s '
                        'ms' % (cycle, time.monotonic() - t0, q // KiB,
                                None if cur is None else cur // KiB,
                                held // KiB, s.get('pressure_debt_pages'),
                                s.get('holdoff_remaining_ms')))
                res = program_result(v, tag)
                if res is None:
                    time.sleep(0.5)
            rc, out = res
            t_run = time.monotonic() - t0
            log('cycle %d: vb_touch rc %d after ~%.1f s: %s'
                % (cycle, rc, t_run, out.strip()[-120:]))
            if rc != 0:
                bad_runs.append('cycle %d rc %d (%s, balloon %d MiB when it '
                                'ended)' % (cycle, rc, out.strip()[-40:],
                                            v.query_balloon() // MiB))

            t1 = time.monotonic()
            took, seen = wait_exact(v, TARGET, 150)
            if took is None:
                s = ctx.vb_stats(v)
                ctx.fail('cycle %d: expected query-balloon back at %d MiB '
                         'within 150 s, values %s MiB; %s'
                         % (cycle, TARGET // MiB, mibs(seen), fmt_stats(s)))
                break
            log('cycle %d: back at the target %.1f s after the program '
                'ended (values %s MiB)' % (cycle, time.monotonic() - t1,
                                           mibs(seen)))
            time.sleep(1)     # let the last request settle
            (q, cur, held), s = ctx.views(v)
            log('cycle %d settled: ballooned query %d, current_kb*1024 %s, '
                'held_pages*4096 %d' % (cycle, q, cur, held))
            ctx.check(q == cur == held == BALLOONED,
                      'cycle %d settled: expected RAM - actual == current_kb'
                      '*1024 == held_pages*4096 == %d, got %d / %s / %d'
                      % (cycle, BALLOONED, q, cur, held))
            d = {k: s.get(k, 0) - s_prev.get(k, 0)
                 for k in ('pressure_events', 'pressure_pages',
                           'pressure_yields', 'reinflated_pages',
                           'holdoff_doublings')}
            log('cycle %d: %s; holdoff_ms %s'
                % (cycle, ' '.join('%s=+%d' % kv for kv in d.items()),
                   s.get('holdoff_ms')))
            s_prev = s
            ooms.append(oom_kills(v))
            log('cycle %d: oom_kill %d' % (cycle, ooms[-1]))

        ctx.check(not bad_runs, 'vb_touch %d MiB with DEFLATE_ON_OOM (target '
                  '%d MiB): expected rc 0 in every cycle, failed in %d of %d:'
                  ' %s' % (PROGRAM_MIB, TARGET // MiB, len(bad_runs),
                           len(ooms), '; '.join(bad_runs[:3])))
        ctx.check(all(n == oom0 for n in ooms),
                  'expected no OOM kill with DEFLATE_ON_OOM, /proc/vmstat '
                  'oom_kill after each cycle: %d -> %s' % (oom0, ooms))
        log('final counters: %s' % fmt_stats(ctx.vb_stats(v)))
        lines = console_ooms(v)
        ctx.check(not lines, 'expected no OOM lines on the console, got: %s'
                  % lines[:2])
        check_no_warnings(ctx, v, 'pressure_during_inflate')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        mi1 = v.meminfo()
        log('MemTotal before %d kB, after deflate %d kB'
            % (mi0['MemTotal'], mi1['MemTotal']))
        ctx.check(abs(mi1['MemTotal'] - mi0['MemTotal']) <=
                  0.01 * mi0['MemTotal'],
                  'MemTotal after deflating to 2 GiB: expected %d kB, got %d '
                  'kB' % (mi0['MemTotal'], mi1['MemTotal']))
        (q, cur, held), _ = ctx.views(v)
        ctx.check(q == cur == held == 0,
                  'after deflate: expected an empty balloon in all views, '
                  'got %d / %s / %d' % (q, cur, held))
