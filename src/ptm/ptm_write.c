/*
 * ptm/ptm_write.c — turning guest writes to monitored tables into events.
 *
 * Design: a trapped write is cut into pieces, one per 8-byte entry it
 * touches (a store that straddles two entries gives two). A piece is a byte
 * mask plus the bytes; only pieces of entries some watch uses are tracked.
 *
 * The monitor judges an entry by what the hardware would use: after EVERY
 * write — whole or partial, by any vCPU — the entry's new value is the value
 * memory holds with the written bytes applied, and every watch whose path
 * uses the entry is re-walked on it. A 4-byte store that changes only the
 * low half of an entry (and is never followed by the other half) therefore
 * moves the watch at once. Nothing is accumulated across writes, so no
 * event is ever held back and nothing stale can be reinstated later (a
 * resync walks memory as it is). Two halves written one after the other may
 * emit a transient event for the torn value in between; that is what a
 * walk by another vCPU could have used at that instant, and consumers
 * (the breakpoint manager) simply follow it. An entry whose value does not
 * change (duplicate writes, a failed CMPXCHG reported as the old value) is
 * counted as "no change"; it is still re-walked (4 reads) because the
 * watch may be behind memory (see entry_written), and emits nothing.
 *
 *  - with write data: the new value is computed now; the walker sees it
 *    through the overlay because the write has not landed yet (events come
 *    before the access); the response lets it land. When it lands only at
 *    a step (no EMULATE / FAST_STEP) the entries are also marked dirty and
 *    re-read at the SINGLESTEP, so a resync in between cannot leave the
 *    watch on the value memory held before the write.
 *  - without: the pieces become the vCPU's dirty entries (value before the
 *    write + byte mask) and the vCPU steps in view 0. At its SINGLESTEP the
 *    entries are read back (the value memory now holds, whatever wrote it),
 *    processed top level first, re-walked, and the vCPU switches back.
 *
 *  - reported after it landed (VMT_CAP_WRITE_AFTER, e.g. QEMU's watchpoints):
 *    memory already holds the new entries; they are read back (the data, if
 *    any, applied on top — idempotent), re-walked at once, CONTINUE.
 *
 * Limits: pieces are at most 8 bytes (the driver reports at most 8); a
 * write without a size is taken to cover gpa to the end of its entry.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ptm/ptm_internal.h"

typedef struct piece {
    vmt_pa entry_pa;
    uint8_t mask;      /* bytes of the entry the write covers */
    uint64_t bytes;    /* the written bytes at their entry offsets (data path) */
} piece;

static uint64_t byte_mask_bits(uint8_t mask)
{
    uint64_t bits = 0;
    for (unsigned i = 0; i < 8; i++)
        if (mask & (1u << i))
            bits |= 0xffULL << (8 * i);
    return bits;
}

/* Cut [gpa, gpa+size) into at most two entry pieces. */
static unsigned cut_pieces(vmt_pa gpa, unsigned size, uint64_t value, piece out[2])
{
    unsigned off = (unsigned)(gpa & 7);
    unsigned first = size < 8 - off ? size : 8 - off;
    out[0].entry_pa = gpa & ~7ULL;
    out[0].mask = (uint8_t)(((1u << first) - 1) << off);
    out[0].bytes = off ? value << (8 * off) : value;
    if (first == size)
        return 1;
    unsigned rest = size - first;
    out[1].entry_pa = out[0].entry_pa + 8;
    out[1].mask = (uint8_t)((1u << rest) - 1);
    out[1].bytes = value >> (8 * first);
    return 2;
}

static bool entry_watched(const vmt_ptm *p, vmt_pa entry_pa)
{
    return vmt_hmap_get(&p->entries, &entry_pa) != NULL;
}

static uint8_t entry_level(const vmt_ptm *p, vmt_pa entry_pa)
{
    ptm_link **head = vmt_hmap_get(&p->entries, &entry_pa);
    if (!head || !*head)
        return 0;
    const ptm_link *l = *head;
    return l->watch->path.level[l - l->watch->links];
}

