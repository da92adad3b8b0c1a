/*
 * vmtrap/ptm.h — the page-table monitor.
 *
 * Watches every level of a VA's translation and turns guest page-table
 * writes into page-in / page-out / remap events. The breakpoint manager
 * consumes the events (vmt_ptm_event); the monitor's event handler feeds the
 * driver events in (vmt_ptm_handle_event). Implementation: src/ptm/.
 *
 * How it works:
 *  - monitor(ctx, view, tag) walks ctx.va under ctx.root and write-protects
 *    (through the session's access arbiter, owner VMT_OWNER_PTM, rights RX)
 *    every table page on the path: PML5/PML4 down to the leaf entry, or down
 *    to the first not-present entry. Table pages are reference-counted per
 *    (view, gfn), so many VAs and several roots share them; the restriction
 *    goes when the last watched path using the page goes.
 *  - A guest write to a protected table page traps (MEM_ACCESS, W). The
 *    monitor applies the written bytes to the entry and re-walks every watched VA whose path goes through that entry (in
 *    every view) on the new table state, moves the protection to the new
 *    path, and compares the VA's translation before and after:
 *      not present -> present          PAGE_IN  (new_pa, page_size)
 *      present -> not present          PAGE_OUT (old_pa)
 *      present -> present, other pa    REMAP    (old_pa, new_pa, page_size)
 *    Anything else (rights, A/D bits, a large-page split or merge that maps
 *    the same frame, duplicate writes, a failed CMPXCHG) emits nothing. The
 *    watches are re-walked after EVERY write to an entry they use, even one
 *    that leaves its value unchanged (4 reads each): the comparison is with
 *    each watch's own translation, never with a remembered entry value.
 *  - Exact writes: when the event carries the written value (has_data) it is
 *    applied at once and the response lets the write land: CONTINUE when the
 *    driver has VMT_CAP_EMULATE (one exit), else FAST_STEP in view 0, else
 *    STEP in view 0 (then the entries are also re-read at the SINGLESTEP:
 *    a resync or another vCPU's store between the trap and the step must
 *    not leave a watch behind memory). Without data the entry is
 *    marked dirty for the vCPU and the response is STEP + SWITCH_VIEW to view
 *    0; the SINGLESTEP event that follows re-reads the vCPU's dirty entries
 *    (top level first), emits the events and switches back (SWITCH_VIEW to
 *    the view the write trapped in).
 *  - Writes reported after they landed (driver cap VMT_CAP_WRITE_AFTER, e.g.
 *    the qemu driver's gdbstub watchpoints): memory already holds the new
 *    entry; the monitor reads it back (applying the event's data on top, which
 *    changes nothing), re-walks at once and answers CONTINUE — no step, no
 *    view switch. Such a driver may have view 0 only, so monitor() accepts
 *    view 0 then. A write without data re-reads the entry at gpa (gpa to
 *    the end of its entry, or `size` bytes).
 *  - Partial writes (a 4-byte store into an 8-byte entry, by any vCPU) are
 *    judged like the hardware would: the entry's value is what memory holds
 *    with the written bytes applied, re-walked at once. Nothing is held
 *    back until "the other half" arrives (a half that never comes would
 *    otherwise hide a remap forever), so two halves may give a transient
 *    event for the torn value in between. On the step path the written
 *    bytes are the event's range (gpa .. gpa+size when the driver reports a
 *    size, else gpa to the end of the entry); the entry is read back after
 *    the step, whatever wrote it.
 *  - Hostile tables (loops, frames past guest RAM, reserved bits): a walk is
 *    at most 5 reads. monitor() refuses them with the walker's error and
 *    changes nothing. When a write makes an existing path hostile, the path
 *    stays watched up to the bad entry, the VA counts as not present (PAGE_OUT
 *    if it was present), and vmt_ptm_query() reports the walk's status; the
 *    message is in vmt_ptm_error().
 *
 * Events are delivered through the sink after the monitor's state is fully
 * updated, so a sink may call vmt_ptm_monitor/unmonitor (which then see the
 * tables as they are after the write). With write data the guest's write
 * has NOT landed in memory while the sink runs (it lands when the driver
 * applies the response): take the new frame from the event's new_pa, not
 * from a fresh vmt_session_translate(), which still reads the old entry.
 * (On a VMT_CAP_WRITE_AFTER driver it has landed already.)
 *
 * Guest tables are read in view 0 with the driver's read_phys (8 bytes per
 * entry; no frame cache to go stale) and walked with vmt_session_paging():
 * keep that in step with the guest's CR4.LA57 / EFER.NXE. A gfn at or past
 * caps.ram_frames is never read.
 *
 * Wiring into an event handler (the monitor owns the view and the loop):
 *
 *     bool mine;
 *     vmt_status st = vmt_ptm_handle_event(ptm, ev, resp, on_page_event, bpm, &mine);
 *     if (mine)
 *         return VMT_OK;    // resp is filled; log st if not VMT_OK
 *     ...other handlers (breakpoints, ucalls)...
 *
 * The monitor claims MEM_ACCESS writes to table pages it protects in
 * ev->view and the SINGLESTEP of each vCPU it stepped (vmt_ptm_stepping());
 * nothing else. Tested end to end on the workload guest (tests/ptm).
 *
 * Threading: one thread (the session's).
 */
#ifndef VMTRAP_PTM_H
#define VMTRAP_PTM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/event.h"
#include "vmtrap/session.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmt_ptm_event_kind {
    VMT_PTM_PAGE_IN = 1,  /* the translation became present: new_pa */
    VMT_PTM_PAGE_OUT,     /* it became not present: old_pa was the last frame */
    VMT_PTM_REMAP,        /* present before and after, different frame */
} vmt_ptm_event_kind;

