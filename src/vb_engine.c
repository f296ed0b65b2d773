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
 * falls back to single pages when memory is fragmented.
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
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"

#define CREATE_TRACE_POINTS
#include "vb_trace.h"

/*
 * Balloon pages must not disturb the guest: no OOM killer, no dipping into
 * reserves, no warnings; direct reclaim may take clean page cache.  Chunks
 * try one light round of reclaim and compaction in our own context but do
 * not wake kswapd or kcompactd: a failed 2 MiB attempt falls back to single
 * pages for VB_CHUNK_RETRY instead of making the whole guest work for us.
 */
#define VB_GFP_PAGE	(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOWARN | \
			 __GFP_NOMEMALLOC)
#define VB_GFP_CHUNK	(VB_GFP_PAGE & ~__GFP_KSWAPD_RECLAIM)

/* After a failed chunk allocation, use single pages for this long. */
#define VB_CHUNK_RETRY		HZ
/* Backoff after allocation failure: start, and the most it grows to. */
#define VB_BACKOFF_MIN		(HZ / 10)
#define VB_BACKOFF_MAX		(5 * HZ)
/* How long to wait for the host before checking whether we are stopping. */
#define VB_ACK_POLL		(HZ / 2)
/* How long remove/freeze waits for a host that does not acknowledge. */
#define VB_DRAIN_TIMEOUT	(5 * HZ)
/* Most pages one worker run moves before it requeues itself. */
#define VB_WORK_BATCH		(SZ_128M >> PAGE_SHIFT)
/* "Requeue at once" for the worker (0 means "do not requeue"). */
#define VB_AGAIN_NOW		1

static struct vb_req *vb_req_alloc(void)
{
	struct vb_req *req = kzalloc(sizeof(*req), GFP_KERNEL);

	if (req)
		INIT_LIST_HEAD(&req->pages);
	return req;
}

int vb_engine_init(struct vballoon *vb)
{
	unsigned int i;

	BUILD_BUG_ON(VB_PFNS_PER_REQ % VB_PFNS_PER_DESC);
	BUILD_BUG_ON(PAGE_SHIFT < VIRTIO_BALLOON_PFN_SHIFT);

	for (i = 0; i < VB_NR_REQS; i++) {
		vb->reqs[i] = vb_req_alloc();
		if (!vb->reqs[i])
			goto out_free_reqs;
	}
	vb->preq = vb_req_alloc();
	if (!vb->preq)
		goto out_free_reqs;
	/* Relative to jiffies: 0 is in the future on a fresh 32-bit one. */
	vb->chunk_retry = jiffies;
	return 0;

out_free_reqs:
	vb_engine_exit(vb);
	return -ENOMEM;
}

void vb_engine_exit(struct vballoon *vb)
{
	unsigned int i;

	for (i = 0; i < VB_NR_REQS; i++) {
		kfree(vb->reqs[i]);
		vb->reqs[i] = NULL;
	}
	kfree(vb->preq);
	vb->preq = NULL;
}

static unsigned int vb_order(struct vb_req *req)
{
	return req->chunk ? VB_CHUNK_ORDER : 0;
}

static void vb_req_reset(struct vb_req *req, bool inflate)
{
	INIT_LIST_HEAD(&req->pages);
	req->nr_pages = 0;
	req->nr_pfns = 0;
	req->chunk = false;
	req->inflate = inflate;
}

/* Add a page (of order 0 or VB_CHUNK_ORDER) and its 4 KiB PFNs to @req. */
static bool vb_req_add(struct vballoon *vb, struct vb_req *req,
		       struct page *page, unsigned int order)
{
	unsigned long pfn = page_to_pfn(page) * VB_PFNS_PER_PAGE;
	unsigned long n = (1UL << order) * VB_PFNS_PER_PAGE;
	unsigned long i;

