/*
 * ptm/ptm.c — watches, their paths and the protected table pages.
 *
 * Design: a watch stores the path its VA's last walk read (entry addresses,
 * top level first) and the translation that walk produced. Every path step
 * is linked into the entry index (entry_pa -> list of steps) so a write to
 * an entry finds the watches it can affect, and counted in the table map
 * ((view, gfn) -> refs) so a table page shared by many watches is restricted
 * once and released when the last step using it goes. Moving a watch to a
 * new walk (ptm_apply) first acquires the new path's pages, then releases
 * the old ones, so a page on both paths is never unprotected in between; an
 * acquire failure undoes what it did and leaves the watch unchanged. Events
 * come only from comparing a watch's stored translation with its new walk,
 * so they cannot be duplicated or lost by the order entries are processed.
 *
 * The maps and their invariants are described in ptm_internal.h; write
 * handling is in ptm_write.c, the checker in ptm_check.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ptm/ptm_internal.h"

/* ---- scratch buffers ---- */

static vmt_status grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return VMT_OK;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *nb = realloc(*buf, n * elem);
    if (!nb)
        return VMT_E_NOMEM;
    *buf = nb;
    *cap = n;
    return VMT_OK;
}

vmt_status ptm_overlay_push(vmt_ptm *p, vmt_pa entry_pa, uint64_t value)
{
    vmt_status st = grow((void **)&p->overlay, &p->overlay_cap, p->noverlay + 1, sizeof *p->overlay);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: out of memory for the write overlay");
    p->overlay[p->noverlay].entry_pa = entry_pa;
    p->overlay[p->noverlay].value = value;
    p->noverlay++;
    return VMT_OK;
}

/* ---- reading guest tables ---- */

/* Reads guest memory (view 0) with 8-byte driver reads — cheaper than the
 * session's frame cache, which is flushed after every guest run and would
 * load whole frames — refuses frames past guest RAM (a hostile PFN) and
 * patches in the overlay. Items pushed first win. */
static vmt_status overlay_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    vmt_ptm *p = ctx;
    if (len == 0)
        return VMT_OK;
    if (len > VMT_PAGE_SIZE || vmt_pa_to_gfn(pa) >= p->ram_frames ||
        vmt_pa_to_gfn(pa + len - 1) >= p->ram_frames || pa + len < pa)
        return VMT_E_RANGE;
    vmt_status st = vmt_drv_read_phys(p->drv, pa, buf, len);
    if (st != VMT_OK)
        return st;
    for (size_t i = p->noverlay; i-- > 0;) {
        const ptm_overlay_item *it = &p->overlay[i];
        if (it->entry_pa + 8 <= pa || it->entry_pa >= pa + len)
            continue;
        for (unsigned b = 0; b < 8; b++) {
            vmt_pa at = it->entry_pa + b;
            if (at >= pa && at < pa + len)
                ((uint8_t *)buf)[at - pa] = (uint8_t)(it->value >> (8 * b));
        }
    }
    return VMT_OK;
}

vmt_status ptm_read_entry(vmt_ptm *p, vmt_pa entry_pa, uint64_t *value)
{
    vmt_status st = overlay_read(p, entry_pa, value, sizeof *value);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: reading the entry at pa 0x%" PRIx64 " failed: %s%s%s",
                              entry_pa, vmt_strerror(st), st == VMT_E_RANGE ? "" : ": ",
                              st == VMT_E_RANGE ? "" : vmt_driver_error(p->drv));
    return VMT_OK;
}

static bool is_hostile(vmt_status st)
{
    return st == VMT_E_BAD_PT || st == VMT_E_RANGE;
}

