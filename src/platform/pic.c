/*
 * platform/pic.c — the 8259A pair: master 0x20/0x21 (IRQ 0-7), slave
 * 0xa0/0xa1 (IRQ 8-15) cascaded on master IRQ 2, ELCR 0x4d0/0x4d1 (PIIX
 * edge/level control; master bits 0-2 and slave bits 0 and 5 are fixed
 * edge, as on QEMU's PIIX3).
 *
 * Model (8259A datasheet): ICW1 starts initialization (clears IMR, ISR,
 * IRR and the rotation; expects ICW2 vector base, ICW3 in cascade mode,
 * ICW4 if ICW1.IC4); OCW1 writes IMR; OCW2 non-specific/specific EOI and
 * the rotations; OCW3 selects IRR/ISR reads, poll mode and special mask.
 * Edge-triggered inputs latch IRR on a rising edge; level inputs follow the
 * line. Priority: fully nested with rotation (priority_add), special fully
 * nested mode on the master (ICW4.SFNM), special mask mode. INTA moves the
 * winner from IRR to ISR (or not, in AEOI mode); an INTA with no request
 * gives the spurious IRQ 7 vector (IRQ 15 on the slave through IRQ 2).
 * The slave's INT output drives master input 2.
 *
 * Not modelled: LTIM (ICW1 level mode for all inputs; ELCR is what PCs
 * use), buffered mode, 8080 call-address mode.
 *
 * Invariants: init_step 0..3, vector base 8-aligned, rotation 0..7, ELCR
 * within its mask, level-mode IRR bits equal the input lines.
 */
#include "platform/platform_internal.h"

static int priority_of(const vmt_pic *c, uint8_t mask)
{
    if (!mask)
        return 8;
    int pr = 0;
    while (!(mask & (1u << ((pr + c->priority_add) & 7))))
        pr++;
    return pr;
}

/* The IRQ (0..7) this chip would signal now, or -1. */
static int chip_irq(const vmt_pic *c, bool master)
{
    int pr = priority_of(c, c->irr & (uint8_t)~c->imr);
    if (pr == 8)
        return -1;
    uint8_t in_service = c->isr;
    if (c->special_mask)
        in_service &= (uint8_t)~c->imr;
    if (master && c->sfnm)
        in_service &= (uint8_t)~(1u << 2);
    int cur = priority_of(c, in_service);
    return pr < cur ? (pr + c->priority_add) & 7 : -1;
}

static void chip_input(vmt_pic *c, unsigned irq, bool level)
{
    uint8_t m = (uint8_t)(1u << irq);
    if (c->elcr & m) {
        if (level) {
            c->irr |= m;
            c->last_irr |= m;
        } else {
            c->irr &= (uint8_t)~m;
            c->last_irr &= (uint8_t)~m;
        }
    } else if (level) {
        if (!(c->last_irr & m))
            c->irr |= m;
        c->last_irr |= m;
    } else {
        c->last_irr &= (uint8_t)~m;
    }
}

static void cascade(vmt_platform *p)
{
    chip_input(&p->s.pic[0], 2, chip_irq(&p->s.pic[1], false) >= 0);
}

void vmt_pic_set_irq(vmt_platform *p, unsigned irq, bool level)
{
    if (irq >= 16)
        return;
    if (irq >= 8) {
        chip_input(&p->s.pic[1], irq - 8, level);
        cascade(p);
    } else if (irq != 2) {
        chip_input(&p->s.pic[0], irq, level);
    }
}

static void intack(vmt_pic *c, int irq)
{
    uint8_t m = (uint8_t)(1u << irq);
    if (c->auto_eoi) {
        if (c->rotate_on_aeoi)
            c->priority_add = (uint8_t)((irq + 1) & 7);
    } else {
        c->isr |= m;
    }
    if (!(c->elcr & m))
        c->irr &= (uint8_t)~m;
}

int vmt_pic_peek(const vmt_platform *p)
{
    const vmt_pic *m = &p->s.pic[0], *s = &p->s.pic[1];
    int irq = chip_irq(m, true);
    if (irq < 0)
        return -1;
    if (irq == 2) {
        int irq2 = chip_irq(s, false);
        return s->vector_base + (irq2 >= 0 ? irq2 : 7);
    }
    return m->vector_base + irq;
}

int vmt_pic_ack(vmt_platform *p)
{
    vmt_pic *m = &p->s.pic[0], *s = &p->s.pic[1];
    int irq = chip_irq(m, true);
    int vector;
    if (irq < 0) {
        vector = m->vector_base + 7; /* spurious IRQ 7 */
    } else if (irq == 2) {
        int irq2 = chip_irq(s, false);
        if (irq2 >= 0)
            intack(s, irq2);
        vector = s->vector_base + (irq2 >= 0 ? irq2 : 7);
        intack(m, 2);
    } else {
        intack(m, irq);
        vector = m->vector_base + irq;
    }
    cascade(p);
    return vector;
}

static void init_reset(vmt_pic *c)
{
    uint8_t elcr = c->elcr, mask = c->elcr_mask;
    *c = (vmt_pic){0};
    c->elcr = elcr;
    c->elcr_mask = mask;
}

static uint8_t poll_read(vmt_platform *p, unsigned chip)
{
    vmt_pic *c = &p->s.pic[chip];
    int irq = chip_irq(c, chip == 0);
    if (irq < 0)
        return 0;
    intack(c, irq);
    cascade(p);
    return (uint8_t)(0x80 | irq);
}

