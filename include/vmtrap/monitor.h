/*
 * vmtrap/monitor.h — hooks by symbol name, and the event handler that wires
 * the breakpoint manager, the page-table monitor and the ucall decoder.
 *
 * Design (after the vmi-rs breakpoint-manager example): a monitor is made on
 * a session and the guest's ELF image. vmt_monitor_hook() resolves a symbol
 * from the image, inserts a hidden breakpoint for it (in the monitor's
 * breakpoint view, under the guest's current translation root) and asks the
 * page-table monitor to watch that VA's translation, so the breakpoint
 * follows the page through page-outs, remaps, splits and merges.
 * vmt_monitor_run() runs the session's event loop with the monitor's handler,
 * which dispatches each event:
 *   breakpoint / memory access  -> page-table monitor first (PT writes), then
 *                                  the breakpoint manager (our INT3, hidden
 *                                  reads, the guest's own INT3 = reinjected)
 *   page-table events (in/out/remap) -> the breakpoint manager, then the
 *                                  page-event callback
 *   IO on the ucall port        -> vmt_ucall_decode -> the ucall callback
 *   CR writes, STOPPED          -> counted; STOPPED ends the run
 * A hook callback gets a vmt_hit: symbol, registers, and helpers that read
 * arguments and guest strings through the guest's page tables (a paged-out
 * page is reported as VMT_E_NOT_PRESENT, never guessed).
 *
 * Return hooks: vmt_monitor_hook_return() also reports the return of each
 * call (rax), by placing a one-shot breakpoint on the return address read
 * from the stack at entry.
 *
 * Address spaces: hooks are registered under the translation root each vCPU
 * runs on (vCPU 0's CR3 at create, then CR3 writes and the CR3 of any
 * event), so a guest that leaves its boot tables for its own is still
 * hooked. Each hook is registered on its own: one hook's hostile path under
 * a root refuses that hook there only (counted in stats.hook_refusals,
 * named by vmt_monitor_hook_status, retried when a vCPU enters the root
 * again); every other hook stays armed. A root no vCPU runs on any more is
 * dropped (its breakpoints would stay in frames the guest reuses) unless
 * that loses something: a hook refused under every root in use keeps its
 * registration where it was armed, and a new root that cannot be followed
 * keeps the old one.
 *
 * Failures: a hook callback failing, or the breakpoint manager failing on a
 * breakpoint event, ends the run (vmt_monitor_run returns it). A page-table
 * monitor failure, or the breakpoint manager failing to follow a page
 * event, is survived: counted (stats.errors, vmt_monitor_first_error), the
 * watches re-walked / the breakpoint re-inserted before the next event.
 *
 * Views: when the driver has views the monitor creates the breakpoint view
 * (all rights) and moves every vCPU to it; destroy moves them back to view 0
 * and destroys it.
 *
 * Invariants (vmt_monitor_check()): every hook has a breakpoint in the
 * breakpoint manager and a watch in the page-table monitor under every
 * followed root where it is not refused (and a refusal is counted); the per-hook counters add up to the totals; the
 * breakpoint manager, the page-table monitor and the session pass their own
 * checkers.
 */
#ifndef VMTRAP_MONITOR_H
#define VMTRAP_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/bpm.h"
#include "vmtrap/event.h"
#include "vmtrap/image.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"
#include "vmtrap/status.h"
#include "vmtrap/ucall.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_monitor vmt_monitor;

/* One hit of a hook: the entry of a hooked function, or its return. */
typedef struct vmt_hit {
    vmt_monitor *monitor;
    const char *symbol;
    vmt_va symbol_va;
    unsigned hook_index;  /* order of vmt_monitor_hook() calls, from 0 */
    int is_return;        /* 1: the call returned, regs.rax is the value */
    uint64_t count;       /* this hook's entry count including this hit */
    vmt_vcpu vcpu;
    vmt_view view;
    vmt_pa root;          /* regs.cr3 & VMT_CR3_ADDR_MASK */
    vmt_regs regs;
    int alias;            /* 1: executed through another virtual address of the hooked
                             frame (regs.rip is that address, symbol_va the hooked one) */
} vmt_hit;

typedef vmt_status (*vmt_hook_fn)(const vmt_hit *hit, void *user);
typedef void (*vmt_page_event_fn)(const vmt_ptm_event *ev, const char *symbol, void *user);
typedef void (*vmt_ucall_fn)(const vmt_ucall *uc, void *user);

/* A detector result the guest reported (VMT_UCALL_DETECTOR). */
typedef struct vmt_detector_result {
    uint32_t id;
    int pass;
    char name[VMT_UCALL_NAME_LEN];
    char detail[VMT_UCALL_TEXT_LEN];
} vmt_detector_result;

