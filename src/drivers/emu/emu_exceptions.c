/*
 * drivers/emu/emu_exceptions.c — privilege levels, exception and interrupt
 * delivery through the guest's IDT, and SYSCALL / SYSENTER.
 *
 * Design: Unicorn 2.1 calls UC_HOOK_INTR instead of delivering anything
 * through the guest IDT, performs no SYSCALL/SYSENTER (UC_HOOK_INSN only)
 * and, in 64-bit mode, writes only the selector of CS/SS/DS/ES in
 * uc_reg_write: nothing a user of its API does lowers the privilege level
 * (QEMU keeps it in env->hflags, set from SS.DPL when a segment cache is
 * loaded). iretq, sysretq and sysexit executed by the guest do raise it
 * correctly. So the driver performs every entry into the kernel itself, per
 * the SDM, and switches Unicorn's privilege level by patching the two CPL
 * bits of hflags in a saved context (uc_context_save, patch,
 * uc_context_restore; ~5.5 KB copied, a few microseconds). The offset of
 * hflags is found once per driver by flipping CR0.TS and CR0.EM, which QEMU
 * mirrors into hflags bits 11 and 10, and diffing saved contexts; if it
 * cannot be found the driver refuses to be created (the message says so).
 *
 * Delivery builds the 64-bit frame like the CPU: the stack is TSS.RSPn on a
 * privilege change, TSS.IST[k] when the gate names one, aligned to 16
 * bytes; SS, RSP, RFLAGS, CS, RIP and the error code are pushed; CS is the
 * gate's selector, SS becomes null on a privilege change; TF/RF/NT/VM are
 * cleared and IF for interrupt gates. A fault while delivering becomes #DF;
 * one while delivering #DF is a triple fault: the run stops with the reason.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define HF_CPL_MASK 3u
#define HF_CS32 (1u << 4)
#define HF_SS32 (1u << 5)
#define HF_ADDSEG (1u << 6)
#define HF_EM (1u << 10)
#define HF_TS (1u << 11)
#define HF_LMA (1u << 14)
#define HF_CS64 (1u << 15)

#define RFLAGS_NT (1ull << 14)
#define RFLAGS_VM (1ull << 17)

static void stop_with(emu *e, vmt_stop_reason reason, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void stop_with(emu *e, vmt_stop_reason reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->stop.reason = reason;
    vsnprintf(e->stop.message, sizeof e->stop.message, fmt, ap);
    va_end(ap);
}

vmt_status emu_cpl_init(emu *e, char *why, size_t why_len)
{
    e->cpl_ctx_size = uc_context_size(e->uc);
    uc_context *a = NULL, *b = NULL, *c = NULL;
    if (uc_context_alloc(e->uc, &a) || uc_context_alloc(e->uc, &b) || uc_context_alloc(e->uc, &c)) {
        snprintf(why, why_len, "cannot allocate unicorn contexts");
        goto fail;
    }
    uint64_t cr0 = emu_rd(e, UC_X86_REG_CR0);
    uc_context_save(e->uc, a);
    emu_wr(e, UC_X86_REG_CR0, cr0 | 8); /* TS */
    uc_context_save(e->uc, b);
    emu_wr(e, UC_X86_REG_CR0, cr0 | 4); /* EM */
    uc_context_save(e->uc, c);
    emu_wr(e, UC_X86_REG_CR0, cr0);
    unsigned found = 0;
    for (size_t i = 0; i + 4 <= e->cpl_ctx_size; i += 4) {
        uint32_t x, y, z;
        memcpy(&x, (const char *)a + i, 4);
        memcpy(&y, (const char *)b + i, 4);
        memcpy(&z, (const char *)c + i, 4);
        if ((x ^ y) == HF_TS && (x ^ z) == HF_EM && (x & HF_LMA) && !(x & HF_CPL_MASK)) {
            e->hflags_off = i;
            found++;
        }
    }
    uc_context_free(b);
    uc_context_free(c);
    if (found != 1) {
        snprintf(why, why_len, "cannot locate the privilege level in unicorn's context (%u candidates): "
                 "this unicorn build is not supported", found);
        uc_context_free(a);
        return VMT_E_NOTSUP;
    }
    e->cpl_ctx = a;
    return VMT_OK;
fail:
    if (a)
        uc_context_free(a);
    if (b)
        uc_context_free(b);
    if (c)
        uc_context_free(c);
    return VMT_E_DRIVER;
}

