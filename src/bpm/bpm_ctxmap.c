/*
 * bpm/bpm_ctxmap.c — the store of address contexts, keyed by va first.
 *
 * Nearly always one address context uses a va, so the store is two maps:
 *   vas   va -> va_val { rootv, loc, tag0, key0, info }: the va's "primary"
 *         context inline (rootv == BPM_HOLE when it was removed while others
 *         remain) and the va's info: how many contexts use the va (any view,
 *         any root; bits 0..30) and whether they are global (bit 31).
 *   more  (va, rootv) -> ctx_val { loc, tag0, key0 }: the other contexts of
 *         a va (another root or view).
 * A context lookup is one probe in `vas` and, when the primary is another
 * context, one in `more`: O(1). The per-va info answers the global/per-root
 * conflict question in O(1) with no separate index, so a breakpoint costs
 * one map slot in the common case.
 *
 * Invariants (checked in bpm_check.c): info.count == (primary is not a
 * hole) + entries of `more` at va, and >= 1; a hole has count >= 1; no
 * `more` entry repeats the primary's rootv; every context at a va has the
 * va's global flag.
 */
#include <stdlib.h>

#include "bpm/bpm_internal.h"

typedef struct va_val {
    uint64_t rootv;
    uint64_t loc;
    uint64_t tag0;
    uint32_t key0;
    uint32_t info;
} va_val;

static bool va_get(const vmt_bpm *b, vmt_va va, va_val *out)
{
    const void *p = vmt_hmap_get(&b->vas, &va);
    if (!p)
        return false;
    memcpy(out, p, sizeof *out);
    return true;
}

static void va_set(vmt_bpm *b, vmt_va va, const va_val *v)
{
    void *p = vmt_hmap_get(&b->vas, &va);
    if (p)
        memcpy(p, v, sizeof *v);
}

void bpm_ctxmap_init(vmt_bpm *b)
{
    vmt_hmap_init(&b->vas, sizeof(uint64_t), sizeof(va_val));
    vmt_hmap_init(&b->more, sizeof(bpm_ctx_key), BPM_CTX_VAL_SIZE);
}

void bpm_ctxmap_free(vmt_bpm *b)
{
    vmt_hmap_free(&b->vas);
    vmt_hmap_free(&b->more);
}

bool bpm_va_info(const vmt_bpm *b, vmt_va va, uint32_t *count, bool *global)
{
    va_val v;
    if (!va_get(b, va, &v))
        return false;
    *count = v.info & ~BPM_VAS_GLOBAL;
    *global = (v.info & BPM_VAS_GLOBAL) != 0;
    return true;
}

bool bpm_ctx_get(const vmt_bpm *b, const bpm_ctx_key *k, bpm_ctx_val *out)
{
    va_val v;
    if (!va_get(b, k->va, &v))
        return false;
    memset(out, 0, sizeof *out);
    if (v.rootv == k->rootv) {
        out->loc = v.loc;
        out->tag0 = v.tag0;
        out->key0 = v.key0;
        return true;
    }
    if ((v.info & ~BPM_VAS_GLOBAL) <= 1 && v.rootv != BPM_HOLE)
        return false; /* the primary is the only context of this va */
    const void *p = vmt_hmap_get(&b->more, k);
    if (!p)
        return false;
    memcpy(out, p, BPM_CTX_VAL_SIZE);
    return true;
}

void bpm_ctx_set(vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *in)
{
    va_val v;
    if (!va_get(b, k->va, &v))
        return;
    if (v.rootv == k->rootv) {
        v.loc = in->loc;
        v.tag0 = in->tag0;
        v.key0 = in->key0;
        va_set(b, k->va, &v);
        return;
    }
    void *p = vmt_hmap_get(&b->more, k);
    if (p)
        memcpy(p, in, BPM_CTX_VAL_SIZE);
}

vmt_status bpm_ctx_reserve(vmt_bpm *b, vmt_va va)
{
    va_val v;
    if (!va_get(b, va, &v))
        return vmt_hmap_reserve(&b->vas, vmt_hmap_count(&b->vas) + 1);
    if (v.rootv == BPM_HOLE)
        return VMT_OK;
    return vmt_hmap_reserve(&b->more, vmt_hmap_count(&b->more) + 1);
}

void bpm_ctx_add(vmt_bpm *b, const bpm_ctx_key *k, const bpm_ctx_val *in)
{
    va_val v;
    bool global = bpm_rootv_global(k->rootv);
    if (!va_get(b, k->va, &v)) {
        memset(&v, 0, sizeof v);
        v.rootv = k->rootv;
        v.loc = in->loc;
        v.tag0 = in->tag0;
        v.key0 = in->key0;
        v.info = 1u | (global ? BPM_VAS_GLOBAL : 0);
        (void)vmt_hmap_put(&b->vas, &k->va, &v, NULL, NULL); /* reserved */
    } else if (v.rootv == BPM_HOLE) {
        v.rootv = k->rootv;
        v.loc = in->loc;
        v.tag0 = in->tag0;
        v.key0 = in->key0;
        v.info++;
        va_set(b, k->va, &v);
    } else {
        uint8_t raw[BPM_CTX_VAL_SIZE];
        memcpy(raw, in, sizeof raw);
        (void)vmt_hmap_put(&b->more, k, raw, NULL, NULL); /* reserved */
        v.info++;
        va_set(b, k->va, &v);
    }
    b->nctx++;
}

