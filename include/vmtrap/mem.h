/*
 * vmtrap/mem.h — the in-memory test driver ("mem"): a driver with no CPU.
 *
 * Design: guest RAM is a host buffer; views, per-gfn backings and rights,
 * extra frames, vCPU registers, hardware breakpoints and injections are plain
 * host state, so callers of the driver contract (breakpoint manager,
 * page-table monitor, session) can be unit-tested without a hypervisor.
 * Events do not come from a CPU: a test queues them with vmt_mem_push_event()
 * and wait_event() hands them out in order. Every call that reaches the
 * driver is recorded in a call log, and any call can be made to fail
 * (fault injection) to test error paths.
 *
 * Capabilities: everything it implements is declared: READ/WRITE_PHYS,
 * REGS_GET/SET, PAUSE, VIEWS, VIEW_PER_VCPU, VIEW_REMAP, VIEW_PERM (traps
 * RWX unless cfg.trap_access says less), FRAMES, HW_BREAKPOINTS (4), INJECT_PF,
 * INJECT_BP, EVENTS (queued, see below), WRITE_DATA, SINGLESTEP, FAST_STEP,
 * EMULATE, BREAKPOINT_EVENTS, CR3_EVENTS, IO_EVENTS, VCPU_STATE, DIRTY_LOG;
 * not the run limits,
 * DETERMINISTIC or PT_AD_BITS. cfg.caps_remove takes any of them away, and
 * behaviour follows (e.g. VM-wide views without VIEW_PER_VCPU). It runs no
 * CPU: its conformance factory sets runs_cpu = false, so CPU groups skip.
 *
 * Semantics (the contract of vmtrap/driver.h, made precise):
 *  - RAM is gfn 0 .. ram_frames-1. Extra frames (frame_alloc) are gfns
 *    ram_frames .. ram_frames+extra_frames-1, zero-filled when handed out,
 *    reused after free (last freed first), host-readable and writable through
 *    read_phys/write_phys, usable as a view's backing for an in-RAM gfn, and
 *    never a gfn a view can remap or restrict. A frame still used as a
 *    backing cannot be freed (VMT_E_BUSY).
 *  - read_phys/write_phys address frames by their own gfn (view 0); a range
 *    that touches any frame that is neither RAM nor an allocated extra frame
 *    fails with VMT_E_RANGE and copies nothing.
 *  - View 0 is the unaltered view: it cannot be remapped, restricted or
 *    destroyed (VMT_E_INVAL). Other views are created with a default rights
 *    set; ids are the lowest free ones; more than max_views (including view
 *    0) gives VMT_E_RANGE. An unknown view gives VMT_E_NOTFOUND.
 *  - view_remap resets the gfn's rights to the view's default (Xen altp2m).
 *  - Destroying a view that a vCPU is on is REFUSED with VMT_E_BUSY (like
 *    Xen's altp2m): switch the vCPUs away first.
 *  - view_switch: with VMT_CAP_VIEW_PER_VCPU it changes the named vCPU (or
 *    all with VMT_VCPU_ALL); without it (caps_remove) views are VM-wide and a
 *    switch of any vCPU switches all of them.
 *  - Events: push_event() queues a copy; wait_event() returns the next one
 *    (VMT_E_TIMEOUT immediately when the queue is empty or the VM is paused;
 *    it never blocks), stamping seq (from 1) and the vCPU's current view, and
 *    loading the event's regs into the vCPU (the "CPU" arrived there). Until
 *    the event is answered with respond(), wait_event() gives VMT_E_BUSY
 *    (STOPPED events need no answer). respond() checks the event's seq,
 *    applies SWITCH_VIEW and SET_REGS, and records the whole response
 *    (vmt_mem_last_response); the other actions (STEP, FAST_STEP, EMULATE,
 *    DENY, REINJECT) are only recorded: the test plays the CPU and pushes
 *    whatever event the real CPU would report next.
 *  - Calls refused by the generic wrapper (undeclared capability) never
 *    reach the driver and are not logged.
 *
 *  - VCPU_STATE: each vCPU holds a full vmt_vcpu_state (vmt_vcpu_state_init
 *    at create) whose `regs` are the registers get_regs/set_regs and events
 *    use. set_vcpu_state checks the state (vmt_vcpu_state_check: VMT_E_INVAL
 *    naming the problem), copies regs and every group in s->known (other
 *    groups keep their values) and ORs `known`/`reconstructed`.
 *  - DIRTY_LOG: a bit per RAM frame, set by write_phys and
 *    vmt_mem_write_view (the test playing the guest); extra frames are not
 *    logged. dirty_log(fn == NULL, clear) only clears.
 *
 * Fault injection: an injected failure returns VMT_E_INJECTED with a message
 * naming the op, is logged with that status, and changes nothing.
 *
 * No-op mode (cfg.noop): view_create/destroy/remap/set_access/get_access and
 * frame_alloc/free only count (vmt_mem_op_count) and change nothing, nothing
 * is logged; view_create returns ids cycling over 1..max_views-1 (every id
 * below max_views can be switched to), view_get_access reports (gfn, RWX),
 * frame_alloc returns gfns above RAM whose reads give zeros and whose writes
 * are dropped. For benchmarks that exclude driver cost.
 */
