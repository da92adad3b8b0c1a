/*
 * platform/platform_internal.h — device state and the calls between devices.
 *
 * Layout: all guest-visible device state lives in one plain struct
 * (plat_state, no pointers), so a load can fill a scratch copy, validate
 * it, and replace the live state with one memcpy (failure atomic). Host-side
 * things (config, serial line buffer, input queue, unknown reports) live in
 * struct vmt_platform around it.
 *
 * Each device file provides: reset, register access, `deadline` (pure: the
 * next time it changes by itself), `advance` (fire everything due at
 * s.now_ns), save/load of its section, and `vmt_<dev>_check`. Device code
 * reaches the others only through the routing calls declared here
 * (interrupt lines, LAPIC delivery, EOI broadcast, PIC INTA).
 */
#ifndef VMT_PLATFORM_INTERNAL_H
#define VMT_PLATFORM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errbuf.h"
#include "vmtrap/platform.h"
#include "vmtrap/platform_regs.h"

__extension__ typedef unsigned __int128 plat_u128;

/* a * b / c without overflow, saturating at UINT64_MAX; c != 0. */
static inline uint64_t plat_muldiv(uint64_t a, uint64_t b, uint64_t c)
{
    plat_u128 r = (plat_u128)a * b / c;
    return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}
/* Same, rounding up. */
static inline uint64_t plat_muldiv_up(uint64_t a, uint64_t b, uint64_t c)
{
    plat_u128 r = ((plat_u128)a * b + c - 1) / c;
    return r > UINT64_MAX ? UINT64_MAX : (uint64_t)r;
}
static inline uint64_t plat_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t plat_sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- state blob writer/reader (platform_state.c) ---- */
typedef struct plat_w {
    uint8_t *buf;
    size_t len, cap;
    bool oom;
} plat_w;
void plat_w_u8(plat_w *w, uint8_t v);
void plat_w_u16(plat_w *w, uint16_t v);
void plat_w_u32(plat_w *w, uint32_t v);
void plat_w_u64(plat_w *w, uint64_t v);
void plat_w_bytes(plat_w *w, const void *p, size_t n);

typedef struct plat_r {
    const uint8_t *p;
    size_t left;
    bool short_read;          /* a read ran past the end of the section */
} plat_r;
uint8_t plat_r_u8(plat_r *r);
uint16_t plat_r_u16(plat_r *r);
uint32_t plat_r_u32(plat_r *r);
uint64_t plat_r_u64(plat_r *r);
bool plat_r_bool(plat_r *r);    /* fails the read (short_read) unless 0/1 */
void plat_r_bytes(plat_r *r, void *p, size_t n);

/* ---- interrupt line sources (a line is the OR of its sources) ---- */
enum {
    PLAT_SRC_EXT = 0,         /* vmt_platform_set_irq() */
    PLAT_SRC_PIT,
    PLAT_SRC_HPET0, PLAT_SRC_HPET1, PLAT_SRC_HPET2,
    PLAT_SRC_RTC,
    PLAT_SRC_UART,
    PLAT_SRC_KBD,
    PLAT_SRC_COUNT
};
#define PLAT_LINES 24

/* ---- LAPIC ---- */
enum { LVT_CMCI, LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR, LVT_COUNT };
typedef struct vmt_lapic {
    uint64_t apic_base;       /* IA32_APIC_BASE */
    uint32_t id;              /* x2APIC-style full id (xAPIC shows id << 24) */
    uint32_t tpr, ldr, dfr, svr;
    uint32_t isr[8], tmr[8], irr[8];
    uint32_t esr, esr_pending;
    uint32_t icr_lo, icr_hi;
    uint32_t lvt[LVT_COUNT];
    uint32_t tmict, tdcr;
    uint64_t timer_start_ns;  /* when the current count period began */
    uint64_t timer_next_ns;   /* next expiry, UINT64_MAX: not armed */
    uint64_t tsc_deadline;    /* IA32_TSC_DEADLINE (0: disarmed) */
    bool nmi_pending;
    bool init_pending;        /* INIT IPI received (recorded only) */
    uint8_t sipi_vector;
    bool sipi_pending;
} vmt_lapic;

/* ---- IOAPIC ---- */
#define IOAPIC_PINS 24
typedef struct vmt_ioapic {
    uint32_t id;              /* bits 27:24 of the ID register */
    uint32_t regsel;
    uint64_t redir[IOAPIC_PINS];
    uint32_t level;           /* pin input levels (asserted = 1) */
} vmt_ioapic;

