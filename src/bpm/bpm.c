/*
 * bpm/bpm.c — the breakpoint manager: registrations, pending/active
 * contexts, page-in/page-out (after vmi-rs bpm/mod.rs, in C, with O(1) maps
 * and no leaked shadow frames).
 *
 * The unit of location is the address context (view, va, root): all keys
 * registered on it share its state (pending, or active at one frame).
 *
 * The maps (struct vmt_bpm in bpm_internal.h): six hash maps (core/hmap.h,
 * O(1) expected; compact: an empty slot costs a 4-byte index word) plus,
 * for frames with two or more sites, a small sorted array. Values are read
 * and written with memcpy (packed sizes). Keys pack a view into spare bits
 * of an address:
 *   rootv  = root (bits 12..51) | view (bits 0..11) | BPM_GLOBAL (bit 63)
 *   fkey   = gfn (bits 0..39) | view << 40              (a (view, frame))
 *
 * vas/more the address contexts (view, va, root) with breakpoints, stored by
 *          va first (bpm_ctxmap.c): vas: va -> the va's primary context
 *          inline + how many contexts use the va and whether they are global;
 *          more: (va, rootv) -> the va's other contexts. Each context value:
 *          ctx_val { loc, tag0, key0 }:
 *          loc = gfn (bits 0..39) | nkeys (bits 40..61) | BPM_ACTIVE (bit 63).
 *          key0/tag0 is the first key; keys 1..nkeys-1 live in `keys`.
 *          A global context is keyed with its registration root and BPM_GLOBAL.
 *          Active: installed at (view, gfn), offset va & 0xfff; else pending.
 *          A va is global or per-root, never both (in every view).
 * keys     (va, rootv, index 1..nkeys-1) -> key_val { tag, key }
 *          The extra keys of a context, dense indices (swap-remove).
 * globals  (va, view) -> registration root of the global context there.
 * frames   fkey -> bpm_frame { shadow gfn, sites, nsites, cap }
 *          One entry per (view, gfn) with at least one active context
 *          (SHADOW, EXEC). sites: sorted by offset, each with the number of
 *          active contexts installed there, the guest's original byte and
 *          whether it was already 0xCC (double trap); the only site of a
 *          frame (the common case) is stored in the record itself (cap 0).
 *          SHADOW: the map's secondary index finds a frame by its shadow gfn
 *          (which frame a shadow backs) from the same record: one record per
 *          breakpoint page, no second map holding copies of keys.
 * DEBUG uses dbg[] instead of frames: one debug register per distinct va,
 * with the number of active contexts using it.
 * refresh  vcpu -> fkey (| bit 63 when we asked for a STEP): a write without
 *          data; the vCPU's next event (the SINGLESTEP) rebuilds the shadow.
 *
 * Invariants (bpm_check.c): every active context's (frame, offset) has a
 * site whose count equals the number of active contexts there; every frame
 * has >= 1 site and sites are sorted and unique; each shadow gfn finds its
 * own frame through the secondary index; each va's count and global flag match its
 * contexts (bpm_ctxmap.c); counters (breakpoints, active, sites, site
 * bytes) match the maps; globals has exactly the global contexts' (va,
 * view) with their root; keys holds exactly indices 1..nkeys-1 of each
 * context and no key repeats in a context. Every breakpoint view, gfn and
 * shadow frame the maps name is what the driver has: tests compare both.
 *
 * Every operation here follows one pattern so a failure changes nothing:
 *   1. validate and look up;
 *   2. reserve capacity in every map it will insert into (NOMEM here is
 *      harmless);
 *   3. make the driver calls through the controller (bpm_ctl.c), which undo
 *      themselves on failure;
 *   4. commit to the maps (cannot fail any more).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "bpm/bpm_internal.h"
#include "core/session_internal.h" /* vmt_arbiter_prefetch only */

