/*
 * platform/lapic.c — the local APIC of each vCPU (Intel SDM vol. 3 ch. 11).
 *
 * Model: xAPIC registers at the page in IA32_APIC_BASE (MMIO, 32-bit
 * registers on 16-byte strides) or, with IA32_APIC_BASE.EXTD, the x2APIC
 * MSRs 0x800-0x8ff (then MMIO is not the APIC's). Version 0x14 with six LVT
 * entries (0x00050014, as QEMU). ID = vCPU index. IRR/ISR/TMR are 256-bit
 * vectors; the highest IRR vector is delivered when its priority class is
 * above the PPR class (PPR = max(TPR, class of highest ISR)). EOI clears
 * the highest ISR bit and, for a level-triggered vector (TMR), broadcasts
 * the EOI to the IOAPIC.
 *
 * Timer: counts at apic_bus_hz / divide (TDCR). One-shot and periodic use
 * TMICT; the current count is computed from virtual time (no ticking).
 * The current count is derived from the time left until the next expiry.
 * TSC-deadline mode (LVT timer bits 18:17 = 10b) fires when the guest TSC
 * reaches IA32_TSC_DEADLINE (MSR 0x6e0, which reads 0 and ignores writes in
 * other modes); switching to or from it disarms the timer. Missed periodic
 * expiries coalesce into one interrupt (the IRR holds one per vector).
 *
 * IPIs: ICR fixed, lowest priority (to the first matching APIC: a
 * deterministic choice), NMI; INIT and SIPI are recorded only. Vectors 0-15
 * are refused with ESR "received/send illegal vector".
 *
 * Invariants (vmt_lapic_check): reserved bits clear in APIC base, SVR, LVT,
 * TDCR; no vector below 16 in IRR/ISR; a software-disabled APIC has every
 * LVT masked; the timer is armed in the future or not at all, and only
 * with a count (or deadline) behind it.
 */
#include <string.h>

#include "platform/platform_internal.h"

#define BASE_BSP (1ull << 8)
#define BASE_EXTD (1ull << 10)
#define BASE_EN (1ull << 11)
#define BASE_ADDR_MASK 0x000ffffffffff000ull
#define BASE_VALID (BASE_ADDR_MASK | BASE_BSP | BASE_EXTD | BASE_EN)
#define LVT_MASKED (1u << 16)
#define SVR_ENABLE (1u << 8)
#define SVR_VALID 0x3ffu
#define APIC_VERSION 0x00050014u
#define ESR_SEND_ILLEGAL 0x20u
#define ESR_RECV_ILLEGAL 0x40u
#define ESR_ILLEGAL_REG 0x80u
#define NS_PER_S 1000000000ull

static const uint32_t lvt_valid[LVT_COUNT] = {
    [LVT_CMCI] = 0x107ff, [LVT_TIMER] = 0x700ff, [LVT_THERMAL] = 0x107ff, [LVT_PERF] = 0x107ff,
    [LVT_LINT0] = 0x1a7ff, [LVT_LINT1] = 0x1a7ff, [LVT_ERROR] = 0x100ff,
};

enum { TIMER_ONESHOT = 0, TIMER_PERIODIC = 1, TIMER_TSC = 2 };

static bool hw_on(const vmt_lapic *l) { return (l->apic_base & BASE_EN) != 0; }
static bool x2(const vmt_lapic *l) { return (l->apic_base & (BASE_EN | BASE_EXTD)) == (BASE_EN | BASE_EXTD); }
static bool sw_on(const vmt_lapic *l) { return (l->svr & SVR_ENABLE) != 0; }

static unsigned timer_mode(const vmt_lapic *l)
{
    unsigned m = (l->lvt[LVT_TIMER] >> 17) & 3;
    return m == 3 ? TIMER_ONESHOT : m;
}

static int highest(const uint32_t r[8])
{
    for (int i = 7; i >= 0; i--)
        if (r[i])
            return i * 32 + 31 - __builtin_clz(r[i]);
    return -1;
}

static void bit_set(uint32_t r[8], unsigned v) { r[v >> 5] |= 1u << (v & 31); }
static void bit_clr(uint32_t r[8], unsigned v) { r[v >> 5] &= ~(1u << (v & 31)); }
static bool bit_get(const uint32_t r[8], unsigned v) { return (r[v >> 5] >> (v & 31)) & 1; }

