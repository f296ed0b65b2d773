/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vballoon: a virtio balloon driver.
 *
 * One struct vballoon per bound device holds all state.  The files under
 * src/ each own one mechanism:
 *   vb_main.c    device binding, feature negotiation, virtqueues, lifecycle
 *   vb_engine.c  moving pages into and out of the balloon (the worker,
 *                the shrinker's and migration's requests, drain)
 *   vb_req.c     inflate and deflate requests: fill, submit, complete
 *   vb_policy.c  how much: targets, the floor, the way back after pressure
 *   vb_shrink.c  the shrinker: balloon pages back to a guest under pressure
 *   vb_sysfs.c   the admin's knobs
 *   vb_stats.c   statistics for the host (stats queue), counters, debugfs
 *   vb_report.c  free page reporting
 *   vb_hint.c    free page hinting for live migration
 *   vb_mm.c      PageOffline, memory offlining, the OOM notifier
 */
#ifndef _VBALLOON_H
#define _VBALLOON_H

#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/page_reporting.h>
#include <linux/sizes.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/vmstat.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <uapi/linux/virtio_balloon.h>

#include "vb_compat.h"

/* PFNs on the wire are 4 KiB frame numbers, whatever PAGE_SIZE is. */
#define VB_PFNS_PER_PAGE	(PAGE_SIZE >> VIRTIO_BALLOON_PFN_SHIFT)

/* Firecracker skips descriptors over 256 PFNs, Cloud Hypervisor over 1 KiB. */
#define VB_PFNS_PER_DESC	256

/*
 * A chunk is a naturally aligned 2 MiB run of guest memory: a host
 * transparent huge page.  QEMU frees a host huge page only when all of its
 * PFNs arrive in one request, so a request is sized to carry one chunk
 * (split over several descriptors).
 */
#define VB_CHUNK_ORDER		(21 - PAGE_SHIFT)
#define VB_CHUNK_PAGES		BIT(VB_CHUNK_ORDER)
#define VB_PFNS_PER_REQ		(VB_CHUNK_PAGES * VB_PFNS_PER_PAGE)
#define VB_DESCS_PER_REQ	(VB_PFNS_PER_REQ / VB_PFNS_PER_DESC)

/*
 * Hinted blocks: 4 MiB, the largest block every x86-64 and arm64 4 KiB
 * kernel's buddy allocator hands out (order 10), so the host handles
 * half as many elements as with 2 MiB ones; each takes the lock its
 * migration thread sends pages under.
 */
#define VB_HINT_ORDER	(22 - PAGE_SHIFT)
#define VB_HINT_PAGES	BIT(VB_HINT_ORDER)

/* Requests the worker keeps in flight: 16 x 2 MiB. */
#define VB_NR_REQS		16

#define VB_PAGES_TO_KB(p)	((u64)(p) << (PAGE_SHIFT - 10))

/* Statistics tags 0-15, all sent on every report. */
#define VB_NR_STATS		16

enum vb_req_state {
	VB_REQ_IDLE,		/* owned by its user, not on a virtqueue */
	VB_REQ_INFLIGHT,	/* given to the device, not yet acknowledged */
	VB_REQ_DONE,		/* acknowledged, not yet accounted */
};

/*
 * One inflate or deflate request: the pages it carries and their PFNs.
 * Pages are linked through page->lru; a chunk is one order-VB_CHUNK_ORDER
 * entry, anything else order-0 pages.
 */
struct vb_req {
	struct list_head pages;
	unsigned int nr_pages;		/* PAGE_SIZE pages carried */
	unsigned int nr_pfns;		/* 4 KiB PFNs in pfns[] */
	bool inflate;
	bool chunk;
	/* Where the request's time went, for the engine's counters. */
	u64 alloc_ns;			/* allocating its pages */
	u64 submit_ns;			/* adding it to the ring, notifying */
	/* Guarded by vballoon.vq_lock. */
	enum vb_req_state state;
	unsigned int elems;		/* elements the host still holds */
	__virtio32 pfns[VB_PFNS_PER_REQ];
};

/* Where the worker's time moving the balloon went. */
struct vb_move_time {
	u64 alloc_ns;		/* allocating pages (zeroing them included) */
	u64 fill_ns;		/* filling requests, allocation included */
	u64 submit_ns;		/* adding requests to the ring, notifying */
	u64 wait_ns;		/* waiting for the host to answer */
	u64 reap_ns;		/* accounting answered requests */
};

