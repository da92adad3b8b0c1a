/*
 * drivers/kvm/kvm_vcpu.c — vCPU state: long-mode setup, registers, guest
 * debug (software/hardware breakpoints, single-step) and injection.
 *
 * Design: the vCPU starts in the image's mode without firmware: segment
 * caches are written directly (64-bit code segment when EFER.LMA, flat
 * data segments, a busy 64-bit TSS so VMX entry checks pass), so the guest
 * needs no GDT or IDT until it loads its own. vmt_regs is filled from
 * KVM_GET_REGS/SREGS/DEBUGREGS and MSR_KERNEL_GS_BASE; set_regs keeps the
 * segment caches and changes only what vmt_regs names.
 *
 * Guest debug: one control word is derived from the driver state every time
 * (SW_BP always, HW_BP when a hardware breakpoint is on and not disabled for
 * a step, SINGLESTEP while a step is active) and sent only when it changes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "drivers/kvm/kvm_internal.h"

#define MSR_KERNEL_GS_BASE 0xc0000102u

static void seg_flat(struct kvm_segment *s, uint16_t sel, bool code, bool longmode)
{
    memset(s, 0, sizeof *s);
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = code ? 11 : 3;
    s->present = 1;
    s->dpl = sel & 3;
    s->s = 1;
    s->l = code && longmode;
    s->db = !(code && longmode);
    s->g = 1;
}

vmt_status kvm_setup_vcpu(kvm_drv *k, const vmt_regs *r, char *why, size_t why_len)
{
    /* CPUID: what KVM supports, so the guest may use NX, etc. */
    int n = 128;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + (size_t)n * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) {
        vmt_why(why, why_len, "kvm: out of memory");
        return VMT_E_NOMEM;
    }
    cpuid->nent = (uint32_t)n;
    if (ioctl(k->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
        vmt_why(why, why_len, "kvm: KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
        free(cpuid);
        return VMT_E_DRIVER;
    }
    /* KVM emulates the TSC-deadline timer in its in-kernel LAPIC but leaves
     * the CPUID bit (leaf 1 ECX 24) to user space (api.rst,
     * KVM_CAP_TSC_DEADLINE_TIMER) */
    if (k->irqchip && ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
        for (uint32_t i = 0; i < cpuid->nent; i++)
            if (cpuid->entries[i].function == 1)
                cpuid->entries[i].ecx |= 1u << 24;
    if (ioctl(k->vcpu_fd, KVM_SET_CPUID2, cpuid) < 0) {
        vmt_why(why, why_len, "kvm: setting the vCPU's CPUID: %s", strerror(errno));
        free(cpuid);
        return VMT_E_DRIVER;
    }
    free(cpuid);

    struct kvm_sregs s;
    if (ioctl(k->vcpu_fd, KVM_GET_SREGS, &s) < 0) {
        vmt_why(why, why_len, "kvm: KVM_GET_SREGS: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    uint64_t efer = r->efer;
    bool lm = (efer & VMT_EFER_LME) && (r->cr0 & VMT_CR0_PG);
    if (lm)
        efer |= VMT_EFER_LMA;
    seg_flat(&s.cs, r->cs ? r->cs : 0x08, true, lm);
    seg_flat(&s.ss, r->ss, false, lm);
    seg_flat(&s.ds, r->ds, false, lm);
    seg_flat(&s.es, r->es, false, lm);
    seg_flat(&s.fs, r->fs, false, lm);
    seg_flat(&s.gs, r->gs, false, lm);
    s.fs.base = r->fs_base;
    s.gs.base = r->gs_base;
    if (!r->ss)
        s.ss.dpl = s.cs.dpl;
    memset(&s.tr, 0, sizeof s.tr);
    s.tr.type = 11;
    s.tr.present = 1;
    s.tr.limit = 0x67;
    memset(&s.ldt, 0, sizeof s.ldt);
    s.ldt.type = 2;
    s.ldt.unusable = 1;
    s.cr0 = r->cr0;
    s.cr2 = r->cr2;
    s.cr3 = r->cr3;
    s.cr4 = r->cr4;
    s.cr8 = r->cr8;
    s.efer = efer;
    s.gdt.base = r->gdtr_base;
    s.gdt.limit = r->gdtr_limit;
    s.idt.base = r->idtr_base;
    s.idt.limit = r->idtr_limit;
    if (ioctl(k->vcpu_fd, KVM_SET_SREGS, &s) < 0) {
        vmt_why(why, why_len, "kvm: KVM_SET_SREGS (cr0 0x%" PRIx64 " cr4 0x%" PRIx64 " efer 0x%" PRIx64 "): %s", r->cr0,
                r->cr4, efer, strerror(errno));
        return VMT_E_DRIVER;
    }
    vmt_regs full = *r;
    full.efer = efer;
    if (!(full.rflags & 2))
        full.rflags |= 2;
    if (kvm_set_regs(k, &full)) {
        vmt_why(why, why_len, "kvm: %s", vmt_driver_error(k->d));
        return VMT_E_DRIVER;
    }
    if (kvm_apply_debug(k)) {
        vmt_why(why, why_len, "kvm: %s", vmt_driver_error(k->d));
        return VMT_E_DRIVER;
    }
    return VMT_OK;
}

static vmt_status vfail(kvm_drv *k, const char *call)
{
    return vmt_driver_fail(k->d, VMT_E_DRIVER, "%s: %s", call, strerror(errno));
}

vmt_status kvm_get_regs(kvm_drv *k, vmt_regs *o)
{
    struct kvm_regs g;
    struct kvm_sregs s;
    struct kvm_debugregs dr;
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = { .h.nmsrs = 1, .e.index = MSR_KERNEL_GS_BASE };
    if (k->regs_fresh) {
        g = k->run->s.regs.regs;
        s = k->run->s.regs.sregs;
    } else if (ioctl(k->vcpu_fd, KVM_GET_REGS, &g) < 0) {
        return vfail(k, "KVM_GET_REGS");
    } else if (ioctl(k->vcpu_fd, KVM_GET_SREGS, &s) < 0) {
        return vfail(k, "KVM_GET_SREGS");
    }
    if (ioctl(k->vcpu_fd, KVM_GET_DEBUGREGS, &dr) < 0)
        return vfail(k, "KVM_GET_DEBUGREGS");
    if (ioctl(k->vcpu_fd, KVM_GET_MSRS, &m) != 1)
        return vfail(k, "KVM_GET_MSRS(KERNEL_GS_BASE)");
    memset(o, 0, sizeof *o);
    o->rax = g.rax; o->rbx = g.rbx; o->rcx = g.rcx; o->rdx = g.rdx;
    o->rsi = g.rsi; o->rdi = g.rdi; o->rbp = g.rbp; o->rsp = g.rsp;
    o->r8 = g.r8; o->r9 = g.r9; o->r10 = g.r10; o->r11 = g.r11;
    o->r12 = g.r12; o->r13 = g.r13; o->r14 = g.r14; o->r15 = g.r15;
    o->rip = g.rip;
    o->rflags = g.rflags;
    o->cr0 = s.cr0; o->cr2 = s.cr2; o->cr3 = s.cr3; o->cr4 = s.cr4; o->cr8 = s.cr8; o->efer = s.efer;
    o->fs_base = s.fs.base;
    o->gs_base = s.gs.base;
    o->kernel_gs_base = m.e.data;
    o->gdtr_base = s.gdt.base; o->gdtr_limit = s.gdt.limit;
    o->idtr_base = s.idt.base; o->idtr_limit = s.idt.limit;
    o->cs = s.cs.selector; o->ss = s.ss.selector; o->ds = s.ds.selector;
    o->es = s.es.selector; o->fs = s.fs.selector; o->gs = s.gs.selector;
    o->dr0 = dr.db[0]; o->dr1 = dr.db[1]; o->dr2 = dr.db[2]; o->dr3 = dr.db[3];
    o->dr6 = dr.dr6; o->dr7 = dr.dr7;
    return VMT_OK;
}

/* Registers the engine left in run->s.regs for KVM_RUN to load
 * (kvm_dirty_regs): written now, for a path about to use register ioctls.
 * Invariant: such pending registers imply regs_fresh (the sync copy is the
 * current state). */
vmt_status kvm_regs_flush(kvm_drv *k)
{
    if (!(k->run->kvm_dirty_regs & KVM_SYNC_X86_REGS))
        return VMT_OK;
    k->run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_REGS;
    if (ioctl(k->vcpu_fd, KVM_SET_REGS, &k->run->s.regs.regs) < 0)
        return vfail(k, "KVM_SET_REGS (pending registers)");
    return VMT_OK;
}

vmt_status kvm_set_regs(kvm_drv *k, const vmt_regs *o)
{
    struct kvm_regs g = {
        .rax = o->rax, .rbx = o->rbx, .rcx = o->rcx, .rdx = o->rdx,
        .rsi = o->rsi, .rdi = o->rdi, .rbp = o->rbp, .rsp = o->rsp,
        .r8 = o->r8, .r9 = o->r9, .r10 = o->r10, .r11 = o->r11,
        .r12 = o->r12, .r13 = o->r13, .r14 = o->r14, .r15 = o->r15,
        .rip = o->rip, .rflags = o->rflags | 2,
    };
    struct kvm_sregs s;
    k->run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_REGS; /* superseded by this KVM_SET_REGS */
    k->regs_fresh = false;
    if (ioctl(k->vcpu_fd, KVM_GET_SREGS, &s) < 0)
        return vfail(k, "KVM_GET_SREGS");
    s.cr0 = o->cr0; s.cr2 = o->cr2; s.cr3 = o->cr3; s.cr4 = o->cr4; s.cr8 = o->cr8; s.efer = o->efer;
    s.fs.base = o->fs_base;
    s.gs.base = o->gs_base;
    s.gdt.base = o->gdtr_base; s.gdt.limit = o->gdtr_limit;
    s.idt.base = o->idtr_base; s.idt.limit = o->idtr_limit;
    s.cs.selector = o->cs; s.ss.selector = o->ss; s.ds.selector = o->ds;
    s.es.selector = o->es; s.fs.selector = o->fs; s.gs.selector = o->gs;
    struct kvm_debugregs dr;
    if (ioctl(k->vcpu_fd, KVM_GET_DEBUGREGS, &dr) < 0)
        return vfail(k, "KVM_GET_DEBUGREGS");
    dr.db[0] = o->dr0; dr.db[1] = o->dr1; dr.db[2] = o->dr2; dr.db[3] = o->dr3;
    dr.dr6 = o->dr6 ? o->dr6 : 0xffff0ff0;
    dr.dr7 = o->dr7 ? o->dr7 : 0x400;
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
    } m = { .h.nmsrs = 1, .e.index = MSR_KERNEL_GS_BASE, .e.data = o->kernel_gs_base };
    if (ioctl(k->vcpu_fd, KVM_SET_SREGS, &s) < 0)
        return vmt_driver_fail(k->d, VMT_E_INVAL, "KVM_SET_SREGS refused the control registers (cr0 0x%" PRIx64
                               " cr4 0x%" PRIx64 " efer 0x%" PRIx64 "): %s", o->cr0, o->cr4, o->efer, strerror(errno));
    if (ioctl(k->vcpu_fd, KVM_SET_REGS, &g) < 0)
        return vfail(k, "KVM_SET_REGS");
    if (ioctl(k->vcpu_fd, KVM_SET_DEBUGREGS, &dr) < 0)
        return vfail(k, "KVM_SET_DEBUGREGS");
    if (ioctl(k->vcpu_fd, KVM_SET_MSRS, &m) != 1)
        return vfail(k, "KVM_SET_MSRS(KERNEL_GS_BASE)");
    return VMT_OK;
}

vmt_status kvm_apply_debug(kvm_drv *k)
{
    struct kvm_guest_debug dbg;
    memset(&dbg, 0, sizeof dbg);
    dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
    if (k->hwbp_on && !(k->step.active && k->step.hw_off)) {
        dbg.control |= KVM_GUESTDBG_USE_HW_BP;
        uint64_t dr7 = 0x400;
        for (unsigned i = 0; i < 4; i++) {
            if (!(k->hwbp_on & (1u << i)))
                continue;
            dbg.arch.debugreg[i] = k->hwbp_addr[i];
            dr7 |= 1ull << (2 * i); /* Li; R/W=00 (execute), LEN=00 */
        }
        dbg.arch.debugreg[7] = dr7;
    }
    if (k->step.active)
        dbg.control |= KVM_GUESTDBG_SINGLESTEP;
    bool inject = k->inject_bp_once;
    if (inject)
        dbg.control |= KVM_GUESTDBG_INJECT_BP;
    /* hardware breakpoints change with addresses too: compare those when HW_BP is on */
    if (dbg.control == k->dbg_applied && !(dbg.control & KVM_GUESTDBG_USE_HW_BP) && !inject)
        return VMT_OK;
    if (ioctl(k->vcpu_fd, KVM_SET_GUEST_DEBUG, &dbg) < 0)
        return vfail(k, "KVM_SET_GUEST_DEBUG");
    k->inject_bp_once = false;
    k->dbg_applied = dbg.control & ~(uint32_t)KVM_GUESTDBG_INJECT_BP;
    if (inject)
        k->dbg_applied = 0; /* force a resend without INJECT_BP next time */
    return VMT_OK;
}

vmt_status kvm_hw_breakpoint(vmt_driver *d, vmt_vcpu vcpu, unsigned index, vmt_va va, int enable)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_INVAL, "vcpu %u out of range (driver has 1)", vcpu);
    if (index >= 4)
        return vmt_driver_fail(d, VMT_E_RANGE, "hardware breakpoint %u out of range", index);
    if (enable) {
        k->hwbp_addr[index] = va;
        k->hwbp_on |= (uint8_t)(1u << index);
    } else {
        k->hwbp_addr[index] = 0;
        k->hwbp_on &= (uint8_t)~(1u << index);
    }
    k->dbg_applied = 0;
    return kvm_apply_debug(k);
}

static vmt_status queue_exception(kvm_drv *k, uint8_t vector, bool has_ec, uint32_t ec)
{
    struct kvm_vcpu_events ev;
    if (ioctl(k->vcpu_fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
        return vfail(k, "KVM_GET_VCPU_EVENTS");
    if (ev.exception.injected || ev.exception.pending)
        return vmt_driver_fail(k->d, VMT_E_BUSY, "an exception (vector %u) is already pending on the vCPU",
                               ev.exception.nr);
    ev.flags = 0;
    ev.exception.injected = 1;
    ev.exception.nr = vector;
    ev.exception.has_error_code = has_ec;
    ev.exception.error_code = ec;
    if (ioctl(k->vcpu_fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
        return vfail(k, "KVM_SET_VCPU_EVENTS");
    return VMT_OK;
}

/* A breakpoint event's INT3 handed to the guest's IDT. On the emulation-
 * failure path (kvm_pvm) rip is at the INT3: step over it and inject #BP
 * (return address rip+1, as the CPU would push). On the KVM_EXIT_DEBUG path
 * KVM knows the instruction length itself: KVM_GUESTDBG_INJECT_BP. */
vmt_status kvm_reinject_bp(kvm_drv *k)
{
    if (k->bp_source == BP_FROM_DEBUG_EXIT) {
        k->inject_bp_once = true;
        return kvm_apply_debug(k);
    }
    struct kvm_regs g;
    vmt_status st = kvm_regs_flush(k);
    if (st)
        return st;
    k->regs_fresh = false;
    if (ioctl(k->vcpu_fd, KVM_GET_REGS, &g) < 0)
        return vfail(k, "KVM_GET_REGS");
    g.rip += 1;
    if (ioctl(k->vcpu_fd, KVM_SET_REGS, &g) < 0)
        return vfail(k, "KVM_SET_REGS");
    return queue_exception(k, 3, false, 0);
}

vmt_status kvm_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_INVAL, "vcpu %u out of range (driver has 1)", vcpu);
    if (inj->vector >= 32)
        return vmt_driver_fail(d, VMT_E_INVAL, "vector %u is not an exception", inj->vector);
    vmt_status st = kvm_regs_flush(k);
    if (st)
        return st;
    k->regs_fresh = false;
    if (inj->vector == 14) {
        struct kvm_sregs s;
        if (ioctl(k->vcpu_fd, KVM_GET_SREGS, &s) < 0)
            return vfail(k, "KVM_GET_SREGS");
        s.cr2 = inj->cr2;
        if (ioctl(k->vcpu_fd, KVM_SET_SREGS, &s) < 0)
            return vfail(k, "KVM_SET_SREGS");
    }
    return queue_exception(k, inj->vector, inj->has_error_code, inj->error_code);
}

vmt_status kvm_translate(kvm_drv *k, uint64_t va, uint64_t *pa)
{
    struct kvm_translation t = { .linear_address = va };
    if (ioctl(k->vcpu_fd, KVM_TRANSLATE, &t) < 0)
        return vfail(k, "KVM_TRANSLATE");
    if (!t.valid)
        return vmt_driver_fail(k->d, VMT_E_NOT_PRESENT, "va 0x%" PRIx64 " is not mapped", va);
    *pa = t.physical_address;
    return VMT_OK;
}
