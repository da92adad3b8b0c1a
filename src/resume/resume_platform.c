/*
 * resume/resume_platform.c — the device state a Linux kernel on QEMU's `pc`
 * machine programmed, rebuilt when a snapshot (a bare ELF core) has none.
 *
 * Design: every value is written through the platform's own bus, with the
 * same register accesses the kernel made at boot (8259 ICW sequence, APIC
 * MMIO, IOAPIC IOREGSEL/IOWIN, UART registers, HPET configuration), so the
 * devices' invariants hold by construction and nothing reaches into their
 * internals. Each step is one note saying what was set and why.
 *
 * What is rebuilt (Linux 6.1 x86-64 defaults, facts measured on the
 * project's snapshot):
 *  - 8259 pair initialised like init_8259A (vector bases 0x30/0x38,
 *    cascade on IRQ2) and fully masked: with an IOAPIC Linux routes every
 *    ISA line there and the LAPIC's LINT0 is masked.
 *  - LAPIC: software enabled (SVR 0x1ff), flat logical ID 1, LINT0 ExtINT
 *    masked, LINT1 NMI, error vector 0xfe; timer one-shot on vector 0xec
 *    divided by 16 and RE-ARMED to expire at once: a kernel paused in its
 *    idle loop waits for exactly that interrupt (QEMU's dump shows it
 *    pending in IRR), and its handler programs the next event itself.
 *  - IOAPIC pin 4 (COM1, ISA IRQ 4) -> vector 37, edge, active high,
 *    physical destination APIC 0. The other pins stay masked: their devices
 *    (i8042, RTC, ACPI SCI, PIT) raise nothing in this machine.
 *  - UART COM1: 8N1, FIFO on (trigger 8), MCR DTR|RTS|OUT2, IER 0x05
 *    (receive data + line status: the tty layer turns THRE on when it has
 *    output, and drains on THRE interrupts).
 *  - HPET: enabled with legacy routing (the clocksource watchdog reads it),
 *    comparators off; its counter continues from the value the kernel's
 *    watchdog saw last when the OS layer found it (resume_linux.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "resume/resume_internal.h"

#define LAPIC 0xfee00000ull
#define IOAPIC 0xfec00000ull
#define HPET 0xfed00000ull
#define COM1 0x3f8

typedef struct wr {
    vmt_bus bus;
    vmt_status st;
    char what[120];
} wr;

static void mmio(wr *w, uint64_t gpa, unsigned size, uint64_t v)
{
    if (w->st)
        return;
    w->st = w->bus.ops->mmio_write(w->bus.ctx, 0, gpa, size, v);
    if (w->st)
        snprintf(w->what, sizeof w->what, "MMIO write 0x%" PRIx64 " to 0x%" PRIx64, v, gpa);
}

static void pio(wr *w, uint16_t port, uint8_t v)
{
    if (w->st)
        return;
    w->st = w->bus.ops->pio_write(w->bus.ctx, 0, port, 1, v);
    if (w->st)
        snprintf(w->what, sizeof w->what, "port write 0x%x to 0x%x", v, port);
}

vmt_status resume_platform_reconstruct(vmt_resume *r, const resume_linux *lx, char *why, size_t why_len)
{
    wr w = { .bus = vmt_platform_bus(r->plat) };

    /* 8259 pair: ICW1 edge + ICW4, ICW2 vector base, ICW3 cascade, ICW4 8086. */
    static const uint8_t master[] = { 0x11, 0x30, 0x04, 0x01 }, slave[] = { 0x11, 0x38, 0x02, 0x01 };
    pio(&w, 0x20, master[0]);
    for (int i = 1; i < 4; i++)
        pio(&w, 0x21, master[i]);
    pio(&w, 0xa0, slave[0]);
    for (int i = 1; i < 4; i++)
        pio(&w, 0xa1, slave[i]);
    pio(&w, 0x21, 0xff);
    pio(&w, 0xa1, 0xff);
    resume_note(r, "platform pic: initialised like Linux's init_8259A (vectors 0x30/0x38, cascade IRQ2) and fully "
                   "masked (IMR 0xff/0xff): with an IOAPIC Linux routes ISA interrupts there");

    /* LAPIC. */
    mmio(&w, LAPIC + 0xe0, 4, 0xffffffffu);     /* DFR flat */
    mmio(&w, LAPIC + 0xd0, 4, 1u << 24);        /* LDR: logical ID 1 (CPU 0) */
    mmio(&w, LAPIC + 0x80, 4, 0);               /* TPR */
    mmio(&w, LAPIC + 0xf0, 4, 0x1ff);           /* SVR: enabled, spurious vector 0xff */
    mmio(&w, LAPIC + 0x350, 4, 0x10700);        /* LINT0: ExtINT, masked */
    mmio(&w, LAPIC + 0x360, 4, 0x400);          /* LINT1: NMI */
    mmio(&w, LAPIC + 0x370, 4, 0xfe);           /* LVT error: vector 0xfe */
    mmio(&w, LAPIC + 0x3e0, 4, 0x3);            /* TDCR: divide by 16 */
    mmio(&w, LAPIC + 0x320, 4, 0xec);           /* LVT timer: one-shot, vector 0xec */
    mmio(&w, LAPIC + 0x380, 4, 1);              /* TMICT: expires at once */
    resume_note(r, "platform lapic: enabled (SVR 0x1ff), flat logical ID 1, LINT0 ExtINT masked, LINT1 NMI, "
                   "error vector 0xfe; timer one-shot vector 0xec /16 re-armed to expire at once (the kernel "
                   "paused in its idle loop waits for that interrupt and programs the next event itself)");

    /* IOAPIC pin 4 -> vector 37 (0x25), edge, high, fixed, physical APIC 0. */
    mmio(&w, IOAPIC + 0x00, 4, 0x10 + 2 * 4 + 1);
    mmio(&w, IOAPIC + 0x10, 4, 0);
    mmio(&w, IOAPIC + 0x00, 4, 0x10 + 2 * 4);
    mmio(&w, IOAPIC + 0x10, 4, 0x25);
    resume_note(r, "platform ioapic: pin 4 (COM1) -> vector 37, edge, active high, APIC 0 as Linux programmed it; "
                   "other pins masked (i8042, RTC, SCI, PIT raise nothing here)");

    /* COM1: 8N1 at 115200 (divisor 1), FIFO, modem control, interrupts. */
    pio(&w, COM1 + 3, 0x83);
    pio(&w, COM1 + 0, 0x01);
    pio(&w, COM1 + 1, 0x00);
    pio(&w, COM1 + 3, 0x03);
    pio(&w, COM1 + 2, 0x87);
    pio(&w, COM1 + 4, 0x0b);
    pio(&w, COM1 + 1, 0x05);
    resume_note(r, "platform uart COM1: 8N1, FIFO on (trigger 8), MCR DTR|RTS|OUT2, IER 0x05 (rx data + line "
                   "status) as the 8250 driver left it with no output pending");

    /* HPET: counter first (writable while halted), then enable + legacy. */
    uint64_t cnt = lx && lx->have_hpet ? lx->hpet_counter : 0;
    mmio(&w, HPET + 0x10, 4, 0);
    mmio(&w, HPET + 0xf0, 4, (uint32_t)cnt);
    mmio(&w, HPET + 0xf4, 4, (uint32_t)(cnt >> 32));
    mmio(&w, HPET + 0x10, 4, 0x3);
    if (lx && lx->have_hpet)
        resume_note(r, "platform hpet: enabled, legacy routing, comparators off; counter 0x%" PRIx64 ": %s", cnt,
                    lx->how_hpet);
    else
        resume_note(r, "platform hpet: enabled, legacy routing, comparators off; counter 0 (the kernel's last "
                       "watchdog read is unknown: %s; its first check may call the TSC unstable)",
                    lx && lx->how_hpet[0] ? lx->how_hpet : "no OS layer");

    if (w.st) {
        vmt_why(why, why_len, "platform reconstruction: %s failed: %s", w.what, vmt_platform_error(r->plat));
        return w.st;
    }
    /* Let the devices see the current time (the timer deadline). */
    if (w.bus.ops->advance)
        (void)w.bus.ops->advance(w.bus.ctx, vmt_platform_now(r->plat));
    if (vmt_platform_check(r->plat)) {
        vmt_why(why, why_len, "platform reconstruction: %s", vmt_platform_error(r->plat));
        return VMT_E_INTERNAL;
    }
    return VMT_OK;
}