/* The entry was written; `now` is the value the hardware uses from now on.
 * Every watch through it is re-walked on `now` even when the value did not
 * change (`before` is only for the statistics): another vCPU may have
 * changed the entry between this vCPU's trap and its step, or a resync may
 * have walked memory before the write landed; the re-walk compares with
 * each watch's own translation, so it emits nothing when nothing moved. */
static vmt_status entry_written(vmt_ptm *p, vmt_pa entry_pa, uint8_t mask, uint64_t before, uint64_t now)
{
    if (mask != 0xff)
        p->stats.partial_writes++;
    p->stats.entry_updates++;
    if (now == before)
        p->stats.no_change++;
    vmt_status st = ptm_overlay_push(p, entry_pa, now);
    if (st == VMT_OK)
        st = ptm_batch_add_entry(p, entry_pa);
    return st;
}

/* Step the vCPU in view 0; its SINGLESTEP switches back to ev->view. On
 * failure (no memory) resp is CONTINUE and the error is returned. */
static vmt_status step_response(vmt_ptm *p, const vmt_event *ev, vmt_response *resp)
{
    *resp = vmt_response_continue();
    ptm_step st = { ev->view };
    void *slot;
    bool existed;
    vmt_status s = vmt_hmap_put(&p->steps, &ev->vcpu, &st, &slot, &existed);
    if (s != VMT_OK)
        return vmt_errbuf_set(&p->err, s, "ptm: out of memory for a step");
    resp->actions = VMT_RESP_STEP | VMT_RESP_SWITCH_VIEW;
    resp->new_view = VMT_VIEW_DEFAULT;
    return VMT_OK;
}

/* Fill resp so that a write the monitor has already accounted for lands:
 * one exit with EMULATE, else a fast step in view 0, else a step in view 0
 * whose SINGLESTEP re-reads the entries (handle_write marked them dirty)
 * and switches back. */
static vmt_status land_response(vmt_ptm *p, const vmt_event *ev, vmt_response *resp)
{
    *resp = vmt_response_continue();
    if (p->caps & VMT_CAP_EMULATE)
        return VMT_OK;
    if (p->caps & VMT_CAP_FAST_STEP) {
        resp->actions = VMT_RESP_FAST_STEP;
        resp->step_view = VMT_VIEW_DEFAULT;
        return VMT_OK;
    }
    return step_response(p, ev, resp);
}

/* Write with data: fold now, re-walk with the new entries overlaid. */
static vmt_status write_with_data(vmt_ptm *p, const vmt_event *ev, const piece *pcs, unsigned n)
{
    uint64_t before[2] = { 0, 0 };
    for (unsigned i = 0; i < n; i++) {
        if (!entry_watched(p, pcs[i].entry_pa))
            continue;
        vmt_status st = ptm_read_entry(p, pcs[i].entry_pa, &before[i]);
        if (st != VMT_OK)
            return st;
    }
    p->stamp++;
    p->nbatch = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!entry_watched(p, pcs[i].entry_pa))
            continue;
        uint64_t bits = byte_mask_bits(pcs[i].mask);
        uint64_t now = (before[i] & ~bits) | (pcs[i].bytes & bits);
        vmt_status st = entry_written(p, pcs[i].entry_pa, pcs[i].mask, before[i], now);
        if (st != VMT_OK)
            return st;
    }
    if (p->nbatch == 0)
        return VMT_OK;
    return ptm_rewalk_batch(p, ev->vcpu);
}

