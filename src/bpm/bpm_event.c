/*
 * bpm/bpm_event.c — deciding what a driver event means for the manager and
 * how to answer it.
 *
 *   INT3 at one of our sites (SHADOW)    -> HIT: the breakpoints there for this
 *       address context (global ones for any root); the response executes the
 *       displaced instruction in view 0 (EMULATE there when the driver can,
 *       else FAST_STEP there), or REINJECTs when the guest had its own INT3
 *       at that byte (double trap).
 *   INT3 elsewhere                       -> SHADOW: the guest's bytes at rip in
 *       view 0 are CC or CD 03: the guest's own (FOREIGN, REINJECT); else a
 *       stale event of a removed breakpoint (STALE, CONTINUE re-executes the
 *       restored byte), but never twice in a row at one rip (the second is
 *       the guest's own). EXEC / DEBUG plant no INT3: always FOREIGN.
 *   read/write of a shadowed frame       -> HIDDEN: served from view 0. A write
 *       is stepped in view 0 (STEP + SWITCH_VIEW 0) and the shadow rebuilt
 *       from the whole frame on the SINGLESTEP that follows (REFRESHED,
 *       SWITCH_VIEW back): exact for any instruction (rep stos, ...).
 *       Without SINGLESTEP: EMULATE/FAST_STEP, the reported bytes mirrored at
 *       once, and the whole shadow rebuilt at the vCPU's next event.
 *   Whatever the manager steps in view 0 for the guest (a hit's displaced
 *       instruction, a hidden read) and that may store into a shadowed
 *       frame (bpm_displaced.c) leaves that shadow rebuilt before the
 *       breakpoint view runs it again: the frame loses execute until its
 *       first execution traps (REFRESHED, rebuilt, execute back), or, on a
 *       driver without execute traps, the instruction is stepped and the
 *       SINGLESTEP rebuilds it; other instructions keep the one-exit EMULATE.
 *   execute on a no-execute frame (EXEC) -> HIT at a breakpoint, else HIDDEN;
 *       both step through in view 0.
 *   debug-register event (DEBUG)         -> HIT; CONTINUE.
 *   A SHADOW / EXEC site met through a virtual address with no breakpoint of
 *   its own (another mapping of the frame, or a root not registered) is a
 *   HIT of the breakpoints at that frame and offset, verdict.alias set.
 *   Debug registers match virtual addresses: they cannot see such aliases.
 *   anything else                        -> NOT_OURS.
 * Lookups are O(1): frame by (view, gfn), site by offset (binary search in
 * at most 4096), contexts by (view, va, root) and (view, va) for globals.
 */
#include <stdio.h>

#include "bpm/bpm_internal.h"

#define REFRESH_STEPPING (1ULL << 63) /* refresh value: we asked for a STEP */
#define REFRESH_ALL      (1ULL << 62) /* refresh value: every shadow of the view, not just fk's */

const char *vmt_bpm_disposition_name(vmt_bpm_disposition d)
{
    switch (d) {
    case VMT_BPM_NOT_OURS: return "not-ours";
    case VMT_BPM_HIT: return "hit";
    case VMT_BPM_HIDDEN: return "hidden";
    case VMT_BPM_FOREIGN: return "foreign";
    case VMT_BPM_STALE: return "stale";
    case VMT_BPM_REFRESHED: return "refreshed";
    }
    return "unknown";
}

static vmt_response step_over(const vmt_bpm *b)
{
    vmt_response r = vmt_response_continue();
    if (vmt_driver_has(b->d, VMT_CAP_EMULATE) && !(b->flags & VMT_BPM_PREFER_FAST_STEP)) {
        r.actions = VMT_RESP_EMULATE;
        r.emulate_view = VMT_VIEW_DEFAULT;
    } else {
        r.actions = VMT_RESP_FAST_STEP;
        r.step_view = VMT_VIEW_DEFAULT;
    }
    return r;
}

