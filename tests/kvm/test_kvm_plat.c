/*
 * tests/kvm/test_kvm_plat.c — the KVM driver's irqchip setup, interrupt-line
 * forwarding, TSC hiding and bus dispatch, run against a fake ioctl and a
 * fake bus: these paths only run for real where /dev/kvm exists, so this
 * test (which needs no /dev/kvm and never skips) pins what they ask of KVM.
 * The fake models the documented behaviour (Documentation/virt/kvm/api.rst:
 * KVM_CREATE_IRQCHIP before KVM_CREATE_PIT2 and the vCPU, KVM_IRQ_LINE_STATUS
 * status >0 delivered / 0 coalesced / <0 masked, the vCPU's TSC offset
 * attribute, a host IA32_TSC write KVM may treat as a synchronisation).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "drivers/kvm/kvm_internal.h"
#include "drivers/kvm/kvm_plat.h"

#define MAX_CALLS 64

typedef struct fake {
    unsigned long req[MAX_CALLS];
    struct kvm_irq_level irq[MAX_CALLS];
    unsigned ncalls;
    unsigned long fail_req;   /* this request fails with EINVAL */
    int irq_status;           /* KVM_IRQ_LINE_STATUS answer */
    struct kvm_irq_routing_entry routes[64];
    uint32_t nroutes;
    uint32_t pit_flags;
    bool has_offset_attr;
    uint64_t tsc_offset;
    uint64_t tsc;             /* the guest TSC the MSR path sees */
    bool msr_write_synchronised; /* host IA32_TSC writes are ignored */
    uint64_t khz, set_khz;
    /* vCPU state as KVM would hold it */
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_debugregs dregs;
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    uint32_t msr_index[32];
    uint64_t msr_value[32];
    unsigned nmsrs;
    uint32_t refused_msr;     /* KVM_SET/GET_MSRS of this index processes 0 entries */
} fake;

static uint64_t *fake_msr(fake *f, uint32_t index)
{
    for (unsigned i = 0; i < f->nmsrs; i++)
        if (f->msr_index[i] == index)
            return &f->msr_value[i];
    assert_true(f->nmsrs < 32);
    f->msr_index[f->nmsrs] = index;
    f->msr_value[f->nmsrs] = 0;
    return &f->msr_value[f->nmsrs++];
}

static int fake_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
    fake *f = ctx;
    (void)fd;
    if (f->ncalls < MAX_CALLS)
        f->req[f->ncalls] = req;
    unsigned call = f->ncalls++;
    if (req == f->fail_req)
        return -EINVAL;
    switch (req) {
    case KVM_CHECK_EXTENSION: return 1;
    case KVM_CREATE_IRQCHIP: return 0;
    case KVM_SET_GSI_ROUTING: {
        const struct kvm_irq_routing *r = arg;
        assert_true(r->nr <= 64);
        memcpy(f->routes, r->entries, r->nr * sizeof r->entries[0]);
        f->nroutes = r->nr;
        return 0;
    }
    case KVM_CREATE_PIT2: f->pit_flags = ((const struct kvm_pit_config *)arg)->flags; return 0;
    case KVM_IRQ_LINE:
    case KVM_IRQ_LINE_STATUS: {
        struct kvm_irq_level *l = arg;
        if (call < MAX_CALLS)
            f->irq[call] = *l;
        if (req == KVM_IRQ_LINE_STATUS)
            l->status = f->irq_status;
        return 0;
    }
    case KVM_SET_TSC_KHZ: f->set_khz = (uintptr_t)arg; f->khz = f->set_khz; return 0;
    case KVM_GET_TSC_KHZ: return (int)f->khz;
    case KVM_HAS_DEVICE_ATTR: {
        const struct kvm_device_attr *a = arg;
        return f->has_offset_attr && a->group == KVM_VCPU_TSC_CTRL && a->attr == KVM_VCPU_TSC_OFFSET ? 0 : -ENXIO;
    }
    case KVM_GET_DEVICE_ATTR: *(uint64_t *)(uintptr_t)((struct kvm_device_attr *)arg)->addr = f->tsc_offset; return 0;
    case KVM_SET_DEVICE_ATTR: f->tsc_offset = *(uint64_t *)(uintptr_t)((struct kvm_device_attr *)arg)->addr; return 0;
#define STATE_IO(get, set, field)                                                                                  \
    case get: memcpy(arg, &f->field, sizeof f->field); return 0;                                                   \
    case set: memcpy(&f->field, arg, sizeof f->field); return 0;
    STATE_IO(KVM_GET_REGS, KVM_SET_REGS, regs)
    STATE_IO(KVM_GET_SREGS, KVM_SET_SREGS, sregs)
    STATE_IO(KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, dregs)
    STATE_IO(KVM_GET_XSAVE, KVM_SET_XSAVE, xsave)
    STATE_IO(KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, events)
    STATE_IO(KVM_GET_MP_STATE, KVM_SET_MP_STATE, mp)
    case KVM_GET_XCRS: memcpy(arg, &f->xcrs, sizeof f->xcrs); return 0;
    case KVM_SET_XCRS: {
        const struct kvm_xcrs *x = arg;
        assert_int_equal(x->nr_xcrs, 1);
        f->xcrs = *x;
        return 0;
    }
    case KVM_GET_MSRS:
    case KVM_SET_MSRS: {
        struct kvm_msrs *m = arg;
        assert_int_equal(m->nmsrs, 1);
        if (m->entries[0].index == f->refused_msr)
            return 0;
        if (m->entries[0].index != 0x10 || !f->tsc) { /* the state test: a plain MSR file */
            uint64_t *v = fake_msr(f, m->entries[0].index);
            if (req == KVM_GET_MSRS)
                m->entries[0].data = *v;
            else
                *v = m->entries[0].data;
            return 1;
        }
        if (req == KVM_GET_MSRS)
            m->entries[0].data = f->tsc += 1000; /* the TSC moves on between reads */
        else if (!f->msr_write_synchronised)
            f->tsc = m->entries[0].data;
        return 1;
    }
    default: return -ENOTTY;
    }
}

