// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: device binding, feature negotiation, virtqueues and lifecycle.
 *
 * Probe and remove are mirror images; freeze and restore reuse their
 * halves.  Every page handed to the host is given back to the guest before
 * the device is reset.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poison.h>
#include <linux/slab.h>
#include <linux/string_helpers.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vballoon.h"
#include "vb_version.h"

/*
 * The features this driver accepts.  The virtio core negotiates only what
 * is listed here and vb_validate() allows.  Every feature that owns a
 * virtqueue is accepted whenever it is offered, except the last one
 * (REPORTING): hosts number their queues differently when a driver
 * declines one in the middle (see vb_init_vqs()).
 */
static unsigned int vb_features[] = {
	VIRTIO_BALLOON_F_MUST_TELL_HOST,
	VIRTIO_BALLOON_F_STATS_VQ,
	VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
	VIRTIO_BALLOON_F_FREE_PAGE_HINT,
	VIRTIO_BALLOON_F_PAGE_POISON,
	VIRTIO_BALLOON_F_REPORTING,
};

/*
 * How inflate and deflate requests are laid out on the queues:
 *   chain   one element per request, a chain of 256-PFN descriptors, so a
 *           2 MiB chunk arrives whole (QEMU frees a host huge page only
 *           then).  Needs a host that reads every descriptor of a chain.
 *   single  one descriptor of at most 256 PFNs per element, which every
 *           host reads (Firecracker and older Cloud Hypervisor read only
 *           the head descriptor of an element).
 *   auto    chain where the transport identifies the host as QEMU,
 *           single everywhere else.
 */
static char *layout = "auto";
module_param(layout, charp, 0444);
MODULE_PARM_DESC(layout, "request layout: auto (default), chain or single");

/*
 * Hosts known to read every descriptor of an element, as the transport
 * identifies them.  virtio-mmio: the VendorID register ("QEMU", "CRVM";
 * Firecracker and Cloud Hypervisor put 0 there).  virtio-pci: every host
 * uses the 0x1af4 subsystem vendor, so the subsystem device tells: QEMU
 * puts the device ID (5) on transitional devices and 0x1100 on modern-only
 * ones, Firecracker, Cloud Hypervisor and crosvm put 0x1040 + device ID.
 */
#define VB_MMIO_VENDOR_QEMU	0x554d4551
#define VB_MMIO_VENDOR_CROSVM	0x4d565243
#define VB_PCI_SUBDEV_QEMU	0x1100

static bool vb_host_reads_chains(struct virtio_device *vdev)
{
	struct device *parent = vdev->dev.parent;

	if (vdev->id.vendor == VB_MMIO_VENDOR_QEMU ||
	    vdev->id.vendor == VB_MMIO_VENDOR_CROSVM)
		return true;
	if (parent && dev_is_pci(parent)) {
		u16 subdev = to_pci_dev(parent)->subsystem_device;

		return subdev == VIRTIO_ID_BALLOON || subdev == VB_PCI_SUBDEV_QEMU;
	}
	return false;
}

/* The request layout for @vdev; the layout parameter was checked at load. */
static bool vb_layout_chain(struct virtio_device *vdev)
{
	if (sysfs_streq(layout, "chain"))
		return true;
	if (sysfs_streq(layout, "single"))
		return false;
	return vb_host_reads_chains(vdev);
}

