// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: free page hinting (FREE_PAGE_HINT).
 *
 * While a migration copies guest RAM, the host may ask which guest pages
 * are free, so it can leave them out of the copy: it publishes a command
 * ID in free_page_hint_cmd_id.  For each new ID the driver opens a round:
 * it sends the ID on the free page queue (a device-readable buffer), then
 * free memory as device-writable buffers, one 4 MiB block each, then the
 * STOP ID.  The host clears the blocks from the copy it is making; a page
 * the guest writes afterwards is caught by the host's dirty log as usual.
 *
 * The blocks are allocated from the buddy allocator, so nothing else can
 * use (and dirty) them while the migration runs, and are held until the
 * host writes DONE (the migration finished or was cancelled).  Allocation
 * never reclaims and never wakes kswapd: hinting takes what is free above
 * the low watermark, nothing more.  When the guest needs the memory back
 * first, a shrinker (and the balloon's own pressure path and OOM notifier,
 * before they deflate) gives held blocks back, and the round stops taking
 * more.  The host keeps whatever the guest writes to such a block.
 *
 * A hinted page arrives on the destination as whatever the host had there
 * (zeroes, or an older copy), so hinting is only safe when the guest does
 * not rely on what its free pages hold.  With page_poison=1 or
 * init_on_free=1 it does, and QEMU does not fill hinted pages with
 * poison_val, so such a guest answers every round without pages: the ID,
 * then STOP.  The host then copies every page.
 *
 * FREE_PAGE_HINT is accepted whenever it is offered, even when no pages
 * are hinted: hosts disagree on how queues are numbered when a driver
 * declines a feature that owns a queue (QEMU counts offered features,
 * Firecracker negotiated ones), and accepting keeps the reporting queue
 * where both put it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/scatterlist.h>
#include <linux/shrinker.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"

/* Free memory only: no reclaim, no kswapd, no reserves, no warning. */
#define VB_HINT_GFP	(__GFP_NORETRY | __GFP_NOWARN | __GFP_NOMEMALLOC)

/*
 * The command ID as of the host's last configuration change.  It is read
 * only after one (and once at start): QEMU shows STOP in the field while a
 * round it requested is running, so a read in between would end every
 * round early.  The price: a host that changes the balloon's target
 * during a round ends it too, as the read then shows STOP.
 */
static u32 vb_hint_cmd_id(struct vballoon *vb)
{
	if (test_and_clear_bit(VB_HINT_REREAD, &vb->hint_flags))
		virtio_cread_le(vb->vdev, struct virtio_balloon_config,
				free_page_hint_cmd_id, &vb->hint_cmd);
	return vb->hint_cmd;
}

void vb_hint_config_changed(struct vballoon *vb)
{
	set_bit(VB_HINT_REREAD, &vb->hint_flags);
	vb_hint_kick(vb);
}

void vb_hint_vq_done(struct virtqueue *vq)
{
	struct vballoon *vb = vq->vdev->priv;

	vb_hint_kick(vb);
}

