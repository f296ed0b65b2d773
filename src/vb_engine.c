// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: the inflate/deflate engine.
 *
 * The worker moves the balloon toward the target vb_policy_target() gives.
 * It keeps up to VB_NR_REQS requests in flight on a queue, kicking the
 * host after each one and refilling a request as soon as the host has
 * acknowledged it, so allocation in the guest overlaps discarding on the
 * host.  Inflation takes naturally aligned 2 MiB chunks while the buddy
 * allocator has them, so one request frees one whole host huge page, and
 * falls back to single pages when memory is fragmented.  Where free memory
 * has holes (free single pages scattered between used ones) it takes
 * single pages first, as long as they fill holes rather than break up
 * free 2 MiB blocks, which the guest keeps for its own huge pages; it
 * looks again every VB_HOLES_PROBE.
 *
 * Ordering with the host:
 *   inflate: pages count as ballooned (nr_held, actual, MemTotal) only
 *            once the host has acknowledged the request carrying them;
 *   deflate: pages are freed only after the host has acknowledged the
 *            request carrying them, whether or not MUST_TELL_HOST was
 *            negotiated; nr_held and actual drop at the same time.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/delay.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/sched.h>
#include <linux/sched/clock.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"
#include "vb_req.h"

#define CREATE_TRACE_POINTS
#include "vb_trace.h"

/* How often release looks for pages back from an aborted migration. */
#define VB_ISOLATED_POLL_MS	10

/* Backoff after allocation failure: start, and the most it grows to. */
#define VB_BACKOFF_MIN		(HZ / 10)
#define VB_BACKOFF_MAX		(5 * HZ)
/* Most pages one worker run moves before it requeues itself. */
#define VB_WORK_BATCH		(SZ_128M >> PAGE_SHIFT)

/*
 * Move up to @want pages into (@inflate) or out of the balloon, pipelined;
 * deflation takes chunks from @chunks and, with @singles, single pages
 * from the balloon core.  Returns the pages moved;
 * *@short_alloc tells whether inflation stopped because allocation failed.
 * With @stoppable the run ends early when the driver stops, leaving
 * requests in flight for drain to collect.
 */
