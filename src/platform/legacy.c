/*
 * platform/legacy.c — the small PC devices a kernel probes: the i8042
 * keyboard controller (0x60/0x64), the ACPI PM timer, the POST port 0x80,
 * the reset control register 0xcf9 and PCI configuration mechanism #1
 * (0xcf8/0xcfc).
 *
 * i8042: enough for a kernel to find a controller with a keyboard and no
 * mouse and move on: self test (0xaa -> 0x55), interface test (0xab ->
 * 0), command byte read/write (0x20/0x60), enable/disable keyboard and aux,
 * output port read/write (0xd0/0xd1), write-to-output-buffer (0xd2/0xd3);
 * the aux port fails its test (0xa9 -> 0x01) and swallows 0xd4 bytes, so
 * the mouse probe times out. Bytes to the keyboard are answered with ACK
 * (0xfa), reset with ACK + 0xaa, identify with ACK 0xab 0x83, echo with
 * 0xee. IRQ 1 follows "output buffer full and command byte bit 0". Reset
 * paths: a pulse command with bit 0 clear (0xfe) or an output port write
 * with bit 0 clear stop the run (VMT_E_STOPPED, stop reason says which).
 *
 * PM timer: 3.579545 MHz from virtual time, 24 bits (PIIX4) or 32.
 * Port 0x80: writes kept as the last POST code, reads give 0xff.
 * 0xcf9: bit 2 (reset CPU) stops the run; bits 1 and 3 are kept.
 * PCI: bus 0 functions from the config list answer with their 256 bytes;
 * everything else reads all-ones ("no device"); config writes are ignored.
 *
 * Invariants: i8042 queue within bounds and a known pending command; the
 * reset control and PCI address registers hold only defined bits.
 */
#include "platform/platform_internal.h"

#define KBD_QUEUE 8

/* ---------- i8042 ---------- */

static void kbd_irq(vmt_platform *p)
{
    const vmt_kbd *k = &p->s.kbd;
    vmt_plat_irq(p, PLAT_SRC_KBD, 1, k->out_count && (k->ctr & 1));
}

static void kbd_push(vmt_platform *p, uint8_t b)
{
    vmt_kbd *k = &p->s.kbd;
    if (k->out_count == KBD_QUEUE)
        return;
    k->out[(k->out_head + k->out_count) % KBD_QUEUE] = b;
    k->out_count++;
}

static vmt_status kbd_reset_request(vmt_platform *p, const char *how)
{
    vmt_plat_stop(p, how);
    return VMT_E_STOPPED;
}

static vmt_status kbd_command(vmt_platform *p, uint8_t cmd)
{
    vmt_kbd *k = &p->s.kbd;
    switch (cmd) {
    case 0x20: kbd_push(p, k->ctr); break;
    case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: k->pending_cmd = cmd; break;
    case 0xa7: k->ctr |= 0x20; break;
    case 0xa8: k->ctr &= (uint8_t)~0x20; break;
    case 0xa9: kbd_push(p, 0x01); break;
    case 0xaa: kbd_push(p, 0x55); break;
    case 0xab: kbd_push(p, 0x00); break;
    case 0xad: k->ctr |= 0x10; break;
    case 0xae: k->ctr &= (uint8_t)~0x10; break;
    case 0xd0: kbd_push(p, 0x01 | (k->out_count ? 0x10 : 0)); break;
    default:
        if (cmd >= 0xf0 && !(cmd & 1))
            return kbd_reset_request(p, "i8042: the guest pulsed the CPU reset line (command 0xfe)");
        break;
    }
    return VMT_OK;
}

static vmt_status kbd_data(vmt_platform *p, uint8_t v)
{
    vmt_kbd *k = &p->s.kbd;
    uint8_t cmd = k->pending_cmd;
    k->pending_cmd = 0;
    switch (cmd) {
    case 0x60: k->ctr = v; return VMT_OK;
    case 0xd1:
        if (!(v & 1))
            return kbd_reset_request(p, "i8042: the guest cleared the reset bit of the output port");
        return VMT_OK;
    case 0xd2: case 0xd3: kbd_push(p, v); return VMT_OK;
    case 0xd4: return VMT_OK; /* no mouse */
    default: break;
    }
    kbd_push(p, v == 0xee ? 0xee : 0xfa);
    if (v == 0xff)
        kbd_push(p, 0xaa);
    else if (v == 0xf2) {
        kbd_push(p, 0xab);
        kbd_push(p, 0x83);
    }
    return VMT_OK;
}

vmt_status vmt_kbd_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val)
{
    vmt_kbd *k = &p->s.kbd;
    vmt_status st = VMT_OK;
    if (port == 0x64) {
        if (write) {
            k->status_flags |= 0x08;
            st = kbd_command(p, (uint8_t)*val);
        } else {
            *val = (k->out_count ? 0x01u : 0) | (k->ctr & 0x04) | (k->status_flags & 0x08) | 0x10u;
        }
    } else if (write) {
        k->status_flags &= (uint8_t)~0x08;
        st = kbd_data(p, (uint8_t)*val);
    } else if (k->out_count) {
        *val = k->out[k->out_head];
        k->out_head = (uint8_t)((k->out_head + 1) % KBD_QUEUE);
        k->out_count--;
    } else {
        *val = 0x00;
    }
    kbd_irq(p);
    return st;
}

