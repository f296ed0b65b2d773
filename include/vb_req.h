/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vballoon: the request layer (src/vb_req.c) as the engine (src/vb_engine.c)
 * uses it.  Internal to those two files.
 */
#ifndef _VB_REQ_H
#define _VB_REQ_H

#include "vballoon.h"

/* How long to wait for the host before checking whether we are stopping. */
#define VB_ACK_POLL		(HZ / 2)
/* How long remove/freeze waits for a host that does not acknowledge. */
#define VB_DRAIN_TIMEOUT	(5 * HZ)

unsigned int vb_order(struct vb_req *req);
void vb_req_reset(struct vb_req *req, bool inflate);
bool vb_req_pfns(struct vballoon *vb, struct vb_req *req,
		 struct page *page, unsigned int order);
bool vb_req_add(struct vballoon *vb, struct vb_req *req,
		struct page *page, unsigned int order);
bool vb_fill_inflate(struct vballoon *vb, struct vb_req *req,
		     unsigned long want);
void vb_fill_deflate(struct vballoon *vb, struct vb_req *req,
		     unsigned long want, struct list_head *chunks,
		     bool singles);
bool vb_broken(struct vballoon *vb);
int vb_submit(struct vballoon *vb, struct vb_req *req);
enum vb_req_state vb_req_state(struct vballoon *vb, struct vb_req *req);
unsigned long vb_complete(struct vballoon *vb, struct vb_req *req);
void vb_abandon(struct vballoon *vb, struct vb_req *req);
void vb_unfill(struct vballoon *vb, struct vb_req *req);
unsigned long vb_reap(struct vballoon *vb);
bool vb_stopping(struct vballoon *vb);
unsigned int vb_count_reqs(struct vballoon *vb, enum vb_req_state state);
void vb_wait_reqs(struct vballoon *vb, unsigned int busy,
		  unsigned long timeout, bool stoppable);
struct vb_req *vb_idle_req(struct vballoon *vb);

#endif /* _VB_REQ_H */
