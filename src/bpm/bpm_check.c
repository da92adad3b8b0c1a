/*
 * bpm/bpm_check.c — the invariant checker, the state digest and the stats.
 *
 * vmt_bpm_check() recomputes every derived count from the contexts (the
 * primary map) and compares it with what the other maps and counters hold;
 * the invariants are listed in bpm_internal.h. It is O(total) and meant for
 * tests (called after every operation there).
 */
#include <stdio.h>
#include <stdlib.h>

#include "bpm/bpm_internal.h"

#define FAIL(...) do { vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: " __VA_ARGS__); goto out; } while (0)

typedef struct site_ref {
    uint64_t fk;   /* frame key, or the va for DEBUG */
    uint64_t off;
} site_ref;

static uint32_t count_of(const vmt_hmap *m, const void *k)
{
    const void *p = vmt_hmap_get(m, k);
    uint32_t c = 0;
    if (p)
        memcpy(&c, p, sizeof c);
    return c;
}

static vmt_status bump(vmt_hmap *m, const void *k)
{
    void *p;
    bool existed;
    uint32_t zero = 0;
    vmt_status st = vmt_hmap_put(m, k, &zero, &p, &existed);
    if (st)
        return st;
    uint32_t c;
    memcpy(&c, p, sizeof c);
    c++;
    memcpy(p, &c, sizeof c);
    return VMT_OK;
}

static vmt_status check_maps(vmt_bpm *b)
{
    char why[200];
    const vmt_hmap *maps[] = { &b->vas, &b->more, &b->keys, &b->globals, &b->frames, &b->refresh };
    static const char *names[] = { "vas", "more", "keys", "globals", "frames", "refresh" };
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++)
        if (vmt_hmap_check(maps[i], why, sizeof why))
            return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: map %s: %s", names[i], why);
    return VMT_OK;
}

