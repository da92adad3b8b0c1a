/*
 * drivers/emu/emu_mmu.c — the emulator driver's MMU: a software TLB of
 * guest-virtual pages mapped into Unicorn.
 *
 * Design: Unicorn 2.0.1 keys its memory by the address the guest uses, so
 * Unicorn runs with paging off and every guest-virtual page the guest
 * touches is mapped (uc_mem_map_ptr) onto the host memory of the frame the
 * guest's tables and the MMU view resolve it to. A Unicorn miss or
 * protection fault is recorded by a hook, the instruction is aborted (the
 * hook returns false), and emu_mmu_fault() decides what it was:
 *   - the guest's own tables forbid it        -> #PF for the guest;
 *   - the view forbids it                     -> a memory-access event;
 *   - a write into a page-table frame         -> performed by the
 *     WRITE_PROT hook itself (value and size are exact there); the code
 *     hook then drops every entry walked through that frame before the
 *     next instruction runs;
 *   - a first write to a clean page           -> set D, map writable;
 *   - otherwise a miss                        -> walk, set A, map.
 * Table frames of every mapped translation are reference counted
 * (pt_refs) and never mapped writable, so guest page-table edits can never
 * leave a stale mapping (stricter than a hardware TLB, which may keep
 * stale entries until invlpg). Capacity is bounded; eviction is FIFO over
 * the slots (Unicorn's own TLB hits are invisible to the driver).
 *
 * Invariants: see emu_priv.h; checked by emu_mmu_check().
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

vmt_paging_config emu_paging_cfg(const emu *e)
{
    vmt_paging_config c = { 4, e->maxphyaddr, (e->efer & VMT_EFER_NXE) ? 1 : 0, 0 };
    return c;
}

vmt_status emu_tlb_init(emu *e, uint32_t cap)
{
    e->tlb = calloc(cap, sizeof *e->tlb);
    if (!e->tlb)
        return VMT_E_NOMEM;
    e->tlb_cap = cap;
    vmt_hmap_init(&e->tlb_index, sizeof(uint64_t), sizeof(uint32_t));
    if (vmt_hmap_reserve(&e->tlb_index, cap))
        return VMT_E_NOMEM;
    e->tstats.capacity = cap;
    e->code_va = UINT64_MAX;
    return VMT_OK;
}

void emu_tlb_free(emu *e)
{
    free(e->tlb);
    e->tlb = NULL;
    vmt_hmap_free(&e->tlb_index);
}

static uint32_t tlb_find(const emu *e, uint64_t va_page)
{
    const uint32_t *s = vmt_hmap_get(&e->tlb_index, &va_page);
    return s ? *s : EMU_NO_SLOT;
}

static uint32_t uc_perms_of(vmt_access a)
{
    uint32_t p = 0;
    if (a & VMT_ACCESS_R)
        p |= UC_PROT_READ;
    if (a & VMT_ACCESS_W)
        p |= UC_PROT_WRITE;
    if (a & VMT_ACCESS_X)
        p |= UC_PROT_EXEC;
    return p;
}

/* The view part of an entry's rights in the MMU's current context. */
static vmt_access view_rights(const emu *e, uint64_t va_page, vmt_gfn gfn, vmt_gfn *backing)
{
    vmt_access a = emu_view_resolve(e, e->mmu_view, gfn, backing);
    if (e->grant_kinds && (e->grant_va == UINT64_MAX || e->grant_va == va_page))
        a |= e->grant_kinds;
    return a;
}

static uint32_t compute_perms(const emu *e, const emu_tlb_entry *t)
{
    if (t->is_void)
        return UC_PROT_READ;
    vmt_gfn b;
    vmt_access a = view_rights(e, t->va, t->gfn, &b) & t->pte_rights;
    if (!t->dirty || e->pt_refs[t->backing])
        a &= (vmt_access)~VMT_ACCESS_W;
    return uc_perms_of(a);
}

static void code_cache_reset(emu *e)
{
    e->code_va = UINT64_MAX;
    e->code_host = NULL;
}