#define VMT_MONITOR_MAX_DETECTORS 32

typedef struct vmt_monitor_stats {
    uint64_t hits;                    /* entries of all hooks */
    uint64_t returns;                 /* returns of all return hooks */
    uint64_t returns_missed;          /* entries whose return could not be hooked */
    uint64_t roots, roots_failed, roots_ignored; /* translation roots followed / followed with a hook
                                                    refused under them (now) / past the limit */
    uint64_t page_in, page_out, remap;
    uint64_t foreign_int3;            /* guest INT3s reinjected to the guest */
    uint64_t alias_hits;              /* hits through another virtual address of a hooked frame
                                         (shadow / exec; debug registers cannot see them) */
    uint64_t hidden_accesses;         /* reads/writes of hooked pages served unaltered */
    uint64_t pt_writes;               /* monitored page-table writes */
    uint64_t cr3_writes;
    uint64_t ucalls, ucall_errors;
    uint64_t errors;                  /* failures the monitor survived (see vmt_monitor_first_error) */
    uint64_t resyncs;                 /* page-table re-walks after such a failure */
    uint64_t hook_refusals;           /* (hook, root) registrations refused (hostile path, no resource) */
    uint64_t events[VMT_EVENT_KIND_COUNT]; /* events handled, by kind */
    int guest_done;                   /* the guest sent DONE */
    uint64_t guest_exit_code;         /* its code */
    size_t ndetectors;
    vmt_detector_result detectors[VMT_MONITOR_MAX_DETECTORS];
} vmt_monitor_stats;

/* Options; zero fields take the defaults. */
typedef struct vmt_monitor_config {
    vmt_bpm_controller controller; /* AUTO: the breakpoint manager picks from the caps */
    unsigned bpm_flags;            /* VMT_BPM_* */
    /* A breakpoint event with no breakpoint behind it (stale) is answered
     * CONTINUE; this many in a row at one rip with no other event between
     * is a livelock and ends the run with VMT_E_INTERNAL. 0: 100000. */
    uint32_t livelock_repeats;
    /* A hooked frame executed through a virtual address that has no hook
     * (a physical alias): VMT_MONITOR_ALIAS_HITS (0) calls the hook with
     * hit.alias = 1 and counts it as a hit; VMT_MONITOR_ALIAS_COUNT only
     * counts it (stats.alias_hits). Either way stats.alias_hits counts. */
    unsigned alias_mode;
} vmt_monitor_config;

enum { VMT_MONITOR_ALIAS_HITS = 0, VMT_MONITOR_ALIAS_COUNT = 1 };

/* The session and the image must outlive the monitor. The first translation
 * root is vCPU 0's CR3 at create. cfg may be NULL (defaults). */
vmt_status vmt_monitor_create(vmt_session *s, const vmt_image *img, vmt_monitor **out, char *why,
                              size_t why_len);
vmt_status vmt_monitor_create_ex(vmt_session *s, const vmt_image *img, const vmt_monitor_config *cfg,
                                 vmt_monitor **out, char *why, size_t why_len);
/* Removes every breakpoint and watch, then frees. The session stays. */
void vmt_monitor_destroy(vmt_monitor *m);
const char *vmt_monitor_error(const vmt_monitor *m);
vmt_session *vmt_monitor_session(vmt_monitor *m);
/* The monitor's breakpoint manager and page-table monitor (owned by the
 * monitor), e.g. for their statistics or checkers; the breakpoint view. */
vmt_bpm *vmt_monitor_bpm(vmt_monitor *m);
vmt_ptm *vmt_monitor_ptm(vmt_monitor *m);
vmt_view vmt_monitor_view(const vmt_monitor *m);

/* Hook the entry of `symbol`. VMT_E_NOTFOUND (message names the symbol) when
 * the image has no such symbol; VMT_E_INVAL when it is not code (a data
 * object, or outside every executable segment); VMT_E_RANGE when the
 * breakpoint mechanism has no room for another address (debug registers:
 * the message names the hooks holding them); VMT_E_EXISTS when already
 * hooked. Otherwise VMT_OK: the hook is registered under each followed root
 * on its own; where its path is hostile it is refused for that root only
 * (see vmt_monitor_hook_status). fn may be NULL (the hit is only counted). */