/* Write without data: remember the entries and their values before. */
static vmt_status write_mark_dirty(vmt_ptm *p, const vmt_event *ev, const piece *pcs, unsigned n)
{
    vmt_status st = vmt_hmap_reserve(&p->dirty, vmt_hmap_count(&p->dirty) + n);
    if (st != VMT_OK)
        return vmt_errbuf_set(&p->err, st, "ptm: out of memory for dirty entries");
    uint64_t before[2] = { 0, 0 };
    for (unsigned i = 0; i < n; i++) {
        if (!entry_watched(p, pcs[i].entry_pa))
            continue;
        st = ptm_read_entry(p, pcs[i].entry_pa, &before[i]);
        if (st != VMT_OK)
            return st;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!entry_watched(p, pcs[i].entry_pa))
            continue;
        ptm_vcpu_entry k = ptm_make_vcpu_entry(ev->vcpu, pcs[i].entry_pa);
        ptm_dirty nd = { before[i], pcs[i].mask, entry_level(p, pcs[i].entry_pa) };
        void *slot;
        bool existed;
        vmt_hmap_put(&p->dirty, &k, &nd, &slot, &existed); /* reserved */
        if (existed)
            ((ptm_dirty *)slot)->mask |= pcs[i].mask; /* keep the oldest `before` */
    }
    return VMT_OK;
}

typedef struct dirty_item {
    vmt_pa entry_pa;
    ptm_dirty d;
} dirty_item;

static int cmp_dirty_item(const void *a, const void *b)
{
    const dirty_item *x = a, *y = b;
    if (x->d.level != y->d.level)
        return x->d.level > y->d.level ? -1 : 1; /* top level first */
    return x->entry_pa < y->entry_pa ? -1 : x->entry_pa > y->entry_pa;
}

/* The vCPU's SINGLESTEP: read back its dirty entries, top level first. */
static vmt_status process_dirty(vmt_ptm *p, vmt_vcpu vcpu)
{
    size_t n = 0, cap = vmt_hmap_count(&p->dirty);
    dirty_item *items = cap ? malloc(cap * sizeof *items) : NULL;
    if (cap && !items)
        return vmt_errbuf_set(&p->err, VMT_E_NOMEM, "ptm: out of memory for dirty entries");
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->dirty, &it, &k, &v)) {
        const ptm_vcpu_entry *key = k;
        if (key->vcpu != vcpu)
            continue;
        items[n].entry_pa = key->entry_pa;
        items[n].d = *(ptm_dirty *)v;
        n++;
    }
    if (n > 1)
        qsort(items, n, sizeof *items, cmp_dirty_item);
    for (size_t i = 0; i < n; i++) {
        ptm_vcpu_entry key = ptm_make_vcpu_entry(vcpu, items[i].entry_pa);
        vmt_hmap_del(&p->dirty, &key, NULL);
    }
    p->stamp++;
    p->nbatch = 0;
    vmt_status first = VMT_OK;
    for (size_t i = 0; i < n; i++) {
        uint64_t now;
        vmt_status st = ptm_read_entry(p, items[i].entry_pa, &now);
        if (st == VMT_OK)
            st = entry_written(p, items[i].entry_pa, items[i].d.mask, items[i].d.before, now);
        if (st != VMT_OK && first == VMT_OK)
            first = st;
    }
    free(items);
    if (p->nbatch) {
        vmt_status st = ptm_rewalk_batch(p, vcpu);
        if (st != VMT_OK && first == VMT_OK)
            first = st;
    }
    return first;
}

/* A driver that reports writes after they landed (VMT_CAP_WRITE_AFTER): memory
 * already holds the new entries. Each watched entry the write covers is read
 * back (with data, the data is applied on top: idempotent, since memory has
 * it) and its watches re-walked at once; the answer is CONTINUE, no step.
 * The value before the write is gone, so such writes are not judged "no
 * change" in the statistics (writes_after counts them). */
static vmt_status write_after(vmt_ptm *p, const vmt_event *ev, const piece *pcs, unsigned n, bool data,
                              vmt_response *resp)
{
    *resp = vmt_response_continue();
    p->stats.writes_after++;
    p->stamp++;
    p->nbatch = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!entry_watched(p, pcs[i].entry_pa))
            continue;
        uint64_t mem;
        vmt_status st = ptm_read_entry(p, pcs[i].entry_pa, &mem);
        if (st != VMT_OK)
            return st;
        uint64_t bits = data ? byte_mask_bits(pcs[i].mask) : 0;
        uint64_t now = (mem & ~bits) | (pcs[i].bytes & bits);
        st = entry_written(p, pcs[i].entry_pa, pcs[i].mask, ~now, now);
        if (st != VMT_OK)
            return st;
    }
    return p->nbatch ? ptm_rewalk_batch(p, ev->vcpu) : VMT_OK;
}

