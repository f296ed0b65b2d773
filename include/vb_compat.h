/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel API differences between the kernels vballoon builds for.
 *
 * Every difference is detected by a compile probe (scripts/probe-api.sh)
 * that writes vb_autoconf.h for the kernel being built against; this header
 * is the only place that looks at the result.  Nothing else in the driver
 * tests kernel versions.
 */
#ifndef _VB_COMPAT_H
#define _VB_COMPAT_H

#include <linux/page_reporting.h>
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/swap.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/vmstat.h>

#include "vb_autoconf.h"

#ifdef VB_HAVE_BALLOON_H
#include <linux/balloon.h>
#else
#include <linux/balloon_compaction.h>
#endif

#define VB_MAX_VQS	5

/*
 * Statistics tags 10-15 (virtio specification) reached the uapi header
 * later than the kernels we build for; the numbers are the spec's.
 */
#ifndef VIRTIO_BALLOON_S_OOM_KILL
#define VIRTIO_BALLOON_S_OOM_KILL	10
#define VIRTIO_BALLOON_S_ALLOC_STALL	11
#define VIRTIO_BALLOON_S_ASYNC_SCAN	12
#define VIRTIO_BALLOON_S_DIRECT_SCAN	13
#define VIRTIO_BALLOON_S_ASYNC_RECLAIM	14
#define VIRTIO_BALLOON_S_DIRECT_RECLAIM	15
#endif

/*
 * virtio_find_vqs() took parallel callback and name arrays until the
 * struct virtqueue_info form replaced them.
 */
static inline int vb_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			      struct virtqueue *vqs[],
			      vq_callback_t *callbacks[],
			      const char * const names[])
{
#ifdef VB_HAVE_VIRTQUEUE_INFO
	struct virtqueue_info info[VB_MAX_VQS] = {};
	unsigned int i;

	if (nvqs > VB_MAX_VQS)
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		info[i].name = names[i];
		info[i].callback = callbacks[i];
	}
	return virtio_find_vqs(vdev, nvqs, vqs, info, NULL);
#else
	return virtio_find_vqs(vdev, nvqs, vqs, callbacks, names, NULL);
#endif
}

/*
 * The first 64 feature bits the device offers (not only the negotiated
 * ones).  Transports implemented config->get_features() until the 128-bit
 * feature words came; since then the modern PCI transport implements only
 * get_extended_features(), and virtio_get_features() picks whichever the
 * transport has.
 */
static inline u64 vb_offered_features(struct virtio_device *vdev)
{
#ifdef VB_HAVE_VIRTIO_GET_FEATURES
	u64 features[VIRTIO_FEATURES_U64S] = {};

	virtio_get_features(vdev, features);
	return features[0];
#else
	return vdev->config->get_features(vdev);
#endif
}

/*
 * Shrinkers became separately allocated objects with a private pointer;
 * before that the caller embedded struct shrinker.  vb_shrinker_alloc()
 * hides the difference: it returns an unregistered shrinker whose private
 * pointer vb_shrinker_private() gives back, and vb_shrinker_free() undoes
 * both allocation and registration.
 */
#ifdef VB_HAVE_SHRINKER_ALLOC

static inline struct shrinker *vb_shrinker_alloc(const char *name, void *priv)
{
	struct shrinker *s = shrinker_alloc(0, "%s", name);

	if (s)
		s->private_data = priv;
	return s;
}

static inline int vb_shrinker_register(struct shrinker *s, const char *name)
{
	shrinker_register(s);
	return 0;
}

static inline void *vb_shrinker_private(struct shrinker *s)
{
	return s->private_data;
}

static inline void vb_shrinker_free(struct shrinker *s)
{
	shrinker_free(s);
}

#else /* !VB_HAVE_SHRINKER_ALLOC */

struct vb_shrinker_box {
	struct shrinker shrinker;
	void *priv;
	bool registered;
};

static inline struct shrinker *vb_shrinker_alloc(const char *name, void *priv)
{
	struct vb_shrinker_box *box = kzalloc(sizeof(*box), GFP_KERNEL);

	if (!box)
		return NULL;
	box->priv = priv;
	return &box->shrinker;
}

static inline int vb_shrinker_register(struct shrinker *s, const char *name)
{
	struct vb_shrinker_box *box = container_of(s, struct vb_shrinker_box,
						   shrinker);
	int err;

#ifdef VB_HAVE_REGISTER_SHRINKER_NAME
	err = register_shrinker(s, "%s", name);
#else
	err = register_shrinker(s);
#endif
	if (!err)
		box->registered = true;
	return err;
}

static inline void *vb_shrinker_private(struct shrinker *s)
{
	return container_of(s, struct vb_shrinker_box, shrinker)->priv;
}