void emu_set_cpl(emu *e, unsigned cpl, bool cs64)
{
    uc_context_save(e->uc, e->cpl_ctx);
    uint32_t hf;
    memcpy(&hf, (char *)e->cpl_ctx + e->hflags_off, 4);
    uint32_t want = (hf & ~HF_CPL_MASK) | (cpl & 3);
    if (cs64)
        want = (want | HF_CS64 | HF_CS32 | HF_SS32) & ~HF_ADDSEG;
    if (want == hf)
        return;
    memcpy((char *)e->cpl_ctx + e->hflags_off, &want, 4);
    e->regs_from_event = false;
    uc_context_restore(e->uc, e->cpl_ctx);
}

/* An implicit supervisor read (TSS): SMAP applies as emu_smap_implicit says. */
static bool read64_sys(emu *e, uint64_t va, uint64_t *v, uint8_t cpl)
{
    return emu_va_read_data(e, va, v, 8, emu_smap_implicit(e, cpl)) == VMT_OK;
}

/* One delivery attempt; false with *why set when the guest cannot take it
 * (the caller escalates to #DF / triple fault). */
static bool deliver_once(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip, bool soft, char *why,
                         size_t why_len)
{
    uc_x86_mmr idtr;
    memset(&idtr, 0, sizeof idtr);
    uc_reg_read(e->uc, UC_X86_REG_IDTR, &idtr);
    if ((uint64_t)vector * 16 + 15 > idtr.limit) {
        snprintf(why, why_len, "vector beyond the IDT limit 0x%x", idtr.limit);
        return false;
    }
    emu_sync_selectors(e);
    unsigned cpl = e->sel[0] & 3;
    uint8_t gate[16];
    vmt_status rst = emu_va_read_data(e, idtr.base + (uint64_t)vector * 16, gate, sizeof gate,
                                      emu_smap_implicit(e, (uint8_t)cpl));
    if (rst) {
        snprintf(why, why_len, "IDT at 0x%" PRIx64 " not readable%s", idtr.base,
                 rst == VMT_E_CONFLICT ? " (a user page under SMAP)" : "");
        return false;
    }
    unsigned type = gate[5] & 0xf, dpl = (gate[5] >> 5) & 3;
    if (!(gate[5] & 0x80) || (type != 0xe && type != 0xf)) {
        snprintf(why, why_len, "IDT gate not present or not a 64-bit interrupt/trap gate");
        return false;
    }
    if (soft && dpl < cpl) {
        snprintf(why, why_len, "INT 0x%x from CPL%u through a DPL%u gate", vector, cpl, dpl);
        return false;
    }
    uint64_t target = (uint64_t)gate[0] | (uint64_t)gate[1] << 8 | (uint64_t)gate[6] << 16 |
                      (uint64_t)gate[7] << 24 | (uint64_t)gate[8] << 32 | (uint64_t)gate[9] << 40 |
                      (uint64_t)gate[10] << 48 | (uint64_t)gate[11] << 56;
    uint16_t selector = (uint16_t)(gate[2] | gate[3] << 8);
    unsigned ist = gate[4] & 7;
    unsigned new_cpl = (selector & 3) < cpl ? (selector & 3) : cpl;
    uint64_t rsp = emu_rd(e, UC_X86_REG_RSP);
    uint64_t rflags = emu_rd(e, UC_X86_REG_RFLAGS);
    uint64_t new_rsp = rsp;
    if (ist || new_cpl != cpl) {
        uc_x86_mmr tr;
        memset(&tr, 0, sizeof tr);
        uc_reg_read(e->uc, UC_X86_REG_TR, &tr);
        uint64_t off = ist ? 0x24 + 8ull * (ist - 1) : 4 + 8ull * new_cpl;
        if (off + 7 > tr.limit || !read64_sys(e, tr.base + off, &new_rsp, (uint8_t)cpl)) {
            snprintf(why, why_len, "the TSS at 0x%" PRIx64 " (limit 0x%x) has no readable %s%u", tr.base, tr.limit,
                     ist ? "IST" : "RSP", ist ? ist : new_cpl);
            return false;
        }
    }
    uint64_t frame[6];
    unsigned n = 0;
    if (has_err)
        frame[n++] = err;
    frame[n++] = ret_rip;
    frame[n++] = e->sel[0];
    frame[n++] = rflags;
    frame[n++] = rsp;
    frame[n++] = e->sel[1];
    new_rsp = (new_rsp & ~(uint64_t)15) - 8ULL * n;
    /* the pushes are supervisor accesses at the new CPL (AC unchanged) */
    vmt_status wst = emu_va_write_data(e, new_rsp, frame, 8ULL * n, emu_smap_explicit(e, (uint8_t)new_cpl));
    if (wst) {
        snprintf(why, why_len, "stack at 0x%" PRIx64 " is not writable%s", new_rsp,
                 wst == VMT_E_CONFLICT ? " (a user page under SMAP)" : "");
        return false;
    }
    rflags &= ~(VMT_RFLAGS_TF | VMT_RFLAGS_RF | RFLAGS_NT | RFLAGS_VM);
    if (type == 0xe)
        rflags &= ~VMT_RFLAGS_IF;
    if (new_cpl != cpl)
        emu_set_cpl(e, new_cpl, true);
    emu_wr(e, UC_X86_REG_RSP, new_rsp);
    emu_wr(e, UC_X86_REG_RFLAGS, rflags);
    emu_wr(e, UC_X86_REG_RIP, target);
    emu_wr(e, UC_X86_REG_CS, selector);
    e->sel[0] = selector;
    if (new_cpl != cpl) {
        emu_wr(e, UC_X86_REG_SS, new_cpl);
        e->sel[1] = (uint16_t)new_cpl;
    }
    emu_snap_selectors(e);
    return true;
}

