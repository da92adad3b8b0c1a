/*
 * platform/uart.c — a 16550A UART as COM1 (port 0x3f8, ISA IRQ 4).
 *
 * Registers (offset, DLAB = LCR bit 7): 0 RBR/THR (DLL), 1 IER (DLM),
 * 2 IIR (read) / FCR (write), 3 LCR, 4 MCR, 5 LSR, 6 MSR, 7 SCR.
 *
 * Transmit: a byte written to THR goes out at once (no baud-rate timing),
 * to the platform's serial line assembler (or, in loopback, into the
 * receive FIFO). THR is therefore always empty (LSR.THRE and TEMT set).
 * The THRE interrupt follows the 16550A: it is latched when the transmitter
 * empties after a THR write and when IER.ETBEI goes 0 -> 1 with THR empty;
 * it is cleared by a THR write and by reading IIR when THRE is the reported
 * source. A THR write drops the interrupt line and raises it again when the
 * byte has gone, so an edge-triggered IOAPIC pin sees a new edge per burst:
 * this is what Linux's 8250 driver, which transmits only from its THRE
 * interrupt handler, needs to drain its buffer.
 *
 * Receive: bytes queued by the host enter the FIFO (16 bytes, or 1 with
 * the FIFO off) as space frees up, so nothing is lost and no overrun
 * happens. RX data interrupt when the FIFO reaches its trigger level; below
 * it, the character-timeout interrupt is reported at once (limit: no
 * 4-character-time wait). Interrupt priority: line status, RX data /
 * timeout, THRE, modem status. The IRQ line is the "interrupt pending"
 * state (not gated by MCR.OUT2, as in QEMU).
 *
 * Modem: outside loopback CTS, DSR and DCD are asserted (0xb0); in loopback
 * CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2, with delta bits.
 *
 * Invariants: FIFO count within the FIFO size, register reserved bits
 * clear, the IRQ line equals "some interrupt pending".
 */
#include <string.h>

#include "platform/platform_internal.h"

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define LSR_DR 0x01
#define LSR_ERRORS 0x9e /* OE PE FE BI, FIFO error */
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10
#define IIR_NONE 0x01

static unsigned fifo_cap(const vmt_uart *u) { return u->fifo_enabled ? UART_FIFO : 1; }

static unsigned trigger(const vmt_uart *u)
{
    static const unsigned levels[4] = {1, 4, 8, 14};
    return u->fifo_enabled ? levels[u->fcr >> 6] : 1;
}

static uint8_t lsr(const vmt_uart *u)
{
    return (uint8_t)((u->lsr & LSR_ERRORS) | LSR_THRE | LSR_TEMT | (u->rx_count ? LSR_DR : 0));
}

static uint8_t msr_status(const vmt_uart *u)
{
    if (!(u->mcr & MCR_LOOP))
        return 0xb0;
    uint8_t m = u->mcr;
    return (uint8_t)(((m & 2) ? 0x10 : 0) | ((m & 1) ? 0x20 : 0) | ((m & 4) ? 0x40 : 0) | ((m & 8) ? 0x80 : 0));
}

/* Interrupt identification (bits 3:0 of IIR). */
static uint8_t pending_id(const vmt_uart *u)
{
    if ((u->ier & IER_RLSI) && (u->lsr & 0x1e))
        return 0x06;
    if ((u->ier & IER_RDI) && u->rx_count)
        return u->rx_count >= trigger(u) ? 0x04 : 0x0c;
    if ((u->ier & IER_THRI) && u->thr_ipending)
        return 0x02;
    if ((u->ier & IER_MSI) && (u->msr & 0x0f))
        return 0x00;
    return IIR_NONE;
}

static void update_irq(vmt_platform *p)
{
    vmt_uart *u = &p->s.uart;
    u->irq = pending_id(u) != IIR_NONE;
    vmt_plat_irq(p, PLAT_SRC_UART, 4, u->irq);
}

static void rx_push(vmt_uart *u, uint8_t b)
{
    if (u->rx_count == fifo_cap(u)) {
        u->lsr |= 0x02; /* overrun: the byte is lost */
        return;
    }
    u->rx[(u->rx_head + u->rx_count) % UART_FIFO] = b;
    u->rx_count++;
}

static void fill_rx(vmt_platform *p)
{
    vmt_uart *u = &p->s.uart;
    if (u->mcr & MCR_LOOP)
        return;
    while (u->rx_count < fifo_cap(u) && vmt_plat_serial_rx_ready(p))
        rx_push(u, (uint8_t)vmt_plat_serial_rx(p));
}