static inline void vb_shrinker_free(struct shrinker *s)
{
	struct vb_shrinker_box *box = container_of(s, struct vb_shrinker_box,
						   shrinker);

	if (box->registered)
		unregister_shrinker(s);
	kfree(box);
}

#endif /* VB_HAVE_SHRINKER_ALLOC */

/*
 * Credit pages a shrinker handed back to the reclaim that called it, so
 * the page allocator sees progress and does not count the round as failed.
 */
static inline void vb_account_reclaimed(unsigned long pages)
{
#ifdef VB_HAVE_MM_ACCOUNT_RECLAIMED_PAGES
	mm_account_reclaimed_pages(pages);
#else
	if (current->reclaim_state)
		current->reclaim_state->reclaimed_slab += pages;
#endif
}

/*
 * The reclaim counters of statistics tags 12-15, in pages.  ev is the array
 * all_vm_events() filled; the counters were VM events until they moved to
 * the per-node stats (same names: only the probe tells which).
 */
static inline unsigned long vb_reclaim_count(const unsigned long *ev, int item)
{
#ifdef VB_HAVE_NODE_STAT_PGSCAN
	return global_node_page_state(item);
#else
	return ev[item];
#endif
}

/*
 * Free page reporting from the core's default order (pageblock_order, or
 * the page_reporting.page_reporting_order parameter).  An order of 0 asked
 * for that until 0 came to mean order 0 (4 KiB blocks) and
 * PAGE_REPORTING_ORDER_UNSPECIFIED to mean the default.
 */
static inline void vb_report_default_order(struct page_reporting_dev_info *pr)
{
#ifdef VB_HAVE_PAGE_REPORTING_ORDER_UNSPECIFIED
	pr->order = PAGE_REPORTING_ORDER_UNSPECIFIED;
#else
	pr->order = 0;
#endif
}

/*
 * Balloon page migration.  The balloon core keeps single balloon pages on
 * its list (struct balloon_dev_info) and lets compaction and memory
 * offlining move them through the driver's migratepage callback.  It was
 * CONFIG_BALLOON_COMPACTION in <linux/balloon_compaction.h>, where the
 * driver's callback also moves the pages on the list and drops the old
 * page's reference; it is CONFIG_BALLOON_MIGRATION in <linux/balloon.h>,
 * where the core does that itself once the callback returns 0.  Either
 * way the driver counts managed pages itself (the newer core's
 * adjust_managed_page_count flag stays false).
 */
#ifdef VB_HAVE_BALLOON_H
#define VB_BALLOON_MIGRATION	IS_ENABLED(CONFIG_BALLOON_MIGRATION)
#else
#define VB_BALLOON_MIGRATION	IS_ENABLED(CONFIG_BALLOON_COMPACTION)
#endif

/* Single balloon pages are movable where the core can migrate them. */
#define VB_GFP_MOVABLE		(VB_BALLOON_MIGRATION ? __GFP_MOVABLE : 0)

/*
 * Account a chunk joining (@pages > 0) or leaving the balloon the way the
 * balloon core accounts its single pages: the balloon_inflate and
 * balloon_deflate VM events, and with the newer core the node's
 * NR_BALLOON_PAGES (the "Balloon:" line of /proc/meminfo).
 */
static inline void vb_balloon_account(struct page *page, long pages)
{
#if defined(CONFIG_MEMORY_BALLOON) || defined(CONFIG_BALLOON)
	count_vm_events(pages > 0 ? BALLOON_INFLATE : BALLOON_DEFLATE,
			abs(pages));
#endif
#ifdef VB_HAVE_BALLOON_H
	mod_node_page_state(page_pgdat(page), NR_BALLOON_PAGES, pages);
#endif
}

/*
 * The host has @newpage in place of @page: put @newpage on the balloon's
 * list and let @page go, where the core leaves that to the driver.  The
 * return value is the migratepage callback's.
 */
static inline int vb_balloon_migrated(struct balloon_dev_info *b,
				      struct page *newpage, struct page *page)
{
#if defined(VB_HAVE_BALLOON_H)
	return 0;
#elif defined(CONFIG_BALLOON_COMPACTION)
	unsigned long flags;

	get_page(newpage);
	spin_lock_irqsave(&b->pages_lock, flags);
	balloon_page_insert(b, newpage);
	b->isolated_pages--;
	__count_vm_event(BALLOON_MIGRATE);
	spin_unlock_irqrestore(&b->pages_lock, flags);
	balloon_page_finalize(page);
	put_page(page);
	return MIGRATEPAGE_SUCCESS;
#else
	return -EAGAIN;		/* no migration: never called */
#endif
}

#endif /* _VB_COMPAT_H */