static void drop_slot(emu *e, uint32_t slot)
{
    emu_tlb_entry *t = &e->tlb[slot];
    if (!t->valid)
        return;
    /* translated code first: the cache is found through the mapping */
    uc_ctl_remove_cache(e->uc, t->va, t->va + EMU_PAGE);
    uc_mem_unmap(e->uc, t->va, EMU_PAGE);
    for (unsigned i = 0; i < t->ntables; i++)
        e->pt_refs[t->tables[i]]--;
    vmt_hmap_del(&e->tlb_index, &t->va, NULL);
    t->valid = false;
    e->tlb_used--;
    code_cache_reset(e);
}

void emu_tlb_flush(emu *e)
{
    for (uint32_t i = 0; i < e->tlb_cap; i++) {
        if (e->tlb[i].valid) {
            drop_slot(e, i);
            e->tstats.invalidations++;
        }
    }
}

static void set_perms(emu *e, emu_tlb_entry *t, uint32_t perms)
{
    if (perms == t->uc_perms)
        return;
    uc_mem_protect(e->uc, t->va, EMU_PAGE, perms);
    if ((t->uc_perms & UC_PROT_EXEC) && !(perms & UC_PROT_EXEC))
        uc_ctl_remove_cache(e->uc, t->va, t->va + EMU_PAGE);
    t->uc_perms = perms;
}

void emu_tlb_revalidate(emu *e)
{
    for (uint32_t i = 0; i < e->tlb_cap; i++) {
        emu_tlb_entry *t = &e->tlb[i];
        if (!t->valid)
            continue;
        bool stale = false;
        for (unsigned k = 0; k < t->ntables && !stale; k++) {
            vmt_gfn b;
            vmt_access a = view_rights(e, UINT64_MAX - 1, t->table_gfns[k], &b);
            stale = b != t->tables[k] || !(a & VMT_ACCESS_R);
        }
        if (!stale && !t->is_void) {
            vmt_gfn b;
            (void)view_rights(e, t->va, t->gfn, &b);
            stale = b != t->backing;
        }
        if (stale) {
            drop_slot(e, i);
            e->tstats.invalidations++;
            continue;
        }
        set_perms(e, t, compute_perms(e, t));
    }
}

void emu_tlb_frame_written(emu *e, vmt_gfn frame) { emu_tlb_range_written(e, frame, 0, EMU_PAGE); }

/* Only what the written bytes can change is dropped: a translation whose
 * walk read one of the written entries (a store to another entry of the
 * same table, or to A/D bits of an unrelated entry, leaves the rest of the
 * TLB alone), and the translated code over exactly those bytes. */
void emu_tlb_range_written(emu *e, vmt_gfn frame, uint32_t off, uint32_t len)
{
    if (frame >= emu_total_frames(e) || len == 0 || off >= EMU_PAGE)
        return;
    if (len > EMU_PAGE - off)
        len = EMU_PAGE - off;
    for (uint32_t i = 0; i < e->tlb_cap; i++) {
        emu_tlb_entry *t = &e->tlb[i];
        if (!t->valid)
            continue;
        bool walked = false;
        for (unsigned k = 0; k < t->ntables; k++)
            walked |= t->tables[k] == frame && t->entry_off[k] < off + len && t->entry_off[k] + 8u > off;
        if (walked) {
            drop_slot(e, i);
            e->tstats.invalidations++;
        } else if (!t->is_void && t->backing == frame && (t->uc_perms & UC_PROT_EXEC)) {
            uc_ctl_remove_cache(e->uc, t->va + off, t->va + off + len);
        }
    }
}

/* ---- the guest walk ---- */

typedef struct walk_ctx {
    emu *e;
    bool pt_violation;     /* the view forbids reading a table frame */
    vmt_pa violation_pa;
} walk_ctx;