	/* The protocol has 32-bit PFNs: memory above 16 TiB cannot go. */
	if (pfn + n - 1 > U32_MAX)
		return false;
	for (i = 0; i < n; i++)
		req->pfns[req->nr_pfns++] = cpu_to_virtio32(vb->vdev, pfn + i);
	/* From here on the host may discard it. */
	if (req->inflate)
		vb_page_offline(page, order);
	list_add_tail(&page->lru, &req->pages);
	req->nr_pages += 1U << order;
	return true;
}

/*
 * Allocate up to @want pages into an empty inflate request.  Returns true
 * if allocation failed before the request was full.
 */
static bool vb_fill_inflate(struct vballoon *vb, struct vb_req *req,
			    unsigned long want)
{
	unsigned long room = min_t(unsigned long, want,
				   VB_PFNS_PER_REQ / VB_PFNS_PER_PAGE);
	struct page *page;
	bool failed = false;

	WRITE_ONCE(vb->inflater, current);
	/* The floor decides whether these pages may go (vb_policy.c). */
	if (want >= VB_CHUNK_PAGES && time_after_eq(jiffies, vb->chunk_retry) &&
	    vb_policy_may_take(vb, VB_CHUNK_PAGES, VB_CHUNK_ORDER)) {
		page = alloc_pages(VB_GFP_CHUNK, VB_CHUNK_ORDER);
		if (page && vb_req_add(vb, req, page, VB_CHUNK_ORDER)) {
			req->chunk = true;
			goto out;
		}
		if (page)
			__free_pages(page, VB_CHUNK_ORDER);
		vb->chunk_retry = jiffies + VB_CHUNK_RETRY;
		spin_lock(&vb->lock);
		vb->stats.chunk_alloc_fails++;
		spin_unlock(&vb->lock);
	}

	if (!vb_policy_may_take(vb, room, 0))
		goto out;
	while (req->nr_pages < room) {
		page = alloc_page(VB_GFP_PAGE);
		if (page && vb_req_add(vb, req, page, 0))
			continue;
		if (page)
			__free_page(page);
		spin_lock(&vb->lock);
		vb->stats.page_alloc_fails++;
		spin_unlock(&vb->lock);
		failed = true;
		break;
	}
out:
	WRITE_ONCE(vb->inflater, NULL);
	return failed;
}

/*
 * Take up to @want pages out of @chunks and @pages (the balloon's lists,
 * or pages a caller took off them) into an empty deflate request.  Whole
 * chunks go first (they give the guest back huge pages); a chunk is split
 * only when fewer pages than a chunk are wanted.  The pages stay counted
 * in nr_held until the host acknowledges.
 */
static void vb_fill_deflate(struct vballoon *vb, struct vb_req *req,
			    unsigned long want, struct list_head *chunks,
			    struct list_head *pages)
{
	unsigned long room = min_t(unsigned long, want,
				   VB_PFNS_PER_REQ / VB_PFNS_PER_PAGE);
	struct page *page, *next;

	spin_lock(&vb->lock);
	if (room == VB_CHUNK_PAGES && !list_empty(chunks)) {
		page = list_first_entry(chunks, struct page, lru);
		list_del(&page->lru);
		vb_req_add(vb, req, page, VB_CHUNK_ORDER);
		req->chunk = true;
		goto out;
	}
	while (req->nr_pages < room) {
		if (list_empty(pages)) {
			if (list_empty(chunks))
				break;
			page = list_first_entry(chunks, struct page, lru);
			list_del(&page->lru);
			split_page(page, VB_CHUNK_ORDER);
			for (next = page; next < page + VB_CHUNK_PAGES; next++)
				list_add_tail(&next->lru, pages);
		}
		page = list_first_entry(pages, struct page, lru);
		list_del(&page->lru);
		vb_req_add(vb, req, page, 0);
	}
out:
	spin_unlock(&vb->lock);
}

/*
 * Has the device failed?  A ring the core marked broken (the host did
 * something impossible, or a surprise removal) never completes a request
 * again: the worker stops for good instead of retrying.
 */