static const struct virtio_device_id vb_id_table[] = {
	{ VIRTIO_ID_BALLOON, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vb_id_table);

/* Does the guest fill freed pages (page_poison=1 or init_on_free=1)? */
static bool vb_guest_fills_free_pages(void)
{
	return page_poisoning_enabled_static() || want_init_on_free();
}

/* The one place negotiated feature bits turn into behaviour. */
static void vb_read_features(struct vballoon *vb)
{
	struct virtio_device *vdev = vb->vdev;
	u64 offered = vb_offered_features(vdev);

	vb->tell_host = virtio_has_feature(vdev,
					   VIRTIO_BALLOON_F_MUST_TELL_HOST);
	vb->deflate_on_oom = virtio_has_feature(vdev,
						VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
	vb->host_stats = virtio_has_feature(vdev, VIRTIO_BALLOON_F_STATS_VQ);
	vb->reporting = virtio_has_feature(vdev, VIRTIO_BALLOON_F_REPORTING);
	vb->page_poison = virtio_has_feature(vdev,
					     VIRTIO_BALLOON_F_PAGE_POISON);
	vb->hinting = virtio_has_feature(vdev,
					 VIRTIO_BALLOON_F_FREE_PAGE_HINT);
	/*
	 * A hinted page reaches the destination as whatever the host had
	 * there, which a guest that fills freed pages would read back.
	 */
	vb->hint_pages = vb->hinting && !vb_guest_fills_free_pages();
	vb->hint_off_why = NULL;
	if (vb->hinting && !vb->hint_pages)
		vb->hint_off_why = "no pages: guest fills freed pages";
	vb->reporting_off_why = NULL;
	if (!vb->reporting && (offered & BIT_ULL(VIRTIO_BALLOON_F_REPORTING)))
		vb->reporting_off_why = "guest poisons freed pages, host has no page-poison";
	vb->chain = vb_layout_chain(vdev);
	/*
	 * Without DEFLATE_ON_OOM ballooned memory is gone until the host
	 * gives it back, so it leaves MemTotal.  With it, the guest may take
	 * the memory back when it needs it, so it stays in MemTotal and shows
	 * as used (as the in-tree driver does); this also keeps heuristic
	 * overcommit from refusing mappings that deflation could back.
	 */
	vb->adjust_managed = !vb->deflate_on_oom;
}

static int vb_validate(struct virtio_device *vdev)
{
	/*
	 * PFNs are guest physical frame numbers; an IOMMU between driver and
	 * device would make them meaningless.
	 */
	__virtio_clear_bit(vdev, VIRTIO_F_ACCESS_PLATFORM);
	/*
	 * PAGE_POISON tells the host what free pages contain.  It only means
	 * something when the guest fills freed pages (page_poison=1 or
	 * init_on_free=1); otherwise decline it.  When the guest does fill
	 * them and the host cannot be told, a reported page would come back
	 * from the host as zeroes instead of the fill: the spec forbids
	 * REPORTING then.
	 */
	if (!vb_guest_fills_free_pages())
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_PAGE_POISON);
	else if (!virtio_has_feature(vdev, VIRTIO_BALLOON_F_PAGE_POISON))
		__virtio_clear_bit(vdev, VIRTIO_BALLOON_F_REPORTING);
	return 0;
}

/*
 * What freed pages hold: page poisoning takes precedence over
 * init_on_free in the page allocator, and init_on_free means zeroes.
 */
static u32 vb_poison_val(void)
{
	if (page_poisoning_enabled_static())
		return PAGE_POISON * 0x01010101U;
	return 0;
}

u32 vb_host_target(struct vballoon *vb)
{
	u32 num_pages;

	virtio_cread_le(vb->vdev, struct virtio_balloon_config, num_pages,
			&num_pages);
	/* num_pages counts 4 KiB frames. */
	return num_pages / VB_PFNS_PER_PAGE;
}

/*
 * Run the worker after @delay jiffies, or earlier if a run is already due
 * sooner: a request never postpones one made before it.
 */
void vb_queue_work(struct vballoon *vb, unsigned long delay)
{
	struct delayed_work *dw = &vb->work;
	unsigned long flags;

	spin_lock_irqsave(&vb->stop_lock, flags);
	if (vb->stopping)
		goto out_unlock;
	if (!delay || (delayed_work_pending(dw) &&
		       time_before(jiffies + delay, READ_ONCE(dw->timer.expires))))
		mod_delayed_work(vb->wq, dw, delay);
	else
		queue_delayed_work(vb->wq, dw, delay);
out_unlock:
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

static void vb_config_changed(struct virtio_device *vdev)
{
	struct vballoon *vb = vdev->priv;

	vb_queue_work(vb, 0);
	vb_hint_config_changed(vb);
}

/*
 * Virtqueues are numbered densely: only queues of negotiated features
 * exist, in the order the specification lists them.  Since every offered
 * feature that owns a queue is accepted (but REPORTING, the last), this
 * is also the numbering of hosts that count offered features (QEMU).
 */
static int vb_init_vqs(struct vballoon *vb)
{
	vq_callback_t *callbacks[VB_MAX_VQS];
	const char *names[VB_MAX_VQS];
	struct virtqueue *vqs[VB_MAX_VQS];
	unsigned int n = 0;
	int err;

	callbacks[n] = vb_vq_done;
	names[n++] = "inflate";
	callbacks[n] = vb_vq_done;
	names[n++] = "deflate";
	if (vb->host_stats) {
		callbacks[n] = vb_stats_vq_done;
		names[n++] = "stats";
	}
	if (vb->hinting) {
		callbacks[n] = vb_hint_vq_done;
		names[n++] = "free_page";
	}
	if (vb->reporting) {
		callbacks[n] = vb_report_vq_done;
		names[n++] = "reporting";
	}

	err = vb_find_vqs(vb->vdev, n, vqs, callbacks, names);
	if (err)
		return err;
	n = 0;
	vb->inflate_vq = vqs[n++];
	vb->deflate_vq = vqs[n++];
	vb->stats_vq = vb->host_stats ? vqs[n++] : NULL;
	vb->hint_vq = vb->hinting ? vqs[n++] : NULL;
	vb->report_vq = vb->reporting ? vqs[n++] : NULL;
	return 0;
}

/* Bring the device up; the second half of probe and all of restore. */
static int vb_start(struct vballoon *vb)
{
	int err;

	vb_read_features(vb);
	err = vb_init_vqs(vb);
	if (err)
		return err;

	/* Written before DRIVER_OK and never changed while it is set. */
	if (vb->page_poison) {
		u32 poison = vb_poison_val();

		virtio_cwrite_le(vb->vdev, struct virtio_balloon_config,
				 poison_val, &poison);
	}

	virtio_device_ready(vb->vdev);
	/*
	 * The host keeps actual across a reset (a guest reboot, a driver
	 * that went away without deflating): say what we hold now, nothing.
	 */
	vb_update_actual(vb, true);

	mutex_lock(&vb->pressure_lock);
	vb->vqs_ready = true;
	mutex_unlock(&vb->pressure_lock);

	spin_lock_irq(&vb->stop_lock);
	vb->stopping = false;
	spin_unlock_irq(&vb->stop_lock);

	vb_stats_start(vb);
	vb_report_start(vb);
	vb_hint_start(vb);
	/* Pick up a target the host set before we were ready. */
	vb_queue_work(vb, 0);
	return 0;
}

/*
 * Take the device down with every page back in the guest; the first half
 * of remove and all of freeze.
 */
static void vb_stop(struct vballoon *vb)
{
	spin_lock_irq(&vb->stop_lock);
	vb->stopping = true;
	spin_unlock_irq(&vb->stop_lock);
	/* Wake a worker waiting for acks so it sees stopping. */
	wake_up_all(&vb->acked);
	cancel_delayed_work_sync(&vb->work);
	cancel_work_sync(&vb->stats_work);
	cancel_work_sync(&vb->hint_work);
	/* Returns once no report is in flight; none start after. */
	vb_report_stop(vb);

	/* Shrinker deflations from here on find the queues unusable. */
	mutex_lock(&vb->pressure_lock);
	vb->vqs_ready = false;
	mutex_unlock(&vb->pressure_lock);

	/*
	 * A restore that failed left no queues and an empty balloon (freeze
	 * emptied it); the device, marked FAILED, still needs its reset.
	 */
	if (!vb->inflate_vq) {
		virtio_reset_device(vb->vdev);
		return;
	}
	/* Tell the host, while it still listens, that every page is back. */
	vb_engine_drain(vb);
	virtio_reset_device(vb->vdev);
	/* Whatever the host never acknowledged is ours again after reset. */
	vb_engine_release(vb);
	vb_hint_stop(vb);
	vb->vdev->config->del_vqs(vb->vdev);
	vb->inflate_vq = NULL;
	vb->deflate_vq = NULL;
	vb->stats_vq = NULL;
	vb->hint_vq = NULL;
	vb->report_vq = NULL;
}

static int vb_probe(struct virtio_device *vdev)
{
	struct vballoon *vb;
	int err;

	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config space access is not supported\n");
		return -EINVAL;
	}

	vb = kzalloc(sizeof(*vb), GFP_KERNEL);
	if (!vb)
		return -ENOMEM;
	vdev->priv = vb;
	vb->vdev = vdev;
	spin_lock_init(&vb->stop_lock);
	vb->stopping = true;
	spin_lock_init(&vb->vq_lock);
	init_waitqueue_head(&vb->acked);
	mutex_init(&vb->engine_lock);
	mutex_init(&vb->pressure_lock);
	spin_lock_init(&vb->lock);
	mutex_init(&vb->actual_lock);
	INIT_LIST_HEAD(&vb->chunks);
	vb_mm_init(vb);
	vb_hint_init(vb);
	INIT_DELAYED_WORK(&vb->work, vb_work_fn);
	INIT_WORK(&vb->stats_work, vb_stats_work_fn);
	INIT_WORK(&vb->hint_work, vb_hint_work_fn);

	err = vb_engine_init(vb);
	if (err)
		goto out_free_vb;

	/* Unbound, so statistics never wait behind a long inflation. */
	vb->wq = alloc_workqueue("vballoon", WQ_FREEZABLE | WQ_UNBOUND, 0);
	if (!vb->wq) {
		err = -ENOMEM;
		goto out_engine_exit;
	}
	vb->stats_wq = alloc_workqueue("vballoon_stats", WQ_FREEZABLE |
				       WQ_UNBOUND | WQ_MEM_RECLAIM, 0);
	if (!vb->stats_wq) {
		err = -ENOMEM;
		goto out_destroy_wq;
	}

	vb_read_features(vb);
	vb_policy_init(vb);

	err = vb_pressure_register(vb);
	if (err)
		goto out_destroy_stats_wq;

	err = vb_hint_register(vb);
	if (err)
		goto out_pressure_unregister;

	err = vb_mm_register(vb);
	if (err)
		goto out_hint_unregister;

	err = vb_start(vb);
	if (err)
		goto out_mm_unregister;

	vb_debugfs_add(vb);
	dev_info(&vdev->dev,
		 "bound: must-tell-host %s, deflate-on-oom %s, stats %s, reporting %s%s%s%s, page-poison %s, free-page-hint %s%s%s%s, layout %s, floor %llu KiB\n",
		 str_on_off(vb->tell_host), str_on_off(vb->deflate_on_oom),
		 str_on_off(vb->host_stats), str_on_off(vb->reporting),
		 vb->reporting_off_why ? " (" : "",
		 vb->reporting_off_why ?: "",
		 vb->reporting_off_why ? ")" : "",
		 str_on_off(vb->page_poison), str_on_off(vb->hinting),
		 vb->hint_off_why ? " (" : "", vb->hint_off_why ?: "",
		 vb->hint_off_why ? ")" : "",
		 vb->chain ? "chain" : "single", VB_PAGES_TO_KB(vb->floor));
	return 0;

out_mm_unregister:
	vb_mm_unregister(vb);
out_hint_unregister:
	vb_hint_unregister(vb);
out_pressure_unregister:
	vb_pressure_unregister(vb);
out_destroy_stats_wq:
	destroy_workqueue(vb->stats_wq);
out_destroy_wq:
	destroy_workqueue(vb->wq);
out_engine_exit:
	vb_engine_exit(vb);
out_free_vb:
	kfree(vb);
	vdev->priv = NULL;
	return err;
}

static void vb_remove(struct virtio_device *vdev)
{
	struct vballoon *vb = vdev->priv;

	vb_debugfs_remove(vb);
	vb_mm_unregister(vb);
	vb_stop(vb);
	vb_hint_unregister(vb);
	vb_pressure_unregister(vb);
	destroy_workqueue(vb->stats_wq);
	destroy_workqueue(vb->wq);
	vb_engine_exit(vb);
	kfree(vb);
}

#ifdef CONFIG_PM_SLEEP
static int vb_freeze(struct virtio_device *vdev)
{
	vb_stop(vdev->priv);
	return 0;
}

static int vb_restore(struct virtio_device *vdev)
{
	return vb_start(vdev->priv);
}
#endif

static struct virtio_driver vb_driver = {
	.feature_table		= vb_features,
	.feature_table_size	= ARRAY_SIZE(vb_features),
	.driver.name		= KBUILD_MODNAME,
	.driver.owner		= THIS_MODULE,
	.driver.dev_groups	= vb_groups,
	.id_table		= vb_id_table,
	.validate		= vb_validate,
	.probe			= vb_probe,
	.remove			= vb_remove,
	.config_changed		= vb_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze			= vb_freeze,
	.restore		= vb_restore,
#endif
};

static int __init vb_init(void)
{
	int err;

	if (!sysfs_streq(layout, "auto") && !sysfs_streq(layout, "chain") &&
	    !sysfs_streq(layout, "single")) {
		pr_err("layout=%s: expected auto, chain or single\n", layout);
		return -EINVAL;
	}
	vb_debugfs_init();
	err = register_virtio_driver(&vb_driver);
	if (err)
		vb_debugfs_exit();
	return err;
}

static void __exit vb_exit(void)
{
	unregister_virtio_driver(&vb_driver);
	vb_debugfs_exit();
}

module_init(vb_init);
module_exit(vb_exit);

MODULE_DESCRIPTION("Virtio balloon driver: fast, host-hugepage friendly, pressure aware");
MODULE_LICENSE("GPL");
MODULE_VERSION(VB_VERSION);
