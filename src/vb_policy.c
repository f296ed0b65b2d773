// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: the policy, which decides how big the balloon should be.
 *
 * Target: the larger of the host's num_pages and the admin's target_kb,
 * never past the floor.  The floor is memory the guest can still use:
 * the balloon takes no page that would leave MemAvailable below floor_kb,
 * keeps free blocks of order >= VB_KEEP_ORDER for kernel stacks and page
 * tables, and gives memory back when the guest's own use pushes its
 * usable memory (MemAvailable plus the per-CPU free lists) below the
 * floor.  It grows only while MemAvailable is above floor + 2 * slack and
 * gives back only below the floor, each time to floor + slack, so that a
 * workload that wobbles does not make it inflate and deflate in turn;
 * after giving memory back it waits holdoff_ms before growing.
 *
 * Pressure (only with DEFLATE_ON_OOM): the shrinker in vb_shrink.c gives
 * pages back when the guest is really short and reports each such
 * deflation here (vb_policy_pressure()).
 *
 * After pressure the balloon goes back to its target by itself: it holds
 * off for holdoff after the last pressure deflation, then re-inflates in
 * steps.  Pressure that comes back after a re-inflation doubles the
 * hold-off (up to VB_HOLDOFF_MAX), so the balloon does not oscillate; a
 * minute without pressure resets it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/swap.h>
#include <linux/vmstat.h>

#include "vballoon.h"
#include "vb_trace.h"

/*
 * Default floor: a share of RAM for the guest's own work, the kernel's
 * min watermarks (its own estimate of what it must always be able to
 * allocate: it grows with the square root of RAM, and with THP) and a
 * little per CPU (per-CPU page lists and slab caches, the stacks and
 * page tables of the tasks a CPU runs).
 */
#define VB_FLOOR_RAM_SHARE	32
#define VB_FLOOR_PER_CPU	(SZ_2M >> PAGE_SHIFT)
/* Hysteresis around the floor: floor / 16, at least 4 MiB. */
#define VB_FLOOR_SLACK_MIN	(SZ_4M >> PAGE_SHIFT)
#define VB_FLOOR_SLACK_SHIFT	4
/* How often a held balloon checks the guest's usable memory. */
#define VB_FLOOR_POLL		HZ
/* Single pages are taken only while blocks of this order stay free. */
#define VB_KEEP_ORDER		3
#define VB_HOLDOFF_DEFAULT	(3 * HZ)
#define VB_HOLDOFF_MAX		(60 * HZ)
#define VB_PRESSURE_QUIET	(60 * HZ)
/* Re-inflation after pressure: this many pages per step, a step this often. */
#define VB_REINFLATE_STEP	(SZ_64M >> PAGE_SHIFT)
#define VB_REINFLATE_EVERY	(HZ / 4)

/*
 * Guest RAM the balloon is measured against: what the kernel manages now
 * plus what the balloon took out of it.
 */
unsigned long vb_guest_ram(struct vballoon *vb)
{
	unsigned long ram = totalram_pages();

	if (vb->adjust_managed)
		ram += READ_ONCE(vb->nr_held);
	return ram;
}

/* What the page allocator tells about free memory, summed over zones. */
struct vb_mem {
	unsigned long min;		/* min watermarks */
	unsigned long high;		/* high watermarks */
	unsigned long pcp;		/* pages on per-CPU free lists */
	unsigned long keep_free;	/* free pages in blocks >= VB_KEEP_ORDER */
	unsigned long big_free;		/* free pages in blocks >= a chunk */
};

/*
 * Read without the zone locks: every figure is a snapshot that may be a
 * little stale, which is all a policy needs.  The per-CPU lists cost a
 * walk over every CPU, so only callers that use m->pcp ask for them.
 */
static void vb_zone_read(struct vb_mem *m, struct zone *zone, bool pcps)
{
	struct per_cpu_pages *pcp;
	unsigned int order;
	int cpu;

	m->min += min_wmark_pages(zone);
	m->high += high_wmark_pages(zone);
	unsigned long n;

	for (order = VB_KEEP_ORDER; order < ARRAY_SIZE(zone->free_area);
	     order++) {
		n = READ_ONCE(zone->free_area[order].nr_free) << order;
		m->keep_free += n;
		if (order >= VB_CHUNK_ORDER)
			m->big_free += n;
	}
	if (!pcps)
		return;
	for_each_online_cpu(cpu) {
		pcp = per_cpu_ptr(zone->per_cpu_pageset, cpu);
		m->pcp += max(0, READ_ONCE(pcp->count));
	}
}