static unsigned long vb_move_from(struct vballoon *vb, bool inflate,
				  unsigned long want, bool *short_alloc,
				  bool stoppable, struct list_head *chunks,
				  bool singles)
{
	unsigned long queued = 0, moved = 0, progress = jiffies;
	unsigned int seq = READ_ONCE(vb->policy.seq), inflight;
	ktime_t start = ktime_get();
	struct vb_move_time tm = {};
	struct vb_move_time *sum;
	struct vb_req *req;
	bool failed = false;
	u64 t0;
	int err;

	if (inflate)
		WRITE_ONCE(vb->inflating, true);
	while (queued < want && !failed) {
		if ((stoppable && vb_stopping(vb)) || vb_broken(vb))
			break;
		if (inflate && vb_policy_inflate_paused(vb, seq))
			break;
		t0 = local_clock();
		moved += vb_reap(vb);
		tm.reap_ns += local_clock() - t0;
		req = vb_idle_req(vb);
		if (!req) {
			/* A host that stops answering ends a drain. */
			if (!stoppable &&
			    time_after(jiffies, progress + VB_DRAIN_TIMEOUT))
				break;
			t0 = local_clock();
			vb_wait_reqs(vb, VB_NR_REQS, VB_ACK_POLL, stoppable);
			tm.wait_ns += local_clock() - t0;
			continue;
		}
		progress = jiffies;
		vb_req_reset(req, inflate);
		t0 = local_clock();
		if (inflate)
			failed = vb_fill_inflate(vb, req, want - queued);
		else
			vb_fill_deflate(vb, req, want - queued, chunks,
					singles);
		tm.fill_ns += local_clock() - t0;
		tm.alloc_ns += req->alloc_ns;
		if (!req->nr_pages)
			break;
		err = vb_submit(vb, req);
		tm.submit_ns += req->submit_ns;
		if (err) {
			vb_unfill(vb, req);
			/* A full ring drains as the host answers; else give up. */
			inflight = vb_count_reqs(vb, VB_REQ_INFLIGHT);
			if (err != -ENOSPC || !inflight)
				break;
			/*
			 * Wait for one answer, not for an idle request: without
			 * indirect descriptors the ring fills before the
			 * requests run out, and retrying at once would only
			 * allocate and free the same pages in a loop.
			 */
			t0 = local_clock();
			vb_wait_reqs(vb, inflight, VB_ACK_POLL, stoppable);
			tm.wait_ns += local_clock() - t0;
			continue;
		}
		queued += req->nr_pages;
		cond_resched();
	}
	/* Wait for the whole batch; a drain waits a bounded time. */
	t0 = local_clock();
	vb_wait_reqs(vb, 1, stoppable ? MAX_SCHEDULE_TIMEOUT : VB_DRAIN_TIMEOUT,
		     stoppable);
	tm.wait_ns += local_clock() - t0;
	t0 = local_clock();
	moved += vb_reap(vb);
	tm.reap_ns += local_clock() - t0;
	if (inflate)
		WRITE_ONCE(vb->inflating, false);

	spin_lock(&vb->lock);
	if (inflate)
		vb->stats.inflate_ns += ktime_to_ns(ktime_sub(ktime_get(), start));
	else
		vb->stats.deflate_ns += ktime_to_ns(ktime_sub(ktime_get(), start));
	sum = &vb->stats.time[inflate];
	sum->alloc_ns += tm.alloc_ns;
	sum->fill_ns += tm.fill_ns;
	sum->submit_ns += tm.submit_ns;
	sum->wait_ns += tm.wait_ns;
	sum->reap_ns += tm.reap_ns;
	spin_unlock(&vb->lock);
	if (inflate)
		trace_vballoon_inflate(want, moved, READ_ONCE(vb->nr_held),
				       failed);
	else
		trace_vballoon_deflate(want, moved, READ_ONCE(vb->nr_held),
				       false);

	*short_alloc = failed;
	return moved;
}

static unsigned long vb_move(struct vballoon *vb, bool inflate,
			     unsigned long want, bool *short_alloc,
			     bool stoppable)
{
	return vb_move_from(vb, inflate, want, short_alloc, stoppable,
			    &vb->chunks, true);
}

/*
 * With engine_lock held: collect every worker request the host answered.
 * Returns false if the host still holds one after VB_DRAIN_TIMEOUT.
 */
bool vb_engine_quiesce(struct vballoon *vb)
{
	lockdep_assert_held(&vb->engine_lock);
	vb_wait_reqs(vb, 1, VB_DRAIN_TIMEOUT, false);
	vb_reap(vb);
	return !vb_count_reqs(vb, VB_REQ_INFLIGHT);
}

/*
 * With engine_lock held: give back up to @want pages of the chunks on
 * @chunks, which the caller took off the balloon's list (still counted in
 * nr_held).  What the host did not take stays there.  Returns the pages
 * given back.
 */
unsigned long vb_engine_deflate_chunks(struct vballoon *vb, unsigned long want,
				       struct list_head *chunks)
{
	bool short_alloc;

	lockdep_assert_held(&vb->engine_lock);
	return vb_move_from(vb, false, want, &short_alloc, false, chunks,
			    false);
}

/*
 * Tell the host how many 4 KiB pages the balloon holds, if that changed or
 * @force says the host's copy cannot be trusted (the driver just started,
 * or pages came back without the host's acknowledgment).
 */
void vb_update_actual(struct vballoon *vb, bool force)
{
	u32 actual;

	mutex_lock(&vb->actual_lock);
	actual = READ_ONCE(vb->nr_held) * VB_PFNS_PER_PAGE;
	if (force || actual != vb->actual) {
		/* One aligned 32-bit little-endian write. */
		virtio_cwrite_le(vb->vdev, struct virtio_balloon_config,
				 actual, &actual);
		vb->actual = actual;
	}
	mutex_unlock(&vb->actual_lock);
}