/* Counters for debugfs.  Written under vballoon.lock, read racily. */
struct vb_counters {
	u64 inflated_pages;
	u64 deflated_pages;
	u64 inflate_reqs;
	u64 deflate_reqs;
	u64 chunks_inflated;
	u64 chunk_alloc_fails;
	u64 page_alloc_fails;
	u64 pressure_events;
	u64 pressure_pages;
	u64 pressure_yields;
	u64 reinflated_pages;
	u64 holdoff_doublings;
	u64 floor_stops;
	u64 floor_deflations;
	u64 floor_deflated_pages;
	u64 offline_evictions;
	u64 offline_evicted_pages;
	u64 oom_deflations;
	u64 oom_pages;
	u64 migrated_pages;
	u64 migrate_busy;
	u64 inflate_ns;
	u64 deflate_ns;
	struct vb_move_time time[2];	/* [0] deflate, [1] inflate */
};

/* The pressure policy's state.  Guarded by vballoon.lock. */
struct vb_policy {
	unsigned long debt;		/* pages given back under pressure, not yet re-inflated */
	unsigned long last_pressure;	/* jiffies of the last pressure deflation */
	unsigned long holdoff;		/* current hold-off, jiffies */
	unsigned long yield_until;	/* jiffies: inflation paused for kswapd */
	unsigned long batch;		/* pages the last shrinker call gave back */
	bool reinflated;		/* re-inflated since last_pressure */
	unsigned int seq;		/* bumped on every pressure event */
	unsigned long floor_until;	/* jiffies: no inflation before, floor reached */
	unsigned long floor_told;	/* host target last reported as past the floor */
};

/* vballoon.hint_flags bits */
#define VB_HINT_REREAD	0	/* read the command ID again */

struct vballoon {
	struct virtio_device *vdev;
	struct virtqueue *inflate_vq;
	struct virtqueue *deflate_vq;
	struct virtqueue *stats_vq;	/* NULL without STATS_VQ */
	struct virtqueue *hint_vq;	/* NULL without FREE_PAGE_HINT */
	struct virtqueue *report_vq;	/* NULL without REPORTING */

	/*
	 * Behaviour derived from the negotiated features, set in one place
	 * (vb_read_features()) before the device is live.
	 */
	bool tell_host;		/* MUST_TELL_HOST: deflate acked before reuse */
	bool deflate_on_oom;	/* DEFLATE_ON_OOM: pressure may deflate */
	bool adjust_managed;	/* balloon pages leave MemTotal */
	bool host_stats;	/* STATS_VQ: answer the host's stats requests */
	bool reporting;		/* REPORTING: report free pages */
	bool page_poison;	/* PAGE_POISON: host told our poison value */
	bool hinting;		/* FREE_PAGE_HINT: answer hinting rounds */
	bool hint_pages;	/* ... with free pages (else with none) */
	/* Why an offered REPORTING was declined (NULL: it was not). */
	const char *reporting_off_why;
	/* Why hinting rounds carry no pages (NULL: they do, or no hinting). */
	const char *hint_off_why;
	/* Inflate/deflate elements: one chain per request, or single descriptors. */
	bool chain;

	/*
	 * Two queues, both unbound and freezable.  wq runs the worker (which
	 * allocates and waits for the host) and hinting; stats_wq only the
	 * statistics answer, with a rescuer (WQ_MEM_RECLAIM), so the host
	 * keeps getting statistics when memory is short even while the
	 * worker is stuck waiting: a shared rescuer would run one after the
	 * other.
	 */
	struct workqueue_struct *wq;
	struct workqueue_struct *stats_wq;
	struct delayed_work work;

	/*
	 * stop_lock guards stopping.  Work is queued only while !stopping, so
	 * once remove/freeze has set it and cancelled the work, nothing
	 * (config change, sysfs, pressure) can start the worker again.
	 */
	spinlock_t stop_lock;
	bool stopping;

	/*
	 * vq_lock (taken with interrupts off) guards both virtqueues and the
	 * state of every vb_req; the virtqueue callback completes requests
	 * under it and wakes acked.
	 */
	spinlock_t vq_lock;
	wait_queue_head_t acked;

