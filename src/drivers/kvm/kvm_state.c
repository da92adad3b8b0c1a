/*
 * drivers/kvm/kvm_state.c — VMT_CAP_VCPU_STATE on KVM: the whole resumable
 * vCPU state (vmtrap/vcpu_state.h) from and to KVM_GET/SET_REGS, SREGS,
 * DEBUGREGS, MSRS (one at a time: KVM_SET_MSRS stops at the first MSR it
 * refuses), XSAVE (its first 512 bytes are the FXSAVE image; YMM high
 * halves at offset 576 of the standard format), XCRS, VCPU_EVENTS and
 * MP_STATE, through the injectable ioctl (kvm_plat.h) so tests/kvm/
 * test_kvm_plat.c checks the mapping without /dev/kvm.
 * Limits: the in-kernel LAPIC's registers (KVM_GET_LAPIC) are not part of
 * vmt_vcpu_state (only apic_base and the TSC deadline are); HLT is restored
 * (KVM_MP_STATE_HALTED) only with the in-kernel irqchip; MSRs the host
 * refuses in the optional set (spec_ctrl, tsc_aux, misc_enable,
 * mtrr_def_type, tsc_deadline) are skipped on set and read as 0.
 * A host IA32_TSC write within a second of KVM's expectation may be taken
 * as a synchronisation (see kvm_plat.h); a snapshot's TSC normally is not.
 * Failure atomicity: set validates first (vmt_vcpu_state_check) but a
 * failing ioctl in the middle leaves earlier groups written.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errbuf.h"
#include "drivers/kvm/kvm_plat.h"
#include "vmtrap/vcpu_state.h"

#define XSAVE_YMM_HI 576

static int hio(const kvm_host *h, int fd, unsigned long req, void *arg) { return h->ioctl(h->ctx, fd, req, arg); }

typedef struct msr_slot {
    uint32_t index;
    size_t off;      /* offsetof in vmt_vcpu_state, or of regs.kernel_gs_base */
    uint32_t group;
    bool optional;
} msr_slot;

#define VS(f) offsetof(vmt_vcpu_state, f)
static const msr_slot msr_slots[] = {
    { 0xc0000102u, VS(regs.kernel_gs_base), VMT_VS_REGS, false },
    { 0xc0000081u, VS(star), VMT_VS_SYSCALL, false },
    { 0xc0000082u, VS(lstar), VMT_VS_SYSCALL, false },
    { 0xc0000083u, VS(cstar), VMT_VS_SYSCALL, false },
    { 0xc0000084u, VS(fmask), VMT_VS_SYSCALL, false },
    { 0x174u, VS(sysenter_cs), VMT_VS_SYSENTER, false },
    { 0x175u, VS(sysenter_esp), VMT_VS_SYSENTER, false },
    { 0x176u, VS(sysenter_eip), VMT_VS_SYSENTER, false },
    { 0x277u, VS(pat), VMT_VS_MSRS, false },
    { 0xc0000103u, VS(tsc_aux), VMT_VS_MSRS, true },
    { 0x1a0u, VS(misc_enable), VMT_VS_MSRS, true },
    { 0x48u, VS(spec_ctrl), VMT_VS_MSRS, true },
    { 0x2ffu, VS(mtrr_def_type), VMT_VS_MSRS, true },
    { 0x6e0u, VS(tsc_deadline), VMT_VS_APIC_BASE, true },
    { 0x10u, VS(tsc), VMT_VS_TSC, false },
};

static uint64_t *msr_field(vmt_vcpu_state *s, const msr_slot *m) { return (uint64_t *)(void *)((uint8_t *)s + m->off); }

static int msr_io(const kvm_host *h, int fd, unsigned long req, uint32_t index, uint64_t *val)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e;
    } m;
    memset(&m, 0, sizeof m);
    m.hdr.nmsrs = 1;
    m.e.index = index;
    m.e.data = *val;
    int rc = hio(h, fd, req, &m);
    if (rc == 1 && req == KVM_GET_MSRS)
        *val = m.e.data;
    return rc == 1 ? 0 : rc < 0 ? rc : -EINVAL;
}

static void seg_from_kvm(vmt_segment *o, const struct kvm_segment *k)
{
    o->base = k->base;
    o->limit = k->limit;
    o->selector = k->selector;
    o->attrib = (uint16_t)((k->type & 15u) | (k->s & 1u) << 4 | (k->dpl & 3u) << 5 | (k->present & 1u) << 7 |
                           (k->avl & 1u) << 12 | (k->l & 1u) << 13 | (k->db & 1u) << 14 | (k->g & 1u) << 15);
}

