/*
 * guests/platform/platform.c — a guest that drives the PC platform the way
 * Linux 6.1 does on QEMU's pc machine and asserts the results from inside:
 *
 *  1. LAPIC (xAPIC at 0xfee00000): version, ID, software enable.
 *  2. LAPIC timer one-shot on vector 0xec: HLT wakes on it, not before the
 *     programmed count has elapsed in TSC time; the current count reads 0.
 *  3. TSC-deadline mode: IA32_TSC_DEADLINE fires at the deadline; the MSR
 *     reads 0 afterwards.
 *  4. IOAPIC pin 4 -> vector 37 and a UART writer that sends only from its
 *     THRE interrupt handler (as the 8250 driver does): the whole message
 *     comes out (the host checks the lines).
 *  5. HPET: enabled with legacy routing, the main counter advances at
 *     100 MHz against the TSC (within 1%); timer 0 fires on IRQ 0 (pin 2).
 *  6. RTC: BCD time and date read with the UIP protocol; reported for the
 *     host to compare with the machine's epoch.
 *  7. PIT channel 2 the way Linux's pit_calibrate_tsc uses it (gate on via
 *     port 0x61, mode 0, poll OUT2): the TSC agrees with 1.193182 MHz
 *     within 1%; then channel 0 in mode 2 raises IRQ 0 on IOAPIC pin 2.
 *  8. UART receive: the guest prompts, the host answers with a line; the
 *     RX data / timeout interrupt delivers it and the guest echoes it.
 * Parameter: platform_tsc_mhz (the TSC rate the host configured).
 */
#include <stdint.h>

#include "guest/guest.h"
#include "guest/paging.h"
#include "guest/ucall.h"
#include "guest/x86.h"

#define LAPIC 0xfee00000ULL
#define IOAPIC 0xfec00000ULL
#define HPET 0xfed00000ULL
#define COM1 0x3f8
#define TIMER_VECTOR 0xec
#define UART_VECTOR 37
#define HPET_VECTOR 48

__attribute__((section(".data"))) volatile uint32_t platform_tsc_mhz = 2000;

void irq_stub_236(void);
void irq_stub_37(void);
void irq_stub_48(void);
void irq_dispatch(uint64_t vector);

static volatile uint64_t timer_irqs, uart_irqs, hpet_irqs, timer_irq_tsc;

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static inline uint32_t mmio_r32(uint64_t a) { return *(volatile uint32_t *)(uintptr_t)a; }
static inline void mmio_w32(uint64_t a, uint32_t v) { *(volatile uint32_t *)(uintptr_t)a = v; }
static inline uint64_t mmio_r64(uint64_t a) { return *(volatile uint64_t *)(uintptr_t)a; }
static inline void mmio_w64(uint64_t a, uint64_t v) { *(volatile uint64_t *)(uintptr_t)a = v; }

static void set_gate(unsigned vector, void (*handler)(void))
{
    struct desc_ptr p;
    __asm__ volatile("sidt %0" : "=m"(p));
    uint64_t h = (uint64_t)(uintptr_t)handler;
    uint8_t *g = (uint8_t *)(uintptr_t)p.base + 16 * vector;
    g[0] = (uint8_t)h;
    g[1] = (uint8_t)(h >> 8);
    g[2] = 0x08;
    g[3] = 0;
    g[4] = 0;
    g[5] = 0x8e;
    g[6] = (uint8_t)(h >> 16);
    g[7] = (uint8_t)(h >> 24);
    for (int i = 0; i < 4; i++)
        g[8 + i] = (uint8_t)(h >> (32 + 8 * i));
    for (int i = 12; i < 16; i++)
        g[i] = 0;
    if (p.limit < 16 * vector + 15) {
        p.limit = (uint16_t)(16 * vector + 15);
        __asm__ volatile("lidt %0" : : "m"(p));
    }
}

static void eoi(void) { mmio_w32(LAPIC + 0xb0, 0); }

/* ---- UART writer: transmits only from the THRE interrupt ---- */

static const char message[] =
    "platform guest: console line 1 of the interrupt-driven writer\n"
    "platform guest: the 8250 driver sends 16 bytes per THRE interrupt\n"
    "platform guest: and stops the transmitter when its buffer is empty\n"
    "platform guest: 0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    "platform guest: last line\n";
static volatile uint64_t tx_pos;
static volatile int tx_done;

static char rx_line[64];
static volatile uint64_t rx_len;
static volatile int rx_done;

static void uart_interrupt(void)
{
    for (;;) {
        uint8_t iir = inb(COM1 + 2);
        if (iir & 1)
            break;
        if ((iir & 0x0e) == 0x04 || (iir & 0x0e) == 0x0c) { /* RX data or character timeout */
            while (inb(COM1 + 5) & 1) {
                char ch = (char)inb(COM1);
                if (ch == '\n')
                    rx_done = 1;
                else if (rx_len < sizeof rx_line - 1)
                    rx_line[rx_len++] = ch;
            }
            continue;
        }
        GUEST_ASSERT_EQ(iir & 0x0e, 0x02); /* THRE */
        for (int n = 0; n < 16 && tx_pos < sizeof message - 1; n++)
            outb(COM1, (uint8_t)message[tx_pos++]);
        if (tx_pos == sizeof message - 1) {
            outb(COM1 + 1, 0x05); /* stop_tx: ETBEI off */
            tx_done = 1;
        }
    }
}