static vmt_status walk_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    walk_ctx *w = ctx;
    emu *e = w->e;
    vmt_gfn gfn = pa >> 12;
    if (gfn >= e->ram_frames || vmt_page_offset(pa) + len > EMU_PAGE)
        return VMT_E_RANGE;
    vmt_gfn b;
    vmt_access a = view_rights(e, UINT64_MAX - 1, gfn, &b);
    if (!(a & VMT_ACCESS_R)) {
        w->pt_violation = true;
        w->violation_pa = pa;
        return VMT_E_BUSY;
    }
    memcpy(buf, emu_frame_ptr(e, b) + vmt_page_offset(pa), len);
    return VMT_OK;
}

/* Host frame of a guest table frame through the MMU view. */
static vmt_gfn table_host_frame(const emu *e, vmt_gfn gfn)
{
    vmt_gfn b;
    (void)view_rights(e, UINT64_MAX - 1, gfn, &b);
    return b;
}

/* Set A on every entry of the walk and D on the leaf when writing. These
 * writes go straight to host memory: they are never memory events. */
static void set_ad_bits(emu *e, vmt_walk *w, bool write)
{
    for (unsigned i = 0; i < w->nsteps; i++) {
        vmt_walk_step *s = &w->steps[i];
        uint64_t bits = VMT_PTE_A;
        if (write && i + 1 == w->nsteps)
            bits |= VMT_PTE_D;
        if ((s->value & bits) == bits)
            continue;
        s->value |= bits;
        uint8_t *p = emu_frame_ptr(e, table_host_frame(e, s->table_pa >> 12)) + vmt_page_offset(s->entry_pa);
        memcpy(p, &s->value, 8);
    }
}

static uint8_t cpl(const emu *e) { return e->sel[0] & 3; }

/* Rights the guest's tables give the current CPL. */
static vmt_access pte_rights_for_cpl(const emu *e, const vmt_walk *w)
{
    vmt_access a = w->rights;
    if (cpl(e) == 3 && !w->user)
        return VMT_ACCESS_NONE;
    if (cpl(e) != 3 && !(e->cr0 & VMT_CR0_WP))
        a |= VMT_ACCESS_W;
    return a;
}

/* Make a slot for va_page (reuse, free, or evict FIFO). */
static uint32_t slot_for(emu *e, uint64_t va_page)
{
    uint32_t s = tlb_find(e, va_page);
    if (s != EMU_NO_SLOT) {
        drop_slot(e, s);
        return s;
    }
    if (e->tlb_used == e->tlb_cap) {
        for (;;) {
            uint32_t c = e->clock;
            e->clock = (e->clock + 1) % e->tlb_cap;
            if (e->tlb[c].valid) {
                drop_slot(e, c);
                e->tstats.evictions++;
                return c;
            }
        }
    }
    for (;;) {
        uint32_t c = e->clock;
        e->clock = (e->clock + 1) % e->tlb_cap;
        if (!e->tlb[c].valid)
            return c;
    }
}

static vmt_status install(emu *e, uint32_t slot, emu_tlb_entry *n)
{
    for (unsigned i = 0; i < n->ntables; i++) {
        vmt_gfn f = n->tables[i];
        if (e->pt_refs[f]++ == 0) {
            /* f becomes a table frame: no mapping of it may stay writable */
            for (uint32_t k = 0; k < e->tlb_cap; k++) {
                emu_tlb_entry *t = &e->tlb[k];
                if (t->valid && !t->is_void && t->backing == f && (t->uc_perms & UC_PROT_WRITE))
                    set_perms(e, t, t->uc_perms & ~(uint32_t)UC_PROT_WRITE);
            }
        }
    }
    n->valid = true;
    n->uc_perms = compute_perms(e, n);
    void *host = n->is_void ? (void *)e->void_page : (void *)emu_frame_ptr(e, n->backing);
    uc_err err = uc_mem_map_ptr(e->uc, n->va, EMU_PAGE, n->uc_perms, host);
    if (err != UC_ERR_OK) {
        for (unsigned i = 0; i < n->ntables; i++)
            e->pt_refs[n->tables[i]]--;
        return vmt_driver_fail(e->drv, VMT_E_DRIVER, "unicorn cannot map va 0x%" PRIx64 ": %s", n->va,
                               uc_strerror(err));
    }
    /* no stale code here: every unmap of this va removed its cache */
    e->tlb[slot] = *n;
    void *sv;
    bool existed;
    vmt_hmap_put(&e->tlb_index, &n->va, &slot, &sv, &existed); /* reserved: cannot fail */
    e->tlb_used++;
    e->tstats.fills++;
    return VMT_OK;
}