	/*
	 * engine_lock serialises the worker's inflate/deflate runs with
	 * drain on remove/freeze, and owns reqs[], alloc_backoff,
	 * chunk_retry, fill_holes and holes_probe.  It is held across page
	 * allocation, so nothing that reclaim can call (the shrinker) may
	 * take it.
	 */
	struct mutex engine_lock;
	struct vb_req *reqs[VB_NR_REQS];
	unsigned long alloc_backoff;	/* jiffies, 0 when allocation works */
	unsigned long chunk_retry;	/* jiffies: try 2 MiB chunks again */
	bool fill_holes;		/* single pages first: they fill holes */
	unsigned long holes_probe;	/* jiffies: look for holes again */
	struct task_struct *inflater;	/* task allocating for the balloon */
	bool inflating;			/* an inflation run is in progress */

	/*
	 * pressure_lock serialises shrinker deflations and owns preq; a
	 * reclaimer waits for it.  Nothing under it allocates (beyond
	 * GFP_NOWAIT) or depends on reclaim.  vqs_ready says the virtqueues
	 * may be used, and is cleared under it on freeze and remove.  Taken
	 * after engine_lock (drain; the worker collecting a late answer to
	 * preq, with mutex_trylock), never before it.
	 */
	struct mutex pressure_lock;
	struct vb_req *preq;
	struct vb_req *mreq;		/* one page migration at a time */
	bool vqs_ready;
	struct shrinker *shrinker;
	struct notifier_block oom_nb;		/* with DEFLATE_ON_OOM */
	struct notifier_block memory_nb;	/* memory going offline */

	/*
	 * lock guards the balloon itself: the page lists, nr_held, the
	 * policy state and the counters, and is taken to read the admin
	 * knobs together (sysfs stores each knob with one WRITE_ONCE).
	 * Never held across allocation, device I/O or sleep.
	 */
	spinlock_t lock;
	struct list_head chunks;	/* 2 MiB chunks, by page->lru */
	unsigned long nr_held;		/* pages the host counts as ballooned */
	unsigned long guest_target;	/* pages; 0 = follow the host */
	unsigned long floor;		/* pages the balloon never takes below */
	unsigned long holdoff_base;	/* jiffies */
	unsigned long pressure_reserve;	/* MemAvailable below which pressure deflates */
	struct vb_policy policy;
	struct vb_counters stats;

	/*
	 * Statistics for the host: stats_work refills stats_buf and hands it
	 * back whenever the host returns it; nothing on that path allocates.
	 * stats_buf is owned by the device while queued, by stats_work else.
	 */
	struct work_struct stats_work;
	struct virtio_balloon_stat stats_buf[VB_NR_STATS];
	unsigned long vm_events[NR_VM_EVENT_ITEMS];

	/*
	 * Free page reporting.  report_busy (under vq_lock) is set while the
	 * host holds a report; the reporting core serialises reports.
	 */
	struct page_reporting_dev_info pr_dev;
	bool pr_registered;
	bool report_busy;

	/*
	 * Free page hinting (vb_hint.c).  hint_work owns hint_bufs,
	 * hint_answered, hint_cmd, hint_active and hint_keep (a work item never runs
	 * twice at once; stop cancels it before touching them); hint_id_busy,
	 * set while the host holds hint_bufs[i], is guarded by vq_lock.
	 */
	struct work_struct hint_work;
	__virtio32 hint_bufs[2];	/* [0]: a round's ID, [1]: STOP */
	bool hint_id_busy[2];
	u32 hint_answered;		/* the last command ID a round was opened for */
	bool hint_active;		/* a round is open: its ID sent, STOP not yet */
	bool hint_keep;			/* used blocks are held until DONE */
	bool hint_shedding;		/* the guest wants memory: take no more */
	unsigned int hint_queued;	/* blocks on the queue (read racily) */
	u32 hint_cmd;			/* the command ID last read */
	unsigned long hint_flags;	/* VB_HINT_REREAD: config changed */
	struct shrinker *hint_shrinker;
	/*
	 * hint_lock guards the blocks the host has used and the guest has not
	 * got back yet (hint_held, by page->lru; hint_nr_held, in pages) and
	 * the hinting counters.  Taken by the shrinker; nothing under it
	 * allocates or sleeps.
	 */
	spinlock_t hint_lock;
	struct list_head hint_held;
	unsigned long hint_nr_held;
	u64 hint_rounds;
	u64 hint_pages_sent;
	u64 hint_shed_pages;

	/*
	 * Under vq_lock: true while stats_buf is not free for a new report,
	 * because the host holds it or a report is being filled.  The spec
	 * allows one buffer on the stats queue.
	 */
	bool stats_queued;