static vmt_pa event_root(const vmt_event *ev) { return ev->regs.cr3 & VMT_CR3_ADDR_MASK; }

/* A gfn an event names may be a shadow frame (drivers that report the
 * backing): map it back to the guest frame. */
static vmt_gfn guest_gfn(const vmt_bpm *b, vmt_gfn gfn)
{
    void *kp;
    if (!vmt_hmap_get2(&b->frames, &gfn, &kp)) /* frames by shadow gfn (SHADOW only) */
        return gfn;
    uint64_t fk;
    memcpy(&fk, kp, sizeof fk);
    return bpm_fkey_gfn(fk);
}

/* Where an event executed, if it is at one of our sites. */
typedef struct ev_site {
    vmt_view view;
    vmt_va va;
    vmt_pa root;
    uint64_t gfn;      /* UINT64_MAX: any (DEBUG) */
    bpm_site site;     /* SHADOW / EXEC */
} ev_site;

static bool event_site(const vmt_bpm *b, const vmt_event *ev, ev_site *out)
{
    out->view = ev->view;
    out->root = event_root(ev);
    vmt_gfn gfn;
    switch (ev->kind) {
    case VMT_EVENT_BREAKPOINT:
        if (b->ctl != VMT_BPM_CTL_SHADOW)
            return false;
        out->va = ev->u.bp.gva ? ev->u.bp.gva : ev->regs.rip;
        gfn = guest_gfn(b, vmt_pa_to_gfn(ev->u.bp.gpa));
        break;
    case VMT_EVENT_MEM_ACCESS:
        if (b->ctl != VMT_BPM_CTL_EXEC || !(ev->u.mem.access & VMT_ACCESS_X))
            return false;
        out->va = ev->u.mem.gva_valid ? ev->u.mem.gva : ev->regs.rip;
        gfn = vmt_pa_to_gfn(ev->u.mem.gpa);
        break;
    case VMT_EVENT_HW_BREAKPOINT: {
        unsigned i = ev->u.hwbp.index;
        if (b->ctl != VMT_BPM_CTL_DEBUG || i >= b->ndbg || !b->dbg[i].nref)
            return false;
        out->va = b->dbg[i].va;
        out->gfn = UINT64_MAX;
        return true;
    }
    default:
        return false;
    }
    bpm_frame f;
    if (ev->view > BPM_VIEW_MAX || !bpm_frame_get(b, bpm_fkey(ev->view, gfn), &f))
        return false;
    int i = bpm_site_find(&f, (unsigned)vmt_page_offset(out->va));
    if (i < 0)
        return false;
    out->gfn = gfn;
    out->site = bpm_sites_c(&f)[i];
    return true;
}

/* The breakpoints behind an executed site: those of (va, root) or the
 * global one at va; when there are none and the site is a frame's (SHADOW,
 * EXEC), those installed at that frame and offset under any address
 * (*alias: executed through another virtual address of the frame). */
static size_t site_hits(const vmt_bpm *b, const ev_site *es, vmt_bpm_bp *hits, size_t max, size_t *total,
                        bool *alias)
{
    size_t n = bpm_lookup_exec(b, es->view, es->va, es->root, es->gfn, hits, max, total);
    *alias = false;
    if (*total || es->gfn == UINT64_MAX)
        return n;
    n = bpm_lookup_alias(b, es->view, es->gfn, (unsigned)vmt_page_offset(es->va), hits, max, total);
    *alias = *total > 0;
    return n;
}

size_t vmt_bpm_lookup_event(const vmt_bpm *b, const vmt_event *ev, vmt_bpm_bp *hits, size_t max, size_t *total)
{
    ev_site es;
    size_t all = 0;
    bool alias;
    if (total)
        *total = 0;
    if (!ev || !event_site(b, ev, &es))
        return 0;
    size_t n = site_hits(b, &es, hits, max, &all, &alias);
    if (total)
        *total = all;
    return n;
}

