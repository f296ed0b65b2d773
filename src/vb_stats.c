// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: statistics.
 *
 * For the host (STATS_VQ): one buffer of (tag, value) pairs lives on the
 * stats queue.  The host returns it when it wants fresh figures; the
 * callback queues stats_work, which refills the same buffer from the
 * guest's own counters and hands it back.  No allocation anywhere on that
 * path, so statistics keep flowing under memory pressure, and the work
 * runs on an unbound queue, so it never waits for the balloon worker.
 *
 * For the admin: /sys/kernel/debug/vballoon/<device>/stats shows, one
 * "name value" per line, why the balloon is where it is.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/jiffies.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/seq_file.h>
#include <linux/virtio.h>
#include <linux/vmstat.h>

#include "vballoon.h"

static void vb_stat(struct vballoon *vb, unsigned int *i, u16 tag, u64 val)
{
	vb->stats_buf[*i].tag = cpu_to_virtio16(vb->vdev, tag);
	vb->stats_buf[*i].val = cpu_to_virtio64(vb->vdev, val);
	(*i)++;
}

static u64 vb_bytes(unsigned long pages)
{
	return (u64)pages << PAGE_SHIFT;
}

/* Fill stats_buf; returns the number of entries. */
static unsigned int vb_stats_fill(struct vballoon *vb)
{
	unsigned long *ev = vb->vm_events;
	unsigned long stall = 0;
	struct sysinfo si;
	unsigned int i = 0, zid;

	si_meminfo(&si);
#ifdef CONFIG_VM_EVENT_COUNTERS
	all_vm_events(ev);
	vb_stat(vb, &i, VIRTIO_BALLOON_S_SWAP_IN, vb_bytes(ev[PSWPIN]));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_SWAP_OUT, vb_bytes(ev[PSWPOUT]));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_MAJFLT, ev[PGMAJFAULT]);
	vb_stat(vb, &i, VIRTIO_BALLOON_S_MINFLT, ev[PGFAULT]);
#ifdef CONFIG_HUGETLB_PAGE
	vb_stat(vb, &i, VIRTIO_BALLOON_S_HTLB_PGALLOC, ev[HTLB_BUDDY_PGALLOC]);
	vb_stat(vb, &i, VIRTIO_BALLOON_S_HTLB_PGFAIL,
		ev[HTLB_BUDDY_PGALLOC_FAIL]);
#endif
	vb_stat(vb, &i, VIRTIO_BALLOON_S_OOM_KILL, ev[OOM_KILL]);
	/* One ALLOCSTALL counter per zone type, laid out in zone order. */
	for (zid = 0; zid < MAX_NR_ZONES; zid++)
		stall += ev[ALLOCSTALL_NORMAL - ZONE_NORMAL + zid];
	vb_stat(vb, &i, VIRTIO_BALLOON_S_ALLOC_STALL, stall);
	vb_stat(vb, &i, VIRTIO_BALLOON_S_ASYNC_SCAN,
		vb_bytes(vb_reclaim_count(ev, PGSCAN_KSWAPD)));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_DIRECT_SCAN,
		vb_bytes(vb_reclaim_count(ev, PGSCAN_DIRECT)));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_ASYNC_RECLAIM,
		vb_bytes(vb_reclaim_count(ev, PGSTEAL_KSWAPD)));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_DIRECT_RECLAIM,
		vb_bytes(vb_reclaim_count(ev, PGSTEAL_DIRECT)));
#endif
	vb_stat(vb, &i, VIRTIO_BALLOON_S_MEMFREE, vb_bytes(si.freeram));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_MEMTOT, vb_bytes(si.totalram));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_AVAIL, vb_bytes(si_mem_available()));
	vb_stat(vb, &i, VIRTIO_BALLOON_S_CACHES,
		vb_bytes(global_node_page_state(NR_FILE_PAGES)));
	return i;
}