void vb_work_fn(struct work_struct *work)
{
	struct vballoon *vb = container_of(to_delayed_work(work),
					   struct vballoon, work);
	unsigned long target, held, moved, again = 0;
	bool short_alloc, now = false;

	mutex_lock(&vb->engine_lock);
	vb_policy_collect(vb);
	while (!vb_stopping(vb) && !vb_broken(vb)) {
		held = READ_ONCE(vb->nr_held);
		again = 0;
		target = vb_policy_target(vb, held, &again);
		if (target > held) {
			moved = vb_move(vb, true,
					min(target - held, VB_WORK_BATCH),
					&short_alloc, true);
			if (short_alloc) {
				/*
				 * The guest has nothing to spare now.  Back off
				 * harder each time a run takes nothing; a run
				 * that took pages before an allocation failed
				 * tries again soon.
				 */
				if (moved)
					vb->alloc_backoff = VB_BACKOFF_MIN;
				else
					vb->alloc_backoff =
						clamp(vb->alloc_backoff * 2,
						      VB_BACKOFF_MIN,
						      VB_BACKOFF_MAX);
				again = vb->alloc_backoff;
				break;
			}
			vb->alloc_backoff = 0;
			/* Paused for pressure, or the device failed. */
			if (!moved) {
				again = max(again, VB_BACKOFF_MIN);
				break;
			}
		} else if (target < held) {
			/*
			 * Nothing to take: the rest is in a shrinker request
			 * the host has not answered yet.  Look again soon.
			 */
			if (!vb_move(vb, false,
				     min(held - target, VB_WORK_BATCH),
				     &short_alloc, true)) {
				again = VB_BACKOFF_MIN;
				break;
			}
		} else {
			break;
		}
		/*
		 * Come back later when the policy paces this move, else at
		 * once: one batch per run, so the freezer never waits for a
		 * whole move.  At once, not a tick later: waiting for the tick
		 * cost about 6 ms per batch under TCG (Documentation/bench.rst).
		 */
		now = !again;
		break;
	}
	mutex_unlock(&vb->engine_lock);

	/* A broken device gets no more runs: vb_broken() said so once. */
	if ((now || again) && !vb_broken(vb))
		vb_queue_work(vb, again);
}

/*
 * Submit @req and wait for the host's answer: one VB_ACK_POLL, or with
 * @until_broken for as long as the device works.  Returns 0 once the host
 * answered, -ETIMEDOUT while it has not, or what vb_submit() returned.
 */
static int vb_submit_wait(struct vballoon *vb, struct vb_req *req,
			  bool until_broken)
{
	int err = vb_submit(vb, req);

	if (err)
		return err;
	do {
		if (wait_event_timeout(vb->acked,
				       vb_req_state(vb, req) == VB_REQ_DONE,
				       VB_ACK_POLL))
			return 0;
	} while (until_broken && !vb_broken(vb));
	return vb_req_state(vb, req) == VB_REQ_DONE ? 0 : -ETIMEDOUT;
}

/*
 * One shrinker deflation request: returns the pages it gave back, 0 if the
 * request could not be made or the host did not answer in time (it is then
 * completed by a later call or by drain).  Called with pressure_lock held.
 */
static unsigned long vb_pressure_round(struct vballoon *vb, unsigned long want)
{
	struct vb_req *req = vb->preq;
	int err;

	if (vb_req_state(vb, req) != VB_REQ_IDLE)
		return 0;
	vb_req_reset(req, false);
	vb_fill_deflate(vb, req, want, &vb->chunks, true);
	if (!req->nr_pages)
		return 0;
	err = vb_submit_wait(vb, req, false);
	if (err == -ETIMEDOUT) {
		/* The worker collects it once the host answers. */
		vb_queue_work(vb, VB_ACK_POLL);
		return 0;
	}
	if (err) {
		vb_unfill(vb, req);
		return 0;
	}
	return vb_complete(vb, req);
}

