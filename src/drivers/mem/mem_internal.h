/*
 * drivers/mem/mem_internal.h — state of the in-memory driver (internal).
 *
 * Layout of the state:
 *  - ram: ram_frames * 4 KiB, zero at create.
 *  - extra frames: slot k is gfn ram_frames + k. frame[k] is the host page
 *    (NULL when the slot is free or never used); slots 0 .. extra_hwm-1 have
 *    been handed out at least once; free slots below the hwm sit on the
 *    free_stack (LIFO, so the last freed frame is reused first).
 *    refs[k] counts the (view, gfn) entries that use slot k as backing.
 *  - views[v].entries: gfn -> mem_entry for the gfns whose (backing, rights)
 *    differ from (gfn, the view's default). The map is kept normalised:
 *    an entry equal to the default is deleted.
 *  - per vCPU: current view, registers, hardware breakpoints, last injection.
 *  - events: queue[qhead .. qcount-1] not yet delivered; `outstanding`
 *    marks a delivered event waiting for its response.
 *  - log: every call that reached the driver (not in no-op mode); a growing
 *    array, or a fixed ring of cfg.log_limit entries.
 *
 * Invariants are checked by vmt_mem_check() (mem_check.c).
 */
#ifndef VMT_DRIVERS_MEM_INTERNAL_H
#define VMT_DRIVERS_MEM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/hmap.h"
#include "vmtrap/mem.h"

#define MEM_MAGIC 0x6d656d6472763031ull /* "memdrv01" */
#define MEM_HW_BP_MAX 4

typedef struct mem_entry {
    vmt_gfn backing;
    vmt_access access;
} mem_entry;

typedef struct mem_view {
    bool live;
    vmt_access default_access;
    vmt_hmap entries; /* vmt_gfn -> mem_entry */
} mem_view;

typedef struct mem_hwbp {
    vmt_va va;
    bool enabled;
} mem_hwbp;

typedef struct mem_vcpu {
    vmt_view view;
    vmt_regs regs;
    vmt_vcpu_state full;  /* VCPU_STATE; its regs are `regs` above (kept there) */
    mem_hwbp hwbp[MEM_HW_BP_MAX];
    bool has_injection;
    vmt_injection injection;
} mem_vcpu;

typedef struct mem_drv {
    uint64_t magic;
    vmt_mem_config cfg;   /* normalised: no zero defaults left */
    vmt_caps caps;

    uint8_t *ram;
    uint8_t **frame;      /* [extra_frames] */
    uint32_t *refs;       /* [extra_frames] */
    uint32_t *free_stack; /* [extra_frames] */
    uint32_t free_count;
    uint32_t extra_hwm;
    uint64_t noop_next_frame;
    vmt_view noop_next_view;

    mem_view *views;      /* [max_views] */
    mem_vcpu *vcpus;      /* [vcpus] */
    bool paused;
    bool monitoring[VMT_EVENT_KIND_COUNT];
    double limit_seconds;
    uint64_t limit_insns;

    uint64_t *dirty;      /* DIRTY_LOG: bit per RAM frame written since the last clear */

    vmt_event *queue;
    size_t qhead, qcount, qcap;
    uint64_t next_seq;
    bool outstanding;
    vmt_event delivered;  /* the outstanding (or last) delivered event */
    bool has_response;
    vmt_event answered;
    vmt_response response;
    vmt_driver_stats stats;

    vmt_mem_call *log;    /* ring: entry i is log[(log_start + i) % log_cap] */
    size_t log_start, log_count, log_cap;
    uint64_t log_dropped;
    uint64_t op_count[VMT_MEM_OP_COUNT]; /* [ANY] = all */

    vmt_mem_op fail_nth_op;
    uint64_t fail_nth_left; /* 0 = disarmed */
    uint64_t fail_always;   /* bit per op */
    uint64_t injected;
} mem_drv;

/* The mem state of d, or NULL when d is not a mem driver. */
/* The driver's name, the one string its ops table points at (mem_of
 * recognises its own drivers by that pointer before comparing text). */
extern const char mem_driver_name[];
mem_drv *mem_of(const vmt_driver *d);

/* Call bookkeeping shared by every op: mem_begin() counts the call, reserves
 * its log slot and decides whether to inject a failure (non-OK return: the
 * op must return mem_end() of it without doing anything). mem_end() logs the
 * call with its final status and returns the status. */
vmt_status mem_begin(vmt_driver *d, mem_drv *m, vmt_mem_call *c);
vmt_status mem_end(mem_drv *m, vmt_mem_call *c, vmt_status st);

/* Ops implemented in mem_views.c. */
vmt_status mem_op_view_create(vmt_driver *d, vmt_access default_access, vmt_view *out);
vmt_status mem_op_view_destroy(vmt_driver *d, vmt_view view);
vmt_status mem_op_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view);
vmt_status mem_op_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out);
vmt_status mem_op_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
vmt_status mem_op_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
vmt_status mem_op_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                  vmt_gfn *backing);
/* Switch `vcpu` (or all: VMT_VCPU_ALL, or any vCPU when views are VM-wide)
 * to a live view. */
void mem_switch_view(mem_drv *m, vmt_vcpu vcpu, vmt_view view);
bool mem_view_live(const mem_drv *m, vmt_view view);
void mem_views_free(mem_drv *m);

/* Ops implemented in mem_events.c. */
vmt_status mem_op_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev);
vmt_status mem_op_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);
vmt_status mem_op_stats(vmt_driver *d, vmt_driver_stats *out);
void mem_events_free(mem_drv *m);

/* mem_state.c: full vCPU state and the dirty log. mem_mark_dirty marks the
 * RAM frames of [pa, pa+len) (extra frames are not guest RAM: ignored). */
vmt_status mem_op_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s);
vmt_status mem_op_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s);
vmt_status mem_op_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear);
void mem_mark_dirty(mem_drv *m, vmt_pa pa, size_t len);

/* Whether slot gfn is RAM or an allocated extra frame; host pointer or NULL. */
uint8_t *mem_frame_ptr(mem_drv *m, vmt_gfn gfn);

#endif