/* Refill the buffer and give it to the host.  Owns stats_buf. */
static void vb_stats_send(struct vballoon *vb)
{
	struct scatterlist sg;
	unsigned int n, len;
	bool notify;
	int err;

	spin_lock_irq(&vb->vq_lock);
	/*
	 * One buffer only, as the spec says: hand it back only when the host
	 * has returned it (or never had it).  A shared interrupt line runs
	 * this callback for every queue; with no buffer returned there is
	 * nothing to do, and adding a second one would let the two bounce
	 * between guest and host for ever.
	 */
	if (vb->stats_queued && !virtqueue_get_buf(vb->stats_vq, &len)) {
		spin_unlock_irq(&vb->vq_lock);
		return;
	}
	/* Ours now (returned, or never queued): claim it while we fill it. */
	vb->stats_queued = true;
	spin_unlock_irq(&vb->vq_lock);

	n = vb_stats_fill(vb);
	sg_init_one(&sg, vb->stats_buf, n * sizeof(vb->stats_buf[0]));
	spin_lock_irq(&vb->vq_lock);
	err = virtqueue_add_outbuf(vb->stats_vq, &sg, 1, vb,
				   GFP_NOWAIT | __GFP_NOWARN);
	if (err)
		vb->stats_queued = false;
	notify = !err && virtqueue_kick_prepare(vb->stats_vq);
	spin_unlock_irq(&vb->vq_lock);
	if (notify)
		virtqueue_notify(vb->stats_vq);
	if (err)
		dev_warn_ratelimited(&vb->vdev->dev,
				     "cannot queue statistics: %d\n", err);
}

void vb_stats_vq_done(struct virtqueue *vq)
{
	struct vballoon *vb = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vb->stop_lock, flags);
	if (!vb->stopping)
		queue_work(vb->stats_wq, &vb->stats_work);
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

void vb_stats_work_fn(struct work_struct *work)
{
	vb_stats_send(container_of(work, struct vballoon, stats_work));
}

/* Prime the queue: the host returns this buffer to ask for statistics. */
void vb_stats_start(struct vballoon *vb)
{
	if (!vb->host_stats)
		return;
	/* The device was reset: it holds no buffer of ours. */
	spin_lock_irq(&vb->vq_lock);
	vb->stats_queued = false;
	spin_unlock_irq(&vb->vq_lock);
	vb_stats_send(vb);
}

static struct dentry *vb_debugfs_root;

/* Where the worker's time in one direction went, in microseconds. */
static void vb_stats_show_time(struct seq_file *m, const char *dir,
			       const struct vb_move_time *t)
{
	seq_printf(m, "%s_alloc_us %llu\n", dir,
		   div_u64(t->alloc_ns, NSEC_PER_USEC));
	seq_printf(m, "%s_fill_us %llu\n", dir,
		   div_u64(t->fill_ns, NSEC_PER_USEC));
	seq_printf(m, "%s_submit_us %llu\n", dir,
		   div_u64(t->submit_ns, NSEC_PER_USEC));
	seq_printf(m, "%s_wait_us %llu\n", dir,
		   div_u64(t->wait_ns, NSEC_PER_USEC));
	seq_printf(m, "%s_reap_us %llu\n", dir,
		   div_u64(t->reap_ns, NSEC_PER_USEC));
}