bool vmt_bpm_contains_event(const vmt_bpm *b, const vmt_event *ev)
{
    size_t total = 0;
    (void)vmt_bpm_lookup_event(b, ev, NULL, 0, &total);
    return total > 0;
}

static bool ctx_lookup(const vmt_bpm *b, const vmt_bpm_bp *bp, bpm_ctx_key *k, bpm_ctx_val *v)
{
    if (!bp || bp->view > BPM_VIEW_MAX)
        return false;
    if (bp->global) {
        if (!bpm_global_key(b, bp->view, bp->ctx.va, k))
            return false;
    } else {
        k->va = bp->ctx.va;
        k->rootv = bpm_rootv(bp->ctx.root, bp->view, false);
    }
    if (!bpm_ctx_get(b, k, v))
        return false;
    if (bp->key == VMT_BPM_KEY_ANY || v->key0 == bp->key)
        return true;
    uint32_t n = bpm_loc_nkeys(v->loc);
    for (uint32_t i = 1; i < n; i++) {
        bpm_keys_key kk;
        memset(&kk, 0, sizeof kk);
        kk.va = k->va;
        kk.rootv = k->rootv;
        kk.index = i;
        const uint8_t *p = vmt_hmap_get(&b->keys, &kk);
        uint32_t key;
        if (p) {
            memcpy(&key, p + 8, sizeof key);
            if (key == bp->key)
                return true;
        }
    }
    return false;
}

bool vmt_bpm_contains(const vmt_bpm *b, const vmt_bpm_bp *bp)
{
    bpm_ctx_key k;
    bpm_ctx_val v;
    return ctx_lookup(b, bp, &k, &v);
}

bool vmt_bpm_is_active(const vmt_bpm *b, const vmt_bpm_bp *bp)
{
    bpm_ctx_key k;
    bpm_ctx_val v;
    return ctx_lookup(b, bp, &k, &v) && bpm_loc_active(v.loc);
}

vmt_status vmt_bpm_remove_by_event(vmt_bpm *b, const vmt_event *ev, uint32_t key, size_t *removed)
{
    if (removed)
        *removed = 0;
    ev_site es;
    if (!ev || !event_site(b, ev, &es))
        return VMT_OK;
    size_t total = 0;
    vmt_bpm_bp one;
    (void)bpm_lookup_exec(b, es.view, es.va, es.root, es.gfn, &one, 1, &total);
    if (!total)
        return VMT_OK;
    /* All hits share one context (a va is global or per-root, never both). */
    vmt_bpm_bp bp = one;
    bp.key = key;
    size_t before = b->nbps;
    vmt_status st = vmt_bpm_remove(b, &bp);
    if (st == VMT_E_NOTFOUND)
        return VMT_OK;
    if (removed)
        *removed = before - b->nbps;
    return st;
}

/* Rebuild a frame whose write has landed (no data, no single-step). */
static vmt_status refresh_pending(vmt_bpm *b, const vmt_event *ev, vmt_response *resp, vmt_bpm_verdict *vd,
                                  bool *done)
{
    *done = false;
    uint32_t vcpu = ev->vcpu;
    uint64_t *p = vmt_hmap_get(&b->refresh, &vcpu);
    if (!p)
        return VMT_OK;
    uint64_t val;
    memcpy(&val, p, sizeof val);
    uint64_t fk = val & ~(REFRESH_STEPPING | REFRESH_ALL);
    vmt_status st = VMT_OK;
    if (val & REFRESH_ALL) {
        size_t it = 0;
        void *kp, *vp;
        while (!st && vmt_hmap_next(&b->frames, &it, &kp, &vp)) {
            uint64_t key;
            bpm_frame f;
            memcpy(&key, kp, sizeof key);
            memcpy(&f, vp, sizeof f);
            if (f.shadow && bpm_fkey_view(key) == bpm_fkey_view(fk))
                st = bpm_ctl_refresh_frame(b, key); /* changes values in place only */
        }
    } else {
        st = bpm_ctl_refresh_frame(b, fk);
    }
    if (st)
        return st; /* keep the entry: retried at the next event */
    vmt_hmap_del(&b->refresh, &vcpu, NULL);
    if (val & REFRESH_STEPPING) {
        /* the stepped vCPU goes back to the breakpoint view */
        resp->actions |= VMT_RESP_SWITCH_VIEW;
        resp->new_view = bpm_fkey_view(fk);
        if (ev->kind == VMT_EVENT_SINGLESTEP) {
            vd->disposition = VMT_BPM_REFRESHED;
            *done = true;
        }
    }
    return VMT_OK;
}

