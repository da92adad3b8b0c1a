/*
 * vmtrap/driver.h — the driver contract.
 *
 * Design: a driver is an ops table plus a vmt_caps record that states what it
 * can do. Callers choose mechanisms from the capabilities (the shadow-INT3
 * controller needs VIEW_REMAP + VIEW_PERM with read/write traps, the
 * execute-permission controller needs execute traps, the debug-register
 * controller needs hw_breakpoints > 0) instead of calling something that
 * fails. The generic wrapper (vmt_drv_* functions) refuses any call whose
 * capability the driver did not declare, with VMT_E_NOTSUP and a message;
 * vmt_driver_create() refuses a caps record that declares a capability whose
 * op is missing. A driver never pretends.
 *
 * Errors: each op gets the vmt_driver handle and reports failure with
 * vmt_driver_fail(), which records a message; vmt_driver_error() returns it.
 *
 * Frames: guest RAM is gfn 0 .. caps.ram_frames-1. frame_alloc() returns
 * extra frames outside guest RAM that the host can read and write
 * (read_phys/write_phys) and that a view can use as backing for an in-RAM
 * gfn, but that the guest can never reach directly.
 *
 * Threading: a driver is used from one thread.
 */
#ifndef VMTRAP_DRIVER_H
#define VMTRAP_DRIVER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/event.h"
#include "vmtrap/regs.h"
#include "vmtrap/status.h"
#include "vmtrap/vcpu_state.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_driver vmt_driver;

/* Capability flags (vmt_caps.flags). */
enum {
    VMT_CAP_READ_PHYS      = 1ull << 0,  /* read guest-physical memory */
    VMT_CAP_WRITE_PHYS     = 1ull << 1,  /* write guest-physical memory */
    VMT_CAP_REGS_GET       = 1ull << 2,
    VMT_CAP_REGS_SET       = 1ull << 3,
    VMT_CAP_PAUSE          = 1ull << 4,  /* pause/resume the whole VM */
    VMT_CAP_VIEWS          = 1ull << 5,  /* create/destroy/switch views */
    VMT_CAP_VIEW_PER_VCPU  = 1ull << 6,  /* each vCPU has its own current view (else VM-wide) */
    VMT_CAP_VIEW_REMAP     = 1ull << 7,  /* change a gfn's backing frame in a view */
    VMT_CAP_VIEW_PERM      = 1ull << 8,  /* per-gfn R/W/X per view (see trap_access) */
    VMT_CAP_WRITE_DATA     = 1ull << 9,  /* write events carry value and size */
    VMT_CAP_SINGLESTEP     = 1ull << 10, /* STEP responses */
    VMT_CAP_FAST_STEP      = 1ull << 11, /* FAST_STEP responses */
    VMT_CAP_EMULATE        = 1ull << 12, /* EMULATE responses and CONTINUE on memory events */
    VMT_CAP_FRAMES         = 1ull << 13, /* frame_alloc / frame_free */
    VMT_CAP_INJECT_PF      = 1ull << 14, /* inject #PF with CR2 */
    VMT_CAP_INJECT_BP      = 1ull << 15, /* REINJECT of INT3 / inject #BP */
    VMT_CAP_EVENTS         = 1ull << 16, /* wait_event/respond: the driver runs or watches a CPU */
    VMT_CAP_BREAKPOINT_EVENTS = 1ull << 17, /* INT3 is reported as VMT_EVENT_BREAKPOINT */
    VMT_CAP_CR3_EVENTS     = 1ull << 18,
    VMT_CAP_IO_EVENTS      = 1ull << 19,
    VMT_CAP_HW_BREAKPOINTS = 1ull << 20, /* debug-register execute breakpoints, count below */
    VMT_CAP_TIME_LIMIT     = 1ull << 21,
    VMT_CAP_INSN_LIMIT     = 1ull << 22,
    VMT_CAP_DETERMINISTIC  = 1ull << 23, /* same guest + same responses -> same events */
    VMT_CAP_PT_AD_BITS     = 1ull << 24, /* guest A/D updates into write-protected tables work */
    VMT_CAP_VCPU_STATE     = 1ull << 25, /* get/set the full vmt_vcpu_state (snapshots) */
    VMT_CAP_DIRTY_LOG      = 1ull << 26, /* guest-RAM frames written since the last clear */
    /* Write traps (VIEW_PERM W) are reported AFTER the store landed in
     * memory (a debugger watchpoint, e.g. QEMU's gdbstub), not before it as
     * event.h describes: the memory already holds the written value, the
     * response cannot DENY or redirect it, and CONTINUE simply goes on (no
     * step, no emulation). Such a driver may restrict view 0 (it needs no
     * unaltered view to let a write land). Write data, when present, is the
     * value memory now holds. */
    VMT_CAP_WRITE_AFTER    = 1ull << 27,
};