static int vb_stats_show(struct seq_file *m, void *unused)
{
	struct vballoon *vb = m->private;
	struct vb_counters c;
	struct vb_policy p;
	u64 hint_rounds, hint_sent, hint_shed;
	unsigned long hint_held;
	unsigned long held, floor, target, now = jiffies;
	unsigned long holdoff_left = 0;

	spin_lock(&vb->lock);
	c = vb->stats;
	p = vb->policy;
	held = vb->nr_held;
	floor = vb->floor;
	target = vb->guest_target;
	spin_unlock(&vb->lock);
	spin_lock(&vb->hint_lock);
	hint_rounds = vb->hint_rounds;
	hint_sent = vb->hint_pages_sent;
	hint_shed = vb->hint_shed_pages;
	hint_held = vb->hint_nr_held;
	spin_unlock(&vb->hint_lock);
	/* Held: used by the host or still on its queue. */
	hint_held += (unsigned long)READ_ONCE(vb->hint_queued) * VB_HINT_PAGES;

	if (p.debt && time_before(now, p.last_pressure + p.holdoff))
		holdoff_left = p.last_pressure + p.holdoff - now;

	seq_printf(m, "held_pages %lu\n", held);
	seq_printf(m, "host_target_pages %u\n", vb_host_target(vb));
	seq_printf(m, "guest_target_pages %lu\n", target);
	seq_printf(m, "floor_pages %lu\n", floor);
	seq_printf(m, "inflated_pages %llu\n", c.inflated_pages);
	seq_printf(m, "deflated_pages %llu\n", c.deflated_pages);
	seq_printf(m, "inflate_requests %llu\n", c.inflate_reqs);
	seq_printf(m, "deflate_requests %llu\n", c.deflate_reqs);
	seq_printf(m, "chunks_inflated %llu\n", c.chunks_inflated);
	seq_printf(m, "chunk_alloc_fails %llu\n", c.chunk_alloc_fails);
	seq_printf(m, "page_alloc_fails %llu\n", c.page_alloc_fails);
	seq_printf(m, "pressure_events %llu\n", c.pressure_events);
	seq_printf(m, "pressure_pages %llu\n", c.pressure_pages);
	seq_printf(m, "pressure_yields %llu\n", c.pressure_yields);
	seq_printf(m, "reinflated_pages %llu\n", c.reinflated_pages);
	seq_printf(m, "holdoff_doublings %llu\n", c.holdoff_doublings);
	seq_printf(m, "floor_stops %llu\n", c.floor_stops);
	seq_printf(m, "floor_deflations %llu\n", c.floor_deflations);
	seq_printf(m, "floor_deflated_pages %llu\n", c.floor_deflated_pages);
	seq_printf(m, "offline_evictions %llu\n", c.offline_evictions);
	seq_printf(m, "offline_evicted_pages %llu\n", c.offline_evicted_pages);
	seq_printf(m, "oom_deflations %llu\n", c.oom_deflations);
	seq_printf(m, "oom_pages %llu\n", c.oom_pages);
	seq_printf(m, "migrated_pages %llu\n", c.migrated_pages);
	seq_printf(m, "migrate_busy %llu\n", c.migrate_busy);
	seq_printf(m, "hint_rounds %llu\n", hint_rounds);
	seq_printf(m, "hinted_pages %llu\n", hint_sent);
	seq_printf(m, "hint_held_pages %lu\n", hint_held);
	seq_printf(m, "hint_shed_pages %llu\n", hint_shed);
	seq_printf(m, "pressure_debt_pages %lu\n", p.debt);
	seq_printf(m, "holdoff_ms %u\n", jiffies_to_msecs(p.holdoff));
	seq_printf(m, "holdoff_remaining_ms %u\n", jiffies_to_msecs(holdoff_left));
	seq_printf(m, "inflate_ms %llu\n", div_u64(c.inflate_ns, NSEC_PER_MSEC));
	seq_printf(m, "deflate_ms %llu\n", div_u64(c.deflate_ns, NSEC_PER_MSEC));
	vb_stats_show_time(m, "inflate", &c.time[1]);
	vb_stats_show_time(m, "deflate", &c.time[0]);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vb_stats);

/*
 * Fault injection for tests: writing 1 marks the device broken, as the
 * virtio core does when a host misbehaves, to walk the worker's and
 * remove's broken-device paths.
 */
static int vb_inject_broken_set(void *data, u64 val)
{
	struct vballoon *vb = data;

	if (val != 1)
		return -EINVAL;
	virtio_break_device(vb->vdev);
	vb_queue_work(vb, 0);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(vb_inject_broken_fops, NULL, vb_inject_broken_set,
			 "%llu\n");

void vb_debugfs_init(void)
{
	vb_debugfs_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
}

void vb_debugfs_exit(void)
{
	debugfs_remove_recursive(vb_debugfs_root);
}

void vb_debugfs_add(struct vballoon *vb)
{
	vb->debugfs = debugfs_create_dir(dev_name(&vb->vdev->dev),
					 vb_debugfs_root);
	debugfs_create_file("stats", 0444, vb->debugfs, vb, &vb_stats_fops);
	debugfs_create_file_unsafe("inject_broken", 0200, vb->debugfs, vb,
				   &vb_inject_broken_fops);
}

void vb_debugfs_remove(struct vballoon *vb)
{
	debugfs_remove_recursive(vb->debugfs);
	vb->debugfs = NULL;
}
