/*
 * core/session_arbiter.c — the access arbiter (see vmtrap/session.h).
 *
 * Design: one entry per (view, gfn) that any owner restricts, holding each
 * owner's allowed set. The driver always gets the intersection. Every
 * change is made failure-atomic: the new entry state is computed, the
 * driver is told, and only when the driver accepted it is the entry
 * updated (a new entry inserted before the driver call is removed again on
 * failure). The driver is only called when the applied rights change.
 *
 * A remap resets the gfn's rights in the driver (Xen altp2m semantics), so
 * vmt_session_remap() re-applies the entry's rights right after it; if that
 * fails the entry is marked stale and the next touch re-applies it.
 *
 * Invariants (vmt_arbiter_check): no entry without owners; non-owners have
 * no restriction; every non-stale entry's applied rights are the
 * intersection of its owners' restrictions.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/session_internal.h"

static vmt_arb_key arb_key(vmt_view view, vmt_gfn gfn)
{
    vmt_arb_key k = { gfn, view };
    return k;
}

static vmt_access intersection(const vmt_arb_entry *e)
{
    vmt_access a = VMT_ACCESS_RWX;
    for (unsigned o = 0; o < VMT_OWNER_COUNT; o++)
        if (e->owners & (1u << o))
            a &= e->restriction[o];
    return a;
}

static vmt_status driver_failed(vmt_session *s, vmt_status st, const char *what, vmt_view view, vmt_gfn gfn)
{
    return vmt_errbuf_set(&s->err, st, "arbiter: %s for view %u gfn 0x%" PRIx64 " failed: %s", what, view, gfn,
                          vmt_driver_error(s->drv));
}

vmt_status vmt_session_restrict(vmt_session *s, vmt_view view, vmt_gfn gfn, unsigned owner, vmt_access allowed)
{
    if (owner >= VMT_OWNER_COUNT || (allowed & ~VMT_ACCESS_RWX))
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "arbiter: bad owner %u or rights 0x%x", owner, allowed);
    vmt_arb_key k = arb_key(view, gfn);
    vmt_arb_entry *e;
    bool existed;
    vmt_status st = vmt_hmap_put(&s->arb.map, &k, NULL, (void **)&e, &existed);
    if (st)
        return vmt_errbuf_set(&s->err, st, "arbiter: out of memory");
    vmt_arb_entry next = *e;
    next.owners |= (uint8_t)(1u << owner);
    next.restriction[owner] = allowed;
    vmt_access want = intersection(&next);
    if (!existed || e->stale || want != e->applied) {
        st = vmt_drv_view_set_access(s->drv, view, gfn, want);
        if (st) {
            if (!existed)
                vmt_hmap_del(&s->arb.map, &k, NULL);
            return driver_failed(s, st, "setting rights", view, gfn);
        }
        next.applied = want;
        next.stale = 0;
    }
    *e = next;
    return VMT_OK;
}

vmt_status vmt_session_unrestrict(vmt_session *s, vmt_view view, vmt_gfn gfn, unsigned owner)
{
    if (owner >= VMT_OWNER_COUNT)
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "arbiter: bad owner %u", owner);
    vmt_arb_key k = arb_key(view, gfn);
    vmt_arb_entry *e = vmt_hmap_get(&s->arb.map, &k);
    if (!e || !(e->owners & (1u << owner)))
        return vmt_errbuf_set(&s->err, VMT_E_NOTFOUND, "arbiter: owner %u has no restriction on view %u gfn 0x%"
                              PRIx64, owner, view, gfn);
    vmt_arb_entry next = *e;
    next.owners &= (uint8_t) ~(1u << owner);
    next.restriction[owner] = 0;
    vmt_access want = intersection(&next);
    if (e->stale || want != e->applied) {
        vmt_status st = vmt_drv_view_set_access(s->drv, view, gfn, want);
        if (st)
            return driver_failed(s, st, "setting rights", view, gfn);
        next.applied = want;
        next.stale = 0;
    }
    if (next.owners == 0)
        vmt_hmap_del(&s->arb.map, &k, NULL);
    else
        *e = next;
    return VMT_OK;
}

vmt_status vmt_session_remap(vmt_session *s, vmt_view view, vmt_gfn gfn, vmt_gfn backing)
{
    vmt_status st = vmt_drv_view_remap(s->drv, view, gfn, backing);
    if (st)
        return driver_failed(s, st, "remap", view, gfn);
    vmt_arb_key k = arb_key(view, gfn);
    vmt_arb_entry *e = vmt_hmap_get(&s->arb.map, &k);
    if (!e)
        return VMT_OK;
    /* The remap reset the rights to the view's default: apply ours again. */
    st = vmt_drv_view_set_access(s->drv, view, gfn, e->applied);
    if (st) {
        e->stale = 1;
        return driver_failed(s, st, "re-applying rights after remap", view, gfn);
    }
    e->stale = 0;
    return VMT_OK;
}