void irq_dispatch(uint64_t vector)
{
    switch (vector) {
    case TIMER_VECTOR:
        timer_irqs++;
        timer_irq_tsc = rdtsc();
        break;
    case UART_VECTOR:
        uart_irqs++;
        uart_interrupt();
        break;
    case HPET_VECTOR:
        hpet_irqs++;
        break;
    default:
        GUEST_ASSERT(0);
    }
    eoi();
}

static void wait_for(volatile uint64_t *counter, uint64_t want)
{
    for (int spins = 0; *counter < want; spins++) {
        GUEST_ASSERT(spins < 1000);
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    }
}

static void ioapic_route(unsigned pin, uint8_t vector)
{
    mmio_w32(IOAPIC, 0x10 + 2 * pin + 1);
    mmio_w32(IOAPIC + 0x10, 0);
    mmio_w32(IOAPIC, 0x10 + 2 * pin);
    mmio_w32(IOAPIC + 0x10, vector);
}

static void test_lapic(void)
{
    GUEST_ASSERT_EQ(rdmsr(0x1b) & ~0xfffULL, LAPIC);
    GUEST_ASSERT_EQ(mmio_r32(LAPIC + 0x30), 0x00050014);
    GUEST_ASSERT_EQ(mmio_r32(LAPIC + 0x20), 0);
    mmio_w32(LAPIC + 0xf0, 0x1ff);
    mmio_w32(LAPIC + 0x80, 0);
    GUEST_ASSERT_EQ(mmio_r32(LAPIC + 0xf0), 0x1ff);
    ucall_report("lapic.enabled", 1);
}

static void test_timer_oneshot(void)
{
    uint64_t mhz = platform_tsc_mhz;
    mmio_w32(LAPIC + 0x3e0, 0xb);          /* divide by 1: 1 GHz APIC bus */
    mmio_w32(LAPIC + 0x320, TIMER_VECTOR); /* one-shot */
    uint64_t t0 = rdtsc();
    mmio_w32(LAPIC + 0x380, 2000000);      /* 2 ms */
    wait_for(&timer_irqs, 1);
    uint64_t waited_ns = (timer_irq_tsc - t0) * 1000 / mhz;
    GUEST_ASSERT(waited_ns >= 2000000);
    GUEST_ASSERT(waited_ns < 2100000);
    GUEST_ASSERT_EQ(mmio_r32(LAPIC + 0x390), 0);
    ucall_report("timer.oneshot_ns", waited_ns);
}

static void test_timer_tsc_deadline(void)
{
    uint64_t mhz = platform_tsc_mhz;
    mmio_w32(LAPIC + 0x320, 0x40000 | TIMER_VECTOR);
    uint64_t deadline = rdtsc() + 500 * mhz; /* 500 us */
    wrmsr(0x6e0, deadline);
    GUEST_ASSERT_EQ(rdmsr(0x6e0), deadline);
    wait_for(&timer_irqs, 2);
    GUEST_ASSERT(timer_irq_tsc >= deadline);
    GUEST_ASSERT(timer_irq_tsc - deadline < 10 * mhz);
    GUEST_ASSERT_EQ(rdmsr(0x6e0), 0);
    mmio_w32(LAPIC + 0x320, 0x10000 | TIMER_VECTOR);
    ucall_report("timer.tsc_deadline", 1);
}

static void test_uart_thre(void)
{
    ioapic_route(4, UART_VECTOR);
    outb(COM1 + 3, 0x80);
    outb(COM1 + 0, 1);   /* 115200 baud */
    outb(COM1 + 1, 0);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xc7);
    outb(COM1 + 4, 0x0b);
    GUEST_ASSERT_EQ(inb(COM1 + 2) & 0xc0, 0xc0); /* 16550A with FIFO */
    outb(COM1 + 1, 0x05);
    outb(COM1 + 1, 0x07); /* start_tx: the THRE interrupt does the rest */
    for (int spins = 0; !tx_done; spins++) {
        GUEST_ASSERT(spins < 10000);
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    }
    /* THR empties at once on this UART, so one interrupt may carry many
     * 16-byte bursts (the handler loops while IIR says THRE, as Linux's). */
    GUEST_ASSERT(uart_irqs >= 1);
    GUEST_ASSERT_EQ(tx_pos, sizeof message - 1);
    GUEST_ASSERT_EQ(inb(COM1 + 2) & 0x0f, 0x01); /* transmitter stopped: nothing pending */
    ucall_report("uart.interrupts", uart_irqs);
}