void vmt_kbd_reset(vmt_platform *p)
{
    p->s.kbd = (vmt_kbd){0};
    p->s.kbd.ctr = 0x45; /* keyboard interrupt, system flag, translation: as firmware leaves it */
    kbd_irq(p);
}

void vmt_kbd_save(const vmt_kbd *d, plat_w *w)
{
    plat_w_u8(w, d->ctr);
    plat_w_bytes(w, d->out, sizeof d->out);
    plat_w_u8(w, d->out_head);
    plat_w_u8(w, d->out_count);
    plat_w_u8(w, d->pending_cmd);
    plat_w_u8(w, d->status_flags);
}

vmt_status vmt_kbd_load(vmt_kbd *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->ctr = plat_r_u8(r);
    plat_r_bytes(r, d->out, sizeof d->out);
    d->out_head = plat_r_u8(r);
    d->out_count = plat_r_u8(r);
    d->pending_cmd = plat_r_u8(r);
    d->status_flags = plat_r_u8(r);
    return VMT_OK;
}

vmt_status vmt_kbd_check(const vmt_kbd *d, vmt_errbuf *e)
{
    if (d->out_head >= KBD_QUEUE || d->out_count > KBD_QUEUE || (d->status_flags & ~0x08))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "i8042: queue head %u count %u flags 0x%x out of range", d->out_head,
                              d->out_count, d->status_flags);
    uint8_t c = d->pending_cmd;
    if (c && c != 0x60 && c != 0xd1 && c != 0xd2 && c != 0xd3 && c != 0xd4)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "i8042: pending command 0x%x takes no data byte", c);
    return VMT_OK;
}

/* ---------- PM timer ---------- */

uint32_t vmt_pmtimer_read(const vmt_platform *p)
{
    uint64_t t = plat_muldiv(p->s.now_ns, 3579545, 1000000000ull);
    return p->cfg.pm_timer_32bit ? (uint32_t)t : (uint32_t)(t & 0xffffff);
}

/* ---------- port 0x80, 0xcf9, PCI ---------- */

static const vmt_platform_pci_function *pci_find(const vmt_platform *p, uint32_t addr)
{
    if (!(addr & 0x80000000u) || ((addr >> 16) & 0xff) != 0)
        return NULL;
    unsigned dev = (addr >> 11) & 0x1f, fn = (addr >> 8) & 7;
    for (size_t i = 0; i < p->cfg.pci_count; i++)
        if (p->pci[i].device == dev && p->pci[i].function == fn)
            return &p->pci[i];
    return NULL;
}

vmt_status vmt_misc_pio(vmt_platform *p, uint16_t port, unsigned size, bool write, uint32_t *val)
{
    vmt_misc *m = &p->s.misc;
    if (port == 0x80) {
        if (write)
            m->post = (uint8_t)*val;
        else
            *val = 0xff;
        return VMT_OK;
    }
    if (port == 0xcf9) {
        if (!write) {
            *val = m->rcr;
            return VMT_OK;
        }
        m->rcr = (uint8_t)*val & 0x0e;
        if (*val & 0x04) {
            vmt_plat_stop(p, "reset control register 0xcf9: the guest asked for a CPU reset");
            return VMT_E_STOPPED;
        }
        return VMT_OK;
    }
    if (port == 0xcf8) {
        if (write)
            m->pci_addr = *val & 0x80fffffcu;
        else
            *val = m->pci_addr;
        return VMT_OK;
    }
    /* 0xcfc..0xcff: configuration data */
    if (write)
        return VMT_OK;
    const vmt_platform_pci_function *f = pci_find(p, m->pci_addr);
    uint32_t v = 0;
    unsigned reg = (m->pci_addr & 0xfc) + (port - 0xcfcu);
    for (unsigned i = 0; i < size; i++)
        v |= (uint32_t)(f && reg + i < 256 ? f->config[reg + i] : 0xff) << (8 * i);
    *val = v;
    return VMT_OK;
}

void vmt_misc_reset(vmt_platform *p)
{
    p->s.misc = (vmt_misc){0};
}

void vmt_misc_save(const vmt_misc *d, plat_w *w)
{
    plat_w_u8(w, d->post);
    plat_w_u8(w, d->rcr);
    plat_w_u32(w, d->pci_addr);
}

vmt_status vmt_misc_load(vmt_misc *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->post = plat_r_u8(r);
    d->rcr = plat_r_u8(r);
    d->pci_addr = plat_r_u32(r);
    return VMT_OK;
}

vmt_status vmt_misc_check(const vmt_misc *d, vmt_errbuf *e)
{
    if ((d->rcr & ~0x0e) || (d->pci_addr & ~0x80fffffcu))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "misc: reset control 0x%x or PCI address 0x%x has undefined bits",
                              d->rcr, d->pci_addr);
    return VMT_OK;
}
