// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: inflate and deflate requests.
 *
 * A request carries up to one chunk's worth of pages to the host: this
 * file fills requests (allocating pages for inflation, taking them off
 * the balloon for deflation), hands them to the device, collects the
 * host's answers and accounts what was moved.  The worker's pipeline
 * and the synchronous users (shrinker, migration, drain) are in
 * vb_engine.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/sched.h>
#include <linux/sched/clock.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"
#include "vb_req.h"

/*
 * Balloon pages must not disturb the guest: no OOM killer, no dipping into
 * reserves, no warnings; direct reclaim may take clean page cache.  Chunks
 * try one light round of reclaim and compaction in our own context but do
 * not wake kswapd or kcompactd: a failed 2 MiB attempt falls back to single
 * pages for VB_CHUNK_RETRY instead of making the whole guest work for us.
 * Single pages are movable (the balloon core migrates them, vb_mm.c), so
 * they may come from ZONE_MOVABLE and CMA; chunks cannot move and stay out
 * of both.  A chunk is a whole pageblock, so it fragments nothing.
 */
#define VB_GFP_BASE	(GFP_HIGHUSER | __GFP_NORETRY | __GFP_NOWARN | \
			 __GFP_NOMEMALLOC)
#define VB_GFP_PAGE	(VB_GFP_BASE | VB_GFP_MOVABLE)
#define VB_GFP_CHUNK	(VB_GFP_BASE & ~__GFP_KSWAPD_RECLAIM)
/* After a failed chunk allocation, use single pages for this long. */
#define VB_CHUNK_RETRY		HZ
/* How often inflation looks again for holes single pages can fill. */
#define VB_HOLES_PROBE		HZ
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
	vb->mreq = vb_req_alloc();
	if (!vb->preq || !vb->mreq)
		goto out_free_reqs;
	/* Relative to jiffies: 0 is in the future on a fresh 32-bit one. */
	vb->chunk_retry = jiffies;
	vb->holes_probe = jiffies;
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
	kfree(vb->mreq);
	vb->mreq = NULL;
}

unsigned int vb_order(struct vb_req *req)
{
	return req->chunk ? VB_CHUNK_ORDER : 0;
}

void vb_req_reset(struct vb_req *req, bool inflate)
{
	INIT_LIST_HEAD(&req->pages);
	req->nr_pages = 0;
	req->nr_pfns = 0;
	req->chunk = false;
	req->inflate = inflate;
	req->alloc_ns = 0;
	req->submit_ns = 0;
}

/*
 * Put the 4 KiB PFNs of a page (of order 0 or VB_CHUNK_ORDER) on @req,
 * and mark an inflated page offline: from here on the host may discard
 * it.  Returns false for a page the protocol cannot name.
 */
bool vb_req_pfns(struct vballoon *vb, struct vb_req *req,
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
	if (req->inflate)
		vb_page_offline(page, order);
	return true;
}

/* Add a page and its PFNs to @req, which owns the page from now on. */
bool vb_req_add(struct vballoon *vb, struct vb_req *req,
		struct page *page, unsigned int order)
{
	if (!vb_req_pfns(vb, req, page, order))
		return false;
	list_add_tail(&page->lru, &req->pages);
	req->nr_pages += 1U << order;
	return true;
}

/*
 * Allocate up to @want pages into an empty inflate request.  Returns true
 * if allocation failed before the request was full.
 */