static kvm_host host_of(fake *f) { return (kvm_host){ fake_ioctl, f }; }

static const struct kvm_irq_routing_entry *route(const fake *f, uint32_t gsi, uint32_t chip)
{
    for (uint32_t i = 0; i < f->nroutes; i++)
        if (f->routes[i].gsi == gsi && f->routes[i].u.irqchip.irqchip == chip)
            return &f->routes[i];
    return NULL;
}

/* The irqchip comes first, then the pc routing, then the PIT; GSI 0 (the
 * legacy timer) reaches IOAPIC pin 2 as the platform module assumes. */
static void test_irqchip_create(void **state)
{
    (void)state;
    fake f = { 0 };
    kvm_host h = host_of(&f);
    char why[200] = "";
    assert_int_equal(kvm_irqchip_create(&h, 3, 4, why, sizeof why), VMT_OK);
    assert_int_equal(f.ncalls, 4);
    assert_true(f.req[1] == KVM_CREATE_IRQCHIP && f.req[2] == KVM_SET_GSI_ROUTING && f.req[3] == KVM_CREATE_PIT2);
    assert_int_equal(f.pit_flags, KVM_PIT_SPEAKER_DUMMY);
    assert_int_equal(route(&f, 0, KVM_IRQCHIP_IOAPIC)->u.irqchip.pin, 2);
    assert_null(route(&f, 2, KVM_IRQCHIP_IOAPIC));
    assert_int_equal(route(&f, 4, KVM_IRQCHIP_IOAPIC)->u.irqchip.pin, 4);
    assert_int_equal(route(&f, 4, KVM_IRQCHIP_PIC_MASTER)->u.irqchip.pin, 4);
    assert_int_equal(route(&f, 9, KVM_IRQCHIP_PIC_SLAVE)->u.irqchip.pin, 1);
    assert_int_equal(route(&f, 20, KVM_IRQCHIP_IOAPIC)->u.irqchip.pin, 20);
    assert_null(route(&f, 20, KVM_IRQCHIP_PIC_SLAVE));
    for (uint32_t i = 0; i < f.nroutes; i++)
        assert_int_equal(f.routes[i].type, KVM_IRQ_ROUTING_IRQCHIP);

    fake g = { .fail_req = KVM_CREATE_PIT2 };
    h = host_of(&g);
    assert_int_equal(kvm_irqchip_create(&h, 3, 4, why, sizeof why), VMT_E_DRIVER);
    assert_non_null(strstr(why, "KVM_CREATE_PIT2"));
}