const char *vmt_bpm_controller_name(vmt_bpm_controller c)
{
    switch (c) {
    case VMT_BPM_CTL_AUTO: return "auto";
    case VMT_BPM_CTL_SHADOW: return "shadow-INT3";
    case VMT_BPM_CTL_EXEC: return "execute-permission";
    case VMT_BPM_CTL_DEBUG: return "debug-register";
    }
    return "unknown";
}

vmt_status vmt_bpm_create(vmt_session *s, const vmt_bpm_config *cfg, vmt_bpm **out, char *why,
                          size_t why_len)
{
    if (!s || !out) {
        vmt_why(why, why_len, "bpm: create needs a session and an out pointer");
        return VMT_E_INVAL;
    }
    *out = NULL;
    vmt_bpm_config c = { VMT_BPM_CTL_AUTO, 0 };
    if (cfg)
        c = *cfg;
    vmt_driver *d = vmt_session_driver(s);
    vmt_bpm_controller ctl;
    vmt_status st = bpm_ctl_choose(d, c.controller, &ctl, why, why_len);
    if (st)
        return st;
    vmt_bpm *b = calloc(1, sizeof *b);
    if (!b) {
        vmt_why(why, why_len, "bpm: out of memory");
        return VMT_E_NOMEM;
    }
    b->s = s;
    b->d = d;
    b->ctl = ctl;
    b->flags = c.flags;
    b->ram_frames = vmt_driver_caps(d)->ram_frames;
    if (ctl == VMT_BPM_CTL_DEBUG) {
        b->ndbg = vmt_driver_caps(d)->hw_breakpoints;
        if (b->ndbg > BPM_MAX_DBG)
            b->ndbg = BPM_MAX_DBG;
    }
    bpm_ctxmap_init(b);
    vmt_hmap_init(&b->keys, BPM_KEYS_KEY_SIZE, BPM_KEYS_VAL_SIZE);
    vmt_hmap_init(&b->globals, sizeof(bpm_va_view), sizeof(uint64_t));
    if (ctl == VMT_BPM_CTL_SHADOW) /* also found by shadow gfn: no second map */
        vmt_hmap_init2(&b->frames, sizeof(uint64_t), sizeof(bpm_frame), offsetof(bpm_frame, shadow), sizeof(uint64_t));
    else
        vmt_hmap_init(&b->frames, sizeof(uint64_t), sizeof(bpm_frame));
    vmt_hmap_init(&b->refresh, sizeof(uint32_t), sizeof(uint64_t));
    *out = b;
    return VMT_OK;
}

void vmt_bpm_destroy(vmt_bpm *b)
{
    if (!b)
        return;
    (void)vmt_bpm_clear(b);
    bpm_ctl_release_all(b); /* whatever clear could not remove */
    bpm_ctxmap_free(b);
    vmt_hmap_free(&b->keys);
    vmt_hmap_free(&b->globals);
    vmt_hmap_free(&b->refresh);
    bpm_displaced_free(b);
    free(b);
}

const char *vmt_bpm_error(const vmt_bpm *b) { return b ? b->err.msg : ""; }
vmt_bpm_controller vmt_bpm_controller_of(const vmt_bpm *b) { return b->ctl; }

/* ---- helpers ---- */

static vmt_status check_bp(vmt_bpm *b, const vmt_bpm_bp *bp, bool for_insert)
{
    if (!bp)
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: no breakpoint given");
    if (bp->view > BPM_VIEW_MAX)
        return vmt_errbuf_set(&b->err, VMT_E_RANGE, "bpm: view %u is above the supported %u",
                              (unsigned)bp->view, BPM_VIEW_MAX);
    if (for_insert && bp->key == VMT_BPM_KEY_ANY)
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: key 0x%x is reserved (VMT_BPM_KEY_ANY)", bp->key);
    if (for_insert && b->ctl != VMT_BPM_CTL_DEBUG && bp->view == VMT_VIEW_DEFAULT)
        return vmt_errbuf_set(&b->err, VMT_E_INVAL,
                              "bpm: view 0 is the unaltered view; %s breakpoints need a breakpoint view",
                              vmt_bpm_controller_name(b->ctl));
    return VMT_OK;
}

