/*
 * vmtrap/bpm.h — the breakpoint manager and its controllers.
 *
 * A breakpoint is (address context = va + root, view, global flag, key, tag):
 *   - key: the owner's id (uint32, any value but VMT_BPM_KEY_ANY);
 *   - tag: the owner's data, a uint64 (vmt_bpm_tag_ptr() for a pointer);
 *   - global: the breakpoint matches any translation root (kernel code); it
 *     is translated and installed with the root it was registered with.
 * Its identity is (view, va, root, key). Inserting an identity that is
 * already there changes nothing and returns VMT_E_EXISTS (not a failure:
 * "idempotent, and it says so"); the first tag stays.
 *
 * Location: insert translates ctx now (through the session); a translation
 * that is not present makes the breakpoint PENDING (it is armed later by a
 * page-in event from the page-table monitor, vmt_bpm_handle_ptm_event()).
 * Page-out parks the breakpoints of that (view, ctx) as pending; page-in arms
 * them at the new frame; remap is out + in. Removing needs no translation:
 * the manager remembers where each breakpoint is installed.
 *
 * Sharing: every breakpoint at one (view, frame) shares one install of the
 * frame (shadow copy / permission) and every breakpoint at one (view, pa)
 * shares one INT3 (or one debug register per va). Removing the last
 * breakpoint of a frame uninstalls it, drops the access restriction and
 * frees the shadow frame.
 *
 * Global vs per-root: a virtual address is either global or per-root, in
 * every view: inserting a global breakpoint at a va that has a per-root one
 * (in any root or view), or the reverse, fails with VMT_E_CONFLICT. A second
 * global insert at the same (view, va) under another root is the same
 * breakpoint (the root is canonicalised to the first registration).
 *
 * Controllers (vmt_bpm_config.controller; AUTO picks the first the driver
 * supports in this order):
 *   SHADOW  hidden INT3 (DRAKVUF-style): the frame is copied into a shadow
 *           frame (frame_alloc) with 0xCC at each breakpoint, the gfn is
 *           remapped to the shadow in the breakpoint view, then made
 *           execute-only there (access arbiter, owner VMT_OWNER_BPM). Reads
 *           and writes trap and are served from the unaltered frame; a write
 *           is stepped in view 0 and the shadow rebuilt from the written
 *           frame with every INT3 re-planted (with SINGLESTEP; else the
 *           reported bytes are mirrored at once and the shadow rebuilt at the
 *           vCPU's next event). Shadow frames are
 *           unreachable by the guest by the driver contract (driver.h), so
 *           no sink page is needed. Needs READ_PHYS, WRITE_PHYS, VIEWS,
 *           VIEW_REMAP, VIEW_PERM (trapping R and W), FRAMES,
 *           BREAKPOINT_EVENTS and EMULATE or FAST_STEP.
 *   EXEC    execute-permission: the page is made non-executable in the view;
 *           an execute at a breakpoint address is a hit, other executions on
 *           the page step through in view 0. No code change. Needs VIEWS,
 *           VIEW_PERM (trapping X) and EMULATE or FAST_STEP.
 *   DEBUG   debug registers (one per distinct va, all vCPUs), invisible to
 *           memory reads; at most caps.hw_breakpoints distinct vas. Needs
 *           HW_BREAKPOINTS and EVENTS.
 * SHADOW and EXEC need a breakpoint view other than view 0.
 *
 * Limits: views 0..4095; physical addresses below 2^52; at most 2^22-1 keys
 * per address context. Every operation is O(1) expected (hash maps) except
 * remove_view and clear (linear in the breakpoints) and the per-key work of
 * an address context (linear in the keys sharing it, normally 1).
 *
 * Failure atomicity: an operation that fails leaves the manager (and, for a
 * single failing driver call, the driver) as it was, and says why
 * (vmt_bpm_error). Removal treats VMT_E_NOTFOUND for a destroyed view as
 * done. vmt_bpm_check() verifies that all internal maps agree.
 *
 * Threading: one thread (the session's).
 */
#ifndef VMTRAP_BPM_H
#define VMTRAP_BPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/event.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_bpm vmt_bpm;

typedef enum vmt_bpm_controller {
    VMT_BPM_CTL_AUTO = 0,
    VMT_BPM_CTL_SHADOW,   /* hidden INT3 in a shadow frame */
    VMT_BPM_CTL_EXEC,     /* execute permission */
    VMT_BPM_CTL_DEBUG,    /* debug registers */
} vmt_bpm_controller;

const char *vmt_bpm_controller_name(vmt_bpm_controller c);

