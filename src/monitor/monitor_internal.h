/*
 * monitor/monitor_internal.h — the monitor's state (internal).
 *
 * A monitor owns a breakpoint manager, a page-table monitor and (when the
 * driver has views) the breakpoint view; it borrows the session and image.
 * Hooks live in a growable array, indexed by the hook index that is also the
 * tag given to the breakpoint manager and the page-table monitor. Pending
 * returns (a return hook's one-shot breakpoint per outstanding call) are a
 * small array keyed by (return address context, stack pointer).
 *
 * Translation roots: each hook is registered (breakpoint + watch) on its
 * own — one hook's hostile path refuses that hook under that root only —
 * under the root each vCPU currently runs on (vCPU 0's CR3 at create, then every CR3
 * write and the CR3 of every event), because a guest usually leaves its
 * boot tables for its own: the hooked VA may not even be mapped under the
 * first root. A root no vCPU runs on any more is dropped (its stale
 * breakpoints would otherwise stay in frames the guest reuses for data),
 * unless dropping it loses something: it holds a hook that is refused under
 * every root in use, or the vCPU's new root could not be followed (root
 * table full). Such a root is "retained" until that is no longer so.
 */
#ifndef VMT_MONITOR_INTERNAL_H
#define VMT_MONITOR_INTERNAL_H

#include <stdbool.h>

#include "core/errbuf.h"
#include "vmtrap/bpm.h"
#include "vmtrap/monitor.h"
#include "vmtrap/ptm.h"

/* A hook's registration under one followed root (mon_hook.reg[r] is its
 * state under m->roots[r]). */
typedef enum mon_reg { MON_REG_NONE = 0, MON_REG_DONE, MON_REG_REFUSED } mon_reg;

#define MON_WHY_LEN VMT_ERRBUF_LEN

typedef struct mon_hook {
    char *symbol;
    vmt_va va;
    vmt_hook_fn fn;
    void *user;
    vmt_hook_fn ret_fn;
    void *ret_user;
    uint64_t hits;
    uint64_t returns;
    uint8_t reg[16];            /* mon_reg under roots[r] (MON_MAX_ROOTS) */
    uint64_t refusals;          /* registrations refused, under any root, ever */
    vmt_pa refused_root;        /* the last refusal: root ... */
    char refused_why[MON_WHY_LEN]; /* ... and why */
} mon_hook;

/* An outstanding call of a return-hooked function. */
typedef struct mon_pending_return {
    size_t hook;         /* hook index */
    vmt_addr_ctx ret;    /* return address under the caller's root */
    uint64_t rsp_after;  /* rsp after the ret (entry rsp + 8): tells recursion levels apart */
    uint64_t count;      /* the entry's hit number */
} mon_pending_return;

#define MON_MAX_PENDING_RETURNS 256
/* Default of vmt_monitor_config.livelock_repeats. */
#define MON_STALE_LIVELOCK 100000
#define MON_MAX_ROOTS 16
#define MON_MAX_VCPUS 64
#define VMT_PA_NONE UINT64_MAX

/* Breakpoint keys (vmt_bpm_bp.key): entry hooks and one-shot returns. */
#define MON_KEY_ENTRY 1u
#define MON_KEY_RETURN 2u

struct vmt_monitor {
    vmt_monitor_config cfg;
    vmt_session *session;
    vmt_driver *driver;
    const vmt_image *image;
    vmt_bpm *bpm;
    vmt_ptm *ptm;
    vmt_view view;       /* the breakpoint view */
    bool own_view;       /* created by the monitor (destroyed with it) */
    bool watch_tables;   /* the ptm can write-protect tables in the view */

    mon_hook *hooks;
    size_t nhooks, cap_hooks;
    vmt_pa roots[MON_MAX_ROOTS];        /* every hook registered under each */
    size_t nroots;
    vmt_pa vcpu_root[MON_MAX_VCPUS];    /* the root each vCPU runs on (VMT_PA_NONE: unknown) */
    bool retained[MON_MAX_ROOTS];       /* kept though no vCPU runs on it (see above) */
    uint64_t hook_refusals;  /* (hook, root) registrations refused, ever */
    uint64_t roots_ignored;  /* roots seen past MON_MAX_ROOTS */
    mon_pending_return pending[MON_MAX_PENDING_RETURNS];
    size_t npending;

    vmt_page_event_fn page_fn;
    void *page_user;
    vmt_ucall_fn ucall_fn;
    void *ucall_user;
    vmt_event_trace_fn trace_fn;
    void *trace_user;

    bool hit_alias;           /* this event's hit came through a physical alias */
    vmt_va stale_rip;         /* the last stale breakpoint event's rip ... */
    uint64_t stale_repeats;   /* ... and how many came in a row there */
    bool resync_pending;    /* a ptm failure: re-walk the watches before the next event */
    struct {                /* bpm failed to follow a page event: register again */
        size_t hook;
        vmt_pa root;
        bool present;       /* the page event left the VA present ... */
        vmt_pa pa;          /* ... at this pa */
    } rereg[MON_MAX_ROOTS];
    size_t nrereg;
    char first_error[VMT_ERRBUF_LEN];
    vmt_monitor_stats stats;
    char description[320];
    vmt_errbuf err;
};

/* monitor_bpm.c: the breakpoint side. */
vmt_status mon_bpm_setup(vmt_monitor *m, char *why, size_t why_len);
void mon_bpm_teardown(vmt_monitor *m);
/* Breakpoint + watch of hook `index` under `root` (both or neither). */
_Static_assert(MON_MAX_ROOTS == 16, "mon_hook.reg has one slot per root");
vmt_status mon_register(vmt_monitor *m, size_t index, vmt_pa root);
void mon_unregister(vmt_monitor *m, size_t index, vmt_pa root);
bool mon_registered(const vmt_monitor *m, size_t index, vmt_pa root);
/* Register hook `index` under followed root slot r on its own: DONE, or
 * REFUSED with the reason kept on the hook and counted. */
void mon_register_slot(vmt_monitor *m, size_t index, size_t r);
/* stats.roots_failed / roots_ignored / hook_refusals from the root table. */
void mon_sync_root_stats(vmt_monitor *m);
/* vCPU runs on root now: register every hook under it when it is new,
 * drop the root it left when no vCPU runs there any more. */
vmt_status mon_follow_root(vmt_monitor *m, vmt_vcpu vcpu, vmt_pa root);
/* Breakpoint, execute and hidden-access events. */
vmt_status mon_bpm_event(vmt_monitor *m, const vmt_event *ev, vmt_response *resp);
vmt_status mon_bpm_check(const vmt_monitor *m);
void mon_describe(vmt_monitor *m);

/* monitor_events.c: record a failure the monitor survives. */
void mon_survived(vmt_monitor *m, const char *what, const char *msg);
vmt_status mon_call_entry(vmt_monitor *m, const vmt_event *ev, size_t hook);
vmt_hit mon_make_hit(vmt_monitor *m, const vmt_event *ev, size_t hook, int is_return, uint64_t count);

/* monitor_bpm.c: a one-shot breakpoint on the return address of this entry;
 * the return (matched by context and stack pointer) calls the return hook. */
vmt_status mon_arm_return(vmt_monitor *m, const vmt_event *ev, size_t hook, uint64_t count);
vmt_status mon_call_return(vmt_monitor *m, const vmt_event *ev, size_t hook_hint);
/* Remove a forgotten return's breakpoint unless another pending call shares it. */
void mon_drop_return_bp(vmt_monitor *m, const mon_pending_return *gone);

#endif
