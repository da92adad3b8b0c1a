/*
 * drivers/emu/emu_walk.c — the guest page walk as the emulator's MMU does it:
 * the view's rights on top of the guest's tables, the rights an access gets
 * at a CPL (U/S, WP, SMEP, SMAP), and A/D bits set as hardware does.
 *
 * Design: one walk (vmt_paging_walk over the MMU view's frames: a table
 * frame the view forbids reading stops the walk as a page-table violation,
 * reported in the emu_walk_ctx) shared by the TLB-fill hook (emu_mmu.c), the
 * fault path, the host accessors and the engine accessors (emu_access.c).
 * Nothing here keeps state: A/D updates go straight to host memory (never
 * memory events) and mark the frame dirty.
 */
#include <string.h>

#include "drivers/emu/emu_priv.h"

/* The view part of an entry's rights in the MMU's current context. */
vmt_access emu_view_rights(const emu *e, uint64_t va_page, vmt_gfn gfn, vmt_gfn *backing)
{
    vmt_access a = emu_view_resolve(e, e->mmu_view, gfn, backing);
    if (e->grant_kinds && (e->grant_va == UINT64_MAX || e->grant_va == va_page))
        a |= e->grant_kinds;
    return a;
}

static vmt_status walk_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    emu_walk_ctx *w = ctx;
    emu *e = w->e;
    vmt_gfn gfn = pa >> 12;
    if (!emu_gfn_is_ram(e, gfn) || vmt_page_offset(pa) + len > EMU_PAGE)
        return VMT_E_RANGE;
    vmt_gfn b;
    vmt_access a = emu_view_rights(e, UINT64_MAX - 1, gfn, &b);
    if (!(a & VMT_ACCESS_R)) {
        w->pt_violation = true;
        w->violation_pa = pa;
        return VMT_E_BUSY;
    }
    memcpy(buf, emu_frame_ptr(e, b) + vmt_page_offset(pa), len);
    return VMT_OK;
}

/* Host frame of a guest table frame through the MMU view. */
vmt_gfn emu_table_host_frame(const emu *e, vmt_gfn gfn)
{
    vmt_gfn b;
    (void)emu_view_rights(e, UINT64_MAX - 1, gfn, &b);
    return b;
}

/* Set A on every entry of the walk and D on the leaf when writing. These
 * writes go straight to host memory: they are never memory events. */
void emu_set_ad_bits(emu *e, vmt_walk *w, bool write)
{
    for (unsigned i = 0; i < w->nsteps; i++) {
        vmt_walk_step *s = &w->steps[i];
        uint64_t bits = VMT_PTE_A;
        if (write && i + 1 == w->nsteps)
            bits |= VMT_PTE_D;
        if ((s->value & bits) == bits)
            continue;
        s->value |= bits;
        vmt_gfn tf = emu_table_host_frame(e, s->table_pa >> 12);
        memcpy(emu_frame_ptr(e, tf) + vmt_page_offset(s->entry_pa), &s->value, 8);
        emu_dirty_mark(e, tf);
    }
}

uint8_t emu_cpl(emu *e)
{
    uint64_t cs = 0;
    uc_reg_read(e->uc, UC_X86_REG_CS, &cs);
    return (uint8_t)(cs & 3);
}

/* Rights the guest's tables give an access at `cpl` (U/S, WP, SMEP, and
 * SMAP: smap = supervisor data accesses to user pages fault now, see
 * emu_smap_explicit; Unicorn keeps AC = 0 and AC = 1 translations apart). */
vmt_access emu_rights_for(const emu *e, vmt_access walk_rights, bool user, uint8_t cpl, bool smap)
{
    vmt_access a = walk_rights;
    if (cpl == 3) {
        if (!user)
            return VMT_ACCESS_NONE;
        return a;
    }
    if (!(e->cr0 & VMT_CR0_WP))
        a |= VMT_ACCESS_W;
    if (user && smap)
        a &= VMT_ACCESS_X;
    if (user && (e->cr4 & EMU_CR4_SMEP))
        a &= (vmt_access)~VMT_ACCESS_X;
    return a;
}

vmt_access emu_pte_rights_for(const emu *e, const vmt_walk *w, uint8_t cpl, bool smap)
{
    return emu_rights_for(e, w->rights, w->user != 0, cpl, smap);
}

/* Walk va under CR3 through the MMU view's frames (A/D untouched). */
vmt_status emu_walk(emu *e, uint64_t va, vmt_walk *w, emu_walk_ctx *wc)
{
    vmt_paging_config pc = emu_paging_cfg(e);
    wc->e = e;
    wc->pt_violation = false;
    vmt_phys_reader rd = { walk_read, wc };
    return vmt_paging_walk(&rd, &pc, e->cr3 & 0x000ffffffffff000ull, va, w, NULL, 0);
}