vmt_status vmt_bpm_check(vmt_bpm *b)
{
    vmt_status st = check_maps(b);
    if (st || (st = bpm_ctxmap_check(b)))
        return st;
    const char *plans = bpm_displaced_problem(b);
    if (plans)
        return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: %s", plans);
    vmt_hmap sites;   /* recomputed: site_ref -> count */
    vmt_hmap_init(&sites, sizeof(site_ref), sizeof(uint32_t));
    st = VMT_E_INTERNAL;
    size_t nbps = 0, nactive = 0, nextra = 0, nglobal = 0;
    size_t it = 0;
    void *kp, *vp;
    bpm_ctx_key k;
    bpm_ctx_val v;
    while (bpm_ctx_next(b, &it, &k, &v)) {
        uint32_t n = bpm_loc_nkeys(v.loc);
        vmt_view view = bpm_rootv_view(k.rootv);
        if (n == 0)
            FAIL("context va 0x%llx view %u has no keys", (unsigned long long)k.va, (unsigned)view);
        if (k.rootv & ~(VMT_CR3_ADDR_MASK | BPM_GLOBAL | 0xfffULL))
            FAIL("context va 0x%llx has a bad root field 0x%llx", (unsigned long long)k.va, (unsigned long long)k.rootv);
        if (v.key0 == VMT_BPM_KEY_ANY)
            FAIL("context va 0x%llx holds the reserved key", (unsigned long long)k.va);
        uint32_t seen[16];
        for (uint32_t i = 1; i < n; i++) {
            bpm_keys_key kk;
            memset(&kk, 0, sizeof kk);
            kk.va = k.va;
            kk.rootv = k.rootv;
            kk.index = i;
            const uint8_t *p = vmt_hmap_get(&b->keys, &kk);
            if (!p)
                FAIL("context va 0x%llx view %u: key index %u of %u missing", (unsigned long long)k.va,
                     (unsigned)view, i, n);
            uint32_t key;
            memcpy(&key, p + 8, sizeof key);
            if (key == v.key0 || key == VMT_BPM_KEY_ANY)
                FAIL("context va 0x%llx: key %u repeated or reserved", (unsigned long long)k.va, key);
            for (uint32_t j = 1; j < i && j < 16; j++)
                if (seen[j] == key)
                    FAIL("context va 0x%llx: key %u repeated", (unsigned long long)k.va, key);
            if (i < 16)
                seen[i] = key;
        }
        nbps += n;
        nextra += n - 1;
        bool global = bpm_rootv_global(k.rootv);
        if (global) {
            nglobal++;
            bpm_va_view gk = { k.va, view };
            const void *gp = vmt_hmap_get(&b->globals, &gk);
            uint64_t root = 0;
            if (gp)
                memcpy(&root, gp, sizeof root);
            if (!gp || root != bpm_rootv_root(k.rootv))
                FAIL("global va 0x%llx view %u: globals entry missing or with another root",
                     (unsigned long long)k.va, (unsigned)view);
        }
        if (!bpm_loc_active(v.loc)) {
            if (bpm_loc_gfn(v.loc) != 0)
                FAIL("pending context va 0x%llx keeps a gfn", (unsigned long long)k.va);
            continue;
        }
        nactive++;
        vmt_gfn gfn = bpm_loc_gfn(v.loc);
        if (gfn >= b->ram_frames)
            FAIL("context va 0x%llx active at gfn 0x%llx outside RAM", (unsigned long long)k.va, (unsigned long long)gfn);
        site_ref sr;
        if (b->ctl == VMT_BPM_CTL_DEBUG) {
            sr.fk = k.va;
            sr.off = 0;
        } else {
            sr.fk = bpm_fkey(view, gfn);
            sr.off = vmt_page_offset(k.va);
        }
        if (bump(&sites, &sr))
            FAIL("out of memory");
    }
    if (nbps != b->nbps || nactive != b->nactive)
        FAIL("counters say %zu breakpoints / %zu active, the maps %zu / %zu", b->nbps, b->nactive, nbps, nactive);
    if (nextra != vmt_hmap_count(&b->keys))
        FAIL("keys map has %zu entries, contexts need %zu", vmt_hmap_count(&b->keys), nextra);
    if (nglobal != vmt_hmap_count(&b->globals))
        FAIL("globals map has %zu entries, there are %zu global contexts", vmt_hmap_count(&b->globals), nglobal);

    size_t nsites = 0, site_bytes = 0;
    if (b->ctl == VMT_BPM_CTL_DEBUG) {
        if (vmt_hmap_count(&b->frames))
            FAIL("debug-register controller holds frames");
        for (unsigned i = 0; i < b->ndbg; i++) {
            if (!b->dbg[i].nref)
                continue;
            nsites++;
            site_ref sr = { b->dbg[i].va, 0 };
            if (count_of(&sites, &sr) != b->dbg[i].nref)
                FAIL("debug register %u (va 0x%llx) counts %u users, contexts %u", i,
                     (unsigned long long)b->dbg[i].va, b->dbg[i].nref, count_of(&sites, &sr));
            for (unsigned j = 0; j < i; j++)
                if (b->dbg[j].nref && b->dbg[j].va == b->dbg[i].va)
                    FAIL("debug registers %u and %u both hold va 0x%llx", j, i, (unsigned long long)b->dbg[i].va);
        }
    } else {
        it = 0;
        while (vmt_hmap_next(&b->frames, &it, &kp, &vp)) {
            uint64_t fk;
            bpm_frame f;
            memcpy(&fk, kp, sizeof fk);
            memcpy(&f, vp, sizeof f);
            if (f.nsites == 0 || f.nsites > bpm_sites_room(&f) || (f.cap && !f.s.heap))
                FAIL("frame gfn 0x%llx view %u has %u sites (cap %u)", (unsigned long long)bpm_fkey_gfn(fk),
                     (unsigned)bpm_fkey_view(fk), f.nsites, f.cap);
            site_bytes += f.cap * sizeof(bpm_site);
            const bpm_site *fs = bpm_sites_c(&f);
            for (uint32_t i = 0; i < f.nsites; i++) {
                if (fs[i].off >= VMT_PAGE_SIZE || (i && fs[i].off <= fs[i - 1].off))
                    FAIL("frame gfn 0x%llx: sites unsorted or out of the page", (unsigned long long)bpm_fkey_gfn(fk));
                site_ref sr = { fk, fs[i].off };
                if (fs[i].nref == 0 || count_of(&sites, &sr) != fs[i].nref)
                    FAIL("site gfn 0x%llx+0x%x view %u counts %u contexts, the maps %u",
                         (unsigned long long)bpm_fkey_gfn(fk), fs[i].off, (unsigned)bpm_fkey_view(fk),
                         fs[i].nref, count_of(&sites, &sr));
                if ((fs[i].flags & SITE_DOUBLE) && fs[i].orig != BPM_INT3 && b->ctl == VMT_BPM_CTL_SHADOW)
                    FAIL("site marked double trap over byte 0x%02x", fs[i].orig);
            }
            nsites += f.nsites;
            if (b->ctl == VMT_BPM_CTL_SHADOW) {
                void *bk = NULL;
                uint64_t back = 0;
                if (vmt_hmap_get2(&b->frames, &f.shadow, &bk))
                    memcpy(&back, bk, sizeof back);
                if (!bk || back != fk)
                    FAIL("shadow gfn 0x%llx of frame gfn 0x%llx is not mapped back to it",
                         (unsigned long long)f.shadow, (unsigned long long)bpm_fkey_gfn(fk));
                if (f.shadow < b->ram_frames)
                    FAIL("shadow gfn 0x%llx lies in guest RAM", (unsigned long long)f.shadow);
                /* execute-only, or nothing while its shadow awaits a rebuild
                 * (bpm_event.c guard_displaced): reads and writes always trap */
                vmt_access eff = vmt_session_effective_access(b->s, bpm_fkey_view(fk), bpm_fkey_gfn(fk));
                if (eff & VMT_ACCESS_RW)
                    FAIL("shadowed frame gfn 0x%llx (view %u) is readable or writable in the breakpoint view "
                         "(rights 0x%x)", (unsigned long long)bpm_fkey_gfn(fk), bpm_fkey_view(fk), (unsigned)eff);
            } else if (f.shadow) {
                FAIL("frame gfn 0x%llx has a shadow under the %s controller", (unsigned long long)bpm_fkey_gfn(fk),
                     vmt_bpm_controller_name(b->ctl));
            }
        }
        if (site_bytes != b->site_bytes)
            FAIL("site arrays use %zu bytes, the counter says %zu", site_bytes, b->site_bytes);
    }
    if (nsites != b->nsites)
        FAIL("%zu sites installed, the counter says %zu", nsites, b->nsites);
    if (vmt_hmap_count(&sites) != nsites)
        FAIL("active contexts use %zu sites, %zu are installed", vmt_hmap_count(&sites), nsites);
    st = VMT_OK;
out:
    vmt_hmap_free(&sites);
    return st;
}