static void seg_to_kvm(struct kvm_segment *k, const vmt_segment *o)
{
    memset(k, 0, sizeof *k);
    k->base = o->base;
    k->limit = o->limit;
    k->selector = o->selector;
    k->type = o->attrib & 15u;
    k->s = (o->attrib >> 4) & 1u;
    k->dpl = (o->attrib >> 5) & 3u;
    k->present = (o->attrib >> 7) & 1u;
    k->avl = (o->attrib >> 12) & 1u;
    k->l = (o->attrib >> 13) & 1u;
    k->db = (o->attrib >> 14) & 1u;
    k->g = (o->attrib >> 15) & 1u;
    k->unusable = !k->present;
}

#define FAIL(call, rc)                                                                                             \
    do {                                                                                                           \
        vmt_why(why, why_len, "kvm: %s: %s", call, strerror(-(rc)));                                              \
        return VMT_E_DRIVER;                                                                                       \
    } while (0)

vmt_status kvm_state_get(const kvm_host *h, int fd, bool irqchip, vmt_vcpu_state *s, char *why, size_t why_len)
{
    vmt_vcpu_state_init(s);
    struct kvm_regs r;
    struct kvm_sregs sr;
    struct kvm_debugregs dr;
    int rc;
    if ((rc = hio(h, fd, KVM_GET_REGS, &r)) < 0)
        FAIL("KVM_GET_REGS", rc);
    if ((rc = hio(h, fd, KVM_GET_SREGS, &sr)) < 0)
        FAIL("KVM_GET_SREGS", rc);
    if ((rc = hio(h, fd, KVM_GET_DEBUGREGS, &dr)) < 0)
        FAIL("KVM_GET_DEBUGREGS", rc);
    vmt_regs *g = &s->regs;
    g->rax = r.rax, g->rbx = r.rbx, g->rcx = r.rcx, g->rdx = r.rdx, g->rsi = r.rsi, g->rdi = r.rdi;
    g->rbp = r.rbp, g->rsp = r.rsp, g->r8 = r.r8, g->r9 = r.r9, g->r10 = r.r10, g->r11 = r.r11;
    g->r12 = r.r12, g->r13 = r.r13, g->r14 = r.r14, g->r15 = r.r15, g->rip = r.rip, g->rflags = r.rflags;
    g->cr0 = sr.cr0, g->cr2 = sr.cr2, g->cr3 = sr.cr3, g->cr4 = sr.cr4, g->cr8 = sr.cr8, g->efer = sr.efer;
    g->fs_base = sr.fs.base, g->gs_base = sr.gs.base;
    g->gdtr_base = sr.gdt.base, g->gdtr_limit = sr.gdt.limit, g->idtr_base = sr.idt.base, g->idtr_limit = sr.idt.limit;
    g->cs = sr.cs.selector, g->ss = sr.ss.selector, g->ds = sr.ds.selector;
    g->es = sr.es.selector, g->fs = sr.fs.selector, g->gs = sr.gs.selector;
    g->dr0 = dr.db[0], g->dr1 = dr.db[1], g->dr2 = dr.db[2], g->dr3 = dr.db[3], g->dr6 = dr.dr6, g->dr7 = dr.dr7;
    seg_from_kvm(&s->cs, &sr.cs), seg_from_kvm(&s->ss, &sr.ss), seg_from_kvm(&s->ds, &sr.ds);
    seg_from_kvm(&s->es, &sr.es), seg_from_kvm(&s->fs, &sr.fs), seg_from_kvm(&s->gs, &sr.gs);
    seg_from_kvm(&s->tr, &sr.tr), seg_from_kvm(&s->ldtr, &sr.ldt);
    s->apic_base = sr.apic_base;
    for (size_t i = 0; i < sizeof msr_slots / sizeof msr_slots[0]; i++) {
        uint64_t v = 0;
        if ((rc = msr_io(h, fd, KVM_GET_MSRS, msr_slots[i].index, &v)) < 0 && !msr_slots[i].optional) {
            vmt_why(why, why_len, "kvm: KVM_GET_MSRS(%#x): %s", msr_slots[i].index, strerror(-rc));
            return VMT_E_DRIVER;
        }
        *msr_field(s, &msr_slots[i]) = rc < 0 ? 0 : v;
    }
    struct kvm_xsave *xs = calloc(1, sizeof *xs);
    if (!xs) {
        vmt_why(why, why_len, "kvm: out of memory");
        return VMT_E_NOMEM;
    }
    rc = hio(h, fd, KVM_GET_XSAVE, xs);
    if (rc >= 0) {
        memcpy(s->fpu.fxsave, xs->region, sizeof s->fpu.fxsave);
        memcpy(s->fpu.ymm_hi, (uint8_t *)xs->region + XSAVE_YMM_HI, sizeof s->fpu.ymm_hi);
    }
    free(xs);
    if (rc < 0)
        FAIL("KVM_GET_XSAVE", rc);
    struct kvm_xcrs xc;
    memset(&xc, 0, sizeof xc);
    if ((rc = hio(h, fd, KVM_GET_XCRS, &xc)) < 0)
        FAIL("KVM_GET_XCRS", rc);
    s->xcr0 = 1; /* x87 only, unless KVM says more */
    for (uint32_t i = 0; i < xc.nr_xcrs && i < KVM_MAX_XCRS; i++)
        if (xc.xcrs[i].xcr == 0)
            s->xcr0 = xc.xcrs[i].value;
    struct kvm_vcpu_events ev;
    memset(&ev, 0, sizeof ev);
    if ((rc = hio(h, fd, KVM_GET_VCPU_EVENTS, &ev)) < 0)
        FAIL("KVM_GET_VCPU_EVENTS", rc);
    s->interrupt_shadow = ev.interrupt.shadow ? 1 : 0;
    if (ev.exception.injected || ev.exception.pending) {
        s->event_pending = true;
        s->event_vector = ev.exception.nr;
        s->event_has_error = ev.exception.has_error_code;
        s->event_error = ev.exception.error_code;
    } else if (ev.interrupt.injected) {
        s->event_pending = true;
        s->event_vector = ev.interrupt.nr;
    }
    if (irqchip) {
        struct kvm_mp_state mp = { 0 };
        if ((rc = hio(h, fd, KVM_GET_MP_STATE, &mp)) < 0)
            FAIL("KVM_GET_MP_STATE", rc);
        s->halted = mp.mp_state == KVM_MP_STATE_HALTED;
    }
    s->known = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_SYSENTER | VMT_VS_MSRS | VMT_VS_APIC_BASE |
               VMT_VS_FPU | VMT_VS_TSC | VMT_VS_EVENTS;
    s->reconstructed = 0;
    return VMT_OK;
}