static uint32_t ppr(const vmt_lapic *l)
{
    int isrv = highest(l->isr);
    uint32_t isr_class = isrv < 0 ? 0 : ((uint32_t)isrv & 0xf0);
    return (l->tpr & 0xf0) >= isr_class ? (l->tpr & 0xff) : isr_class;
}

static uint64_t divisor(const vmt_lapic *l)
{
    unsigned v = (l->tdcr & 3) | ((l->tdcr >> 1) & 4);
    return 1ull << ((v + 1) & 7);
}

static uint64_t ticks_to_ns(const vmt_platform *p, uint64_t div, uint64_t ticks)
{
    return plat_muldiv_up(ticks * div, NS_PER_S, p->cfg.apic_bus_hz);
}

static void accept(vmt_platform *p, unsigned idx, unsigned vector, bool level);

static void raise_error(vmt_platform *p, unsigned idx, uint32_t bits)
{
    vmt_lapic *l = &p->s.lapic[idx];
    l->esr_pending |= bits;
    uint32_t e = l->lvt[LVT_ERROR];
    if (!(e & LVT_MASKED) && (e & 0xff) >= 16)
        accept(p, idx, e & 0xff, false);
}

static void accept(vmt_platform *p, unsigned idx, unsigned vector, bool level)
{
    vmt_lapic *l = &p->s.lapic[idx];
    if (!hw_on(l))
        return;
    if (vector < 16) {
        raise_error(p, idx, ESR_RECV_ILLEGAL);
        return;
    }
    bit_set(l->irr, vector);
    if (level)
        bit_set(l->tmr, vector);
    else
        bit_clr(l->tmr, vector);
}

int vmt_lapic_pending(const vmt_platform *p, unsigned idx)
{
    const vmt_lapic *l = &p->s.lapic[idx];
    if (!hw_on(l) || !sw_on(l))
        return -1;
    int v = highest(l->irr);
    if (v < 0 || ((uint32_t)v & 0xf0) <= (ppr(l) & 0xf0))
        return -1;
    return v;
}

void vmt_lapic_ack(vmt_platform *p, unsigned idx, uint8_t vector)
{
    vmt_lapic *l = &p->s.lapic[idx];
    bit_clr(l->irr, vector);
    bit_set(l->isr, vector);
}

bool vmt_lapic_extint_ok(const vmt_platform *p, unsigned idx)
{
    const vmt_lapic *l = &p->s.lapic[idx];
    if (!hw_on(l))
        return true;
    uint32_t e = l->lvt[LVT_LINT0];
    return !(e & LVT_MASKED) && ((e >> 8) & 7) == 7;
}

bool vmt_lapic_mmio_hit(const vmt_platform *p, unsigned idx, uint64_t gpa)
{
    const vmt_lapic *l = &p->s.lapic[idx];
    return hw_on(l) && !x2(l) && (gpa & ~0xfffull) == (l->apic_base & BASE_ADDR_MASK);
}

static void eoi(vmt_platform *p, unsigned idx)
{
    vmt_lapic *l = &p->s.lapic[idx];
    int v = highest(l->isr);
    if (v < 0)
        return;
    bit_clr(l->isr, (unsigned)v);
    if (bit_get(l->tmr, (unsigned)v) && plat_has(p, VMT_PLATFORM_DEV_IOAPIC))
        vmt_ioapic_eoi(p, (uint8_t)v);
}

/* ---------- delivery ---------- */

static bool dest_match(const vmt_lapic *l, uint32_t dest, bool logical)
{
    if (!hw_on(l))
        return false;
    if (x2(l)) {
        if (dest == 0xffffffffu || (dest == 0xff && !logical))
            return true;
        if (!logical)
            return l->id == dest;
        return (dest >> 16) == (l->ldr >> 16) && (dest & l->ldr & 0xffff) != 0;
    }
    if (dest == 0xff || dest == 0xffffffffu)
        return true;
    if (!logical)
        return (l->id & 0xff) == dest;
    uint32_t ldr = l->ldr >> 24;
    if ((l->dfr >> 28) == 0xf)
        return (ldr & dest) != 0;
    return (ldr >> 4) == ((dest >> 4) & 0xf) && (ldr & dest & 0xf) != 0;
}