vmt_status ptm_walk(vmt_ptm *p, vmt_addr_ctx ctx, ptm_result *r, char *why, size_t why_len)
{
    vmt_phys_reader reader = { overlay_read, p };
    vmt_paging_config cfg = *vmt_session_paging(p->s);
    vmt_walk wk;
    char msg[200] = "";
    vmt_status st = vmt_paging_walk(&reader, &cfg, ctx.root, ctx.va, &wk, msg, sizeof msg);
    memset(r, 0, sizeof *r);
    r->path.depth = wk.nsteps <= PTM_MAX_DEPTH ? wk.nsteps : PTM_MAX_DEPTH;
    for (unsigned i = 0; i < r->path.depth; i++) {
        r->path.level[i] = wk.steps[i].level;
        r->path.entry_pa[i] = wk.steps[i].entry_pa;
    }
    if (st == VMT_OK && vmt_pa_to_gfn(wk.pa) >= p->ram_frames) {
        snprintf(msg, sizeof msg, "paging: va 0x%" PRIx64 " maps pa 0x%" PRIx64 ", past guest RAM (%" PRIu64 " frames)",
                 ctx.va, wk.pa, p->ram_frames);
        st = VMT_E_RANGE;
    }
    r->status = st;
    if (st == VMT_OK) {
        r->pa = wk.pa;
        r->page_size = wk.page_size;
    }
    if (why)
        vmt_why(why, why_len, "%s", msg);
    if (st == VMT_OK || st == VMT_E_NOT_PRESENT)
        return VMT_OK;
    if (is_hostile(st)) {
        p->stats.hostile++;
        vmt_errbuf_set(&p->err, st, "ptm: hostile tables for va 0x%" PRIx64 " root 0x%" PRIx64 ": %s", ctx.va,
                       ctx.root, msg);
        return VMT_OK;
    }
    return vmt_errbuf_set(&p->err, st, "ptm: walking va 0x%" PRIx64 " root 0x%" PRIx64 " failed: %s (%s)", ctx.va,
                          ctx.root, msg, vmt_driver_error(p->drv));
}

/* ---- protected table pages ---- */

static vmt_status table_ref(vmt_ptm *p, vmt_view view, vmt_gfn gfn)
{
    ptm_table_key k = ptm_make_table_key(view, gfn);
    ptm_table *t = vmt_hmap_get(&p->tables, &k);
    if (t) {
        if (t->refs == 0)
            p->zombies--; /* still restricted: adopt it */
        t->refs++;
        return VMT_OK;
    }
    vmt_status st = vmt_session_restrict(p->s, view, gfn, VMT_OWNER_PTM, VMT_ACCESS_RX);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: write-protecting table gfn 0x%" PRIx64 " in view %u failed: %s",
                              gfn, view, vmt_session_error(p->s));
    ptm_table nt = { 1 };
    void *slot;
    bool existed;
    st = vmt_hmap_put(&p->tables, &k, &nt, &slot, &existed);
    if (st != VMT_OK) {
        if (vmt_session_unrestrict(p->s, view, gfn, VMT_OWNER_PTM) != VMT_OK)
            return vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "ptm: out of memory and could not undo a restriction");
        return vmt_errbuf_set(&p->err, st, "ptm: out of memory for the table map");
    }
    return VMT_OK;
}

static void table_unref(vmt_ptm *p, vmt_view view, vmt_gfn gfn)
{
    ptm_table_key k = ptm_make_table_key(view, gfn);
    ptm_table *t = vmt_hmap_get(&p->tables, &k);
    if (!t || t->refs == 0)
        return; /* cannot happen: the checker reports it */
    if (--t->refs > 0)
        return;
    vmt_status st = vmt_session_unrestrict(p->s, view, gfn, VMT_OWNER_PTM);
    if (st == VMT_OK) {
        vmt_hmap_del(&p->tables, &k, NULL);
        return;
    }
    p->zombies++;
    vmt_errbuf_set(&p->err, st, "ptm: releasing table gfn 0x%" PRIx64 " in view %u failed (retried later): %s", gfn,
                   view, vmt_session_error(p->s));
}

void ptm_retry_zombies(vmt_ptm *p)
{
    if (p->zombies == 0)
        return;
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->tables, &it, &k, &v)) {
        ptm_table_key key;
        memcpy(&key, k, sizeof key);
        if (((ptm_table *)v)->refs != 0)
            continue;
        if (vmt_session_unrestrict(p->s, key.view, key.gfn, VMT_OWNER_PTM) != VMT_OK)
            continue;
        vmt_hmap_del(&p->tables, &key, NULL);
        p->zombies--;
        it = 0; /* the map changed: start over (zombies are rare) */
    }
}

