/*
 * drivers/emu/emu_access.c — guest memory as the vCPU sees it, for the host
 * (monitor reads and writes through the session) and for the reusable
 * instruction engine (EMULATE / FAST_STEP responses).
 *
 * Design: every access walks the guest's tables under the MMU context (view
 * + grants; emu_walk.c), sets A/D like the CPU, and writes go through
 * emu_host_write so translated code over the bytes is dropped and the record
 * of translations forgets what the written entries fed (emu_mmu.c). The
 * engine accessors apply the rights the vCPU would get at its CPL (SMAP
 * included); the host accessors act as the kernel (CPL0) with WP honoured.
 */
#include <string.h>

#include "drivers/emu/emu_priv.h"

vmt_status emu_mmu_host_ptr(emu *e, uint64_t va, bool write, bool smap, uint8_t **host, size_t *left)
{
    emu_walk_ctx wc;
    vmt_walk w;
    vmt_status st = emu_walk(e, va, &w, &wc);
    if (st)
        return st;
    if (smap && w.user)
        return VMT_E_CONFLICT;
    if (write && !(emu_pte_rights_for(e, &w, 0, false) & VMT_ACCESS_W))
        return VMT_E_NOT_PRESENT;
    vmt_gfn gfn = w.pa >> 12;
    *left = EMU_PAGE - vmt_page_offset(va);
    if (!emu_gfn_is_ram(e, gfn))
        return VMT_E_RANGE;
    emu_set_ad_bits(e, &w, write);
    vmt_gfn b;
    (void)emu_view_rights(e, va & ~(uint64_t)(EMU_PAGE - 1), gfn, &b);
    *host = emu_frame_ptr(e, b) + vmt_page_offset(va);
    return VMT_OK;
}

vmt_status emu_va_read(emu *e, uint64_t va, void *buf, size_t len) { return emu_va_read_data(e, va, buf, len, false); }

vmt_status emu_va_read_data(emu *e, uint64_t va, void *buf, size_t len, bool smap)
{
    uint8_t *out = buf;
    while (len) {
        uint8_t *h;
        size_t left;
        vmt_status st = emu_mmu_host_ptr(e, va, false, smap, &h, &left);
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

/* A write into host memory the guest may execute or walk: through Unicorn
 * (which drops translated code over it), then the record. */
void emu_host_write(emu *e, vmt_gfn frame, uint32_t off, const void *buf, size_t len)
{
    memcpy(emu_frame_ptr(e, frame) + off, buf, len);
    emu_dirty_mark(e, frame);
    emu_code_written(e, frame, off, (uint32_t)len);
    emu_tlb_range_written(e, frame, off, (uint32_t)len);
}

/* Unicorn keeps translated code by physical address and does not notice
 * writes it did not make (uc_mem_write does not either, in 2.1.1), and its
 * only way to drop code takes a virtual address: translate a private
 * non-canonical address onto the frame for the call (the fill hook answers
 * it while in_ctl), then forget that translation with the next flush. */
void emu_code_written(emu *e, vmt_gfn frame, uint32_t off, uint32_t len)
{
    if (!len || frame >= emu_total_frames(e) || !(e->xframes[frame >> 3] >> (frame & 7) & 1))
        return; /* never handed out executable: Unicorn has no code of it */
    uint64_t va = EMU_CTL_VA | emu_phys_pa(e, frame);
    e->in_ctl = true;
    e->ctl_pa_valid = true;
    uc_ctl_remove_cache(e->uc, va + off, va + off + len);
    e->ctl_pa_valid = false;
    e->in_ctl = false;
    e->uc_flush_pending = true;
}

vmt_status emu_va_write(emu *e, uint64_t va, const void *buf, size_t len)
{
    return emu_va_write_data(e, va, buf, len, false);
}

vmt_status emu_va_write_data(emu *e, uint64_t va, const void *buf, size_t len, bool smap)
{
    const uint8_t *in = buf;
    while (len) {
        uint8_t *h;
        size_t left;
        vmt_status st = emu_mmu_host_ptr(e, va, true, smap, &h, &left);
        if (st)
            return st;
        size_t n = left < len ? left : len;
        size_t at = (size_t)(h - e->mem);
        emu_host_write(e, (vmt_gfn)(at / EMU_PAGE), (uint32_t)(at % EMU_PAGE), in, n);
        in += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}

vmt_status emu_mmu_gpa(emu *e, uint64_t va, vmt_pa *gpa)
{
    emu_walk_ctx wc;
    vmt_walk w;
    vmt_status st = emu_walk(e, va, &w, &wc);
    if (st == VMT_OK)
        *gpa = w.pa;
    return st;
}

/* ---- accessors for the reusable engine (vmtrap/emulate.h) ----
 * A page as the vCPU would see it under the MMU context (view + grants):
 * rights = guest PTE rights ∩ view rights; the walk sets A, a write sets D.
 * Memory outside RAM and failed walks fail: the caller falls back to a step. */

vmt_status emu_engine_read(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed)
{
    emu *e = ctx;
    emu_walk_ctx wc;
    vmt_walk w;
    uint64_t page = va & ~(uint64_t)(EMU_PAGE - 1);
    if (len > EMU_PAGE || vmt_page_offset(va) + len > EMU_PAGE)
        return VMT_E_INVAL;
    vmt_status st = emu_walk(e, page, &w, &wc);
    if (st)
        return st;
    vmt_gfn gfn = w.pa >> 12;
    if (!emu_gfn_is_ram(e, gfn))
        return VMT_E_RANGE;
    vmt_gfn b;
    uint8_t cpl = emu_cpl(e);
    *allowed = emu_view_rights(e, page, gfn, &b) & emu_pte_rights_for(e, &w, cpl, emu_smap_explicit(e, cpl));
    emu_set_ad_bits(e, &w, false);
    memcpy(buf, emu_frame_ptr(e, b) + vmt_page_offset(va), len);
    return VMT_OK;
}

vmt_status emu_engine_write(void *ctx, vmt_va va, const void *buf, size_t len)
{
    emu *e = ctx;
    const uint8_t *in = buf;
    uint8_t cpl = emu_cpl(e);
    bool smap = emu_smap_explicit(e, cpl);
    while (len) {
        emu_walk_ctx wc;
        vmt_walk w;
        uint64_t page = va & ~(uint64_t)(EMU_PAGE - 1);
        vmt_status st = emu_walk(e, page, &w, &wc);
        if (st)
            return st;
        vmt_gfn gfn = w.pa >> 12, b;
        if (!emu_gfn_is_ram(e, gfn) || !(emu_view_rights(e, page, gfn, &b) & emu_pte_rights_for(e, &w, cpl, smap) & VMT_ACCESS_W))
            return VMT_E_RANGE;
        emu_set_ad_bits(e, &w, true);
        size_t n = EMU_PAGE - vmt_page_offset(va);
        if (n > len)
            n = len;
        emu_host_write(e, b, (uint32_t)vmt_page_offset(va), in, n);
        in += n;
        va += n;
        len -= n;
    }
    return VMT_OK;
}
