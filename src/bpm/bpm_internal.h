/*
 * bpm/bpm_internal.h — the breakpoint manager's state (internal). The maps,
 * their keys, values and invariants are documented in bpm.c.
 */
#ifndef VMT_BPM_INTERNAL_H
#define VMT_BPM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <capstone/capstone.h>

#include "core/errbuf.h"
#include "core/hmap.h"
#include "vmtrap/bpm.h"

#define BPM_GLOBAL      (1ULL << 63)
#define BPM_ACTIVE      (1ULL << 63)
#define BPM_GFN_MASK    ((1ULL << 40) - 1)
#define BPM_NKEYS_SHIFT 40
#define BPM_NKEYS_MAX   ((1u << 22) - 1)
#define BPM_VIEW_MAX    4095u
#define BPM_VAS_GLOBAL  (1u << 31)
#define BPM_HOLE        UINT64_MAX /* vas: no primary context (others remain) */
#define BPM_MAX_DBG     4
#define BPM_PLAN_SLOTS  256  /* decoded displaced instructions kept (bpm_displaced.c) */
#define BPM_MAX_VCPUS   64   /* vCPUs with their own stale-event record (more share slot 0) */
#define BPM_INT3        0xCC

#define SITE_DOUBLE     1u   /* the guest's byte there is already 0xCC */

typedef struct bpm_site {
    uint16_t off;
    uint8_t orig;     /* the guest's byte (SHADOW) */
    uint8_t flags;    /* SITE_* */
    uint32_t nref;    /* active contexts installed here */
} bpm_site;

/* A frame with breakpoints. Nearly always one site: it is stored inline
 * (cap 0); a second site moves the sites to a heap array of cap entries. */
typedef struct bpm_frame {
    uint64_t shadow;  /* shadow gfn (SHADOW), else 0; the frames map's secondary key */
    union {
        bpm_site *heap;   /* cap > 0 */
        bpm_site one;     /* cap == 0: the only site */
    } s;
    uint32_t nsites, cap;
} bpm_frame;
_Static_assert(sizeof(bpm_site) == 8 && sizeof(bpm_frame) == 24, "frame records stay small");

static inline bpm_site *bpm_sites(bpm_frame *f) { return f->cap ? f->s.heap : &f->s.one; }
static inline const bpm_site *bpm_sites_c(const bpm_frame *f) { return f->cap ? f->s.heap : &f->s.one; }
static inline uint32_t bpm_sites_room(const bpm_frame *f) { return f->cap ? f->cap : 1; }

typedef struct bpm_ctx_key {
    uint64_t va;
    uint64_t rootv;
} bpm_ctx_key;

typedef struct bpm_ctx_val {
    uint64_t loc;
    uint64_t tag0;
    uint32_t key0;
} bpm_ctx_val;
#define BPM_CTX_VAL_SIZE 20

typedef struct bpm_keys_key {
    uint64_t va;
    uint64_t rootv;
    uint32_t index;
} bpm_keys_key;
#define BPM_KEYS_KEY_SIZE 20

typedef struct bpm_keys_val {
    uint64_t tag;
    uint32_t key;
} bpm_keys_val;
#define BPM_KEYS_VAL_SIZE 12

typedef struct bpm_va_view {
    uint64_t va;
    uint64_t view;
} bpm_va_view;

typedef struct bpm_dbg_slot {
    vmt_va va;
    uint32_t nref;    /* 0: free */
} bpm_dbg_slot;

struct vmt_bpm {
    vmt_session *s;
    vmt_driver *d;
    vmt_errbuf err;
    vmt_bpm_controller ctl;
    unsigned flags;
    uint64_t ram_frames;
    vmt_hmap vas, more, keys, globals, frames, refresh; /* frames: also by shadow gfn (SHADOW) */
    size_t nctx;      /* address contexts */
    bpm_dbg_slot dbg[BPM_MAX_DBG];
    unsigned ndbg;
    size_t nbps;      /* registrations (sum of nkeys) */
    size_t nactive;   /* active contexts */
    size_t nsites;    /* sites over all frames, or debug registers in use */
    size_t site_bytes;/* heap bytes of the sites arrays */
    uint64_t hits, hidden, foreign, stale, refreshes;
    uint64_t displaced_refreshes; /* stepped instructions that stored into a shadowed frame */
    /* The last STALE breakpoint event of each vCPU (rip + 1; 0: none),
     * cleared by any other event of that vCPU: a second STALE in a row at
     * the same rip is not a removed breakpoint but a trap the guest really
     * raised (bpm_event.c), so no event can repeat forever. */
    uint64_t stale_rip[BPM_MAX_VCPUS];
    csh cs;               /* decoder of displaced instructions (bpm_displaced.c) */
    cs_insn *cs_insn;
    struct store_plan *plans; /* BPM_PLAN_SLOTS decoded instructions, by rip */
    bool cs_ready;
};

