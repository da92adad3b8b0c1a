/*
 * platform/pit.c — the 8254 programmable interval timer (ports 0x40-0x43)
 * and the port 0x61 bits that belong to it (channel 2 gate, speaker data,
 * refresh toggle, channel 2 output).
 *
 * Model (8254 datasheet): 1.193182 MHz; the count of each channel is
 * computed from virtual time since it was loaded (no ticking). Control
 * words select channel, access mode (LSB, MSB, LSB then MSB), mode 0-5 and
 * BCD; counter latch and read-back commands latch count and status.
 * Outputs as functions of elapsed ticks d and count C: mode 0 high once
 * d >= C; mode 2 low for the tick before each reload; mode 3 square wave;
 * mode 4/5 low pulse at terminal count; mode 1 low while counting.
 * Channel 0 raises ISA IRQ 0 (an edge) at its terminal counts in modes 0
 * and 4 and at every reload in modes 2 and 3; missed periods coalesce into
 * one edge. Channel 2's gate is port 0x61 bit 0: a rising gate restarts
 * modes 1, 2, 3, 5 and resumes 0 and 4; a low gate pauses counting. This
 * covers what Linux's PIT calibration and clockevent use.
 *
 * Reset: no channel is programmed (the 8254's power-on state is
 * undefined; firmware programs it): no IRQ until the guest loads a count.
 *
 * Invariants: modes 0-5, access modes 1-3, counts 1..0x10000, channels 0
 * and 1 gated on, the IRQ 0 deadline in the future and only while channel
 * 0 counts.
 */
#include "platform/platform_internal.h"

#define PIT_HZ 1193182ull
#define NS_PER_S 1000000000ull

static uint64_t ticks_ns(uint64_t ticks) { return plat_muldiv_up(ticks, NS_PER_S, PIT_HZ); }

static uint64_t elapsed(const vmt_platform *p, const vmt_pit_channel *c)
{
    if (!c->counting)
        return 0;
    uint64_t end = c->gate ? p->s.now_ns : c->gate_low_ns;
    return end > c->load_ns ? plat_muldiv(end - c->load_ns, PIT_HZ, NS_PER_S) : 0;
}

static uint32_t count_now(const vmt_platform *p, const vmt_pit_channel *c)
{
    uint64_t d = elapsed(p, c), n = c->count;
    if (!c->counting)
        return (uint32_t)(n & 0xffff);
    switch (c->mode) {
    case 2: return (uint32_t)(n - d % n);
    case 3: return (uint32_t)(n - (2 * d) % n);
    default: return (uint32_t)((n - d) & 0xffff);
    }
}

static bool out_now(const vmt_platform *p, const vmt_pit_channel *c)
{
    if (!c->counting)
        return c->mode != 0;
    uint64_t d = elapsed(p, c), n = c->count;
    switch (c->mode) {
    case 0: return d >= n;
    case 1: return d >= n;
    case 2: return d % n != n - 1;
    case 3: return d % n < (n + 1) / 2;
    default: return d != n;
    }
}

/* First IRQ 0 edge strictly after now, or UINT64_MAX. */
static uint64_t next_irq(const vmt_platform *p, const vmt_pit_channel *c)
{
    if (!c->counting || !c->gate)
        return UINT64_MAX;
    uint64_t d = elapsed(p, c), n = c->count;
    switch (c->mode) {
    case 0: case 4:
        return d < n ? plat_sat_add(c->load_ns, ticks_ns(n)) : UINT64_MAX;
    case 2: case 3:
        return plat_sat_add(c->load_ns, ticks_ns((d / n + 1) * n));
    default:
        return UINT64_MAX;
    }
}

uint64_t vmt_pit_deadline(const vmt_platform *p)
{
    return p->s.pit.irq_next_ns;
}

void vmt_pit_advance(vmt_platform *p)
{
    vmt_pit *t = &p->s.pit;
    if (t->irq_next_ns > p->s.now_ns)
        return;
    vmt_plat_irq_pulse(p, PLAT_SRC_PIT, 0);
    t->irq_next_ns = next_irq(p, &t->ch[0]);
}

static uint16_t to_bcd(uint32_t v)
{
    v %= 10000;
    return (uint16_t)((v / 1000) << 12 | ((v / 100) % 10) << 8 | ((v / 10) % 10) << 4 | (v % 10));
}