static void test_hpet(void)
{
    uint64_t cap = mmio_r64(HPET);
    GUEST_ASSERT_EQ(cap >> 32, 10000000); /* 10 ns period */
    GUEST_ASSERT(cap & (1 << 15));        /* legacy replacement capable */
    ioapic_route(2, HPET_VECTOR);
    mmio_w64(HPET + 0x10, 3);             /* enable, legacy routing (as Linux) */
    uint64_t c0 = mmio_r64(HPET + 0xf0), t0 = rdtsc();
    mmio_w64(HPET + 0x100, 0x4);          /* timer 0: interrupts on, one-shot */
    mmio_w64(HPET + 0x108, c0 + 100000);  /* 1 ms */
    wait_for(&hpet_irqs, 1);
    uint64_t c1 = mmio_r64(HPET + 0xf0), t1 = rdtsc();
    GUEST_ASSERT(c1 - c0 >= 100000);
    uint64_t hpet_ns = (c1 - c0) * 10, tsc_ns = (t1 - t0) * 1000 / platform_tsc_mhz;
    GUEST_ASSERT(hpet_ns * 100 >= tsc_ns * 99 && hpet_ns * 100 <= tsc_ns * 101);
    ucall_report("hpet.ns", hpet_ns);
    ucall_report("hpet.tsc_ns", tsc_ns);
}

static uint8_t cmos(uint8_t idx)
{
    outb(0x70, idx);
    return inb(0x71);
}

static int bcd_ok(uint8_t v) { return (v & 0x0f) <= 9 && (v >> 4) <= 9; }

static void test_rtc(void)
{
    uint8_t s, m, h, d, mo, y, c;
    do {
        while (cmos(0x0a) & 0x80) /* update in progress */
            ;
        s = cmos(0);
        m = cmos(2);
        h = cmos(4);
        d = cmos(7);
        mo = cmos(8);
        y = cmos(9);
        c = cmos(0x32);
    } while (s != cmos(0));
    GUEST_ASSERT(bcd_ok(s) && bcd_ok(m) && bcd_ok(h) && bcd_ok(d) && bcd_ok(mo) && bcd_ok(y) && bcd_ok(c));
    GUEST_ASSERT_EQ(cmos(0x0b) & 0x04, 0); /* BCD */
    GUEST_ASSERT_EQ(cmos(0x0d), 0x80);     /* valid RAM and time */
    ucall_report("rtc.hms", (uint64_t)h << 16 | (uint64_t)m << 8 | s);
    ucall_report("rtc.ymd", (uint64_t)c << 24 | (uint64_t)y << 16 | (uint64_t)mo << 8 | d);
}

static void test_pit(void)
{
    uint64_t mhz = platform_tsc_mhz;
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01)); /* gate on, speaker off */
    outb(0x43, 0xb0);                                  /* channel 2, lsb/msb, mode 0 */
    outb(0x42, 1193 & 0xff);
    uint64_t t0 = rdtsc();
    outb(0x42, 1193 >> 8);                             /* ~1 ms */
    for (uint64_t spins = 0; !(inb(0x61) & 0x20); spins++)
        GUEST_ASSERT(spins < 100000000);
    uint64_t ns = (rdtsc() - t0) * 1000 / mhz;
    GUEST_ASSERT(ns * 100 >= 999832ull * 99 && ns * 100 <= 999832ull * 101);
    ucall_report("pit.calibration_ns", ns);
    /* Channel 0 periodic on IRQ 0 (HPET legacy replacement off). */
    mmio_w64(HPET + 0x10, 1);
    uint64_t before = hpet_irqs;
    outb(0x43, 0x34);
    outb(0x40, 11932 & 0xff);
    outb(0x40, 11932 >> 8);                            /* 100 Hz */
    wait_for(&hpet_irqs, before + 3);                  /* same vector 48 on pin 2 */
    outb(0x43, 0x30);                                  /* mode 0, no count: stops */
    ucall_report("pit.irq0", hpet_irqs - before);
}

static void test_uart_receive(void)
{
    outb(COM1 + 1, 0x01); /* RX data interrupt only */
    serial_printf("rx ready\n"); /* the host answers this prompt */
    for (int spins = 0; !rx_done; spins++) {
        GUEST_ASSERT(spins < 1000);
        __asm__ volatile("sti; hlt; cli" : : : "memory");
    }
    outb(COM1 + 1, 0x00);
    rx_line[rx_len] = 0;
    serial_printf("got: %s\n", rx_line);
    ucall_report("uart.rx_len", rx_len);
}

int guest_main(uint64_t ram_size)
{
    (void)ram_size;
    uint64_t root = read_cr3() & PTE_ADDR;
    pt_map_4k(root, LAPIC, LAPIC, PTE_LEAF);
    pt_map_4k(root, IOAPIC, IOAPIC, PTE_LEAF);
    pt_map_4k(root, HPET, HPET, PTE_LEAF);
    reload_cr3();
    set_gate(TIMER_VECTOR, irq_stub_236);
    set_gate(UART_VECTOR, irq_stub_37);
    set_gate(HPET_VECTOR, irq_stub_48);
    test_lapic();
    test_timer_oneshot();
    test_timer_tsc_deadline();
    test_uart_thre();
    test_hpet();
    test_rtc();
    test_pit();
    test_uart_receive();
    return 0;
}