static bool vb_broken(struct vballoon *vb)
{
	if (READ_ONCE(vb->broken))
		return true;
	if (!virtqueue_is_broken(vb->inflate_vq) &&
	    !virtqueue_is_broken(vb->deflate_vq))
		return false;
	if (!xchg(&vb->broken, true))
		dev_err(&vb->vdev->dev,
			"device is broken: balloon stopped at %llu KiB\n",
			VB_PAGES_TO_KB(READ_ONCE(vb->nr_held)));
	return true;
}

/*
 * Hand @req to the device and notify it.  Returns 0 or a negative errno.
 * With the chain layout the request is one element, a chain of 256-PFN
 * descriptors; with the single layout each descriptor is an element of
 * its own, and the request is done when the host has used them all.
 */
static int vb_submit(struct vballoon *vb, struct vb_req *req)
{
	struct virtqueue *vq = req->inflate ? vb->inflate_vq : vb->deflate_vq;
	struct scatterlist sg[VB_DESCS_PER_REQ];
	unsigned int i, n = DIV_ROUND_UP(req->nr_pfns, VB_PFNS_PER_DESC);
	bool notify = false;
	int err = 0;

	sg_init_table(sg, n);
	for (i = 0; i < n; i++) {
		unsigned int cnt = min_t(unsigned int, VB_PFNS_PER_DESC,
					 req->nr_pfns - i * VB_PFNS_PER_DESC);

		sg_set_buf(&sg[i], &req->pfns[i * VB_PFNS_PER_DESC],
			   cnt * sizeof(req->pfns[0]));
	}

	spin_lock_irq(&vb->vq_lock);
	if (vb->chain) {
		/*
		 * No allocation on this path: without room for an indirect
		 * table the ring takes direct descriptors.
		 */
		err = virtqueue_add_outbuf(vq, sg, n, req,
					   GFP_NOWAIT | __GFP_NOWARN);
		req->elems = !err;
	} else if (vq->num_free < n) {
		/* All elements of a request or none. */
		err = -ENOSPC;
	} else {
		req->elems = 0;
		for (i = 0; i < n && !err; i++) {
			sg_mark_end(&sg[i]);
			err = virtqueue_add_outbuf(vq, &sg[i], 1, req,
						   GFP_NOWAIT | __GFP_NOWARN);
			req->elems += !err;
		}
	}
	if (req->elems) {
		req->state = VB_REQ_INFLIGHT;
		notify = virtqueue_kick_prepare(vq);
	}
	spin_unlock_irq(&vb->vq_lock);

	/*
	 * The host may do all its work inside the notification: not under
	 * vq_lock.  A failed notification marks the ring broken; the
	 * request stays on it until reset (vb_engine_release()).
	 */
	if (notify)
		virtqueue_notify(vq);
	if (req->elems)
		return 0;
	return vb_broken(vb) ? -EIO : err;
}

void vb_vq_done(struct virtqueue *vq)
{
	struct vballoon *vb = vq->vdev->priv;
	struct vb_req *req;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&vb->vq_lock, flags);
	while ((req = virtqueue_get_buf(vq, &len)))
		if (!--req->elems)
			req->state = VB_REQ_DONE;
	spin_unlock_irqrestore(&vb->vq_lock, flags);
	wake_up_all(&vb->acked);
}

static enum vb_req_state vb_req_state(struct vballoon *vb, struct vb_req *req)
{
	enum vb_req_state state;

	spin_lock_irq(&vb->vq_lock);
	state = req->state;
	spin_unlock_irq(&vb->vq_lock);
	return state;
}

/*
 * Account an acknowledged request and make it idle again.  Inflated pages
 * join the balloon; deflated pages go back to the guest.  Returns the
 * pages moved.
 */
