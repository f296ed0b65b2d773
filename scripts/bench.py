#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Compare vballoon with the in-tree virtio_balloon (``make bench``).

    scripts/bench.py [--kernels K61,K612] [--qemu 7.2,10.0] [--reps N]
                     [--quick] [--out DIR]

For every kernel, QEMU and repetition the drivers take turns, in-tree
first on even repetitions and vballoon first on odd ones (ABBA), and each
run gets a freshly booted guest:

cycle      the guest touches most of its RAM and exits; the host's QEMU RSS
           and AnonHugePages are read; the balloon inflates (timed until
           query-balloon reports the target), deflates (timed likewise),
           and the guest touches the memory again, after which the host's
           AnonHugePages are read once more.  Around the inflation and the
           deflation: the guest's kernel CPU time (system, irq and softirq
           of all vCPUs in its /proc/stat), QEMU's CPU time (/proc/<pid>/
           stat) and the host's notifications (QEMU trace event
           virtio_queue_notify: a run of the queue's handler), per GiB.
           Then the balloon inflates once more beside vb_spin (a spinning
           thread per vCPU): that inflation's time and the vCPU seconds of
           the program's work it cost.
ioa0       the cycle's inflation in a guest booted with init_on_alloc=0
           (the kernel does not zero pages it hands out).
host       scripts/madv_bench (built beside the results): MADV_DONTNEED of
           the ballooned amount per 4 KiB, per 2 MiB and in one call.
pressure   a guest with deflate-on-oom=on is ballooned down, then runs a
           program that needs more than is left: its run time, OOM kills,
           and how long until the balloon is back at the host's target.
           One unballooned guest (driver "none") gives the reference time.
hugepage   once per kernel and driver, a guest whose RAM is a hugetlb memfd
           inflates by 1 GiB; how much host memory comes back.
resident   once per kernel and driver (not with --quick), the cycle's
           inflation with QEMU tracing every ballooned PFN and the host's
           pagemap of guest RAM read before and after: how many ballooned
           pages were host-resident at all, and what share of those the
           host got back (the ceiling of "RSS returned / ballooned").
QEMU       cycle and ioa0 run on every QEMU of --qemu (the first only with
           --quick); pressure, resident, hugepage on the first; migrate on
           10.0.