/* Queue the hint work unless the driver is stopping. */
void vb_hint_kick(struct vballoon *vb)
{
	unsigned long flags;

	if (!vb->hinting)
		return;
	spin_lock_irqsave(&vb->stop_lock, flags);
	if (!vb->stopping)
		queue_work(vb->wq, &vb->hint_work);
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

/* Give up to @want pages of held blocks back to the guest; returns pages. */
static unsigned long vb_hint_free_held(struct vballoon *vb, unsigned long want,
				       bool pressure)
{
	struct page *page, *next;
	unsigned long freed = 0;
	LIST_HEAD(blocks);

	spin_lock(&vb->hint_lock);
	list_for_each_entry_safe(page, next, &vb->hint_held, lru) {
		if (freed >= want)
			break;
		list_move(&page->lru, &blocks);
		freed += VB_HINT_PAGES;
	}
	vb->hint_nr_held -= freed;
	if (pressure)
		vb->hint_shed_pages += freed;
	spin_unlock(&vb->hint_lock);

	list_for_each_entry_safe(page, next, &blocks, lru) {
		list_del(&page->lru);
		__free_pages(page, VB_HINT_ORDER);
	}
	return freed;
}

/*
 * For reclaim and the balloon's pressure paths: give held blocks back
 * before anything else, and let the open round take no more.
 */
unsigned long vb_hint_shed(struct vballoon *vb, unsigned long want)
{
	if (!READ_ONCE(vb->hint_nr_held))
		return 0;
	WRITE_ONCE(vb->hint_shedding, true);
	return vb_hint_free_held(vb, max(want, VB_HINT_PAGES), true);
}

/* A block the host has used: held until DONE, or freed after it. */
static void vb_hint_used(struct vballoon *vb, struct page *page)
{
	if (!vb->hint_keep) {
		__free_pages(page, VB_HINT_ORDER);
		return;
	}
	spin_lock(&vb->hint_lock);
	list_add_tail(&page->lru, &vb->hint_held);
	vb->hint_nr_held += VB_HINT_PAGES;
	vb->hint_pages_sent += VB_HINT_PAGES;
	spin_unlock(&vb->hint_lock);
}

/* Take back every buffer the host has used. */
static void vb_hint_reap(struct vballoon *vb)
{
	LIST_HEAD(used);
	struct page *page, *next;
	unsigned int len;
	void *token;

	spin_lock_irq(&vb->vq_lock);
	while ((token = virtqueue_get_buf(vb->hint_vq, &len))) {
		if (token == &vb->hint_bufs[0]) {
			vb->hint_id_busy[0] = false;
		} else if (token == &vb->hint_bufs[1]) {
			vb->hint_id_busy[1] = false;
		} else {
			page = token;
			list_add_tail(&page->lru, &used);
			WRITE_ONCE(vb->hint_queued, vb->hint_queued - 1);
		}
	}
	spin_unlock_irq(&vb->vq_lock);

	list_for_each_entry_safe(page, next, &used, lru) {
		list_del(&page->lru);
		vb_hint_used(vb, page);
	}
}

/* Send one command ID (slot 0: a round's own, slot 1: STOP). */
static int vb_hint_send_id(struct vballoon *vb, unsigned int slot, u32 id)
{
	struct scatterlist sg;
	int err;

	vb->hint_bufs[slot] = cpu_to_virtio32(vb->vdev, id);
	sg_init_one(&sg, &vb->hint_bufs[slot], sizeof(vb->hint_bufs[slot]));
	spin_lock_irq(&vb->vq_lock);
	err = virtqueue_add_outbuf(vb->hint_vq, &sg, 1, &vb->hint_bufs[slot],
				   GFP_NOWAIT | __GFP_NOWARN);
	if (!err)
		vb->hint_id_busy[slot] = true;
	spin_unlock_irq(&vb->vq_lock);
	return err;
}

static void vb_hint_notify(struct vballoon *vb)
{
	bool notify;

	spin_lock_irq(&vb->vq_lock);
	notify = virtqueue_kick_prepare(vb->hint_vq);
	spin_unlock_irq(&vb->vq_lock);
	if (notify)
		virtqueue_notify(vb->hint_vq);
}

/*
 * Close the open round with STOP.  False when that has to wait for the
 * host to use a buffer first (its callback brings the work back).
 */
static bool vb_hint_close(struct vballoon *vb)
{
	int err;

	if (vb->hint_id_busy[1] || !vb->hint_vq->num_free) {
		vb_hint_notify(vb);
		return false;
	}
	err = vb_hint_send_id(vb, 1, VIRTIO_BALLOON_CMD_ID_STOP);
	vb_hint_notify(vb);
	if (err) {
		dev_notice_ratelimited(&vb->vdev->dev,
				       "cannot end free page hint round %#x: %d\n",
				       vb->hint_answered, err);
		return false;
	}
	vb->hint_active = false;
	return true;
}

/* Open a round for @id; false to wait for room on the queue. */
static bool vb_hint_open(struct vballoon *vb, u32 id)
{
	int err;

	/* Room for the ID and, whatever happens, for the STOP after it. */
	if (vb->hint_id_busy[0] || vb->hint_vq->num_free < 2) {
		vb_hint_notify(vb);
		return false;
	}
	err = vb_hint_send_id(vb, 0, id);
	if (err) {
		dev_notice_ratelimited(&vb->vdev->dev,
				       "cannot answer free page hint command %#x: %d\n",
				       id, err);
		vb->hint_answered = id;
		return false;
	}
	vb->hint_answered = id;
	vb->hint_active = true;
	vb->hint_keep = vb->hint_pages;
	WRITE_ONCE(vb->hint_shedding, false);
	spin_lock(&vb->hint_lock);
	vb->hint_rounds++;
	spin_unlock(&vb->hint_lock);
	return true;
}

enum vb_hint_fill {
	VB_HINT_FILLED,		/* the round is over: send STOP */
	VB_HINT_QUEUE_FULL,	/* the host's callback resumes the round */
	VB_HINT_RECHECK,	/* the host changed the configuration */
};

/*
 * Send free blocks until memory above the low watermark runs out, the
 * host changes its configuration, the guest wants memory back or the
 * driver stops.
 */
static enum vb_hint_fill vb_hint_fill(struct vballoon *vb)
{
	struct scatterlist sg;
	struct page *page;
	int err;

	while (vb->hint_pages) {
		cond_resched();
		if (test_bit(VB_HINT_REREAD, &vb->hint_flags)) {
			vb_hint_notify(vb);
			return VB_HINT_RECHECK;
		}
		if (READ_ONCE(vb->stopping) || READ_ONCE(vb->hint_shedding))
			break;
		/* One descriptor stays free for STOP. */
		if (vb->hint_vq->num_free < 2) {
			vb_hint_notify(vb);
			return VB_HINT_QUEUE_FULL;
		}
		page = alloc_pages(VB_HINT_GFP, VB_HINT_ORDER);
		if (!page)
			break;
		sg_init_table(&sg, 1);
		sg_set_page(&sg, page, VB_HINT_PAGES * PAGE_SIZE, 0);
		spin_lock_irq(&vb->vq_lock);
		err = virtqueue_add_inbuf(vb->hint_vq, &sg, 1, page,
					  GFP_NOWAIT | __GFP_NOWARN);
		if (!err)
			WRITE_ONCE(vb->hint_queued, vb->hint_queued + 1);
		spin_unlock_irq(&vb->vq_lock);
		if (err) {
			__free_pages(page, VB_HINT_ORDER);
			break;
		}
		/* At once: the host's copy is racing past free memory. */
		vb_hint_notify(vb);
	}
	return VB_HINT_FILLED;
}

void vb_hint_work_fn(struct work_struct *work)
{
	struct vballoon *vb = container_of(work, struct vballoon, hint_work);
	u32 id;

again:
	vb_hint_reap(vb);
	id = vb_hint_cmd_id(vb);
	/* The host moved on (STOP, DONE or a new round): end ours. */
	if (vb->hint_active && id != vb->hint_answered && !vb_hint_close(vb))
		return;
	if (id == VIRTIO_BALLOON_CMD_ID_DONE) {
		/* The migration is over: the held blocks are the guest's. */
		if (vb->hint_keep) {
			vb->hint_keep = false;
			vb_hint_free_held(vb, ULONG_MAX, false);
		}
		/*
		 * Blocks still queued when the source stopped sit on the
		 * destination's queue, which looks at it only when told:
		 * tell it (a notification the ring might suppress, as
		 * nothing new was added), and they come back to be freed.
		 */
		if (vb->hint_queued)
			virtqueue_notify(vb->hint_vq);
		return;
	}
	if (id == VIRTIO_BALLOON_CMD_ID_STOP)
		return;
	if (!vb->hint_active &&
	    (id == vb->hint_answered || !vb_hint_open(vb, id)))
		return;
	switch (vb_hint_fill(vb)) {
	case VB_HINT_FILLED:
		vb_hint_close(vb);
		break;
	case VB_HINT_QUEUE_FULL:
		break;
	case VB_HINT_RECHECK:
		goto again;
	}
}

void vb_hint_start(struct vballoon *vb)
{
	vb->hint_answered = VIRTIO_BALLOON_CMD_ID_STOP;
	vb->hint_active = false;
	vb->hint_keep = false;
	vb->hint_id_busy[0] = false;
	vb->hint_id_busy[1] = false;
	vb->hint_cmd = VIRTIO_BALLOON_CMD_ID_STOP;
	/* A round the host started before we were ready. */
	vb_hint_config_changed(vb);
}

/*
 * After the device reset, with the work cancelled: every block, on the
 * queue or held, goes back to the guest.
 */
void vb_hint_stop(struct vballoon *vb)
{
	void *token;

	if (!vb->hint_vq)
		return;
	while ((token = virtqueue_detach_unused_buf(vb->hint_vq))) {
		if (token != &vb->hint_bufs[0] && token != &vb->hint_bufs[1])
			__free_pages(token, VB_HINT_ORDER);
	}
	vb->hint_active = false;
	vb->hint_keep = false;
	vb->hint_queued = 0;
	vb_hint_free_held(vb, ULONG_MAX, false);
}

static unsigned long vb_hint_count(struct shrinker *s,
				   struct shrink_control *sc)
{
	struct vballoon *vb = vb_shrinker_private(s);

	return READ_ONCE(vb->hint_nr_held);
}

static unsigned long vb_hint_scan(struct shrinker *s,
				  struct shrink_control *sc)
{
	struct vballoon *vb = vb_shrinker_private(s);
	unsigned long freed;

	freed = vb_hint_shed(vb, sc->nr_to_scan);
	if (!freed)
		return SHRINK_STOP;
	sc->nr_scanned = max(sc->nr_scanned, freed);
	vb_account_reclaimed(freed);
	return freed;
}

void vb_hint_init(struct vballoon *vb)
{
	spin_lock_init(&vb->hint_lock);
	INIT_LIST_HEAD(&vb->hint_held);
}

/* The shrinker that gives held blocks back; only when pages are hinted. */
int vb_hint_register(struct vballoon *vb)
{
	struct shrinker *s;

	if (!vb->hint_pages)
		return 0;
	/* seeks 0: free memory on loan, half of it per call, before anything. */
	s = vb_shrinker_add("vballoon-hint", vb, vb_hint_count, vb_hint_scan, 0);
	if (IS_ERR(s))
		return PTR_ERR(s);
	vb->hint_shrinker = s;
	return 0;
}

void vb_hint_unregister(struct vballoon *vb)
{
	if (vb->hint_shrinker)
		vb_shrinker_free(vb->hint_shrinker);
	vb->hint_shrinker = NULL;
}
