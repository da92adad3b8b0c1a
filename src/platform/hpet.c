/*
 * platform/hpet.c — the High Precision Event Timer at 0xfed00000 (IA-PC
 * HPET specification 1.0a), laid out as QEMU's: 3 timers, 64-bit main
 * counter at 100 MHz (period 10,000,000 fs), vendor 0x8086, legacy
 * replacement capable; every timer periodic- and 64-bit-capable, routable
 * to IOAPIC pins 2, 8 and 16-23 (Tn_INT_ROUTE_CAP 0x00ff0104).
 *
 * Registers: 0x000 capabilities, 0x010 configuration (ENABLE_CNF,
 * LEG_RT_CNF), 0x020 interrupt status (write 1 to clear), 0x0f0 main
 * counter, 0x100 + 0x20n timer n configuration, +0x08 comparator, +0x10
 * FSB route. 32- and 64-bit accesses at any byte offset of a register.
 *
 * Counter: while enabled, counter = counter_base + (now - base_ns) / 10;
 * halted, it holds its value (writes are meant for a halted counter).
 * Comparators: a timer with Tn_INT_ENB_CNF fires when the counter passes
 * its comparator (32-bit timers compare the low 32 bits and wrap).
 * Periodic timers then add their period (missed periods coalesce into one
 * interrupt). Comparator writes follow the spec as QEMU implements it: a
 * periodic timer's comparator changes only with Tn_VAL_SET_CNF (cleared
 * by the write); the period is always written. Level-triggered timers set
 * their status bit and hold the line until software clears it; edge timers
 * pulse it. Routing: legacy replacement sends timer 0 to ISA IRQ 0 and
 * timer 1 to IRQ 8 (and disconnects the PIT and the RTC); otherwise
 * Tn_INT_ROUTE_CNF picks the IOAPIC pin. Limits: FSB (MSI) delivery is
 * not modelled; a comparator change without interrupts enabled is not
 * tracked for periodic timers.
 *
 * Invariants: reserved configuration bits clear, read-only capability bits
 * intact, 32-bit timers hold 32-bit values, times not in the future.
 */
#include "platform/platform_internal.h"

#define PERIOD_FS 10000000ull
#define NS_PER_TICK 10ull
#define CAP_ID (PERIOD_FS << 32 | 0x8086ull << 16 | 1ull << 15 | 1ull << 13 | (uint64_t)(HPET_TIMERS - 1) << 8 | 1)
#define CFG_ENABLE 1ull
#define CFG_LEGACY 2ull
#define TN_LEVEL (1ull << 1)
#define TN_ENB (1ull << 2)
#define TN_PERIODIC (1ull << 3)
#define TN_PER_CAP (1ull << 4)
#define TN_SIZE_CAP (1ull << 5)
#define TN_SETVAL (1ull << 6)
#define TN_32BIT (1ull << 8)
#define TN_ROUTE (0x1full << 9)
#define TN_FSB (1ull << 14)
#define TN_WRITABLE (TN_LEVEL | TN_ENB | TN_PERIODIC | TN_SETVAL | TN_32BIT | TN_ROUTE | TN_FSB)
#define TN_RO (TN_PER_CAP | TN_SIZE_CAP | 0x00ff0104ull << 32)

static uint64_t counter_at(const vmt_hpet *h, uint64_t ns)
{
    if (!(h->config & CFG_ENABLE) || ns <= h->base_ns)
        return h->counter_base;
    return h->counter_base + (ns - h->base_ns) / NS_PER_TICK;
}

bool vmt_hpet_legacy(const vmt_platform *p)
{
    const vmt_hpet *h = &p->s.hpet;
    return (h->config & (CFG_ENABLE | CFG_LEGACY)) == (CFG_ENABLE | CFG_LEGACY);
}

static int route(const vmt_platform *p, unsigned n)
{
    if (vmt_hpet_legacy(p) && n < 2)
        return n == 0 ? 0 : 8;
    unsigned pin = (unsigned)((p->s.hpet.t[n].config & TN_ROUTE) >> 9);
    if (pin == 0 || pin >= PLAT_LINES)
        return -1;
    return pin == 2 ? 0 : (int)pin;
}

