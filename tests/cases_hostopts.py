# SPDX-License-Identifier: GPL-2.0
"""Host option tests: the balloon device's QEMU options on QEMU 7.2 and
QEMU 10.0 (scripts/deps.sh unpacks 10.0 privately; scripts/vm.py VM(qemu=)).

Names: hostopt_q<72|10>_<set>, one boot each:

  <set> = an option set of OPTION_SETS (defaults, doom, reporting, fph,
          fph_reporting, nopoison, legacy, packed, noioeventfd, vectors0,
          mmio): load the driver, touch memory, inflate by 1 GiB (query-balloon
          reaches the target, QEMU RSS drops by >= 0.9 GiB), deflate, reuse;
          where REPORTING is negotiated, 1 GiB freed in the guest comes back
          to the host (QEMU RSS >= 0.8 GiB lower within 30 s).
  stats_oom       (QEMU 10) statistics tags 10-15 arrive; an OOM kill in the
                  guest raises stat-oom-kills.
  idle_<set>      with INTx (7.2's balloon has no MSI-X; 10.0 vectors=0),
                  legacy and mmio: at a 1 s polling interval an idle guest
                  takes <= 1.5 balloon interrupts a second and the host's
                  statistics keep updating.

Every test dict carries 'qemu' ('7.2'/'10.0'), 'optset' and 'core' (True
for the short slice worth running on every check; see CORE).  Select a
slice by name with `tests/run.py -k 'hostopt_q10_*'`, or in code with
[t for t in run.TESTS if t.get('core', True)].

Loaded by tests/run.py (tests/cases_*.py)."""

import os
import re
import time

import run
from run import test, log, TestFail, TestSkip, RAM, KiB  # noqa: F401
import vm as vmmod
from vm import GiB, MiB, VMError  # noqa: F401
from cases_features import bound_line, feature, guest_stats

# name -> (balloon_opts, transport, QEMU versions, REPORTING negotiated,
#          features the driver's "bound:" line must show)
OPTION_SETS = {
    'defaults': ('', 'pci-modern', ('7.2', '10.0'), False,
                 {'stats': 'on', 'reporting': 'off',
                  'deflate-on-oom': 'off'}),
    'doom': ('deflate-on-oom=on', 'pci-modern', ('7.2', '10.0'), False,
             {'deflate-on-oom': 'on'}),
    'reporting': ('free-page-reporting=on', 'pci-modern', ('7.2', '10.0'),
                  True, {'reporting': 'on'}),
    # FREE_PAGE_HINT is offered: QEMU then puts its hint queue before the
    # reporting queue, and the driver accepts it so that both agree.
    'fph': ('free-page-hint=on,iothread=io0', 'pci-modern', ('7.2', '10.0'),
            False, {'reporting': 'off', 'stats': 'on',
                    'free-page-hint': 'on'}),
    'fph_reporting': ('free-page-hint=on,free-page-reporting=on,'
                      'iothread=io0', 'pci-modern', ('7.2', '10.0'), True,
                      {'reporting': 'on', 'stats': 'on',
                       'free-page-hint': 'on'}),
    'nopoison': ('page-poison=off', 'pci-modern', ('7.2', '10.0'), False,
                 {'page-poison': 'off'}),
    'legacy': ('', 'pci-legacy', ('7.2', '10.0'), False, {'stats': 'on'}),
    'packed': ('', 'pci-packed', ('7.2', '10.0'), False, {'stats': 'on'}),
    # QEMU 7.2's virtio-balloon-pci has neither an ioeventfd nor a vectors
    # property (no ioeventfd, no MSI-X: INTx only); 10.0 has both.
    'noioeventfd': ('ioeventfd=off', 'pci-modern', ('10.0',), False,
                    {'stats': 'on'}),
    'vectors0': ('vectors=0', 'pci-modern', ('10.0',), False,
                 {'stats': 'on'}),
    'mmio': ('', 'mmio', ('7.2', '10.0'), False, {'stats': 'on'}),
}

# The slice for a quick check: the device's default on both QEMUs, the
# option sets whose queue layout differs (reporting, hint + reporting), the
# other transports on the newer QEMU, and one each of stats and INTx.
CORE = {
    'hostopt_q72_defaults', 'hostopt_q10_defaults',
    'hostopt_q10_reporting', 'hostopt_q10_fph_reporting',
    'hostopt_q10_legacy', 'hostopt_q10_mmio',
    'hostopt_q10_stats_oom',
    'hostopt_q72_idle_intx', 'hostopt_q10_idle_vectors0',
}