static void deliver_one(vmt_platform *p, unsigned idx, unsigned mode, uint8_t vector, bool level)
{
    vmt_lapic *l = &p->s.lapic[idx];
    switch (mode) {
    case 0: case 1: accept(p, idx, vector, level); break;
    case 4: l->nmi_pending = true; break;
    case 5: l->init_pending = true; break;
    case 6: l->sipi_pending = true; l->sipi_vector = vector; break;
    default: break; /* SMI, ExtINT (the PIC path), reserved */
    }
}

void vmt_lapic_deliver(vmt_platform *p, uint32_t dest, bool logical, unsigned mode, uint8_t vector,
                       bool level)
{
    for (uint32_t i = 0; i < p->s.vcpus; i++) {
        if (!dest_match(&p->s.lapic[i], dest, logical))
            continue;
        deliver_one(p, i, mode, vector, level);
        if (mode == 1)
            break;
    }
}

static void send_ipi(vmt_platform *p, unsigned idx)
{
    vmt_lapic *l = &p->s.lapic[idx];
    uint32_t lo = l->icr_lo;
    unsigned mode = (lo >> 8) & 7, shorthand = (lo >> 18) & 3;
    uint8_t vector = lo & 0xff;
    bool level_trig = (lo >> 15) & 1, assert_ = (lo >> 14) & 1;
    if (mode == 5 && level_trig && !assert_)
        return; /* INIT level de-assert: no effect on modern CPUs */
    if ((mode == 0 || mode == 1) && vector < 16) {
        raise_error(p, idx, ESR_SEND_ILLEGAL);
        return;
    }
    uint32_t dest = x2(l) ? l->icr_hi : l->icr_hi >> 24;
    for (uint32_t i = 0; i < p->s.vcpus; i++) {
        bool hit;
        switch (shorthand) {
        case 1: hit = i == idx; break;
        case 2: hit = hw_on(&p->s.lapic[i]); break;
        case 3: hit = i != idx && hw_on(&p->s.lapic[i]); break;
        default: hit = dest_match(&p->s.lapic[i], dest, (lo >> 11) & 1); break;
        }
        if (!hit)
            continue;
        deliver_one(p, i, mode, vector, level_trig);
        if (mode == 1 && shorthand == 0)
            break;
    }
}

/* ---------- timer ---------- */

static uint32_t current_count(const vmt_platform *p, const vmt_lapic *l)
{
    if (timer_mode(l) == TIMER_TSC || l->tmict == 0 || l->timer_next_ns == UINT64_MAX)
        return 0;
    uint64_t now = p->s.now_ns, div = divisor(l), rem_ns;
    if (l->timer_next_ns > now) {
        rem_ns = l->timer_next_ns - now;
    } else if (timer_mode(l) == TIMER_PERIODIC) { /* overdue: advance() has not run yet */
        uint64_t period = ticks_to_ns(p, div, l->tmict);
        rem_ns = period - (now - l->timer_next_ns) % period;
    } else {
        return 0;
    }
    uint64_t rem = plat_muldiv_up(rem_ns, p->cfg.apic_bus_hz, NS_PER_S * div);
    return rem > l->tmict ? l->tmict : (uint32_t)rem;
}

static void timer_fire(vmt_platform *p, unsigned idx)
{
    uint32_t e = p->s.lapic[idx].lvt[LVT_TIMER];
    if (!(e & LVT_MASKED))
        accept(p, idx, e & 0xff, false);
}

void vmt_lapic_advance(vmt_platform *p, unsigned idx)
{
    vmt_lapic *l = &p->s.lapic[idx];
    uint64_t now = p->s.now_ns;
    if (l->timer_next_ns > now)
        return;
    timer_fire(p, idx);
    if (timer_mode(l) == TIMER_TSC) {
        l->tsc_deadline = 0;
        l->timer_next_ns = UINT64_MAX;
    } else if (timer_mode(l) == TIMER_PERIODIC && l->tmict) {
        uint64_t period = ticks_to_ns(p, divisor(l), l->tmict);
        uint64_t start = l->timer_next_ns;
        if (now - start >= period)
            start += (now - start) / period * period;
        l->timer_start_ns = start;
        l->timer_next_ns = plat_sat_add(start, period);
    } else {
        l->timer_next_ns = UINT64_MAX;
    }
}

uint64_t vmt_lapic_deadline(const vmt_platform *p, const vmt_lapic *l)
{
    (void)p;
    return l->timer_next_ns;
}