vmt_status vmt_monitor_hook(vmt_monitor *m, const char *symbol, vmt_hook_fn fn, void *user);
/* Also report returns of an already hooked symbol to fn. */
vmt_status vmt_monitor_hook_return(vmt_monitor *m, const char *symbol, vmt_hook_fn fn, void *user);
void vmt_monitor_on_page_event(vmt_monitor *m, vmt_page_event_fn fn, void *user);
void vmt_monitor_on_ucall(vmt_monitor *m, vmt_ucall_fn fn, void *user);
/* Every event after the monitor handled it, with the response it gives and
 * the status of its handling (for tracing). */
typedef void (*vmt_event_trace_fn)(const vmt_event *ev, const vmt_response *resp, vmt_status st, void *user);
void vmt_monitor_on_event(vmt_monitor *m, vmt_event_trace_fn fn, void *user);

/* The hooks, for reports: count, name and counters of hook i. */
size_t vmt_monitor_hook_count(const vmt_monitor *m);
const char *vmt_monitor_hook_symbol(const vmt_monitor *m, size_t i);
uint64_t vmt_monitor_hook_hits(const vmt_monitor *m, size_t i);
uint64_t vmt_monitor_hook_returns(const vmt_monitor *m, size_t i);
/* 1 when hook i also reports returns. */
int vmt_monitor_hook_has_return(const vmt_monitor *m, size_t i);
/* A hook's state now, over the roots followed now: ARMED under at least
 * one (its page present), else PENDING (registered, page not present), else
 * REFUSED (under every followed root: hostile or unreadable path, or no
 * breakpoint resource). The last refusal (any root, ever) and why. */
typedef enum vmt_hook_state { VMT_HOOK_ARMED = 1, VMT_HOOK_PENDING, VMT_HOOK_REFUSED } vmt_hook_state;
typedef struct vmt_hook_status {
    vmt_hook_state state;
    unsigned roots_armed, roots_pending, roots_refused;
    uint64_t refusals;       /* registrations refused, ever */
    vmt_pa refused_root;     /* the last refusal's root (when refusals) */
    char refused_why[256];   /* and its reason */
} vmt_hook_status;
vmt_status vmt_monitor_hook_status(const vmt_monitor *m, size_t i, vmt_hook_status *out);
const char *vmt_hook_state_name(vmt_hook_state state);
/* How many distinct breakpoint addresses the mechanism can hold at once
 * (debug registers), 0 when unlimited. */
unsigned vmt_monitor_breakpoint_limit(const vmt_monitor *m);
/* The breakpoint controller the manager chose from the driver's caps. */
vmt_bpm_controller vmt_monitor_controller(const vmt_monitor *m);
/* What mechanism hides the breakpoints and what the driver cannot hide
 * ("shadow INT3 in view 1; reads and writes of hooked pages ..."), for logs. */
const char *vmt_monitor_describe(const vmt_monitor *m);

/* The event handler (user = the monitor), for callers that run the session
 * loop themselves; vmt_monitor_run() is vmt_session_run() with it. */
vmt_status vmt_monitor_handle_event(vmt_session *s, const vmt_event *ev, vmt_response *resp,
                                    void *user);
vmt_status vmt_monitor_run(vmt_monitor *m);
/* Ask the loop to stop after the current event (e.g. from a hook). */
void vmt_monitor_request_stop(vmt_monitor *m);

const vmt_monitor_stats *vmt_monitor_stats_get(const vmt_monitor *m);
/* The first failure the monitor survived ("" if none): a page-table monitor
 * or breakpoint manager call that failed while handling an event. The guest
 * went on; the page-table watches are re-walked (vmt_ptm_resync) before the
 * next event so the breakpoints catch up. */
const char *vmt_monitor_first_error(const vmt_monitor *m);

/* Invariant checker for tests: VMT_OK or VMT_E_INTERNAL with the reason. */
vmt_status vmt_monitor_check(const vmt_monitor *m);

/* ---- reading a hit's arguments and memory ---- */

/* SysV AMD64 integer argument n (0-based): registers for n < 6, the stack
 * above the return address for n >= 6 (may fail with VMT_E_NOT_PRESENT). */
vmt_status vmt_hit_arg(const vmt_hit *hit, unsigned n, uint64_t *value);
/* Read guest-virtual memory under the hit's root. *done (may be NULL) says
 * how many bytes were read before a not-present page. */
vmt_status vmt_hit_read(const vmt_hit *hit, vmt_va va, void *buf, size_t len, size_t *done);
/* Read a NUL-terminated string (at most max-1 bytes, buf always terminated).
 * VMT_E_NOT_PRESENT when a page on the way is paged out: buf holds the bytes
 * before it and *fault_va (may be NULL) the first unreadable address. */
vmt_status vmt_hit_read_str(const vmt_hit *hit, vmt_va va, char *buf, size_t max, vmt_va *fault_va);

#ifdef __cplusplus
}
#endif
#endif
