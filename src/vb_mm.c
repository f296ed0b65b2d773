// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: living with the guest's memory management.
 *
 *  - Every page the balloon holds is PageOffline, from the moment it goes
 *    into an inflate request until it is freed: kdump tools, /proc/kcore
 *    and hibernation skip such pages instead of reading memory the host
 *    has discarded, and /proc/kpageflags shows them as KPF_OFFLINE.
 *  - Single balloon pages are movable: they live on the balloon core's
 *    list, and compaction and memory offlining migrate them through
 *    vb_migratepage(), which tells the host about the new page and the
 *    old one.
 *  - Chunks cannot move.  Memory offlining treats PageOffline pages as
 *    movable and leaves it to their owner to let go of them: when a range
 *    goes offline the balloon gives its chunks in that range back through
 *    the host, and the worker takes as many pages elsewhere, so offlining
 *    succeeds and the balloon keeps its size.
 *  - With DEFLATE_ON_OOM, an OOM notifier gives pages back as a last resort
 *    for the OOMs the shrinker's global gate cannot see: a task bound to
 *    a node (mempolicy, cpuset) runs out while the guest as a whole looks
 *    fine.  It prefers pages on the nodes that task may use.  The kernel
 *    calls OOM notifiers only for global and constrained OOMs, never for
 *    a memory cgroup's own limit, where deflating could not help.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpuset.h>
#include <linux/memory.h>
#include <linux/mempolicy.h>
#include <linux/mm.h>
#include <linux/nodemask.h>
#include <linux/notifier.h>
#include <linux/oom.h>

#include "vballoon.h"

/* Pages one OOM notification gives back: four chunks. */
#define VB_OOM_PAGES	(4 * VB_CHUNK_PAGES)

void vb_page_offline(struct page *page, unsigned int order)
{
	unsigned long i;

	for (i = 0; i < (1UL << order); i++)
		__SetPageOffline(page + i);
}

/*
 * Free a page of order 0 or VB_CHUNK_ORDER that the balloon marked.  The
 * balloon core may have cleared the mark of a single page already, when
 * the page left its list.
 */
void vb_page_free(struct page *page, unsigned int order)
{
	unsigned long i;

	for (i = 0; i < (1UL << order); i++)
		if (PageOffline(page + i))
			__ClearPageOffline(page + i);
	__free_pages(page, order);
}

static bool vb_in_range(struct page *page, unsigned long start,
			unsigned long end)
{
	unsigned long pfn = page_to_pfn(page);

	return pfn >= start && pfn < end;
}

/*
 * Move the pages of @from that @pick accepts, at most @max of them (in
 * PAGE_SIZE pages, whole entries), to @to.  Returns the pages moved.
 * Called with vb->lock held.
 */
static unsigned long vb_pick(struct list_head *from, struct list_head *to,
			     unsigned int order, unsigned long max,
			     bool (*pick)(struct page *page, void *arg),
			     void *arg)
{
	struct page *page, *next;
	unsigned long n = 0;

	list_for_each_entry_safe(page, next, from, lru) {
		if (n + (1UL << order) > max)
			break;
		if (!pick(page, arg))
			continue;
		list_move_tail(&page->lru, to);
		n += 1UL << order;
	}
	return n;
}

struct vb_range {
	unsigned long start;
	unsigned long end;
};

static bool vb_pick_range(struct page *page, void *arg)
{
	struct vb_range *r = arg;

	return vb_in_range(page, r->start, r->end);
}

/*
 * Give back every balloon chunk in [@start, @start + @nr) before that
 * memory goes offline (single pages there are migrated).  The range is
 * isolated, so nothing new lands there, and the freed chunks go straight
 * to the offlined range.
 */
static int vb_evict_range(struct vballoon *vb, unsigned long start,
			  unsigned long nr)
{
	struct vb_range r = { start, start + nr };
	unsigned long want, moved;
	LIST_HEAD(chunks);
	int err = 0;

	mutex_lock(&vb->engine_lock);
	if (!vb_engine_quiesce(vb)) {
		err = -EBUSY;
		goto out_unlock;
	}
	spin_lock(&vb->lock);
	want = vb_pick(&vb->chunks, &chunks, VB_CHUNK_ORDER, ULONG_MAX,
		       vb_pick_range, &r);
	spin_unlock(&vb->lock);
	if (!want)
		goto out_unlock;

	moved = vb_engine_deflate_chunks(vb, want, &chunks);
	spin_lock(&vb->lock);
	if (moved < want) {
		/* The host did not take them all: they stay ballooned. */
		list_splice(&chunks, &vb->chunks);
		err = -EBUSY;
	}
	vb->stats.offline_evictions++;
	vb->stats.offline_evicted_pages += moved;
	spin_unlock(&vb->lock);
	dev_info(&vb->vdev->dev,
		 "memory going offline at pfn %#lx: gave back %llu of %llu KiB of chunks there (single pages migrate)\n",
		 start, VB_PAGES_TO_KB(moved), VB_PAGES_TO_KB(want));
	/* Take as much again elsewhere. */
	vb_queue_work(vb, 0);
out_unlock:
	mutex_unlock(&vb->engine_lock);
	return err;
}