static unsigned long vb_complete(struct vballoon *vb, struct vb_req *req)
{
	unsigned int order = vb_order(req);
	unsigned long n = req->nr_pages;
	struct page *page, *next;

	if (req->inflate) {
		if (vb->adjust_managed)
			list_for_each_entry(page, &req->pages, lru)
				adjust_managed_page_count(page, -(1L << order));
		spin_lock(&vb->lock);
		list_splice_tail_init(&req->pages,
				      req->chunk ? &vb->chunks : &vb->pages);
		vb->nr_held += n;
		vb->stats.inflated_pages += n;
		vb->stats.inflate_reqs++;
		if (req->chunk)
			vb->stats.chunks_inflated++;
		spin_unlock(&vb->lock);
		vb_policy_inflated(vb, n);
	} else {
		spin_lock(&vb->lock);
		vb->nr_held -= n;
		vb->stats.deflated_pages += n;
		vb->stats.deflate_reqs++;
		spin_unlock(&vb->lock);
		list_for_each_entry_safe(page, next, &req->pages, lru) {
			list_del(&page->lru);
			if (vb->adjust_managed)
				adjust_managed_page_count(page, 1L << order);
			vb_page_free(page, order);
		}
	}
	vb_req_reset(req, req->inflate);
	spin_lock_irq(&vb->vq_lock);
	req->state = VB_REQ_IDLE;
	spin_unlock_irq(&vb->vq_lock);
	return n;
}

/* Give the pages of a request the host never saw (or forgot) back. */
static void vb_abandon(struct vballoon *vb, struct vb_req *req)
{
	unsigned int order = vb_order(req);
	struct page *page, *next;

	if (!req->inflate) {
		/* Still counted and accounted as ballooned. */
		spin_lock(&vb->lock);
		vb->nr_held -= req->nr_pages;
		spin_unlock(&vb->lock);
	}
	list_for_each_entry_safe(page, next, &req->pages, lru) {
		list_del(&page->lru);
		if (!req->inflate && vb->adjust_managed)
			adjust_managed_page_count(page, 1L << order);
		vb_page_free(page, order);
	}
	vb_req_reset(req, req->inflate);
	req->elems = 0;
	req->state = VB_REQ_IDLE;
}

/* Take back a request that never reached the device. */
static void vb_unfill(struct vballoon *vb, struct vb_req *req)
{
	struct page *page, *next;

	if (req->inflate) {
		list_for_each_entry_safe(page, next, &req->pages, lru) {
			list_del(&page->lru);
			vb_page_free(page, vb_order(req));
		}
	} else {
		/* Never left the balloon: back on its list. */
		spin_lock(&vb->lock);
		list_splice_tail_init(&req->pages,
				      req->chunk ? &vb->chunks : &vb->pages);
		spin_unlock(&vb->lock);
	}
	vb_req_reset(req, req->inflate);
}

/* Account every acknowledged worker request.  Returns pages moved. */
static unsigned long vb_reap(struct vballoon *vb)
{
	unsigned long moved = 0;
	unsigned int i;

	for (i = 0; i < VB_NR_REQS; i++)
		if (vb_req_state(vb, vb->reqs[i]) == VB_REQ_DONE)
			moved += vb_complete(vb, vb->reqs[i]);
	if (moved)
		vb_update_actual(vb, false);
	return moved;
}

static bool vb_stopping(struct vballoon *vb)
{
	bool stopping;

	spin_lock_irq(&vb->stop_lock);
	stopping = vb->stopping;
	spin_unlock_irq(&vb->stop_lock);
	return stopping;
}

/* Count worker requests in @state. */
static unsigned int vb_count_reqs(struct vballoon *vb, enum vb_req_state state)
{
	unsigned int i, n = 0;

	spin_lock_irq(&vb->vq_lock);
	for (i = 0; i < VB_NR_REQS; i++)
		n += vb->reqs[i]->state == state;
	spin_unlock_irq(&vb->vq_lock);
	return n;
}

/*
 * Wait until fewer than @busy worker requests are in flight, or until
 * @timeout jiffies pass (MAX_SCHEDULE_TIMEOUT: no limit), or, when
 * @stoppable, until the driver is stopping.
 */