/* Flags of vmt_bpm_config. */
enum {
    VMT_BPM_PREFER_FAST_STEP = 1u << 0, /* step over with FAST_STEP even when EMULATE exists */
};

typedef struct vmt_bpm_config {
    vmt_bpm_controller controller; /* AUTO: from the driver's capabilities */
    unsigned flags;                /* VMT_BPM_* */
} vmt_bpm_config;

/* Any key, where a call accepts one key or all (not a valid key itself). */
#define VMT_BPM_KEY_ANY UINT32_MAX

typedef struct vmt_bpm_bp {
    vmt_addr_ctx ctx;     /* va + root (root is masked with VMT_CR3_ADDR_MASK) */
    vmt_view view;        /* the breakpoint view */
    bool global;          /* match any root */
    uint32_t key;         /* owner id */
    uint64_t tag;         /* owner data */
} vmt_bpm_bp;

static inline uint64_t vmt_bpm_tag_ptr(const void *p) { return (uint64_t)(uintptr_t)p; }
static inline void *vmt_bpm_tag_to_ptr(uint64_t tag) { return (void *)(uintptr_t)tag; }

/* Takes nothing from the session; the session must outlive the manager.
 * cfg may be NULL (AUTO). VMT_E_NOTSUP with the missing capabilities when
 * the (forced or any) controller cannot run on the driver. */
vmt_status vmt_bpm_create(vmt_session *s, const vmt_bpm_config *cfg, vmt_bpm **out, char *why,
                          size_t why_len);
/* Removes every breakpoint (best effort: driver failures are ignored), frees
 * every shadow frame it can, then frees the manager. */
void vmt_bpm_destroy(vmt_bpm *b);
const char *vmt_bpm_error(const vmt_bpm *b);
vmt_bpm_controller vmt_bpm_controller_of(const vmt_bpm *b);

/* Insert: VMT_OK (new; *active, when non-NULL, says armed now or pending),
 * VMT_E_EXISTS (already there: nothing changed), VMT_E_CONFLICT (global vs
 * per-root), or a failure (nothing changed). */
vmt_status vmt_bpm_insert(vmt_bpm *b, const vmt_bpm_bp *bp, bool *active);
/* Same with the physical address of ctx.va already known (not translated).
 * An address context that already has breakpoints keeps its location: the
 * new key joins it. */
vmt_status vmt_bpm_insert_pa(vmt_bpm *b, const vmt_bpm_bp *bp, vmt_pa pa, bool *active);
/* Remove one breakpoint (bp->key may be VMT_BPM_KEY_ANY: every key of that
 * address context; bp->tag is ignored). VMT_E_NOTFOUND when none. */
vmt_status vmt_bpm_remove(vmt_bpm *b, const vmt_bpm_bp *bp);
/* Same, but only when the breakpoint is installed at pa's frame
 * (VMT_E_NOTFOUND otherwise, e.g. pending or moved). */
vmt_status vmt_bpm_remove_pa(vmt_bpm *b, const vmt_bpm_bp *bp, vmt_pa pa);
/* Remove the breakpoints behind an event (of `key`, or all keys). *removed
 * (may be NULL) counts them; 0 is not an error. */
vmt_status vmt_bpm_remove_by_event(vmt_bpm *b, const vmt_event *ev, uint32_t key, size_t *removed);
/* Remove every breakpoint of a view (e.g. before destroying it). */
vmt_status vmt_bpm_remove_view(vmt_bpm *b, vmt_view view, size_t *removed);
/* Remove everything. Goes on after a failure; returns the first one. */
vmt_status vmt_bpm_clear(vmt_bpm *b);

/* The breakpoints behind an event (INT3, execute access, debug register):
 * by (view, frame, offset), then by address context (global ones match any
 * root); when that context has none (SHADOW / EXEC), those installed at the
 * frame and offset for any address: a physical alias (linear in the
 * breakpoints). Copies at most max into hits; *total (may be NULL) is the
 * number there are. Returns the number copied. */
size_t vmt_bpm_lookup_event(const vmt_bpm *b, const vmt_event *ev, vmt_bpm_bp *hits, size_t max,
                            size_t *total);
bool vmt_bpm_contains_event(const vmt_bpm *b, const vmt_event *ev);
/* Is there a breakpoint (active or pending) for (bp->view, bp->ctx, bp->key)?
 * key may be VMT_BPM_KEY_ANY; bp->global selects the global registration. */
bool vmt_bpm_contains(const vmt_bpm *b, const vmt_bpm_bp *bp);
/* Is it armed now? */
bool vmt_bpm_is_active(const vmt_bpm *b, const vmt_bpm_bp *bp);

