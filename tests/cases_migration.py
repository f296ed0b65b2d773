# SPDX-License-Identifier: GPL-2.0
"""Live migration: a ballooned guest moves to a new QEMU (scripts/vm.py
VM.migrate(): the same command line plus -incoming on a Unix socket)
and arrives whole."""

import time

from run import test, log, TestSkip, RAM
from vm import GiB, MiB

BUF_MIB = 256


def check_resident(ctx, v, ballooned, what):
    """The host's eyes: of the guest's RAM in QEMU (pagemap), no more
    than what is outside the balloon (+ 64 MiB) is present."""
    addr = v.guest_ram_addr()
    ctx.require(addr is not None, '%s: guest RAM mapping not found in '
                'QEMU' % what)
    res = len(v.resident_pages(addr)) * 4096
    log('%s: %d MiB of the guest\'s RAM present in QEMU (pagemap), %d MiB '
        'outside the balloon' % (what, res // MiB,
                                 (v.mem_bytes - ballooned) // MiB))
    ctx.check(res <= v.mem_bytes - ballooned + 64 * MiB, '%s: expected at '
              'most %d MiB of guest RAM present in QEMU, got %d MiB'
              % (what, (v.mem_bytes - ballooned) // MiB + 64, res // MiB))


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
    if ctx.driver != 'vballoon':
        raise TestSkip('vballoon counters only')
    with ctx.boot() as v:
        ctx.load(v)
        ctx.require(ctx.touch_most(v), 'could not touch the guest\'s memory '
                    'before inflating')
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

