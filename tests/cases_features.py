# SPDX-License-Identifier: GPL-2.0
"""vballoon feature tests: statistics against /proc/meminfo, free page
reporting giving memory back to the host, page poison with init_on_free=1
and page_poison=1.

Loaded by tests/run.py (tests/cases_*.py)."""

import re
import time

from run import test, log, TestFail, TestSkip, RAM, KiB  # noqa: F401
from vm import GiB, MiB, VMError  # noqa: F401

# Lines that mean the page allocator found a poisoned page overwritten.
POISON_BAD = re.compile(r'pagealloc: memory corruption|'
                        r'poison.*(corrupt|mismatch|overwritten)|'
                        r'(corrupt|mismatch).*poison', re.I)


def bound_line(ctx, v):
    """The driver's "bound: ..." dmesg line (vballoon only), or None."""
    if ctx.driver != 'vballoon':
        return None
    rc, out = v.sh("dmesg | grep 'vballoon.*bound:' | tail -n 1")
    return out.strip() if rc == 0 and out.strip() else None


def feature(line, name):
    """'on'/'off' for one feature in the bound line, or None."""
    m = re.search(r'%s (on|off)' % re.escape(name), line or '')
    return m.group(1) if m else None


def check_feature(ctx, v, name, want):
    line = bound_line(ctx, v)
    if line is None:
        if ctx.driver == 'vballoon':
            ctx.fail('dmesg: expected the vballoon "bound:" line, got none')
        return
    ctx.check(feature(line, name) == want,
              'dmesg bound line: expected "%s %s", got %r'
              % (name, want, line))


def guest_stats(ctx, v, prev_update=0, timeout=30):
    """VM.guest_stats(), failing the test on a timeout."""
    try:
        return v.guest_stats(prev_update, timeout)
    except VMError as e:
        raise TestFail(str(e))


def within(a, b, frac):
    return abs(a - b) <= frac * max(abs(b), 1)