static void fill_mem_event(const emu_fault *f, const vmt_walk *w, vmt_event *ev)
{
    vmt_mem_access_info *m = &ev->u.mem;
    memset(m, 0, sizeof *m);
    m->gpa = (w->pa & ~(uint64_t)(EMU_PAGE - 1)) | vmt_page_offset(f->va);
    m->gva = f->va;
    m->gva_valid = true;
    m->access = f->kind;
    if (f->kind == VMT_ACCESS_W && f->size >= 1 && f->size <= 8) {
        m->has_data = true;
        m->size = (uint8_t)f->size;
        m->value = f->size == 8 ? (uint64_t)f->value : ((uint64_t)f->value & ((1ULL << (8 * f->size)) - 1));
    }
}

emu_fault_result emu_mmu_fault(emu *e, const emu_fault *f, vmt_event *ev, uint32_t *pf_error)
{
    uint64_t page = f->va & ~(uint64_t)(EMU_PAGE - 1);
    vmt_paging_config pc = emu_paging_cfg(e);
    vmt_phys_reader rd;
    walk_ctx wc = { e, false, 0 };
    rd.read = walk_read;
    rd.ctx = &wc;
    vmt_walk w;
    char why[160];
    uint32_t kind_bits = (f->kind == VMT_ACCESS_W ? 2u : 0) | (f->kind == VMT_ACCESS_X ? 0x10u : 0) |
                         (cpl(e) == 3 ? 4u : 0);
    vmt_status st = vmt_paging_walk(&rd, &pc, e->cr3, page, &w, why, sizeof why);
    if (wc.pt_violation) {
        memset(&ev->u.mem, 0, sizeof ev->u.mem);
        ev->u.mem.gpa = wc.violation_pa;
        ev->u.mem.gva = f->va;
        ev->u.mem.gva_valid = true;
        ev->u.mem.access = VMT_ACCESS_R;
        ev->u.mem.in_pt_walk = true;
        return EMU_FR_EVENT;
    }
    if (st == VMT_E_INVAL)
        return EMU_FR_GP;
    if (st == VMT_E_NOT_PRESENT) {
        *pf_error = kind_bits;
        return EMU_FR_PAGE_FAULT;
    }
    if (st != VMT_OK) {
        *pf_error = kind_bits | 1u | 8u; /* present + reserved bit */
        return EMU_FR_PAGE_FAULT;
    }
    vmt_access pte = pte_rights_for_cpl(e, &w);
    if (!(pte & f->kind)) {
        *pf_error = kind_bits | 1u;
        return EMU_FR_PAGE_FAULT;
    }
    vmt_gfn gfn = w.pa >> 12;
    emu_tlb_entry n;
    memset(&n, 0, sizeof n);
    n.va = page;
    n.gfn = gfn;
    n.pte_rights = pte;
    for (unsigned i = 0; i < w.nsteps; i++) {
        n.table_gfns[i] = w.steps[i].table_pa >> 12;
        n.tables[i] = table_host_frame(e, n.table_gfns[i]);
        n.entry_off[i] = (uint16_t)vmt_page_offset(w.steps[i].entry_pa);
    }
    n.ntables = w.nsteps;
    if (gfn >= e->ram_frames) {
        if (f->kind == VMT_ACCESS_X) {
            snprintf(e->stop.message, sizeof e->stop.message,
                     "execution at va 0x%" PRIx64 " reaches gfn 0x%" PRIx64 " outside guest RAM", f->va, gfn);
            e->stop.reason = VMT_STOP_GUEST_ERROR;
            return EMU_FR_STOP;
        }
        set_ad_bits(e, &w, false);
        n.is_void = true;
        n.backing = 0;
        uint32_t slot = slot_for(e, page);
        return install(e, slot, &n) ? EMU_FR_STOP : EMU_FR_RETRY;
    }
    vmt_gfn backing;
    vmt_access va_rights = view_rights(e, page, gfn, &backing);
    bool denied = e->deny_active && e->deny_va == page && e->deny_kind == f->kind;
    if (!(va_rights & f->kind) && !denied) {
        fill_mem_event(f, &w, ev);
        return EMU_FR_EVENT;
    }
    /* A write into a table frame: mapped without W; the WRITE_PROT hook
     * performs it and the code hook invalidates before the next insn. */
    set_ad_bits(e, &w, f->kind == VMT_ACCESS_W);
    n.backing = backing;
    n.dirty = (w.steps[w.nsteps - 1].value & VMT_PTE_D) != 0;
    uint32_t slot = slot_for(e, page);
    if (install(e, slot, &n)) {
        snprintf(e->stop.message, sizeof e->stop.message, "%s", vmt_driver_error(e->drv));
        e->stop.reason = VMT_STOP_DRIVER_ERROR;
        return EMU_FR_STOP;
    }
    return EMU_FR_RETRY;
}

