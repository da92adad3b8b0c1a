/*
 * platform/ioapic.c — the I/O APIC (82093AA datasheet; version 0x20 with the
 * EOI register at offset 0x40, as QEMU's pc machine and Linux expect).
 *
 * Registers: IOREGSEL (offset 0x00, 8 bits), IOWIN (0x10, 32 bits), EOI
 * (0x40). Indirect registers: 0x00 ID (bits 27:24), 0x01 version
 * (0x00170020: 24 entries), 0x02 arbitration (= ID), 0x10 + 2n / +1 the
 * low/high half of redirection entry n.
 *
 * Delivery: an edge-triggered pin delivers on a rising input edge while
 * unmasked (an edge on a masked pin is lost, as the datasheet says). A
 * level-triggered pin delivers while asserted, unmasked and Remote IRR is
 * clear, and sets Remote IRR; the LAPIC's EOI broadcast (or a write to the
 * EOI register) with the entry's vector clears it and delivers again if the
 * pin is still asserted. Unmasking an asserted level pin delivers. Delivery
 * status (bit 12) always reads 0: messages are delivered at once. Input
 * polarity is taken as already applied by the board (lines are "asserted").
 *
 * Invariants: writable bits only (Remote IRR only on level entries; delivery
 * status never set), ID in 4 bits, an asserted unmasked level pin has been
 * delivered (Remote IRR set).
 */
#include "platform/platform_internal.h"

#define RED_MASKED (1ull << 16)
#define RED_LEVEL (1ull << 15)
#define RED_RIRR (1ull << 14)
#define RED_WRITABLE 0xff0000000001afffull /* dest, mask, trigger, polarity, destmode, mode, vector */
#define IOAPIC_VERSION 0x00170020u

static void deliver(vmt_platform *p, unsigned pin)
{
    vmt_ioapic *d = &p->s.ioapic;
    uint64_t e = d->redir[pin];
    bool level = e & RED_LEVEL;
    if (level)
        d->redir[pin] |= RED_RIRR;
    vmt_lapic_deliver(p, (uint32_t)(e >> 56), (e >> 11) & 1, (e >> 8) & 7, (uint8_t)e, level);
}

static void service(vmt_platform *p, unsigned pin)
{
    vmt_ioapic *d = &p->s.ioapic;
    uint64_t e = d->redir[pin];
    if ((e & RED_LEVEL) && !(e & RED_MASKED) && !(e & RED_RIRR) && (d->level >> pin & 1))
        deliver(p, pin);
}

void vmt_ioapic_set_pin(vmt_platform *p, unsigned pin, bool level)
{
    vmt_ioapic *d = &p->s.ioapic;
    if (pin >= IOAPIC_PINS)
        return;
    bool old = (d->level >> pin) & 1;
    if (level)
        d->level |= 1u << pin;
    else
        d->level &= ~(1u << pin);
    uint64_t e = d->redir[pin];
    if (e & RED_LEVEL)
        service(p, pin);
    else if (level && !old && !(e & RED_MASKED))
        deliver(p, pin);
}

void vmt_ioapic_eoi(vmt_platform *p, uint8_t vector)
{
    vmt_ioapic *d = &p->s.ioapic;
    for (unsigned i = 0; i < IOAPIC_PINS; i++) {
        uint64_t e = d->redir[i];
        if ((e & RED_LEVEL) && (uint8_t)e == vector && (e & RED_RIRR)) {
            d->redir[i] &= ~RED_RIRR;
            service(p, i);
        }
    }
}