void vmt_arbiter_prefetch(const vmt_session *s, vmt_view view, vmt_gfn gfn)
{
    vmt_arb_key k = arb_key(view, gfn);
    vmt_hmap_prefetch(&s->arb.map, &k);
}

vmt_access vmt_session_effective_access(const vmt_session *s, vmt_view view, vmt_gfn gfn)
{
    vmt_arb_key k = arb_key(view, gfn);
    const vmt_arb_entry *e = vmt_hmap_get(&s->arb.map, &k);
    return e ? e->applied : VMT_ACCESS_RWX;
}

void vmt_session_forget_view(vmt_session *s, vmt_view view)
{
    /* Collect first: no deletion while iterating. */
    size_t n = 0, cap = 0;
    vmt_arb_key *keys = NULL;
    size_t it = 0;
    void *kp, *vp;
    int again;
    do {
        again = 0;
        it = 0;
        n = 0;
        while (vmt_hmap_next(&s->arb.map, &it, &kp, &vp)) {
            vmt_arb_key k; /* slots are not aligned: copy */
            memcpy(&k, kp, sizeof k);
            if (k.view != view)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                vmt_arb_key *nk = realloc(keys, ncap * sizeof *nk);
                if (!nk) {
                    again = 1; /* delete what we have, then scan again */
                    break;
                }
                keys = nk;
                cap = ncap;
            }
            keys[n++] = k;
        }
        for (size_t i = 0; i < n; i++)
            vmt_hmap_del(&s->arb.map, &keys[i], NULL);
    } while (again && n > 0);
    free(keys);
}

vmt_status vmt_arbiter_check(const vmt_arbiter *a, char *why, size_t why_len)
{
    vmt_status st = vmt_hmap_check(&a->map, why, why_len);
    if (st)
        return st;
    size_t it = 0;
    void *kp, *vp;
    while (vmt_hmap_next(&a->map, &it, &kp, &vp)) {
        vmt_arb_key key; /* slots are not aligned: copy */
        memcpy(&key, kp, sizeof key);
        const vmt_arb_key *k = &key;
        const vmt_arb_entry *e = vp; /* byte-aligned type */
        if (e->owners == 0) {
            vmt_why(why, why_len, "arbiter: entry view %" PRIu64 " gfn 0x%" PRIx64 " has no owners", k->view, k->gfn);
            return VMT_E_INTERNAL;
        }
        for (unsigned o = 0; o < VMT_OWNER_COUNT; o++) {
            if (!(e->owners & (1u << o)) && e->restriction[o]) {
                vmt_why(why, why_len, "arbiter: entry view %" PRIu64 " gfn 0x%" PRIx64 " keeps a restriction of "
                        "non-owner %u", k->view, k->gfn, o);
                return VMT_E_INTERNAL;
            }
        }
        if (!e->stale && e->applied != intersection(e)) {
            vmt_why(why, why_len, "arbiter: entry view %" PRIu64 " gfn 0x%" PRIx64 " applies 0x%x, owners allow 0x%x",
                    k->view, k->gfn, e->applied, intersection(e));
            return VMT_E_INTERNAL;
        }
    }
    return VMT_OK;
}