vmt_status emu_mmu_host_ptr(emu *e, uint64_t va, bool write, uint8_t **host, size_t *left)
{
    vmt_paging_config pc = emu_paging_cfg(e);
    walk_ctx wc = { e, false, 0 };
    vmt_phys_reader rd = { walk_read, &wc };
    vmt_walk w;
    vmt_status st = vmt_paging_walk(&rd, &pc, e->cr3, va, &w, NULL, 0);
    if (st)
        return st;
    if (write && !(pte_rights_for_cpl(e, &w) & VMT_ACCESS_W))
        return VMT_E_NOT_PRESENT;
    vmt_gfn gfn = w.pa >> 12;
    *left = EMU_PAGE - vmt_page_offset(va);
    if (gfn >= e->ram_frames) {
        if (write)
            return VMT_E_RANGE;
        *host = e->void_page;
        return VMT_OK;
    }
    set_ad_bits(e, &w, write);
    vmt_gfn b;
    (void)view_rights(e, va & ~(uint64_t)(EMU_PAGE - 1), gfn, &b);
    *host = emu_frame_ptr(e, b) + vmt_page_offset(va);
    return VMT_OK;
}

vmt_status emu_va_read(emu *e, uint64_t va, void *buf, size_t len)
{
    uint8_t *out = buf;
    while (len) {
        uint8_t *h;
        size_t left;
        vmt_status st = emu_mmu_host_ptr(e, va, false, &h, &left);
        if (st)
            return st;
        size_t n = left < len ? left : len;
        memcpy(out, h, n);
        out += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}

vmt_status emu_va_write(emu *e, uint64_t va, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    while (len) {
        uint8_t *h;
        size_t left;
        vmt_status st = emu_mmu_host_ptr(e, va, true, &h, &left);
        if (st)
            return st;
        size_t n = left < len ? left : len;
        memcpy(h, in, n);
        emu_tlb_range_written(e, (vmt_gfn)((size_t)(h - e->mem) / EMU_PAGE), (uint32_t)((size_t)(h - e->mem) % EMU_PAGE),
                              (uint32_t)n);
        in += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}

vmt_status emu_mmu_check(emu *e, char *why, size_t why_len)
{
    uint64_t frames = emu_total_frames(e);
    uint32_t *refs = calloc(frames ? frames : 1, sizeof *refs);
    if (!refs)
        return VMT_E_NOMEM;
    vmt_status st = VMT_OK;
    uint32_t used = 0;
    for (uint32_t i = 0; i < e->tlb_cap && !st; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (!t->valid)
            continue;
        used++;
        if (tlb_find(e, t->va) != i) {
            snprintf(why, why_len, "tlb slot %u (va 0x%" PRIx64 ") is not in the index", i, t->va);
            st = VMT_E_INTERNAL;
        }
        for (unsigned k = 0; k < t->ntables; k++)
            refs[t->tables[k]]++;
    }
    for (uint32_t i = 0; i < e->tlb_cap && !st; i++) {
        const emu_tlb_entry *t = &e->tlb[i];
        if (!t->valid)
            continue;
        uint32_t want = compute_perms(e, t);
        if (t->uc_perms != want) {
            snprintf(why, why_len, "tlb va 0x%" PRIx64 " mapped with perms %u, rules give %u", t->va, t->uc_perms, want);
            st = VMT_E_INTERNAL;
        } else if (!t->is_void && refs[t->backing] && (t->uc_perms & UC_PROT_WRITE)) {
            snprintf(why, why_len, "va 0x%" PRIx64 " maps page-table frame 0x%" PRIx64 " writable", t->va,
                     t->backing);
            st = VMT_E_INTERNAL;
        }
    }
    for (uint64_t f = 0; f < frames && !st; f++) {
        if (refs[f] != e->pt_refs[f]) {
            snprintf(why, why_len, "frame 0x%" PRIx64 " has %u table references, counted %u", f, e->pt_refs[f],
                     refs[f]);
            st = VMT_E_INTERNAL;
        }
    }
    free(refs);
    if (!st && (used != e->tlb_used || vmt_hmap_count(&e->tlb_index) != used)) {
        snprintf(why, why_len, "tlb counts disagree: %u valid slots, used %u, index %zu", used, e->tlb_used,
                 vmt_hmap_count(&e->tlb_index));
        st = VMT_E_INTERNAL;
    }
    if (!st) {
        uc_mem_region *regs = NULL;
        uint32_t n = 0;
        if (uc_mem_regions(e->uc, &regs, &n) == UC_ERR_OK) {
            if (n != used) {
                snprintf(why, why_len, "unicorn has %u regions, the tlb %u entries", n, used);
                st = VMT_E_INTERNAL;
            }
            for (uint32_t i = 0; i < n && !st; i++) {
                uint32_t s = tlb_find(e, regs[i].begin);
                if (s == EMU_NO_SLOT || regs[i].end != regs[i].begin + EMU_PAGE - 1 ||
                    regs[i].perms != e->tlb[s].uc_perms) {
                    snprintf(why, why_len, "unicorn region 0x%" PRIx64 "-0x%" PRIx64 " perms %u has no matching tlb entry",
                             regs[i].begin, regs[i].end, regs[i].perms);
                    st = VMT_E_INTERNAL;
                }
            }
            uc_free(regs);
        }
    }
    return st;
}

bool emu_mmu_hook_prot(emu *e, vmt_access kind, uint64_t va, int size, int64_t value)
{
    uint64_t page = va & ~(uint64_t)(EMU_PAGE - 1);
    uint32_t slot = tlb_find(e, page);
    if (slot == EMU_NO_SLOT)
        return false;
    const emu_tlb_entry *t = &e->tlb[slot];
    bool deny = e->deny_active && e->deny_va == page && e->deny_kind == kind;
    if (deny && kind != VMT_ACCESS_W)
        return true; /* DENY of a read/fetch: it sees the current mapping */
    if (kind != VMT_ACCESS_W)
        return false;
    if (deny || t->is_void) {
        /* Skip the write: Unicorn stores even when the hook returns true,
         * so save the bytes and undo the store before the next insn. */
        uint64_t off = vmt_page_offset(va);
        if (size < 1 || size > 16 || off + (uint64_t)size > EMU_PAGE || e->nundo == 64) {
            e->undo_overflow = true;
            return false;
        }
        uint8_t *h = (t->is_void ? e->void_page : emu_frame_ptr(e, t->backing)) + off;
        e->undo[e->nundo].host = h;
        e->undo[e->nundo].n = (uint8_t)size;
        memcpy(e->undo[e->nundo].bytes, h, (size_t)size);
        e->nundo++;
        return true;
    }
    if (!e->pt_refs[t->backing] || !t->dirty || size < 1 || size > 8 ||
        vmt_page_offset(va) + (uint64_t)size > EMU_PAGE)
        return false;
    vmt_gfn b;
    if (!(view_rights(e, page, t->gfn, &b) & t->pte_rights & VMT_ACCESS_W))
        return false;
    /* A guest write into a page-table frame: perform it exactly here. */
    memcpy(emu_frame_ptr(e, t->backing) + vmt_page_offset(va), &value, (size_t)size);
    uint16_t lo = (uint16_t)vmt_page_offset(va), hi = (uint16_t)(lo + size);
    if (e->ptw_active && e->ptw_frame != t->backing)
        e->ptw_many = true;
    if (!e->ptw_active || e->ptw_frame != t->backing) {
        e->ptw_lo = lo;
        e->ptw_hi = hi;
    } else {
        e->ptw_lo = lo < e->ptw_lo ? lo : e->ptw_lo;
        e->ptw_hi = hi > e->ptw_hi ? hi : e->ptw_hi;
    }
    e->ptw_active = true;
    e->ptw_frame = t->backing;
    e->tstats.pt_write_faults++;
    return true;
}

vmt_status emu_mmu_gpa(emu *e, uint64_t va, vmt_pa *gpa)
{
    vmt_paging_config pc = emu_paging_cfg(e);
    walk_ctx wc = { e, false, 0 };
    vmt_phys_reader rd = { walk_read, &wc };
    vmt_walk w;
    vmt_status st = vmt_paging_walk(&rd, &pc, e->cr3, va, &w, NULL, 0);
    if (st == VMT_OK)
        *gpa = w.pa;
    return st;
}

/* ---- accessors for the reusable engine (vmtrap/emulate.h) ----
 * A page as the vCPU would see it under the MMU context (view + grants):
 * rights = guest PTE rights ∩ view rights; the walk sets A, a write sets D.
 * Memory past RAM and failed walks fail: the caller falls back to a step. */

vmt_status emu_engine_read(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    emu *e = ctx;
    vmt_paging_config pc = emu_paging_cfg(e);
    walk_ctx wc = { e, false, 0 };
    vmt_phys_reader rd = { walk_read, &wc };
    vmt_walk w;
    uint64_t page = va & ~(uint64_t)(EMU_PAGE - 1);
    if (len > EMU_PAGE || vmt_page_offset(va) + len > EMU_PAGE)
        return VMT_E_INVAL;
    vmt_status st = vmt_paging_walk(&rd, &pc, e->cr3, page, &w, NULL, 0);
    if (st)
        return st;
    vmt_gfn gfn = w.pa >> 12;
    if (gfn >= e->ram_frames)
        return VMT_E_RANGE;
    vmt_gfn b;
    *allowed = view_rights(e, page, gfn, &b) & pte_rights_for_cpl(e, &w);
    set_ad_bits(e, &w, false);
    memcpy(buf, emu_frame_ptr(e, b) + vmt_page_offset(va), len);
    return VMT_OK;
}

vmt_status emu_engine_write(void *ctx, vmt_va va, const void *buf, size_t len)
{
    emu *e = ctx;
    const uint8_t *in = buf;
    while (len) {
        vmt_paging_config pc = emu_paging_cfg(e);
        walk_ctx wc = { e, false, 0 };
        vmt_phys_reader rd = { walk_read, &wc };
        vmt_walk w;
        uint64_t page = va & ~(uint64_t)(EMU_PAGE - 1);
        vmt_status st = vmt_paging_walk(&rd, &pc, e->cr3, page, &w, NULL, 0);
        if (st)
            return st;
        vmt_gfn gfn = w.pa >> 12, b;
        if (gfn >= e->ram_frames || !(view_rights(e, page, gfn, &b) & pte_rights_for_cpl(e, &w) & VMT_ACCESS_W))
            return VMT_E_RANGE;
        set_ad_bits(e, &w, true);
        size_t n = EMU_PAGE - vmt_page_offset(va);
        if (n > len)
            n = len;
        memcpy(emu_frame_ptr(e, b) + vmt_page_offset(va), in, n);
        emu_tlb_range_written(e, b, (uint32_t)vmt_page_offset(va), (uint32_t)n);
        in += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}