/* A line change is one ioctl with the line and level; a repeat is none; a
 * refused ioctl keeps the old level and is counted. */
static void test_irq_forwarding(void **state)
{
    (void)state;
    fake f = { .irq_status = 1 };
    kvm_host h = host_of(&f);
    kvm_irq_fwd fw;
    char why[200];
    kvm_irq_fwd_init(&fw, &h, 4, true);
    assert_int_equal(kvm_irq_fwd_set(&fw, 4, true), VMT_OK);
    assert_int_equal(f.ncalls, 1);
    assert_true(f.req[0] == KVM_IRQ_LINE_STATUS);
    assert_int_equal(f.irq[0].irq, 4);
    assert_int_equal(f.irq[0].level, 1);
    assert_int_equal(kvm_irq_fwd_set(&fw, 4, true), VMT_OK);
    assert_int_equal(f.ncalls, 1);
    assert_int_equal(kvm_irq_fwd_set(&fw, 4, false), VMT_OK);
    assert_int_equal(f.ncalls, 2);
    assert_int_equal(f.irq[1].level, 0);
    f.irq_status = 0;
    assert_int_equal(kvm_irq_fwd_set(&fw, 23, true), VMT_OK);
    f.irq_status = -1;
    assert_int_equal(kvm_irq_fwd_set(&fw, 8, true), VMT_OK);
    assert_int_equal(fw.delivered, 1);
    assert_int_equal(fw.coalesced, 1);
    assert_int_equal(fw.masked, 1);
    assert_int_equal(kvm_irq_fwd_set(&fw, 24, true), VMT_E_INVAL);
    assert_int_equal(fw.level, (1u << 23) | (1u << 8));
    assert_int_equal(kvm_irq_fwd_check(&fw, why, sizeof why), VMT_OK);

    f.fail_req = KVM_IRQ_LINE_STATUS;
    assert_int_equal(kvm_irq_fwd_set(&fw, 1, true), VMT_E_DRIVER);
    assert_int_equal(fw.level & 2u, 0);
    assert_int_equal(fw.failures, 1);
    assert_int_equal(fw.last_irq, 1);
    assert_int_equal(fw.last_errno, EINVAL);
    assert_int_equal(kvm_irq_fwd_check(&fw, why, sizeof why), VMT_OK);
    fw.level |= 1u << 30; /* the checker sees a corrupted mask */
    assert_int_equal(kvm_irq_fwd_check(&fw, why, sizeof why), VMT_E_INTERNAL);

    fake g = { 0 }; /* no KVM_CAP_IRQ_INJECT_STATUS: plain KVM_IRQ_LINE */
    h = host_of(&g);
    kvm_irq_fwd_init(&fw, &h, 4, false);
    assert_int_equal(kvm_irq_fwd_set(&fw, 0, true), VMT_OK);
    assert_true(g.req[0] == KVM_IRQ_LINE);
}

/* With the offset attribute, hidden time moves the offset back by exactly
 * its ticks, without drift over many small pieces. */
static void test_tsc_offset_attr(void **state)
{
    (void)state;
    fake f = { .has_offset_attr = true, .khz = 2000000, .tsc_offset = 1000000000ull };
    kvm_host h = host_of(&f);
    kvm_tsc t;
    kvm_tsc_init(&t, &h, 5, 3000000000ull);
    assert_int_equal(f.set_khz, 3000000);
    assert_int_equal(t.khz, 3000000);
    assert_int_equal(t.method, KVM_TSC_OFFSET_ATTR);
    assert_int_equal(kvm_tsc_hide(&t, 1000000), VMT_OK); /* 1 ms = 3,000,000 ticks */
    assert_int_equal(f.tsc_offset, 1000000000ull - 3000000ull);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(kvm_tsc_hide(&t, 1), VMT_OK); /* 1 ns = 3 ticks each, summed exactly */
    assert_int_equal(f.tsc_offset, 1000000000ull - 3003000ull);
    assert_int_equal(t.hidden_ns, 1001000);
    assert_int_equal(t.hidden_ticks, kvm_ns_to_ticks(t.hidden_ns, t.khz));
    assert_int_equal(kvm_ns_to_ticks(UINT64_MAX / 2, 4000000), (uint64_t)((unsigned __int128)(UINT64_MAX / 2) * 4));
}