/* ---- entry index ---- */

static void link_step(vmt_ptm *p, ptm_link *l, vmt_pa entry_pa)
{
    void *slot;
    bool existed;
    ptm_link *none = NULL;
    /* Room was reserved by the caller: put cannot fail. */
    if (vmt_hmap_put(&p->entries, &entry_pa, &none, &slot, &existed) != VMT_OK)
        return;
    ptm_link **head = slot;
    l->prev = NULL;
    l->next = *head;
    if (*head)
        (*head)->prev = l;
    *head = l;
}

static void unlink_step(vmt_ptm *p, ptm_link *l, vmt_pa entry_pa)
{
    if (l->prev) {
        l->prev->next = l->next;
    } else {
        ptm_link **head = vmt_hmap_get(&p->entries, &entry_pa);
        if (head) {
            if (l->next)
                *head = l->next;
            else
                vmt_hmap_del(&p->entries, &entry_pa, NULL);
        }
    }
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

/* ---- moving a watch to a new walk ---- */

static void release_path(vmt_ptm *p, ptm_watch *w)
{
    for (unsigned i = 0; i < w->path.depth; i++) {
        table_unref(p, w->view, vmt_pa_to_gfn(w->path.entry_pa[i]));
        unlink_step(p, &w->links[i], w->path.entry_pa[i]);
    }
    w->path.depth = 0;
}

static void queue_event(vmt_ptm *p, const ptm_watch *w, bool was_present, vmt_pa old_pa, vmt_vcpu vcpu)
{
    vmt_ptm_event ev = { 0 };
    if (!was_present && w->present)
        ev.kind = VMT_PTM_PAGE_IN;
    else if (was_present && !w->present)
        ev.kind = VMT_PTM_PAGE_OUT;
    else if (was_present && w->present && old_pa != w->pa)
        ev.kind = VMT_PTM_REMAP;
    else
        return;
    ev.ctx = w->ctx;
    ev.view = w->view;
    ev.tag = w->tag;
    ev.old_pa = was_present ? old_pa : 0;
    ev.new_pa = w->present ? w->pa : 0;
    ev.page_size = w->present ? w->page_size : 0;
    ev.vcpu = vcpu;
    p->evq[p->nev++] = ev; /* room reserved by ptm_apply */
    p->stats.events[ev.kind]++;
}

static bool same_path(const ptm_path *a, const ptm_path *b)
{
    if (a->depth != b->depth)
        return false;
    for (unsigned i = 0; i < a->depth; i++)
        if (a->entry_pa[i] != b->entry_pa[i] || a->level[i] != b->level[i])
            return false;
    return true;
}

vmt_status ptm_apply(vmt_ptm *p, ptm_watch *w, const ptm_result *r, vmt_vcpu vcpu, bool emit)
{
    /* Reserve everything that could fail later, before changing anything. */
    vmt_status st = grow((void **)&p->evq, &p->ev_cap, p->nev + 1, sizeof *p->evq);
    bool moved = !same_path(&w->path, &r->path) || w->path.depth == 0;
    if (st == VMT_OK && moved)
        st = vmt_hmap_reserve(&p->tables, vmt_hmap_count(&p->tables) + r->path.depth);
    if (st == VMT_OK && moved)
        st = vmt_hmap_reserve(&p->entries, vmt_hmap_count(&p->entries) + r->path.depth);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: out of memory");
    if (!moved)
        goto translation; /* the usual leaf change: same tables, nothing to move */

    for (unsigned i = 0; i < r->path.depth; i++) {
        st = table_ref(p, w->view, vmt_pa_to_gfn(r->path.entry_pa[i]));
        if (st != VMT_OK) {
            while (i-- > 0)
                table_unref(p, w->view, vmt_pa_to_gfn(r->path.entry_pa[i]));
            return st;
        }
    }
    release_path(p, w);
    w->path = r->path;
    for (unsigned i = 0; i < w->path.depth; i++) {
        w->links[i].watch = w;
        link_step(p, &w->links[i], w->path.entry_pa[i]);
    }
translation:;
    bool was_present = w->present;
    vmt_pa old_pa = w->pa;
    w->walk_status = r->status;
    w->present = r->status == VMT_OK;
    w->pa = w->present ? r->pa : 0;
    w->page_size = w->present ? r->page_size : 0;
    if (emit)
        queue_event(p, w, was_present, old_pa, vcpu);
    return VMT_OK;
}

vmt_status ptm_batch_add_entry(vmt_ptm *p, vmt_pa entry_pa)
{
    ptm_link **head = vmt_hmap_get(&p->entries, &entry_pa);
    if (!head)
        return VMT_OK;
    for (ptm_link *l = *head; l; l = l->next) {
        ptm_watch *w = l->watch;
        if (w->stamp == p->stamp)
            continue;
        vmt_status st = grow((void **)&p->batch, &p->batch_cap, p->nbatch + 1, sizeof *p->batch);
        if (st != VMT_OK)
            return vmt_errbuf_set(&p->err, st, "ptm: out of memory for the re-walk batch");
        w->stamp = p->stamp;
        p->batch[p->nbatch++] = w;
    }
    return VMT_OK;
}

vmt_status ptm_rewalk_batch(vmt_ptm *p, vmt_vcpu vcpu)
{
    vmt_status first = VMT_OK;
    for (size_t i = 0; i < p->nbatch; i++) {
        ptm_watch *w = p->batch[i];
        ptm_result r;
        p->stats.rewalks++;
        vmt_status st = ptm_walk(p, w->ctx, &r, NULL, 0);
        if (st == VMT_OK)
            st = ptm_apply(p, w, &r, vcpu, true);
        if (st != VMT_OK && first == VMT_OK)
            first = st;
    }
    p->nbatch = 0;
    if (first != VMT_OK)
        p->err.status = first;
    return first;
}

void ptm_flush_events(vmt_ptm *p, vmt_ptm_sink sink, void *sink_ctx)
{
    /* Copy first: a sink may call back into the monitor and queue more. */
    size_t n = p->nev;
    if (n == 0)
        return;
    vmt_ptm_event *evs = malloc(n * sizeof *evs);
    if (!evs) {
        p->nev = 0;
        vmt_errbuf_set(&p->err, VMT_E_NOMEM, "ptm: out of memory delivering %zu events", n);
        return;
    }
    memcpy(evs, p->evq, n * sizeof *evs);
    p->nev = 0;
    for (size_t i = 0; sink && i < n; i++)
        sink(sink_ctx, &evs[i]);
    free(evs);
}

/* ---- public API ---- */

vmt_status vmt_ptm_create(vmt_session *s, vmt_ptm **out)
{
    if (!s || !out)
        return VMT_E_INVAL;
    *out = NULL;
    vmt_driver *d = vmt_session_driver(s);
    const vmt_caps *caps = vmt_driver_caps(d);
    if (!(caps->flags & VMT_CAP_VIEW_PERM) || !(caps->trap_access & VMT_ACCESS_W))
        return VMT_E_NOTSUP;
    bool can_step = (caps->flags & VMT_CAP_SINGLESTEP) != 0;
    bool can_land = (caps->flags & (VMT_CAP_EMULATE | VMT_CAP_FAST_STEP)) != 0;
    bool landed = (caps->flags & VMT_CAP_WRITE_AFTER) != 0; /* reported after the store: nothing to land */
    if (!can_step && !landed && !((caps->flags & VMT_CAP_WRITE_DATA) && can_land))
        return VMT_E_NOTSUP;
    vmt_ptm *p = calloc(1, sizeof *p);
    if (!p)
        return VMT_E_NOMEM;
    p->s = s;
    p->drv = d;
    p->ram_frames = caps->ram_frames;
    p->caps = caps->flags;
    vmt_hmap_init(&p->watches, sizeof(ptm_watch_key), sizeof(ptm_watch *));
    vmt_hmap_init(&p->tables, sizeof(ptm_table_key), sizeof(ptm_table));
    vmt_hmap_init(&p->entries, sizeof(vmt_pa), sizeof(ptm_link *));
    vmt_hmap_init(&p->dirty, sizeof(ptm_vcpu_entry), sizeof(ptm_dirty));
    vmt_hmap_init(&p->steps, sizeof(vmt_vcpu), sizeof(ptm_step));
    *out = p;
    return VMT_OK;
}

void vmt_ptm_destroy(vmt_ptm *p)
{
    if (!p)
        return;
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->watches, &it, &k, &v)) {
        ptm_watch *w = *(ptm_watch **)v;
        release_path(p, w);
        free(w);
    }
    it = 0;
    while (vmt_hmap_next(&p->tables, &it, &k, &v)) {
        ptm_table_key key;
        memcpy(&key, k, sizeof key);
        vmt_session_unrestrict(p->s, key.view, key.gfn, VMT_OWNER_PTM);
    }
    vmt_hmap_free(&p->watches);
    vmt_hmap_free(&p->tables);
    vmt_hmap_free(&p->entries);
    vmt_hmap_free(&p->dirty);
    vmt_hmap_free(&p->steps);
    free(p->overlay);
    free(p->batch);
    free(p->evq);
    free(p);
}