static void vb_mem_read(struct vb_mem *m, bool pcps)
{
	int nid, i;

	memset(m, 0, sizeof(*m));
	for_each_online_node(nid)
		for (i = 0; i < MAX_NR_ZONES; i++)
			if (populated_zone(&NODE_DATA(nid)->node_zones[i]))
				vb_zone_read(m, &NODE_DATA(nid)->node_zones[i],
					     pcps);
}

/*
 * Memory the guest can use, in pages.  vb_avail() is MemAvailable: free
 * memory above the reserves, plus the page cache and slab reclaim can
 * take.  Usable memory adds the pages on the per-CPU free lists, which
 * MemAvailable leaves out although the allocator hands them out first
 * and drains them under pressure.  The balloon takes pages only while
 * MemAvailable stays above the floor, and gives pages back only when
 * even the per-CPU lists do not lift the guest to it: the lists hold
 * tens of MiB that come and go (6.12 parks freed 2 MiB pages there), so
 * a deflation measured by MemAvailable alone could seem to give the
 * guest nothing and be repeated.
 */
static unsigned long vb_avail(void)
{
	return max(si_mem_available(), 0L);
}

/* Half the width of the band the balloon rests in above the floor. */
static unsigned long vb_floor_slack(unsigned long floor)
{
	return max(VB_FLOOR_SLACK_MIN, floor >> VB_FLOOR_SLACK_SHIFT);
}

/*
 * MemAvailable below which the balloon takes nothing: the floor,
 * and with DEFLATE_ON_OOM never less than pressure_reserve, or the
 * shrinker would hand back what the worker just took.
 */
static unsigned long vb_floor_pages(struct vballoon *vb)
{
	unsigned long floor = READ_ONCE(vb->floor);

	if (vb->deflate_on_oom)
		floor = max(floor, READ_ONCE(vb->pressure_reserve));
	return floor;
}

void vb_policy_init(struct vballoon *vb)
{
	unsigned long ram = vb_guest_ram(vb);
	unsigned long now = jiffies;
	struct vb_mem m;

	vb_mem_read(&m, false);
	spin_lock(&vb->lock);
	vb->floor = min(ram / VB_FLOOR_RAM_SHARE + m.min +
			num_online_cpus() * VB_FLOOR_PER_CPU, ram);
	vb->holdoff_base = VB_HOLDOFF_DEFAULT;
	vb->pressure_reserve = ram / 32;
	vb->policy.holdoff = VB_HOLDOFF_DEFAULT;
	/*
	 * Time stamps start in the past relative to jiffies, not at 0: a
	 * 32-bit jiffies starts 5 minutes before its wrap, where 0 would be
	 * in the future for time_before().
	 */
	vb->policy.last_pressure = now - VB_PRESSURE_QUIET - 1;
	vb->policy.yield_until = now;
	vb->policy.floor_until = now;
	spin_unlock(&vb->lock);
}

/*
 * Where the floor lets the balloon be, given @held pages in it now,
 * MemAvailable @avail and @usable (MemAvailable and per-CPU lists), in
 * pages: usable below the floor, give back up to floor + slack;
 * MemAvailable above floor + 2 * slack, grow down to floor + slack;
 * else stay.
 */
static unsigned long vb_floor_cap(unsigned long floor, unsigned long held,
				  unsigned long avail, unsigned long usable)
{
	unsigned long slack = vb_floor_slack(floor);

	if (usable < floor)
		return held - min(held, floor + slack - usable);
	if (avail <= floor + 2 * slack)
		return held;
	return held + avail - floor - slack;
}

/*
 * Tell the admin, once per target (host target or floor changed), that
 * the floor stops the balloon.
 */
static void vb_floor_notice(struct vballoon *vb, unsigned long asked,
			    unsigned long cap, unsigned long avail)
{
	dev_notice_ratelimited(&vb->vdev->dev,
			       "host asks for a %llu KiB balloon; stopping at %llu KiB to keep floor_kb %llu available (MemAvailable %llu KiB)\n",
			       VB_PAGES_TO_KB(asked), VB_PAGES_TO_KB(cap),
			       VB_PAGES_TO_KB(READ_ONCE(vb->floor)),
			       VB_PAGES_TO_KB(avail));
}

/*
 * The balloon size to move toward now, in pages.  Sets *@again (jiffies)
 * when the worker should come back after moving that far.
 */