/* ---- packing ---- */

static inline uint64_t bpm_rootv(vmt_pa root, vmt_view view, bool global)
{
    return (root & VMT_CR3_ADDR_MASK) | (uint64_t)view | (global ? BPM_GLOBAL : 0);
}
static inline vmt_view bpm_rootv_view(uint64_t rootv) { return (vmt_view)(rootv & 0xfff); }
static inline vmt_pa bpm_rootv_root(uint64_t rootv) { return rootv & VMT_CR3_ADDR_MASK; }
static inline bool bpm_rootv_global(uint64_t rootv) { return (rootv & BPM_GLOBAL) != 0; }

static inline uint64_t bpm_fkey(vmt_view view, vmt_gfn gfn) { return (gfn & BPM_GFN_MASK) | ((uint64_t)view << 40); }
static inline vmt_gfn bpm_fkey_gfn(uint64_t fk) { return fk & BPM_GFN_MASK; }
static inline vmt_view bpm_fkey_view(uint64_t fk) { return (vmt_view)(fk >> 40); }

static inline vmt_gfn bpm_loc_gfn(uint64_t loc) { return loc & BPM_GFN_MASK; }
static inline uint32_t bpm_loc_nkeys(uint64_t loc) { return (uint32_t)((loc >> BPM_NKEYS_SHIFT) & BPM_NKEYS_MAX); }
static inline bool bpm_loc_active(uint64_t loc) { return (loc & BPM_ACTIVE) != 0; }
static inline uint64_t bpm_loc_make(bool active, vmt_gfn gfn, uint32_t nkeys)
{
    return (active ? BPM_ACTIVE : 0) | ((uint64_t)nkeys << BPM_NKEYS_SHIFT) | (gfn & BPM_GFN_MASK);
}

/* ---- the context store (bpm_ctxmap.c) ---- */
void bpm_ctxmap_init(vmt_bpm *b);
void bpm_ctxmap_free(vmt_bpm *b);
bool bpm_ctx_get(const vmt_bpm *b, const bpm_ctx_key *k, bpm_ctx_val *v);
/* Update an existing context's value. */
void bpm_ctx_set(vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v);
/* Make room so that bpm_ctx_add of a context at va cannot fail. */
vmt_status bpm_ctx_reserve(vmt_bpm *b, vmt_va va);
void bpm_ctx_add(vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v);
void bpm_ctx_del(vmt_bpm *b, const bpm_ctx_key *k);
/* Contexts using va (any view, root) and whether they are global. */
bool bpm_va_info(const vmt_bpm *b, vmt_va va, uint32_t *count, bool *global);
/* Iterate: size_t it = 0; while (bpm_ctx_next(b, &it, &k, &v)) ... (no
 * changes while iterating). */
bool bpm_ctx_next(const vmt_bpm *b, size_t *it, bpm_ctx_key *k, bpm_ctx_val *v);
vmt_status bpm_ctxmap_check(vmt_bpm *b);

static inline bool bpm_frame_get(const vmt_bpm *b, uint64_t fk, bpm_frame *f)
{
    const void *p = vmt_hmap_get(&b->frames, &fk);
    if (!p)
        return false;
    memcpy(f, p, sizeof *f);
    return true;
}
/* The stored frame record (valid until the next put/del on frames), or NULL. */
static inline bpm_frame *bpm_frame_at(const vmt_bpm *b, uint64_t fk)
{
    return (bpm_frame *)vmt_hmap_get(&b->frames, &fk);
}

