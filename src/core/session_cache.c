/*
 * core/session_cache.c — the session's guest-frame cache and V2P cache.
 *
 * Frame cache: a fixed array of frame slots plus a gfn -> slot index. A
 * flush only bumps the generation (O(1)); a slot whose generation is old is
 * treated as empty and reloaded on its next use, so no stale byte is ever
 * returned after a flush. Eviction takes an unused slot, else a stale one,
 * else the least recently used.
 *
 * V2P cache: (root, va page) -> the successful walk for that page. A flush
 * empties it; when it is full it is emptied before the next insertion (the
 * working set of a monitor is small and refills in a few walks). Only
 * successful walks are cached: a not-present answer must be re-read because
 * the guest is expected to page in.
 *
 * Invariants (checked): every index entry names a used slot holding that
 * gfn and every used slot is indexed; no slot is from a future generation;
 * every cached walk is keyed by its own root and page.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/session_internal.h"

vmt_status vmt_frame_cache_init(vmt_frame_cache *c, uint32_t nslots)
{
    memset(c, 0, sizeof *c);
    vmt_hmap_init(&c->index, sizeof(vmt_gfn), sizeof(uint32_t));
    c->slots = calloc(nslots, sizeof *c->slots);
    if (!c->slots)
        return VMT_E_NOMEM;
    c->nslots = nslots;
    c->gen = 1;
    return VMT_OK;
}

void vmt_frame_cache_free(vmt_frame_cache *c)
{
    free(c->slots);
    vmt_hmap_free(&c->index);
    memset(c, 0, sizeof *c);
}

void vmt_frame_cache_flush(vmt_frame_cache *c) { c->gen++; }

static uint32_t pick_victim(const vmt_frame_cache *c)
{
    uint32_t best = 0;
    int best_rank = 3; /* 0 unused, 1 stale, 2 current */
    uint64_t best_use = UINT64_MAX;
    for (uint32_t i = 0; i < c->nslots; i++) {
        const vmt_frame_slot *s = &c->slots[i];
        int rank = !s->used ? 0 : s->gen != c->gen ? 1 : 2;
        if (rank < best_rank || (rank == best_rank && s->last_use < best_use)) {
            best = i;
            best_rank = rank;
            best_use = s->last_use;
            if (rank == 0)
                break;
        }
    }
    return best;
}

const uint8_t *vmt_frame_cache_get(vmt_frame_cache *c, vmt_driver *d, vmt_gfn gfn, vmt_status *st)
{
    *st = VMT_OK;
    const void *found = vmt_hmap_get(&c->index, &gfn);
    vmt_frame_slot *s;
    if (found) {
        uint32_t idx;
        memcpy(&idx, found, sizeof idx);
        s = &c->slots[idx];
        if (s->gen == c->gen) {
            c->hits++;
            s->last_use = ++c->tick;
            return s->data;
        }
        /* Stale copy of the same frame: reload in place. */
        c->misses++;
        if ((*st = vmt_drv_read_phys(d, vmt_gfn_to_pa(gfn), s->data, VMT_PAGE_SIZE)) != VMT_OK) {
            vmt_hmap_del(&c->index, &gfn, NULL);
            s->used = 0;
            return NULL;
        }
        s->gen = c->gen;
        s->last_use = ++c->tick;
        return s->data;
    }
    c->misses++;
    uint32_t victim = pick_victim(c);
    s = &c->slots[victim];
    if (s->used) {
        vmt_hmap_del(&c->index, &s->gfn, NULL);
        s->used = 0;
    }
    if ((*st = vmt_drv_read_phys(d, vmt_gfn_to_pa(gfn), s->data, VMT_PAGE_SIZE)) != VMT_OK)
        return NULL;
    s->gfn = gfn;
    s->gen = c->gen;
    s->last_use = ++c->tick;
    /* If indexing fails (no memory) the data is still returned, just not kept. */
    if (vmt_hmap_put(&c->index, &gfn, &victim, NULL, NULL) == VMT_OK)
        s->used = 1;
    return s->data;
}