unsigned long vb_policy_target(struct vballoon *vb, unsigned long held,
			       unsigned long *again)
{
	unsigned long host = vb_host_target(vb);
	unsigned long ram = vb_guest_ram(vb);
	unsigned long floor = vb_floor_pages(vb);
	struct vb_policy *p = &vb->policy;
	unsigned long want, asked, limit, cap, avail, usable, now = jiffies;
	bool tell = false;
	struct vb_mem m;

	vb_mem_read(&m, true);
	avail = vb_avail();
	usable = avail + m.pcp;
	cap = vb_floor_cap(floor, held, avail, usable);

	spin_lock(&vb->lock);
	asked = max(host, vb->guest_target);
	limit = ram > vb->floor ? ram - vb->floor : 0;
	asked = min(asked, limit);
	/*
	 * Without DEFLATE_ON_OOM the specification forbids using balloon
	 * pages while the host asks for no more than the balloon holds
	 * (num_pages <= actual): at the host's target the floor only stops
	 * growth.  While the floor keeps the balloon short of the host's
	 * target the guest may give back, and an admin's floor_kb (limit)
	 * always applies.
	 */
	if (!vb->deflate_on_oom && host <= held)
		cap = max(cap, held);
	want = min(asked, cap);

	if (cap < min(held, asked)) {
		/* The guest's own use went below the floor: give back. */
		p->floor_until = now + vb->holdoff_base;
		vb->stats.floor_deflations++;
		vb->stats.floor_deflated_pages += min(held, asked) - cap;
	}
	if (cap >= asked) {
		p->floor_told = 0;
	} else if (asked != p->floor_told && cap <= held + VB_CHUNK_PAGES) {
		/* The balloon stops about here, short of what was asked. */
		p->floor_told = asked;
		vb->stats.floor_stops++;
		tell = true;
	}
	if (asked <= held) {
		/* Nothing to re-inflate: pressure debt is forgiven. */
		p->debt = 0;
		goto out;
	}
	if (want <= held)
		goto out;
	if (time_before(now, p->floor_until)) {
		*again = p->floor_until - now;
		want = held;
		goto out;
	}
	if (time_before(now, p->yield_until)) {
		*again = p->yield_until - now;
		want = held;
		goto out;
	}
	if (p->debt) {
		unsigned long resume = p->last_pressure + p->holdoff;

		if (time_before(now, resume)) {
			*again = resume - now;
			want = held;
			goto out;
		}
		/* Re-inflate gradually, watching for pressure in between. */
		want = min(want, held + VB_REINFLATE_STEP);
		*again = VB_REINFLATE_EVERY;
	}
out:
	/*
	 * A balloon that holds pages, or stays short of its target, keeps
	 * watching the guest's usable memory while it rests.
	 */
	if (want == held && !*again && (held || asked > held))
		*again = VB_FLOOR_POLL;
	spin_unlock(&vb->lock);
	if (tell)
		vb_floor_notice(vb, asked, held, avail);
	return want;
}

/* Free pages in blocks of a chunk or more (whole free pageblocks). */
unsigned long vb_policy_big_free(void)
{
	struct vb_mem m;

	vb_mem_read(&m, false);
	return m.big_free;
}

/*
 * Which kind of page should the next inflate request take?  Single pages
 * are movable and the allocator takes them from ZONE_MOVABLE first; a
 * chunk can only come from the zones kernel allocations need too.  So
 * while ZONE_MOVABLE has room above its high watermark, single pages; a
 * chunk only while some other zone keeps its high watermark after giving
 * one, so the balloon never drives such a zone to its low watermark
 * while another has room.
 */
enum vb_take vb_policy_take(void)
{
	bool movable_room = false, chunk_room = false;
	unsigned long free, high;
	struct zone *zone;
	int nid, i;

	for_each_online_node(nid)
		for (i = 0; i < MAX_NR_ZONES; i++) {
			zone = &NODE_DATA(nid)->node_zones[i];
			if (!populated_zone(zone))
				continue;
			free = zone_page_state(zone, NR_FREE_PAGES);
			high = high_wmark_pages(zone);
			if (zone_idx(zone) == ZONE_MOVABLE)
				movable_room |= free > high + VB_CHUNK_PAGES;
			else
				chunk_room |= free > high + VB_CHUNK_PAGES;
		}
	if (movable_room && VB_GFP_MOVABLE)
		return VB_TAKE_SINGLES;
	return chunk_room ? VB_TAKE_CHUNK : VB_TAKE_SINGLES;
}