bool bpm_global_key(const vmt_bpm *b, vmt_view view, vmt_va va, bpm_ctx_key *key)
{
    bpm_va_view k = { va, view };
    const void *p = vmt_hmap_get(&b->globals, &k);
    if (!p)
        return false;
    uint64_t root;
    memcpy(&root, p, sizeof root);
    key->va = va;
    key->rootv = bpm_rootv(root, view, true);
    return true;
}

/* The context key of bp (a global one canonicalised to its first root). */
static bpm_ctx_key ctx_key_of(const vmt_bpm *b, const vmt_bpm_bp *bp)
{
    bpm_ctx_key k = { bp->ctx.va, bpm_rootv(bp->ctx.root, bp->view, bp->global) };
    if (bp->global)
        (void)bpm_global_key(b, bp->view, bp->ctx.va, &k);
    return k;
}

static bpm_keys_key keys_key(const bpm_ctx_key *k, uint32_t index)
{
    bpm_keys_key kk;
    memset(&kk, 0, sizeof kk);
    kk.va = k->va;
    kk.rootv = k->rootv;
    kk.index = index;
    return kk;
}

static bool keys_get(const vmt_bpm *b, const bpm_ctx_key *k, uint32_t index, bpm_keys_val *out)
{
    bpm_keys_key kk = keys_key(k, index);
    const void *p = vmt_hmap_get(&b->keys, &kk);
    if (!p)
        return false;
    memset(out, 0, sizeof *out);
    memcpy(out, p, BPM_KEYS_VAL_SIZE);
    return true;
}

/* Index of key in the context (0 = key0), or -1. */
static int64_t find_key(const vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v, uint32_t key)
{
    if (v->key0 == key)
        return 0;
    uint32_t n = bpm_loc_nkeys(v->loc);
    for (uint32_t i = 1; i < n; i++) {
        bpm_keys_val kv;
        if (keys_get(b, k, i, &kv) && kv.key == key)
            return i;
    }
    return -1;
}

static vmt_status translate(vmt_bpm *b, vmt_addr_ctx ctx, bool *present, vmt_pa *pa)
{
    vmt_status st = vmt_session_va_to_pa(b->s, ctx, pa);
    if (st == VMT_E_NOT_PRESENT) {
        *present = false;
        return VMT_OK;
    }
    if (st)
        return vmt_errbuf_set(&b->err, st, "bpm: translating va 0x%llx under root 0x%llx failed: %s",
                              (unsigned long long)ctx.va, (unsigned long long)ctx.root,
                              vmt_session_error(b->s));
    *present = true;
    return VMT_OK;
}

static vmt_status check_pa(vmt_bpm *b, vmt_pa pa, vmt_va va)
{
    vmt_gfn gfn = vmt_pa_to_gfn(pa);
    if (gfn > BPM_GFN_MASK || gfn >= b->ram_frames)
        return vmt_errbuf_set(&b->err, VMT_E_RANGE,
                              "bpm: va 0x%llx translates to pa 0x%llx, outside guest RAM (%llu frames): "
                              "cannot place a breakpoint there",
                              (unsigned long long)va, (unsigned long long)pa, (unsigned long long)b->ram_frames);
    if (vmt_page_offset(pa) != vmt_page_offset(va))
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: pa 0x%llx does not have the page offset of va 0x%llx",
                              (unsigned long long)pa, (unsigned long long)va);
    return VMT_OK;
}

/* ---- insert ---- */