TOUCH_MIB = 1536          # guest memory touched before the inflation
INFLATE = GiB             # balloon size
REPORT_MIB = 1024         # touched, held, then freed for reporting
# QEMU 10 names of statistics tags 10-15.
NEW_TAGS = ('stat-oom-kills', 'stat-alloc-stalls', 'stat-async-scans',
            'stat-direct-scans', 'stat-async-reclaims',
            'stat-direct-reclaims')


def qtag(q):
    """'7.2' -> 'q72', '10.0' -> 'q10' (the name prefix)."""
    return {'7.2': 'q72', '10.0': 'q10'}[q]


def register(name, func, qemu, optset, timeout=300, oom_ok=False):
    test(name, timeout=timeout, oom_ok=oom_ok)(func)
    t = run.TESTS[-1]
    assert t['name'] == name
    t.update(qemu=qemu, optset=optset, core=name in CORE)


def check_bound(ctx, v, want):
    """The driver's bound line shows the wanted features (vballoon only)."""
    line = bound_line(ctx, v)
    log('QEMU %s, balloon: %s' % (v.qemu, v.balloon_device()))
    log('driver: %s' % line)
    if ctx.driver != 'vballoon':
        return
    if line is None:
        ctx.fail('dmesg: expected the vballoon "bound:" line, got none')
        return
    for k, val in sorted(want.items()):
        ctx.check(feature(line, k) == val,
                  'bound line: expected "%s %s", got %r' % (k, val, line))


def hold_touch(ctx, v, mib, tag):
    """Start vb_touch -m mib -s -1 in the background; wait for its "ok 1"
    (memory touched and held); return its pid file."""
    v.sh_ok('vb_touch -m %d -s -1 >/tmp/%s.log 2>&1 & echo $! >/tmp/%s.pid'
            % (mib, tag, tag))
    deadline = time.monotonic() + 180
    while True:
        out = v.sh_ok('cat /tmp/%s.log' % tag)
        if 'ok 1' in out:
            break
        if time.monotonic() > deadline:
            raise TestFail('vb_touch %d MiB: expected "ok 1" within 180 s, '
                           'got %r' % (mib, out.strip()))
        time.sleep(0.5)
    ctx.require('not ok' not in out, 'vb_touch %d MiB: %s'
                % (mib, out.strip()))
    return '/tmp/%s.pid' % tag


def stop_touch(v, pidfile):
    v.sh_ok('kill $(cat %s); while kill -0 $(cat %s) 2>/dev/null; do '
            'sleep 0.1; done' % (pidfile, pidfile))