migrate    --migrate-reps times per kernel and driver (default 3, ABBA;
           not with --quick), on QEMU 10.0: a guest that touched most of
           its RAM and freed it migrates at 128 MiB/s with
           free-page-hint=on (and, for vballoon, once more without it);
           the RAM bytes the source sent (query-migrate's transferred).

Writes DIR/raw.csv (one row per measurement), DIR/bench.csv (median, min,
max per kernel, QEMU, driver and metric, with the vballoon/in-tree ratio of the
medians), DIR/summary.txt (what is printed), DIR/meta.txt, DIR/bench.png
(gnuplot) and guest logs under DIR/logs.

Exit status 0 when the benchmark ran, whatever the numbers; 1 when
something broke functionally (a guest did not boot, a driver did not bind,
the balloon never reached its target, the guest kernel complained); 2 on
bad usage.
"""

import argparse
import csv
import datetime
import hashlib
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from vm import (GiB, MiB, ROOT, VM, VMError, build_initrd,  # noqa: E402
                host_meminfo, load_kernels_env, qemu_setup, QEMU_VERSIONS)

DRIVERS = ('inkernel', 'vballoon')
INF = float('inf')
POLL = 0.01                      # query-balloon poll interval, seconds

# Sizes in MiB.  'touch' lists what the guest tries to map, largest first:
# the first size that works is used and recorded.
FULL = {'mem': 2048, 'touch': (1536, 1400, 1300, 1200), 'inflate_to': 512,
        'pressure_to': 768, 'pressure_touch': 1200, 'giveup': 30.0,
        'huge_inflate': 1024, 'huge_pages': 1100}
QUICK = {'mem': 1024, 'touch': (768, 700, 640), 'inflate_to': 256,
         'pressure_to': 384, 'pressure_touch': 600, 'giveup': 15.0,
         'huge_inflate': 512, 'huge_pages': 560}

# The migration scenario: its device options, QEMU and bandwidth (a TCG
# guest hints ~20 times slower than a KVM one; tests/README.md).
HINT_OPTS = 'free-page-hint=on,iothread=io0'
MIGRATE_QEMU = '10.0'
MIGRATE_BW = 128 * MiB

# The CPU-bound program beside an inflation: it runs SPIN_S seconds, its
# rate before the inflation is measured from SPIN_WARM_S to SPIN_BASE_S, and
# the inflation starts half a second later.
SPIN_S = 12.0
SPIN_WARM_S = 0.3
SPIN_BASE_S = 2.0
USER_HZ = 100                    # /proc/stat's unit

# floor_kb for vballoon in every run: low enough that the usable-memory
# floor never stops a benchmark inflation short of the in-tree driver's.
BENCH_FLOOR_KB = 8192

# Per-metric: label for the table, format.
METRICS = [
    ('boot_s', 'guest boot (s)', '%.2f'),
    ('touch_mib', 'guest touched (MiB)', '%.0f'),
    ('touch_s', 'first touch (s)', '%.2f'),
    ('rss_before_mib', 'QEMU RSS before (MiB)', '%.0f'),
    ('thp_before_mib', 'THP before (MiB)', '%.0f'),
    ('inflate_s', 'inflate (s)', '%.3f'),
    ('inflate_us_per_page', 'inflate (us/4KiB)', '%.2f'),
    ('inflate_guest_cpu_s_per_gib', 'inflate: guest CPU (s/GiB)', '%.3f'),
    ('inflate_qemu_cpu_s_per_gib', 'inflate: QEMU CPU (s/GiB)', '%.3f'),
    ('inflate_notify_per_gib', 'inflate: host notifications/GiB', '%.0f'),
    ('rss_after_inflate_mib', 'QEMU RSS after inflate (MiB)', '%.0f'),
    ('rss_returned_ratio', 'RSS returned / ballooned', '%.3f'),
    ('deflate_s', 'deflate (s)', '%.3f'),
    ('deflate_guest_cpu_s_per_gib', 'deflate: guest CPU (s/GiB)', '%.3f'),
    ('deflate_qemu_cpu_s_per_gib', 'deflate: QEMU CPU (s/GiB)', '%.3f'),
    ('deflate_notify_per_gib', 'deflate: host notifications/GiB', '%.0f'),
    ('retouch_s', 're-touch (s)', '%.2f'),
    ('rss_after_cycle_mib', 'QEMU RSS after cycle (MiB)', '%.0f'),
    ('thp_after_mib', 'THP after cycle (MiB)', '%.0f'),
    ('thp_survival', 'THP after / before', '%.3f'),
    ('busy_inflate_s', 'inflate beside vb_spin (s)', '%.3f'),
    ('busy_lost_cpu_s', 'vb_spin: vCPU s of work lost', '%.2f'),
    ('ioa0_inflate_s', 'inflate, init_on_alloc=0 (s)', '%.3f'),

    ('madv_4k_s', 'host DONTNEED per 4K (s)', '%.3f'),
    ('madv_2m_s', 'host DONTNEED per 2M (s)', '%.4f'),
    ('madv_all_s', 'host DONTNEED one call (s)', '%.4f'),
    ('madv_willneed_4k_s', 'host WILLNEED per 4K (s)', '%.3f'),
    ('resident_ballooned_mib', 'ballooned & host-resident (MiB)', '%.0f'),
    ('never_resident_mib', 'ballooned, never resident (MiB)', '%.0f'),
    ('still_resident_mib', 'ballooned, still resident (MiB)', '%.0f'),
    ('resident_returned_ratio', 'RSS returned / resident ballooned',
     '%.3f'),
    ('pressure_prog_s', 'pressure: program (s)', '%.2f'),
    ('pressure_wall_s', 'pressure: program wall (s)', '%.2f'),
    ('pressure_oom_kills', 'pressure: OOM kills', '%.0f'),
    ('pressure_deflated_mib', 'pressure: deflated (MiB)', '%.0f'),
    ('pressure_back_s', 'pressure: back at target (s)', '%.2f'),
    ('migrate_mib', 'migration with hints: sent (MiB)', '%.0f'),
    ('migrate_nohint_mib', 'migration without hints: sent (MiB)', '%.0f'),
    ('huge_inflate_s', 'hugetlb: inflate (s)', '%.3f'),
    ('huge_pool_freed_mib', 'hugetlb: host pool freed (MiB)', '%.0f'),
    ('huge_hugetlb_drop_mib', 'hugetlb: HugetlbPages drop (MiB)', '%.0f'),
    ('huge_vmrss_drop_mib', 'hugetlb: VmRSS drop (MiB)', '%.0f'),
    ('huge_returned_ratio', 'hugetlb: freed / ballooned', '%.3f'),
]
# vballoon only: where its worker's time went (debugfs stats).
METRICS += [
    ('%s_%s_ms' % (d, part), '%s: %s (ms)' % (d, what), '%.0f')
    for d in ('inflate', 'deflate')
    for part, what in (('alloc', 'in the page allocator'),
                       ('fill', 'filling requests'),
                       ('submit', 'ring + notify'),
                       ('wait', 'waiting for the host'),
                       ('reap', 'accounting answers'))
    if not (d == 'deflate' and part == 'alloc')]
METRIC_INFO = {m[0]: m for m in METRICS}


class Broken(Exception):
    """Something failed functionally (not a slow number)."""


def log(msg):
    stamp = time.strftime('%H:%M:%S')
    for line in str(msg).splitlines():
        print('[bench %s] %s' % (stamp, line), file=sys.stderr, flush=True)


def fmt_num(metric, v):
    if v is None:
        return '-'
    if math.isinf(v):
        return 'never' if metric == 'pressure_back_s' else 'inf'
    s = METRIC_INFO[metric][2] % v if metric in METRIC_INFO else '%g' % v
    return s[1:] if re.fullmatch(r'-0(\.0*)?', s) else s


def proc_status(pid):
    d = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, v = line.split(':', 1)
            parts = v.split()
            if parts and parts[0].isdigit():
                d[k] = int(parts[0])
    return d


class Bench:
    def __init__(self, args, kernels, qemus):
        self.args = args
        # One configuration per kernel and QEMU: [(label, release)], the
        # label ("K61 q7.2") the key of every measurement.
        self.kernels = [('%s q%s' % (k, q), rel) for k, rel in kernels
                        for q in qemus]
        self.conf = {'%s q%s' % (k, q): (k, rel, q) for k, rel in kernels
                     for q in qemus}
        self.qemus = qemus
        self.sz = QUICK if args.quick else FULL
        self.out = os.path.abspath(args.out)
        self.logs = os.path.join(self.out, 'logs')
        os.makedirs(self.logs, exist_ok=True)
        self.raw = []                   # dicts: kernel driver rep metric value
        self.failures = []
        self.notes = []
        self.initrds = {}
        self.huge_status = {}           # kernel -> text
        self.madv = os.path.join(ROOT, 'build', 'bench', 'madv_bench')

    # ------------------------------------------------------------------
    def record(self, kernel, driver, rep, metric, value):
        self.raw.append({'kernel': kernel, 'driver': driver, 'rep': rep,
                         'metric': metric, 'value': float(value)})

    def fail(self, what, err, vm=None):
        msg = '%s: %s' % (what, err)
        log('FAILED ' + msg)
        self.failures.append(msg)

    def initrd(self, kver, driver):
        key = (kver, driver)
        if key not in self.initrds:
            path = os.path.join(self.out, 'initrd-%s-%s.gz' % (kver, driver))
            build_initrd(kver, driver, path)
            self.initrds[key] = path
        return self.initrds[key]

    def primary(self, kname):
        """Whether kname runs on the first QEMU (the scenarios that run
        once per kernel run there)."""
        return self.conf[kname][2] == self.qemus[0]

    def boot(self, kname, driver, name, **kw):
        """A guest of configuration kname (kw['qemu'] overrides its QEMU)
        with driver loaded and bound."""
        kver = self.conf[kname][1]
        kw.setdefault('qemu', self.conf[kname][2])
        vm = VM(kver, driver, mem='%dM' % self.sz['mem'],
                initrd=self.initrd(kver, driver), log_dir=self.logs,
                name=name.replace(' ', '-'), **kw)
        try:
            if driver != 'none':
                rc, out = vm.sh('vb-load', timeout=60)
                if rc != 0:
                    raise Broken('vb-load failed: ' + out.strip())
                deadline = time.monotonic() + 10
                while vm.sysfs_dir() is None:
                    if time.monotonic() > deadline:
                        raise Broken('%s did not bind to the balloon' % driver)
                    time.sleep(0.2)
                if driver == 'vballoon':
                    # The in-tree driver has no floor: lower ours so both
                    # move the same amount (the floor is policy, not speed).
                    rc, out = vm.sh('echo %d > %s/floor_kb'
                                    % (BENCH_FLOOR_KB, vm.sysfs_dir()))
                    if rc != 0:
                        raise Broken('floor_kb: ' + out.strip())
        except BaseException:
            vm.close()
            raise
        return vm

    def move(self, vm, target, what):
        """Set the balloon to target; return the seconds until
        query-balloon shows it (Broken after 180 s)."""
        t0 = time.monotonic()
        vm.balloon(target)
        t = self.wait_actual(vm, target, t0, 180)
        if t is None:
            raise Broken('%s to %d MiB never reached (at %d MiB)'
                         % (what, target >> 20, vm.query_balloon() >> 20))
        return t

    @staticmethod
    def wait_actual(vm, target, t0, timeout):
        """Poll query-balloon every POLL s until it equals target; return
        seconds since t0, or None after timeout."""
        want = vm.expected_actual(target)
        while True:
            if vm.query_balloon() == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(POLL)

    @staticmethod
    def touch(vm, mib, timeout=600):
        """Run vb_touch; return (rc, seconds or None, output)."""
        rc, out = vm.sh('vb_touch -m %d' % mib, timeout=timeout)
        m = re.search(r'in ([0-9.]+) s', out)
        return rc, (float(m.group(1)) if m and rc == 0 else None), out

    @staticmethod
    def oom_kills(vm):
        n = vm.vmstat().get('oom_kill', 0)
        console = len(re.findall(r'Killed process \d+', vm.console_text()))
        return n, console

    def console_problems(self, vm, pressure=False):
        bad = vm.bad_console_lines()
        if pressure:
            # OOM and allocation-failure reports carry a call trace; that
            # is the scenario, not a bug.
            text = vm.console_text()
            if re.search(r'invoked oom-killer|page allocation failure',
                         text):
                bad = [b for b in bad if 'Call Trace' not in b]
        return bad

    # ------------------------------------------------------------------
    def run_host(self, kname, rep):
        mib = self.sz['mem'] - self.sz['inflate_to']
        p = subprocess.run([self.madv, '-m', str(mib)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        if p.returncode != 0:
            self.fail('%s madv_bench' % kname, p.stdout.strip())
            return
        vals = dict(line.split() for line in p.stdout.splitlines()
                    if len(line.split()) == 2)
        for src, dst in (('dontneed_4k_s', 'madv_4k_s'),
                         ('dontneed_2m_s', 'madv_2m_s'),
                         ('dontneed_all_s', 'madv_all_s'),
                         ('willneed_4k_s', 'madv_willneed_4k_s')):
            self.record(kname, 'host', rep, dst, float(vals[src]))
        log('%s host: DONTNEED %d MiB per 4K %.3f s, per 2M %.4f s' % (
            kname, mib, float(vals['dontneed_4k_s']),
            float(vals['dontneed_2m_s'])))

    @staticmethod
    def guest_kernel_ticks(vm):
        """System, irq and softirq time of all the guest's vCPUs, in
        USER_HZ ticks (the cpu line of its /proc/stat)."""
        f = vm.sh_ok('head -n 1 /proc/stat').split()
        return int(f[3]) + int(f[6]) + int(f[7])

    @staticmethod
    def qemu_cpu_s(vm):
        """User and system CPU seconds of the QEMU process so far (under
        TCG its vCPU threads run the guest: this includes the guest)."""
        with open('/proc/%d/stat' % vm.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            'SC_CLK_TCK')

    @staticmethod
    def count_notifies(trace, until):
        """Host notifications per queue (0 inflate, 1 deflate) in a QEMU
        trace of virtio_queue_notify (-msg timestamp=on), before the wall
        clock time until; the trace file is removed."""
        counts = {}
        try:
            with open(trace) as f:
                for line in f:
                    m = re.search(r'@(\d+\.\d+):virtio_queue_notify\b.*'
                                  r'\bn (\d+)', line)
                    if m and float(m.group(1)) < until:
                        q = int(m.group(2))
                        counts[q] = counts.get(q, 0) + 1
        finally:
            try:
                os.unlink(trace)
            except OSError:
                pass
        return counts

    @staticmethod
    def vb_times(vm):
        """vballoon's debugfs counters of where its worker's time went
        (*_alloc_us, *_fill_us, ...), or {} without them."""
        rc, out = vm.sh('cat /sys/kernel/debug/vballoon/virtio*/stats')
        return {k: int(v) for k, v in re.findall(
            r'^((?:in|de)flate_[a-z]+_us) (\d+)$', out, re.M)} if rc == 0 \
            else {}

    def timed_move(self, vm, target, what, rec):
        """Set the balloon to target and time it until query-balloon shows
        it; record what_s, the guest's and QEMU's CPU seconds per GiB
        moved and, for vballoon, where its worker's time went; return the
        seconds."""
        moved = abs(vm.query_balloon() - vm.expected_actual(target))
        v0 = self.vb_times(vm) if vm.driver == 'vballoon' else {}
        g0, q0 = self.guest_kernel_ticks(vm), self.qemu_cpu_s(vm)
        t = self.move(vm, target, what)
        q1, g1 = self.qemu_cpu_s(vm), self.guest_kernel_ticks(vm)
        rec(what + '_s', t)
        rec(what + '_guest_cpu_s_per_gib',
            (g1 - g0) / USER_HZ * GiB / moved)
        rec(what + '_qemu_cpu_s_per_gib', (q1 - q0) * GiB / moved)
        if v0:
            time.sleep(0.3)     # the run adds its times as it ends
            v1 = self.vb_times(vm)
            for key in v0:
                if key.startswith(what + '_') and key in v1 and (
                        key[:-3] + '_ms') in METRIC_INFO:
                    rec(key[:-3] + '_ms', (v1[key] - v0[key]) / 1000.0)
        return t

    def touch_most(self, vm, name):
        """Touch the largest of the sizes to touch that the guest can map;
        return (MiB, seconds)."""
        for mib in self.sz['touch']:
            rc, secs, out = self.touch(vm, mib)
            if rc == 0:
                return mib, secs
            log('%s: vb_touch -m %d failed (rc %d), trying less' % (
                name, mib, rc))
        raise Broken('guest could not touch even %d MiB: %s' % (
            mib, out.strip()))

    def run_cycle(self, kname, kver, driver, rep):
        sz = self.sz
        name = '%s-cycle-%s-r%d' % (kname, driver, rep)
        trace = os.path.join(self.logs, name.replace(' ', '-') + '.trace')
        vm = self.boot(kname, driver, name, extra_qemu_args=[
            '-msg', 'timestamp=on',
            '-trace', 'enable=virtio_queue_notify,file=' + trace])
        rec = lambda m, v: self.record(kname, driver, rep, m, v)  # noqa
        try:
            rec('boot_s', vm.boot_time)
            mem = vm.mem_bytes
            if vm.query_balloon() != mem:
                raise Broken('balloon not empty after boot')
            mib, secs = self.touch_most(vm, name)
            rec('touch_mib', mib)
            rec('touch_s', secs)
            rss0, thp0 = vm.rss_kib(), vm.anon_huge_kib()
            rec('rss_before_mib', rss0 / 1024)
            rec('thp_before_mib', thp0 / 1024)

            target = sz['inflate_to'] * MiB
            ballooned = mem - vm.expected_actual(target)
            t = self.timed_move(vm, target, 'inflate', rec)
            rec('inflate_us_per_page', t * 1e6 / (ballooned >> 12))
            time.sleep(0.3)
            rss1 = vm.rss_kib()
            rec('rss_after_inflate_mib', rss1 / 1024)
            rec('rss_returned_ratio', (rss0 - rss1) * 1024.0 / ballooned)

            td = self.timed_move(vm, mem, 'deflate', rec)
            rc, secs, out = self.touch(vm, mib)
            if rc != 0:
                raise Broken('re-touch of %d MiB after deflate failed: %s'
                             % (mib, out.strip()))
            rec('retouch_s', secs)
            rss2, thp2 = vm.rss_kib(), vm.anon_huge_kib()
            rec('rss_after_cycle_mib', rss2 / 1024)
            rec('thp_after_mib', thp2 / 1024)
            rec('thp_survival', thp2 / thp0 if thp0 else 0.0)
            busy_from = time.time()
            self.busy_inflate(vm, name, target, rec)
            bad = self.console_problems(vm)
            if bad:
                raise Broken('guest console: ' + bad[0])
            log('%s: inflate %.3f s, deflate %.3f s, RSS %d->%d MiB, '
                'THP %d->%d MiB' % (name, t, td, rss0 >> 10, rss1 >> 10,
                                    thp0 >> 10, thp2 >> 10))
        finally:
            vm.close()
        n = self.count_notifies(trace, busy_from)
        if not n.get(0) or not n.get(1):
            self.notes.append('%s: no virtio_queue_notify events traced '
                              '(QEMU trace backend?)' % name)
            return
        rec('inflate_notify_per_gib', n[0] * GiB / ballooned)
        rec('deflate_notify_per_gib', n[1] * GiB / ballooned)

    def busy_inflate(self, vm, name, target, rec):
        """Inflate to target beside vb_spin, a spinning thread per vCPU:
        record the inflation's time and the vCPU seconds of the program's
        work it cost (the work missing from its samples after SPIN_BASE_S,
        against its rate before)."""
        vm.sh_ok('vb_spin -t %g > /tmp/spin.out 2>&1 &' % SPIN_S)
        time.sleep(SPIN_BASE_S + 0.5)
        t = self.move(vm, target, 'inflate beside vb_spin')
        rec('busy_inflate_s', t)
        deadline = time.monotonic() + SPIN_S + 60
        while True:
            out = vm.sh_ok('cat /tmp/spin.out')
            done = re.search(r'^done (\d+) ', out, re.M)
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
        if not done:
            raise Broken('vb_spin did not finish: ' + out.strip()[-200:])
        samples, last = [], 0.0
        for ts, n in re.findall(r'^sample (\S+) (\d+)$', out, re.M):
            samples.append((last, float(ts), int(n)))
            last = float(ts)
        base = [n / (b - a) for a, b, n in samples
                if a >= SPIN_WARM_S and b <= SPIN_BASE_S and b > a]
        if not base or SPIN_BASE_S + 0.5 + t > SPIN_S - 1:
            self.notes.append('%s: beside vb_spin: %s' % (
                name, 'no samples before the inflation' if not base else
                'the inflation (%.1f s) outlasted the program' % t))
            return
        rate = statistics.median(base)
        missing = sum(rate * (b - a) - n for a, b, n in samples
                      if a >= SPIN_BASE_S)
        lost = missing / rate * int(done.group(1))
        rec('busy_lost_cpu_s', lost)
        log('%s: beside vb_spin: inflated in %.3f s, the program lost %.2f '
            'vCPU s' % (name, t, lost))

    def run_ioa0(self, kname, kver, driver, rep):
        """The cycle's inflation in a guest booted with init_on_alloc=0."""
        name = '%s-ioa0-%s-r%d' % (kname, driver, rep)
        vm = self.boot(kname, driver, name, append='init_on_alloc=0')
        try:
            self.touch_most(vm, name)
            t = self.move(vm, self.sz['inflate_to'] * MiB,
                          'inflate (init_on_alloc=0)')
            self.record(kname, driver, rep, 'ioa0_inflate_s', t)
            bad = self.console_problems(vm)
            if bad:
                raise Broken('guest console: ' + bad[0])
        finally:
            vm.close()

    def run_pressure(self, kname, kver, driver, rep):
        sz = self.sz
        name = '%s-pressure-%s-r%d' % (kname, driver, rep)
        vm = self.boot(kname, driver, name, balloon_opts='deflate-on-oom=on')
        try:
            rec = lambda m, v: self.record(kname, driver, rep, m, v)  # noqa
            target = sz['pressure_to'] * MiB
            if driver != 'none':
                t0 = time.monotonic()
                vm.balloon(target)
                if self.wait_actual(vm, target, t0, 180) is None:
                    raise Broken('balloon to %d MiB never reached (at %d MiB)'
                                 % (sz['pressure_to'],
                                    vm.query_balloon() >> 20))
            oom0, con0 = self.oom_kills(vm)
            t0 = time.monotonic()
            rc, secs, out = self.touch(vm, sz['pressure_touch'], timeout=300)
            wall = time.monotonic() - t0
            t_end = time.monotonic()
            rec('pressure_prog_s', secs if secs is not None else INF)
            rec('pressure_wall_s', wall)
            back = None
            deflated = 0
            if driver != 'none':
                want = vm.expected_actual(target)
                deflated = (vm.query_balloon() - want) >> 20
                back = self.wait_actual(vm, target, t_end, sz['giveup'])
                rec('pressure_deflated_mib', deflated)
                rec('pressure_back_s', back if back is not None else INF)
            oom1, con1 = self.oom_kills(vm)
            kills = max(oom1 - oom0, con1 - con0)
            rec('pressure_oom_kills', kills)
            bad = self.console_problems(vm, pressure=True)
            if bad:
                raise Broken('guest console: ' + bad[0])
            log('%s: program rc %d %s s, OOM kills %d, deflated %d MiB, '
                'back at target %s' % (
                    name, rc, '%.2f' % secs if secs is not None else '-',
                    kills, deflated,
                    '-' if driver == 'none' else
                    ('%.2f s' % back if back is not None else
                     'never (%.0f s)' % sz['giveup'])))
        finally:
            vm.close()

    def run_resident(self, kname, kver, driver):
        sz = self.sz
        name = '%s-resident-%s' % (kname, driver)
        trace = os.path.join(self.out, name + '.trace')
        args = ['-trace', 'enable=virtio_balloon_handle_output,file=' + trace]
        vm = self.boot(kname, driver, name, extra_qemu_args=args)
        try:
            rec = lambda m, v: self.record(kname, driver, 0, m, v)  # noqa
            mib = sz['touch'][0]
            for mib in sz['touch']:
                rc, _, out = self.touch(vm, mib)
                if rc == 0:
                    break
            else:
                raise Broken('guest could not touch memory: ' + out.strip())
            addr = vm.guest_ram_addr()
            if addr is None:
                self.notes.append('%s: resident check skipped: guest RAM '
                                  'mapping not found' % name)
                return
            r0, rss0 = vm.resident_pages(addr), vm.rss_kib()
            target = sz['inflate_to'] * MiB
            t0 = time.monotonic()
            vm.balloon(target)
            if self.wait_actual(vm, target, t0, 180) is None:
                raise Broken('inflate never reached target (traced guest)')
            time.sleep(0.3)
            r1, rss1 = vm.resident_pages(addr), vm.rss_kib()
        finally:
            vm.close()
        pfns = set()
        try:
            with open(trace) as f:
                for line in f:
                    m = re.search(r'gpa: 0x([0-9a-f]+)', line)
                    if m:
                        pfns.add(int(m.group(1), 16) >> 12)
        finally:
            try:
                os.unlink(trace)
            except OSError:
                pass
        want = (vm.mem_bytes >> 12) - (vm.expected_actual(target) >> 12)
        if len(pfns) != want:
            self.notes.append('%s: resident check skipped: traced %d PFNs, '
                              'expected %d (QEMU trace backend?)' % (
                                  name, len(pfns), want))
            return
        res = pfns & r0
        rec('resident_ballooned_mib', len(res) / 256)
        rec('never_resident_mib', (len(pfns) - len(res)) / 256)
        rec('still_resident_mib', len(pfns & r1) / 256)
        rec('resident_returned_ratio',
            (rss0 - rss1) / 4.0 / len(res) if res else 0.0)
        log('%s: %d MiB ballooned, %d MiB of it host-resident, %d MiB '
            'still resident after; RSS drop %d MiB' % (
                name, len(pfns) >> 8, len(res) >> 8, len(pfns & r1) >> 8,
                (rss0 - rss1) >> 10))

    # ------------------------------------------------------------------
    def hugepage_setup(self):
        """Make room for a hugetlb-backed guest; return (old nr_hugepages
        or None if unchanged, reason to skip or None)."""
        need = self.sz['mem'] // 2
        try:
            mi = host_meminfo()
        except OSError as e:
            return None, 'cannot read /proc/meminfo: %s' % e
        if mi.get('Hugepagesize') != 2048:
            return None, 'host huge page size is %s kB, not 2048' % (
                mi.get('Hugepagesize'))
        if mi.get('HugePages_Free', 0) >= need:
            return None, None
        path = '/proc/sys/vm/nr_hugepages'
        try:
            with open(path) as f:
                old = int(f.read())
            with open(path, 'w') as f:
                f.write('%d\n' % max(old + need, self.sz['huge_pages']))
        except OSError as e:
            return None, 'cannot raise %s: %s' % (path, e)
        free = host_meminfo().get('HugePages_Free', 0)
        if free < need:
            self.hugepage_restore(old)
            return None, ('host gave only %d free 2 MiB pages, %d needed'
                          % (free, need))
        return old, None

    @staticmethod
    def hugepage_restore(old):
        if old is None:
            return
        try:
            with open('/proc/sys/vm/nr_hugepages', 'w') as f:
                f.write('%d\n' % old)
        except OSError as e:
            log('could not restore nr_hugepages to %d: %s' % (old, e))

    def run_hugepage(self, kname, kver, driver):
        sz = self.sz
        name = '%s-hugetlb-%s' % (kname, driver)
        args = ['-object', 'memory-backend-memfd,id=mem,size=%dM,hugetlb=on,'
                'hugetlbsize=2M' % sz['mem'],
                '-machine', 'memory-backend=mem']
        vm = self.boot(kname, driver, name, extra_qemu_args=args)
        try:
            rec = lambda m, v: self.record(kname, driver, 0, m, v)  # noqa
            mib = sz['touch'][0]
            for mib in sz['touch']:
                rc, _, out = self.touch(vm, mib)
                if rc == 0:
                    break
            else:
                raise Broken('hugetlb guest could not touch memory: '
                             + out.strip())
            pid = vm.proc.pid
            st0, mi0 = proc_status(pid), host_meminfo()
            target = vm.mem_bytes - sz['huge_inflate'] * MiB
            ballooned = vm.mem_bytes - vm.expected_actual(target)
            t0 = time.monotonic()
            vm.balloon(target)
            t = self.wait_actual(vm, target, t0, 180)
            if t is None:
                raise Broken('hugetlb guest: inflate never reached target')
            time.sleep(0.3)
            st1, mi1 = proc_status(pid), host_meminfo()
            freed = (mi1['HugePages_Free'] - mi0['HugePages_Free']) * 2
            rec('huge_inflate_s', t)
            rec('huge_pool_freed_mib', freed)
            rec('huge_hugetlb_drop_mib', (st0.get('HugetlbPages', 0) -
                                          st1.get('HugetlbPages', 0)) / 1024)
            rec('huge_vmrss_drop_mib', (st0.get('VmRSS', 0) -
                                        st1.get('VmRSS', 0)) / 1024)
            rec('huge_returned_ratio', freed * MiB / ballooned)
            t0 = time.monotonic()
            vm.balloon(vm.mem_bytes)
            if self.wait_actual(vm, vm.mem_bytes, t0, 180) is None:
                raise Broken('hugetlb guest: deflate never reached target')
            bad = self.console_problems(vm)
            if bad:
                raise Broken('guest console: ' + bad[0])
            log('%s: inflate %d MiB in %.3f s; host pool freed %d MiB, '
                'HugetlbPages %d -> %d MiB, VmRSS %d -> %d MiB' % (
                    name, ballooned >> 20, t, freed,
                    st0.get('HugetlbPages', 0) >> 10,
                    st1.get('HugetlbPages', 0) >> 10,
                    st0.get('VmRSS', 0) >> 10, st1.get('VmRSS', 0) >> 10))
        finally:
            vm.close()

    def hugepage_all(self):
        if self.args.no_hugepage:
            for kname, _ in self.kernels:
                self.huge_status[kname] = 'skipped: --no-hugepage'
            return
        old, reason = self.hugepage_setup()
        try:
            for kname, kver in self.kernels:
                if not self.primary(kname):
                    self.huge_status[kname] = ('runs on QEMU %s only'
                                               % self.qemus[0])
                    continue
                if reason:
                    self.huge_status[kname] = 'skipped: ' + reason
                    continue
                errs = []
                for driver in DRIVERS:
                    try:
                        self.run_hugepage(kname, kver, driver)
                    except (Broken, VMError, OSError) as e:
                        # A guest that will not boot on a memfd backend is
                        # a limit of the set-up; a driver that breaks is
                        # a failure.
                        if isinstance(e, Broken):
                            self.fail('%s hugetlb %s' % (kname, driver), e)
                        errs.append('%s: %s' % (driver, str(e)[:200]))
                self.huge_status[kname] = ('ran' if not errs else
                                           'errors: ' + '; '.join(errs))
        finally:
            self.hugepage_restore(old)
        if reason:
            print('hugepage-backed: skipped: %s' % reason)

    # ------------------------------------------------------------------
    def run_migrate(self, kname, kver, driver, rep, hints=True):
        name = '%s-migrate-%s%s-r%d' % (kname, driver,
                                        '' if hints else '-nohint', rep)
        vm = self.boot(kname, driver, name, qemu=MIGRATE_QEMU,
                       balloon_opts=HINT_OPTS if hints else '')
        try:
            for mib in self.sz['touch']:
                rc, _, out = self.touch(vm, mib)
                if rc == 0:
                    break
            else:
                raise Broken('could not touch the guest\'s memory: '
                             + out.strip()[-200:])
            t0 = time.monotonic()
            info = vm.migrate(bandwidth=MIGRATE_BW)
            sent = info['ram']['transferred'] / MiB
            self.record(kname, driver, rep, 'migrate_mib' if hints
                        else 'migrate_nohint_mib', sent)
            bad = self.console_problems(vm)
            if bad:
                raise Broken('guest console: ' + bad[0])
            log('%s: touched and freed %d MiB, migrated in %.1f s, %.0f MiB '
                'sent' % (name, mib, time.monotonic() - t0, sent))
        finally:
            vm.close()

    def guarded(self, what, fn, *a):
        try:
            fn(*a)
        except (Broken, VMError, OSError, subprocess.SubprocessError) as e:
            self.fail(what, e)

    def run(self):
        reps = self.args.reps
        migrated = set()
        for kname, kver in self.kernels:
            log('%s (%s): %d rep(s)' % (kname, kver, reps))
            primary = self.primary(kname)
            for rep in range(reps):
                # ABBA: in-tree first on even repetitions, vballoon on odd.
                order = DRIVERS if rep % 2 == 0 else DRIVERS[::-1]
                self.guarded('%s host r%d' % (kname, rep), self.run_host,
                             kname, rep)
                for driver in order:
                    self.guarded('%s cycle %s r%d' % (kname, driver, rep),
                                 self.run_cycle, kname, kver, driver, rep)
                for driver in order:
                    self.guarded('%s ioa0 %s r%d' % (kname, driver, rep),
                                 self.run_ioa0, kname, kver, driver, rep)
                if self.args.no_pressure or not primary:
                    continue
                for driver in order:
                    self.guarded('%s pressure %s r%d' % (kname, driver, rep),
                                 self.run_pressure, kname, kver, driver, rep)
            if not self.args.no_pressure and primary:
                self.guarded('%s pressure none' % kname, self.run_pressure,
                             kname, kver, 'none', 0)
            if self.args.quick or self.args.no_diag:
                continue
            if primary:
                for driver in DRIVERS:
                    self.guarded('%s resident %s' % (kname, driver),
                                 self.run_resident, kname, kver, driver)
            # Migration runs on QEMU 10.0 whatever --qemu says: once per
            # kernel, under the configuration of 10.0 if there is one.
            k = self.conf[kname][0]
            if k in migrated or (self.conf[kname][2] != MIGRATE_QEMU and
                                 MIGRATE_QEMU in self.qemus):
                continue
            migrated.add(k)
            for rep in range(self.args.migrate_reps):
                order = DRIVERS if rep % 2 == 0 else DRIVERS[::-1]
                for driver in order:
                    self.guarded('%s migrate %s r%d' % (kname, driver, rep),
                                 self.run_migrate, kname, kver, driver, rep)
            self.guarded('%s migrate vballoon, no hints' % kname,
                         self.run_migrate, kname, kver, 'vballoon', 0, False)
        self.hugepage_all()

    # ------------------------------------------------------------------
    def migrate_pairs(self, kname):
        """vballoon/in-tree bytes sent, per repetition of both."""
        by = {}
        for r in self.raw:
            if r['kernel'] == kname and r['metric'] == 'migrate_mib':
                by.setdefault(r['rep'], {})[r['driver']] = r['value']
        return [d['vballoon'] / d['inkernel'] for _, d in sorted(by.items())
                if d.get('inkernel') and 'vballoon' in d]

    def values(self, kname, driver, metric):
        return [r['value'] for r in self.raw if r['kernel'] == kname and
                r['driver'] == driver and r['metric'] == metric]

    def stat(self, kname, driver, metric):
        v = self.values(kname, driver, metric)
        if not v:
            return None
        return statistics.median(v), min(v), max(v), len(v)

    def med(self, kname, driver, metric):
        s = self.stat(kname, driver, metric)
        return s[0] if s else None

    def write_csv(self):
        with open(os.path.join(self.out, 'raw.csv'), 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['kernel', 'release', 'qemu', 'driver', 'rep',
                        'metric', 'value'])
            for r in self.raw:
                w.writerow(list(self.conf[r['kernel']]) + [
                    r['driver'], r['rep'], r['metric'], repr(r['value'])])
        with open(os.path.join(self.out, 'bench.csv'), 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['kernel', 'release', 'qemu', 'driver', 'metric',
                        'n', 'median', 'min', 'max',
                        'ratio_vballoon_inkernel'])
            for kname, kver in self.kernels:
                for metric, _, _ in METRICS:
                    for driver in DRIVERS + ('host', 'none'):
                        s = self.stat(kname, driver, metric)
                        if not s:
                            continue
                        ratio = ''
                        if driver == 'vballoon':
                            r = self.ratio(kname, metric)
                            ratio = '' if r is None else repr(r)
                        w.writerow(list(self.conf[kname]) + [
                            driver, metric, s[3], repr(s[0]), repr(s[1]),
                            repr(s[2]), ratio])

    def ratio(self, kname, metric):
        a = self.med(kname, 'vballoon', metric)
        b = self.med(kname, 'inkernel', metric)
        if a is None or b is None:
            return None
        if math.isinf(a) or math.isinf(b) or b <= 0:
            return None
        return a / b

    def table(self):
        lines = []

        def cell(kname, driver, metric):
            s = self.stat(kname, driver, metric)
            if not s:
                return '-'
            if s[3] == 1:
                return fmt_num(metric, s[0])
            return '%s [%s, %s]' % (fmt_num(metric, s[0]),
                                    fmt_num(metric, s[1]),
                                    fmt_num(metric, s[2]))

        for kname, kver in self.kernels:
            lines.append('')
            lines.append('== %s (%s): %d rep(s), guest %d MiB / 2 vCPU, '
                         'inflate to %d MiB, pressure at %d MiB with a '
                         '%d MiB program ==' % (
                             kname, kver, self.args.reps, self.sz['mem'],
                             self.sz['inflate_to'], self.sz['pressure_to'],
                             self.sz['pressure_touch']))
            lines.append('median [min, max]')
            hdr = '%-34s %-28s %-28s %s' % ('metric', 'in-tree', 'vballoon',
                                             'vb/in-tree')
            lines.append(hdr)
            lines.append('-' * len(hdr))
            for metric, label, _ in METRICS:
                a = cell(kname, 'inkernel', metric)
                b = cell(kname, 'vballoon', metric)
                if a == '-' and b == '-':
                    continue
                r = self.ratio(kname, metric)
                rs = '-' if r is None else ('inf' if math.isinf(r) else
                                            '%.2f' % r)
                lines.append('%-34s %-28s %-28s %s' % (label, a, b, rs))
            for metric, label, _ in METRICS:
                for driver, what in (('host', 'host'),
                                     ('none', 'no balloon')):
                    c = cell(kname, driver, metric)
                    if c != '-':
                        lines.append('%-34s %s: %s' % (label, what, c))
            lines.append('hugepage-backed guest: %s' %
                         self.huge_status.get(kname, 'not run'))
        return lines

    def targets(self):
        lines = ['', 'Targets (medians of this run):']
        met = short = 0

        def check(kname, ok, text):
            nonlocal met, short
            if ok is None:
                lines.append('  [n/a ] %s: %s' % (kname, text))
                return
            if ok:
                met += 1
            else:
                short += 1
            lines.append('  [%s] %s: %s' % ('MET ' if ok else 'SHORT', kname,
                                             text))

        for kname, _ in self.kernels:
            m = lambda d, x: self.med(kname, d, x)  # noqa: E731
            vi, ki = m('vballoon', 'inflate_s'), m('inkernel', 'inflate_s')
            if vi and ki:
                check(kname, ki / vi >= 2,
                      'inflate %.2fx faster than in-tree (%.3f s vs %.3f s; '
                      'want >= 2x, goal 2.5x)' % (ki / vi, vi, ki))
            else:
                check(kname, None, 'inflate speed-up: not measured')
            h4 = m('host', 'madv_4k_s')
            v0, k0 = (m('vballoon', 'ioa0_inflate_s'),
                      m('inkernel', 'ioa0_inflate_s'))
            if v0 and h4:
                check(kname, v0 <= 1.3 * h4,
                      'inflate with init_on_alloc=0 %.3f s = %.2fx host '
                      'per-4K MADV_DONTNEED %.3f s (in-tree %s s; want <= '
                      '1.3x)' % (v0, v0 / h4, h4,
                                 fmt_num('ioa0_inflate_s', k0)))
            else:
                check(kname, None, 'inflate vs host limit: not measured')
            if vi and h4:
                lines.append('  [info] %s: inflate with init_on_alloc=1 '
                             '%.2fx the host\'s per-4K MADV_DONTNEED'
                             % (kname, vi / h4))
            for what in ('inflate', 'deflate'):
                metric = what + '_guest_cpu_s_per_gib'
                vc, kc = m('vballoon', metric), m('inkernel', metric)
                if vc is not None and kc:
                    check(kname, vc <= 0.6 * kc,
                          '%s: guest CPU %.3f s/GiB = %.2f of in-tree '
                          '(%.3f; want <= 0.6); QEMU CPU %s vs %s s/GiB, '
                          'host notifications %s vs %s /GiB' % (
                              what, vc, vc / kc, kc,
                              fmt_num(what + '_qemu_cpu_s_per_gib',
                                      m('vballoon', what +
                                        '_qemu_cpu_s_per_gib')),
                              fmt_num(what + '_qemu_cpu_s_per_gib',
                                      m('inkernel', what +
                                        '_qemu_cpu_s_per_gib')),
                              fmt_num(what + '_notify_per_gib',
                                      m('vballoon', what +
                                        '_notify_per_gib')),
                              fmt_num(what + '_notify_per_gib',
                                      m('inkernel', what +
                                        '_notify_per_gib'))))
                else:
                    check(kname, None, '%s guest CPU: not measured' % what)
            vl, kl = (m('vballoon', 'busy_lost_cpu_s'),
                      m('inkernel', 'busy_lost_cpu_s'))
            if vl is not None and kl is not None:
                check(kname, vl <= max(kl, 0.0),
                      'a CPU-bound program beside the inflation lost %.2f '
                      'vCPU s (in-tree %.2f; want no more); inflation '
                      'beside it %s s (in-tree %s s)' % (
                          vl, kl, fmt_num('busy_inflate_s',
                                          m('vballoon', 'busy_inflate_s')),
                          fmt_num('busy_inflate_s',
                                  m('inkernel', 'busy_inflate_s'))))
            else:
                check(kname, None, 'CPU-bound program beside the '
                      'inflation: not measured')
            vd, kd = m('vballoon', 'deflate_s'), m('inkernel', 'deflate_s')
            if vd and kd:
                check(kname, kd / vd >= 3,
                      'deflate %.2fx faster than in-tree (%.3f s vs %.3f s; '
                      'want >= 3x)' % (kd / vd, vd, kd))
                hw = m('host', 'madv_willneed_4k_s')
                if hw:
                    lines.append('  [info] %s: host floor for deflate (QEMU '
                                 'WILLNEED per 4K PFN) %.3f s; 3x in-tree '
                                 'would need %.3f s' % (kname, hw, kd / 3))
            else:
                check(kname, None, 'deflate speed-up: not measured')
            mv, mk = m('vballoon', 'migrate_mib'), m('inkernel', 'migrate_mib')
            mn = m('vballoon', 'migrate_nohint_mib')
            if mv and mk and mn:
                check(kname, mv <= 0.4 * mn and mv <= 1.1 * mk,
                      'migration with hints sent %.0f MiB = %.2f of no hints '
                      '(%.0f MiB; want <= 0.4) and %.2f of in-tree (%.0f '
                      'MiB; want <= 1.1)' % (mv, mv / mn, mn, mv / mk, mk))
            elif self.conf[kname][2] == MIGRATE_QEMU:
                check(kname, None, 'migrated bytes with hints: not measured')
            pairs = self.migrate_pairs(kname)
            if pairs:
                lines.append('  [info] %s: hinted migration, vballoon/in-tree '
                             'sent per repetition: %s' % (kname, ', '.join(
                                 '%.2f' % r for r in pairs)))
            rr = m('vballoon', 'rss_returned_ratio')
            if rr is not None:
                check(kname, rr >= 0.98,
                      'QEMU RSS returned %.3f of the ballooned amount '
                      '(in-tree %s; want >= 0.98)' % (
                          rr, fmt_num('rss_returned_ratio',
                                      m('inkernel', 'rss_returned_ratio'))))
            rv = m('vballoon', 'resident_returned_ratio')
            if rv is not None:
                lines.append('  [info] %s: of the ballooned pages that were '
                             'host-resident, RSS returned %.3f (in-tree '
                             '%s); never-resident ballooned pages: %s MiB '
                             '(in-tree %s MiB)' % (
                                 kname, rv,
                                 fmt_num('resident_returned_ratio',
                                         m('inkernel',
                                           'resident_returned_ratio')),
                                 fmt_num('never_resident_mib',
                                         m('vballoon', 'never_resident_mib')),
                                 fmt_num('never_resident_mib',
                                         m('inkernel',
                                           'never_resident_mib'))))
            ts = m('vballoon', 'thp_survival')
            if ts is not None:
                check(kname, ts >= 0.9,
                      'host THP after the cycle %.1f%% of before (in-tree '
                      '%.1f%%; want >= 90%%)' % (
                          100 * ts, 100 * (m('inkernel', 'thp_survival')
                                           or 0)))
            vp, kp = (m('vballoon', 'pressure_prog_s'),
                      m('inkernel', 'pressure_prog_s'))
            if vp is not None and kp is not None:
                ok = vp <= 0.7 * kp
                check(kname, ok, 'pressure program %s s vs in-tree %s s '
                      '(%s; want <= 0.7x; unballooned %s s)' % (
                          fmt_num('pressure_prog_s', vp),
                          fmt_num('pressure_prog_s', kp),
                          'ratio %.2f' % (vp / kp) if not (
                              math.isinf(vp) or math.isinf(kp)) else
                          'a run failed',
                          fmt_num('pressure_prog_s',
                                  m('none', 'pressure_prog_s'))))
                kills = sum(self.values(kname, 'vballoon',
                                        'pressure_oom_kills'))
                kk = sum(self.values(kname, 'inkernel', 'pressure_oom_kills'))
                check(kname, kills == 0,
                      'pressure OOM kills: %d over %d run(s) (in-tree %d; '
                      'want 0)' % (kills, len(self.values(
                          kname, 'vballoon', 'pressure_oom_kills')), kk))
                vb = m('vballoon', 'pressure_back_s')
                check(kname, vb is not None and vb <= 10,
                      'back at target after pressure: %s (in-tree %s; want '
                      '<= 10 s; given up after %.0f s)' % (
                          fmt_num('pressure_back_s', vb),
                          fmt_num('pressure_back_s',
                                  m('inkernel', 'pressure_back_s')),
                          self.sz['giveup']))
            elif self.primary(kname):
                check(kname, None, 'pressure scenario: not measured')
            hv = m('vballoon', 'huge_pool_freed_mib')
            hk = m('inkernel', 'huge_pool_freed_mib')
            if hv is not None or hk is not None:
                lines.append('  [info] %s: hugetlb-backed guest, %d MiB '
                             'inflated: host pool got back vballoon %s MiB, '
                             'in-tree %s MiB' % (
                                 kname, self.sz['huge_inflate'],
                                 fmt_num('huge_pool_freed_mib', hv),
                                 fmt_num('huge_pool_freed_mib', hk)))
            elif self.primary(kname):
                lines.append('  [info] %s: hugepage-backed: %s' % (
                    kname, self.huge_status.get(kname, 'not run')))
        lines.append('%d target(s) met, %d short' % (met, short))
        return lines

    def plot(self):
        dat = os.path.join(self.out, 'times.dat')
        rows = []
        for kname, _ in self.kernels:
            for metric, what in (('inflate_s', 'inflate'),
                                 ('deflate_s', 'deflate')):
                cols = []
                for driver in DRIVERS:
                    s = self.stat(kname, driver, metric)
                    cols += list(s[:3]) if s else [0, 0, 0]
                rows.append('"%s %s" %s' % (kname, what, ' '.join(
                    '%.6f' % c for c in cols)))
        if not rows:
            return 'no data to plot'
        with open(dat, 'w') as f:
            f.write('# label inkernel_med min max vballoon_med min max\n')
            f.write('\n'.join(rows) + '\n')
        png = os.path.join(self.out, 'bench.png')
        last = 'gnuplot not run'
        for term in ('png', 'pngcairo'):
            script = '\n'.join([
                'set terminal %s noenhanced size 900,540' % term,
                'set output "%s"' % png,
                'set title "Balloon inflate/deflate time, %d MiB, QEMU TCG '
                '(median, min-max)"'
                % (self.sz['mem'] - self.sz['inflate_to']),
                'set ylabel "seconds"',
                'set style data histogram',
                'set style histogram errorbars gap 2 lw 1',
                'set style fill solid 0.6 border -1',
                'set yrange [0:*]',
                'set key top right',
                'set grid ytics',
                'plot "%s" using 2:3:4:xtic(1) title "in-tree virtio_balloon",'
                ' "" using 5:6:7 title "vballoon"' % dat,
            ])
            with open(os.path.join(self.out, 'times.gp'), 'w') as f:
                f.write(script + '\n')
            try:
                p = subprocess.run(['gnuplot'], input=script, text=True,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
            except (OSError, subprocess.SubprocessError) as e:
                return 'gnuplot failed: %s' % e
            if p.returncode == 0 and os.path.getsize(png) > 0:
                return 'plot: %s (terminal %s)' % (png, term)
            last = p.stdout.strip()[-300:]
        return 'plot: no png or pngcairo terminal in gnuplot: %s' % last

    def meta(self):
        qv = []
        for q in self.qemus + ((MIGRATE_QEMU,) if MIGRATE_QEMU not in
                               self.qemus and not self.args.quick else ()):
            try:
                binary, env, _ = qemu_setup(q)
                qv.append(subprocess.run(
                    [binary, '--version'], stdout=subprocess.PIPE, env=env,
                    text=True).stdout.splitlines()[0])
            except (OSError, IndexError, VMError):
                qv.append('%s: unknown' % q)
        try:
            head = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short',
                                   'HEAD'], stdout=subprocess.PIPE,
                                  text=True).stdout.strip()
        except OSError:
            head = 'unknown'
        try:
            dirty = subprocess.run(['git', '-C', ROOT, 'status',
                                    '--porcelain', '--', 'src', 'include',
                                    'Kbuild'], stdout=subprocess.PIPE,
                                   text=True).stdout.strip()
        except OSError:
            dirty = ''
        if dirty:
            head += ' + uncommitted changes in src/include'
        kos = []
        for kname, kver, _ in sorted(set(self.conf.values())):
            if any(k.startswith(kname + ' ') for k in kos):
                continue
            ko = os.path.join(ROOT, 'build', kver, 'vballoon.ko')
            try:
                with open(ko, 'rb') as f:
                    kos.append('%s %s' % (kname, hashlib.sha256(
                        f.read()).hexdigest()[:12]))
            except OSError:
                kos.append('%s missing' % kname)
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            thp = f.read()
        return [
            'date: %s' % datetime.datetime.now().astimezone().isoformat(
                timespec='seconds'),
            'qemu: %s (TCG, thread=multi)' % '; '.join(qv),
            'host: %s, %d CPUs, THP %s' % (os.uname().release,
                                           os.cpu_count(), thp.strip()),
            'kernels: %s' % ', '.join('%s=%s' % k for k in self.kernels),
            'vballoon commit: %s' % head,
            'vballoon.ko sha256: %s' % ', '.join(kos),
            'reps: %d%s' % (self.args.reps, ' (quick)' if self.args.quick
                            else ''),
        ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--kernels', default='K61,K612',
                    help='comma-separated names from kernels.env '
                    '(default K61,K612)')
    ap.add_argument('--qemu', default=','.join(QEMU_VERSIONS),
                    help='comma-separated QEMU versions (default %s; the '
                    'first only with --quick)' % ','.join(QEMU_VERSIONS))
    ap.add_argument('--reps', type=int, default=None,
                    help='repetitions per driver (default 5, --quick 1)')
    ap.add_argument('--quick', action='store_true',
                    help='smoke run: 1 rep, first kernel, 1 GiB guest')
    ap.add_argument('--out', default=None,
                    help='results directory (default build/bench; '
                    'build/bench/quick with --quick, so a smoke run never '
                    'overwrites a full one)')
    ap.add_argument('--migrate-reps', type=int, default=3,
                    help='hinted migrations per kernel and driver '
                    '(default 3)')
    ap.add_argument('--no-pressure', action='store_true')
    ap.add_argument('--no-hugepage', action='store_true')
    ap.add_argument('--no-diag', action='store_true',
                    help='skip the traced resident-page check')
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(ROOT, 'build', 'bench',
                                *(['quick'] if args.quick else []))
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    if args.reps < 1:
        ap.error('--reps must be at least 1')
    if args.migrate_reps < 1:
        ap.error('--migrate-reps must be at least 1')

    env = load_kernels_env()
    names = [n.strip() for n in args.kernels.split(',') if n.strip()]
    for n in names:
        if n not in env:
            ap.error('unknown kernel %s (kernels.env has %s)' % (
                n, ', '.join(sorted(env))))
    qemus = tuple(q.strip() for q in args.qemu.split(',') if q.strip())
    for q in qemus:
        if q not in QEMU_VERSIONS:
            ap.error('unknown QEMU %s (one of %s)' % (
                q, ', '.join(QEMU_VERSIONS)))
    if not qemus:
        ap.error('--qemu names no QEMU')
    if args.quick:
        names, qemus = names[:1], qemus[:1]
    kernels = [(n, env[n]) for n in names]

    b = Bench(args, kernels, qemus)
    if not os.access(b.madv, os.X_OK) or (
            os.path.getmtime(b.madv) <
            os.path.getmtime(os.path.join(HERE, 'madv_bench.c'))):
        os.makedirs(os.path.dirname(b.madv), exist_ok=True)
        subprocess.run(['gcc', '-O2', '-Wall', '-o', b.madv,
                        os.path.join(HERE, 'madv_bench.c')], check=True)

    def on_term(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_term)

    t0 = time.monotonic()
    meta = b.meta()
    for line in meta:
        log(line)
    b.run()
    b.write_csv()
    plot = b.plot()
    out = meta + ['runtime: %.0f s' % (time.monotonic() - t0)]
    out += b.table() + b.targets() + ['', plot]
    if b.notes:
        out += [''] + b.notes
    if b.failures:
        out += ['', 'FUNCTIONAL FAILURES (%d):' % len(b.failures)]
        out += ['  ' + f for f in b.failures]
    out.append('results: %s/{bench.csv,raw.csv,summary.txt}' % b.out)
    text = '\n'.join(out)
    print(text)
    with open(os.path.join(b.out, 'summary.txt'), 'w') as f:
        f.write(text + '\n')
    with open(os.path.join(b.out, 'meta.txt'), 'w') as f:
        f.write('\n'.join(meta) + '\n')
    return 1 if b.failures else 0


if __name__ == '__main__':
    sys.exit(main())
