# SPDX-License-Identifier: GPL-2.0
"""Live migration: a ballooned guest moves to a new QEMU (scripts/vm.py
VM.migrate(): the same command line plus -incoming on a Unix socket)
and arrives whole."""

import contextlib
import time

from run import (test, log, TestSkip, TestFail, RAM, start_program,
                 wait_program)
from vm import GiB, MiB

BUF_MIB = 256
# A program that needs ~500 MiB of a 1 GiB balloon back.
PROGRAM_MIB = 1200


@contextlib.contextmanager
def touched_guest(ctx):
    """A booted guest with vballoon loaded that touched most of its memory
    (something for the host to get back)."""
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')
    with ctx.boot() as v:
        ctx.load(v)
        ctx.require(ctx.touch_most(v), 'could not touch the guest\'s memory '
                    'before inflating')
        yield v


def present_mib(v):
    """MiB of the guest's RAM present in the QEMU that runs it."""
    addr = v.guest_ram_addr()
    if addr is None:
        raise TestFail('guest RAM mapping not found in QEMU')
    return len(v.resident_pages(addr)) * 4096 // MiB


def recycle_on_destination(ctx, v, ballooned, what):
    """After a migration in mid-flight: how much of the guest's RAM the
    destination holds (logged; pages the balloon took on the source after
    they were sent stay present there, as QEMU's discard on the source
    does not reach the destination), then a deflation and a re-inflation
    on the destination, after which no more than what lies outside the
    balloon (+ 64 MiB) may be present."""
    log('%s: %d MiB of the guest\'s RAM present in QEMU before the '
        'balloon cycles on the destination, %d MiB outside the balloon'
        % (what, present_mib(v), (v.mem_bytes - ballooned) // MiB))
    v.balloon(v.mem_bytes)
    ctx.wait_balloon(v, v.mem_bytes, 120, '%s: deflate' % what)
    v.balloon(v.mem_bytes - ballooned)
    ctx.require(ctx.wait_balloon(v, v.mem_bytes - ballooned, 180,
                                 '%s: re-inflate' % what) is not None,
                '%s: re-inflation did not complete' % what)
    ctx.check_views(v, '%s, re-inflated' % what, want=ballooned)
    check_resident(ctx, v, ballooned, '%s, re-inflated' % what)


def check_resident(ctx, v, ballooned, what):
    """The host's eyes: of the guest's RAM in QEMU (pagemap), no more
    than what is outside the balloon (+ 64 MiB) is present."""
    res = present_mib(v)
    outside = (v.mem_bytes - ballooned) // MiB
    log('%s: %d MiB of the guest\'s RAM present in QEMU (pagemap), %d MiB '
        'outside the balloon' % (what, res, outside))
    ctx.check(res <= outside + 64, '%s: expected at most %d MiB of guest '
              'RAM present in QEMU, got %d MiB' % (what, outside + 64, res))


@test('migrate_ballooned', timeout=900)
def t_migrate_ballooned(ctx):
    """A guest that touched 1.5 GiB, with a 1 GiB balloon and a 256 MiB
    buffer of random bytes in tmpfs, migrates to a new QEMU: the source
    sends no more than the memory outside the balloon as normal pages
    (the ballooned GiB goes as zero pages), the destination's
    query-balloon, current_kb and held_pages show the same 1 GiB, the
    buffer's checksum matches, the console stays clean, and the balloon
    works on the destination: it deflates, the guest touches its memory
    again, and it inflates to 1 GiB again.  Before the migration, after
    it and after the re-inflation, no more of the guest's RAM than lies
    outside the balloon (+ 64 MiB) is present in the QEMU running the
    guest (pagemap).  Not RSS on the destination: memory the migration
    found zero was never made present there, so a balloon that takes
    some of it lowers RSS by less than its size."""
    with touched_guest(ctx) as v:
        v.balloon(RAM - GiB)
        ctx.require(ctx.wait_balloon(v, RAM - GiB, 120, 'inflate')
                    is not None, 'inflate did not complete')
        v.sh_ok('dd if=/dev/urandom of=/tmp/buf bs=1M count=%d 2>/dev/null'
                % BUF_MIB, 300)
        sum0 = v.sh_ok('md5sum /tmp/buf').split()[0]
        ctx.check_views(v, 'before the migration', want=GiB)
        check_resident(ctx, v, GiB, 'source')
        rss_src = v.rss_kib()

        t0 = time.monotonic()
        info = v.migrate()
        ram = info.get('ram', {})
        page = ram.get('page-size', 4096)
        normal = ram.get('normal', 0) * page
        log('migrated in %.1f s (QEMU says %s ms, downtime %s ms): %d MiB '
            'transferred, %d normal pages (%d MiB), %d zero pages; QEMU RSS '
            'source %d MiB, destination %d MiB'
            % (time.monotonic() - t0, info.get('total-time'),
               info.get('downtime'), ram.get('transferred', 0) // MiB,
               ram.get('normal', 0), normal // MiB,
               ram.get('duplicate', 0), rss_src // 1024,
               v.rss_kib() // 1024))
        ctx.check(normal <= RAM - 0.9 * GiB, 'the source should send at '
                  'most the memory outside the 1 GiB balloon (+10 %%) as '
                  'normal pages, sent %d MiB' % (normal // MiB))
        ctx.check_views(v, 'after the migration', want=GiB)
        check_resident(ctx, v, GiB, 'destination')
        sum1 = v.sh_ok('md5sum /tmp/buf').split()[0]
        ctx.check(sum1 == sum0, 'the %d MiB buffer changed in the '
                  'migration: md5 %s -> %s' % (BUF_MIB, sum0, sum1))
        v.sh_ok('rm /tmp/buf')

        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate on the destination')
        ctx.check_views(v, 'deflated on the destination', want=0)
        ctx.require(ctx.touch_most(v), 'memory not usable again on the '
                    'destination')
        rss0 = v.rss_kib()
        v.balloon(RAM - GiB)
        ctx.require(ctx.wait_balloon(v, RAM - GiB, 120, 're-inflate on the '
                                     'destination') is not None,
                    're-inflation did not complete')
        log('destination: QEMU RSS %d -> %d MiB re-inflating to 1 GiB'
            % (rss0 // 1024, v.rss_kib() // 1024))
        check_resident(ctx, v, GiB, 'destination, re-inflated')
        ctx.check_views(v, 're-inflated on the destination', want=GiB)
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')


@test('migrate_inflating', timeout=900, qemu='10.0')
def t_migrate_inflating(ctx):
    """Migration while the balloon moves.  A guest that touched 1.5 GiB
    is asked for a 1.5 GiB balloon and migrates at once: on the
    destination the balloon reaches the target and its three views
    agree.  Then, with DEFLATE_ON_OOM, a 1 GiB balloon and a 1200 MiB
    program that needs part of it back, migrating while the shrinker
    deflates: the program completes without an OOM kill and the balloon
    goes back to 1 GiB on the destination.  Each time the destination
    then deflates and inflates again, after which no more of the guest's
    RAM than lies outside the balloon (+ 64 MiB) is present in QEMU:
    pages the balloon took on the source after the migration had sent
    them stay present on the destination until then (logged).  On QEMU
    10.0 only: QEMU 7.2 under TCG corrupted a guest that wrote memory while it
    migrated, with no balloon driver loaded too (tests/README.md)."""
    with touched_guest(ctx) as v:
        v.balloon(RAM - 1536 * MiB)
        time.sleep(0.5)
        before = RAM - v.query_balloon()
        info = v.migrate()
        log('migrated %d MiB into a 1.5 GiB inflation (%d MiB ballooned '
            'when it started, %d MiB when it ended); %d normal pages'
            % (info['ram']['transferred'] // MiB, before // MiB,
               (RAM - v.query_balloon()) // MiB, info['ram']['normal']))
        ctx.require(ctx.wait_balloon(v, RAM - 1536 * MiB, 180, 'inflate on '
                                     'the destination') is not None,
                    'the destination did not reach the target')
        ctx.check_views(v, 'inflated on the destination', want=1536 * MiB)
        recycle_on_destination(ctx, v, 1536 * MiB, 'migrated inflating')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')

    with ctx.boot(balloon_opts='deflate-on-oom=on') as v:
        ctx.load(v)
        v.balloon(RAM - GiB)
        ctx.require(ctx.wait_balloon(v, RAM - GiB, 120, 'inflate')
                    is not None, 'inflate did not complete')
        oom0 = v.vmstat().get('oom_kill', 0)
        start_program(v, 'p', PROGRAM_MIB)
        time.sleep(2)
        info = v.migrate()
        log('migrated %d MiB while a %d MiB program took memory back '
            '(balloon %d MiB)' % (info['ram']['transferred'] // MiB,
                                  PROGRAM_MIB,
                                  (RAM - v.query_balloon()) // MiB))
        wait_program(ctx, v, 'p', 'the %d MiB program' % PROGRAM_MIB)
        oom1 = v.vmstat().get('oom_kill', 0)
        ctx.check(oom1 == oom0, 'expected no OOM kill, oom_kill %d -> %d'
                  % (oom0, oom1))
        s = ctx.vb_stats(v)
        log('given back under pressure: %d MiB (pressure_pages)'
            % (s.get('pressure_pages', 0) // 256))
        ctx.check(s.get('pressure_pages', 0) > 0, 'expected the shrinker '
                  'to give pages back (pressure_pages)')
        ctx.require(ctx.wait_balloon(v, RAM - GiB, 300, 'back to 1 GiB on '
                                     'the destination') is not None,
                    'the balloon did not go back to 1 GiB')
        ctx.check_views(v, 'back to 1 GiB on the destination', want=GiB)
        recycle_on_destination(ctx, v, GiB, 'migrated under pressure')
        v.balloon(RAM)
        ctx.wait_balloon(v, RAM, 120, 'deflate')