static void vb_wait_reqs(struct vballoon *vb, unsigned int busy,
			 unsigned long timeout, bool stoppable)
{
	bool forever = timeout == MAX_SCHEDULE_TIMEOUT;
	unsigned long end = jiffies + (forever ? 0 : timeout);

	while (vb_count_reqs(vb, VB_REQ_INFLIGHT) >= busy) {
		if (stoppable && vb_stopping(vb))
			return;
		if (vb_broken(vb))
			return;
		if (!forever && time_after_eq(jiffies, end))
			return;
		wait_event_timeout(vb->acked,
				   vb_count_reqs(vb, VB_REQ_INFLIGHT) < busy ||
				   (stoppable && vb_stopping(vb)),
				   forever ? VB_ACK_POLL :
				   min_t(unsigned long, VB_ACK_POLL,
					 end - jiffies + 1));
	}
}

static struct vb_req *vb_idle_req(struct vballoon *vb)
{
	unsigned int i;

	for (i = 0; i < VB_NR_REQS; i++)
		if (vb_req_state(vb, vb->reqs[i]) == VB_REQ_IDLE)
			return vb->reqs[i];
	return NULL;
}

/*
 * Move up to @want pages into (@inflate) or out of the balloon, pipelined;
 * deflation takes them from @chunks and @pages.  Returns the pages moved;
 * *@short_alloc tells whether inflation stopped because allocation failed.
 * With @stoppable the run ends early when the driver stops, leaving
 * requests in flight for drain to collect.
 */
static unsigned long vb_move_from(struct vballoon *vb, bool inflate,
				  unsigned long want, bool *short_alloc,
				  bool stoppable, struct list_head *chunks,
				  struct list_head *pages)
{
	unsigned long queued = 0, moved = 0, progress = jiffies;
	unsigned int seq = READ_ONCE(vb->policy.seq), inflight;
	ktime_t start = ktime_get();
	struct vb_req *req;
	bool failed = false;
	int err;

	if (inflate)
		WRITE_ONCE(vb->inflating, true);
	while (queued < want && !failed) {
		if ((stoppable && vb_stopping(vb)) || vb_broken(vb))
			break;
		if (inflate && vb_policy_inflate_paused(vb, seq))
			break;
		moved += vb_reap(vb);
		req = vb_idle_req(vb);
		if (!req) {
			/* A host that stops answering ends a drain. */
			if (!stoppable &&
			    time_after(jiffies, progress + VB_DRAIN_TIMEOUT))
				break;
			vb_wait_reqs(vb, VB_NR_REQS, VB_ACK_POLL, stoppable);
			continue;
		}
		progress = jiffies;
		vb_req_reset(req, inflate);
		if (inflate)
			failed = vb_fill_inflate(vb, req, want - queued);
		else
			vb_fill_deflate(vb, req, want - queued, chunks, pages);
		if (!req->nr_pages)
			break;
		err = vb_submit(vb, req);
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
			vb_wait_reqs(vb, inflight, VB_ACK_POLL, stoppable);
			continue;
		}
		queued += req->nr_pages;
		cond_resched();
	}
	/* Wait for the whole batch; a drain waits a bounded time. */
	vb_wait_reqs(vb, 1, stoppable ? MAX_SCHEDULE_TIMEOUT : VB_DRAIN_TIMEOUT,
		     stoppable);
	moved += vb_reap(vb);
	if (inflate)
		WRITE_ONCE(vb->inflating, false);

	spin_lock(&vb->lock);
	if (inflate)
		vb->stats.inflate_ns += ktime_to_ns(ktime_sub(ktime_get(), start));
	else
		vb->stats.deflate_ns += ktime_to_ns(ktime_sub(ktime_get(), start));
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
			    &vb->chunks, &vb->pages);
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
 * With engine_lock held: give back up to @want pages from @chunks and
 * @pages, pages the caller took off the balloon's lists (still counted in
 * nr_held).  What the host did not take stays on them.  Returns the pages
 * given back.
 */