static void update_line(vmt_platform *p, unsigned n)
{
    const vmt_hpet_timer *t = &p->s.hpet.t[n];
    unsigned src = PLAT_SRC_HPET0 + n;
    int irq = route(p, n);
    bool level = (t->config & TN_LEVEL) && (t->config & TN_ENB) && ((p->s.hpet.isr >> n) & 1);
    for (unsigned l = 0; l < PLAT_LINES; l++)
        if (((p->s.line_src[l] >> src) & 1) && (int)l != irq)
            vmt_plat_irq(p, src, l, false);
    if (irq >= 0)
        vmt_plat_irq(p, src, (unsigned)irq, level);
}

static uint64_t width_mask(const vmt_hpet_timer *t)
{
    return (t->config & TN_32BIT) ? 0xffffffffull : UINT64_MAX;
}

/* Counter ticks from c0 until the comparator matches (0: never/now). */
static uint64_t ticks_to_match(const vmt_hpet_timer *t, uint64_t c0)
{
    return (t->cmp - c0) & width_mask(t);
}

static bool armed(const vmt_hpet *h, unsigned n)
{
    return (h->config & CFG_ENABLE) && (h->t[n].config & TN_ENB);
}

uint64_t vmt_hpet_deadline(const vmt_platform *p)
{
    const vmt_hpet *h = &p->s.hpet;
    uint64_t next = UINT64_MAX;
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        if (!armed(h, n))
            continue;
        uint64_t c0 = counter_at(h, h->last_ns);
        uint64_t delta = ticks_to_match(&h->t[n], c0);
        if (delta == 0)
            continue;
        uint64_t done = c0 - h->counter_base;
        if (delta > UINT64_MAX - done)
            continue;
        uint64_t since = done + delta; /* ticks after base_ns */
        if (since > UINT64_MAX / NS_PER_TICK)
            continue;
        next = plat_min(next, plat_sat_add(h->base_ns, since * NS_PER_TICK));
    }
    return next;
}

void vmt_hpet_advance(vmt_platform *p)
{
    vmt_hpet *h = &p->s.hpet;
    uint64_t now = p->s.now_ns;
    if (now <= h->last_ns)
        return;
    uint64_t c0 = counter_at(h, h->last_ns), c1 = counter_at(h, now);
    h->last_ns = now;
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        vmt_hpet_timer *t = &h->t[n];
        if (!armed(h, n))
            continue;
        uint64_t delta = ticks_to_match(t, c0);
        if (delta == 0 || delta > c1 - c0)
            continue;
        if (t->config & TN_LEVEL) {
            h->isr |= 1ull << n;
            update_line(p, n);
        } else {
            int irq = route(p, n);
            if (irq >= 0)
                vmt_plat_irq_pulse(p, PLAT_SRC_HPET0 + n, (unsigned)irq);
        }
        if ((t->config & TN_PERIODIC) && (t->period & width_mask(t))) {
            uint64_t hit = c0 + delta, per = t->period & width_mask(t);
            uint64_t k = (c1 - hit) / per + 1;
            t->cmp = (hit + k * per) & width_mask(t);
        }
    }
}

static uint64_t deposit(uint64_t old, unsigned shift, unsigned size, uint64_t v)
{
    uint64_t mask = size >= 8 ? UINT64_MAX : ((1ull << (size * 8)) - 1);
    mask <<= shift;
    return (old & ~mask) | ((v << shift) & mask);
}

static void write_timer(vmt_platform *p, unsigned n, unsigned reg, unsigned shift, unsigned size, uint64_t v)
{
    vmt_hpet *h = &p->s.hpet;
    vmt_hpet_timer *t = &h->t[n];
    switch (reg) {
    case 0x00:
        t->config = (deposit(t->config, shift, size, v) & TN_WRITABLE) | TN_RO;
        if (t->config & TN_32BIT) {
            t->cmp &= 0xffffffffull;
            t->period &= 0xffffffffull;
        }
        if (!(t->config & TN_LEVEL))
            h->isr &= ~(1ull << n);
        break;
    case 0x08: {
        uint64_t nv = deposit(t->cmp, shift, size, v) & width_mask(t);
        if (!(t->config & TN_PERIODIC) || (t->config & TN_SETVAL))
            t->cmp = nv;
        if (t->config & TN_PERIODIC)
            t->period = deposit(t->period, shift, size, v) & width_mask(t);
        t->config &= ~TN_SETVAL;
        break;
    }
    case 0x10: t->fsb = deposit(t->fsb, shift, size, v); break;
    default: break;
    }
    update_line(p, n);
}