@test('stats_vs_meminfo', timeout=600)
def t_stats_vs_meminfo(ctx):
    """Host statistics (polled every second) match the guest's
    /proc/meminfo: free and total within 5 %, disk caches within 10 %;
    free memory follows a 600 MiB allocation; HMP info balloon shows the
    balloon's actual size."""
    with ctx.boot() as v:
        ctx.load(v)
        check_feature(ctx, v, 'stats', 'on')
        v.qmp('qom-set', path=v.balloon_qom_path(),
              property='guest-stats-polling-interval', value=1)
        g = guest_stats(ctx, v)
        # A report taken after the driver settled, then meminfo at once.
        g = guest_stats(ctx, v, g['last-update'])
        mi = v.meminfo()
        st = g['stats']
        log('guest-stats: ' + ', '.join('%s=%d' % (k[5:], val) for k, val
                                        in sorted(st.items()) if val != -1))
        log('meminfo: MemTotal %d kB, MemFree %d kB, Cached %d kB, '
            'Buffers %d kB' % (mi['MemTotal'], mi['MemFree'], mi['Cached'],
                               mi.get('Buffers', 0)))
        pairs = (('stat-total-memory', 'MemTotal', 0.05),
                 ('stat-free-memory', 'MemFree', 0.05))
        for sk, mk, frac in pairs:
            ctx.check(within(st.get(sk, -1), mi[mk] * KiB, frac),
                      '%s: expected %s %d B within %d %%, got %d'
                      % (sk, mk, mi[mk] * KiB, frac * 100, st.get(sk, -1)))
        caches, cached = st.get('stat-disk-caches', -1), mi['Cached'] * KiB
        if cached < 64 * MiB:
            ctx.check(abs(caches - cached) <= 4 * MiB,
                      'stat-disk-caches: expected Cached %d B within 4 MiB, '
                      'got %d' % (cached, caches))
        else:
            ctx.check(within(caches, cached, 0.10),
                      'stat-disk-caches: expected Cached %d B within 10 %%, '
                      'got %d' % (cached, caches))

        # The guest takes 600 MiB: a later report shows it.
        free0, upd0 = st['stat-free-memory'], g['last-update']
        v.sh_ok('vb_touch -m 600 -s 10 >/tmp/stats_touch.log 2>&1 &')
        deadline = time.monotonic() + 30
        low, upd = free0, upd0
        while time.monotonic() < deadline:
            g2 = guest_stats(ctx, v, upd)
            upd = g2['last-update']
            low = min(low, g2['stats']['stat-free-memory'])
            if free0 - low >= 500 * MiB:
                break
        log('stat-free-memory %d MiB before, lowest %d MiB while 600 MiB '
            'held; last-update %d -> %d' % (free0 // MiB, low // MiB, upd0,
                                          upd))
        ctx.check(free0 - low >= 500 * MiB,
                  'stat-free-memory: expected a drop >= 500 MiB while '
                  'vb_touch holds 600 MiB, got %d MiB' % ((free0 - low) // MiB))
        ctx.check(upd > upd0, 'last-update: expected it to advance past '
                  '%d, got %d' % (upd0, upd))
        # Let vb_touch finish its hold and check its pattern.
        out = ''
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rc, _ = v.sh('pidof vb_touch')
            if rc != 0:
                break
            time.sleep(1)
        out = v.sh_ok('cat /tmp/stats_touch.log')
        ctx.check('not ok' not in out and 'ok 1' in out,
                  'vb_touch 600 MiB: expected ok, got %r' % out.strip())

        # HMP info balloon: the actual size, in MiB.
        for size in (RAM, RAM - 512 * MiB):
            v.balloon(size)
            if ctx.wait_balloon(v, size, 120, 'balloon') is None:
                continue
            txt = v.hmp('info balloon').strip()
            m = re.search(r'actual=(\d+)', txt)
            ctx.check(m is not None and int(m.group(1)) == size // MiB,
                      'HMP info balloon: expected actual=%d, got %r'
                      % (size // MiB, txt))
        # After the inflation the host's total follows MemTotal.
        g3 = guest_stats(ctx, v, upd)
        g3 = guest_stats(ctx, v, g3['last-update'])
        mt = v.meminfo()['MemTotal'] * KiB
        ctx.check(within(g3['stats'].get('stat-total-memory', -1), mt, 0.05),
                  'stat-total-memory with 512 MiB ballooned: expected '
                  'MemTotal %d within 5 %%, got %d'
                  % (mt, g3['stats'].get('stat-total-memory', -1)))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


@test('free_page_reporting', timeout=600, serial=True)
def t_free_page_reporting(ctx):
    """free-page-reporting=on: 1 GiB the guest touched and then freed goes
    back to the host (QEMU RSS drops >= 0.8 GiB within 10 s); the guest
    touches and verifies 1 GiB again afterwards.  Without page_poison or
    init_on_free the driver declines PAGE_POISON."""
    with ctx.boot(balloon_opts='free-page-reporting=on') as v:
        ctx.load(v)
        check_feature(ctx, v, 'reporting', 'on')
        check_feature(ctx, v, 'page-poison', 'off')
        rss0 = v.rss_kib()
        v.sh_ok('vb_touch -m 1024 -s -1 >/tmp/fpr.log 2>&1 & '
                'echo $! >/tmp/fpr.pid')
        deadline = time.monotonic() + 180
        while True:
            out = v.sh_ok('cat /tmp/fpr.log')
            if 'ok 1' in out:
                break
            if time.monotonic() > deadline:
                raise TestFail('vb_touch 1 GiB: expected "ok 1" within '
                               '180 s, got %r' % out.strip())
            time.sleep(1)
        ctx.require('not ok' not in out, 'vb_touch 1 GiB: %s' % out.strip())
        # Give reporting a moment to settle what was free before.
        time.sleep(3)
        rss1 = v.rss_kib()
        log('QEMU RSS %d MiB after boot, %d MiB with 1 GiB touched and held'
            % (rss0 // 1024, rss1 // 1024))
        v.sh_ok('kill $(cat /tmp/fpr.pid); '
                'while kill -0 $(cat /tmp/fpr.pid) 2>/dev/null; do '
                'sleep 0.1; done')
        t0 = time.monotonic()
        want = int(0.8 * GiB // KiB)
        trail = []
        rss = rss1
        while time.monotonic() - t0 <= 10:
            rss = v.rss_kib()
            trail.append('%.1fs:%d' % (time.monotonic() - t0, rss // 1024))
            if rss1 - rss >= want:
                break
            time.sleep(0.5)
        took = time.monotonic() - t0
        log('QEMU RSS after freeing (s:MiB): %s' % ' '.join(trail))
        ctx.check(rss1 - rss >= want,
                  'QEMU RSS: expected a drop >= %d MiB within 10 s of the '
                  'guest freeing 1 GiB, got %d MiB (%d -> %d MiB)'
                  % (want // 1024, (rss1 - rss) // 1024, rss1 // 1024,
                     rss // 1024))
        if rss1 - rss >= want:
            log('RSS dropped by %d MiB in %.1f s' % ((rss1 - rss) // 1024,
                                                     took))
        else:
            # Not a pass: just say how long it takes, for the report.
            t1 = time.monotonic()
            while time.monotonic() - t1 < 60 and rss1 - v.rss_kib() < want:
                time.sleep(1)
            log('RSS drop of %d MiB reached after %.1f s (gave up at 70 s)'
                % ((rss1 - v.rss_kib()) // 1024, time.monotonic() - t0))
        ctx.touch(v, 1024)
        rss2 = v.rss_kib()
        log('QEMU RSS %d MiB after touching 1 GiB again' % (rss2 // 1024))


def page_poison_test(opt):
    def f(ctx):
        with ctx.boot(append='%s=1' % opt,
                      balloon_opts='free-page-reporting=on') as v:
            ctx.load(v)
            check_feature(ctx, v, 'page-poison', 'on')
            v.balloon(GiB)
            ctx.require(ctx.wait_balloon(v, GiB, 120, 'inflate') is not None,
                        'inflate to 1 GiB did not complete')
            v.balloon(RAM)
            ctx.require(ctx.wait_balloon(v, RAM, 120, 'deflate') is not None,
                        'deflate to 2 GiB did not complete')
            # Let free page reporting hand the deflated pages to the host.
            time.sleep(8)
            ctx.touch(v, 1434)
            ctx.touch(v, 1434, '-p 7')
            rc, out = v.sh('dmesg')
            lines = [ln for ln in (out + '\n' + v.console_text()).splitlines()
                     if POISON_BAD.search(ln)]
            ctx.check(not lines, '%s=1: expected no poison corruption '
                      'reports, got %d: %s' % (opt, len(lines), lines[:2]))
            poison = sorted(set(ln.strip() for ln in out.splitlines()
                                if 'poison' in ln.lower()))
            log('dmesg lines about poison: %s' % poison[:4])
    f.__doc__ = ('%s=1: the driver negotiates PAGE_POISON; after an inflate '
                 'to 1 GiB and a deflate (free page reporting on) the guest '
                 'touches and verifies 1.4 GiB twice with no poison '
                 'corruption reported.' % opt)
    return f


for _opt in ('init_on_free', 'page_poison'):
    test('page_poison_' + _opt, timeout=600)(page_poison_test(_opt))


@test('stats_under_pressure', timeout=600)
def t_stats_under_pressure(ctx):
    """Statistics keep flowing under memory pressure: with polling every
    second and deflate-on-oom, guest-stats keeps updating while a 1200 MiB
    program holds its memory in a guest ballooned to 768 MiB, and the free
    memory it reports drops while the program holds it."""
    with ctx.boot(balloon_opts='deflate-on-oom=on') as v:
        ctx.load(v)
        path = v.balloon_qom_path()
        v.qmp('qom-set', path=path, property='guest-stats-polling-interval',
              value=1)
        target = 768 * MiB
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate did not complete')
        g0 = guest_stats(ctx, v)
        free0 = g0['stats']['stat-free-memory']
        v.sh_ok('rm -f /tmp/sp.out; (vb_touch -m 1200 -s 8 > /tmp/sp.out '
                '2>&1; echo rc=$? >> /tmp/sp.out) &')
        updates, frees = set(), []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            g = v.qmp('qom-get', path=path, property='guest-stats')
            updates.add(g.get('last-update', 0))
            frees.append(g['stats'].get('stat-free-memory', -1))
            rc, out = v.sh('cat /tmp/sp.out')
            if 'rc=' in out:
                break
            time.sleep(0.25)
        log('program: %s' % out.strip()[-200:])
        log('%d distinct stats updates while it ran; free memory %d MiB '
            'before, lowest %d MiB' % (len(updates) - 1, free0 // MiB,
                                       min(frees) // MiB))
        ctx.check('rc=0' in out, 'vb_touch 1200 MiB under a 768 MiB balloon: '
                  'expected rc=0, got %s' % out.strip()[-200:])
        # The program runs for more than 8 s; one report a second.
        ctx.check(len(updates) - 1 >= 4,
                  'guest-stats under pressure: expected >= 4 new reports, '
                  'got %d' % (len(updates) - 1))
        # 250 MiB: the floor and the shrinker give back while the program
        # grows, and on the debug kernel the drop seen was 298 MiB.
        ctx.check(min(frees) < free0 - 250 * MiB,
                  'guest-stats free memory under pressure: expected below '
                  '%d MiB, lowest was %d MiB'
                  % ((free0 - 250 * MiB) // MiB, min(frees) // MiB))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