unsigned long vb_engine_deflate_from(struct vballoon *vb, unsigned long want,
				     struct list_head *chunks,
				     struct list_head *pages)
{
	bool short_alloc;

	lockdep_assert_held(&vb->engine_lock);
	return vb_move_from(vb, false, want, &short_alloc, false, chunks,
			    pages);
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
	bool short_alloc;

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
		 * Come back later when the policy paces this move, or after
		 * each batch, so the freezer never waits for a whole run.
		 */
		if (!again)
			again = VB_AGAIN_NOW;
		break;
	}
	mutex_unlock(&vb->engine_lock);

	/* A broken device gets no more runs: vb_broken() said so once. */
	if (again && !vb_broken(vb))
		vb_queue_work(vb, again);
}

/*
 * One shrinker deflation request: returns the pages it gave back, 0 if the
 * request could not be made or the host did not answer in time (it is then
 * completed by a later call or by drain).  Called with pressure_lock held.
 */
static unsigned long vb_pressure_round(struct vballoon *vb, unsigned long want)
{
	struct vb_req *req = vb->preq;

	if (vb_req_state(vb, req) != VB_REQ_IDLE)
		return 0;
	vb_req_reset(req, false);
	vb_fill_deflate(vb, req, want, &vb->chunks, &vb->pages);
	if (!req->nr_pages)
		return 0;
	if (vb_submit(vb, req)) {
		vb_unfill(vb, req);
		return 0;
	}
	wait_event_timeout(vb->acked, vb_req_state(vb, req) == VB_REQ_DONE,
			   VB_ACK_POLL);
	if (vb_req_state(vb, req) != VB_REQ_DONE) {
		/* The worker collects it once the host answers. */
		vb_queue_work(vb, VB_ACK_POLL);
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
	if (vb_req_state(vb, vb->preq) == VB_REQ_DONE)
		freed += vb_complete(vb, vb->preq);
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
	unsigned long held;
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
		if (!vb_move(vb, false, held, &short_alloc, false))
			break;
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
	unsigned long n = 0;
	unsigned int i;
	LIST_HEAD(chunks);
	LIST_HEAD(pages);

	mutex_lock(&vb->engine_lock);
	for (i = 0; i < VB_NR_REQS; i++)
		if (vb->reqs[i]->state != VB_REQ_IDLE)
			vb_abandon(vb, vb->reqs[i]);
	if (vb->preq->state != VB_REQ_IDLE)
		vb_abandon(vb, vb->preq);

	/*
	 * Take the lists under the lock, free outside it: the balloon may
	 * hold gigabytes, and freeing them one by one under a spinlock would
	 * stall every CPU that wants vb->lock (the shrinker among them).
	 */
	spin_lock(&vb->lock);
	list_splice_init(&vb->chunks, &chunks);
	list_splice_init(&vb->pages, &pages);
	vb->nr_held = 0;
	spin_unlock(&vb->lock);

	list_for_each_entry_safe(page, next, &chunks, lru) {
		list_del(&page->lru);
		if (vb->adjust_managed)
			adjust_managed_page_count(page, VB_CHUNK_PAGES);
		vb_page_free(page, VB_CHUNK_ORDER);
		n += VB_CHUNK_PAGES;
		cond_resched();
	}
	list_for_each_entry_safe(page, next, &pages, lru) {
		list_del(&page->lru);
		if (vb->adjust_managed)
			adjust_managed_page_count(page, 1);
		vb_page_free(page, 0);
		if (!(++n % VB_PFNS_PER_REQ))
			cond_resched();
	}
	mutex_unlock(&vb->engine_lock);
	/* Whatever the host believes, the balloon is empty now. */
	vb_update_actual(vb, true);

	if (n)
		dev_warn(&vb->vdev->dev,
			 "host did not acknowledge deflation; reclaimed %lu pages at reset\n",
			 n);
}