void bpm_ctx_del(vmt_bpm *b, const bpm_ctx_key *k)
{
    va_val v;
    if (!va_get(b, k->va, &v))
        return;
    if (v.rootv == k->rootv) {
        v.rootv = BPM_HOLE;
        v.loc = v.tag0 = 0;
        v.key0 = 0;
    } else {
        bpm_ctx_key copy = *k;
        if (!vmt_hmap_del(&b->more, &copy, NULL))
            return;
    }
    b->nctx--;
    v.info--;
    if ((v.info & ~BPM_VAS_GLOBAL) == 0) {
        vmt_va va = k->va;
        vmt_hmap_del(&b->vas, &va, NULL);
        return;
    }
    va_set(b, k->va, &v);
}

bool bpm_ctx_next(const vmt_bpm *b, size_t *it, bpm_ctx_key *k, bpm_ctx_val *out)
{
    void *kp, *vp;
    /* it < SIZE_MAX/2: in vas; above: in more (offset by SIZE_MAX/2) */
    const size_t half = SIZE_MAX / 2;
    while (*it < half) {
        if (!vmt_hmap_next(&b->vas, it, &kp, &vp)) {
            *it = half;
            break;
        }
        va_val v;
        memcpy(&v, vp, sizeof v);
        if (v.rootv == BPM_HOLE)
            continue;
        memcpy(&k->va, kp, sizeof k->va);
        k->rootv = v.rootv;
        memset(out, 0, sizeof *out);
        out->loc = v.loc;
        out->tag0 = v.tag0;
        out->key0 = v.key0;
        return true;
    }
    size_t inner = *it - half;
    bool ok = vmt_hmap_next(&b->more, &inner, &kp, &vp);
    *it = inner + half;
    if (!ok)
        return false;
    memcpy(k, kp, sizeof *k);
    memset(out, 0, sizeof *out);
    memcpy(out, vp, BPM_CTX_VAL_SIZE);
    return true;
}

vmt_status bpm_ctxmap_check(vmt_bpm *b)
{
    size_t it = 0;
    void *kp, *vp;
    size_t nctx = 0;
    while (vmt_hmap_next(&b->vas, &it, &kp, &vp)) {
        va_val v;
        vmt_va va;
        memcpy(&va, kp, sizeof va);
        memcpy(&v, vp, sizeof v);
        uint32_t count = v.info & ~BPM_VAS_GLOBAL;
        bool global = (v.info & BPM_VAS_GLOBAL) != 0;
        if (count == 0)
            return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: va 0x%llx has no contexts but an entry",
                                  (unsigned long long)va);
        if (v.rootv != BPM_HOLE) {
            nctx++;
            if (bpm_rootv_global(v.rootv) != global)
                return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: va 0x%llx: primary context's global flag "
                                      "differs from the va's", (unsigned long long)va);
            if (count > 1 && vmt_hmap_get(&b->more, &(bpm_ctx_key){ va, v.rootv }))
                return vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: va 0x%llx: primary context repeated in more",
                                      (unsigned long long)va);
        }
    }
    /* each `more` entry belongs to a va whose count includes it */
    vmt_hmap per_va;
    vmt_hmap_init(&per_va, sizeof(uint64_t), sizeof(uint32_t));
    vmt_status st = VMT_OK;
    it = 0;
    while (vmt_hmap_next(&b->more, &it, &kp, &vp)) {
        bpm_ctx_key k;
        memcpy(&k, kp, sizeof k);
        va_val v;
        if (!va_get(b, k.va, &v) || bpm_rootv_global(k.rootv) != ((v.info & BPM_VAS_GLOBAL) != 0) || v.rootv == k.rootv) {
            st = vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: extra context at va 0x%llx has no consistent va entry",
                                (unsigned long long)k.va);
            goto out;
        }
        void *cp;
        bool existed;
        uint32_t zero = 0, c;
        if (vmt_hmap_put(&per_va, &k.va, &zero, &cp, &existed)) {
            st = vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: out of memory");
            goto out;
        }
        memcpy(&c, cp, sizeof c);
        c++;
        memcpy(cp, &c, sizeof c);
        nctx++;
    }
    it = 0;
    while (vmt_hmap_next(&b->vas, &it, &kp, &vp)) {
        va_val v;
        memcpy(&v, vp, sizeof v);
        uint32_t extra = 0;
        const void *cp = vmt_hmap_get(&per_va, kp);
        if (cp)
            memcpy(&extra, cp, sizeof extra);
        uint32_t want = extra + (v.rootv != BPM_HOLE);
        if ((v.info & ~BPM_VAS_GLOBAL) != want) {
            st = vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: va 0x%llx counts %u contexts, the maps hold %u",
                                (unsigned long long)*(uint64_t *)kp, v.info & ~BPM_VAS_GLOBAL, want);
            goto out;
        }
    }
    if (nctx != b->nctx)
        st = vmt_errbuf_set(&b->err, VMT_E_INTERNAL, "bpm check: %zu contexts stored, the counter says %zu", nctx, b->nctx);
out:
    vmt_hmap_free(&per_va);
    return st;
}