/* ---- 8259 ---- */
typedef struct vmt_pic {
    uint8_t irr, isr, imr, last_irr;
    uint8_t elcr, elcr_mask;
    uint8_t vector_base;      /* ICW2 & 0xf8 */
    uint8_t init_step;        /* 0: ready, 1..3: expecting ICW2..ICW4 */
    bool icw4_needed, single, auto_eoi, rotate_on_aeoi, sfnm;
    bool read_isr, poll, special_mask;
    uint8_t priority_add;     /* lowest-priority rotation */
    uint8_t icw3;
} vmt_pic;

/* ---- 8254 ---- */
typedef struct vmt_pit_channel {
    uint32_t count;           /* reload value, 1..0x10000 */
    uint64_t load_ns;         /* when counting began */
    uint64_t gate_low_ns;     /* when the gate fell (counting paused) */
    uint16_t latched_count;
    bool count_latched;
    uint8_t status;
    bool status_latched;
    uint8_t rw_mode;          /* 1 lsb, 2 msb, 3 lsb then msb */
    uint8_t read_state, write_state; /* 0 first byte next, 1 second byte next */
    uint8_t write_latch;      /* first byte of a 16-bit write */
    uint8_t mode;             /* 0..5 */
    bool bcd, gate, null_count, counting;
} vmt_pit_channel;
typedef struct vmt_pit {
    vmt_pit_channel ch[3];
    bool speaker_data;        /* port 0x61 bit 1 */
    uint64_t irq_next_ns;     /* next IRQ 0 pulse, UINT64_MAX: none */
} vmt_pit;

/* ---- HPET ---- */
#define HPET_TIMERS 3
typedef struct vmt_hpet_timer {
    uint64_t config;          /* Tn_CONF_CAP writable bits */
    uint64_t cmp;             /* comparator */
    uint64_t period;          /* periodic increment */
    uint64_t fsb;
} vmt_hpet_timer;
typedef struct vmt_hpet {
    uint64_t config;          /* GEN_CONF */
    uint64_t isr;             /* GINTR_STA */
    uint64_t counter_base;    /* main counter at base_ns (or frozen value) */
    uint64_t base_ns;
    uint64_t last_ns;         /* comparators processed up to this time */
    vmt_hpet_timer t[HPET_TIMERS];
} vmt_hpet;

/* ---- RTC/CMOS ---- */
typedef struct vmt_rtc {
    uint8_t index;            /* last index written to 0x70 (bit 7 NMI mask) */
    uint8_t index_hi;         /* 0x72 */
    uint8_t nmi_masked;
    uint8_t cmos[256];        /* 0x00..0x7f bank 0, 0x80..0xff high bank */
    int64_t base_unix;        /* Unix seconds shown at base_ns */
    uint64_t base_ns;
    uint64_t flags_ns;        /* PF/UF/AF evaluated up to here */
} vmt_rtc;

/* ---- 16550A ---- */
#define UART_FIFO 16
typedef struct vmt_uart {
    uint16_t divisor;
    uint8_t ier, lcr, mcr, lsr, msr, scr, fcr;
    bool fifo_enabled;
    bool thr_ipending;        /* THRE interrupt latched */
    uint8_t rx[UART_FIFO];
    uint8_t rx_head, rx_count;
    bool irq;                 /* output line level */
} vmt_uart;

/* ---- i8042 ---- */
typedef struct vmt_kbd {
    uint8_t ctr;              /* controller command byte */
    uint8_t out[8];
    uint8_t out_head, out_count;
    uint8_t pending_cmd;      /* controller command awaiting a data byte */
    uint8_t status_flags;     /* bit2 system flag, bit3 last write was a command */
} vmt_kbd;

/* ---- port 0x80, 0xcf9, PCI ---- */
typedef struct vmt_misc {
    uint8_t post;             /* last POST code */
    uint8_t rcr;              /* 0xcf9 */
    uint32_t pci_addr;        /* 0xcf8 */
} vmt_misc;

typedef struct plat_state {
    uint64_t now_ns;
    uint32_t vcpus;
    uint32_t devices;
    uint8_t line_src[PLAT_LINES]; /* bit per PLAT_SRC_* asserting the line */
    vmt_lapic lapic[VMT_PLATFORM_MAX_VCPUS];
    vmt_ioapic ioapic;
    vmt_pic pic[2];
    vmt_pit pit;
    vmt_hpet hpet;
    vmt_rtc rtc;
    vmt_uart uart;
    vmt_kbd kbd;
    vmt_misc misc;
} plat_state;

