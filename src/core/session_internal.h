/*
 * core/session_internal.h — the parts of a session (internal): the frame
 * cache and V2P cache (session_cache.c), the access arbiter
 * (session_arbiter.c) and the session itself (session.c).
 *
 * Each part has its own init/free/check so session.c only wires them.
 */
#ifndef VMT_CORE_SESSION_INTERNAL_H
#define VMT_CORE_SESSION_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>

#include "core/errbuf.h"
#include "core/hmap.h"
#include "vmtrap/session.h"

/* ---- frame cache ---- */

typedef struct vmt_frame_slot {
    vmt_gfn gfn;
    uint64_t gen;       /* valid iff == cache gen */
    uint64_t last_use;  /* for LRU eviction */
    uint8_t used;       /* slot holds gfn and is in the index */
    uint8_t data[VMT_PAGE_SIZE];
} vmt_frame_slot;

typedef struct vmt_frame_cache {
    vmt_frame_slot *slots;
    uint32_t nslots;
    uint64_t gen;       /* starts at 1; bumped by every flush */
    uint64_t tick;
    vmt_hmap index;     /* gfn -> uint32 slot number, for used slots */
    uint64_t hits, misses;
} vmt_frame_cache;

vmt_status vmt_frame_cache_init(vmt_frame_cache *c, uint32_t nslots);
void vmt_frame_cache_free(vmt_frame_cache *c);
void vmt_frame_cache_flush(vmt_frame_cache *c);
/* The cached contents of gfn, loaded through the driver on a miss (NULL and
 * the driver's status on failure). Valid until the next call on the cache. */
const uint8_t *vmt_frame_cache_get(vmt_frame_cache *c, vmt_driver *d, vmt_gfn gfn, vmt_status *st);
vmt_status vmt_frame_cache_check(const vmt_frame_cache *c, char *why, size_t why_len);

/* ---- V2P cache: (root, va page) -> successful walk ---- */

typedef struct vmt_v2p_key {
    uint64_t root;
    uint64_t va_page;
} vmt_v2p_key;

typedef struct vmt_v2p_cache {
    vmt_hmap map;       /* vmt_v2p_key -> vmt_walk */
    uint32_t max_entries;
    uint64_t hits, misses;
} vmt_v2p_cache;

void vmt_v2p_cache_init(vmt_v2p_cache *c, uint32_t max_entries);
void vmt_v2p_cache_free(vmt_v2p_cache *c);
void vmt_v2p_cache_flush(vmt_v2p_cache *c);
/* Copy the cached walk for (root, va) into out, adjusted to va. 1 on a hit. */
int vmt_v2p_cache_lookup(vmt_v2p_cache *c, vmt_pa root, vmt_va va, vmt_walk *out);
/* Remember a successful walk (a full cache is emptied first). */
void vmt_v2p_cache_insert(vmt_v2p_cache *c, vmt_pa root, const vmt_walk *walk);
vmt_status vmt_v2p_cache_check(const vmt_v2p_cache *c, char *why, size_t why_len);

/* ---- access arbiter ---- */

typedef struct vmt_arb_key {
    uint64_t gfn;
    uint64_t view;      /* vmt_view widened: no padding in the key */
} vmt_arb_key;

/* Byte-sized fields only: hmap values are not aligned, so entries are used in place. */
typedef struct vmt_arb_entry {
    vmt_access restriction[VMT_OWNER_COUNT]; /* 0 for owners not in `owners` */
    uint8_t owners;     /* bit i: owner i has a restriction */
    vmt_access applied; /* what the driver was last told */
    uint8_t stale;      /* applying failed after a remap: re-apply on next touch */
} vmt_arb_entry;

typedef struct vmt_arbiter {
    vmt_hmap map;       /* vmt_arb_key -> vmt_arb_entry */
} vmt_arbiter;

_Static_assert(VMT_OWNER_COUNT <= 8, "owners fit in a byte");

/* ---- the session ---- */

struct vmt_session {
    vmt_driver *drv;
    vmt_errbuf err;
    vmt_session_config cfg;
    vmt_paging_config paging;
    int paging_pinned;          /* set_paging was called: no auto-detection */
    vmt_frame_cache frames;
    vmt_v2p_cache v2p;
    vmt_arbiter arb;
    atomic_int stop;            /* request flag (async-signal-safe) */
    int sigfd;                  /* -1 unless stop_on_signals */
    sigset_t sig_unblock;       /* signals we blocked and must unblock on destroy */
    vmt_stop_info last_stop;
    uint64_t events_handled;
};

vmt_status vmt_arbiter_check(const vmt_arbiter *a, char *why, size_t why_len);
/* Start loading the arbiter's slot for (view, gfn): a hint for a caller
 * about to remap or restrict that frame after other work (the breakpoint
 * manager copies a page first), so the cache miss overlaps that work. */
void vmt_arbiter_prefetch(const vmt_session *s, vmt_view view, vmt_gfn gfn);

#endif
