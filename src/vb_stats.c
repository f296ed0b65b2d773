// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: counters.  /sys/kernel/debug/vballoon/<device>/stats shows,
 * one "name value" per line, why the balloon is where it is.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/jiffies.h>
#include <linux/seq_file.h>

#include "vballoon.h"

static struct dentry *vb_debugfs_root;

static int vb_stats_show(struct seq_file *m, void *unused)
{
	struct vballoon *vb = m->private;
	struct vb_counters c;
	struct vb_policy p;
	unsigned long held, floor, target, now = jiffies;
	unsigned long holdoff_left = 0;

	spin_lock(&vb->lock);
	c = vb->stats;
	p = vb->policy;
	held = vb->nr_held;
	floor = vb->floor;
	target = vb->guest_target;
	spin_unlock(&vb->lock);

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
	seq_printf(m, "pressure_debt_pages %lu\n", p.debt);
	seq_printf(m, "holdoff_ms %u\n", jiffies_to_msecs(p.holdoff));
	seq_printf(m, "holdoff_remaining_ms %u\n", jiffies_to_msecs(holdoff_left));
	seq_printf(m, "inflate_ms %llu\n", div_u64(c.inflate_ns, NSEC_PER_MSEC));
	seq_printf(m, "deflate_ms %llu\n", div_u64(c.deflate_ns, NSEC_PER_MSEC));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vb_stats);

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
}

void vb_debugfs_remove(struct vballoon *vb)
{
	debugfs_remove_recursive(vb->debugfs);
	vb->debugfs = NULL;
}