#ifndef VMTRAP_MEM_H
#define VMTRAP_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_mem_config {
    uint64_t ram_frames;     /* guest RAM in 4 KiB frames; 0: 256 (1 MiB) */
    uint32_t vcpus;          /* 0: 1 */
    uint32_t extra_frames;   /* frames frame_alloc can hand out; 0: 1024 */
    uint16_t max_views;      /* views including view 0 (2..0xfffe); 0: 16 */
    uint8_t hw_breakpoints;  /* 1..4; 0: 4 */
    uint8_t maxphyaddr;      /* 0: 39 */
    vmt_access trap_access;  /* access kinds views can trap; 0: RWX */
    uint64_t caps_remove;    /* VMT_CAP_* flags NOT to declare (their
                                dependents go too: VIEWS takes REMAP, PERM and
                                PER_VCPU; EVENTS takes every event/response cap) */
    bool write_after;        /* also declare VMT_CAP_WRITE_AFTER: the caller's
                                scripted CPU stores first and reports the write
                                after it landed (as the qemu driver does) */
    bool noop;               /* no-op mode (see above) */
    uint32_t log_limit;      /* keep only the newest log_limit calls (a ring,
                                for long runs); 0: keep all */
} vmt_mem_config;

/* Create a mem driver; cfg may be NULL (all defaults). */
vmt_status vmt_mem_driver_create(const vmt_mem_config *cfg, vmt_driver **out, char *why, size_t why_len);

/* 1 when d is a mem driver (the vmt_mem_* calls below need one). */
int vmt_mem_is(const vmt_driver *d);

/* ---- the call log ---- */

typedef enum vmt_mem_op {
    VMT_MEM_OP_ANY = 0,      /* only for fault injection: every op */
    VMT_MEM_OP_READ_PHYS,
    VMT_MEM_OP_WRITE_PHYS,
    VMT_MEM_OP_GET_REGS,
    VMT_MEM_OP_SET_REGS,
    VMT_MEM_OP_PAUSE,
    VMT_MEM_OP_RESUME,
    VMT_MEM_OP_VIEW_CREATE,
    VMT_MEM_OP_VIEW_DESTROY,
    VMT_MEM_OP_VIEW_SWITCH,
    VMT_MEM_OP_VIEW_CURRENT,
    VMT_MEM_OP_VIEW_REMAP,
    VMT_MEM_OP_VIEW_SET_ACCESS,
    VMT_MEM_OP_VIEW_GET_ACCESS,
    VMT_MEM_OP_FRAME_ALLOC,
    VMT_MEM_OP_FRAME_FREE,
    VMT_MEM_OP_HW_BREAKPOINT,
    VMT_MEM_OP_INJECT,
    VMT_MEM_OP_MONITOR,
    VMT_MEM_OP_WAIT_EVENT,
    VMT_MEM_OP_RESPOND,
    VMT_MEM_OP_SET_LIMIT,
    VMT_MEM_OP_STATS,
    VMT_MEM_OP_GET_VCPU_STATE,
    VMT_MEM_OP_SET_VCPU_STATE,
    VMT_MEM_OP_DIRTY_LOG,
    VMT_MEM_OP_COUNT
} vmt_mem_op;

const char *vmt_mem_op_name(vmt_mem_op op); /* "view_remap", ... */