#define PLAT_UNKNOWN_MAX 256
#define PLAT_LINE_MAX 1024
#define PLAT_INPUT_MAX 65536

struct vmt_platform {
    vmt_platform_config cfg;  /* arrays below are the copies */
    uint16_t *passthrough;
    vmt_platform_pci_function *pci;
    vmt_errbuf err;
    char stop_reason[VMT_ERRBUF_LEN];
    plat_state s;
    /* host side */
    char line[PLAT_LINE_MAX + 1];
    size_t line_len;
    uint8_t *input;           /* ring of PLAT_INPUT_MAX */
    size_t input_head, input_count;
    vmt_platform_unknown unknown[PLAT_UNKNOWN_MAX];
    size_t unknown_count;
    bool unknown_overflow;
};

static inline bool plat_has(const vmt_platform *p, uint32_t dev) { return (p->s.devices & dev) != 0; }

/* ---- routing (platform.c) ---- */
/* Source `src` drives ISA/GSI line `irq` (0..23) to `level`. */
void vmt_plat_irq(vmt_platform *p, unsigned src, unsigned irq, bool level);
/* Pulse: low -> high -> low for edge-triggered consumers. */
void vmt_plat_irq_pulse(vmt_platform *p, unsigned src, unsigned irq);
/* The guest asked for reset/power-off: remember why. */
void vmt_plat_stop(vmt_platform *p, const char *why);
/* Serial: one transmitted byte. */
void vmt_plat_serial_tx(vmt_platform *p, uint8_t byte);
/* Serial: take one queued input byte (-1: none). */
int vmt_plat_serial_rx(vmt_platform *p);
bool vmt_plat_serial_rx_ready(const vmt_platform *p);
uint64_t vmt_plat_tsc(const vmt_platform *p, uint64_t ns);
uint64_t vmt_plat_tsc_to_ns(const vmt_platform *p, uint64_t tsc);

/* ---- LAPIC (lapic.c) ---- */
void vmt_lapic_reset(vmt_platform *p, unsigned idx);
vmt_status vmt_lapic_mmio(vmt_platform *p, unsigned idx, uint64_t off, unsigned size, bool write, uint64_t *val);
vmt_status vmt_lapic_msr(vmt_platform *p, unsigned idx, uint32_t msr, bool write, uint64_t *val);
bool vmt_lapic_mmio_hit(const vmt_platform *p, unsigned idx, uint64_t gpa);
int vmt_lapic_pending(const vmt_platform *p, unsigned idx);
void vmt_lapic_ack(vmt_platform *p, unsigned idx, uint8_t vector);
bool vmt_lapic_extint_ok(const vmt_platform *p, unsigned idx);
/* Deliver an interrupt message (IOAPIC/ICR). mode: 0 fixed, 1 lowest
 * priority, 2 SMI, 4 NMI, 5 INIT, 6 SIPI, 7 ExtINT. dest_all: broadcast
 * regardless of dest; self_idx: sender for shorthands (-1: none). */
void vmt_lapic_deliver(vmt_platform *p, uint32_t dest, bool logical, unsigned mode,
                       uint8_t vector, bool level);
uint64_t vmt_lapic_deadline(const vmt_platform *p, const vmt_lapic *l);
void vmt_lapic_advance(vmt_platform *p, unsigned idx);
void vmt_lapic_save(const vmt_lapic *l, plat_w *w);
vmt_status vmt_lapic_load(vmt_lapic *l, plat_r *r, vmt_errbuf *e);
vmt_status vmt_lapic_check(const vmt_lapic *l, unsigned idx, uint64_t now_ns, vmt_errbuf *e);

void vmt_lapic_get_regs(const vmt_platform *p, unsigned idx, vmt_platform_lapic_regs *o);
vmt_status vmt_lapic_set_regs(vmt_platform *p, unsigned idx, const vmt_platform_lapic_regs *in);