def inflate_cycle(ctx, v, reporting):
    """Touch TOUCH_MIB (held, so that free page reporting cannot hand it
    back first), free it, inflate by 1 GiB: query-balloon reaches the
    target and QEMU RSS drops by >= 0.9 GiB.  Deflate, touch again."""
    mi0 = v.meminfo()
    pid = hold_touch(ctx, v, TOUCH_MIB, 'inf')
    rss0 = v.rss_kib()
    stop_touch(v, pid)
    target = RAM - INFLATE
    v.balloon(target)
    t_in = ctx.wait_balloon(v, target, 120, 'inflate by 1 GiB')
    ctx.require(t_in is not None, 'inflate by 1 GiB did not complete')
    rss1 = v.rss_kib()
    mi1 = v.meminfo()
    want = int(0.9 * INFLATE // KiB)
    log('inflate by 1 GiB: %.2f s; QEMU RSS %d MiB with %d MiB touched, %d '
        'MiB after (-%d MiB)%s; MemTotal -%d MiB'
        % (t_in, rss0 // 1024, TOUCH_MIB, rss1 // 1024, (rss0 - rss1) // 1024,
           ' (reporting on: part may be reported free memory)'
           if reporting else '',
           (mi0['MemTotal'] - mi1['MemTotal']) // 1024))
    ctx.check(rss0 - rss1 >= want,
              'QEMU RSS after inflating 1 GiB: expected a drop >= %d MiB, '
              'got %d MiB (%d -> %d MiB)' % (want // 1024,
                                             (rss0 - rss1) // 1024,
                                             rss0 // 1024, rss1 // 1024))
    # With DEFLATE_ON_OOM the balloon's pages stay in MemTotal (as with
    # the in-tree driver): they may come back under pressure.
    drop = mi0['MemTotal'] - mi1['MemTotal']
    want_drop = 0 if 'deflate-on-oom=on' in v.balloon_opts else \
        INFLATE // KiB
    ctx.check(abs(drop - want_drop) <= 0.03 * INFLATE // KiB,
              'MemTotal drop: expected ~%d kB (+-3%% of 1 GiB), got %d kB'
              % (want_drop, drop))
    v.balloon(RAM)
    t_out = ctx.wait_balloon(v, RAM, 120, 'deflate')
    if t_out is not None:
        log('deflate: %.2f s' % t_out)
    ctx.touch(v, TOUCH_MIB)
    log('QEMU RSS %d MiB after reusing %d MiB' % (v.rss_kib() // 1024,
                                                 TOUCH_MIB))


def reporting_check(ctx, v, within=30):
    """1 GiB touched, held and freed in the guest: QEMU RSS drops by
    >= 0.8 GiB within `within` s (free page reporting, 2 s delay)."""
    time.sleep(3)
    pid = hold_touch(ctx, v, REPORT_MIB, 'fpr')
    time.sleep(1)
    rss1 = v.rss_kib()
    stop_touch(v, pid)
    t0 = time.monotonic()
    want = int(0.8 * GiB // KiB)
    trail, rss = [], rss1
    while time.monotonic() - t0 <= within:
        rss = v.rss_kib()
        trail.append('%.0fs:%d' % (time.monotonic() - t0, rss // 1024))
        if rss1 - rss >= want:
            break
        time.sleep(1)
    log('free page reporting: QEMU RSS %d MiB with %d MiB held; after the '
        'free (s:MiB): %s' % (rss1 // 1024, REPORT_MIB, ' '.join(trail)))
    ctx.check(rss1 - rss >= want,
              'free page reporting: expected QEMU RSS to drop >= %d MiB '
              'within %d s of the guest freeing %d MiB, got %d MiB (%d -> '
              '%d MiB)' % (want // 1024, within, REPORT_MIB,
                           (rss1 - rss) // 1024, rss1 // 1024, rss // 1024))


def optset_test(qemu, setname):
    opts, transport, _, reporting, want = OPTION_SETS[setname]

    def f(ctx):
        with ctx.boot(transport=transport, balloon_opts=opts,
                      qemu=qemu) as v:
            ctx.load(v)
            check_bound(ctx, v, want)
            inflate_cycle(ctx, v, reporting)
            if reporting:
                reporting_check(ctx, v)
    f.__doc__ = ('QEMU %s, %s%s: touch %d MiB, inflate by 1 GiB (target '
                 'and QEMU RSS -0.9 GiB), deflate, reuse%s.'
                 % (qemu, transport, ' ' + opts if opts else '', TOUCH_MIB,
                    '; 1 GiB freed comes back within 30 s (reporting)'
                    if reporting else ''))
    return f


for _set, (_o, _t, _qs, _r, _w) in OPTION_SETS.items():
    for _q in _qs:
        register('hostopt_%s_%s' % (qtag(_q), _set), optset_test(_q, _set),
                 _q, _set)


# ---------------------------------------------------------------------------
# Statistics tags 10-15 (QEMU 9.2+), and stat-oom-kills after an OOM kill.

def vmstat_oom(v):
    return v.vmstat().get('oom_kill', 0)


def oom_quiet_console(v):
    """Keep the OOM report off the console (its dump_stack "Call Trace:"
    would fail any test); return the old /proc/sys/kernel/printk.  The
    kernel log keeps everything: check_dmesg_around_oom() scans it."""
    old = v.sh_ok('cat /proc/sys/kernel/printk').split()
    v.sh_ok('echo 1 > /proc/sys/kernel/printk')
    return old


def check_dmesg_around_oom(ctx, v, old_printk):
    """Restore the console level; fail on any bad kernel log line (the
    harness's console patterns), except the "Call Trace:" of an OOM
    report's own stack dump."""
    v.sh_ok('echo %s > /proc/sys/kernel/printk' % ' '.join(old_printk))
    out = v.sh_ok('dmesg', timeout=30)
    bad, in_report = [], False
    for ln in out.splitlines():
        if 'invoked oom-killer' in ln:
            in_report = True
        elif re.search(r'Out of memory: Killed process|oom_reaper', ln):
            in_report = False
        if any(b.search(ln) for b in vmmod.BENIGN_CONSOLE):
            continue
        hits = [p for p in vmmod.BAD_CONSOLE if p.search(ln)]
        if in_report:
            hits = [p for p in hits if p.pattern != r'Call Trace']
        if hits:
            bad.append(ln.strip())
    ctx.check(not bad, 'kernel log around the OOM kill: expected no bad '
              'lines besides the OOM report\'s stack, got %d: %s'
              % (len(bad), ' | '.join(bad[:3])))


def t_stats_oom(ctx):
    """QEMU 10, no deflate-on-oom, stats every second: tags 10-15
    (stat-oom-kills, ...) arrive; after a program is OOM-killed in a guest
    ballooned to 768 MiB (overcommit on), stat-oom-kills equals the
    guest's oom_kill count."""
    with ctx.boot(qemu='10.0') as v:
        ctx.load(v)
        check_bound(ctx, v, {'stats': 'on', 'deflate-on-oom': 'off'})
        path = v.balloon_qom_path()
        v.qmp('qom-set', path=path, property='guest-stats-polling-interval',
              value=1)
        g = guest_stats(ctx, v)
        g = guest_stats(ctx, v, g['last-update'])
        st = g['stats']
        log('guest-stats: ' + ', '.join('%s=%d' % (k[5:], val) for k, val
                                        in sorted(st.items())))
        missing = [k for k in NEW_TAGS if st.get(k, -1) == -1]
        ctx.check(not missing, 'QEMU 10 guest-stats: expected tags 10-15 '
                  '(%s) to arrive, missing: %s' % (', '.join(NEW_TAGS),
                                                   missing))
        oom0 = vmstat_oom(v)
        ctx.check(st.get('stat-oom-kills', -1) == oom0,
                  'stat-oom-kills: expected oom_kill %d, got %d'
                  % (oom0, st.get('stat-oom-kills', -1)))

        target = 768 * MiB
        v.balloon(target)
        ctx.require(ctx.wait_balloon(v, target, 120, 'inflate') is not None,
                    'inflate to 768 MiB did not complete')
        vs0 = v.vmstat()
        # Overcommit on: the mapping succeeds, touching it cannot.
        old_printk = oom_quiet_console(v)
        v.sh_ok('echo 1 > /proc/sys/vm/overcommit_memory')
        t0 = time.monotonic()
        rc, out = v.sh('vb_touch -m 1200', timeout=300)
        took = time.monotonic() - t0
        v.sh_ok('echo 0 > /proc/sys/vm/overcommit_memory')
        check_dmesg_around_oom(ctx, v, old_printk)
        vs1 = v.vmstat()
        oom1 = vs1.get('oom_kill', 0)
        log('vb_touch 1200 MiB under a 768 MiB balloon target, overcommit '
            'on: rc %d in %.1f s: %s; oom_kill %d -> %d'
            % (rc, took, out.strip()[-200:], oom0, oom1))
        ctx.require(rc != 0 and oom1 > oom0,
                    'expected vb_touch 1200 MiB to be OOM-killed, got rc %d,'
                    ' oom_kill %d -> %d' % (rc, oom0, oom1))
        # Without DEFLATE_ON_OOM the spec says the balloon keeps its
        # pages while the host asks for them: the guest's floor does not
        # give them back either.
        after = v.query_balloon()
        log('query-balloon after the OOM kill: %d MiB (target %d MiB)'
            % (after // MiB, target // MiB))
        ctx.check(after == v.expected_actual(target),
                  'without deflate-on-oom: expected the balloon to stay at '
                  'the host target (query-balloon %d MiB), got %d MiB'
                  % (target // MiB, after // MiB))
        log('guest vmstat deltas: ' + ', '.join(
            '%s=%d' % (k, vs1.get(k, 0) - vs0.get(k, 0))
            for k in sorted(vs1) if re.match(
                r'(oom_kill|allocstall|pgscan_(kswapd|direct)$|'
                r'pgsteal_(kswapd|direct)$)', k)))
        deadline = time.monotonic() + 15
        upd = g['last-update']
        while True:
            g = guest_stats(ctx, v, upd)
            upd = g['last-update']
            st = g['stats']
            if st.get('stat-oom-kills', -1) == oom1 or \
                    time.monotonic() > deadline:
                break
        log('after the OOM kill: ' + ', '.join(
            '%s=%d' % (k[5:], st.get(k, -1)) for k in NEW_TAGS))
        ctx.check(st.get('stat-oom-kills', -1) == oom1,
                  'stat-oom-kills after the OOM kill: expected %d (guest '
                  'oom_kill), got %d' % (oom1, st.get('stat-oom-kills', -1)))
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
        ctx.touch(v, 1024)


register('hostopt_q10_stats_oom', t_stats_oom, '10.0', 'defaults',
         oom_ok=True)


# ---------------------------------------------------------------------------
# Idle interrupts with a 1 s statistics interval.

# name -> (QEMU, transport, balloon_opts, INTx expected)
IDLE_SETS = (
    ('7.2', 'intx', 'pci-modern', '', True),      # 7.2: no MSI-X at all
    ('10.0', 'vectors0', 'pci-modern', 'vectors=0', True),
    ('7.2', 'legacy', 'pci-legacy', '', True),
    ('10.0', 'legacy', 'pci-legacy', '', False),
    ('7.2', 'mmio', 'mmio', '', False),
    ('10.0', 'mmio', 'mmio', '', False),
)
IDLE_S = 20


def balloon_irqs(v, dev):
    """(total count, lines) of the guest's /proc/interrupts lines naming
    the balloon device `dev` (virtioN or virtioN-<queue>)."""
    out = v.sh_ok('cat /proc/interrupts')
    pat = re.compile(r'\b%s(-|\b)' % re.escape(dev))
    total, lines = 0, []
    for ln in out.splitlines()[1:]:
        if not pat.search(ln):
            continue
        lines.append(' '.join(ln.split()))
        for f in ln.split()[1:]:
            if not f.isdigit():
                break
            total += int(f)
    return total, lines


def idle_test(qemu, transport, opts, intx):
    def f(ctx):
        with ctx.boot(transport=transport, balloon_opts=opts,
                      qemu=qemu) as v:
            ctx.load(v)
            check_bound(ctx, v, {'stats': 'on'})
            dev = os.path.basename(v.sysfs_dir())
            for i in range(2):
                for t in (RAM - 256 * MiB, RAM):
                    v.balloon(t)
                    ctx.require(ctx.wait_balloon(v, t, 120, 'cycle %d' % i)
                                is not None, 'inflate/deflate cycle %d' % i)
            path = v.balloon_qom_path()
            v.qmp('qom-set', path=path,
                  property='guest-stats-polling-interval', value=1)
            g = guest_stats(ctx, v)
            g = guest_stats(ctx, v, g['last-update'])
            n0, lines = balloon_irqs(v, dev)
            log('%s interrupts: %s' % (dev, ' | '.join(lines)))
            ctx.require(lines, 'no /proc/interrupts line for %s' % dev)
            if intx:
                msi = [ln for ln in lines if 'MSI' in ln]
                ctx.check(not msi, 'expected INTx for %s, got MSI lines: %s'
                          % (dev, msi))
            t0 = time.monotonic()
            updates = {g['last-update']}
            while time.monotonic() - t0 < IDLE_S:
                time.sleep(2)
                g2 = v.qmp('qom-get', path=path, property='guest-stats')
                updates.add(g2.get('last-update', 0))
            n1, lines = balloon_irqs(v, dev)
            dt = time.monotonic() - t0
            rate = (n1 - n0) / dt
            log('%d balloon interrupts in %.1f s idle (%.2f/s); %d distinct'
                ' guest-stats updates; %s' % (n1 - n0, dt, rate,
                                              len(updates) - 1,
                                              ' | '.join(lines)))
            ctx.check(rate <= 1.5,
                      'idle with a 1 s stats interval: expected <= 1.5 '
                      'balloon interrupts/s, got %d in %.1f s (%.1f/s)'
                      % (n1 - n0, dt, rate))
            # Sampled every 2 s, a 1 s interval shows a new one each time.
            ctx.check(len(updates) - 1 >= IDLE_S // 4,
                      'guest-stats: expected >= %d new updates sampled '
                      'every 2 s over %d s, got %d'
                      % (IDLE_S // 4, IDLE_S, len(updates) - 1))
            ctx.check(time.time() - max(updates) <= 5,
                      'guest-stats: expected a last-update within 5 s, '
                      'got %.0f s ago' % (time.time() - max(updates)))
            v.balloon(RAM - 256 * MiB)
            ctx.wait_balloon(v, RAM - 256 * MiB, 120, 'inflate after idle')
            v.balloon(RAM)
            ctx.wait_balloon(v, RAM, 120, 'deflate after idle')
    f.__doc__ = ('QEMU %s, %s%s%s: idle with stats every 1 s, <= 1.5 '
                 'balloon interrupts/s, guest-stats keep updating.'
                 % (qemu, transport, ' ' + opts if opts else '',
                    ' (INTx)' if intx else ''))
    return f


for _q, _n, _t, _o, _x in IDLE_SETS:
    register('hostopt_%s_idle_%s' % (qtag(_q), _n), idle_test(_q, _t, _o, _x),
             _q, _n)