/* One recorded call. Fields an op does not use are 0. */
typedef struct vmt_mem_call {
    vmt_mem_op op;
    vmt_status status;       /* what the call returned */
    vmt_vcpu vcpu;           /* regs, view_switch/current, hw_breakpoint, inject, events */
    vmt_view view;           /* view argument; the result of view_create/current;
                                respond: new_view when SWITCH_VIEW */
    vmt_gfn gfn;             /* remap/set/get_access, frame_free; frame_alloc's result */
    vmt_gfn backing;         /* remap argument; get_access result */
    vmt_access access;       /* view_create default, set_access argument, get_access result */
    uint64_t addr;           /* read/write_phys pa; hw_breakpoint va; inject cr2 */
    uint64_t len;            /* read/write_phys length */
    uint32_t index;          /* hw_breakpoint index; inject vector; monitor/wait_event kind */
    int enable;              /* hw_breakpoint, monitor */
    uint32_t actions;        /* respond: VMT_RESP_* */
    uint64_t seq;            /* wait_event/respond: the event's seq */
} vmt_mem_call;

size_t vmt_mem_log_count(const vmt_driver *d);
/* The i-th call kept since the last clear (0 = oldest), NULL when i is past
 * the end. */
const vmt_mem_call *vmt_mem_log_at(const vmt_driver *d, size_t i);
void vmt_mem_log_clear(vmt_driver *d);
/* Calls dropped from the log because of log_limit, since create. */
uint64_t vmt_mem_log_dropped(const vmt_driver *d);
/* Calls of one op (VMT_MEM_OP_ANY: all) that reached the driver since
 * create, including failed ones; counted in no-op mode too. */
uint64_t vmt_mem_op_count(const vmt_driver *d, vmt_mem_op op);

/* ---- fault injection ---- */

/* Fail the n-th call (n >= 1; 1 = the next one) from now that matches op
 * (VMT_MEM_OP_ANY: any op). One shot; arming again replaces it. */
void vmt_mem_fail_nth(vmt_driver *d, vmt_mem_op op, uint64_t n);
/* Fail every call of op (not ANY) while on. */
void vmt_mem_fail_always(vmt_driver *d, vmt_mem_op op, bool on);
/* Disarm all injections. */
void vmt_mem_fail_clear(vmt_driver *d);
/* Failures injected since create. */
uint64_t vmt_mem_injected(const vmt_driver *d);

/* ---- events without a CPU ---- */

/* Queue a copy of ev (kind, vcpu, regs and u are used; seq and view are set
 * on delivery). VMT_E_INVAL for a bad kind or vCPU. */
vmt_status vmt_mem_push_event(vmt_driver *d, const vmt_event *ev);
size_t vmt_mem_pending_events(const vmt_driver *d);
/* The last response given and the event it answered; VMT_E_NOTFOUND if none. */
vmt_status vmt_mem_last_response(const vmt_driver *d, vmt_event *ev, vmt_response *resp);

/* ---- state that has no op to read it back ---- */

/* Guest RAM as a guest in `view` sees it: each gfn through the view's
 * backing (rights are ignored). For tests that check what a remap shows,
 * e.g. an INT3 in a shadow frame. Not an op: not logged, counted or
 * fault-injected. VMT_E_NOTFOUND for an unknown view, VMT_E_RANGE past RAM
 * (extra frames are not guest-reachable). */
vmt_status vmt_mem_read_view(vmt_driver *d, vmt_view view, vmt_pa pa, void *buf, size_t len);
vmt_status vmt_mem_write_view(vmt_driver *d, vmt_view view, vmt_pa pa, const void *buf, size_t len);

bool vmt_mem_paused(const vmt_driver *d);
/* Hardware breakpoint `index` of a vCPU; VMT_E_INVAL for a bad vcpu/index. */
vmt_status vmt_mem_hw_breakpoint_get(const vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va *va,
                                     bool *enabled);
/* The last injection on a vCPU; VMT_E_NOTFOUND if none. */
vmt_status vmt_mem_last_injection(const vmt_driver *d, vmt_vcpu vcpu, vmt_injection *inj);
/* Whether an optional event kind was enabled with monitor(). */
bool vmt_mem_monitoring(const vmt_driver *d, vmt_event_kind kind);
/* Limits given to set_limit (0 = none). */
void vmt_mem_limits(const vmt_driver *d, double *seconds, uint64_t *instructions);
/* Extra frames currently allocated. */
uint64_t vmt_mem_frames_in_use(const vmt_driver *d);

/* Invariant checker: VMT_OK, or VMT_E_INTERNAL with the reason in why
 * (frame accounting and reference counts, view tables normalised and
 * pointing only at RAM or allocated frames, every vCPU on a live view, event
 * queue and log consistent). */
vmt_status vmt_mem_check(const vmt_driver *d, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
