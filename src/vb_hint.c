// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: free page hinting (FREE_PAGE_HINT), the command handshake.
 *
 * Why this exists before hinting itself: hosts disagree on how queues are
 * numbered when a driver declines a feature that owns a queue.  QEMU
 * creates its queues from the features it offers (the free page queue is
 * index 3 whenever it offers FREE_PAGE_HINT, reporting comes after it),
 * while Firecracker numbers them from the negotiated features.  Accepting
 * FREE_PAGE_HINT whenever it is offered is the only choice both agree on,
 * so the reporting queue is found where every host put it.
 *
 * Having accepted it, vballoon answers every hinting round the host starts:
 * when the host publishes a new command ID in free_page_hint_cmd_id, the
 * driver sends that ID on the free page queue, then the STOP ID.  That is
 * a complete round that hints no pages, so the host migrates every page
 * (nothing is skipped that the guest could still be using), holds up
 * nothing and waits for nothing.  A DONE from the host needs no action:
 * no page is ever held for hinting.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/scatterlist.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"

static u32 vb_hint_cmd_id(struct vballoon *vb)
{
	u32 id;

	virtio_cread_le(vb->vdev, struct virtio_balloon_config,
			free_page_hint_cmd_id, &id);
	return id;
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

/*
 * Take back the buffers the host has used.  Returns true when none of ours
 * is still on the queue, so hint_bufs may be rewritten.
 */
static bool vb_hint_reap(struct vballoon *vb)
{
	unsigned int len;
	bool idle;

	spin_lock_irq(&vb->vq_lock);
	while (virtqueue_get_buf(vb->hint_vq, &len))
		vb->hint_inflight--;
	idle = !vb->hint_inflight;
	spin_unlock_irq(&vb->vq_lock);
	return idle;
}

void vb_hint_work_fn(struct work_struct *work)
{
	struct vballoon *vb = container_of(work, struct vballoon, hint_work);
	struct scatterlist sg_id, sg_stop;
	struct scatterlist *sgs[2];
	bool notify = false;
	u32 id;
	int err;

	if (!vb_hint_reap(vb))
		return;	/* the callback brings us back */
	id = vb_hint_cmd_id(vb);
	if (id == VIRTIO_BALLOON_CMD_ID_STOP ||
	    id == VIRTIO_BALLOON_CMD_ID_DONE || id == vb->hint_answered)
		return;

	vb->hint_bufs[0] = cpu_to_virtio32(vb->vdev, id);
	vb->hint_bufs[1] = cpu_to_virtio32(vb->vdev,
					   VIRTIO_BALLOON_CMD_ID_STOP);
	sg_init_one(&sg_id, &vb->hint_bufs[0], sizeof(vb->hint_bufs[0]));
	sg_init_one(&sg_stop, &vb->hint_bufs[1], sizeof(vb->hint_bufs[1]));
	sgs[0] = &sg_id;
	sgs[1] = &sg_stop;

	spin_lock_irq(&vb->vq_lock);
	/* Both or neither: a round is the start ID followed by STOP. */
	if (vb->hint_vq->num_free < 2) {
		err = -ENOSPC;
	} else {
		err = virtqueue_add_outbuf(vb->hint_vq, sgs[0], 1, vb,
					   GFP_NOWAIT | __GFP_NOWARN);
		if (!err) {
			vb->hint_inflight++;
			err = virtqueue_add_outbuf(vb->hint_vq, sgs[1], 1, vb,
						   GFP_NOWAIT | __GFP_NOWARN);
			if (!err)
				vb->hint_inflight++;
		}
		notify = vb->hint_inflight &&
			 virtqueue_kick_prepare(vb->hint_vq);
	}
	spin_unlock_irq(&vb->vq_lock);
	if (notify)
		virtqueue_notify(vb->hint_vq);
	if (!err)
		vb->hint_answered = id;
	else
		dev_notice_ratelimited(&vb->vdev->dev,
				       "cannot answer free page hint command %#x: %d\n",
				       id, err);
}

void vb_hint_start(struct vballoon *vb)
{
	vb->hint_inflight = 0;
	vb->hint_answered = VIRTIO_BALLOON_CMD_ID_STOP;
	/* A round the host started before we were ready. */
	vb_hint_kick(vb);
}
