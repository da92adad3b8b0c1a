/*
 * tests/ptm/ptm_fixture.h — a page-table monitor on the mem driver, with a
 * tiny "CPU" that plays the guest's stores the way a driver reports them.
 *
 * The fixture builds 4-level tables in guest RAM (tables from gfn 16 up,
 * data frames from gfn 256 up; RAM is 1024 frames), monitors in view 1 and
 * collects the events the monitor emits. cpu_store() is one guest store:
 * if the vCPU's current view forbids the write it pushes the MEM_ACCESS
 * event a driver would report (with or without the written value), runs it
 * through wait_event -> vmt_ptm_handle_event -> respond, then performs the
 * store as the CPU would for that response (CONTINUE: once in place;
 * FAST_STEP / STEP: in the step view, then the SINGLESTEP round trip). It
 * counts driver exits. Every helper checks the monitor, the session and the
 * driver invariants afterwards.
 */
#ifndef VMT_TESTS_PTM_FIXTURE_H
#define VMT_TESTS_PTM_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmtrap/mem.h"
#include "vmtrap/ptm.h"
#include "vmtrap/session.h"

#define FX_RAM_FRAMES 1024
#define FX_MAX_EVENTS 1024

typedef struct fx {
    vmt_driver *d;        /* owned by s */
    vmt_session *s;
    vmt_ptm *ptm;
    vmt_view view;        /* the monitored view (1) */
    vmt_pa root;          /* a PML4 built by fx_create */
    vmt_gfn next_table;   /* bump allocators */
    vmt_gfn next_data;
    bool with_data;       /* cpu_store reports the written value */
    bool report_size;     /* without data: still report the size */
    vmt_ptm_event events[FX_MAX_EVENTS];
    unsigned nevents;
    uint64_t exits;       /* driver exits caused by cpu_store */
    vmt_status last_status; /* of the last vmt_ptm_handle_event */
    vmt_response last_resp[4]; /* per vCPU: the response to its last trap */
    unsigned levels;      /* 4 or 5 */
    /* Called by the sink for each event (after recording it), may be NULL:
     * what a consumer such as the breakpoint manager does in its sink. */
    void (*on_event)(struct fx *f, const vmt_ptm_event *ev);
    uint64_t user;        /* for on_event */
} fx;

/* caps_remove: VMT_CAP_* the mem driver must not declare. */
fx *fx_create(uint64_t caps_remove, uint32_t vcpus);
/* Switch to 5-level paging (call before building tables). */
void fx_set_levels(fx *f, unsigned levels);
void fx_destroy(fx *f);
/* All invariant checkers (monitor, session, driver): fails the test. */
void fx_check(fx *f);

vmt_gfn fx_table(fx *f);              /* a fresh zeroed table page */
vmt_gfn fx_data(fx *f);               /* a fresh data frame */
/* Host write of a table entry (no trap: setup, or an unmonitored page). */
void fx_set(fx *f, vmt_gfn table, unsigned index, uint64_t value);
uint64_t fx_get(fx *f, vmt_gfn table, unsigned index);
/* Map va -> frame with a 4K page under root, making missing tables. */
void fx_map4k(fx *f, vmt_pa root, vmt_va va, vmt_gfn frame);
/* Table gfn at `level` on va's path under root (0 when missing). */
vmt_gfn fx_table_at(fx *f, vmt_pa root, vmt_va va, unsigned level);

/* The VA most scenarios watch: an index of its own at every level. */
#define FX_VA_A ((1ULL << 39) | (2ULL << 30) | (3ULL << 21) | (4ULL << 12) | 0x123)
vmt_addr_ctx fx_ctx_a(fx *f);
/* The monitor's view of FX_VA_A watched with `tag` (must be watched). */
vmt_ptm_watch_info fx_info_a(fx *f, uint64_t tag);
/* Map FX_VA_A to a fresh frame and monitor it with `tag`; returns the frame. */
vmt_gfn fx_setup_a(fx *f, uint64_t tag);

/* One guest store by vcpu (size 1..8). */
void cpu_store(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value);
/* Store a whole entry. */
void cpu_set(fx *f, vmt_vcpu vcpu, vmt_gfn table, unsigned index, uint64_t value);
/* A failing lock cmpxchg on pa: the driver reports the old value. */
void cpu_cmpxchg_fail(fx *f, vmt_vcpu vcpu, vmt_pa pa);
/* The first half of a stepped store: trap and respond, without the store.
 * Returns the response. */
vmt_response cpu_store_trap(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value);
/* The second half: the store in the step view and the SINGLESTEP. */
void cpu_store_finish(fx *f, vmt_vcpu vcpu, vmt_pa pa, unsigned size, uint64_t value);

/* Rights of gfn in a view as the driver has them. */
vmt_access fx_access(fx *f, vmt_view view, vmt_gfn gfn);
vmt_view fx_current_view(fx *f, vmt_vcpu vcpu);

/* Events: the number since the last clear, and a matcher. */
void fx_clear_events(fx *f);
/* The sink the fixture gives the monitor (ctx = the fixture). */
void fx_sink(void *ctx, const vmt_ptm_event *ev);
/* Assert exactly one event for va (any root given) of that kind; returns it. */
const vmt_ptm_event *fx_expect(fx *f, vmt_ptm_event_kind kind, vmt_va va, vmt_pa root);

/* Entry value helpers. */
static inline uint64_t pte_table(vmt_gfn g) { return (g << 12) | 0x7; }   /* P RW US */
static inline uint64_t pte_page(vmt_gfn g) { return (g << 12) | 0x7; }
static inline uint64_t pte_large(vmt_pa pa) { return pa | 0x87; }         /* P RW US PS */

#endif