typedef struct vmt_caps {
    uint64_t flags;          /* VMT_CAP_* */
    vmt_access trap_access;  /* which access kinds a view can trap (VIEW_PERM) */
    uint16_t max_views;      /* views including view 0; 1 when no VIEWS */
    uint8_t hw_breakpoints;  /* number of execute breakpoints (0..4) */
    uint32_t vcpus;
    uint64_t ram_frames;     /* guest RAM is gfn 0 .. ram_frames-1 */
    uint8_t maxphyaddr;      /* guest physical address width */
} vmt_caps;

/* Interrupt/exception injection. */
typedef struct vmt_injection {
    uint8_t vector;          /* 3 = #BP, 14 = #PF, ... */
    bool has_error_code;
    uint32_t error_code;
    uint64_t cr2;            /* for #PF */
} vmt_injection;

/* Counters every driver with EVENTS keeps. */
typedef struct vmt_driver_stats {
    uint64_t events[VMT_EVENT_KIND_COUNT]; /* events reported, by kind */
    uint64_t exits;          /* times the guest stopped for the monitor (incl. internal ones) */
    uint64_t internal_exits; /* exits the driver handled itself (steps, TLB fills, ...) */
    uint64_t ns_guest;       /* time spent running the guest */
    uint64_t ns_monitor;     /* time between an event and the next resume */
    uint64_t instructions;   /* when the driver counts them, else 0 */
} vmt_driver_stats;

/* The ops a driver implements. An op may be NULL when the matching capability
 * is not declared. `d` is the handle; vmt_driver_impl(d) is the driver's own
 * state. Ops report failures through vmt_driver_fail(d, ...). */