typedef struct vmt_ptm_event {
    vmt_ptm_event_kind kind;
    vmt_addr_ctx ctx;     /* the monitored VA and root */
    vmt_view view;        /* the view it was monitored in */
    uint64_t tag;         /* the tag given to monitor() */
    vmt_pa old_pa;        /* translation of ctx.va before (valid for OUT, REMAP) */
    vmt_pa new_pa;        /* translation after (valid for IN, REMAP) */
    uint64_t page_size;   /* size of the page that now maps va (IN, REMAP) */
    vmt_vcpu vcpu;        /* the vCPU whose write caused it */
} vmt_ptm_event;

typedef struct vmt_ptm vmt_ptm;

/* Receives each page event. Called after the monitor's state is updated. */
typedef void (*vmt_ptm_sink)(void *sink_ctx, const vmt_ptm_event *ev);

/* What the monitor knows about one watched VA. */
typedef struct vmt_ptm_watch_info {
    bool present;         /* the translation is present (and sane) */
    vmt_pa pa;            /* translation of ctx.va when present */
    uint64_t page_size;   /* 4 KiB, 2 MiB or 1 GiB when present */
    uint8_t depth;        /* entries on the watched path (1..5) */
    vmt_gfn tables[5];    /* table pages on the path, top level first */
    vmt_status walk_status; /* VMT_OK, VMT_E_NOT_PRESENT, or the hostile-table error */
} vmt_ptm_watch_info;

typedef struct vmt_ptm_stats {
    uint64_t watches;          /* monitored (ctx, view, tag) now */
    uint64_t table_pages;      /* (view, gfn) pages write-protected now */
    uint64_t writes;           /* write events on monitored table pages */
    uint64_t writes_with_data; /* ... of which carried the value */
    uint64_t writes_stepped;   /* ... of which went through the step path */
    uint64_t partial_writes;   /* entry updates that covered only part of the entry */
    uint64_t entry_updates;    /* updates of watched entries (one per entry a write touched) */
    uint64_t no_change;        /* ... whose value did not change (dupes, failed CMPXCHG) */
    uint64_t rewalks;          /* translations re-walked */
    uint64_t hostile;          /* walks that hit hostile tables */
    uint64_t writes_after;     /* write events reported after the store landed (VMT_CAP_WRITE_AFTER) */
    uint64_t events[4];        /* emitted, indexed by vmt_ptm_event_kind */
} vmt_ptm_stats;

/* Create a monitor on a session (not owned; must outlive the monitor). */
vmt_status vmt_ptm_create(vmt_session *s, vmt_ptm **out);
/* Drops every watch and every restriction the monitor holds. */
void vmt_ptm_destroy(vmt_ptm *p);
/* Message of the last failure or hostile table seen ("" if none). */
const char *vmt_ptm_error(const vmt_ptm *p);

/* Watch ctx (ctx.root is masked with VMT_CR3_ADDR_MASK) in `view`. VMT_OK
 * also when the VA is not present now (the path down to the not-present
 * entry is watched). VMT_E_EXISTS when (ctx, view, tag) is already watched
 * (nothing changes). Hostile tables: the walker's error, nothing changes. A
 * driver failure: nothing changes. */
vmt_status vmt_ptm_monitor(vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag);
/* Stop watching; VMT_E_NOTFOUND when not watched. Pending per-vCPU state
 * (dirty entries, partial writes, an active step) stays valid. */
vmt_status vmt_ptm_unmonitor(vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag);
/* The watch's current state; VMT_E_NOTFOUND when not watched. */
vmt_status vmt_ptm_query(const vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag,
                         vmt_ptm_watch_info *out);

/* Is (view, gfn) a table page the monitor write-protects? */
bool vmt_ptm_owns(const vmt_ptm *p, vmt_view view, vmt_gfn gfn);
/* Is the vCPU between a STEP response of the monitor and its SINGLESTEP? */
bool vmt_ptm_stepping(const vmt_ptm *p, vmt_vcpu vcpu);

/* Offer an event. *handled = true when it was the monitor's (a write to a
 * table page it owns in ev->view, or the SINGLESTEP of a vCPU it stepped);
 * then *resp is filled and page events went to sink (may be NULL). Other
 * events are left alone (*handled = false, *resp untouched). On a failure
 * (driver read/restrict failed) *handled is true, *resp still lets the guest
 * go on, the affected watches keep their previous state and the error is
 * returned; vmt_ptm_resync() repairs them later. */
vmt_status vmt_ptm_handle_event(vmt_ptm *p, const vmt_event *ev, vmt_response *resp, vmt_ptm_sink sink,
                                void *sink_ctx, bool *handled);

/* Re-walk every watch from guest memory now and emit the differences (for
 * changes made while the monitor was not trapping, or after a failure).
 * Events carry vcpu VMT_VCPU_ALL. */
vmt_status vmt_ptm_resync(vmt_ptm *p, vmt_ptm_sink sink, void *sink_ctx);

void vmt_ptm_get_stats(const vmt_ptm *p, vmt_ptm_stats *out);
const char *vmt_ptm_event_kind_name(vmt_ptm_event_kind kind);

/* Invariant checker for tests: VMT_OK or VMT_E_INTERNAL with the reason in
 * vmt_ptm_error(). */
vmt_status vmt_ptm_check(vmt_ptm *p);

#ifdef __cplusplus
}
#endif
#endif