bool vb_fill_inflate(struct vballoon *vb, struct vb_req *req,
		     unsigned long want)
{
	unsigned long room = min_t(unsigned long, want,
				   VB_PFNS_PER_REQ / VB_PFNS_PER_PAGE);
	unsigned long big = 0;
	bool failed = false, probe = false;
	struct page *page;
	u64 t0;

	WRITE_ONCE(vb->inflater, current);
	if (want >= VB_CHUNK_PAGES && time_after_eq(jiffies, vb->chunk_retry)) {
		if (time_after_eq(jiffies, vb->holes_probe)) {
			vb->fill_holes = true;
			vb->holes_probe = jiffies + VB_HOLES_PROBE;
		}
		probe = vb->fill_holes;
	}
	/* The floor decides whether these pages may go (vb_policy.c). */
	if (want >= VB_CHUNK_PAGES && time_after_eq(jiffies, vb->chunk_retry) &&
	    !probe && vb_policy_take() == VB_TAKE_CHUNK &&
	    vb_policy_may_take(vb, VB_CHUNK_PAGES, VB_CHUNK_ORDER)) {
		t0 = local_clock();
		page = alloc_pages(VB_GFP_CHUNK, VB_CHUNK_ORDER);
		req->alloc_ns += local_clock() - t0;
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
	if (probe)
		big = vb_policy_big_free();
	/* Timed per request (noting PFNs included), not per page. */
	t0 = local_clock();
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
	req->alloc_ns += local_clock() - t0;
	/*
	 * These pages broke up a free 2 MiB block: no holes left to fill.
	 * A failed allocation says no more about holes, only that single
	 * pages are short now: chunks next, and another probe later.
	 */
	if (probe && (failed || vb_policy_big_free() + VB_CHUNK_PAGES <= big))
		vb->fill_holes = false;
out:
	WRITE_ONCE(vb->inflater, NULL);
	return failed;
}

/*
 * Take up to @want pages into an empty deflate request: chunks from
 * @chunks (the balloon's list, or chunks a caller took off it) and, with
 * @singles, single pages from the balloon core's list.  Whole chunks go
 * first (they give the guest back huge pages); a chunk is split only when
 * fewer pages than a chunk are wanted and no single page is left, and
 * the pages of it not needed join the core's list.  The pages stay
 * counted in nr_held until the host acknowledges.
 */
void vb_fill_deflate(struct vballoon *vb, struct vb_req *req,
		     unsigned long want, struct list_head *chunks,
		     bool singles)
{
	unsigned long room = min_t(unsigned long, want,
				   VB_PFNS_PER_REQ / VB_PFNS_PER_PAGE);
	struct page *page, *next;
	unsigned long i;
	LIST_HEAD(got);

	spin_lock(&vb->lock);
	if (room == VB_CHUNK_PAGES && !list_empty(chunks)) {
		page = list_first_entry(chunks, struct page, lru);
		list_del(&page->lru);
		vb_req_add(vb, req, page, VB_CHUNK_ORDER);
		req->chunk = true;
		goto out;
	}
	while (singles && req->nr_pages < room) {
		if (balloon_page_list_dequeue(&vb->bdev, &got,
					      room - req->nr_pages)) {
			list_for_each_entry_safe(page, next, &got, lru) {
				list_del(&page->lru);
				vb_req_add(vb, req, page, 0);
			}
			continue;
		}
		/* None left, or all of them being migrated. */
		if (list_empty(&vb->chunks))
			break;
		page = list_first_entry(&vb->chunks, struct page, lru);
		list_del(&page->lru);
		/* The core accounts the pages of it that stay. */
		vb_balloon_account(page, -VB_CHUNK_PAGES);
		split_page(page, VB_CHUNK_ORDER);
		for (i = 0; i < VB_CHUNK_PAGES; i++) {
			if (req->nr_pages < room)
				vb_req_add(vb, req, page + i, 0);
			else
				list_add_tail(&page[i].lru, &got);
		}
		balloon_page_list_enqueue(&vb->bdev, &got);
	}
out:
	spin_unlock(&vb->lock);
}

/*
 * Has the device failed?  A ring the core marked broken (the host did
 * something impossible, or a surprise removal) never completes a request
 * again: the worker stops for good instead of retrying.
 */
bool vb_broken(struct vballoon *vb)
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
int vb_submit(struct vballoon *vb, struct vb_req *req)
{
	struct virtqueue *vq = req->inflate ? vb->inflate_vq : vb->deflate_vq;
	struct scatterlist sg[VB_DESCS_PER_REQ];
	unsigned int i, n = DIV_ROUND_UP(req->nr_pfns, VB_PFNS_PER_DESC);
	u64 t0 = local_clock();
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
	req->submit_ns += local_clock() - t0;
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

enum vb_req_state vb_req_state(struct vballoon *vb, struct vb_req *req)
{
	enum vb_req_state state;

	spin_lock_irq(&vb->vq_lock);
	state = req->state;
	spin_unlock_irq(&vb->vq_lock);
	return state;
}

/*
 * adjust_managed_page_count() is two atomic additions (the zone's count and
 * the global one).  A request's pages mostly come from one zone, so they
 * are counted per run of pages in the same zone, not per page: the larger
 * part of accounting an order-0 request otherwise.
 */
struct vb_managed {
	struct zone *zone;	/* of the run being counted, or NULL */
	struct page *page;	/* a page of that zone */
	long count;		/* pages of the run not counted yet */
};

static void vb_managed_flush(struct vb_managed *m)
{
	if (m->zone && m->count)
		adjust_managed_page_count(m->page, m->count);
	m->zone = NULL;
	m->count = 0;
}

static void vb_managed_add(struct vb_managed *m, struct page *page,
			   long count)
{
	struct zone *zone = page_zone(page);

	if (zone != m->zone) {
		vb_managed_flush(m);
		m->zone = zone;
		m->page = page;
	}
	m->count += count;
}

/* Managed page accounting for every page of a request. */
static void vb_managed_req(struct vballoon *vb, struct vb_req *req,
			   bool to_balloon)
{
	long count = 1L << vb_order(req);
	struct vb_managed m = { };
	struct page *page;

	if (!vb->adjust_managed)
		return;
	list_for_each_entry(page, &req->pages, lru)
		vb_managed_add(&m, page, to_balloon ? -count : count);
	vb_managed_flush(&m);
}

/*
 * Account an acknowledged request and make it idle again.  Inflated pages
 * join the balloon; deflated pages go back to the guest.  Returns the
 * pages moved.
 */
unsigned long vb_complete(struct vballoon *vb, struct vb_req *req)
{
	unsigned int order = vb_order(req);
	unsigned long n = req->nr_pages;
	struct page *page, *next;

	if (req->inflate) {
		vb_managed_req(vb, req, true);
		if (req->chunk)
			list_for_each_entry(page, &req->pages, lru)
				vb_balloon_account(page, VB_CHUNK_PAGES);
		spin_lock(&vb->lock);
		if (req->chunk)
			list_splice_tail_init(&req->pages, &vb->chunks);
		else
			balloon_page_list_enqueue(&vb->bdev, &req->pages);
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
		/* Counted as the guest's again before they are freed. */
		vb_managed_req(vb, req, false);
		list_for_each_entry_safe(page, next, &req->pages, lru) {
			list_del(&page->lru);
			if (req->chunk)
				vb_balloon_account(page, -VB_CHUNK_PAGES);
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
void vb_abandon(struct vballoon *vb, struct vb_req *req)
{
	unsigned int order = vb_order(req);
	struct page *page, *next;

	if (!req->inflate) {
		/* Still counted and accounted as ballooned. */
		spin_lock(&vb->lock);
		vb->nr_held -= req->nr_pages;
		spin_unlock(&vb->lock);
		vb_managed_req(vb, req, false);
	}
	list_for_each_entry_safe(page, next, &req->pages, lru) {
		list_del(&page->lru);
		if (!req->inflate && req->chunk)
			vb_balloon_account(page, -VB_CHUNK_PAGES);
		vb_page_free(page, order);
	}
	vb_req_reset(req, req->inflate);
	req->elems = 0;
	req->state = VB_REQ_IDLE;
}

/* Take back a request that never reached the device. */
void vb_unfill(struct vballoon *vb, struct vb_req *req)
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
		if (req->chunk)
			list_splice_tail_init(&req->pages, &vb->chunks);
		else
			balloon_page_list_enqueue(&vb->bdev, &req->pages);
		spin_unlock(&vb->lock);
	}
	vb_req_reset(req, req->inflate);
}

/* Account every acknowledged worker request.  Returns pages moved. */
unsigned long vb_reap(struct vballoon *vb)
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

bool vb_stopping(struct vballoon *vb)
{
	bool stopping;

	spin_lock_irq(&vb->stop_lock);
	stopping = vb->stopping;
	spin_unlock_irq(&vb->stop_lock);
	return stopping;
}

/* Count worker requests in @state. */
unsigned int vb_count_reqs(struct vballoon *vb, enum vb_req_state state)
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
void vb_wait_reqs(struct vballoon *vb, unsigned int busy,
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

struct vb_req *vb_idle_req(struct vballoon *vb)
{
	unsigned int i;

	for (i = 0; i < VB_NR_REQS; i++)
		if (vb_req_state(vb, vb->reqs[i]) == VB_REQ_IDLE)
			return vb->reqs[i];
	return NULL;
}