static uint32_t from_bcd(uint16_t v)
{
    return ((v >> 12) & 0xf) % 10 * 1000 + ((v >> 8) & 0xf) % 10 * 100 + ((v >> 4) & 0xf) % 10 * 10 + (v & 0xf) % 10;
}

static void load(vmt_platform *p, unsigned ch, uint16_t raw)
{
    vmt_pit_channel *c = &p->s.pit.ch[ch];
    uint32_t n = c->bcd ? from_bcd(raw) : raw;
    c->count = n ? n : (c->bcd ? 10000 : 0x10000);
    c->load_ns = p->s.now_ns;
    c->gate_low_ns = p->s.now_ns;
    c->counting = true;
    c->null_count = false;
    if (ch == 0)
        p->s.pit.irq_next_ns = next_irq(p, c);
}

static uint8_t status_byte(const vmt_platform *p, const vmt_pit_channel *c)
{
    return (uint8_t)((out_now(p, c) ? 0x80 : 0) | (c->null_count ? 0x40 : 0) | c->rw_mode << 4 | c->mode << 1 |
                     (c->bcd ? 1 : 0));
}

static void latch_count(const vmt_platform *p, vmt_pit_channel *c)
{
    if (c->count_latched)
        return;
    uint32_t v = count_now(p, c);
    c->latched_count = c->bcd ? to_bcd(v) : (uint16_t)v;
    c->count_latched = true;
    c->read_state = 0;
}

static void control(vmt_platform *p, uint8_t v)
{
    unsigned ch = v >> 6;
    if (ch == 3) { /* read-back */
        for (unsigned i = 0; i < 3; i++) {
            if (!(v & (2u << i)))
                continue;
            vmt_pit_channel *c = &p->s.pit.ch[i];
            if (!(v & 0x20))
                latch_count(p, c);
            if (!(v & 0x10) && !c->status_latched) {
                c->status = status_byte(p, c);
                c->status_latched = true;
            }
        }
        return;
    }
    vmt_pit_channel *c = &p->s.pit.ch[ch];
    unsigned rw = (v >> 4) & 3;
    if (rw == 0) {
        latch_count(p, c);
        return;
    }
    unsigned mode = (v >> 1) & 7;
    c->mode = (uint8_t)(mode >= 6 ? mode - 4 : mode);
    c->bcd = v & 1;
    c->rw_mode = (uint8_t)rw;
    c->read_state = c->write_state = 0;
    c->count_latched = c->status_latched = false;
    c->counting = false;
    c->null_count = true;
    if (ch == 0)
        p->s.pit.irq_next_ns = UINT64_MAX;
}

static uint8_t read_counter(vmt_platform *p, unsigned ch)
{
    vmt_pit_channel *c = &p->s.pit.ch[ch];
    if (c->status_latched) {
        c->status_latched = false;
        return c->status;
    }
    uint16_t v;
    bool latched = c->count_latched;
    if (latched) {
        v = c->latched_count;
    } else {
        uint32_t n = count_now(p, c);
        v = c->bcd ? to_bcd(n) : (uint16_t)n;
    }
    uint8_t r;
    if (c->rw_mode == 1) {
        r = (uint8_t)v;
        c->count_latched = false;
    } else if (c->rw_mode == 2) {
        r = (uint8_t)(v >> 8);
        c->count_latched = false;
    } else if (c->read_state == 0) {
        r = (uint8_t)v;
        c->read_state = 1;
    } else {
        r = (uint8_t)(v >> 8);
        c->read_state = 0;
        c->count_latched = false;
    }
    (void)latched;
    return r;
}

static void write_counter(vmt_platform *p, unsigned ch, uint8_t v)
{
    vmt_pit_channel *c = &p->s.pit.ch[ch];
    if (c->rw_mode == 1) {
        load(p, ch, v);
    } else if (c->rw_mode == 2) {
        load(p, ch, (uint16_t)(v << 8));
    } else if (c->write_state == 0) {
        c->write_latch = v;
        c->write_state = 1;
    } else {
        c->write_state = 0;
        load(p, ch, (uint16_t)(c->write_latch | v << 8));
    }
}

static void set_gate2(vmt_platform *p, bool gate)
{
    vmt_pit_channel *c = &p->s.pit.ch[2];
    if (gate == c->gate)
        return;
    if (gate) {
        if (c->mode == 0 || c->mode == 4)
            c->load_ns += p->s.now_ns - c->gate_low_ns; /* resume */
        else
            c->load_ns = p->s.now_ns; /* restart */
    } else {
        c->gate_low_ns = p->s.now_ns;
    }
    c->gate = gate;
}