static vmt_status insert_common(vmt_bpm *b, const vmt_bpm_bp *bp, bool have_pa, vmt_pa pa, bool *active_out)
{
    vmt_status st = check_bp(b, bp, true);
    if (st)
        return st;
    const vmt_va va = bp->ctx.va;
    /* the va's, the frame's and the arbiter's lookups below miss the cache
     * in large maps: start the loads now so they overlap */
    vmt_hmap_prefetch(&b->vas, &va);
    if (have_pa && b->ctl != VMT_BPM_CTL_DEBUG) {
        uint64_t fk = bpm_fkey(bp->view, vmt_pa_to_gfn(pa));
        vmt_hmap_prefetch(&b->frames, &fk);
        vmt_arbiter_prefetch(b->s, bp->view, vmt_pa_to_gfn(pa));
    }
    bpm_ctx_key k = ctx_key_of(b, bp);

    uint32_t nva;
    bool is_global;
    if (bpm_va_info(b, va, &nva, &is_global)) {
        if (is_global != bp->global)
            return vmt_errbuf_set(&b->err, VMT_E_CONFLICT,
                                  "bpm: va 0x%llx already has %s breakpoint(s); a %s breakpoint there "
                                  "(view %u, root 0x%llx, key %u) would make hits ambiguous",
                                  (unsigned long long)va, is_global ? "global" : "per-root",
                                  bp->global ? "global" : "per-root", (unsigned)bp->view,
                                  (unsigned long long)bp->ctx.root, bp->key);
    }

    bpm_ctx_val v;
    if (bpm_ctx_get(b, &k, &v)) {
        /* The context exists: the key joins it (no driver call). */
        if (find_key(b, &k, &v, bp->key) >= 0) {
            if (active_out)
                *active_out = bpm_loc_active(v.loc);
            return vmt_errbuf_set(&b->err, VMT_E_EXISTS,
                                  "bpm: breakpoint at va 0x%llx (view %u, root 0x%llx, key %u) already exists",
                                  (unsigned long long)va, (unsigned)bp->view,
                                  (unsigned long long)bpm_rootv_root(k.rootv), bp->key);
        }
        uint32_t n = bpm_loc_nkeys(v.loc);
        if (n >= BPM_NKEYS_MAX)
            return vmt_errbuf_set(&b->err, VMT_E_RANGE, "bpm: va 0x%llx already has %u keys", (unsigned long long)va, n);
        bpm_keys_key kk = keys_key(&k, n);
        uint8_t kv[BPM_KEYS_VAL_SIZE];
        memcpy(kv, &bp->tag, 8);
        memcpy(kv + 8, &bp->key, 4);
        st = vmt_hmap_put(&b->keys, &kk, kv, NULL, NULL);
        if (st)
            return vmt_errbuf_set(&b->err, st, "bpm: out of memory for a key");
        v.loc = bpm_loc_make(bpm_loc_active(v.loc), bpm_loc_gfn(v.loc), n + 1);
        bpm_ctx_set(b, &k, &v);
        b->nbps++;
        if (active_out)
            *active_out = bpm_loc_active(v.loc);
        return VMT_OK;
    }

    /* A new context: where is it? */
    bool present = have_pa;
    if (!have_pa) {
        vmt_addr_ctx tctx = vmt_addr_ctx_make(va, bpm_rootv_root(k.rootv));
        if ((st = translate(b, tctx, &present, &pa)))
            return st;
    }
    if (present && (st = check_pa(b, pa, va)))
        return st;

    if ((st = bpm_ctx_reserve(b, va)) ||
        (bp->global && (st = vmt_hmap_reserve(&b->globals, vmt_hmap_count(&b->globals) + 1))))
        return vmt_errbuf_set(&b->err, st, "bpm: out of memory for the breakpoint maps");

    vmt_gfn gfn = present ? vmt_pa_to_gfn(pa) : 0;
    if (present && (st = bpm_ctl_arm(b, bp->view, gfn, va)))
        return st;

    v.loc = bpm_loc_make(present, gfn, 1);
    v.tag0 = bp->tag;
    v.key0 = bp->key;
    bpm_ctx_add(b, &k, &v);
    if (bp->global) {
        bpm_va_view gk = { va, bp->view };
        uint64_t root = bpm_rootv_root(k.rootv);
        (void)vmt_hmap_put(&b->globals, &gk, &root, NULL, NULL);
    }
    b->nbps++;
    if (present)
        b->nactive++;
    if (active_out)
        *active_out = present;
    return VMT_OK;
}

vmt_status vmt_bpm_insert(vmt_bpm *b, const vmt_bpm_bp *bp, bool *active)
{
    return insert_common(b, bp, false, 0, active);
}