/* Page-table monitor events: PAGE_OUT parks the breakpoints of (view, ctx)
 * (per-root and the global one registered under ctx.root) as pending,
 * PAGE_IN arms them at new_pa, REMAP moves them. *changed (may be NULL)
 * counts the address contexts that moved. Not ours: VMT_OK, *changed = 0. */
vmt_status vmt_bpm_handle_ptm_event(vmt_bpm *b, const vmt_ptm_event *ev, size_t *changed);

/* What handle_event decided. */
typedef enum vmt_bpm_disposition {
    VMT_BPM_NOT_OURS = 0, /* not ours: pass it on (page-table monitor, ...) */
    VMT_BPM_HIT,          /* our breakpoint site: hits (maybe 0: a frame shared by
                             another address space) + resp steps over it */
    VMT_BPM_HIDDEN,       /* a read/write (SHADOW) or another execute (EXEC) on a
                             breakpointed page, served from the unaltered view */
    VMT_BPM_FOREIGN,      /* the guest's own INT3 / INT $3 (any breakpoint event
                             under EXEC and DEBUG): resp REINJECTs it */
    VMT_BPM_STALE,        /* INT3 of a removed breakpoint: resp CONTINUEs; never
                             twice in a row at one rip of one vCPU (the second
                             is the guest's own: FOREIGN) */
    VMT_BPM_REFRESHED,    /* the single-step after a write or a guarded stepped
                             instruction (resp switches back to the breakpoint
                             view), or the execute trap of a frame whose shadow
                             went stale (resp CONTINUEs): shadow rebuilt */
} vmt_bpm_disposition;

const char *vmt_bpm_disposition_name(vmt_bpm_disposition d);

typedef struct vmt_bpm_verdict {
    vmt_bpm_disposition disposition;
    size_t nhits;         /* breakpoints behind the event (may exceed max_hits) */
    bool double_trap;     /* the guest had its own INT3 there: resp REINJECTs */
    bool alias;           /* HIT through a physical alias: the event's va (rip) has no
                             breakpoint, the hits are those installed at that frame and
                             offset for other addresses (SHADOW, EXEC; never DEBUG) */
} vmt_bpm_verdict;

/* Decide whether a driver event is the manager's and fill *resp (always
 * written; CONTINUE for NOT_OURS). hits (may be NULL when max_hits is 0)
 * gets at most max_hits breakpoints; vmt_bpm_lookup_event gives more. Errors
 * (a failing driver read) leave *resp as CONTINUE. */
vmt_status vmt_bpm_handle_event(vmt_bpm *b, const vmt_event *ev, vmt_response *resp,
                                vmt_bpm_bp *hits, size_t max_hits, vmt_bpm_verdict *verdict);

typedef struct vmt_bpm_stats {
    size_t breakpoints;   /* (view, ctx, key) registrations */
    size_t contexts;      /* distinct (view, ctx) */
    size_t active;        /* contexts armed */
    size_t pending;       /* contexts waiting for a page-in */
    size_t frames;        /* (view, frame) installs */
    size_t sites;         /* (view, pa) INT3s / debug registers in use */
    size_t shadow_frames; /* shadow frames held */
    size_t bytes;         /* heap bytes used by the manager */
    uint64_t hits, hidden_accesses, foreign_int3, stale_int3, refreshes;
    uint64_t displaced_refreshes; /* stepped-over instructions that stored into a shadowed
                                     frame: stepped, shadow rebuilt before the guest ran on */
} vmt_bpm_stats;

void vmt_bpm_get_stats(const vmt_bpm *b, vmt_bpm_stats *out);

/* Where the heap bytes of vmt_bpm_stats.bytes go, one part per internal
 * structure (for benchmarks): name, bytes, entries. Writes up to max parts
 * and returns how many there are; the parts' bytes add up to stats.bytes. */
typedef struct vmt_bpm_mem_part {
    const char *name;
    size_t bytes;
    size_t entries;
} vmt_bpm_mem_part;
size_t vmt_bpm_memory_parts(const vmt_bpm *b, vmt_bpm_mem_part *parts, size_t max);
/* Invariant checker: VMT_OK or VMT_E_INTERNAL with the reason in
 * vmt_bpm_error(). */
vmt_status vmt_bpm_check(vmt_bpm *b);
/* An order-independent digest of every internal map (for tests: equal
 * digests before and after a failed call mean the state is unchanged). */
uint64_t vmt_bpm_digest(const vmt_bpm *b);

#ifdef __cplusplus
}
#endif
#endif