void vmt_uart_input_ready(vmt_platform *p)
{
    fill_rx(p);
    update_irq(p);
}

static void set_mcr(vmt_platform *p, uint8_t v)
{
    vmt_uart *u = &p->s.uart;
    uint8_t old = msr_status(u);
    u->mcr = v & 0x1f;
    uint8_t now = msr_status(u);
    uint8_t changed = old ^ now;
    u->msr |= (uint8_t)(((changed & 0x10) ? 1 : 0) | ((changed & 0x20) ? 2 : 0) |
                        ((old & 0x40) && !(now & 0x40) ? 4 : 0) | ((changed & 0x80) ? 8 : 0));
    fill_rx(p);
}

static void write_thr(vmt_platform *p, uint8_t b)
{
    vmt_uart *u = &p->s.uart;
    u->thr_ipending = false;
    update_irq(p); /* the line drops while the byte is in THR ... */
    if (u->mcr & MCR_LOOP)
        rx_push(u, b);
    else
        vmt_plat_serial_tx(p, b);
    u->thr_ipending = true; /* ... and THR is empty again */
}

static void write_fcr(vmt_platform *p, uint8_t v)
{
    vmt_uart *u = &p->s.uart;
    bool en = v & 1;
    if (en != u->fifo_enabled || (v & 2)) {
        u->rx_count = 0;
        u->rx_head = 0;
    }
    u->fifo_enabled = en;
    u->fcr = en ? (uint8_t)(v & 0xc9) : 0;
    fill_rx(p);
}

vmt_status vmt_uart_pio(vmt_platform *p, uint16_t off, bool write, uint32_t *val)
{
    vmt_uart *u = &p->s.uart;
    bool dlab = u->lcr & 0x80;
    if (write) {
        uint8_t v = (uint8_t)*val;
        switch (off) {
        case 0:
            if (dlab)
                u->divisor = (uint16_t)((u->divisor & 0xff00) | v);
            else
                write_thr(p, v);
            break;
        case 1:
            if (dlab) {
                u->divisor = (uint16_t)((u->divisor & 0x00ff) | (v << 8));
            } else {
                uint8_t old = u->ier;
                u->ier = v & 0x0f;
                if ((u->ier & IER_THRI) && !(old & IER_THRI))
                    u->thr_ipending = true; /* THR is empty */
                else if (!(u->ier & IER_THRI))
                    u->thr_ipending = false;
            }
            break;
        case 2: write_fcr(p, v); break;
        case 3: u->lcr = v; break;
        case 4: set_mcr(p, v); break;
        case 7: u->scr = v; break;
        default: break; /* LSR, MSR: read-only */
        }
        update_irq(p);
        return VMT_OK;
    }
    uint8_t r = 0xff;
    switch (off) {
    case 0:
        if (dlab) {
            r = (uint8_t)u->divisor;
        } else if (u->rx_count) {
            r = u->rx[u->rx_head];
            u->rx_head = (uint8_t)((u->rx_head + 1) % UART_FIFO);
            u->rx_count--;
            fill_rx(p);
        } else {
            r = 0;
        }
        break;
    case 1: r = dlab ? (uint8_t)(u->divisor >> 8) : u->ier; break;
    case 2: {
        uint8_t id = pending_id(u);
        if (id == 0x02)
            u->thr_ipending = false; /* reading IIR clears a THRE interrupt */
        r = (uint8_t)(id | (u->fifo_enabled ? 0xc0 : 0));
        break;
    }
    case 3: r = u->lcr; break;
    case 4: r = u->mcr; break;
    case 5:
        r = lsr(u);
        u->lsr &= (uint8_t)~LSR_ERRORS;
        break;
    case 6:
        r = (uint8_t)(msr_status(u) | (u->msr & 0x0f));
        u->msr &= 0xf0;
        break;
    case 7: r = u->scr; break;
    default: break;
    }
    *val = r;
    update_irq(p);
    return VMT_OK;
}

void vmt_uart_reset(vmt_platform *p)
{
    p->s.uart = (vmt_uart){0};
    update_irq(p);
}

void vmt_uart_save(const vmt_uart *d, plat_w *w)
{
    plat_w_u16(w, d->divisor);
    plat_w_u8(w, d->ier);
    plat_w_u8(w, d->lcr);
    plat_w_u8(w, d->mcr);
    plat_w_u8(w, d->lsr);
    plat_w_u8(w, d->msr);
    plat_w_u8(w, d->scr);
    plat_w_u8(w, d->fcr);
    plat_w_u8(w, d->fifo_enabled);
    plat_w_u8(w, d->thr_ipending);
    plat_w_bytes(w, d->rx, UART_FIFO);
    plat_w_u8(w, d->rx_head);
    plat_w_u8(w, d->rx_count);
    plat_w_u8(w, d->irq);
}