vmt_status vmt_bpm_insert_pa(vmt_bpm *b, const vmt_bpm_bp *bp, vmt_pa pa, bool *active)
{
    return insert_common(b, bp, true, pa, active);
}

/* ---- remove ---- */

/* Remove a whole context (all keys). */
static vmt_status remove_ctx(vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v)
{
    vmt_view view = bpm_rootv_view(k->rootv);
    if (bpm_loc_active(v->loc)) {
        if (b->ctl != VMT_BPM_CTL_DEBUG) { /* the frame's and the arbiter's lookups overlap */
            uint64_t fk = bpm_fkey(view, bpm_loc_gfn(v->loc));
            vmt_hmap_prefetch(&b->frames, &fk);
            vmt_arbiter_prefetch(b->s, view, bpm_loc_gfn(v->loc));
        }
        vmt_status st = bpm_ctl_disarm(b, view, bpm_loc_gfn(v->loc), k->va);
        if (st)
            return st;
        b->nactive--;
    }
    uint32_t n = bpm_loc_nkeys(v->loc);
    for (uint32_t i = 1; i < n; i++) {
        bpm_keys_key kk = keys_key(k, i);
        vmt_hmap_del(&b->keys, &kk, NULL);
    }
    b->nbps -= n;
    if (bpm_rootv_global(k->rootv)) {
        bpm_va_view gk = { k->va, view };
        vmt_hmap_del(&b->globals, &gk, NULL);
    }
    bpm_ctx_del(b, k);
    return VMT_OK;
}

/* Remove the key at index i of a context. */
static vmt_status remove_key_at(vmt_bpm *b, const bpm_ctx_key *k, bpm_ctx_val *v, uint32_t i)
{
    uint32_t n = bpm_loc_nkeys(v->loc);
    if (n == 1)
        return remove_ctx(b, k, v);
    bpm_keys_val last;
    bpm_keys_key lk = keys_key(k, n - 1);
    if (!keys_get(b, k, n - 1, &last))
        return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm: key index %u missing", n - 1);
    if (i == 0) {
        v->key0 = last.key;
        v->tag0 = last.tag;
    } else if (i != n - 1) {
        bpm_keys_key ik = keys_key(k, i);
        void *p = vmt_hmap_get(&b->keys, &ik);
        uint8_t kv[BPM_KEYS_VAL_SIZE];
        memcpy(kv, &last.tag, 8);
        memcpy(kv + 8, &last.key, 4);
        memcpy(p, kv, sizeof kv);
    }
    vmt_hmap_del(&b->keys, &lk, NULL);
    v->loc = bpm_loc_make(bpm_loc_active(v->loc), bpm_loc_gfn(v->loc), n - 1);
    bpm_ctx_set(b, k, v);
    b->nbps--;
    return VMT_OK;
}

static vmt_status remove_common(vmt_bpm *b, const vmt_bpm_bp *bp, bool check_gfn, vmt_gfn gfn)
{
    vmt_status st = check_bp(b, bp, false);
    if (st)
        return st;
    bpm_ctx_key k = ctx_key_of(b, bp);
    bpm_ctx_val v;
    if (!bpm_ctx_get(b, &k, &v) || (check_gfn && (!bpm_loc_active(v.loc) || bpm_loc_gfn(v.loc) != gfn)))
        goto notfound;
    if (bp->key == VMT_BPM_KEY_ANY)
        return remove_ctx(b, &k, &v);
    int64_t i = find_key(b, &k, &v, bp->key);
    if (i < 0)
        goto notfound;
    return remove_key_at(b, &k, &v, (uint32_t)i);
notfound:
    return vmt_errbuf_set(&b->err, VMT_E_NOTFOUND, "bpm: no %sbreakpoint at va 0x%llx (view %u, root 0x%llx, key %u)%s",
                          bp->global ? "global " : "", (unsigned long long)bp->ctx.va, (unsigned)bp->view,
                          (unsigned long long)bp->ctx.root, bp->key, check_gfn ? " installed at that pa" : "");
}