/* After the instruction that is about to run in view 0 for this vCPU, the
 * shadow of fk (or, with many, every shadow of its view) must be rebuilt
 * from the written original before the vCPU runs on in the breakpoint view:
 * with SINGLESTEP the instruction is stepped in view 0 (SWITCH_VIEW 0 +
 * STEP) and the SINGLESTEP that follows rebuilds and switches back
 * (refresh_pending); without it *r is left as it is and the rebuild happens
 * at the vCPU's next event. */
static vmt_status schedule_refresh(vmt_bpm *b, const vmt_event *ev, uint64_t fk, bool many, vmt_response *r)
{
    uint32_t vcpu = ev->vcpu;
    uint64_t val = fk | (many ? REFRESH_ALL : 0);
    vmt_status st;
    if ((st = vmt_hmap_reserve(&b->refresh, vmt_hmap_count(&b->refresh) + 1)))
        return vmt_errbuf_set(&b->err, st, "bpm: out of memory");
    if (vmt_driver_has(b->d, VMT_CAP_SINGLESTEP)) {
        val |= REFRESH_STEPPING;
        *r = vmt_response_continue();
        r->actions = VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP;
        r->new_view = VMT_VIEW_DEFAULT;
    }
    void *slot;
    bool existed;
    (void)vmt_hmap_put(&b->refresh, &vcpu, &val, &slot, &existed); /* reserved */
    memcpy(slot, &val, sizeof val);
    return VMT_OK;
}

/* A shadowed frame whose original may have changed behind its back: it
 * loses execute in the breakpoint view (no rights at all: reads and writes
 * trapped already), so the breakpoint view cannot run a byte of it before
 * the manager has rebuilt its shadow (on the execute trap, any vCPU). */
static vmt_status revoke_execute(vmt_bpm *b, uint64_t fk)
{
    vmt_status st = vmt_session_restrict(b->s, bpm_fkey_view(fk), bpm_fkey_gfn(fk), VMT_OWNER_BPM, VMT_ACCESS_NONE);
    if (st)
        return vmt_errbuf_set(&b->err, st, "bpm: revoking execute on gfn 0x%llx (view %u) after a store into it: %s",
                              (unsigned long long)bpm_fkey_gfn(fk), bpm_fkey_view(fk), vmt_session_error(b->s));
    return VMT_OK;
}

/* The instruction stepped over in view 0 (a hit's displaced instruction, an
 * instruction that read a hidden page) may store into a shadowed frame: its
 * own page, another hooked page. Such a store does not trap in view 0, so
 * the manager makes sure the shadow is rebuilt before the breakpoint view
 * executes it again (the general fix: no path runs stale bytes):
 *   - a driver that traps execution in views: the response stays EMULATE
 *     (one exit) and the written frames lose execute in the breakpoint
 *     view; their first execution there traps, and that rebuilds them;
 *   - else, with SINGLESTEP: the instruction is stepped in view 0 and the
 *     SINGLESTEP rebuilds the shadow(s) (schedule_refresh);
 *   - else: rebuilt at the vCPU's next event.
 * Instructions that store nowhere near a shadow are answered as before. */