/* Without the attribute, IA32_TSC is rewritten and read back; a write KVM
 * swallowed as a "synchronisation" turns the method off with a reason. */
static void test_tsc_msr_fallback(void **state)
{
    (void)state;
    fake f = { .khz = 1000000, .tsc = 5000000000ull };
    kvm_host h = host_of(&f);
    kvm_tsc t;
    kvm_tsc_init(&t, &h, 5, 0);
    assert_int_equal(f.set_khz, 0);
    assert_int_equal(t.method, KVM_TSC_MSR);
    uint64_t before = f.tsc;
    unsigned calls = f.ncalls;
    assert_int_equal(kvm_tsc_hide(&t, 10000), VMT_OK); /* 10 us: collected, not written yet */
    assert_int_equal(f.ncalls, calls);
    assert_int_equal(t.pending_ns, 10000);
    assert_int_equal(kvm_tsc_hide(&t, 2000000), VMT_OK); /* + 2 ms at 1 GHz: written */
    assert_true(f.tsc < before);
    assert_true(before - f.tsc >= 2010000 - 3000 && before - f.tsc <= 2010000);
    assert_int_equal(t.pending_ns, 0);
    assert_int_equal(t.hidden_ns, 2010000);

    f.msr_write_synchronised = true;
    assert_int_equal(kvm_tsc_hide(&t, 2000000), VMT_E_NOTSUP);
    assert_int_equal(t.method, KVM_TSC_NONE);
    assert_non_null(strstr(t.why_none, "synchronised"));
    calls = f.ncalls;
    assert_int_equal(kvm_tsc_hide(&t, 2000000), VMT_OK); /* off: nothing asked of KVM */
    assert_int_equal(f.ncalls, calls);
    assert_int_equal(t.hidden_ns, 2010000);
}

/* ---- the whole vCPU state ---- */

static void fill_state(vmt_vcpu_state *s)
{
    vmt_vcpu_state_init(s);
    s->known = VMT_VS_REGS | VMT_VS_SEGMENTS | VMT_VS_SYSCALL | VMT_VS_SYSENTER | VMT_VS_MSRS | VMT_VS_APIC_BASE |
               VMT_VS_FPU | VMT_VS_TSC | VMT_VS_EVENTS;
    uint64_t *gp = &s->regs.rax;
    for (int i = 0; i < 16; i++)
        gp[i] = 0x1000 + (uint64_t)i;
    s->regs.rip = 0xffffffff81a592ebull;
    s->regs.rflags = 0x246;
    s->regs.cr0 = 0x80050033, s->regs.cr3 = 0x61d2000, s->regs.cr4 = 0x3406f0, s->regs.cr2 = 0x7f00;
    s->regs.efer = 0xd01, s->regs.cr8 = 0;
    s->regs.cs = 0x10, s->regs.ss = 0x18, s->regs.ds = s->regs.es = s->regs.fs = 0, s->regs.gs = 0;
    s->regs.fs_base = 0x7f0000001000ull, s->regs.gs_base = 0xffff88800f600000ull;
    s->regs.kernel_gs_base = 0x7f0000002000ull;
    s->regs.gdtr_base = 0xfffffe0000001000ull, s->regs.gdtr_limit = 0x7f;
    s->regs.idtr_base = 0xfffffe0000000000ull, s->regs.idtr_limit = 0xfff;
    s->regs.dr0 = 0x1111, s->regs.dr7 = 0x401;
    s->cs = (vmt_segment){ 0, 0xffffffff, 0x10, 0xb | 1u << 4 | 1u << 7 | VMT_SEG_ATTR_L | VMT_SEG_ATTR_G };
    s->ss = (vmt_segment){ 0, 0xffffffff, 0x18, 0x3 | 1u << 4 | 1u << 7 | VMT_SEG_ATTR_DB | VMT_SEG_ATTR_G };
    s->fs.base = s->regs.fs_base, s->gs.base = s->regs.gs_base;
    s->tr = (vmt_segment){ 0xfffffe0000003000ull, 0x4087, 0x40, 0x8b };
    s->star = 0x0023001000000000ull, s->lstar = 0xffffffff81a00080ull, s->cstar = 0xffffffff81a01a70ull;
    s->fmask = 0x257fd5, s->sysenter_cs = 0x10, s->sysenter_esp = 0xfffffe0000003000ull;
    s->sysenter_eip = 0xffffffff81a01b50ull, s->tsc_aux = 1, s->spec_ctrl = 0, s->mtrr_def_type = 0xc06;
    s->tsc_deadline = 123456789, s->tsc = 987654321000ull, s->xcr0 = 7;
    for (int i = 0; i < 512; i++)
        s->fpu.fxsave[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 16; i++)
        memset(s->fpu.ymm_hi[i], 0xa0 + i, 16);
    s->halted = true, s->interrupt_shadow = 1;
    s->event_pending = true, s->event_vector = 14, s->event_has_error = true, s->event_error = 2;
}

