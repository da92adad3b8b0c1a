/*
 * drivers/emu/emu_state.c — the full vCPU state in and out
 * (VMT_CAP_VCPU_STATE) and the dirty log (VMT_CAP_DIRTY_LOG).
 *
 * vCPU state: vmt_regs goes through emu_regs_write (same checks as
 * set_regs); hidden segment parts of CS..GS come from the guest's GDT on
 * the way out (in 64-bit mode Unicorn keeps only selectors and the
 * privilege level, which emu_set_cpl owns); TR and LDTR are Unicorn's own
 * (uc_x86_mmr, QEMU flag layout = descriptor bits 8-23); the MSRs go
 * through emu_msr_access (bus first, like the guest's RDMSR/WRMSR); the
 * FPU is converted between FXSAVE layout and Unicorn's registers (FP0-7 are
 * physical registers: ST(i) = FP[(TOP + i) & 7]; the abridged tag word has
 * one bit per register, Unicorn's full one two); the TSC sets the offset of
 * the virtual clock; `halted` makes the next run start in HLT; the
 * interrupt shadow is QEMU's HF_INHIBIT_IRQ (read only: a restored shadow
 * is dropped, which at most delays one interrupt by one instruction).
 *
 * Dirty log: a bit per RAM frame. The fill hook hands out W for a frame
 * only once its bit is set (a write fill sets it), and every write the
 * driver makes (engine, delivery frames, A/D bits, write_phys) sets it too.
 * A clear resets the bits and flushes the translations so the next write to
 * each frame is seen again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define HF_INHIBIT_IRQ (1u << 3)

static emu *impl(vmt_driver *d) { return vmt_driver_impl(d); }

static void seg_from_gdt(emu *e, uint16_t sel, uint64_t base, vmt_segment *out)
{
    memset(out, 0, sizeof *out);
    out->selector = sel;
    out->base = base;
    if (!(sel & ~3u))
        return;
    uc_x86_mmr gdtr;
    memset(&gdtr, 0, sizeof gdtr);
    uc_reg_read(e->uc, UC_X86_REG_GDTR, &gdtr);
    uint64_t desc = 0;
    if ((sel & 4) || (uint32_t)(sel & ~7u) + 7 > gdtr.limit || emu_va_read(e, gdtr.base + (sel & ~7u), &desc, 8))
        return;
    uint32_t limit = (uint32_t)(desc & 0xffff) | (uint32_t)((desc >> 48) & 0xf) << 16;
    out->attrib = (uint16_t)((desc >> 40) & 0xf0ff);
    if (out->attrib & VMT_SEG_ATTR_G)
        limit = limit << 12 | 0xfff;
    out->limit = limit;
}

static void seg_from_mmr(const uc_x86_mmr *m, vmt_segment *out)
{
    out->selector = m->selector;
    out->base = m->base;
    out->limit = m->limit;
    out->attrib = (uint16_t)((m->flags >> 8) & 0xf0ff);
}

static uc_x86_mmr mmr_from_seg(const vmt_segment *s)
{
    uc_x86_mmr m;
    memset(&m, 0, sizeof m);
    m.selector = s->selector;
    m.base = s->base;
    m.limit = s->limit;
    m.flags = (uint32_t)(s->attrib & 0xf0ff) << 8;
    return m;
}

static uint64_t msr_or(emu *e, uint32_t index, uint64_t dflt)
{
    uint64_t v = 0;
    return emu_msr_access(e, index, false, &v) == EMU_MSR_OK ? v : dflt;
}

void emu_fpu_read(emu *e, vmt_fpu_state *f)
{
    memset(f, 0, sizeof *f);
    uint16_t fcw = 0, fsw = 0, ftw = 0;
    uc_reg_read(e->uc, UC_X86_REG_FPCW, &fcw);
    uc_reg_read(e->uc, UC_X86_REG_FPSW, &fsw);
    uc_reg_read(e->uc, UC_X86_REG_FPTAG, &ftw);
    uint32_t mxcsr = 0;
    uc_reg_read(e->uc, UC_X86_REG_MXCSR, &mxcsr);
    uint8_t abridged = 0;
    for (int i = 0; i < 8; i++)
        if (((ftw >> (2 * i)) & 3) != 3)
            abridged |= (uint8_t)(1u << i);
    memcpy(f->fxsave + 0, &fcw, 2);
    memcpy(f->fxsave + 2, &fsw, 2);
    f->fxsave[4] = abridged;
    memcpy(f->fxsave + 24, &mxcsr, 4);
    uint32_t mask = 0xffbf;
    memcpy(f->fxsave + 28, &mask, 4);
    unsigned top = (fsw >> 11) & 7;
    for (unsigned i = 0; i < 8; i++) {
        uint8_t st[10];
        uc_reg_read(e->uc, UC_X86_REG_FP0 + (int)((top + i) & 7), st);
        memcpy(f->fxsave + 32 + 16 * i, st, 10);
    }
    for (int i = 0; i < 16; i++) {
        uint8_t y[32];
        memset(y, 0, sizeof y);
        if (uc_reg_read(e->uc, UC_X86_REG_YMM0 + i, y) == UC_ERR_OK) {
            memcpy(f->fxsave + 160 + 16 * i, y, 16);
            memcpy(f->ymm_hi[i], y + 16, 16);
        } else {
            uc_reg_read(e->uc, UC_X86_REG_XMM0 + i, f->fxsave + 160 + 16 * i);
        }
    }
}

void emu_fpu_write(emu *e, const vmt_fpu_state *f)
{
    uint16_t fcw, fsw;
    memcpy(&fcw, f->fxsave + 0, 2);
    memcpy(&fsw, f->fxsave + 2, 2);
    uint8_t abridged = f->fxsave[4];
    uint32_t mxcsr;
    memcpy(&mxcsr, f->fxsave + 24, 4);
    uint16_t ftw = 0;
    for (int i = 0; i < 8; i++)
        if (!(abridged >> i & 1))
            ftw |= (uint16_t)(3u << (2 * i));
    uc_reg_write(e->uc, UC_X86_REG_FPCW, &fcw);
    uc_reg_write(e->uc, UC_X86_REG_FPSW, &fsw);
    uc_reg_write(e->uc, UC_X86_REG_FPTAG, &ftw);
    uc_reg_write(e->uc, UC_X86_REG_MXCSR, &mxcsr);
    unsigned top = (fsw >> 11) & 7;
    for (unsigned i = 0; i < 8; i++) {
        uint8_t st[10];
        memcpy(st, f->fxsave + 32 + 16 * i, 10);
        uc_reg_write(e->uc, UC_X86_REG_FP0 + (int)((top + i) & 7), st);
    }
    for (int i = 0; i < 16; i++) {
        uint8_t y[32];
        memcpy(y, f->fxsave + 160 + 16 * i, 16);
        memcpy(y + 16, f->ymm_hi[i], 16);
        if (uc_reg_write(e->uc, UC_X86_REG_YMM0 + i, y) != UC_ERR_OK)
            uc_reg_write(e->uc, UC_X86_REG_XMM0 + i, y);
    }
}

vmt_status emu_op_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s)
{
    emu *e = impl(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    vmt_vcpu_state_init(s);
    emu_regs_read(e, &s->regs);
    seg_from_gdt(e, s->regs.cs, 0, &s->cs);
    seg_from_gdt(e, s->regs.ss, 0, &s->ss);
    /* what the CPU runs with, whatever the GDT says now: a 64-bit code
     * segment and a data stack segment at the current privilege level */
    unsigned dpl = s->regs.cs & 3;
    if (!(s->cs.attrib & VMT_SEG_ATTR_P) || !(s->cs.attrib & VMT_SEG_ATTR_L)) {
        s->cs.attrib = (uint16_t)(0x209b | dpl << 5);
        s->cs.limit = 0xffffffff;
    }
    if (s->regs.ss && !(s->ss.attrib & VMT_SEG_ATTR_P)) {
        s->ss.attrib = (uint16_t)(0xc093 | dpl << 5);
        s->ss.limit = 0xffffffff;
    }
    seg_from_gdt(e, s->regs.ds, 0, &s->ds);
    seg_from_gdt(e, s->regs.es, 0, &s->es);
    seg_from_gdt(e, s->regs.fs, s->regs.fs_base, &s->fs);
    seg_from_gdt(e, s->regs.gs, s->regs.gs_base, &s->gs);
    s->fs.base = s->regs.fs_base;
    s->gs.base = s->regs.gs_base;
    uc_x86_mmr m;
    memset(&m, 0, sizeof m);
    uc_reg_read(e->uc, UC_X86_REG_TR, &m);
    seg_from_mmr(&m, &s->tr);
    memset(&m, 0, sizeof m);
    uc_reg_read(e->uc, UC_X86_REG_LDTR, &m);
    seg_from_mmr(&m, &s->ldtr);
    s->star = emu_msr_get(e, 0xc0000081);
    s->lstar = emu_msr_get(e, 0xc0000082);
    s->cstar = emu_msr_get(e, 0xc0000083);
    s->fmask = emu_msr_get(e, 0xc0000084);
    s->sysenter_cs = emu_msr_get(e, 0x174);
    s->sysenter_esp = emu_msr_get(e, 0x175);
    s->sysenter_eip = emu_msr_get(e, 0x176);
    s->pat = emu_msr_get(e, 0x277);
    s->tsc_aux = emu_msr_get(e, 0xc0000103);
    s->misc_enable = msr_or(e, 0x1a0, 1);
    s->spec_ctrl = msr_or(e, 0x48, 0);
    s->mtrr_def_type = msr_or(e, 0x2ff, 0);
    s->apic_base = msr_or(e, 0x1b, 0xfee00900);
    s->tsc_deadline = msr_or(e, 0x6e0, 0);
    s->xcr0 = 1;
    s->tsc = emu_tsc_now(e);
    emu_fpu_read(e, &s->fpu);
    s->halted = e->halted;
    uc_context_save(e->uc, e->cpl_ctx);
    uint32_t hf;
    memcpy(&hf, (const char *)e->cpl_ctx + e->hflags_off, 4);
    s->interrupt_shadow = (hf & HF_INHIBIT_IRQ) ? 1 : 0;
    s->known = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_SYSENTER | VMT_VS_MSRS | VMT_VS_APIC_BASE |
               VMT_VS_FPU | VMT_VS_TSC | VMT_VS_EVENTS;
    return VMT_OK;
}