static int vb_memory_notify(struct notifier_block *nb, unsigned long action,
			    void *data)
{
	struct vballoon *vb = container_of(nb, struct vballoon, memory_nb);
	struct memory_notify *mn = data;

	if (action != MEM_GOING_OFFLINE)
		return NOTIFY_OK;
	return notifier_from_errno(vb_evict_range(vb, mn->start_pfn,
						  mn->nr_pages));
}

/*
 * The nodes the task that hit the OOM may allocate from: its cpuset,
 * narrowed by a bind memory policy (the other policies fall back to any
 * node before they OOM).
 */
static void vb_oom_nodes(nodemask_t *nodes)
{
	*nodes = cpuset_current_mems_allowed;
#ifdef CONFIG_NUMA
	if (current->mempolicy && current->mempolicy->mode == MPOL_BIND)
		nodes_and(*nodes, *nodes, current->mempolicy->nodes);
#endif
}

static bool vb_pick_node(struct page *page, void *arg)
{
	return node_isset(page_to_nid(page), *(nodemask_t *)arg);
}

/*
 * Put the balloon's chunks on @nodes first on its list, so the deflation
 * that follows gives those back.  Returns how many pages to deflate.
 * Without such a chunk, ask for fewer pages than a chunk holds: single
 * pages (the balloon core's list does not say which node they are on).
 */
static unsigned long vb_oom_prefer(struct vballoon *vb, nodemask_t *nodes)
{
	unsigned long chunks;
	LIST_HEAD(c);

	spin_lock(&vb->lock);
	chunks = vb_pick(&vb->chunks, &c, VB_CHUNK_ORDER, VB_OOM_PAGES,
			 vb_pick_node, nodes);
	list_splice(&c, &vb->chunks);
	spin_unlock(&vb->lock);

	return chunks ?: VB_CHUNK_PAGES - 1;
}

static int vb_oom_notify(struct notifier_block *nb, unsigned long unused,
			 void *data)
{
	struct vballoon *vb = container_of(nb, struct vballoon, oom_nb);
	unsigned long *freed = data;
	unsigned long n;
	nodemask_t nodes;

	/* Free page hints first: they cost the host nothing to give back. */
	n = vb_hint_shed(vb, VB_CHUNK_PAGES);
	if (n) {
		*freed += n;
		return NOTIFY_OK;
	}
	vb_oom_nodes(&nodes);
	mutex_lock(&vb->pressure_lock);
	n = vb_pressure_deflate(vb, vb_oom_prefer(vb, &nodes));
	mutex_unlock(&vb->pressure_lock);
	if (!n)
		return NOTIFY_OK;

	spin_lock(&vb->lock);
	vb->stats.oom_deflations++;
	vb->stats.oom_pages += n;
	spin_unlock(&vb->lock);
	/* Hold re-inflation off as after any pressure. */
	vb_policy_pressure(vb, n);
	*freed += n;
	return NOTIFY_OK;
}

/*
 * The balloon core's migration callback: compaction or memory offlining
 * isolated @page and allocated @newpage to take its place.
 */
static int __maybe_unused vb_migratepage(struct balloon_dev_info *bdev,
					 struct page *newpage,
					 struct page *page,
					 enum migrate_mode mode)
{
	struct vballoon *vb = container_of(bdev, struct vballoon, bdev);
	int err;

	err = vb_engine_migrate(vb, newpage, page);
	spin_lock(&vb->lock);
	if (err)
		vb->stats.migrate_busy++;
	else
		vb->stats.migrated_pages++;
	spin_unlock(&vb->lock);
	if (err)
		return err;
	if (vb->adjust_managed && page_zone(page) != page_zone(newpage)) {
		adjust_managed_page_count(page, 1);
		adjust_managed_page_count(newpage, -1);
	}
	return vb_balloon_migrated(bdev, newpage, page);
}

void vb_mm_init(struct vballoon *vb)
{
	balloon_devinfo_init(&vb->bdev);
	if (VB_BALLOON_MIGRATION)
		vb->bdev.migratepage = vb_migratepage;
}

int vb_mm_register(struct vballoon *vb)
{
	int err;

	vb->memory_nb.notifier_call = vb_memory_notify;
	err = register_memory_notifier(&vb->memory_nb);
	if (err)
		return err;
	if (!vb->deflate_on_oom)
		return 0;
	vb->oom_nb.notifier_call = vb_oom_notify;
	err = register_oom_notifier(&vb->oom_nb);
	if (err)
		goto out_unregister_memory;
	return 0;

out_unregister_memory:
	unregister_memory_notifier(&vb->memory_nb);
	return err;
}

void vb_mm_unregister(struct vballoon *vb)
{
	if (vb->deflate_on_oom)
		unregister_oom_notifier(&vb->oom_nb);
	unregister_memory_notifier(&vb->memory_nb);
}