/*
 * May the engine take @pages more pages of @order into the balloon now?
 * Not when that would leave MemAvailable below the floor;
 * single pages also not when they would break up the last free blocks of
 * order VB_KEEP_ORDER and above, which kernel stacks, page tables and
 * slabs need (2 MiB chunks take whole blocks and fragment nothing).  A
 * refusal holds inflation for VB_FLOOR_POLL.
 */
bool vb_policy_may_take(struct vballoon *vb, unsigned long pages,
			unsigned int order)
{
	unsigned long floor = vb_floor_pages(vb);
	unsigned long avail = vb_avail(), reclaimable, free, small;
	struct vb_mem m;
	bool ok;

	/*
	 * Called before every request's pages are taken: MemAvailable is a
	 * sum over a few zones; the free block counts only matter for the
	 * small orders that fragment.
	 */
	ok = avail >= floor + pages;
	if (ok && order < VB_KEEP_ORDER) {
		vb_mem_read(&m, false);
		/*
		 * Page cache and slab that reclaim can take turn back into
		 * free blocks of any order (reclaim and compaction do that
		 * for the small orders the kernel needs), so they count with
		 * the blocks already free.  A guest full of clean cache has
		 * few free large blocks but is not short of them.
		 */
		free = global_zone_page_state(NR_FREE_PAGES);
		reclaimable = avail - min(avail, free);
		/*
		 * Single pages come from the smallest free blocks first:
		 * while the blocks below VB_KEEP_ORDER hold twice the
		 * request, the larger ones stay whole.  Free memory that is
		 * all scattered pages (a program freed most of what it
		 * touched) is taken that way.
		 */
		small = free - min(free, m.keep_free);
		ok = small >= 2 * pages ||
		     m.keep_free + reclaimable >= m.high + pages;
	}
	if (!ok) {
		spin_lock(&vb->lock);
		vb->policy.floor_until = jiffies + VB_FLOOR_POLL;
		spin_unlock(&vb->lock);
	}
	return ok;
}

/* Should an inflation run started at pressure sequence @seq stop? */
bool vb_policy_inflate_paused(struct vballoon *vb, unsigned int seq)
{
	return READ_ONCE(vb->policy.seq) != seq;
}

/* @pages just joined the balloon: pay back pressure debt. */
void vb_policy_inflated(struct vballoon *vb, unsigned long pages)
{
	struct vb_policy *p = &vb->policy;
	unsigned long paid;

	spin_lock(&vb->lock);
	paid = min(p->debt, pages);
	if (paid) {
		p->debt -= paid;
		p->reinflated = true;
		vb->stats.reinflated_pages += paid;
	}
	spin_unlock(&vb->lock);
}

/* Record a pressure deflation of @pages and schedule the way back. */
void vb_policy_pressure(struct vballoon *vb, unsigned long pages)
{
	struct vb_policy *p = &vb->policy;
	unsigned long now = jiffies, holdoff, debt;

	spin_lock(&vb->lock);
	if (time_after(now, p->last_pressure + VB_PRESSURE_QUIET)) {
		p->holdoff = vb->holdoff_base;
	} else if (p->reinflated) {
		/* Pressure came back after we re-inflated: wait longer. */
		p->holdoff = min(p->holdoff * 2, VB_HOLDOFF_MAX);
		vb->stats.holdoff_doublings++;
	}
	p->reinflated = false;
	p->last_pressure = now;
	p->debt += pages;
	p->seq++;
	vb->stats.pressure_events++;
	vb->stats.pressure_pages += pages;
	holdoff = p->holdoff;
	debt = p->debt;
	spin_unlock(&vb->lock);

	trace_vballoon_pressure(pages, READ_ONCE(vb->nr_held), debt,
				jiffies_to_msecs(holdoff));
	vb_queue_work(vb, holdoff);
}

/*
 * From the worker: a shrinker request the host answered late gave pages
 * back to the guest; account them as a pressure deflation.  A shrinker
 * that holds pressure_lock collects it itself.
 */
void vb_policy_collect(struct vballoon *vb)
{
	unsigned long freed;

	if (!mutex_trylock(&vb->pressure_lock))
		return;
	freed = vb_pressure_reap(vb);
	mutex_unlock(&vb->pressure_lock);
	if (freed)
		vb_policy_pressure(vb, freed);
}