vmt_status vmt_hpet_mmio(vmt_platform *p, uint64_t off, unsigned size, bool write, uint64_t *val)
{
    vmt_hpet *h = &p->s.hpet;
    vmt_hpet_advance(p);
    unsigned reg = (unsigned)off & ~7u, shift = ((unsigned)off & 7) * 8;
    if (shift + size * 8 > 64) /* crosses a register: ignore / read ones */
        size = (64 - shift) / 8;
    if (!write) {
        uint64_t v = 0;
        if (reg == 0x000)
            v = CAP_ID;
        else if (reg == 0x010)
            v = h->config;
        else if (reg == 0x020)
            v = h->isr;
        else if (reg == 0x0f0)
            v = counter_at(h, p->s.now_ns);
        else if (reg >= 0x100 && reg < 0x100 + 0x20 * HPET_TIMERS) {
            const vmt_hpet_timer *t = &h->t[(reg - 0x100) / 0x20];
            switch ((reg - 0x100) % 0x20) {
            case 0x00: v = t->config; break;
            case 0x08: v = t->cmp; break;
            case 0x10: v = t->fsb; break;
            default: v = 0; break;
            }
        }
        v >>= shift;
        *val = size >= 8 ? v : v & ((1ull << (size * 8)) - 1);
        return VMT_OK;
    }
    uint64_t v = *val;
    if (reg == 0x010) {
        uint64_t old = h->config, now = p->s.now_ns;
        uint64_t cnt = counter_at(h, now);
        h->config = deposit(h->config, shift, size, v) & (CFG_ENABLE | CFG_LEGACY);
        if ((old ^ h->config) & CFG_ENABLE) {
            h->counter_base = cnt;
            h->base_ns = now;
        }
        if (vmt_hpet_legacy(p) && !(old & CFG_LEGACY && old & CFG_ENABLE)) {
            vmt_plat_irq(p, PLAT_SRC_PIT, 0, false);
            vmt_plat_irq(p, PLAT_SRC_RTC, 8, false);
        }
        for (unsigned n = 0; n < HPET_TIMERS; n++)
            update_line(p, n);
        if (!vmt_hpet_legacy(p) && plat_has(p, VMT_PLATFORM_DEV_RTC))
            vmt_rtc_advance(p); /* the RTC gets IRQ 8 back */
    } else if (reg == 0x020) {
        h->isr &= ~deposit(0, shift, size, v);
        for (unsigned n = 0; n < HPET_TIMERS; n++)
            update_line(p, n);
    } else if (reg == 0x0f0) {
        h->counter_base = deposit(counter_at(h, p->s.now_ns), shift, size, v);
        h->base_ns = p->s.now_ns;
    } else if (reg >= 0x100 && reg < 0x100 + 0x20 * HPET_TIMERS) {
        write_timer(p, (reg - 0x100) / 0x20, (reg - 0x100) % 0x20, shift, size, v);
    }
    h->last_ns = p->s.now_ns;
    return VMT_OK;
}

void vmt_hpet_reset(vmt_platform *p)
{
    vmt_hpet *h = &p->s.hpet;
    *h = (vmt_hpet){0};
    h->base_ns = h->last_ns = p->s.now_ns;
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        h->t[n].config = TN_RO;
        h->t[n].cmp = UINT64_MAX;
    }
}

void vmt_hpet_save(const vmt_hpet *d, plat_w *w)
{
    plat_w_u64(w, d->config);
    plat_w_u64(w, d->isr);
    plat_w_u64(w, d->counter_base);
    plat_w_u64(w, d->base_ns);
    plat_w_u64(w, d->last_ns);
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        plat_w_u64(w, d->t[n].config);
        plat_w_u64(w, d->t[n].cmp);
        plat_w_u64(w, d->t[n].period);
        plat_w_u64(w, d->t[n].fsb);
    }
}

