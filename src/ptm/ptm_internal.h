/*
 * ptm/ptm_internal.h — the page-table monitor's state (internal to src/ptm).
 *
 * Maps (all core/hmap, fixed-size keys with zeroed padding):
 *
 *  watches   key  ptm_watch_key {root, va, tag, view}
 *            val  ptm_watch * (heap; stable address, the entry index points
 *                 into it)
 *            One per monitor() call that succeeded and was not undone.
 *
 *  tables    key  ptm_table_key {gfn, view}
 *            val  ptm_table {refs}
 *            refs = number of (watch, path step) pairs whose table page is
 *            gfn in that view. refs > 0 <=> the page is restricted to RX for
 *            VMT_OWNER_PTM in the arbiter. refs == 0 only for a "zombie": the
 *            unrestrict failed and is retried at the next operation.
 *
 *  entries   key  vmt_pa entry_pa (8-aligned)
 *            val  ptm_link * head of a doubly linked list of path steps
 *                 (ptm_link lives in ptm_watch.links[i]) whose entry is
 *                 entry_pa, in any view. Key present <=> list non-empty.
 *
 *  dirty     key  ptm_vcpu_entry {entry_pa, vcpu}
 *            val  ptm_dirty {before, mask, level}
 *            The vCPU wrote the entry without reporting the value and is
 *            stepping; `before` = entry before the write, `mask` = bytes the
 *            write covers. Only for vCPUs in `steps`; kept until that
 *            vCPU's SINGLESTEP even when no watch uses the entry any more
 *            (a watch added through it before the step read the old value:
 *            the step must re-read it).
 *
 *  steps     key  vmt_vcpu
 *            val  ptm_step {return_view}
 *            The vCPU got a STEP (+ SWITCH_VIEW 0) from the monitor; its
 *            SINGLESTEP is the monitor's and switches back to return_view.
 */
#ifndef VMT_PTM_INTERNAL_H
#define VMT_PTM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/errbuf.h"
#include "core/hmap.h"
#include "vmtrap/paging.h"
#include "vmtrap/ptm.h"

#define PTM_MAX_DEPTH 5

typedef struct ptm_watch ptm_watch;

/* One node per path step in the entry index. */
typedef struct ptm_link {
    ptm_watch *watch;
    struct ptm_link *prev;
    struct ptm_link *next;
} ptm_link;

/* The entries a walk read, top level first. */
typedef struct ptm_path {
    uint8_t depth;
    uint8_t level[PTM_MAX_DEPTH];
    vmt_pa entry_pa[PTM_MAX_DEPTH];
} ptm_path;

/* A walk's outcome: the path plus the translation. */
typedef struct ptm_result {
    ptm_path path;
    vmt_status status;   /* VMT_OK, VMT_E_NOT_PRESENT, VMT_E_BAD_PT, VMT_E_RANGE */
    vmt_pa pa;           /* when status == VMT_OK */
    uint64_t page_size;
} ptm_result;

struct ptm_watch {
    vmt_addr_ctx ctx;
    vmt_view view;
    uint64_t tag;
    ptm_path path;
    ptm_link links[PTM_MAX_DEPTH]; /* links[i] is path step i's node */
    bool present;
    vmt_pa pa;
    uint64_t page_size;
    vmt_status walk_status;
    uint64_t stamp;                /* dedup within one processing batch */
};

typedef struct ptm_watch_key {
    uint64_t root;
    uint64_t va;
    uint64_t tag;
    uint16_t view;
    uint8_t pad[6];
} ptm_watch_key;

typedef struct ptm_table_key {
    uint64_t gfn;
    uint16_t view;
    uint8_t pad[6];
} ptm_table_key;

typedef struct ptm_table {
    uint32_t refs;
} ptm_table;

typedef struct ptm_vcpu_entry {
    uint64_t entry_pa;
    uint32_t vcpu;
    uint32_t pad;
} ptm_vcpu_entry;

typedef struct ptm_dirty {
    uint64_t before;
    uint8_t mask;
    uint8_t level;
} ptm_dirty;

typedef struct ptm_step {
    vmt_view return_view;
} ptm_step;

/* Entry values the walker must see instead of memory (writes that have not
 * landed yet). */
typedef struct ptm_overlay_item {
    vmt_pa entry_pa;
    uint64_t value;
} ptm_overlay_item;

struct vmt_ptm {
    vmt_session *s;
    vmt_driver *drv;           /* the session's */
    vmt_errbuf err;
    uint64_t ram_frames;
    uint64_t caps;
    vmt_hmap watches;
    vmt_hmap tables;
    vmt_hmap entries;
    vmt_hmap dirty;
    vmt_hmap steps;
    size_t zombies;            /* tables with refs == 0 still restricted */
    uint64_t stamp;
    vmt_ptm_stats stats;
    /* Scratch, reused: */
    ptm_overlay_item *overlay;
    size_t noverlay, overlay_cap;
    ptm_watch **batch;
    size_t nbatch, batch_cap;
    vmt_ptm_event *evq;
    size_t nev, ev_cap;
};

/* ptm.c — paths, tables, watches. */
vmt_status ptm_walk(vmt_ptm *p, vmt_addr_ctx ctx, ptm_result *r, char *why, size_t why_len);
/* Move w to result r (protect the new path, release the old one, queue the
 * event for vcpu when emit). On failure w is unchanged. */
vmt_status ptm_apply(vmt_ptm *p, ptm_watch *w, const ptm_result *r, vmt_vcpu vcpu, bool emit);
/* Re-walk every watch in p->batch (deduplicated by the caller) and apply. */
vmt_status ptm_rewalk_batch(vmt_ptm *p, vmt_vcpu vcpu);
/* Add the watches whose path goes through entry_pa to p->batch (once each
 * per stamp). */
vmt_status ptm_batch_add_entry(vmt_ptm *p, vmt_pa entry_pa);
/* Drop dirty state of entries no watch uses any more. */
/* Retry unrestricts that failed before. */
void ptm_retry_zombies(vmt_ptm *p);
/* Deliver and clear the queued events. */
void ptm_flush_events(vmt_ptm *p, vmt_ptm_sink sink, void *sink_ctx);
vmt_status ptm_read_entry(vmt_ptm *p, vmt_pa entry_pa, uint64_t *value);
vmt_status ptm_overlay_push(vmt_ptm *p, vmt_pa entry_pa, uint64_t value);

static inline ptm_watch_key ptm_make_watch_key(vmt_addr_ctx ctx, vmt_view view, uint64_t tag)
{
    ptm_watch_key k = { 0 };
    k.root = ctx.root;
    k.va = ctx.va;
    k.tag = tag;
    k.view = view;
    return k;
}

static inline ptm_table_key ptm_make_table_key(vmt_view view, vmt_gfn gfn)
{
    ptm_table_key k = { 0 };
    k.gfn = gfn;
    k.view = view;
    return k;
}

static inline ptm_vcpu_entry ptm_make_vcpu_entry(vmt_vcpu vcpu, vmt_pa entry_pa)
{
    ptm_vcpu_entry k = { 0 };
    k.entry_pa = entry_pa;
    k.vcpu = vcpu;
    return k;
}

#endif