typedef struct vmt_driver_ops {
    const char *name;
    void (*destroy)(vmt_driver *d);

    vmt_status (*read_phys)(vmt_driver *d, vmt_pa pa, void *buf, size_t len);
    vmt_status (*write_phys)(vmt_driver *d, vmt_pa pa, const void *buf, size_t len);
    vmt_status (*get_regs)(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs);
    vmt_status (*set_regs)(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs);
    vmt_status (*pause)(vmt_driver *d);
    vmt_status (*resume)(vmt_driver *d);

    /* Views. view_create makes a view where every gfn has `default_access`
     * and its own backing. view_switch with VMT_VCPU_ALL switches all
     * (without VIEW_PER_VCPU a switch of any vCPU switches all). An unknown
     * view is VMT_E_NOTFOUND; view_destroy refuses a view a vCPU is on
     * (VMT_E_BUSY). The conformance suite (tests/conformance) checks this. */
    vmt_status (*view_create)(vmt_driver *d, vmt_access default_access, vmt_view *out);
    vmt_status (*view_destroy)(vmt_driver *d, vmt_view view);
    vmt_status (*view_switch)(vmt_driver *d, vmt_vcpu vcpu, vmt_view view);
    vmt_status (*view_current)(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out);
    /* Back `gfn` by `backing` in `view` (backing == gfn undoes it). Resets
     * the gfn's rights in that view to the view's default. */
    vmt_status (*view_remap)(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
    vmt_status (*view_set_access)(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
    vmt_status (*view_get_access)(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                  vmt_gfn *backing);

    vmt_status (*frame_alloc)(vmt_driver *d, vmt_gfn *out);
    vmt_status (*frame_free)(vmt_driver *d, vmt_gfn gfn);

    /* Debug-register execute breakpoint `index` at va (enable=0 clears). */
    vmt_status (*hw_breakpoint)(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable);
    vmt_status (*inject)(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj);
    /* Enable or disable reporting of an event kind that is optional
     * (CR_WRITE, IO, SINGLESTEP outside responses). */
    vmt_status (*monitor)(vmt_driver *d, vmt_event_kind kind, int enable);

    /* Run or wait until the next event, at most timeout_ms (negative: no
     * limit). VMT_E_TIMEOUT when nothing happened in time. While the VM is
     * paused nothing runs: VMT_E_TIMEOUT for a timeout >= 0 (a driver may
     * answer at once: nothing can resume the VM while its thread waits) and
     * VMT_E_BUSY for a negative one (it could never return). */
    vmt_status (*wait_event)(vmt_driver *d, int timeout_ms, vmt_event *ev);
    vmt_status (*respond)(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);

    /* Stop the guest after `seconds` of guest time or `instructions`
     * (0 = no limit); the run then reports VMT_EVENT_STOPPED. */
    vmt_status (*set_limit)(vmt_driver *d, double seconds, uint64_t instructions);
    vmt_status (*stats)(vmt_driver *d, vmt_driver_stats *out);

    /* The whole resumable state of one vCPU (VCPU_STATE). set refuses a
     * state the driver cannot run with VMT_E_NOTSUP naming what (e.g. a
     * CPU mode it does not model); groups not in s->known keep the
     * driver's current values. */
    vmt_status (*get_vcpu_state)(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s);
    vmt_status (*set_vcpu_state)(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s);
    /* Call fn for every guest-RAM frame written (by the guest or the host)
     * since the last clear, in increasing gfn order; with clear != 0 the
     * log is cleared afterwards (DIRTY_LOG). fn returning non-zero stops
     * the walk (the log is then not cleared). */
    vmt_status (*dirty_log)(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear);
} vmt_driver_ops;

/* ---- for driver implementations ---- */

/* Wrap an implementation. Checks that every declared capability has its op.
 * On failure `impl` is NOT destroyed; the reason is written to why. */
vmt_status vmt_driver_create(const vmt_driver_ops *ops, void *impl, const vmt_caps *caps,
                             vmt_driver **out, char *why, size_t why_len);
void *vmt_driver_impl(vmt_driver *d);
/* Record a failure message ("driver 'emu': " is prepended) and return status. */
vmt_status vmt_driver_fail(vmt_driver *d, vmt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Replace the capability record (a driver whose abilities change after
 * loading a guest); same consistency check as create. */
vmt_status vmt_driver_set_caps(vmt_driver *d, const vmt_caps *caps);

/* ---- for users ---- */

void vmt_driver_destroy(vmt_driver *d);
const char *vmt_driver_name(const vmt_driver *d);
const vmt_caps *vmt_driver_caps(const vmt_driver *d);
int vmt_driver_has(const vmt_driver *d, uint64_t cap_flags); /* all of the flags */
/* The message of the last failure on this handle ("" if none). */
const char *vmt_driver_error(const vmt_driver *d);
/* Name of one capability flag, e.g. "view-remap". */
const char *vmt_cap_name(uint64_t cap_flag);

vmt_status vmt_drv_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len);
vmt_status vmt_drv_write_phys(vmt_driver *d, vmt_pa pa, const void *buf, size_t len);
vmt_status vmt_drv_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs);
vmt_status vmt_drv_set_regs(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs);
vmt_status vmt_drv_pause(vmt_driver *d);
vmt_status vmt_drv_resume(vmt_driver *d);
vmt_status vmt_drv_view_create(vmt_driver *d, vmt_access default_access, vmt_view *out);
vmt_status vmt_drv_view_destroy(vmt_driver *d, vmt_view view);
vmt_status vmt_drv_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view);
vmt_status vmt_drv_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out);
vmt_status vmt_drv_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
vmt_status vmt_drv_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
vmt_status vmt_drv_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                   vmt_gfn *backing);
vmt_status vmt_drv_frame_alloc(vmt_driver *d, vmt_gfn *out);
vmt_status vmt_drv_frame_free(vmt_driver *d, vmt_gfn gfn);
vmt_status vmt_drv_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable);
vmt_status vmt_drv_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj);
vmt_status vmt_drv_monitor(vmt_driver *d, vmt_event_kind kind, int enable);
vmt_status vmt_drv_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev);
/* Checks the response against the caps (e.g. EMULATE needs VMT_CAP_EMULATE)
 * before handing it to the driver. */
vmt_status vmt_drv_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);
vmt_status vmt_drv_set_limit(vmt_driver *d, double seconds, uint64_t instructions);
vmt_status vmt_drv_stats(vmt_driver *d, vmt_driver_stats *out);
vmt_status vmt_drv_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s);
vmt_status vmt_drv_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s);
vmt_status vmt_drv_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear);

#ifdef __cplusplus
}
#endif
#endif