static vmt_status guard_displaced(vmt_bpm *b, const vmt_event *ev, vmt_pa code_pa, vmt_response *r)
{
    uint64_t fk;
    bool writes, many;
    vmt_status st = bpm_displaced_writes(b, ev, ev->view, code_pa, &writes, &fk, &many);
    if (st || !writes)
        return st;
    if (vmt_driver_caps(b->d)->trap_access & VMT_ACCESS_X) {
        if (!many) {
            st = revoke_execute(b, fk);
        } else {
            size_t it = 0;
            void *kp, *vp;
            while (!st && vmt_hmap_next(&b->frames, &it, &kp, &vp)) {
                uint64_t key;
                bpm_frame f;
                memcpy(&key, kp, sizeof key);
                memcpy(&f, vp, sizeof f);
                if (f.shadow && bpm_fkey_view(key) == ev->view)
                    st = revoke_execute(b, key);
            }
        }
    } else {
        st = schedule_refresh(b, ev, fk, many, r);
    }
    if (!st)
        b->displaced_refreshes++;
    return st;
}

/* The execute trap of a frame whose execute revoke_execute took: rebuild
 * its shadow, give execute back, and let the instruction run. */
static vmt_status on_revoked_execute(vmt_bpm *b, uint64_t fk, vmt_response *r)
{
    vmt_status st = bpm_ctl_refresh_frame(b, fk);
    if (!st)
        st = vmt_session_restrict(b->s, bpm_fkey_view(fk), bpm_fkey_gfn(fk), VMT_OWNER_BPM, VMT_ACCESS_X);
    if (st)
        return vmt_errbuf_set(&b->err, st, "bpm: rebuilding gfn 0x%llx (view %u) before it runs: %s",
                              (unsigned long long)bpm_fkey_gfn(fk), bpm_fkey_view(fk),
                              b->err.msg[0] ? b->err.msg : vmt_session_error(b->s));
    *r = vmt_response_continue();
    return VMT_OK;
}

/* A guest write into a shadowed frame. The instruction may store more than
 * the event reports (rep stos/movs, several stores), so the shadow is
 * rebuilt from the whole frame once the write has landed:
 *   - with SINGLESTEP: step the instruction in view 0 (SWITCH_VIEW 0 + STEP);
 *     the SINGLESTEP that follows rebuilds the shadow and switches back;
 *   - else: let it run in view 0 (EMULATE / FAST_STEP), mirror the reported
 *     bytes into the shadow at once (exact for a plain store), and rebuild
 *     the whole shadow at the vCPU's next event. */
static vmt_status on_write(vmt_bpm *b, const vmt_event *ev, uint64_t fk, vmt_response *resp)
{
    const vmt_mem_access_info *m = &ev->u.mem;
    uint32_t vcpu = ev->vcpu;
    uint64_t val = fk;
    vmt_status st;
    if ((st = vmt_hmap_reserve(&b->refresh, vmt_hmap_count(&b->refresh) + 1)))
        return vmt_errbuf_set(&b->err, st, "bpm: out of memory");
    uint64_t other;
    bool writes, many;
    if ((st = bpm_displaced_writes(b, ev, ev->view, VMT_PA_UNKNOWN, &writes, &other, &many)))
        return st;
    if (writes && (many || other != fk))
        val |= REFRESH_ALL; /* it stores into other shadowed frames too */
    if (vmt_driver_has(b->d, VMT_CAP_SINGLESTEP)) {
        val |= REFRESH_STEPPING;
        *resp = vmt_response_continue();
        resp->actions = VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP;
        resp->new_view = VMT_VIEW_DEFAULT;
    } else if (m->has_data && m->size >= 1 && m->size <= 8) {
        uint8_t bytes[8];
        memcpy(bytes, &m->value, sizeof bytes); /* little-endian host, as the guest */
        unsigned off = (unsigned)vmt_page_offset(m->gpa);
        unsigned here = m->size < VMT_PAGE_SIZE - off ? m->size : (unsigned)(VMT_PAGE_SIZE - off);
        st = bpm_ctl_patch_frame(b, fk, off, bytes, here);
        if (!st && here < m->size) /* the store crosses into the next frame: mirror its part too */
            st = bpm_ctl_patch_frame(b, bpm_fkey(ev->view, vmt_pa_to_gfn(m->gpa) + 1), 0, bytes + here,
                                     m->size - here);
        if (st)
            return st;
    }
    void *slot;
    bool existed;
    (void)vmt_hmap_put(&b->refresh, &vcpu, &val, &slot, &existed); /* reserved */
    memcpy(slot, &val, sizeof val);
    return VMT_OK;
}