vmt_status vmt_pit_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val)
{
    vmt_pit *t = &p->s.pit;
    if (port == 0x61) {
        if (write) {
            set_gate2(p, *val & 1);
            t->speaker_data = (*val >> 1) & 1;
        } else {
            bool refresh = (p->s.now_ns / 15085) & 1;
            *val = (t->ch[2].gate ? 1u : 0) | (t->speaker_data ? 2u : 0) | (refresh ? 0x10u : 0) |
                   (out_now(p, &t->ch[2]) ? 0x20u : 0);
        }
        return VMT_OK;
    }
    if (port == 0x43) {
        if (write)
            control(p, (uint8_t)*val);
        else
            *val = 0xff; /* the control register cannot be read */
        return VMT_OK;
    }
    unsigned ch = port - 0x40u;
    if (write)
        write_counter(p, ch, (uint8_t)*val);
    else
        *val = read_counter(p, ch);
    return VMT_OK;
}

void vmt_pit_reset(vmt_platform *p)
{
    vmt_pit *t = &p->s.pit;
    *t = (vmt_pit){0};
    for (unsigned i = 0; i < 3; i++) {
        t->ch[i].count = 0x10000;
        t->ch[i].rw_mode = 3;
        t->ch[i].gate = i != 2;
    }
    t->irq_next_ns = UINT64_MAX;
}

void vmt_pit_save(const vmt_pit *d, plat_w *w)
{
    for (unsigned i = 0; i < 3; i++) {
        const vmt_pit_channel *c = &d->ch[i];
        plat_w_u32(w, c->count);
        plat_w_u64(w, c->load_ns);
        plat_w_u64(w, c->gate_low_ns);
        plat_w_u16(w, c->latched_count);
        const uint8_t b[] = {c->count_latched, c->status, c->status_latched, c->rw_mode, c->read_state,
                             c->write_state, c->write_latch, c->mode, c->bcd, c->gate, c->null_count,
                             c->counting};
        plat_w_bytes(w, b, sizeof b);
    }
    plat_w_u8(w, d->speaker_data);
    plat_w_u64(w, d->irq_next_ns);
}

vmt_status vmt_pit_load(vmt_pit *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    for (unsigned i = 0; i < 3; i++) {
        vmt_pit_channel *c = &d->ch[i];
        c->count = plat_r_u32(r);
        c->load_ns = plat_r_u64(r);
        c->gate_low_ns = plat_r_u64(r);
        c->latched_count = plat_r_u16(r);
        c->count_latched = plat_r_bool(r);
        c->status = plat_r_u8(r);
        c->status_latched = plat_r_bool(r);
        c->rw_mode = plat_r_u8(r);
        c->read_state = plat_r_u8(r);
        c->write_state = plat_r_u8(r);
        c->write_latch = plat_r_u8(r);
        c->mode = plat_r_u8(r);
        c->bcd = plat_r_bool(r);
        c->gate = plat_r_bool(r);
        c->null_count = plat_r_bool(r);
        c->counting = plat_r_bool(r);
    }
    d->speaker_data = plat_r_bool(r);
    d->irq_next_ns = plat_r_u64(r);
    return VMT_OK;
}

vmt_status vmt_pit_check(const vmt_pit *d, uint64_t now_ns, vmt_errbuf *e)
{
    for (unsigned i = 0; i < 3; i++) {
        const vmt_pit_channel *c = &d->ch[i];
        if (c->mode > 5 || c->rw_mode < 1 || c->rw_mode > 3 || c->read_state > 1 || c->write_state > 1)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "pit: channel %u mode %u access %u state %u/%u out of range", i,
                                  c->mode, c->rw_mode, c->read_state, c->write_state);
        if (c->count < 1 || c->count > 0x10000)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "pit: channel %u count %u out of range", i, c->count);
        if (i != 2 && !c->gate)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "pit: channel %u gate is low (wired high)", i);
        if (c->counting && !c->gate && c->gate_low_ns < c->load_ns)
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "pit: channel %u paused before it was loaded", i);
    }
    if (d->irq_next_ns != UINT64_MAX && (d->irq_next_ns <= now_ns || !d->ch[0].counting))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "pit: IRQ 0 deadline %llu ns invalid at %llu ns (channel 0 %s)",
                              (unsigned long long)d->irq_next_ns, (unsigned long long)now_ns,
                              d->ch[0].counting ? "counting" : "idle");
    return VMT_OK;
}