static vmt_status handle_write(vmt_ptm *p, const vmt_event *ev, vmt_response *resp)
{
    const vmt_mem_access_info *m = &ev->u.mem;
    bool data = m->has_data && m->size >= 1 && m->size <= 8;
    p->stats.writes++;
    piece pcs[2];
    unsigned n;
    if (data) {
        uint64_t value = m->size == 8 ? m->value : m->value & ((1ULL << (8 * m->size)) - 1);
        n = cut_pieces(m->gpa, m->size, value, pcs);
    } else {
        /* Unknown size: the write covers gpa up to the end of its entry. */
        unsigned size = m->size >= 1 && m->size <= 8 ? m->size : 8 - (unsigned)(m->gpa & 7);
        n = cut_pieces(m->gpa, size, 0, pcs);
    }
    vmt_status st;
    if (p->caps & VMT_CAP_WRITE_AFTER) {
        if (data)
            p->stats.writes_with_data++;
        return write_after(p, ev, pcs, n, data, resp);
    }
    if (data) {
        p->stats.writes_with_data++;
        /* Without EMULATE or FAST_STEP the write lands only at the step:
         * also re-read the entries then (from their value before the write,
         * read here before the overlay has the new one), so whatever
         * happened in between — a resync walking memory that did not have
         * the write yet, another vCPU's store — the watch ends on what
         * memory holds after the write. */
        bool lands_at_step = !(p->caps & (VMT_CAP_EMULATE | VMT_CAP_FAST_STEP));
        st = lands_at_step ? write_mark_dirty(p, ev, pcs, n) : VMT_OK;
        if (st == VMT_OK)
            st = write_with_data(p, ev, pcs, n);
        vmt_status rs = land_response(p, ev, resp);
        if (st == VMT_OK)
            st = rs;
    } else {
        p->stats.writes_stepped++;
        st = write_mark_dirty(p, ev, pcs, n);
        vmt_status rs = step_response(p, ev, resp);
        if (st == VMT_OK)
            st = rs;
    }
    return st;
}

vmt_status vmt_ptm_handle_event(vmt_ptm *p, const vmt_event *ev, vmt_response *resp, vmt_ptm_sink sink,
                                void *sink_ctx, bool *handled)
{
    if (handled)
        *handled = false;
    if (!p || !ev || !resp || !handled)
        return VMT_E_INVAL;
    vmt_status st;
    size_t mark = p->noverlay; /* 0 unless called from inside a sink */
    if (ev->kind == VMT_EVENT_MEM_ACCESS && (ev->u.mem.access & VMT_ACCESS_W) &&
        vmt_ptm_owns(p, ev->view, vmt_pa_to_gfn(ev->u.mem.gpa))) {
        *handled = true;
        ptm_retry_zombies(p);
        st = handle_write(p, ev, resp);
    } else if (ev->kind == VMT_EVENT_SINGLESTEP && vmt_ptm_stepping(p, ev->vcpu)) {
        *handled = true;
        ptm_retry_zombies(p);
        ptm_step step = *(ptm_step *)vmt_hmap_get(&p->steps, &ev->vcpu);
        st = process_dirty(p, ev->vcpu);
        vmt_hmap_del(&p->steps, &ev->vcpu, NULL);
        *resp = vmt_response_continue();
        resp->actions = VMT_RESP_SWITCH_VIEW;
        resp->new_view = step.return_view;
    } else {
        return VMT_OK;
    }
    p->nbatch = 0;
    /* The overlay stays while the sink runs: a write that has not landed
     * yet is what a vmt_ptm_monitor() from the sink must see. */
    ptm_flush_events(p, sink, sink_ctx);
    p->noverlay = mark;
    return st;
}