/*
 * Complete a shrinker request the host answered after its caller stopped
 * waiting, with pressure_lock held.  Returns the pages given back.
 */
unsigned long vb_pressure_reap(struct vballoon *vb)
{
	unsigned long n = 0;

	lockdep_assert_held(&vb->pressure_lock);
	if (vb_req_state(vb, vb->preq) == VB_REQ_DONE) {
		n = vb_complete(vb, vb->preq);
		vb_update_actual(vb, false);
	}
	return n;
}

/*
 * Deflate for the shrinker, with pressure_lock held.  Allocates nothing
 * that can sleep (a ring may take an indirect table with GFP_NOWAIT),
 * takes actual_lock only around one config write, and waits at most
 * VB_ACK_POLL per request for the host.  Returns the pages given back to
 * the guest.
 */
unsigned long vb_pressure_deflate(struct vballoon *vb, unsigned long want)
{
	unsigned long freed = 0, n;

	lockdep_assert_held(&vb->pressure_lock);
	if (!vb->vqs_ready)
		return 0;

	/* A request an earlier call gave up waiting for. */
	freed += vb_pressure_reap(vb);
	while (freed < want) {
		n = vb_pressure_round(vb, want - freed);
		if (!n)
			break;
		freed += n;
	}
	if (freed)
		vb_update_actual(vb, false);
	return freed;
}

/*
 * Give every page back to the guest through the host, before reset.  The
 * worker is stopped; a host that stops answering is waited for only
 * VB_DRAIN_TIMEOUT per batch, then vb_engine_release() takes over.
 */
void vb_engine_drain(struct vballoon *vb)
{
	unsigned long held, end = jiffies + VB_DRAIN_TIMEOUT;
	bool short_alloc;

	mutex_lock(&vb->engine_lock);
	/* Collect what the stopped worker left in flight. */
	vb_wait_reqs(vb, 1, VB_DRAIN_TIMEOUT, false);
	vb_reap(vb);

	mutex_lock(&vb->pressure_lock);
	if (vb_req_state(vb, vb->preq) == VB_REQ_INFLIGHT)
		wait_event_timeout(vb->acked,
				   vb_req_state(vb, vb->preq) != VB_REQ_INFLIGHT,
				   VB_DRAIN_TIMEOUT);
	if (vb_req_state(vb, vb->preq) == VB_REQ_DONE)
		vb_complete(vb, vb->preq);
	mutex_unlock(&vb->pressure_lock);

	while ((held = READ_ONCE(vb->nr_held)) > 0) {
		if (!vb_move(vb, false, held, &short_alloc, false)) {
			/*
			 * Pages compaction isolated come back to the list as
			 * soon as their migration fails (vqs_ready is off).
			 */
			if (!READ_ONCE(vb->bdev.isolated_pages) ||
			    time_after(jiffies, end))
				break;
			msleep(VB_ISOLATED_POLL_MS);
			continue;
		}
		/* A request the host did not answer in time. */
		if (vb_count_reqs(vb, VB_REQ_INFLIGHT))
			break;
	}
	mutex_unlock(&vb->engine_lock);
}

/*
 * After reset the host has forgotten every request: whatever is still in
 * flight or in the balloon is the guest's again.
 */
