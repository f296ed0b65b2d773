// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: the shrinker, which gives balloon pages back under pressure.
 *
 * Registered only with DEFLATE_ON_OOM, as the specification allows.  It
 * gives balloon pages back when the guest is really short, that is when
 * reclaim runs while MemAvailable (free memory above the reserves plus
 * reclaimable page cache and slab) is below pressure_reserve.  It never
 * gives pages back to the reclaim its own inflation causes; when kswapd
 * runs because of our inflation and the guest is short, inflation stops
 * instead (the guest has nothing more to spare).  This avoids the
 * inflate/shrink busy loop the upstream shrinker had.  Memory lent to a
 * migration's free page hints goes back before balloon pages; each
 * deflation is reported to the policy (vb_policy_pressure()), which
 * decides when the balloon grows back.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/swap.h>

#include "vballoon.h"

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
 * too, where raw free memory never drops below a fixed threshold.  The
 * per-CPU free lists that the floor adds are left out here: reclaim runs
 * because the allocator could not use them, and counting them kept a
 * 1 GiB guest from deflating until it OOM-killed (make bench --quick).
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
	/* Memory lent to a migration's free page hints goes back first. */
	freed = vb_hint_shed(vb, sc->nr_to_scan);
	if (freed) {
		sc->nr_scanned = max(sc->nr_scanned, freed);
		vb_account_reclaimed(freed);
		return freed;
	}
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
	/*
	 * A batch can exceed what reclaim asked for: say so, or reclaim
	 * calls again for the rest of its quota and waits on the host once
	 * more for memory the guest already has.
	 */
	sc->nr_scanned = max(sc->nr_scanned, freed);
	vb_account_reclaimed(freed);
	vb_policy_pressure(vb, freed);
	return freed;
}

/*
 * A registered shrinker named @name whose callbacks get @vb back through
 * vb_shrinker_private(); an ERR_PTR() if it cannot be had.  Undone by
 * vb_shrinker_free().
 */
struct shrinker *vb_shrinker_add(const char *name, struct vballoon *vb,
				 vb_shrink_fn count, vb_shrink_fn scan,
				 int seeks)
{
	struct shrinker *s = vb_shrinker_alloc(name, vb);
	int err;

	if (!s)
		return ERR_PTR(-ENOMEM);
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = seeks;
	err = vb_shrinker_register(s, name);
	if (err) {
		vb_shrinker_free(s);
		return ERR_PTR(err);
	}
	return s;
}

int vb_pressure_register(struct vballoon *vb)
{
	struct shrinker *s;

	/* Without DEFLATE_ON_OOM the balloon is the host's to shrink. */
	if (!vb->deflate_on_oom)
		return 0;
	/* seeks 1: cheaper to give back than anything reclaim would re-read. */
	s = vb_shrinker_add("vballoon", vb, vb_shrink_count, vb_shrink_scan, 1);
	if (IS_ERR(s))
		return PTR_ERR(s);
	vb->shrinker = s;
	return 0;
}

void vb_pressure_unregister(struct vballoon *vb)
{
	if (vb->shrinker)
		vb_shrinker_free(vb->shrinker);
	vb->shrinker = NULL;
}
