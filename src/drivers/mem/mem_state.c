/*
 * drivers/mem/mem_state.c — the mem driver's full vCPU state (VCPU_STATE)
 * and dirty log (DIRTY_LOG).
 *
 * vCPU state: mem_vcpu.full holds every group; its `regs` member is not
 * used — `mem_vcpu.regs` stays the one copy of the registers (events and
 * set_regs change it), so get_vcpu_state composes the two. set_vcpu_state
 * validates first (a refused state changes nothing), then copies group by
 * group what s->known names.
 *
 * Dirty log: one bit per RAM frame in m->dirty. Marked by every host write
 * (write_phys) and every write a test makes as the guest (write_view);
 * walked in increasing gfn order; a callback returning non-zero stops the
 * walk and leaves the log as it was.
 */
#include <string.h>

#include "core/errbuf.h"
#include "drivers/mem/mem_internal.h"

void mem_mark_dirty(mem_drv *m, vmt_pa pa, size_t len)
{
    if (!len || !m->dirty)
        return;
    vmt_gfn first = vmt_pa_to_gfn(pa), last = vmt_pa_to_gfn(pa + len - 1);
    if (last >= m->cfg.ram_frames)
        last = m->cfg.ram_frames - 1;
    for (vmt_gfn g = first; g <= last && g < m->cfg.ram_frames; g++)
        m->dirty[g / 64] |= 1ull << (g % 64);
}

static vmt_status need_vcpu(vmt_driver *d, mem_drv *m, vmt_vcpu vcpu, const char *op)
{
    if (vcpu < m->cfg.vcpus)
        return VMT_OK;
    return vmt_driver_fail(d, VMT_E_INVAL, "%s: no vCPU %u (driver has %u)", op, vcpu, m->cfg.vcpus);
}

vmt_status mem_op_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_GET_VCPU_STATE, .vcpu = vcpu };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, "get_vcpu_state");
    if (!st) {
        *s = m->vcpus[vcpu].full;
        s->regs = m->vcpus[vcpu].regs;
        s->known |= VMT_VS_REGS;
    }
    return mem_end(m, &c, st);
}

vmt_status mem_op_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_SET_VCPU_STATE, .vcpu = vcpu };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = need_vcpu(d, m, vcpu, "set_vcpu_state");
    char why[160];
    if (!st && vmt_vcpu_state_check(s, why, sizeof why))
        st = vmt_driver_fail(d, VMT_E_INVAL, "set_vcpu_state: %s", why);
    if (st)
        return mem_end(m, &c, st);
    mem_vcpu *v = &m->vcpus[vcpu];
    vmt_vcpu_state *f = &v->full;
    uint32_t k = s->known;
    if (k & VMT_VS_REGS)
        v->regs = s->regs;
    if (k & VMT_VS_SEGMENTS) {
        f->cs = s->cs, f->ss = s->ss, f->ds = s->ds, f->es = s->es;
        f->fs = s->fs, f->gs = s->gs, f->tr = s->tr, f->ldtr = s->ldtr;
    }
    if (k & VMT_VS_SYSCALL)
        f->star = s->star, f->lstar = s->lstar, f->cstar = s->cstar, f->fmask = s->fmask;
    if (k & VMT_VS_SYSENTER)
        f->sysenter_cs = s->sysenter_cs, f->sysenter_esp = s->sysenter_esp, f->sysenter_eip = s->sysenter_eip;
    if (k & VMT_VS_MSRS) {
        f->pat = s->pat, f->tsc_aux = s->tsc_aux, f->misc_enable = s->misc_enable;
        f->spec_ctrl = s->spec_ctrl, f->mtrr_def_type = s->mtrr_def_type;
    }
    if (k & VMT_VS_APIC_BASE)
        f->apic_base = s->apic_base, f->tsc_deadline = s->tsc_deadline;
    if (k & VMT_VS_FPU)
        f->fpu = s->fpu, f->xcr0 = s->xcr0;
    if (k & VMT_VS_TSC)
        f->tsc = s->tsc;
    if (k & VMT_VS_EVENTS) {
        f->halted = s->halted, f->interrupt_shadow = s->interrupt_shadow;
        f->event_pending = s->event_pending, f->event_vector = s->event_vector;
        f->event_has_error = s->event_has_error, f->event_error = s->event_error;
    }
    f->known |= k;
    f->reconstructed = (f->reconstructed & ~k) | (s->reconstructed & k);
    return mem_end(m, &c, VMT_OK);
}

vmt_status mem_op_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_DIRTY_LOG, .enable = clear };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    size_t words = (m->cfg.ram_frames + 63) / 64;
    if (fn) {
        for (size_t w = 0; w < words; w++) {
            uint64_t bits = m->dirty[w];
            while (bits) {
                unsigned b = (unsigned)__builtin_ctzll(bits);
                bits &= bits - 1;
                if (fn(ctx, (vmt_gfn)(w * 64 + b)))
                    return mem_end(m, &c, VMT_OK); /* stopped: the log stays */
            }
        }
    }
    if (clear)
        memset(m->dirty, 0, words * sizeof *m->dirty);
    return mem_end(m, &c, VMT_OK);
}