void vb_engine_release(struct vballoon *vb)
{
	struct page *page, *next;
	unsigned long n = 0, got;
	unsigned int i;
	LIST_HEAD(chunks);
	LIST_HEAD(pages);

	mutex_lock(&vb->engine_lock);
	for (i = 0; i < VB_NR_REQS; i++)
		if (vb->reqs[i]->state != VB_REQ_IDLE)
			vb_abandon(vb, vb->reqs[i]);
	if (vb->preq->state != VB_REQ_IDLE)
		vb_abandon(vb, vb->preq);
	/* A migration's request carries no page once it gave up. */
	if (vb->mreq->state != VB_REQ_IDLE)
		vb_abandon(vb, vb->mreq);

	/*
	 * Take the lists under the lock, free outside it: the balloon may
	 * hold gigabytes, and freeing them one by one under a spinlock would
	 * stall every CPU that wants vb->lock (the shrinker among them).
	 */
	spin_lock(&vb->lock);
	list_splice_init(&vb->chunks, &chunks);
	vb->nr_held = 0;
	spin_unlock(&vb->lock);

	list_for_each_entry_safe(page, next, &chunks, lru) {
		list_del(&page->lru);
		if (vb->adjust_managed)
			adjust_managed_page_count(page, VB_CHUNK_PAGES);
		vb_balloon_account(page, -VB_CHUNK_PAGES);
		vb_page_free(page, VB_CHUNK_ORDER);
		n += VB_CHUNK_PAGES;
		cond_resched();
	}
	/*
	 * Single pages, including those compaction isolated: their migration
	 * fails now (vqs_ready is off) and puts them back on the list.
	 */
	for (;;) {
		got = balloon_page_list_dequeue(&vb->bdev, &pages,
						VB_CHUNK_PAGES);
		list_for_each_entry_safe(page, next, &pages, lru) {
			list_del(&page->lru);
			if (vb->adjust_managed)
				adjust_managed_page_count(page, 1);
			vb_page_free(page, 0);
		}
		n += got;
		if (got)
			cond_resched();
		else if (READ_ONCE(vb->bdev.isolated_pages))
			msleep(VB_ISOLATED_POLL_MS);
		else
			break;
	}
	mutex_unlock(&vb->engine_lock);
	/* Whatever the host believes, the balloon is empty now. */
	vb_update_actual(vb, true);

	if (n)
		dev_warn(&vb->vdev->dev,
			 "host did not acknowledge deflation; reclaimed %lu pages at reset\n",
			 n);
}

/*
 * Tell the host about one page on @req (inflate or deflate) and wait for
 * the answer.  Returns false if the page could not be sent or the device
 * broke first.  The page stays off @req's list: migration links pages
 * being migrated through page->lru.
 */
static bool vb_migrate_tell(struct vballoon *vb, struct vb_req *req,
			    struct page *page, bool inflate)
{
	bool done;

	vb_req_reset(req, inflate);
	done = vb_req_pfns(vb, req, page, 0) && !vb_submit_wait(vb, req, true);
	vb_req_reset(req, inflate);
	if (done) {
		spin_lock_irq(&vb->vq_lock);
		req->state = VB_REQ_IDLE;
		spin_unlock_irq(&vb->vq_lock);
	}
	return done;
}

/*
 * Migration of a single balloon page (the balloon core's callback): tell
 * the host @newpage is ballooned, then that @page is not.  Returns 0 when
 * the host has @newpage in place of @page, -EAGAIN when nothing changed.
 * Never waits for a lock: compaction tries another page instead.
 */
int vb_engine_migrate(struct vballoon *vb, struct page *newpage,
		      struct page *page)
{
	struct vb_req *req = vb->mreq;
	int err = -EAGAIN;

	if (!mutex_trylock(&vb->pressure_lock))
		return -EAGAIN;
	if (!vb->vqs_ready || vb_req_state(vb, req) != VB_REQ_IDLE)
		goto out_unlock;
	if (!vb_migrate_tell(vb, req, newpage, true)) {
		/* Maybe marked offline by vb_req_pfns(); the core frees it. */
		if (PageOffline(newpage))
			__ClearPageOffline(newpage);
		goto out_unlock;
	}
	/*
	 * The host has @newpage now.  If the device breaks before it hears
	 * about @page, it will never look at either again: let @page go all
	 * the same.
	 */
	vb_migrate_tell(vb, req, page, false);
	err = 0;
out_unlock:
	mutex_unlock(&vb->pressure_lock);
	return err;
}
