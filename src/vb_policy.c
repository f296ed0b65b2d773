// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: the policy, which decides how big the balloon should be.
 *
 * Target: the larger of the host's num_pages and the admin's target_kb,
 * never past the floor (guest memory the balloon never takes).
 *
 * Pressure (only with DEFLATE_ON_OOM, as the specification allows): a
 * shrinker gives balloon pages back when the guest is really short, that
 * is when reclaim runs while MemAvailable (free memory above the reserves
 * plus reclaimable page cache and slab) is below pressure_reserve.  It
 * never gives pages back to the reclaim its own inflation causes; when
 * kswapd runs because of our inflation and the guest is short, inflation
 * stops instead (the guest has nothing more to spare).  This avoids the
 * inflate/shrink busy loop the upstream shrinker had.
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
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/swap.h>
#include <linux/vmstat.h>

#include "vballoon.h"
#include "vb_trace.h"

#define VB_FLOOR_MIN		(SZ_128M >> PAGE_SHIFT)
#define VB_HOLDOFF_DEFAULT	(3 * HZ)
#define VB_HOLDOFF_MAX		(60 * HZ)
#define VB_PRESSURE_QUIET	(60 * HZ)
/* Re-inflation after pressure: this many pages per step, a step this often. */
#define VB_REINFLATE_STEP	(SZ_64M >> PAGE_SHIFT)
#define VB_REINFLATE_EVERY	(HZ / 4)
/* How long inflation yields when kswapd finds the guest short. */
#define VB_YIELD		(HZ / 2)
/*
 * Deflation per shrinker call: one chunk, doubling while calls come less
 * than VB_PRESSURE_BURST apart, up to VB_PRESSURE_MAX.  Sustained pressure
 * then costs a few reclaim rounds instead of one per 2 MiB.
 */
#define VB_PRESSURE_MIN		VB_CHUNK_PAGES
#define VB_PRESSURE_MAX		(SZ_32M >> PAGE_SHIFT)
#define VB_PRESSURE_BURST	(HZ / 10)

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

void vb_policy_init(struct vballoon *vb)
{
	unsigned long ram = vb_guest_ram(vb);

	spin_lock(&vb->lock);
	vb->floor = min(max(VB_FLOOR_MIN, ram / 32), ram);
	vb->holdoff_base = VB_HOLDOFF_DEFAULT;
	vb->pressure_reserve = ram / 32;
	vb->policy.holdoff = VB_HOLDOFF_DEFAULT;
	spin_unlock(&vb->lock);
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
	struct vb_policy *p = &vb->policy;
	unsigned long want, limit, now = jiffies;

	spin_lock(&vb->lock);
	want = max(host, vb->guest_target);
	limit = ram > vb->floor ? ram - vb->floor : 0;
	want = min(want, limit);

	if (want <= held) {
		/* Nothing to re-inflate: pressure debt is forgiven. */
		p->debt = 0;
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
	spin_unlock(&vb->lock);
	return want;
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
static void vb_policy_pressure(struct vballoon *vb, unsigned long pages)
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

/* How much the next shrinker call gives back, in pages. */
static unsigned long vb_pressure_batch(struct vballoon *vb)
{
	struct vb_policy *p = &vb->policy;
	unsigned long batch;

	spin_lock(&vb->lock);
	if (time_before(jiffies, p->last_pressure + VB_PRESSURE_BURST))
		p->batch = clamp(p->batch * 2, VB_PRESSURE_MIN, VB_PRESSURE_MAX);
	else
		p->batch = VB_PRESSURE_MIN;
	batch = p->batch;
	spin_unlock(&vb->lock);
	return batch;
}

/*
 * Is the guest really short?  MemAvailable counts free memory above the
 * watermarks and reserves plus the page cache and slab that reclaim could
 * still take.  While it is above pressure_reserve ordinary reclaim is
 * enough and the balloon stays (no inflate/shrink busy loop against page
 * cache); it also ends a burst of deflation as soon as the guest has room
 * again.  Being relative to the watermarks, it works for small guests
 * too, where raw free memory never drops below a fixed threshold.
 */
static bool vb_guest_short(struct vballoon *vb)
{
	return si_mem_available() <= (long)READ_ONCE(vb->pressure_reserve);
}

/*
 * May reclaim running in the current context take pages from the balloon?
 * Also the place that stops an inflation the guest cannot afford.
 */
static bool vb_pressure_allowed(struct vballoon *vb)
{
	/* Reclaim our own allocation started. */
	if (READ_ONCE(vb->inflater) == current)
		return false;
	if (!vb_guest_short(vb))
		return false;
	if (current_is_kswapd() && READ_ONCE(vb->inflating)) {
		/* We are the pressure: stop inflating rather than deflate. */
		spin_lock(&vb->lock);
		if (time_after_eq(jiffies, vb->policy.yield_until)) {
			vb->policy.yield_until = jiffies + VB_YIELD;
			vb->policy.seq++;
			vb->stats.pressure_yields++;
		}
		spin_unlock(&vb->lock);
		return false;
	}
	return true;
}

static unsigned long vb_shrink_count(struct shrinker *s,
				     struct shrink_control *sc)
{
	struct vballoon *vb = vb_shrinker_private(s);

	if (!vb_pressure_allowed(vb))
		return 0;
	return READ_ONCE(vb->nr_held);
}

static unsigned long vb_shrink_scan(struct shrinker *s,
				    struct shrink_control *sc)
{
	struct vballoon *vb = vb_shrinker_private(s);
	unsigned long freed = 0;

	if (!vb_pressure_allowed(vb))
		return SHRINK_STOP;
	/*
	 * Wait for a deflation running on another CPU rather than give up:
	 * a reclaimer that comes back empty-handed while memory is on its
	 * way counts a failed round, and enough of those OOM-kill.  Then
	 * look again, since that deflation may have been enough.  Nothing
	 * under pressure_lock allocates or waits for reclaim.
	 */
	mutex_lock(&vb->pressure_lock);
	if (vb_guest_short(vb))
		freed = vb_pressure_deflate(vb, max(sc->nr_to_scan,
						    vb_pressure_batch(vb)));
	mutex_unlock(&vb->pressure_lock);
	if (!freed)
		return SHRINK_STOP;
	vb_account_reclaimed(freed);
	vb_policy_pressure(vb, freed);
	return freed;
}

int vb_pressure_register(struct vballoon *vb)
{
	struct shrinker *s;
	int err;

	/* Without DEFLATE_ON_OOM the balloon is the host's to shrink. */
	if (!vb->deflate_on_oom)
		return 0;

	s = vb_shrinker_alloc("vballoon", vb);
	if (!s)
		return -ENOMEM;
	s->count_objects = vb_shrink_count;
	s->scan_objects = vb_shrink_scan;
	/* Cheaper to give back than anything reclaim would have to re-read. */
	s->seeks = 1;
	err = vb_shrinker_register(s, "vballoon");
	if (err) {
		vb_shrinker_free(s);
		return err;
	}
	vb->shrinker = s;
	return 0;
}

void vb_pressure_unregister(struct vballoon *vb)
{
	if (vb->shrinker)
		vb_shrinker_free(vb->shrinker);
	vb->shrinker = NULL;
}