/* Is the guest's instruction at pa a software breakpoint: INT3 (CC) or
 * INT $3 (CD 03)? Reads the unaltered frame (view 0). */
static vmt_status guest_traps_at(vmt_bpm *b, vmt_pa pa, bool *traps)
{
    uint8_t bytes[2] = { 0, 0 };
    size_t n = vmt_page_offset(pa) == VMT_PAGE_SIZE - 1 ? 1 : 2; /* CD 03 across a page end: not seen */
    vmt_status st = vmt_drv_read_phys(b->d, pa, bytes, n);
    if (st)
        return st;
    *traps = bytes[0] == BPM_INT3 || (bytes[0] == 0xCD && bytes[1] == 0x03);
    return VMT_OK;
}

static uint64_t *stale_slot(vmt_bpm *b, vmt_vcpu vcpu) { return &b->stale_rip[vcpu % BPM_MAX_VCPUS]; }

/* A breakpoint event at no site of ours. Only the shadow controller plants
 * INT3s, so with the others it is always the guest's own trap (CC, CD 03,
 * whatever the driver reports as a breakpoint): REINJECT. With shadows it is
 * the guest's own when its unaltered bytes at rip are CC or CD 03; else the
 * INT3 of a breakpoint removed since it executed (STALE: CONTINUE re-executes
 * the restored byte). A STALE twice in a row at one rip of one vCPU cannot
 * be a removed breakpoint (its byte was restored before the first CONTINUE):
 * the guest raised that trap itself, so it is reinjected, and no event
 * repeats forever. */
static vmt_status foreign_or_stale(vmt_bpm *b, const vmt_event *ev, vmt_bpm_verdict *vd, vmt_response *r)
{
    uint64_t *last = stale_slot(b, ev->vcpu);
    bool traps = true;
    if (b->ctl == VMT_BPM_CTL_SHADOW && *last != ev->regs.rip + 1) {
        vmt_pa gpa = vmt_gfn_to_pa(guest_gfn(b, vmt_pa_to_gfn(ev->u.bp.gpa))) | vmt_page_offset(ev->u.bp.gpa);
        vmt_status st = guest_traps_at(b, gpa, &traps);
        if (st)
            return vmt_errbuf_set(&b->err, st, "bpm: reading the bytes at rip 0x%llx (pa 0x%llx) failed: %s",
                                  (unsigned long long)ev->regs.rip, (unsigned long long)gpa, vmt_driver_error(b->d));
    }
    if (traps) {
        vd->disposition = VMT_BPM_FOREIGN;
        r->actions = VMT_RESP_REINJECT;
        b->foreign++;
        *last = 0;
    } else {
        vd->disposition = VMT_BPM_STALE;
        b->stale++;
        *last = ev->regs.rip + 1;
    }
    return VMT_OK;
}

