// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: free page reporting (REPORTING).
 *
 * The page reporting core hands us batches of free, isolated high-order
 * blocks; each batch goes to the host on the reporting queue as one
 * request, and we return only when the host has acknowledged it, because
 * the core puts the pages back on the free lists as soon as we return.
 * With PAGE_POISON negotiated the host knows what those pages must contain
 * afterwards (vb_main.c writes poison_val).
 *
 * Only one page reporting user can exist in a kernel; if another driver
 * holds it, vballoon goes on without reporting.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/page_reporting.h>
#include <linux/scatterlist.h>
#include <linux/virtio.h>

#include "vballoon.h"

void vb_report_vq_done(struct virtqueue *vq)
{
	struct vballoon *vb = vq->vdev->priv;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&vb->vq_lock, flags);
	while (virtqueue_get_buf(vq, &len))
		vb->report_busy = false;
	spin_unlock_irqrestore(&vb->vq_lock, flags);
	wake_up_all(&vb->acked);
}

static bool vb_report_acked(struct vballoon *vb)
{
	bool busy;

	spin_lock_irq(&vb->vq_lock);
	busy = vb->report_busy;
	spin_unlock_irq(&vb->vq_lock);
	return !busy;
}

static int vb_report(struct page_reporting_dev_info *pr,
		     struct scatterlist *sg, unsigned int nents)
{
	struct vballoon *vb = container_of(pr, struct vballoon, pr_dev);
	bool notify;
	int err;

	spin_lock_irq(&vb->vq_lock);
	/* The device writes nothing; in-buffers are what the spec asks for. */
	err = virtqueue_add_inbuf(vb->report_vq, sg, nents, vb,
				  GFP_NOWAIT | __GFP_NOWARN);
	if (!err)
		vb->report_busy = true;
	notify = !err && virtqueue_kick_prepare(vb->report_vq);
	spin_unlock_irq(&vb->vq_lock);
	if (err)
		return err;
	if (notify)
		virtqueue_notify(vb->report_vq);

	/* The pages must not be reused before the host is done with them. */
	wait_event(vb->acked, vb_report_acked(vb));
	return 0;
}

void vb_report_start(struct vballoon *vb)
{
	int err;

	if (!vb->reporting)
		return;
	vb->pr_dev.report = vb_report;
	vb_report_default_order(&vb->pr_dev);
	err = page_reporting_register(&vb->pr_dev);
	if (err == -EBUSY) {
		dev_notice(&vb->vdev->dev,
			   "another driver reports free pages; vballoon will not\n");
		return;
	}
	if (err) {
		dev_warn(&vb->vdev->dev,
			 "free page reporting unavailable (%d)\n", err);
		return;
	}
	vb->pr_registered = true;
}

void vb_report_stop(struct vballoon *vb)
{
	if (!vb->pr_registered)
		return;
	page_reporting_unregister(&vb->pr_dev);
	vb->pr_registered = false;
}