const char *vmt_ptm_error(const vmt_ptm *p)
{
    return p ? p->err.msg : "";
}

vmt_status vmt_ptm_monitor(vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag)
{
    if (!p)
        return VMT_E_INVAL;
    ctx.root &= VMT_CR3_ADDR_MASK;
    /* View 0 is where writes land (steps, emulation) — except on a driver
     * that reports writes after they landed (VMT_CAP_WRITE_AFTER), which
     * may have no other view. */
    if (view == VMT_VIEW_INVALID || (view == VMT_VIEW_DEFAULT && !(p->caps & VMT_CAP_WRITE_AFTER)))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL,
                              "ptm: cannot monitor in view %u (view 0 is the unaltered view)", view);
    if (!vmt_va_is_canonical(ctx.va, vmt_session_paging(p->s)->levels))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "ptm: va 0x%" PRIx64 " is not canonical", ctx.va);
    ptm_retry_zombies(p);
    ptm_watch_key key = ptm_make_watch_key(ctx, view, tag);
    if (vmt_hmap_get(&p->watches, &key))
        return vmt_errbuf_set(&p->err, VMT_E_EXISTS, "ptm: va 0x%" PRIx64 " root 0x%" PRIx64
                              " view %u tag %" PRIu64 " is already monitored", ctx.va, ctx.root, view, tag);
    ptm_result r;
    /* Called from a sink, the event's writes that have not landed yet stay
     * in the overlay below `mark`. */
    size_t mark = p->noverlay;
    char why[200];
    vmt_status st = ptm_walk(p, ctx, &r, why, sizeof why);
    p->noverlay = mark;
    if (st != VMT_OK)
        return st;
    if (is_hostile(r.status))
        return vmt_errbuf_set(&p->err, r.status, "ptm: not monitoring va 0x%" PRIx64 " root 0x%" PRIx64 ": %s",
                              ctx.va, ctx.root, why);
    st = vmt_hmap_reserve(&p->watches, vmt_hmap_count(&p->watches) + 1);
    ptm_watch *w = st == VMT_OK ? calloc(1, sizeof *w) : NULL;
    if (!w)
        return vmt_errbuf_set(&p->err, VMT_E_NOMEM, "ptm: out of memory for a watch");
    w->ctx = ctx;
    w->view = view;
    w->tag = tag;
    st = ptm_apply(p, w, &r, VMT_VCPU_ALL, false);
    if (st != VMT_OK) {
        free(w);
        return st;
    }
    void *slot;
    bool existed;
    vmt_hmap_put(&p->watches, &key, &w, &slot, &existed); /* reserved: cannot fail */
    p->stats.watches = vmt_hmap_count(&p->watches);
    return VMT_OK;
}