/* A state written through KVM's state ioctls reads back the same, and what
 * KVM holds is what api.rst says (segment bits, the FXSAVE part of XSAVE,
 * YMM high halves at 576, the #PF as an injected exception, HLT as
 * KVM_MP_STATE_HALTED); an MSR KVM refuses is fatal unless optional. */
static void test_vcpu_state_round_trip(void **state)
{
    (void)state;
    static fake f; /* large (XSAVE area) */
    memset(&f, 0, sizeof f);
    f.refused_msr = 0x48; /* no IA32_SPEC_CTRL on this "host" */
    kvm_host h = host_of(&f);
    vmt_vcpu_state in, out;
    fill_state(&in);
    char why[256] = "";
    assert_int_equal(kvm_state_set(&h, 5, true, &in, why, sizeof why), VMT_OK);
    assert_int_equal(f.sregs.cs.l, 1);
    assert_int_equal(f.sregs.cs.type, 0xb);
    assert_int_equal(f.sregs.ss.db, 1);
    assert_int_equal(f.sregs.ldt.unusable, 0);
    assert_int_equal(f.sregs.ds.unusable, 1);
    assert_int_equal(f.sregs.apic_base, in.apic_base);
    assert_int_equal(f.mp.mp_state, KVM_MP_STATE_HALTED);
    assert_int_equal(f.events.exception.injected, 1);
    assert_int_equal(f.events.exception.nr, 14);
    assert_int_equal(f.events.interrupt.shadow, KVM_X86_SHADOW_INT_STI);
    assert_memory_equal((uint8_t *)f.xsave.region + 576, in.fpu.ymm_hi, sizeof in.fpu.ymm_hi);
    assert_int_equal(*fake_msr(&f, 0xc0000082u), in.lstar);
    assert_int_equal(*fake_msr(&f, 0x10), in.tsc);

    assert_int_equal(kvm_state_get(&h, 5, true, &out, why, sizeof why), VMT_OK);
    assert_int_equal(out.known & in.known, in.known);
    assert_memory_equal(&out.regs, &in.regs, sizeof in.regs);
    const vmt_segment *a[] = { &in.cs, &in.ss, &in.fs, &in.gs, &in.tr }, *b[] = { &out.cs, &out.ss, &out.fs, &out.gs,
                                                                                 &out.tr };
    for (int i = 0; i < 5; i++)
        assert_memory_equal(a[i], b[i], sizeof *a[i]);
    assert_true(out.star == in.star && out.lstar == in.lstar && out.cstar == in.cstar && out.fmask == in.fmask);
    assert_true(out.sysenter_eip == in.sysenter_eip && out.pat == in.pat && out.tsc == in.tsc);
    assert_true(out.tsc_deadline == in.tsc_deadline && out.apic_base == in.apic_base && out.xcr0 == 7);
    assert_int_equal(out.spec_ctrl, 0);
    assert_memory_equal(&out.fpu, &in.fpu, sizeof in.fpu);
    assert_true(out.halted && out.interrupt_shadow == 1 && out.event_pending && out.event_vector == 14);
    assert_true(out.event_has_error && out.event_error == 2);

    f.refused_msr = 0xc0000082u; /* LSTAR is not optional */
    assert_int_equal(kvm_state_set(&h, 5, true, &in, why, sizeof why), VMT_E_DRIVER);
    assert_non_null(strstr(why, "0xc0000082"));
    in.regs.cs = 0x33; /* disagrees with the CS segment: refused before any ioctl */
    unsigned calls = f.ncalls;
    assert_int_not_equal(kvm_state_set(&h, 5, true, &in, why, sizeof why), VMT_OK);
    assert_int_equal(f.ncalls, calls);
}

/* ---- bus dispatch on a zeroed driver state ---- */