vmt_status vmt_bpm_remove(vmt_bpm *b, const vmt_bpm_bp *bp)
{
    return remove_common(b, bp, false, 0);
}

vmt_status vmt_bpm_remove_pa(vmt_bpm *b, const vmt_bpm_bp *bp, vmt_pa pa)
{
    return remove_common(b, bp, true, vmt_pa_to_gfn(pa));
}

/* Collect the keys of every context matching view (or all when view is
 * VMT_VIEW_INVALID). Caller frees. */
static bpm_ctx_key *collect(vmt_bpm *b, vmt_view view, size_t *n)
{
    size_t cap = b->nctx, cnt = 0;
    bpm_ctx_key *keys = malloc((cap ? cap : 1) * sizeof *keys);
    if (!keys)
        return NULL;
    size_t it = 0;
    bpm_ctx_key k;
    bpm_ctx_val v;
    while (bpm_ctx_next(b, &it, &k, &v)) {
        if (view == VMT_VIEW_INVALID || bpm_rootv_view(k.rootv) == view)
            keys[cnt++] = k;
    }
    *n = cnt;
    return keys;
}

/* A removed context, kept so remove_view can put it back on failure. */
typedef struct saved_ctx {
    bpm_ctx_key k;
    bpm_ctx_val v;
    bpm_keys_val *extra; /* keys 1..nkeys-1 */
} saved_ctx;

static vmt_status save_ctx(const vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v, saved_ctx *out)
{
    uint32_t n = bpm_loc_nkeys(v->loc);
    out->k = *k;
    out->v = *v;
    out->extra = NULL;
    if (n > 1 && !(out->extra = malloc((n - 1) * sizeof *out->extra)))
        return VMT_E_NOMEM;
    for (uint32_t i = 1; i < n; i++)
        (void)keys_get(b, k, i, &out->extra[i - 1]);
    return VMT_OK;
}

/* Put a removed context back (arming it again when it was active). */
static vmt_status restore_ctx(vmt_bpm *b, const saved_ctx *sc)
{
    uint32_t n = bpm_loc_nkeys(sc->v.loc);
    vmt_status st;
    bool global = bpm_rootv_global(sc->k.rootv);
    vmt_view view = bpm_rootv_view(sc->k.rootv);
    if ((st = bpm_ctx_reserve(b, sc->k.va)) ||
        (st = vmt_hmap_reserve(&b->globals, vmt_hmap_count(&b->globals) + 1)) ||
        (st = vmt_hmap_reserve(&b->keys, vmt_hmap_count(&b->keys) + n)))
        return st;
    if (bpm_loc_active(sc->v.loc) && (st = bpm_ctl_arm(b, view, bpm_loc_gfn(sc->v.loc), sc->k.va)))
        return st;
    bpm_ctx_add(b, &sc->k, &sc->v);
    for (uint32_t i = 1; i < n; i++) {
        bpm_keys_key kk = keys_key(&sc->k, i);
        uint8_t kv[BPM_KEYS_VAL_SIZE];
        memcpy(kv, &sc->extra[i - 1].tag, 8);
        memcpy(kv + 8, &sc->extra[i - 1].key, 4);
        (void)vmt_hmap_put(&b->keys, &kk, kv, NULL, NULL);
    }
    if (global) {
        bpm_va_view gk = { sc->k.va, view };
        uint64_t root = bpm_rootv_root(sc->k.rootv);
        (void)vmt_hmap_put(&b->globals, &gk, &root, NULL, NULL);
    }
    b->nbps += n;
    if (bpm_loc_active(sc->v.loc))
        b->nactive++;
    return VMT_OK;
}

/* Remove every context of a view (all views: VMT_VIEW_INVALID).
 * keep_going (clear): go on after a failure, return the first one.
 * Else (remove_view): all or nothing: on a failure the contexts already
 * removed are put back. */