vmt_status vmt_bpm_handle_event(vmt_bpm *b, const vmt_event *ev, vmt_response *resp, vmt_bpm_bp *hits,
                                size_t max_hits, vmt_bpm_verdict *verdict)
{
    vmt_bpm_verdict vd = { VMT_BPM_NOT_OURS, 0, false, false };
    vmt_response r = vmt_response_continue();
    vmt_status st = VMT_OK;
    if (resp)
        *resp = r;
    if (verdict)
        *verdict = vd;
    if (!ev || !resp)
        return vmt_errbuf_set(&b->err, VMT_E_INVAL, "bpm: handle_event needs an event and a response");
    if (hits == NULL)
        max_hits = 0;

    if (ev->kind != VMT_EVENT_BREAKPOINT)
        *stale_slot(b, ev->vcpu) = 0; /* progress since any stale event */
    bool done;
    vmt_response back = vmt_response_continue(); /* SWITCH_VIEW back after a step, if any */
    if ((st = refresh_pending(b, ev, &back, &vd, &done)))
        return st;
    if (done) {
        r = back;
        goto out;
    }

    ev_site es;
    switch (ev->kind) {
    case VMT_EVENT_BREAKPOINT: {
        if (event_site(b, ev, &es)) {
            site_hits(b, &es, hits, max_hits, &vd.nhits, &vd.alias);
            vd.disposition = VMT_BPM_HIT;
            *stale_slot(b, ev->vcpu) = 0;
            vd.double_trap = (es.site.flags & SITE_DOUBLE) != 0;
            if (vd.double_trap) {
                r.actions = VMT_RESP_REINJECT;
            } else {
                r = step_over(b);
                st = guard_displaced(b, ev, vmt_gfn_to_pa(es.gfn) | vmt_page_offset(es.va), &r);
            }
            b->hits++;
            break;
        }
        /* Not our site: the guest's own trap, or a stale event. */
        st = foreign_or_stale(b, ev, &vd, &r);
        break;
    }
    case VMT_EVENT_MEM_ACCESS: {
        const vmt_mem_access_info *m = &ev->u.mem;
        vmt_gfn gfn = vmt_pa_to_gfn(m->gpa);
        uint64_t fk = bpm_fkey(ev->view, gfn);
        bpm_frame f;
        if (ev->view > BPM_VIEW_MAX || !bpm_frame_get(b, fk, &f))
            break;
        if (b->ctl == VMT_BPM_CTL_SHADOW && (m->access & VMT_ACCESS_RW)) {
            vd.disposition = VMT_BPM_HIDDEN;
            r = step_over(b);
            b->hidden++;
            if (m->access & VMT_ACCESS_W)
                st = on_write(b, ev, fk, &r);
            else
                st = guard_displaced(b, ev, VMT_PA_UNKNOWN, &r); /* a read that stores elsewhere (rep movs) */
        } else if (b->ctl == VMT_BPM_CTL_SHADOW && (m->access & VMT_ACCESS_X) && f.shadow) {
            /* shadowed frames are execute-only: execute traps only after
             * guard_displaced revoked it */
            vd.disposition = VMT_BPM_REFRESHED;
            st = on_revoked_execute(b, fk, &r);
        } else if (b->ctl == VMT_BPM_CTL_EXEC && (m->access & VMT_ACCESS_X)) {
            r = step_over(b);
            if (event_site(b, ev, &es)) {
                site_hits(b, &es, hits, max_hits, &vd.nhits, &vd.alias);
                vd.disposition = VMT_BPM_HIT;
                b->hits++;
            } else {
                vd.disposition = VMT_BPM_HIDDEN;
                b->hidden++;
            }
        }
        break;
    }
    case VMT_EVENT_HW_BREAKPOINT:
        if (event_site(b, ev, &es)) {
            bpm_lookup_exec(b, es.view, es.va, es.root, es.gfn, hits, max_hits, &vd.nhits);
            vd.disposition = VMT_BPM_HIT;
            b->hits++;
        }
        break;
    default:
        break;
    }
    if ((back.actions & VMT_RESP_SWITCH_VIEW) && !(r.actions & VMT_RESP_SWITCH_VIEW)) {
        r.actions |= VMT_RESP_SWITCH_VIEW;
        r.new_view = back.new_view;
    }
out:
    if (st) {
        vd.disposition = VMT_BPM_NOT_OURS;
        r = vmt_response_continue();
    }
    *resp = r;
    if (verdict)
        *verdict = vd;
    return st;
}