typedef struct fake_bus {
    uint64_t addr[16];
    unsigned size[16];
    unsigned n;
    uint64_t last_now;
    bool stop;
} fake_bus;

static vmt_status fb_mmio_read(void *ctx, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, uint64_t *val)
{
    fake_bus *b = ctx;
    (void)vcpu;
    if (gpa < 0xfed00000u)
        return VMT_E_NOTFOUND;
    b->addr[b->n] = gpa;
    b->size[b->n++] = size;
    *val = 0x1122334455667788ull >> (8 * (8 - size) % 64);
    return VMT_OK;
}

static vmt_status fb_pio_write(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t val)
{
    fake_bus *b = ctx;
    (void)vcpu;
    (void)val;
    if (port == 0x5e0)
        return VMT_E_NOTFOUND;
    b->addr[b->n] = port;
    b->size[b->n++] = size;
    return b->stop ? VMT_E_STOPPED : VMT_OK;
}

static uint64_t fb_advance(void *ctx, uint64_t now)
{
    ((fake_bus *)ctx)->last_now = now;
    return now + 1000000;
}

static const char *fb_reason(void *ctx)
{
    (void)ctx;
    return "reset through port 0xcf9";
}

static const vmt_bus_ops fb_ops = { .mmio_read = fb_mmio_read, .pio_write = fb_pio_write, .advance = fb_advance,
                                    .stop_reason = fb_reason };

/* An unaligned 8-byte MMIO read reaches the bus as naturally aligned
 * pieces; a port the bus does not own comes back NOTFOUND (the ucall port
 * stays an event); a reset request carries the bus's reason; the bus sees
 * guest time that excludes the time stopped for the monitor. */
static void test_bus_dispatch(void **state)
{
    (void)state;
    fake_bus b = { 0 };
    kvm_drv k;
    memset(&k, 0, sizeof k);
    k.bus = (vmt_bus){ &fb_ops, &b };
    k.t0 = kvm_now_ns() - 200000000ull; /* created 200 ms ago */
    k.start_ns = 5000000000ull;
    uint8_t data[8];
    const char *msg = NULL;
    assert_int_equal(kvm_bus_mmio(&k, 0xfed00006u, 8, false, data, &msg), VMT_OK);
    assert_int_equal(b.n, 3);
    assert_true(b.addr[0] == 0xfed00006u && b.size[0] == 2);
    assert_true(b.addr[1] == 0xfed00008u && b.size[1] == 4);
    assert_true(b.addr[2] == 0xfed0000cu && b.size[2] == 2);
    assert_true(b.last_now >= k.start_ns);
    assert_int_equal(kvm_bus_mmio(&k, 0xfe000000u, 4, false, data, &msg), VMT_E_NOTFOUND);

    uint8_t out[4] = { 1, 0, 0, 0 };
    assert_int_equal(kvm_bus_pio(&k, 0x5e0, 4, true, out, &msg), VMT_E_NOTFOUND);
    assert_int_equal(kvm_bus_pio(&k, 0x3f8, 1, true, out, &msg), VMT_OK);
    b.stop = true;
    assert_int_equal(kvm_bus_pio(&k, 0xcf9, 1, true, out, &msg), VMT_E_STOPPED);
    assert_string_equal(msg, "reset through port 0xcf9");

    /* 50 ms "stopped for the monitor" is not guest time */
    k.stopped_ns = 0;
    k.t_event = kvm_now_ns() - 50000000ull;
    k.tsc.method = KVM_TSC_NONE;
    kvm_before_run(&k);
    assert_true(k.stopped_ns >= 50000000ull);
    assert_int_equal(k.t_event, 0);
    uint64_t guest = kvm_guest_now(&k) - k.start_ns;
    uint64_t host = kvm_now_ns() - k.t0;
    assert_true(guest + 50000000ull <= host);
    assert_true(guest >= 100000000ull);
    uint64_t at = kvm_bus_advance(&k);
    assert_true(at > kvm_now_ns() && at <= kvm_now_ns() + 1000000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_irqchip_create),  cmocka_unit_test(test_irq_forwarding),
        cmocka_unit_test(test_tsc_offset_attr), cmocka_unit_test(test_tsc_msr_fallback),
        cmocka_unit_test(test_vcpu_state_round_trip), cmocka_unit_test(test_bus_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
