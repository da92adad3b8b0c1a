/*
 * ptm/ptm_check.c — the page-table monitor's invariant checker.
 *
 * Recomputes from the watches what the other maps must hold (see
 * ptm_internal.h) and compares:
 *  - each watch: path depth 0..5, levels strictly decreasing, the VA present
 *    exactly when its walk status is VMT_OK (with a 4K/2M/1G page size), a
 *    path of depth 0 only after a hostile walk, its key matches its fields;
 *  - tables: refs equal the number of path steps on that (view, gfn); refs 0
 *    only for the counted zombies; every table with refs is write-protected
 *    (the arbiter's effective rights lack W);
 *  - the arbiter (read through core's internal session layout): the pages
 *    where VMT_OWNER_PTM holds a restriction are exactly the table map's,
 *    each restricted to RX;
 *  - entries: every list node belongs to a watch step with that entry
 *    address, lists are well linked, and the nodes are exactly the steps;
 *  - per-vCPU: dirty entries belong to stepping vCPUs (watched or not: kept
 *    until the step, see ptm_internal.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/session_internal.h"
#include "ptm/ptm_internal.h"

#define FAIL(...) return vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "ptm check: " __VA_ARGS__)

static vmt_status check_maps(vmt_ptm *p)
{
    const vmt_hmap *maps[] = { &p->watches, &p->tables, &p->entries, &p->dirty, &p->steps };
    static const char *const names[] = { "watches", "tables", "entries", "dirty", "steps" };
    for (unsigned i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        char why[160];
        if (vmt_hmap_check(maps[i], why, sizeof why) != VMT_OK)
            FAIL("%s map: %s", names[i], why);
    }
    return VMT_OK;
}

static vmt_status check_watch(vmt_ptm *p, const ptm_watch_key *key, const ptm_watch *w)
{
    ptm_watch_key want = ptm_make_watch_key(w->ctx, w->view, w->tag);
    if (memcmp(&want, key, sizeof want) != 0)
        FAIL("watch va 0x%" PRIx64 " is stored under another key", w->ctx.va);
    if (w->path.depth > PTM_MAX_DEPTH)
        FAIL("watch va 0x%" PRIx64 " has depth %u", w->ctx.va, w->path.depth);
    for (unsigned i = 1; i < w->path.depth; i++)
        if (w->path.level[i] >= w->path.level[i - 1])
            FAIL("watch va 0x%" PRIx64 " path levels not decreasing at step %u", w->ctx.va, i);
    for (unsigned i = 0; i < w->path.depth; i++)
        if (w->path.entry_pa[i] & 7)
            FAIL("watch va 0x%" PRIx64 " step %u entry 0x%" PRIx64 " is not aligned", w->ctx.va, i,
                 w->path.entry_pa[i]);
    if (w->present != (w->walk_status == VMT_OK))
        FAIL("watch va 0x%" PRIx64 " present=%d but walk status %d", w->ctx.va, w->present, w->walk_status);
    if (w->present && w->page_size != VMT_PAGE_SIZE && w->page_size != VMT_SIZE_2M && w->page_size != VMT_SIZE_1G)
        FAIL("watch va 0x%" PRIx64 " has page size 0x%" PRIx64, w->ctx.va, w->page_size);
    if (w->path.depth == 0 && w->walk_status != VMT_E_BAD_PT && w->walk_status != VMT_E_RANGE)
        FAIL("watch va 0x%" PRIx64 " has an empty path after a sane walk", w->ctx.va);
    if (w->view == VMT_VIEW_DEFAULT && !(p->caps & VMT_CAP_WRITE_AFTER))
        FAIL("watch va 0x%" PRIx64 " is in view 0 (only a write-after driver allows it)", w->ctx.va);
    return VMT_OK;
}

static vmt_status check_watches_and_tables(vmt_ptm *p, size_t *total_steps)
{
    vmt_hmap want;
    vmt_hmap_init(&want, sizeof(ptm_table_key), sizeof(uint32_t));
    vmt_status st = VMT_OK;
    size_t it = 0, steps = 0;
    void *k, *v;
    while (st == VMT_OK && vmt_hmap_next(&p->watches, &it, &k, &v)) {
        const ptm_watch *w = *(ptm_watch **)v;
        st = check_watch(p, k, w);
        for (unsigned i = 0; st == VMT_OK && i < w->path.depth; i++) {
            ptm_table_key tk = ptm_make_table_key(w->view, vmt_pa_to_gfn(w->path.entry_pa[i]));
            void *slot;
            bool existed;
            st = vmt_hmap_put(&want, &tk, NULL, &slot, &existed);
            if (st == VMT_OK)
                (*(uint32_t *)slot)++;
            steps++;
        }
    }
    size_t zombies = 0;
    it = 0;
    while (st == VMT_OK && vmt_hmap_next(&p->tables, &it, &k, &v)) {
        ptm_table_key tk;
        memcpy(&tk, k, sizeof tk);
        const ptm_table *t = v;
        const uint32_t *n = vmt_hmap_get(&want, &tk);
        uint32_t expect = n ? *n : 0;
        if (t->refs != expect) {
            st = vmt_errbuf_set(&p->err, VMT_E_INTERNAL,
                                "ptm check: table gfn 0x%" PRIx64 " view %u has refs %u but %u path steps use it",
                                tk.gfn, tk.view, t->refs, expect);
            break;
        }
        if (t->refs == 0)
            zombies++;
        if (vmt_session_effective_access(p->s, tk.view, tk.gfn) & VMT_ACCESS_W) {
            st = vmt_errbuf_set(&p->err, VMT_E_INTERNAL,
                                "ptm check: table gfn 0x%" PRIx64 " view %u is watched but writable", tk.gfn, tk.view);
            break;
        }
    }
    if (st == VMT_OK && vmt_hmap_count(&want) + zombies != vmt_hmap_count(&p->tables))
        st = vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "ptm check: %zu watched table pages but %zu in the table map",
                            vmt_hmap_count(&want), vmt_hmap_count(&p->tables) - zombies);
    if (st == VMT_OK && zombies != p->zombies)
        st = vmt_errbuf_set(&p->err, VMT_E_INTERNAL, "ptm check: %zu zombie tables, counter says %zu", zombies,
                            p->zombies);
    vmt_hmap_free(&want);
    *total_steps = steps;
    return st;
}

static vmt_status check_entries(vmt_ptm *p, size_t total_steps)
{
    size_t it = 0, nodes = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->entries, &it, &k, &v)) {
        vmt_pa entry_pa;
        memcpy(&entry_pa, k, sizeof entry_pa);
        const ptm_link *head = *(ptm_link **)v;
        if (!head)
            FAIL("entry 0x%" PRIx64 " has an empty list", entry_pa);
        if (head->prev)
            FAIL("entry 0x%" PRIx64 " list head has a predecessor", entry_pa);
        for (const ptm_link *l = head; l; l = l->next) {
            if (++nodes > total_steps)
                FAIL("entry lists hold more nodes than the %zu path steps (a cycle?)", total_steps);
            const ptm_watch *w = l->watch;
            ptrdiff_t idx = l - w->links;
            if (idx < 0 || idx >= w->path.depth)
                FAIL("entry 0x%" PRIx64 " list node is not a step of its watch", entry_pa);
            if (w->path.entry_pa[idx] != entry_pa)
                FAIL("entry 0x%" PRIx64 " list holds step %td of va 0x%" PRIx64 " which is entry 0x%" PRIx64,
                     entry_pa, idx, w->ctx.va, w->path.entry_pa[idx]);
            if (l->next && l->next->prev != l)
                FAIL("entry 0x%" PRIx64 " list is badly linked", entry_pa);
        }
    }
    if (nodes != total_steps)
        FAIL("entry lists hold %zu nodes, the watches have %zu path steps", nodes, total_steps);
    return VMT_OK;
}

static vmt_status check_vcpu_state(vmt_ptm *p)
{
    size_t it = 0;
    void *k, *v;
    while (vmt_hmap_next(&p->dirty, &it, &k, &v)) {
        const ptm_vcpu_entry *key = k;
        const ptm_dirty *d = v;
        if (d->mask == 0)
            FAIL("dirty entry of vcpu %u at 0x%" PRIx64 " covers no bytes", key->vcpu, key->entry_pa);
        if (!vmt_hmap_get(&p->steps, &key->vcpu))
            FAIL("vcpu %u has a dirty entry at 0x%" PRIx64 " but is not stepping", key->vcpu, key->entry_pa);
    }
    it = 0;
    while (vmt_hmap_next(&p->steps, &it, &k, &v)) {
        const ptm_step *s = v;
        if (s->return_view == VMT_VIEW_DEFAULT || s->return_view == VMT_VIEW_INVALID)
            FAIL("vcpu %u steps back to view %u", *(vmt_vcpu *)k, s->return_view);
    }
    return VMT_OK;
}

static vmt_status check_arbiter(vmt_ptm *p)
{
    const vmt_hmap *arb = &p->s->arb.map;
    size_t it = 0, mine = 0;
    void *k, *v;
    while (vmt_hmap_next(arb, &it, &k, &v)) {
        vmt_arb_key ak;
        memcpy(&ak, k, sizeof ak);
        const vmt_arb_entry *e = v;
        if (!(e->owners & (1u << VMT_OWNER_PTM)))
            continue;
        mine++;
        ptm_table_key tk = ptm_make_table_key((vmt_view)ak.view, ak.gfn);
        if (!vmt_hmap_get(&p->tables, &tk))
            FAIL("the arbiter holds a monitor restriction on gfn 0x%" PRIx64 " view %u that no watch uses", ak.gfn,
                 (unsigned)ak.view);
        if (e->restriction[VMT_OWNER_PTM] != VMT_ACCESS_RX)
            FAIL("the monitor's restriction on gfn 0x%" PRIx64 " view %u is 0x%x, not RX", ak.gfn, (unsigned)ak.view,
                 e->restriction[VMT_OWNER_PTM]);
    }
    if (mine != vmt_hmap_count(&p->tables))
        FAIL("the arbiter holds %zu monitor restrictions, the table map %zu pages", mine, vmt_hmap_count(&p->tables));
    return VMT_OK;
}

vmt_status vmt_ptm_check(vmt_ptm *p)
{
    if (!p)
        return VMT_E_INVAL;
    vmt_status st = check_maps(p);
    size_t steps = 0;
    if (st == VMT_OK)
        st = check_watches_and_tables(p, &steps);
    if (st == VMT_OK)
        st = check_entries(p, steps);
    if (st == VMT_OK)
        st = check_vcpu_state(p);
    if (st == VMT_OK)
        st = check_arbiter(p);
    if (st == VMT_OK && p->nev != 0)
        FAIL("%zu undelivered events", p->nev);
    return st;
}