static void arm_count(vmt_platform *p, vmt_lapic *l, uint32_t count)
{
    l->tmict = count;
    l->timer_start_ns = p->s.now_ns;
    l->timer_next_ns = count ? plat_sat_add(p->s.now_ns, ticks_to_ns(p, divisor(l), count)) : UINT64_MAX;
}

static void arm_deadline(vmt_platform *p, unsigned idx, uint64_t tsc)
{
    vmt_lapic *l = &p->s.lapic[idx];
    l->tsc_deadline = tsc;
    l->timer_next_ns = tsc ? vmt_plat_tsc_to_ns(p, tsc) : UINT64_MAX;
    if (l->timer_next_ns <= p->s.now_ns)
        vmt_lapic_advance(p, idx); /* a deadline in the past fires at once */
}

static void write_tdcr(vmt_platform *p, vmt_lapic *l, uint32_t v)
{
    uint32_t cc = current_count(p, l);
    l->tdcr = v & 0xb;
    if (timer_mode(l) == TIMER_TSC || l->timer_next_ns == UINT64_MAX || cc == 0)
        return;
    /* Keep counting from the current count at the new rate. */
    uint64_t div = divisor(l);
    l->timer_next_ns = plat_sat_add(p->s.now_ns, ticks_to_ns(p, div, cc));
    uint64_t full = ticks_to_ns(p, div, l->tmict);
    l->timer_start_ns = l->timer_next_ns > full ? l->timer_next_ns - full : 0;
}

static void write_lvt(vmt_platform *p, unsigned idx, unsigned which, uint32_t v)
{
    vmt_lapic *l = &p->s.lapic[idx];
    v &= lvt_valid[which];
    if (!sw_on(l))
        v |= LVT_MASKED;
    if (which == LVT_LINT0 || which == LVT_LINT1)
        v |= l->lvt[which] & (1u << 14); /* remote IRR is read-only */
    if (which == LVT_TIMER) {
        unsigned old = timer_mode(l);
        l->lvt[which] = v;
        if ((old == TIMER_TSC) != (timer_mode(l) == TIMER_TSC)) {
            l->tmict = 0;
            l->tsc_deadline = 0;
            l->timer_next_ns = UINT64_MAX;
        }
        return;
    }
    l->lvt[which] = v;
}

/* ---------- registers ---------- */

/* Read register at xAPIC offset `reg`; false when it does not exist. */
static bool reg_read(vmt_platform *p, unsigned idx, unsigned reg, uint32_t *v)
{
    vmt_lapic *l = &p->s.lapic[idx];
    bool xm = x2(l);
    if (reg >= 0x100 && reg < 0x280) {
        const uint32_t *r = reg < 0x180 ? l->isr : reg < 0x200 ? l->tmr : l->irr;
        *v = r[((reg - 0x100) >> 4) & 7];
        return true;
    }
    if (reg >= 0x320 && reg <= 0x370) {
        *v = l->lvt[LVT_TIMER + ((reg - 0x320) >> 4)];
        return true;
    }
    switch (reg) {
    case 0x20: *v = xm ? l->id : l->id << 24; return true;
    case 0x30: *v = APIC_VERSION; return true;
    case 0x80: *v = l->tpr; return true;
    case 0x90: *v = 0; return !xm;
    case 0xa0: *v = ppr(l); return true;
    case 0xb0: *v = 0; return !xm;
    case 0xc0: *v = 0; return !xm;
    case 0xd0: *v = l->ldr; return true;
    case 0xe0: *v = l->dfr; return !xm;
    case 0xf0: *v = l->svr; return true;
    case 0x280: *v = l->esr; return true;
    case 0x2f0: *v = l->lvt[LVT_CMCI]; return true;
    case 0x300: *v = l->icr_lo; return true;
    case 0x310: *v = l->icr_hi; return !xm;
    case 0x380: *v = l->tmict; return true;
    case 0x390: *v = current_count(p, l); return true;
    case 0x3e0: *v = l->tdcr; return true;
    default: *v = 0; return false;
    }
}

