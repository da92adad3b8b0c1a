/*
 * vmtrap/session.h — a session: one driver, its caches, the access arbiter
 * and the event loop.
 *
 * Design:
 *  - The session owns the driver (destroying the session destroys it).
 *  - Guest memory reads go through a small cache of guest frames; virtual
 *    translations through a V2P cache keyed by (root, va page). Both are
 *    flushed automatically every time the guest has run (after each
 *    wait_event) and by every write the session makes; users can flush them
 *    too. Cached data is never used across a guest run.
 *  - The access arbiter: several owners (the breakpoint controllers, the
 *    page-table monitor, users) restrict rights on the same (view, gfn). The
 *    session keeps each owner's restriction and applies their intersection to
 *    the driver, re-applying it after a remap (a remap resets rights). An
 *    owner is a small integer the caller picks (VMT_OWNER_*).
 *  - The event loop: vmt_session_run() waits for events, flushes the caches,
 *    calls the handler, hands its response to the driver, and returns when
 *    stop is requested (vmt_session_request_stop(), which is async-signal-
 *    safe, or SIGINT/SIGTERM after vmt_session_stop_on_signals()), when the
 *    guest stops (VMT_EVENT_STOPPED, after the handler has seen it), or when
 *    the handler fails. A requested stop never leaves a vCPU between an event
 *    and its response: the guest is left consistent and can be resumed by
 *    calling run again.
 *
 * Invariants (checked by vmt_session_check()): every arbiter entry's applied
 * rights equal the intersection of its owners' restrictions; no entry has
 * zero owners; cached frames carry the current generation or are unused.
 */
#ifndef VMTRAP_SESSION_H
#define VMTRAP_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/event.h"
#include "vmtrap/paging.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_session vmt_session;

typedef struct vmt_session_config {
    uint32_t frame_cache_frames;  /* 0: default (64) */
    uint32_t v2p_cache_entries;   /* 0: default (1024) */
    int event_timeout_ms;         /* wait slice of the loop; 0: default (100);
                                     negative: invalid (stop requests are seen
                                     between slices) */
} vmt_session_config;

/* Access-arbiter owners. */
enum {
    VMT_OWNER_USER = 0,
    VMT_OWNER_BPM = 1,     /* breakpoint controllers */
    VMT_OWNER_PTM = 2,     /* page-table monitor */
    VMT_OWNER_COUNT = 8,
};

/* Takes ownership of drv (also on failure). cfg may be NULL. */
vmt_status vmt_session_create(vmt_driver *drv, const vmt_session_config *cfg, vmt_session **out);
void vmt_session_destroy(vmt_session *s);
vmt_driver *vmt_session_driver(vmt_session *s);
/* The message of the last failure on this session ("" if none). */
const char *vmt_session_error(const vmt_session *s);

/* Paging parameters used by translations (levels from CR4.LA57, NXE from
 * EFER, maxphyaddr from the driver's caps). Read from vCPU 0 at create when
 * the driver has REGS_GET, then followed from the registers of every event
 * whose vCPU has CR0.PG set; set_paging pins it (no more auto-detection).
 * Without readable registers: 4-level, NXE on. */
const vmt_paging_config *vmt_session_paging(const vmt_session *s);
void vmt_session_set_paging(vmt_session *s, const vmt_paging_config *cfg);

/* Physical memory through the frame cache. */
vmt_status vmt_session_read_pa(vmt_session *s, vmt_pa pa, void *buf, size_t len);
vmt_status vmt_session_write_pa(vmt_session *s, vmt_pa pa, const void *buf, size_t len);
/* A reader for vmt_paging_walk() that goes through the frame cache. */
vmt_phys_reader vmt_session_reader(vmt_session *s);

/* Virtual memory: translate (V2P cache), read and write across pages.
 * ctx.root is masked with VMT_CR3_ADDR_MASK. A not-present page gives
 * VMT_E_NOT_PRESENT and *done (when non-NULL) says how many bytes were read
 * before it. write_va translates every page before writing any, so a
 * not-present page means nothing was written. Host accesses ignore the
 * guest's R/W/U bits (a debugger's view). */