	/* Set once when the device breaks; the worker stops for good. */
	bool broken;

	/* actual_lock orders writes of config.actual; actual is the last one. */
	struct mutex actual_lock;
	u32 actual;

	/*
	 * Single pages: the balloon core's list, which compaction and memory
	 * offlining may take pages off (isolate) and migrate.  The core's
	 * lock guards it; the driver uses it only through the core's enqueue
	 * and dequeue calls.  Pages being migrated are off the list but still
	 * counted in nr_held.
	 */
	struct balloon_dev_info bdev;

	struct dentry *debugfs;
};

/* vb_main.c */
void vb_queue_work(struct vballoon *vb, unsigned long delay);
u32 vb_host_target(struct vballoon *vb);

/* vb_engine.c */
int vb_engine_init(struct vballoon *vb);
void vb_engine_exit(struct vballoon *vb);
void vb_vq_done(struct virtqueue *vq);
void vb_work_fn(struct work_struct *work);
void vb_engine_drain(struct vballoon *vb);
void vb_engine_release(struct vballoon *vb);
unsigned long vb_pressure_deflate(struct vballoon *vb, unsigned long want);
unsigned long vb_pressure_reap(struct vballoon *vb);
bool vb_engine_quiesce(struct vballoon *vb);
unsigned long vb_engine_deflate_chunks(struct vballoon *vb, unsigned long want,
				       struct list_head *chunks);
int vb_engine_migrate(struct vballoon *vb, struct page *newpage,
		      struct page *page);
void vb_update_actual(struct vballoon *vb, bool force);

/* vb_policy.c */
void vb_policy_init(struct vballoon *vb);
unsigned long vb_guest_ram(struct vballoon *vb);
unsigned long vb_policy_target(struct vballoon *vb, unsigned long held,
			       unsigned long *again);
bool vb_policy_inflate_paused(struct vballoon *vb, unsigned int seq);
void vb_policy_collect(struct vballoon *vb);
bool vb_policy_may_take(struct vballoon *vb, unsigned long pages,
			unsigned int order);
unsigned long vb_policy_big_free(void);
enum vb_take { VB_TAKE_CHUNK, VB_TAKE_SINGLES };
enum vb_take vb_policy_take(void);
void vb_policy_inflated(struct vballoon *vb, unsigned long pages);
void vb_policy_pressure(struct vballoon *vb, unsigned long pages);

/* vb_shrink.c */
typedef unsigned long (*vb_shrink_fn)(struct shrinker *s,
				      struct shrink_control *sc);
struct shrinker *vb_shrinker_add(const char *name, struct vballoon *vb,
				 vb_shrink_fn count, vb_shrink_fn scan,
				 int seeks);
int vb_pressure_register(struct vballoon *vb);
void vb_pressure_unregister(struct vballoon *vb);

/* vb_mm.c */
void vb_page_offline(struct page *page, unsigned int order);
void vb_page_free(struct page *page, unsigned int order);
void vb_mm_init(struct vballoon *vb);
int vb_mm_register(struct vballoon *vb);
void vb_mm_unregister(struct vballoon *vb);

/* vb_hint.c */
void vb_hint_vq_done(struct virtqueue *vq);
void vb_hint_kick(struct vballoon *vb);
void vb_hint_config_changed(struct vballoon *vb);
void vb_hint_work_fn(struct work_struct *work);
void vb_hint_start(struct vballoon *vb);
void vb_hint_stop(struct vballoon *vb);
unsigned long vb_hint_shed(struct vballoon *vb, unsigned long want);
void vb_hint_init(struct vballoon *vb);
int vb_hint_register(struct vballoon *vb);
void vb_hint_unregister(struct vballoon *vb);

/* vb_report.c */
void vb_report_vq_done(struct virtqueue *vq);
void vb_report_start(struct vballoon *vb);
void vb_report_stop(struct vballoon *vb);

/* vb_sysfs.c */
extern const struct attribute_group *vb_groups[];

/* vb_stats.c */
void vb_stats_vq_done(struct virtqueue *vq);
void vb_stats_work_fn(struct work_struct *work);
void vb_stats_start(struct vballoon *vb);
void vb_debugfs_init(void);
void vb_debugfs_exit(void);
void vb_debugfs_add(struct vballoon *vb);
void vb_debugfs_remove(struct vballoon *vb);

#endif /* _VBALLOON_H */