static uint32_t read_reg(const vmt_ioapic *d)
{
    uint32_t sel = d->regsel;
    switch (sel) {
    case 0x00: return d->id << 24;
    case 0x01: return IOAPIC_VERSION;
    case 0x02: return d->id << 24;
    default:
        if (sel >= 0x10 && sel < 0x10 + 2 * IOAPIC_PINS) {
            uint64_t e = d->redir[(sel - 0x10) / 2];
            return (sel & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
        }
        return 0xffffffffu;
    }
}

static void write_reg(vmt_platform *p, uint32_t v)
{
    vmt_ioapic *d = &p->s.ioapic;
    uint32_t sel = d->regsel;
    if (sel == 0x00) {
        d->id = (v >> 24) & 0xf;
        return;
    }
    if (sel < 0x10 || sel >= 0x10 + 2 * IOAPIC_PINS)
        return;
    unsigned pin = (sel - 0x10) / 2;
    uint64_t e = d->redir[pin];
    uint64_t ro = e & RED_RIRR;
    if (sel & 1)
        e = (e & 0xffffffffull) | ((uint64_t)v << 32);
    else
        e = (e & 0xffffffff00000000ull) | v;
    e = (e & RED_WRITABLE) | ro;
    if (!(e & RED_LEVEL))
        e &= ~RED_RIRR;
    d->redir[pin] = e;
    service(p, pin); /* unmasking an asserted level pin delivers */
}

vmt_status vmt_ioapic_mmio(vmt_platform *p, uint64_t off, unsigned size, bool write, uint64_t *val)
{
    vmt_ioapic *d = &p->s.ioapic;
    if (write) {
        if (off == 0x00)
            d->regsel = (uint32_t)*val & 0xff;
        else if (off == 0x10 && size >= 4)
            write_reg(p, (uint32_t)*val);
        else if (off == 0x40)
            vmt_ioapic_eoi(p, (uint8_t)*val);
        return VMT_OK;
    }
    uint64_t v;
    if (off == 0x00)
        v = d->regsel;
    else if (off >= 0x10 && off < 0x14)
        v = (uint64_t)read_reg(d) >> ((off - 0x10) * 8);
    else
        v = 0;
    *val = size >= 8 ? v : v & ((1ull << (size * 8)) - 1);
    return VMT_OK;
}

void vmt_ioapic_reset(vmt_platform *p)
{
    vmt_ioapic *d = &p->s.ioapic;
    uint32_t level = d->level;
    *d = (vmt_ioapic){0};
    d->level = level; /* the pins' inputs are the devices', not ours */
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        d->redir[i] = RED_MASKED;
}

void vmt_ioapic_save(const vmt_ioapic *d, plat_w *w)
{
    plat_w_u32(w, d->id);
    plat_w_u32(w, d->regsel);
    plat_w_u32(w, d->level);
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        plat_w_u64(w, d->redir[i]);
}

vmt_status vmt_ioapic_load(vmt_ioapic *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->id = plat_r_u32(r);
    d->regsel = plat_r_u32(r);
    d->level = plat_r_u32(r);
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        d->redir[i] = plat_r_u64(r);
    return VMT_OK;
}

vmt_status vmt_ioapic_check(const vmt_ioapic *d, vmt_errbuf *e)
{
    if (d->id > 0xf || d->regsel > 0xff || (d->level >> IOAPIC_PINS))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "ioapic: ID 0x%x, IOREGSEL 0x%x or pin levels 0x%x out of range",
                              d->id, d->regsel, d->level);
    for (unsigned i = 0; i < IOAPIC_PINS; i++) {
        uint64_t r = d->redir[i];
        if (r & ~(RED_WRITABLE | RED_RIRR))
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "ioapic: entry %u = 0x%llx has reserved bits", i,
                                  (unsigned long long)r);
        if ((r & RED_RIRR) && !(r & RED_LEVEL))
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "ioapic: entry %u has Remote IRR set but is edge-triggered", i);
        if ((r & RED_LEVEL) && !(r & RED_MASKED) && (d->level >> i & 1) && !(r & RED_RIRR))
            return vmt_errbuf_set(e, VMT_E_INTERNAL, "ioapic: level pin %u is asserted and unmasked but was not delivered", i);
    }
    return VMT_OK;
}

/* ---------- register views (vmtrap/platform_regs.h) ---------- */

void vmt_ioapic_get_regs(const vmt_platform *p, vmt_platform_ioapic_regs *o)
{
    const vmt_ioapic *d = &p->s.ioapic;
    o->id = d->id;
    o->regsel = d->regsel;
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        o->redir[i] = d->redir[i];
}

vmt_status vmt_ioapic_set_regs(vmt_platform *p, const vmt_platform_ioapic_regs *in)
{
    if (in->id > 0xf || in->regsel > 0xff)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "ioapic: ID %u or IOREGSEL 0x%x out of range", in->id, in->regsel);
    for (unsigned i = 0; i < IOAPIC_PINS; i++) {
        uint64_t r = in->redir[i] & ~(1ull << 12); /* delivery status: ours */
        if (r & ~(RED_WRITABLE | RED_RIRR))
            return vmt_errbuf_set(&p->err, VMT_E_INVAL, "ioapic: entry %u = 0x%llx has reserved bits", i,
                                  (unsigned long long)in->redir[i]);
        if ((r & RED_RIRR) && !(r & RED_LEVEL))
            return vmt_errbuf_set(&p->err, VMT_E_INVAL, "ioapic: entry %u has Remote IRR but is edge-triggered", i);
    }
    vmt_ioapic *d = &p->s.ioapic;
    d->id = in->id;
    d->regsel = in->regsel;
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        d->redir[i] = in->redir[i] & ~(1ull << 12);
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        service(p, i);
    return VMT_OK;
}