vmt_status emu_op_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s)
{
    emu *e = impl(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    char why[224];
    if (vmt_vcpu_state_check(s, why, sizeof why) != VMT_OK)
        return vmt_driver_fail(d, VMT_E_INVAL, "vCPU state refused: %s", why);
    uint32_t k = s->known;
    if ((k & VMT_VS_SEGMENTS) && s->cs.selector && !(s->cs.attrib & VMT_SEG_ATTR_L))
        return vmt_driver_fail(d, VMT_E_NOTSUP, "CS 0x%x is not a 64-bit code segment: compatibility mode is not "
                               "supported by the emulator driver", s->cs.selector);
    if ((k & VMT_VS_EVENTS) && s->event_pending)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "a pending event (vector %u) cannot be restored by the emulator driver",
                               s->event_vector);
    if (k & VMT_VS_REGS) {
        vmt_status st = emu_regs_write(e, &s->regs, why, sizeof why);
        if (st)
            return vmt_driver_fail(d, st, "vCPU state refused: %s", why);
    }
    if (k & VMT_VS_SEGMENTS) {
        uc_x86_mmr m = mmr_from_seg(&s->tr);
        uc_reg_write(e->uc, UC_X86_REG_TR, &m);
        m = mmr_from_seg(&s->ldtr);
        uc_reg_write(e->uc, UC_X86_REG_LDTR, &m);
    }
    static const uint32_t groups[] = { VMT_VS_SYSCALL, VMT_VS_SYSCALL, VMT_VS_SYSCALL, VMT_VS_SYSCALL,
                                       VMT_VS_SYSENTER, VMT_VS_SYSENTER, VMT_VS_SYSENTER, VMT_VS_MSRS,
                                       VMT_VS_MSRS, VMT_VS_MSRS, VMT_VS_MSRS, VMT_VS_MSRS,
                                       VMT_VS_APIC_BASE, VMT_VS_APIC_BASE };
    static const uint32_t ids[] = { 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0x174, 0x175, 0x176,
                                    0x277,      0xc0000103, 0x1a0,      0x48,       0x2ff, 0x1b,  0x6e0 };
    const uint64_t vals[] = { s->star,        s->lstar,        s->cstar,        s->fmask,   s->sysenter_cs,
                              s->sysenter_esp, s->sysenter_eip, s->pat,          s->tsc_aux, s->misc_enable,
                              s->spec_ctrl,    s->mtrr_def_type, s->apic_base,    s->tsc_deadline };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        uint64_t v = vals[i];
        if (!(k & groups[i]))
            continue;
        if (ids[i] == 0x6e0 && !v)
            continue; /* an unarmed deadline: nothing to tell the bus */
        emu_msr_result r = emu_msr_access(e, ids[i], true, &v);
        if (r != EMU_MSR_OK)
            return vmt_driver_fail(d, VMT_E_INVAL, "vCPU state refused: MSR 0x%x = 0x%" PRIx64 " is not accepted",
                                   ids[i], vals[i]);
    }
    if (k & VMT_VS_FPU)
        emu_fpu_write(e, &s->fpu);
    if (k & VMT_VS_TSC)
        emu_tsc_set(e, s->tsc);
    if (k & VMT_VS_EVENTS)
        e->halted = s->halted;
    if (e->stopped && e->stop.reason == VMT_STOP_HALT)
        e->stopped = false;
    return VMT_OK;
}

void emu_dirty_mark(emu *e, vmt_gfn frame)
{
    if (frame < e->ram_frames)
        e->dirty[frame >> 3] |= (uint8_t)(1u << (frame & 7));
}

bool emu_dirty_test(const emu *e, vmt_gfn frame)
{
    return frame >= e->ram_frames || (e->dirty[frame >> 3] >> (frame & 7) & 1);
}

vmt_status emu_op_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear)
{
    emu *e = impl(d);
    for (vmt_gfn g = 0; g < e->ram_frames; g++) {
        if (!(e->dirty[g >> 3] >> (g & 7) & 1))
            continue;
        if (fn && fn(ctx, g))
            return VMT_OK; /* stopped by fn: the log stays */
    }
    if (clear) {
        memset(e->dirty, 0, (size_t)((e->ram_frames + 7) / 8));
        emu_tlb_flush(e); /* W is handed out again only at each frame's next write */
    }
    return VMT_OK;
}