vmt_status vmt_hpet_load(vmt_hpet *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->config = plat_r_u64(r);
    d->isr = plat_r_u64(r);
    d->counter_base = plat_r_u64(r);
    d->base_ns = plat_r_u64(r);
    d->last_ns = plat_r_u64(r);
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        d->t[n].config = plat_r_u64(r);
        d->t[n].cmp = plat_r_u64(r);
        d->t[n].period = plat_r_u64(r);
        d->t[n].fsb = plat_r_u64(r);
    }
    return VMT_OK;
}

vmt_status vmt_hpet_check(const vmt_hpet *d, uint64_t now_ns, vmt_errbuf *e)
{
    if ((d->config & ~(CFG_ENABLE | CFG_LEGACY)) || (d->isr >> HPET_TIMERS))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "hpet: configuration 0x%llx or status 0x%llx has reserved bits",
                              (unsigned long long)d->config, (unsigned long long)d->isr);
    if (d->base_ns > now_ns || d->last_ns > now_ns)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "hpet: counter base %llu or last check %llu ns is after now %llu",
                              (unsigned long long)d->base_ns, (unsigned long long)d->last_ns,
                              (unsigned long long)now_ns);
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        const vmt_hpet_timer *t = &d->t[n];
        if ((t->config & ~TN_WRITABLE) != TN_RO)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "hpet: timer %u configuration 0x%llx breaks its capability bits", n,
                                  (unsigned long long)t->config);
        if ((t->config & TN_32BIT) && ((t->cmp | t->period) >> 32))
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "hpet: 32-bit timer %u holds a 64-bit comparator or period", n);
        if (!(t->config & TN_LEVEL) && ((d->isr >> n) & 1))
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "hpet: edge timer %u has its status bit set", n);
    }
    return VMT_OK;
}

/* ---------- register views (vmtrap/platform_regs.h) ---------- */

void vmt_hpet_get_regs(const vmt_platform *p, vmt_platform_hpet_regs *o)
{
    const vmt_hpet *h = &p->s.hpet;
    o->config = h->config;
    o->isr = h->isr;
    o->counter = counter_at(h, p->s.now_ns);
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        o->timer[n].config = h->t[n].config;
        o->timer[n].cmp = h->t[n].cmp;
        o->timer[n].period = h->t[n].period;
        o->timer[n].fsb = h->t[n].fsb;
    }
}

vmt_status vmt_hpet_set_regs(vmt_platform *p, const vmt_platform_hpet_regs *in)
{
    if ((in->config & ~(CFG_ENABLE | CFG_LEGACY)) || (in->isr >> HPET_TIMERS))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "hpet: configuration 0x%llx or status 0x%llx has reserved bits",
                              (unsigned long long)in->config, (unsigned long long)in->isr);
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        uint64_t c = in->timer[n].config & TN_WRITABLE;
        if ((c & TN_32BIT) && ((in->timer[n].cmp | in->timer[n].period) >> 32))
            return vmt_errbuf_set(&p->err, VMT_E_INVAL, "hpet: 32-bit timer %u with a 64-bit comparator or period", n);
        if (!(c & TN_LEVEL) && ((in->isr >> n) & 1))
            return vmt_errbuf_set(&p->err, VMT_E_INVAL, "hpet: edge timer %u with its status bit set", n);
    }
    vmt_hpet *h = &p->s.hpet;
    h->config = in->config;
    h->isr = in->isr;
    h->counter_base = in->counter;
    h->base_ns = h->last_ns = p->s.now_ns;
    for (unsigned n = 0; n < HPET_TIMERS; n++) {
        h->t[n].config = (in->timer[n].config & TN_WRITABLE) | TN_RO;
        h->t[n].cmp = in->timer[n].cmp;
        h->t[n].period = in->timer[n].period;
        h->t[n].fsb = in->timer[n].fsb;
    }
    if (vmt_hpet_legacy(p)) {
        vmt_plat_irq(p, PLAT_SRC_PIT, 0, false);
        vmt_plat_irq(p, PLAT_SRC_RTC, 8, false);
    }
    for (unsigned n = 0; n < HPET_TIMERS; n++)
        update_line(p, n);
    return VMT_OK;
}