static bool deliver(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip, bool soft)
{
    char why[160];
    if (deliver_once(e, vector, has_err, err, ret_rip, soft, why, sizeof why))
        return true;
    if (soft) {
        /* INT n through a gate it may not use: #GP(vector * 8 + 2) */
        char why2[160];
        if (deliver_once(e, 13, true, (uint32_t)vector * 8 + 2, ret_rip - 2, false, why2, sizeof why2))
            return true;
    }
    if (vector != 8) {
        char why2[160];
        if (deliver_once(e, 8, true, 0, ret_rip, false, why2, sizeof why2))
            return true;
        stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": %s; then #DF: %s", vector, ret_rip,
                  why, why2);
        return false;
    }
    stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": %s", vector, ret_rip, why);
    return false;
}

bool emu_deliver_exception(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip)
{
    if (vector == 14)
        emu_wr(e, UC_X86_REG_CR2, e->cr2);
    e->halted = false;
    return deliver(e, vector, has_err, err, ret_rip, false);
}

bool emu_deliver_interrupt(emu *e, uint8_t vector, uint64_t ret_rip, bool soft)
{
    e->halted = false;
    return deliver(e, vector, false, 0, ret_rip, soft);
}

bool emu_do_syscall(emu *e, uint64_t rip, uint32_t len)
{
    if (!(e->efer & VMT_EFER_SCE))
        return emu_deliver_exception(e, 6, false, 0, rip);
    uint64_t star = emu_msr_get(e, 0xc0000081), lstar = emu_msr_get(e, 0xc0000082);
    uint64_t fmask = emu_msr_get(e, 0xc0000084);
    uint64_t rflags = emu_rd(e, UC_X86_REG_RFLAGS);
    uint16_t cs = (uint16_t)((star >> 32) & 0xfffc);
    emu_wr(e, UC_X86_REG_RCX, rip + len);
    emu_wr(e, UC_X86_REG_R11, rflags & ~VMT_RFLAGS_RF);
    emu_set_cpl(e, 0, true);
    emu_wr(e, UC_X86_REG_RFLAGS, (rflags & ~fmask & ~VMT_RFLAGS_RF) | 2);
    emu_wr(e, UC_X86_REG_CS, cs);
    emu_wr(e, UC_X86_REG_SS, (uint16_t)(cs + 8));
    emu_wr(e, UC_X86_REG_RIP, lstar);
    e->sel[0] = cs;
    e->sel[1] = (uint16_t)(cs + 8);
    emu_snap_selectors(e);
    return true;
}

bool emu_do_sysenter(emu *e, uint64_t rip, uint32_t len)
{
    (void)len;
    uint64_t scs = emu_msr_get(e, 0x174), sesp = emu_msr_get(e, 0x175), seip = emu_msr_get(e, 0x176);
    if (!(scs & 0xfffc))
        return emu_deliver_exception(e, 13, true, 0, rip);
    uint64_t rflags = emu_rd(e, UC_X86_REG_RFLAGS);
    uint16_t cs = (uint16_t)(scs & 0xfffc);
    emu_set_cpl(e, 0, true);
    emu_wr(e, UC_X86_REG_RFLAGS, (rflags & ~(VMT_RFLAGS_IF | VMT_RFLAGS_RF | RFLAGS_VM)) | 2);
    emu_wr(e, UC_X86_REG_CS, cs);
    emu_wr(e, UC_X86_REG_SS, (uint16_t)(cs + 8));
    emu_wr(e, UC_X86_REG_RSP, sesp);
    emu_wr(e, UC_X86_REG_RIP, seip);
    e->sel[0] = cs;
    e->sel[1] = (uint16_t)(cs + 8);
    emu_snap_selectors(e);
    return true;
}
