/*
 * vmtrap/platform_regs.h — guest-visible register views of the platform's
 * devices, to read them and to set them from another machine's state.
 *
 * Design: the state blob (vmt_platform_save/load) is the platform's own
 * format. A snapshot taken elsewhere (QEMU's migration stream, a core file
 * plus what is known about the guest) describes devices by their registers
 * instead; these views are that description, field for field what the
 * guest reads: LAPIC, IOAPIC, 16550A UART and HPET — the devices a resumed
 * Linux relies on (clockevent, interrupt routing, console, clocksource
 * watchdog).
 *
 * Timers are given as the guest sees them at the platform's current time
 * (vmt_platform_now): the LAPIC current count (TMCCT) or TSC deadline, the
 * HPET main counter and comparators. Setting one arms the timer so that it
 * reads the same value now and counts on from there; a TSC deadline already
 * passed fires at once (its vector lands in IRR).
 *
 * Failure atomicity: a set validates every field (reserved bits, vectors
 * below 16 in IRR/ISR, x2APIC consistency, FIFO sizes) and then the whole
 * platform's invariants; on any failure nothing changes and the platform's
 * error says which field was wrong (VMT_E_INVAL).
 *
 * Threading: as vmtrap/platform.h.
 */
#ifndef VMTRAP_PLATFORM_REGS_H
#define VMTRAP_PLATFORM_REGS_H

#include <stdint.h>

#include "vmtrap/platform.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_platform_lapic_regs {
    uint64_t apic_base;       /* IA32_APIC_BASE */
    uint32_t id;              /* APIC ID as a number (xAPIC: 0..255) */
    uint32_t tpr, ldr, dfr, svr;
    uint32_t isr[8], tmr[8], irr[8]; /* 256-bit vectors, word 0 = vectors 0..31 */
    uint32_t esr;
    uint32_t icr_lo, icr_hi;
    uint32_t lvt_cmci, lvt_timer, lvt_thermal, lvt_perf, lvt_lint0, lvt_lint1, lvt_error;
    uint32_t tmict;           /* initial count */
    uint32_t tmcct;           /* current count now (<= tmict; 0: expired/stopped) */
    uint32_t tdcr;            /* divide configuration */
    uint64_t tsc_deadline;    /* IA32_TSC_DEADLINE (TSC-deadline mode only; 0: disarmed) */
} vmt_platform_lapic_regs;

typedef struct vmt_platform_ioapic_regs {
    uint32_t id;              /* 0..15 */
    uint32_t regsel;
    uint64_t redir[24];       /* Remote IRR (bit 14) kept; delivery status ignored */
} vmt_platform_ioapic_regs;

typedef struct vmt_platform_uart_regs {
    uint16_t divisor;
    uint8_t ier, lcr, mcr, scr;
    uint8_t fcr;              /* as last written: bit 0 FIFO on, bits 7:6 trigger */
    uint8_t lsr_errors;       /* LSR bits 1-4 and 7 pending */
    uint8_t msr_deltas;       /* MSR bits 0-3 pending */
    uint8_t thr_interrupt;    /* 1: a THRE interrupt is latched (IIR would say THRE) */
    uint8_t rx_count;         /* bytes in the receive FIFO (<= 16, <= 1 without FIFO) */
    uint8_t rx[16];           /* oldest first */
} vmt_platform_uart_regs;

typedef struct vmt_platform_hpet_regs {
    uint64_t config;          /* ENABLE_CNF, LEG_RT_CNF */
    uint64_t isr;             /* level-triggered status bits */
    uint64_t counter;         /* main counter now */
    struct {
        uint64_t config;      /* Tn_CONF (capability bits are the platform's) */
        uint64_t cmp, period, fsb;
    } timer[3];
} vmt_platform_hpet_regs;

vmt_status vmt_platform_lapic_get(vmt_platform *p, vmt_vcpu vcpu, vmt_platform_lapic_regs *out);
vmt_status vmt_platform_lapic_set(vmt_platform *p, vmt_vcpu vcpu, const vmt_platform_lapic_regs *in);
vmt_status vmt_platform_ioapic_get(vmt_platform *p, vmt_platform_ioapic_regs *out);
vmt_status vmt_platform_ioapic_set(vmt_platform *p, const vmt_platform_ioapic_regs *in);
vmt_status vmt_platform_uart_get(vmt_platform *p, vmt_platform_uart_regs *out);
vmt_status vmt_platform_uart_set(vmt_platform *p, const vmt_platform_uart_regs *in);
vmt_status vmt_platform_hpet_get(vmt_platform *p, vmt_platform_hpet_regs *out);
vmt_status vmt_platform_hpet_set(vmt_platform *p, const vmt_platform_hpet_regs *in);

#ifdef __cplusplus
}
#endif
#endif