static void write_cmd(vmt_pic *c, uint8_t v)
{
    if (v & 0x10) { /* ICW1 */
        init_reset(c);
        c->init_step = 1;
        c->icw4_needed = v & 1;
        c->single = (v >> 1) & 1;
        return;
    }
    if (v & 0x08) { /* OCW3 */
        if (v & 0x04)
            c->poll = true;
        if (v & 0x02)
            c->read_isr = v & 1;
        if (v & 0x40)
            c->special_mask = (v >> 5) & 1;
        return;
    }
    /* OCW2 */
    unsigned cmd = v >> 5;
    int irq;
    switch (cmd) {
    case 0: c->rotate_on_aeoi = false; break;
    case 4: c->rotate_on_aeoi = true; break;
    case 1: case 5: {
        int pr = priority_of(c, c->isr);
        if (pr != 8) {
            irq = (pr + c->priority_add) & 7;
            c->isr &= (uint8_t)~(1u << irq);
            if (cmd == 5)
                c->priority_add = (uint8_t)((irq + 1) & 7);
        }
        break;
    }
    case 3: c->isr &= (uint8_t)~(1u << (v & 7)); break;
    case 6: c->priority_add = (uint8_t)((v + 1) & 7); break;
    case 7:
        c->isr &= (uint8_t)~(1u << (v & 7));
        c->priority_add = (uint8_t)((v + 1) & 7);
        break;
    default: break;
    }
}

static void write_data(vmt_pic *c, uint8_t v)
{
    switch (c->init_step) {
    case 1:
        c->vector_base = v & 0xf8;
        c->init_step = c->single ? (c->icw4_needed ? 3 : 0) : 2;
        break;
    case 2:
        c->icw3 = v;
        c->init_step = c->icw4_needed ? 3 : 0;
        break;
    case 3:
        c->sfnm = (v >> 4) & 1;
        c->auto_eoi = (v >> 1) & 1;
        c->init_step = 0;
        break;
    default: c->imr = v; break;
    }
}

vmt_status vmt_pic_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val)
{
    if (port == 0x4d0 || port == 0x4d1) {
        vmt_pic *c = &p->s.pic[port - 0x4d0];
        if (write) {
            c->elcr = (uint8_t)*val & c->elcr_mask;
            /* Inputs now level-sensitive request while their line is high. */
            c->irr = (uint8_t)((c->irr & ~c->elcr) | (c->last_irr & c->elcr));
            cascade(p);
        } else
            *val = c->elcr;
        return VMT_OK;
    }
    unsigned chip = port >= 0xa0;
    vmt_pic *c = &p->s.pic[chip];
    bool data = port & 1;
    if (write) {
        if (data)
            write_data(c, (uint8_t)*val);
        else
            write_cmd(c, (uint8_t)*val);
        cascade(p);
        return VMT_OK;
    }
    if (c->poll) {
        c->poll = false;
        *val = poll_read(p, chip);
        return VMT_OK;
    }
    *val = data ? c->imr : c->read_isr ? c->isr : c->irr;
    return VMT_OK;
}

void vmt_pic_reset(vmt_platform *p)
{
    for (unsigned i = 0; i < 2; i++) {
        p->s.pic[i] = (vmt_pic){0};
        p->s.pic[i].elcr_mask = i == 0 ? 0xf8 : 0xde;
    }
}

void vmt_pic_save(const vmt_pic *d, plat_w *w)
{
    const uint8_t b[] = {d->irr, d->isr, d->imr, d->last_irr, d->elcr, d->elcr_mask, d->vector_base,
                         d->init_step, d->icw4_needed, d->single, d->auto_eoi, d->rotate_on_aeoi,
                         d->sfnm, d->read_isr, d->poll, d->special_mask, d->priority_add, d->icw3};
    plat_w_bytes(w, b, sizeof b);
}

vmt_status vmt_pic_load(vmt_pic *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->irr = plat_r_u8(r);
    d->isr = plat_r_u8(r);
    d->imr = plat_r_u8(r);
    d->last_irr = plat_r_u8(r);
    d->elcr = plat_r_u8(r);
    d->elcr_mask = plat_r_u8(r);
    d->vector_base = plat_r_u8(r);
    d->init_step = plat_r_u8(r);
    d->icw4_needed = plat_r_bool(r);
    d->single = plat_r_bool(r);
    d->auto_eoi = plat_r_bool(r);
    d->rotate_on_aeoi = plat_r_bool(r);
    d->sfnm = plat_r_bool(r);
    d->read_isr = plat_r_bool(r);
    d->poll = plat_r_bool(r);
    d->special_mask = plat_r_bool(r);
    d->priority_add = plat_r_u8(r);
    d->icw3 = plat_r_u8(r);
    return VMT_OK;
}

vmt_status vmt_pic_check(const vmt_pic *d, vmt_errbuf *e)
{
    if (d->init_step > 3 || (d->vector_base & 7) || d->priority_add > 7)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "pic: init step %u, vector base 0x%x, rotation %u out of range",
                              d->init_step, d->vector_base, d->priority_add);
    if ((d->elcr & ~d->elcr_mask) || (d->elcr_mask != 0xf8 && d->elcr_mask != 0xde))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "pic: ELCR 0x%x outside its mask 0x%x", d->elcr, d->elcr_mask);
    if ((d->irr & d->elcr) != (d->last_irr & d->elcr))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "pic: level-mode IRR 0x%x differs from the inputs 0x%x",
                              d->irr & d->elcr, d->last_irr & d->elcr);
    return VMT_OK;
}
