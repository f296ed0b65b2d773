// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: living with the guest's memory management.
 *
 *  - Every page the balloon holds is PageOffline, from the moment it goes
 *    into an inflate request until it is freed: kdump tools, /proc/kcore
 *    and hibernation skip such pages instead of reading memory the host
 *    has discarded, and /proc/kpageflags shows them as KPF_OFFLINE.
 *  - Memory offlining treats PageOffline pages as movable and leaves it to
 *    their owner to let go of them.  When a range goes offline the balloon
 *    gives its pages in that range back through the host, and the worker
 *    takes as many elsewhere, so offlining succeeds and the balloon keeps
 *    its size.
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

/* Free a page of order 0 or VB_CHUNK_ORDER that the balloon marked. */
void vb_page_free(struct page *page, unsigned int order)
{
	unsigned long i;

	for (i = 0; i < (1UL << order); i++)
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
 * Give back every balloon page in [@start, @start + @nr) before that
 * memory goes offline.  The range is isolated, so nothing new lands
 * there, and the freed pages go straight to the offlined range.
 */
static int vb_evict_range(struct vballoon *vb, unsigned long start,
			  unsigned long nr)
{
	struct vb_range r = { start, start + nr };
	unsigned long want, moved;
	LIST_HEAD(chunks);
	LIST_HEAD(pages);
	int err = 0;

	mutex_lock(&vb->engine_lock);
	if (!vb_engine_quiesce(vb)) {
		err = -EBUSY;
		goto out_unlock;
	}
	spin_lock(&vb->lock);
	want = vb_pick(&vb->chunks, &chunks, VB_CHUNK_ORDER, ULONG_MAX,
		       vb_pick_range, &r);
	want += vb_pick(&vb->pages, &pages, 0, ULONG_MAX, vb_pick_range, &r);
	spin_unlock(&vb->lock);
	if (!want)
		goto out_unlock;

	moved = vb_engine_deflate_from(vb, want, &chunks, &pages);
	spin_lock(&vb->lock);
	if (moved < want) {
		/* The host did not take them all: they stay ballooned. */
		list_splice(&chunks, &vb->chunks);
		list_splice(&pages, &vb->pages);
		err = -EBUSY;
	}
	vb->stats.offline_evictions++;
	vb->stats.offline_evicted_pages += moved;
	spin_unlock(&vb->lock);
	dev_info(&vb->vdev->dev,
		 "memory going offline at pfn %#lx: gave back %llu of %llu KiB the balloon held there\n",
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
 * Put the balloon pages on @nodes first in the balloon's lists, so the
 * deflation that follows gives those back.  Returns how many pages to
 * deflate, 0 when none of them would help.  Deflation takes a whole chunk
 * before single pages, so without a chunk on the right nodes ask for
 * fewer single pages than a chunk holds.
 */
static unsigned long vb_oom_prefer(struct vballoon *vb, nodemask_t *nodes)
{
	unsigned long chunks, pages;
	LIST_HEAD(c);
	LIST_HEAD(p);

	spin_lock(&vb->lock);
	chunks = vb_pick(&vb->chunks, &c, VB_CHUNK_ORDER, VB_OOM_PAGES,
			 vb_pick_node, nodes);
	pages = vb_pick(&vb->pages, &p, 0, VB_CHUNK_PAGES - 1, vb_pick_node,
			nodes);
	list_splice(&c, &vb->chunks);
	list_splice(&p, &vb->pages);
	spin_unlock(&vb->lock);

	return chunks ?: pages;
}

static int vb_oom_notify(struct notifier_block *nb, unsigned long unused,
			 void *data)
{
	struct vballoon *vb = container_of(nb, struct vballoon, oom_nb);
	unsigned long *freed = data;
	unsigned long n;
	nodemask_t nodes;

	vb_oom_nodes(&nodes);
	mutex_lock(&vb->pressure_lock);
	n = vb_oom_prefer(vb, &nodes);
	if (n)
		n = vb_pressure_deflate(vb, n);
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
