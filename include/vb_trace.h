/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vballoon tracepoints: why the balloon moved.  Enable with
 *   echo 1 > /sys/kernel/tracing/events/vballoon/enable
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM vballoon

#if !defined(_VB_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VB_TRACE_H

#include <linux/tracepoint.h>

DECLARE_EVENT_CLASS(vballoon_move,
		    TP_PROTO(unsigned long wanted, unsigned long moved,
			     unsigned long held, bool short_alloc),
		    TP_ARGS(wanted, moved, held, short_alloc),
		    TP_STRUCT__entry(__field(unsigned long, wanted)
				     __field(unsigned long, moved)
				     __field(unsigned long, held)
				     __field(bool, short_alloc)),
		    TP_fast_assign(__entry->wanted = wanted;
				   __entry->moved = moved;
				   __entry->held = held;
				   __entry->short_alloc = short_alloc;),
		    TP_printk("wanted=%lu moved=%lu held=%lu short_alloc=%d",
			      __entry->wanted, __entry->moved, __entry->held,
			      __entry->short_alloc)
);

DEFINE_EVENT(vballoon_move, vballoon_inflate,
	     TP_PROTO(unsigned long wanted, unsigned long moved,
		      unsigned long held, bool short_alloc),
	     TP_ARGS(wanted, moved, held, short_alloc)
);

DEFINE_EVENT(vballoon_move, vballoon_deflate,
	     TP_PROTO(unsigned long wanted, unsigned long moved,
		      unsigned long held, bool short_alloc),
	     TP_ARGS(wanted, moved, held, short_alloc)
);

TRACE_EVENT(vballoon_pressure,
	    TP_PROTO(unsigned long freed, unsigned long held,
		     unsigned long debt, unsigned int holdoff_ms),
	    TP_ARGS(freed, held, debt, holdoff_ms),
	    TP_STRUCT__entry(__field(unsigned long, freed)
			     __field(unsigned long, held)
			     __field(unsigned long, debt)
			     __field(unsigned int, holdoff_ms)),
	    TP_fast_assign(__entry->freed = freed;
			   __entry->held = held;
			   __entry->debt = debt;
			   __entry->holdoff_ms = holdoff_ms;),
	    TP_printk("freed=%lu held=%lu debt=%lu holdoff_ms=%u",
		      __entry->freed, __entry->held, __entry->debt,
		      __entry->holdoff_ms)
);

#endif /* _VB_TRACE_H */

/* Found through ccflags' -I$(src)/include. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE vb_trace
#include <trace/define_trace.h>