vmt_status vmt_ptm_unmonitor(vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag)
{
    if (!p)
        return VMT_E_INVAL;
    ctx.root &= VMT_CR3_ADDR_MASK;
    ptm_retry_zombies(p);
    ptm_watch_key key = ptm_make_watch_key(ctx, view, tag);
    ptm_watch **slot = vmt_hmap_get(&p->watches, &key);
    if (!slot)
        return vmt_errbuf_set(&p->err, VMT_E_NOTFOUND, "ptm: va 0x%" PRIx64 " root 0x%" PRIx64
                              " view %u tag %" PRIu64 " is not monitored", ctx.va, ctx.root, view, tag);
    ptm_watch *w = *slot;
    vmt_hmap_del(&p->watches, &key, NULL);
    release_path(p, w);
    free(w);
    p->stats.watches = vmt_hmap_count(&p->watches);
    return VMT_OK;
}

vmt_status vmt_ptm_query(const vmt_ptm *p, vmt_addr_ctx ctx, vmt_view view, uint64_t tag, vmt_ptm_watch_info *out)
{
    if (!p || !out)
        return VMT_E_INVAL;
    ctx.root &= VMT_CR3_ADDR_MASK;
    ptm_watch_key key = ptm_make_watch_key(ctx, view, tag);
    ptm_watch **slot = vmt_hmap_get(&p->watches, &key);
    if (!slot)
        return VMT_E_NOTFOUND;
    const ptm_watch *w = *slot;
    memset(out, 0, sizeof *out);
    out->present = w->present;
    out->pa = w->pa;
    out->page_size = w->page_size;
    out->depth = w->path.depth;
    for (unsigned i = 0; i < w->path.depth; i++)
        out->tables[i] = vmt_pa_to_gfn(w->path.entry_pa[i]);
    out->walk_status = w->walk_status;
    return VMT_OK;
}