/* Write register at xAPIC offset `reg`; false when it is not writable. */
static bool reg_write(vmt_platform *p, unsigned idx, unsigned reg, uint32_t v)
{
    vmt_lapic *l = &p->s.lapic[idx];
    bool xm = x2(l);
    if (reg >= 0x320 && reg <= 0x370) {
        write_lvt(p, idx, LVT_TIMER + ((reg - 0x320) >> 4), v);
        return true;
    }
    switch (reg) {
    case 0x20: if (xm) return false; l->id = v >> 24; return true;
    case 0x80: l->tpr = v & 0xff; return true;
    case 0xb0: if (xm && v) return false; eoi(p, idx); return true;
    case 0xd0: if (xm) return false; l->ldr = v & 0xff000000u; return true;
    case 0xe0: if (xm) return false; l->dfr = v | 0x0fffffffu; return true;
    case 0xf0:
        l->svr = v & SVR_VALID;
        if (!sw_on(l))
            for (unsigned i = 0; i < LVT_COUNT; i++)
                l->lvt[i] |= LVT_MASKED;
        return true;
    case 0x280: l->esr = l->esr_pending; l->esr_pending = 0; return true;
    case 0x2f0: write_lvt(p, idx, LVT_CMCI, v); return true;
    case 0x300: l->icr_lo = v & 0xcdfffu; send_ipi(p, idx); return true;
    case 0x310: if (xm) return false; l->icr_hi = v & 0xff000000u; return true;
    case 0x380: if (timer_mode(l) != TIMER_TSC) arm_count(p, l, v); return true;
    case 0x3e0: write_tdcr(p, l, v); return true;
    case 0x3f0: if (!xm) return false; accept(p, idx, v & 0xff, false); return true;
    default: return !xm && reg <= 0x3f0; /* xAPIC: read-only registers ignore writes */
    }
}

vmt_status vmt_lapic_mmio(vmt_platform *p, unsigned idx, uint64_t off, unsigned size, bool write, uint64_t *val)
{
    unsigned reg = (unsigned)off & 0xff0, byte = (unsigned)off & 0xf;
    if (write) {
        /* Only aligned 32-bit (or wider) writes reach a register. */
        if (byte == 0 && size >= 4 && !reg_write(p, idx, reg, (uint32_t)*val))
            raise_error(p, idx, ESR_ILLEGAL_REG);
        return VMT_OK;
    }
    uint32_t v = 0;
    if (!reg_read(p, idx, reg, &v))
        raise_error(p, idx, ESR_ILLEGAL_REG);
    uint64_t out = byte < 4 ? (uint64_t)v >> (byte * 8) : 0;
    *val = size >= 8 ? out : out & ((1ull << (size * 8)) - 1);
    return VMT_OK;
}

static vmt_status write_apic_base(vmt_platform *p, unsigned idx, uint64_t v)
{
    vmt_lapic *l = &p->s.lapic[idx];
    if (v & ~BASE_VALID)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: IA32_APIC_BASE 0x%llx sets reserved bits", idx,
                              (unsigned long long)v);
    bool was_en = hw_on(l), was_x2 = x2(l);
    bool en = v & BASE_EN, ext = v & BASE_EXTD;
    if (ext && !en)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: x2APIC without the APIC enabled", idx);
    if (was_x2 && en && !ext)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: x2APIC to xAPIC is not a valid transition", idx);
    if (!was_en && ext)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: disabled to x2APIC is not a valid transition", idx);
    uint64_t bsp = l->apic_base & BASE_BSP;
    if (was_en && !en) {
        vmt_lapic_reset(p, idx); /* disabling resets the APIC */
        l->apic_base = (v & BASE_ADDR_MASK) | bsp;
        return VMT_OK;
    }
    l->apic_base = (v & ~BASE_BSP) | bsp;
    if (ext && !was_x2) {
        l->id = idx;
        l->ldr = ((idx >> 4) << 16) | (1u << (idx & 0xf));
        l->icr_hi = 0;
    }
    return VMT_OK;
}

vmt_status vmt_lapic_msr(vmt_platform *p, unsigned idx, uint32_t msr, bool write, uint64_t *val)
{
    vmt_lapic *l = &p->s.lapic[idx];
    if (msr == 0x1b) {
        if (!write) {
            *val = l->apic_base;
            return VMT_OK;
        }
        return write_apic_base(p, idx, *val);
    }
    if (msr == 0x6e0) {
        bool tsc_mode = hw_on(l) && timer_mode(l) == TIMER_TSC;
        if (!write)
            *val = tsc_mode ? l->tsc_deadline : 0;
        else if (tsc_mode)
            arm_deadline(p, idx, *val);
        return VMT_OK;
    }
    if (!x2(l))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: x2APIC MSR 0x%x while not in x2APIC mode", idx, msr);
    unsigned reg = (msr - 0x800) << 4;
    if (msr == 0x830) { /* ICR: one 64-bit register */
        if (!write) {
            *val = ((uint64_t)l->icr_hi << 32) | l->icr_lo;
            return VMT_OK;
        }
        l->icr_hi = (uint32_t)(*val >> 32);
        l->icr_lo = (uint32_t)*val & 0xcdfffu;
        send_ipi(p, idx);
        return VMT_OK;
    }
    if (!write) {
        uint32_t v;
        if (msr == 0x80b || msr == 0x83f || !reg_read(p, idx, reg, &v))
            return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: x2APIC MSR 0x%x is not readable", idx, msr);
        *val = v;
        return VMT_OK;
    }
    if ((*val >> 32) != 0 || !reg_write(p, idx, reg, (uint32_t)*val))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "lapic %u: write of 0x%llx to x2APIC MSR 0x%x", idx,
                              (unsigned long long)*val, msr);
    return VMT_OK;
}