vmt_status kvm_state_set(const kvm_host *h, int fd, bool irqchip, const vmt_vcpu_state *s, char *why,
                         size_t why_len)
{
    vmt_status st = vmt_vcpu_state_check(s, why, why_len);
    if (st)
        return st;
    int rc;
    if (s->known & (VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_APIC_BASE)) {
        struct kvm_sregs sr;
        if ((rc = hio(h, fd, KVM_GET_SREGS, &sr)) < 0)
            FAIL("KVM_GET_SREGS", rc);
        if (s->known & VMT_VS_SEGMENTS) {
            seg_to_kvm(&sr.cs, &s->cs), seg_to_kvm(&sr.ss, &s->ss), seg_to_kvm(&sr.ds, &s->ds);
            seg_to_kvm(&sr.es, &s->es), seg_to_kvm(&sr.fs, &s->fs), seg_to_kvm(&sr.gs, &s->gs);
            seg_to_kvm(&sr.tr, &s->tr), seg_to_kvm(&sr.ldt, &s->ldtr);
        }
        if (s->known & VMT_VS_REGS) {
            const vmt_regs *g = &s->regs;
            sr.cr0 = g->cr0, sr.cr2 = g->cr2, sr.cr3 = g->cr3, sr.cr4 = g->cr4, sr.cr8 = g->cr8, sr.efer = g->efer;
            sr.gdt.base = g->gdtr_base, sr.gdt.limit = g->gdtr_limit;
            sr.idt.base = g->idtr_base, sr.idt.limit = g->idtr_limit;
            sr.fs.base = g->fs_base, sr.gs.base = g->gs_base;
            sr.cs.selector = g->cs, sr.ss.selector = g->ss, sr.ds.selector = g->ds;
            sr.es.selector = g->es, sr.fs.selector = g->fs, sr.gs.selector = g->gs;
        }
        if (s->known & VMT_VS_APIC_BASE)
            sr.apic_base = s->apic_base;
        if ((rc = hio(h, fd, KVM_SET_SREGS, &sr)) < 0)
            FAIL("KVM_SET_SREGS", rc);
    }
    if (s->known & VMT_VS_REGS) {
        const vmt_regs *g = &s->regs;
        struct kvm_regs r = {
            .rax = g->rax, .rbx = g->rbx, .rcx = g->rcx, .rdx = g->rdx, .rsi = g->rsi, .rdi = g->rdi,
            .rsp = g->rsp, .rbp = g->rbp, .r8 = g->r8, .r9 = g->r9, .r10 = g->r10, .r11 = g->r11,
            .r12 = g->r12, .r13 = g->r13, .r14 = g->r14, .r15 = g->r15, .rip = g->rip, .rflags = g->rflags | 2,
        };
        if ((rc = hio(h, fd, KVM_SET_REGS, &r)) < 0)
            FAIL("KVM_SET_REGS", rc);
        struct kvm_debugregs dr;
        memset(&dr, 0, sizeof dr);
        dr.db[0] = g->dr0, dr.db[1] = g->dr1, dr.db[2] = g->dr2, dr.db[3] = g->dr3, dr.dr6 = g->dr6;
        dr.dr7 = g->dr7;
        if ((rc = hio(h, fd, KVM_SET_DEBUGREGS, &dr)) < 0)
            FAIL("KVM_SET_DEBUGREGS", rc);
    }
    if (s->known & VMT_VS_FPU) {
        /* XCR0 first: the XSAVE image may use the components it enables */
        struct kvm_xcrs xc;
        memset(&xc, 0, sizeof xc);
        xc.nr_xcrs = 1;
        xc.xcrs[0].xcr = 0;
        xc.xcrs[0].value = s->xcr0 ? s->xcr0 : 1;
        if ((rc = hio(h, fd, KVM_SET_XCRS, &xc)) < 0)
            FAIL("KVM_SET_XCRS", rc);
        struct kvm_xsave *xs = calloc(1, sizeof *xs);
        if (!xs) {
            vmt_why(why, why_len, "kvm: out of memory");
            return VMT_E_NOMEM;
        }
        rc = hio(h, fd, KVM_GET_XSAVE, xs); /* keeps components vmt_fpu_state has no room for */
        if (rc >= 0) {
            uint8_t *x = (uint8_t *)xs->region;
            memcpy(x, s->fpu.fxsave, sizeof s->fpu.fxsave);
            memcpy(x + XSAVE_YMM_HI, s->fpu.ymm_hi, sizeof s->fpu.ymm_hi);
            uint64_t bv;
            memcpy(&bv, x + 512, sizeof bv); /* XSTATE_BV: x87, SSE and (with AVX) YMM hold these values */
            bv |= 3u | (s->xcr0 & 4u);
            memcpy(x + 512, &bv, sizeof bv);
            rc = hio(h, fd, KVM_SET_XSAVE, xs);
        }
        free(xs);
        if (rc < 0)
            FAIL("KVM_GET/SET_XSAVE", rc);
    }
    for (size_t i = 0; i < sizeof msr_slots / sizeof msr_slots[0]; i++) {
        if (!(s->known & msr_slots[i].group))
            continue;
        uint64_t v = *msr_field((vmt_vcpu_state *)(uintptr_t)s, &msr_slots[i]);
        if ((rc = msr_io(h, fd, KVM_SET_MSRS, msr_slots[i].index, &v)) < 0 && !msr_slots[i].optional) {
            vmt_why(why, why_len, "kvm: KVM_SET_MSRS(%#x = %#llx): %s", msr_slots[i].index, (unsigned long long)v,
                    strerror(-rc));
            return VMT_E_DRIVER;
        }
    }
    if (s->known & VMT_VS_EVENTS) {
        struct kvm_vcpu_events ev;
        memset(&ev, 0, sizeof ev);
        if ((rc = hio(h, fd, KVM_GET_VCPU_EVENTS, &ev)) < 0)
            FAIL("KVM_GET_VCPU_EVENTS", rc);
        ev.flags = KVM_VCPUEVENT_VALID_SHADOW;
        ev.interrupt.shadow = s->interrupt_shadow ? KVM_X86_SHADOW_INT_STI : 0;
        memset(&ev.exception, 0, sizeof ev.exception);
        ev.interrupt.injected = 0;
        if (s->event_pending && s->event_vector < 32) {
            ev.exception.injected = 1;
            ev.exception.nr = s->event_vector;
            ev.exception.has_error_code = s->event_has_error;
            ev.exception.error_code = s->event_error;
        } else if (s->event_pending) {
            ev.interrupt.injected = 1;
            ev.interrupt.nr = s->event_vector;
        }
        if ((rc = hio(h, fd, KVM_SET_VCPU_EVENTS, &ev)) < 0)
            FAIL("KVM_SET_VCPU_EVENTS", rc);
        if (irqchip) {
            struct kvm_mp_state mp = { s->halted ? KVM_MP_STATE_HALTED : KVM_MP_STATE_RUNNABLE };
            if ((rc = hio(h, fd, KVM_SET_MP_STATE, &mp)) < 0)
                FAIL("KVM_SET_MP_STATE", rc);
        }
    }
    return VMT_OK;
}