static uint64_t digest_map(const vmt_hmap *m, uint64_t salt)
{
    uint64_t sum = salt * 0x9e3779b97f4a7c15ULL + vmt_hmap_count(m);
    size_t it = 0;
    void *k;
    while (vmt_hmap_next(m, &it, &k, NULL))
        sum += vmt_hash_bytes(k, m->entry_size) ^ salt; /* key and value are contiguous */
    return sum;
}

uint64_t vmt_bpm_digest(const vmt_bpm *b)
{
    /* contexts by content (where the store keeps one is not state) */
    uint64_t csum = b->nctx;
    size_t it = 0;
    bpm_ctx_key ck;
    bpm_ctx_val cv;
    while (bpm_ctx_next(b, &it, &ck, &cv)) {
        uint8_t raw[16 + BPM_CTX_VAL_SIZE];
        memcpy(raw, &ck, 16);
        memcpy(raw + 16, &cv, BPM_CTX_VAL_SIZE);
        csum += vmt_hash_bytes(raw, sizeof raw);
    }
    uint64_t d = csum ^ (digest_map(&b->keys, 2) * 3) ^ (digest_map(&b->globals, 4) * 7) ^
                 (digest_map(&b->refresh, 6) * 13);
    it = 0;
    void *k, *v;
    uint64_t fsum = vmt_hmap_count(&b->frames);
    while (vmt_hmap_next(&b->frames, &it, &k, &v)) {
        bpm_frame f;
        memcpy(&f, v, sizeof f);
        uint64_t h = vmt_hash_bytes(k, sizeof(uint64_t)) ^ vmt_hash_bytes(&f.shadow, sizeof f.shadow);
        h ^= vmt_hash_bytes(bpm_sites_c(&f), f.nsites * sizeof(bpm_site)) * 17;
        fsum += h;
    }
    d ^= fsum * 19;
    for (unsigned i = 0; i < b->ndbg; i++)
        d ^= vmt_hash_bytes(&b->dbg[i], sizeof b->dbg[i]) * (23 + 2 * i);
    uint64_t counts[3] = { b->nbps, b->nactive, b->nsites };
    return d ^ vmt_hash_bytes(counts, sizeof counts);
}

void vmt_bpm_get_stats(const vmt_bpm *b, vmt_bpm_stats *out)
{
    memset(out, 0, sizeof *out);
    out->breakpoints = b->nbps;
    out->contexts = b->nctx;
    out->active = b->nactive;
    out->pending = out->contexts - b->nactive;
    out->frames = vmt_hmap_count(&b->frames);
    out->sites = b->nsites;
    out->shadow_frames = b->ctl == VMT_BPM_CTL_SHADOW ? vmt_hmap_count(&b->frames) : 0;
    vmt_bpm_mem_part parts[8];
    size_t n = vmt_bpm_memory_parts(b, parts, 8);
    for (size_t i = 0; i < n && i < 8; i++)
        out->bytes += parts[i].bytes;
    out->hits = b->hits;
    out->hidden_accesses = b->hidden;
    out->foreign_int3 = b->foreign;
    out->stale_int3 = b->stale;
    out->displaced_refreshes = b->displaced_refreshes;
    out->refreshes = b->refreshes;
}

size_t vmt_bpm_memory_parts(const vmt_bpm *b, vmt_bpm_mem_part *parts, size_t max)
{
    const vmt_bpm_mem_part all[] = {
        { "manager struct", sizeof *b, 1 },
        { "vas: va -> primary context", vmt_hmap_memory(&b->vas), vmt_hmap_count(&b->vas) },
        { "more: other contexts of a va", vmt_hmap_memory(&b->more), vmt_hmap_count(&b->more) },
        { "keys: extra keys of a context", vmt_hmap_memory(&b->keys), vmt_hmap_count(&b->keys) },
        { "globals: (va, view) -> root", vmt_hmap_memory(&b->globals), vmt_hmap_count(&b->globals) },
        { b->ctl == VMT_BPM_CTL_SHADOW ? "frames (+ index by shadow gfn)" : "frames", vmt_hmap_memory(&b->frames),
          vmt_hmap_count(&b->frames) },
        { "refresh: vCPU -> frame", vmt_hmap_memory(&b->refresh), vmt_hmap_count(&b->refresh) },
        { "site arrays (frames with 2+ sites; slots)", b->site_bytes, b->site_bytes / sizeof(bpm_site) },
    };
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n && i < max; i++)
        parts[i] = all[i];
    return n;
}