vmt_status vmt_frame_cache_check(const vmt_frame_cache *c, char *why, size_t why_len)
{
    vmt_status st = vmt_hmap_check(&c->index, why, why_len);
    if (st)
        return st;
    size_t used = 0;
    for (uint32_t i = 0; i < c->nslots; i++) {
        const vmt_frame_slot *s = &c->slots[i];
        if (s->gen > c->gen) {
            vmt_why(why, why_len, "frame cache: slot %u has generation %" PRIu64 " > current %" PRIu64, i, s->gen,
                    c->gen);
            return VMT_E_INTERNAL;
        }
        if (!s->used)
            continue;
        used++;
        const void *found = vmt_hmap_get(&c->index, &s->gfn);
        uint32_t idx = UINT32_MAX;
        if (found)
            memcpy(&idx, found, sizeof idx);
        if (idx != i) {
            vmt_why(why, why_len, "frame cache: slot %u (gfn 0x%" PRIx64 ") is not indexed", i, s->gfn);
            return VMT_E_INTERNAL;
        }
    }
    if (used != vmt_hmap_count(&c->index)) {
        vmt_why(why, why_len, "frame cache: %zu used slots but %zu index entries", used, vmt_hmap_count(&c->index));
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}

void vmt_v2p_cache_init(vmt_v2p_cache *c, uint32_t max_entries)
{
    memset(c, 0, sizeof *c);
    vmt_hmap_init(&c->map, sizeof(vmt_v2p_key), sizeof(vmt_walk));
    c->max_entries = max_entries;
}

void vmt_v2p_cache_free(vmt_v2p_cache *c) { vmt_hmap_free(&c->map); }

void vmt_v2p_cache_flush(vmt_v2p_cache *c)
{
    if (vmt_hmap_count(&c->map))
        vmt_hmap_clear(&c->map);
}

static vmt_v2p_key v2p_key(vmt_pa root, vmt_va va)
{
    vmt_v2p_key k = { root & VMT_CR3_ADDR_MASK, va & VMT_PAGE_MASK };
    return k;
}

int vmt_v2p_cache_lookup(vmt_v2p_cache *c, vmt_pa root, vmt_va va, vmt_walk *out)
{
    vmt_v2p_key k = v2p_key(root, va);
    const void *w = vmt_hmap_get(&c->map, &k);
    if (!w) {
        c->misses++;
        return 0;
    }
    c->hits++;
    memcpy(out, w, sizeof *out); /* hmap slots carry no alignment promise */
    out->va = va;
    out->pa = (out->pa & VMT_PAGE_MASK) | vmt_page_offset(va);
    return 1;
}

void vmt_v2p_cache_insert(vmt_v2p_cache *c, vmt_pa root, const vmt_walk *walk)
{
    if (c->max_entries == 0)
        return;
    if (vmt_hmap_count(&c->map) >= c->max_entries)
        vmt_hmap_clear(&c->map);
    vmt_v2p_key k = v2p_key(root, walk->va);
    void *slot;
    bool existed;
    if (vmt_hmap_put(&c->map, &k, walk, &slot, &existed) == VMT_OK && existed)
        memcpy(slot, walk, sizeof *walk);
}

vmt_status vmt_v2p_cache_check(const vmt_v2p_cache *c, char *why, size_t why_len)
{
    vmt_status st = vmt_hmap_check(&c->map, why, why_len);
    if (st)
        return st;
    if (vmt_hmap_count(&c->map) > c->max_entries) {
        vmt_why(why, why_len, "v2p cache: %zu entries, limit %u", vmt_hmap_count(&c->map), c->max_entries);
        return VMT_E_INTERNAL;
    }
    size_t it = 0;
    void *kp, *vp;
    while (vmt_hmap_next(&c->map, &it, &kp, &vp)) {
        vmt_v2p_key key; /* hmap slots carry no alignment promise: copy */
        memcpy(&key, kp, sizeof key);
        const vmt_v2p_key *k = &key;
        vmt_walk walk;
        memcpy(&walk, vp, sizeof walk);
        const vmt_walk *w = &walk;
        if ((w->va & VMT_PAGE_MASK) != k->va_page || (w->root & VMT_CR3_ADDR_MASK) != k->root ||
            w->nsteps == 0 || w->nsteps > w->levels) {
            vmt_why(why, why_len, "v2p cache: entry (root 0x%" PRIx64 ", va 0x%" PRIx64 ") holds the walk of va 0x%"
                    PRIx64, k->root, k->va_page, w->va);
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}