/* ---- IOAPIC (ioapic.c) ---- */
void vmt_ioapic_reset(vmt_platform *p);
vmt_status vmt_ioapic_mmio(vmt_platform *p, uint64_t off, unsigned size, bool write, uint64_t *val);
void vmt_ioapic_set_pin(vmt_platform *p, unsigned pin, bool level);
void vmt_ioapic_eoi(vmt_platform *p, uint8_t vector);
void vmt_ioapic_save(const vmt_ioapic *d, plat_w *w);
vmt_status vmt_ioapic_load(vmt_ioapic *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_ioapic_check(const vmt_ioapic *d, vmt_errbuf *e);
void vmt_ioapic_get_regs(const vmt_platform *p, vmt_platform_ioapic_regs *o);
vmt_status vmt_ioapic_set_regs(vmt_platform *p, const vmt_platform_ioapic_regs *in);

/* ---- PIC (pic.c) ---- */
void vmt_pic_reset(vmt_platform *p);
vmt_status vmt_pic_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val);
void vmt_pic_set_irq(vmt_platform *p, unsigned irq, bool level);
int vmt_pic_peek(const vmt_platform *p);    /* vector INTA would give, -1: INTR low */
int vmt_pic_ack(vmt_platform *p);           /* INTA cycle */
void vmt_pic_save(const vmt_pic *d, plat_w *w);
vmt_status vmt_pic_load(vmt_pic *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_pic_check(const vmt_pic *d, vmt_errbuf *e);

/* ---- PIT (pit.c) ---- */
void vmt_pit_reset(vmt_platform *p);
vmt_status vmt_pit_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val);
uint64_t vmt_pit_deadline(const vmt_platform *p);
void vmt_pit_advance(vmt_platform *p);
void vmt_pit_save(const vmt_pit *d, plat_w *w);
vmt_status vmt_pit_load(vmt_pit *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_pit_check(const vmt_pit *d, uint64_t now_ns, vmt_errbuf *e);

/* ---- HPET (hpet.c) ---- */
void vmt_hpet_reset(vmt_platform *p);
vmt_status vmt_hpet_mmio(vmt_platform *p, uint64_t off, unsigned size, bool write, uint64_t *val);
uint64_t vmt_hpet_deadline(const vmt_platform *p);
void vmt_hpet_advance(vmt_platform *p);
bool vmt_hpet_legacy(const vmt_platform *p);
void vmt_hpet_save(const vmt_hpet *d, plat_w *w);
vmt_status vmt_hpet_load(vmt_hpet *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_hpet_check(const vmt_hpet *d, uint64_t now_ns, vmt_errbuf *e);
void vmt_hpet_get_regs(const vmt_platform *p, vmt_platform_hpet_regs *o);
vmt_status vmt_hpet_set_regs(vmt_platform *p, const vmt_platform_hpet_regs *in);

/* ---- RTC (rtc.c) ---- */
void vmt_rtc_reset(vmt_platform *p);
vmt_status vmt_rtc_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val);
uint64_t vmt_rtc_deadline(const vmt_platform *p);
void vmt_rtc_advance(vmt_platform *p);
void vmt_rtc_save(const vmt_rtc *d, plat_w *w);
vmt_status vmt_rtc_load(vmt_rtc *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_rtc_check(const vmt_rtc *d, uint64_t now_ns, vmt_errbuf *e);

/* ---- UART (uart.c) ---- */
void vmt_uart_reset(vmt_platform *p);
vmt_status vmt_uart_pio(vmt_platform *p, uint16_t off, bool write, uint32_t *val);
void vmt_uart_input_ready(vmt_platform *p);
void vmt_uart_save(const vmt_uart *d, plat_w *w);
vmt_status vmt_uart_load(vmt_uart *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_uart_check(const vmt_uart *d, vmt_errbuf *e);
void vmt_uart_get_regs(const vmt_platform *p, vmt_platform_uart_regs *o);
vmt_status vmt_uart_set_regs(vmt_platform *p, const vmt_platform_uart_regs *in);

/* ---- i8042, PM timer, port 0x80, 0xcf9, PCI (legacy.c) ---- */
void vmt_kbd_reset(vmt_platform *p);
vmt_status vmt_kbd_pio(vmt_platform *p, uint16_t port, bool write, uint32_t *val);
void vmt_kbd_save(const vmt_kbd *d, plat_w *w);
vmt_status vmt_kbd_load(vmt_kbd *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_kbd_check(const vmt_kbd *d, vmt_errbuf *e);
uint32_t vmt_pmtimer_read(const vmt_platform *p);
void vmt_misc_reset(vmt_platform *p);
vmt_status vmt_misc_pio(vmt_platform *p, uint16_t port, unsigned size, bool write, uint32_t *val);
void vmt_misc_save(const vmt_misc *d, plat_w *w);
vmt_status vmt_misc_load(vmt_misc *d, plat_r *r, vmt_errbuf *e);
vmt_status vmt_misc_check(const vmt_misc *d, vmt_errbuf *e);

#endif