/* ---------- reset, state, check ---------- */

void vmt_lapic_reset(vmt_platform *p, unsigned idx)
{
    vmt_lapic *l = &p->s.lapic[idx];
    memset(l, 0, sizeof *l);
    l->apic_base = 0xfee00000ull | BASE_EN | (idx == 0 ? BASE_BSP : 0);
    l->id = idx;
    l->dfr = 0xffffffffu;
    l->svr = 0xff;
    for (unsigned i = 0; i < LVT_COUNT; i++)
        l->lvt[i] = LVT_MASKED;
    l->timer_next_ns = UINT64_MAX;
}

void vmt_lapic_save(const vmt_lapic *l, plat_w *w)
{
    plat_w_u64(w, l->apic_base);
    plat_w_u32(w, l->id);
    plat_w_u32(w, l->tpr);
    plat_w_u32(w, l->ldr);
    plat_w_u32(w, l->dfr);
    plat_w_u32(w, l->svr);
    for (unsigned i = 0; i < 8; i++) {
        plat_w_u32(w, l->isr[i]);
        plat_w_u32(w, l->tmr[i]);
        plat_w_u32(w, l->irr[i]);
    }
    plat_w_u32(w, l->esr);
    plat_w_u32(w, l->esr_pending);
    plat_w_u32(w, l->icr_lo);
    plat_w_u32(w, l->icr_hi);
    for (unsigned i = 0; i < LVT_COUNT; i++)
        plat_w_u32(w, l->lvt[i]);
    plat_w_u32(w, l->tmict);
    plat_w_u32(w, l->tdcr);
    plat_w_u64(w, l->timer_start_ns);
    plat_w_u64(w, l->timer_next_ns);
    plat_w_u64(w, l->tsc_deadline);
    plat_w_u8(w, l->nmi_pending);
    plat_w_u8(w, l->init_pending);
    plat_w_u8(w, l->sipi_vector);
    plat_w_u8(w, l->sipi_pending);
}

vmt_status vmt_lapic_load(vmt_lapic *l, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    l->apic_base = plat_r_u64(r);
    l->id = plat_r_u32(r);
    l->tpr = plat_r_u32(r);
    l->ldr = plat_r_u32(r);
    l->dfr = plat_r_u32(r);
    l->svr = plat_r_u32(r);
    for (unsigned i = 0; i < 8; i++) {
        l->isr[i] = plat_r_u32(r);
        l->tmr[i] = plat_r_u32(r);
        l->irr[i] = plat_r_u32(r);
    }
    l->esr = plat_r_u32(r);
    l->esr_pending = plat_r_u32(r);
    l->icr_lo = plat_r_u32(r);
    l->icr_hi = plat_r_u32(r);
    for (unsigned i = 0; i < LVT_COUNT; i++)
        l->lvt[i] = plat_r_u32(r);
    l->tmict = plat_r_u32(r);
    l->tdcr = plat_r_u32(r);
    l->timer_start_ns = plat_r_u64(r);
    l->timer_next_ns = plat_r_u64(r);
    l->tsc_deadline = plat_r_u64(r);
    l->nmi_pending = plat_r_bool(r);
    l->init_pending = plat_r_bool(r);
    l->sipi_vector = plat_r_u8(r);
    l->sipi_pending = plat_r_bool(r);
    return VMT_OK;
}