/* Index of the site at off in f, or -1. */
int bpm_site_find(const bpm_frame *f, unsigned off);
/* Where a site at off would be inserted (keeps the array sorted). */
unsigned bpm_site_lower_bound(const bpm_frame *f, unsigned off);

/* ---- controllers (bpm_ctl.c) ----
 * Arm / disarm one active context's install at (view, gfn, off) or, for
 * DEBUG, at va. Each either succeeds or leaves maps and driver as they were
 * (undoing the driver calls it made). Capacity of the maps it puts into is
 * reserved first. */
vmt_status bpm_ctl_arm(vmt_bpm *b, vmt_view view, vmt_gfn gfn, vmt_va va);
vmt_status bpm_ctl_disarm(vmt_bpm *b, vmt_view view, vmt_gfn gfn, vmt_va va);
/* Free every frame/debug register without driver calls succeeding or not
 * (destroy). */
void bpm_ctl_release_all(vmt_bpm *b);
/* Controller choice: the requested one or the first that fits. */
vmt_status bpm_ctl_choose(vmt_driver *d, vmt_bpm_controller want, vmt_bpm_controller *out, char *why,
                          size_t why_len);
/* SHADOW: rebuild the whole shadow of a frame from the original frame. */
vmt_status bpm_ctl_refresh_frame(vmt_bpm *b, uint64_t fk);
/* SHADOW: the guest writes `size` bytes `value` at page offset off of frame fk:
 * make the shadow hold them too (INT3s re-planted, sites' bytes updated). */
vmt_status bpm_ctl_patch_frame(vmt_bpm *b, uint64_t fk, unsigned off, const uint8_t *bytes, unsigned size);
/* Treat NOTFOUND (the view is gone) as success on removal paths. */
static inline vmt_status bpm_gone_ok(vmt_status st) { return st == VMT_E_NOTFOUND ? VMT_OK : st; }

/* ---- displaced instructions (bpm_displaced.c) ---- */
/* *writes: the instruction at ev->regs.rip, run for the guest in view 0,
 * may store into a frame that has a shadow in `view`; *fk is that frame,
 * *many says there may be others (or the stores cannot be bounded): refresh
 * every shadow of the view. Fails only when the driver fails (reading the
 * instruction, walking the tables); nothing changes then. */
#define VMT_PA_UNKNOWN UINT64_MAX
/* code_pa: where the instruction's bytes are when the event says it (an
 * INT3 at a site), else VMT_PA_UNKNOWN (read through the guest's tables). */
vmt_status bpm_displaced_writes(vmt_bpm *b, const vmt_event *ev, vmt_view view, vmt_pa code_pa, bool *writes,
                                uint64_t *fk, bool *many);
void bpm_displaced_free(vmt_bpm *b);
/* The decoding cache's problem (a slot longer than an instruction, too
 * many operands, decoder state inconsistent), or NULL. */
const char *bpm_displaced_problem(const vmt_bpm *b);

/* ---- lookups shared by bpm.c and bpm_event.c ---- */

/* The context key an event at (view, va) with translation root `root`
 * resolves to for the global registration (if any): *key. */
bool bpm_global_key(const vmt_bpm *b, vmt_view view, vmt_va va, bpm_ctx_key *key);
/* Append the keys of context k (active at gfn) to hits (up to max); returns
 * how many it has. */
size_t bpm_ctx_hits(const vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v, vmt_bpm_bp *hits,
                    size_t max, size_t have);
/* Lookup of an executed address: hits of (view, va, root) and the global at
 * (view, va), each only if active at gfn (or any gfn when gfn == UINT64_MAX). */
size_t bpm_lookup_exec(const vmt_bpm *b, vmt_view view, vmt_va va, vmt_pa root, uint64_t gfn,
                       vmt_bpm_bp *hits, size_t max, size_t *total);
/* Physical alias: the breakpoints active at (view, gfn, page offset off)
 * whatever their address context (the event's va has none of its own).
 * Linear in the contexts: only asked when the exact lookup found none. */
size_t bpm_lookup_alias(const vmt_bpm *b, vmt_view view, uint64_t gfn, unsigned off, vmt_bpm_bp *hits, size_t max,
                        size_t *total);

#endif