bool vmt_ptm_owns(const vmt_ptm *p, vmt_view view, vmt_gfn gfn)
{
    ptm_table_key k = ptm_make_table_key(view, gfn);
    return p && vmt_hmap_get(&p->tables, &k) != NULL;
}

bool vmt_ptm_stepping(const vmt_ptm *p, vmt_vcpu vcpu)
{
    return p && vmt_hmap_get(&p->steps, &vcpu) != NULL;
}

vmt_status vmt_ptm_resync(vmt_ptm *p, vmt_ptm_sink sink, void *sink_ctx)
{
    if (!p)
        return VMT_E_INVAL;
    ptm_retry_zombies(p);
    p->stamp++;
    p->nbatch = 0;
    size_t mark = p->noverlay; /* see vmt_ptm_monitor */
    vmt_status st = grow((void **)&p->batch, &p->batch_cap, vmt_hmap_count(&p->watches), sizeof *p->batch);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: out of memory for the re-walk batch");
    /* Memory as it is now: nothing the monitor remembers overrides it. */
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->watches, &it, &k, &v)) {
        ptm_watch *w = *(ptm_watch **)v;
        w->stamp = p->stamp;
        p->batch[p->nbatch++] = w;
    }
    st = ptm_rewalk_batch(p, VMT_VCPU_ALL);
    p->noverlay = mark;
    ptm_flush_events(p, sink, sink_ctx);
    return st;
}

void vmt_ptm_get_stats(const vmt_ptm *p, vmt_ptm_stats *out)
{
    if (!p || !out)
        return;
    *out = p->stats;
    out->watches = vmt_hmap_count(&p->watches);
    out->table_pages = vmt_hmap_count(&p->tables);
}

const char *vmt_ptm_event_kind_name(vmt_ptm_event_kind kind)
{
    switch (kind) {
    case VMT_PTM_PAGE_IN:
        return "page-in";
    case VMT_PTM_PAGE_OUT:
        return "page-out";
    case VMT_PTM_REMAP:
        return "remap";
    }
    return "?";
}