vmt_status vmt_lapic_check(const vmt_lapic *l, unsigned idx, uint64_t now_ns, vmt_errbuf *e)
{
#define BAD(...) return vmt_errbuf_set(e, VMT_E_INTERNAL, __VA_ARGS__)
    if (l->apic_base & ~BASE_VALID)
        BAD("lapic %u: APIC base 0x%llx has reserved bits", idx, (unsigned long long)l->apic_base);
    if ((l->apic_base & BASE_EXTD) && !(l->apic_base & BASE_EN))
        BAD("lapic %u: x2APIC mode with the APIC disabled", idx);
    if (l->tpr > 0xff || (l->svr & ~SVR_VALID) || (l->tdcr & ~0xbu))
        BAD("lapic %u: TPR 0x%x, SVR 0x%x or TDCR 0x%x out of range", idx, l->tpr, l->svr, l->tdcr);
    if ((l->irr[0] & 0xffff) || (l->isr[0] & 0xffff))
        BAD("lapic %u: vector below 16 in IRR 0x%x / ISR 0x%x", idx, l->irr[0] & 0xffff, l->isr[0] & 0xffff);
    for (unsigned i = 0; i < LVT_COUNT; i++) {
        if (l->lvt[i] & ~lvt_valid[i] & ~(1u << 14))
            BAD("lapic %u: LVT %u = 0x%x has reserved bits", idx, i, l->lvt[i]);
        if (!(l->svr & SVR_ENABLE) && !(l->lvt[i] & LVT_MASKED))
            BAD("lapic %u: LVT %u unmasked while the APIC is software-disabled", idx, i);
    }
    if (l->icr_lo & ~0xcdfffu)
        BAD("lapic %u: ICR low 0x%x has reserved bits", idx, l->icr_lo);
    if (l->esr & ~0xefu || l->esr_pending & ~0xefu)
        BAD("lapic %u: ESR 0x%x/0x%x has reserved bits", idx, l->esr, l->esr_pending);
    unsigned mode = timer_mode(l);
    if (mode != TIMER_TSC && l->tsc_deadline)
        BAD("lapic %u: TSC deadline 0x%llx armed outside TSC-deadline mode", idx, (unsigned long long)l->tsc_deadline);
    if (mode == TIMER_TSC && (l->tsc_deadline == 0) != (l->timer_next_ns == UINT64_MAX))
        BAD("lapic %u: TSC deadline 0x%llx disagrees with the timer expiry", idx, (unsigned long long)l->tsc_deadline);
    if (mode != TIMER_TSC && l->tmict == 0 && l->timer_next_ns != UINT64_MAX)
        BAD("lapic %u: timer armed with a zero initial count", idx);
    if (l->timer_next_ns != UINT64_MAX && l->timer_next_ns <= now_ns)
        BAD("lapic %u: timer expiry %llu ns is not after now (%llu ns)", idx,
            (unsigned long long)l->timer_next_ns, (unsigned long long)now_ns);
    if (mode != TIMER_TSC && l->timer_next_ns != UINT64_MAX && l->timer_next_ns <= l->timer_start_ns)
        BAD("lapic %u: timer expiry before its start", idx);
    return VMT_OK;
#undef BAD
}

/* ---------- register views (vmtrap/platform_regs.h) ---------- */

void vmt_lapic_get_regs(const vmt_platform *p, unsigned idx, vmt_platform_lapic_regs *o)
{
    const vmt_lapic *l = &p->s.lapic[idx];
    memset(o, 0, sizeof *o);
    o->apic_base = l->apic_base;
    o->id = l->id;
    o->tpr = l->tpr;
    o->ldr = l->ldr;
    o->dfr = l->dfr;
    o->svr = l->svr;
    memcpy(o->isr, l->isr, sizeof o->isr);
    memcpy(o->tmr, l->tmr, sizeof o->tmr);
    memcpy(o->irr, l->irr, sizeof o->irr);
    o->esr = l->esr;
    o->icr_lo = l->icr_lo;
    o->icr_hi = l->icr_hi;
    o->lvt_cmci = l->lvt[LVT_CMCI];
    o->lvt_timer = l->lvt[LVT_TIMER];
    o->lvt_thermal = l->lvt[LVT_THERMAL];
    o->lvt_perf = l->lvt[LVT_PERF];
    o->lvt_lint0 = l->lvt[LVT_LINT0];
    o->lvt_lint1 = l->lvt[LVT_LINT1];
    o->lvt_error = l->lvt[LVT_ERROR];
    o->tmict = l->tmict;
    o->tmcct = current_count(p, l);
    o->tdcr = l->tdcr;
    o->tsc_deadline = l->tsc_deadline;
}