vmt_status vmt_uart_load(vmt_uart *d, plat_r *r, vmt_errbuf *e)
{
    (void)e;
    d->divisor = plat_r_u16(r);
    d->ier = plat_r_u8(r);
    d->lcr = plat_r_u8(r);
    d->mcr = plat_r_u8(r);
    d->lsr = plat_r_u8(r);
    d->msr = plat_r_u8(r);
    d->scr = plat_r_u8(r);
    d->fcr = plat_r_u8(r);
    d->fifo_enabled = plat_r_bool(r);
    d->thr_ipending = plat_r_bool(r);
    plat_r_bytes(r, d->rx, UART_FIFO);
    d->rx_head = plat_r_u8(r);
    d->rx_count = plat_r_u8(r);
    d->irq = plat_r_bool(r);
    return VMT_OK;
}

vmt_status vmt_uart_check(const vmt_uart *u, vmt_errbuf *e)
{
    if (u->rx_head >= UART_FIFO || u->rx_count > fifo_cap(u))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "uart: FIFO head %u count %u (size %u)", u->rx_head, u->rx_count,
                              fifo_cap(u));
    if ((u->ier & ~0x0f) || (u->mcr & ~0x1f) || (u->lsr & ~LSR_ERRORS) || (u->msr & ~0x0f) || (u->fcr & ~0xc9))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "uart: reserved bits in IER 0x%x MCR 0x%x LSR 0x%x MSR 0x%x FCR 0x%x",
                              u->ier, u->mcr, u->lsr, u->msr, u->fcr);
    if (u->fifo_enabled != (u->fcr & 1))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "uart: FIFO enable disagrees with FCR 0x%x", u->fcr);
    if (u->irq != (pending_id(u) != IIR_NONE))
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "uart: IRQ line %d but interrupt id 0x%x", u->irq, pending_id(u));
    return VMT_OK;
}

/* ---------- register views (vmtrap/platform_regs.h) ---------- */

void vmt_uart_get_regs(const vmt_platform *p, vmt_platform_uart_regs *o)
{
    const vmt_uart *u = &p->s.uart;
    memset(o, 0, sizeof *o);
    o->divisor = u->divisor;
    o->ier = u->ier;
    o->lcr = u->lcr;
    o->mcr = u->mcr;
    o->scr = u->scr;
    o->fcr = u->fcr;
    o->lsr_errors = u->lsr;
    o->msr_deltas = u->msr;
    o->thr_interrupt = u->thr_ipending;
    o->rx_count = u->rx_count;
    for (unsigned i = 0; i < u->rx_count; i++)
        o->rx[i] = u->rx[(u->rx_head + i) % UART_FIFO];
}

vmt_status vmt_uart_set_regs(vmt_platform *p, const vmt_platform_uart_regs *in)
{
    uint8_t fcr = in->fcr & 0xc9; /* bits 1-2 are one-shot FIFO resets */
    unsigned cap = (fcr & 1) ? UART_FIFO : 1;
    if ((in->ier & ~0x0f) || (in->mcr & ~0x1f) || (in->lsr_errors & ~LSR_ERRORS) || (in->msr_deltas & ~0x0f) ||
        in->thr_interrupt > 1 || (in->fcr & 0x30))
        return vmt_errbuf_set(&p->err, VMT_E_INVAL,
                              "uart: reserved bits in IER 0x%x MCR 0x%x LSR 0x%x MSR 0x%x FCR 0x%x or THRE flag %u",
                              in->ier, in->mcr, in->lsr_errors, in->msr_deltas, in->fcr, in->thr_interrupt);
    if (in->rx_count > cap)
        return vmt_errbuf_set(&p->err, VMT_E_INVAL, "uart: %u bytes in a %u-byte receive FIFO", in->rx_count, cap);
    vmt_uart *u = &p->s.uart;
    *u = (vmt_uart){0};
    u->divisor = in->divisor;
    u->ier = in->ier;
    u->lcr = in->lcr;
    u->mcr = in->mcr;
    u->scr = in->scr;
    u->fifo_enabled = fcr & 1;
    u->fcr = u->fifo_enabled ? fcr : 0;
    u->lsr = in->lsr_errors;
    u->msr = in->msr_deltas;
    u->thr_ipending = in->thr_interrupt;
    u->rx_count = in->rx_count;
    for (unsigned i = 0; i < in->rx_count; i++)
        u->rx[i] = in->rx[i];
    fill_rx(p);
    update_irq(p);
    return VMT_OK;
}