vmt_status vmt_session_translate(vmt_session *s, vmt_addr_ctx ctx, vmt_walk *walk);
vmt_status vmt_session_va_to_pa(vmt_session *s, vmt_addr_ctx ctx, vmt_pa *pa);
vmt_status vmt_session_read_va(vmt_session *s, vmt_addr_ctx ctx, void *buf, size_t len, size_t *done);
vmt_status vmt_session_write_va(vmt_session *s, vmt_addr_ctx ctx, const void *buf, size_t len);
/* Read a NUL-terminated string of at most max-1 bytes; always terminates buf.
 * VMT_E_RANGE when no NUL came within max-1 bytes (buf holds them). */
vmt_status vmt_session_read_str(vmt_session *s, vmt_addr_ctx ctx, char *buf, size_t max);

void vmt_session_flush_frames(vmt_session *s);
void vmt_session_flush_v2p(vmt_session *s);

/* Counters since create (for summaries and benchmarks). */
typedef struct vmt_session_stats {
    uint64_t frame_hits, frame_misses; /* frame cache lookups */
    uint64_t v2p_hits, v2p_misses;     /* translations */
    uint64_t events;                   /* events handed to a handler */
} vmt_session_stats;
void vmt_session_get_stats(const vmt_session *s, vmt_session_stats *out);

/* Access arbiter. restrict: owner wants at most `allowed` on (view, gfn)
 * (replaces that owner's earlier restriction there).
 * unrestrict: owner's restriction goes; the driver gets the intersection of
 * the rest (RWX when none is left); VMT_E_NOTFOUND if the owner had none.
 * remap: back gfn by another frame and re-apply the arbitrated rights.
 * effective: what is applied now (RWX when nobody restricts).
 * The driver is called only when the applied rights change; a driver
 * failure leaves the arbiter as it was. */
vmt_status vmt_session_restrict(vmt_session *s, vmt_view view, vmt_gfn gfn, unsigned owner,
                                vmt_access allowed);
vmt_status vmt_session_unrestrict(vmt_session *s, vmt_view view, vmt_gfn gfn, unsigned owner);
vmt_status vmt_session_remap(vmt_session *s, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
vmt_access vmt_session_effective_access(const vmt_session *s, vmt_view view, vmt_gfn gfn);
/* Forget every arbiter entry of a view (the view was destroyed). */
void vmt_session_forget_view(vmt_session *s, vmt_view view);

/* Event loop. run() returns VMT_OK after a stop request (the flag is
 * consumed, so a later run() goes on) or after the handler has seen a
 * VMT_EVENT_STOPPED event (see last_stop); the handler's status when it
 * fails (the event is still answered, with CONTINUE); a driver status when
 * waiting or responding fails. Timeouts of the wait slice just loop. */
typedef vmt_status (*vmt_event_handler)(vmt_session *s, const vmt_event *ev, vmt_response *resp,
                                        void *user);
vmt_status vmt_session_run(vmt_session *s, vmt_event_handler handler, void *user);
/* Async-signal-safe and thread-safe. */
void vmt_session_request_stop(vmt_session *s);
int vmt_session_stop_requested(const vmt_session *s);
/* Block SIGINT/SIGTERM in this thread and watch them through a signalfd:
 * either one makes run() return cleanly (within one wait slice). Undone by
 * destroy, which first drains pending ones. In a multi-threaded program,
 * call it before creating other threads so they inherit the blocked mask
 * (a thread that does not block them would take the default action). */
vmt_status vmt_session_stop_on_signals(vmt_session *s);
/* Why the last run() returned: 0 when it was a stop request, else the
 * guest's stop reason. */
const vmt_stop_info *vmt_session_last_stop(const vmt_session *s);
uint64_t vmt_session_events_handled(const vmt_session *s);

/* Invariant checker for tests: VMT_OK or VMT_E_INTERNAL with the reason. */
vmt_status vmt_session_check(const vmt_session *s);

#ifdef __cplusplus
}
#endif
#endif