vmt_status vmt_lapic_set_regs(vmt_platform *p, unsigned idx, const vmt_platform_lapic_regs *in)
{
#define BAD(...) return vmt_errbuf_set(&p->err, VMT_E_INVAL, __VA_ARGS__)
    const uint32_t lvt_in[LVT_COUNT] = {in->lvt_cmci, in->lvt_timer, in->lvt_thermal, in->lvt_perf,
                                        in->lvt_lint0, in->lvt_lint1, in->lvt_error};
    if ((in->apic_base & ~BASE_VALID) || ((in->apic_base & BASE_EXTD) && !(in->apic_base & BASE_EN)))
        BAD("lapic %u: IA32_APIC_BASE 0x%llx is not a valid value", idx, (unsigned long long)in->apic_base);
    bool x2mode = (in->apic_base & BASE_EXTD) != 0;
    if (!x2mode && in->id > 0xff)
        BAD("lapic %u: xAPIC ID %u does not fit 8 bits", idx, in->id);
    if (in->tpr > 0xff || (in->svr & ~SVR_VALID) || (in->tdcr & ~0xbu) || (in->esr & ~0xefu))
        BAD("lapic %u: TPR 0x%x, SVR 0x%x, TDCR 0x%x or ESR 0x%x has reserved bits", idx, in->tpr, in->svr, in->tdcr,
            in->esr);
    if ((in->irr[0] & 0xffff) || (in->isr[0] & 0xffff))
        BAD("lapic %u: IRR/ISR hold vectors below 16", idx);
    for (unsigned i = 0; i < LVT_COUNT; i++) {
        if (lvt_in[i] & ~lvt_valid[i] & ~(1u << 14) & ~(1u << 12))
            BAD("lapic %u: LVT entry %u = 0x%x has reserved bits", idx, i, lvt_in[i]);
        if (!(in->svr & SVR_ENABLE) && !(lvt_in[i] & LVT_MASKED))
            BAD("lapic %u: LVT entry %u unmasked while the APIC is software-disabled", idx, i);
    }
    if ((in->icr_lo & ~0xcdfffu & ~(1u << 12)))
        BAD("lapic %u: ICR low 0x%x has reserved bits", idx, in->icr_lo);
    if (in->tmcct > in->tmict)
        BAD("lapic %u: current count %u above the initial count %u", idx, in->tmcct, in->tmict);
    vmt_lapic *l = &p->s.lapic[idx];
    memset(l, 0, sizeof *l);
    l->apic_base = in->apic_base;
    l->id = in->id;
    l->tpr = in->tpr;
    l->ldr = in->ldr;
    l->dfr = in->dfr;
    l->svr = in->svr;
    memcpy(l->isr, in->isr, sizeof l->isr);
    memcpy(l->tmr, in->tmr, sizeof l->tmr);
    memcpy(l->irr, in->irr, sizeof l->irr);
    l->esr = in->esr;
    l->icr_lo = in->icr_lo & 0xcdfffu;
    l->icr_hi = in->icr_hi;
    for (unsigned i = 0; i < LVT_COUNT; i++)
        l->lvt[i] = lvt_in[i] & (lvt_valid[i] | ((i == LVT_LINT0 || i == LVT_LINT1) ? 1u << 14 : 0));
    l->tdcr = in->tdcr;
    l->tmict = in->tmict;
    l->timer_next_ns = UINT64_MAX;
    unsigned mode = timer_mode(l);
    if (mode == TIMER_TSC) {
        l->tmict = 0;
        if (in->tsc_deadline)
            arm_deadline(p, idx, in->tsc_deadline);
        return VMT_OK;
    }
    if (mode == TIMER_PERIODIC && in->tmict && !in->tmcct)
        BAD("lapic %u: a periodic timer never shows a current count of 0", idx);
    uint64_t div = divisor(l), now = p->s.now_ns;
    uint64_t full = ticks_to_ns(p, div, in->tmict);
    if (in->tmict && in->tmcct) {
        l->timer_next_ns = plat_sat_add(now, ticks_to_ns(p, div, in->tmcct));
        l->timer_start_ns = l->timer_next_ns > full ? l->timer_next_ns - full : 0;
    } else {
        l->timer_start_ns = now > full ? now - full : 0; /* expired one-shot: reads 0 */
    }
    return VMT_OK;
#undef BAD
}