static vmt_status remove_many(vmt_bpm *b, vmt_view view, bool keep_going, size_t *removed)
{
    size_t n = 0, done = 0, nsaved = 0;
    vmt_status first = VMT_OK;
    bpm_ctx_key *keys = collect(b, view, &n);
    saved_ctx *saved = keep_going ? NULL : calloc(n ? n : 1, sizeof *saved);
    if (!keys || (!keep_going && !saved)) {
        free(keys);
        free(saved);
        return vmt_errbuf_set(&b->err, VMT_E_NOMEM, "bpm: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        bpm_ctx_val v;
        if (!bpm_ctx_get(b, &keys[i], &v))
            continue;
        uint32_t nk = bpm_loc_nkeys(v.loc);
        vmt_status st = VMT_OK;
        if (!keep_going) {
            st = save_ctx(b, &keys[i], &v, &saved[nsaved]);
            if (st)
                st = vmt_errbuf_set(&b->err, st, "bpm: out of memory");
        }
        if (!st)
            st = remove_ctx(b, &keys[i], &v);
        if (st) {
            if (!first)
                first = st;
            if (!keep_going) {
                free(saved[nsaved].extra);
                break;
            }
            continue;
        }
        nsaved += !keep_going;
        done += nk;
    }
    if (first && !keep_going) {
        char msg[VMT_ERRBUF_LEN];
        memcpy(msg, b->err.msg, sizeof msg);
        size_t lost = 0;
        for (size_t i = nsaved; i-- > 0;)
            if (restore_ctx(b, &saved[i]))
                lost++;
        vmt_errbuf_set(&b->err, first, "%s%s", msg,
                       lost ? " (and some breakpoints could not be put back)" : " (nothing was removed)");
        done = 0;
    }
    for (size_t i = 0; i < nsaved; i++)
        free(saved[i].extra);
    free(saved);
    free(keys);
    if (removed)
        *removed = done;
    return first;
}

vmt_status vmt_bpm_remove_view(vmt_bpm *b, vmt_view view, size_t *removed)
{
    if (removed)
        *removed = 0;
    if (view > BPM_VIEW_MAX)
        return vmt_errbuf_set(&b->err, VMT_E_RANGE, "bpm: view %u is above the supported %u", (unsigned)view,
                              BPM_VIEW_MAX);
    return remove_many(b, view, false, removed);
}

vmt_status vmt_bpm_clear(vmt_bpm *b)
{
    /* refresh entries stay: a vCPU stepping in view 0 still gets switched
     * back by its SINGLESTEP */
    return remove_many(b, VMT_VIEW_INVALID, true, NULL);
}

/* ---- event lookups ---- */

size_t bpm_ctx_hits(const vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *v, vmt_bpm_bp *hits,
                    size_t max, size_t have)
{
    uint32_t n = bpm_loc_nkeys(v->loc);
    for (uint32_t i = 0; i < n; i++, have++) {
        if (have >= max)
            continue;
        vmt_bpm_bp *h = &hits[have];
        h->ctx = vmt_addr_ctx_make(k->va, bpm_rootv_root(k->rootv));
        h->view = bpm_rootv_view(k->rootv);
        h->global = bpm_rootv_global(k->rootv);
        if (i == 0) {
            h->key = v->key0;
            h->tag = v->tag0;
        } else {
            bpm_keys_val kv = { 0, 0 };
            (void)keys_get(b, k, i, &kv);
            h->key = kv.key;
            h->tag = kv.tag;
        }
    }
    return have;
}

size_t bpm_lookup_exec(const vmt_bpm *b, vmt_view view, vmt_va va, vmt_pa root, uint64_t gfn,
                       vmt_bpm_bp *hits, size_t max, size_t *total)
{
    size_t have = 0;
    bpm_ctx_key ks[2];
    int nk = 0;
    if (bpm_global_key(b, view, va, &ks[nk]))
        nk++;
    ks[nk].va = va;
    ks[nk].rootv = bpm_rootv(root, view, false);
    nk++;
    for (int i = 0; i < nk; i++) {
        bpm_ctx_val v;
        if (!bpm_ctx_get(b, &ks[i], &v) || !bpm_loc_active(v.loc))
            continue;
        if (gfn != UINT64_MAX && bpm_loc_gfn(v.loc) != gfn)
            continue;
        have = bpm_ctx_hits(b, &ks[i], &v, hits, max, have);
    }
    if (total)
        *total = have;
    return have < max ? have : max;
}

size_t bpm_lookup_alias(const vmt_bpm *b, vmt_view view, uint64_t gfn, unsigned off, vmt_bpm_bp *hits, size_t max,
                        size_t *total)
{
    size_t have = 0, it = 0;
    bpm_ctx_key k;
    bpm_ctx_val v;
    while (bpm_ctx_next(b, &it, &k, &v)) {
        if (bpm_rootv_view(k.rootv) != view || !bpm_loc_active(v.loc) || bpm_loc_gfn(v.loc) != gfn ||
            vmt_page_offset(k.va) != off)
            continue;
        have = bpm_ctx_hits(b, &k, &v, hits, max, have);
    }
    if (total)
        *total = have;
    return have < max ? have : max;
}

/* ---- page-table monitor events ---- */

/* Move one context: pending/active(old) -> active(new) or pending. */
static vmt_status move_ctx(vmt_bpm *b, const bpm_ctx_key *k, bpm_ctx_val *v, bool to_active, vmt_pa new_pa,
                           size_t *changed)
{
    vmt_view view = bpm_rootv_view(k->rootv);
    bool was = bpm_loc_active(v->loc);
    vmt_gfn old_gfn = bpm_loc_gfn(v->loc), new_gfn = vmt_pa_to_gfn(new_pa);
    vmt_status st;
    if (to_active && was && old_gfn == new_gfn)
        return VMT_OK;
    if (!to_active && !was)
        return VMT_OK;
    if (to_active && (st = check_pa(b, new_pa, k->va)))
        return st;
    if (to_active && (st = bpm_ctl_arm(b, view, new_gfn, k->va)))
        return st;
    if (was && (st = bpm_ctl_disarm(b, view, old_gfn, k->va))) {
        if (to_active)
            (void)bpm_ctl_disarm(b, view, new_gfn, k->va); /* undo the new install */
        return st;
    }
    if (to_active && !was)
        b->nactive++;
    if (!to_active && was)
        b->nactive--;
    v->loc = bpm_loc_make(to_active, to_active ? new_gfn : 0, bpm_loc_nkeys(v->loc));
    bpm_ctx_set(b, k, v);
    if (changed)
        (*changed)++;
    return VMT_OK;
}

vmt_status vmt_bpm_handle_ptm_event(vmt_bpm *b, const vmt_ptm_event *ev, size_t *changed)
{
    if (changed)
        *changed = 0;
    if (!ev)
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: no page event given");
    if (ev->view > BPM_VIEW_MAX)
        return VMT_OK;
    bool to_active;
    switch (ev->kind) {
    case VMT_PTM_PAGE_IN:
    case VMT_PTM_REMAP:
        to_active = true;
        break;
    case VMT_PTM_PAGE_OUT:
        to_active = false;
        break;
    default:
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: unknown page event kind %d", (int)ev->kind);
    }
    vmt_pa root = ev->ctx.root & VMT_CR3_ADDR_MASK;
    bpm_ctx_key ks[2];
    int nk = 0;
    ks[nk].va = ev->ctx.va;
    ks[nk].rootv = bpm_rootv(root, ev->view, false);
    nk++;
    if (bpm_global_key(b, ev->view, ev->ctx.va, &ks[nk]) && bpm_rootv_root(ks[nk].rootv) == root)
        nk++;
    for (int i = 0; i < nk; i++) {
        bpm_ctx_val v;
        if (!bpm_ctx_get(b, &ks[i], &v))
            continue;
        vmt_status st = move_ctx(b, &ks[i], &v, to_active, ev->new_pa, changed);
        if (st)
            return st; /* with a per-root and a global context (impossible: conflict) only one exists */
    }
    return VMT_OK;
}
