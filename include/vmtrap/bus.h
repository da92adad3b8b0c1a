/*
 * vmtrap/bus.h — what a CPU-running driver asks of the machine around the CPU.
 *
 * Design: a driver that runs a CPU (emu; kvm for what its in-kernel irqchip
 * does not model) owns instruction execution, memory translation and virtual
 * time. Everything else a PC has — interrupt controllers, timers, the UART,
 * MMIO registers, platform MSRs — lives behind this ops table, implemented by
 * the platform module (vmtrap/platform.h) or by a test. The driver calls in;
 * the bus never calls the driver. Data flows one way: the bus answers
 * accesses, says which interrupt is pending and when its next deadline is.
 *
 * Virtual time: the driver owns the clock. It reports the current guest time
 * (ns since the machine was created or restored, advancing with retired
 * instructions and jumping forward over HLT) with `advance` before every
 * device access and interrupt check, and after a run slice. `advance`
 * returns the next time at which a device will change state by itself
 * (UINT64_MAX: none): a driver stops its run slice at that time and a halted
 * vCPU skips to it. The TSC the guest reads is derived from the same clock
 * by the driver (tsc = tsc_offset + ns * tsc_hz / 1e9).
 *
 * Ownership rule for every access: a handler returns VMT_OK when the access
 * is the bus's (it performed it), VMT_E_NOTFOUND when the address/port/MSR
 * is not the bus's (the driver then does what it does without a bus: a port
 * becomes VMT_EVENT_IO, an MSR is the driver's own or #GP), VMT_E_INVAL when
 * the guest did something hardware answers with #GP (e.g. a reserved x2APIC
 * MSR bit), VMT_E_STOPPED when the guest asked for reset/power-off (the
 * driver stops the run with VMT_STOP_SHUTDOWN and the bus's `stop_reason`),
 * and any other status for an internal failure (the run stops with
 * VMT_STOP_DRIVER_ERROR and the bus's message).
 *
 * Any op may be NULL: the driver then behaves as if it returned
 * VMT_E_NOTFOUND (accesses) or "nothing pending" (interrupts).
 *
 * Threading: called from the driver's thread only.
 */
#ifndef VMTRAP_BUS_H
#define VMTRAP_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/addr.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_bus_ops {
    /* Port I/O of 1, 2 or 4 bytes. */
    vmt_status (*pio_read)(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t *val);
    vmt_status (*pio_write)(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t val);
    /* MMIO of 1, 2, 4 or 8 bytes at a guest-physical address that is not
     * RAM (a hole in the memory map or past its end). Wider accesses are
     * split by the driver into naturally aligned pieces. */
    vmt_status (*mmio_read)(void *ctx, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, uint64_t *val);
    vmt_status (*mmio_write)(void *ctx, vmt_vcpu vcpu, vmt_pa gpa, unsigned size, uint64_t val);
    /* MSRs the platform owns: IA32_APIC_BASE (0x1b), IA32_TSC_DEADLINE
     * (0x6e0), the x2APIC range (0x800-0x8ff). */
    vmt_status (*msr_read)(void *ctx, vmt_vcpu vcpu, uint32_t msr, uint64_t *val);
    vmt_status (*msr_write)(void *ctx, vmt_vcpu vcpu, uint32_t msr, uint64_t val);

    /* The vector the vCPU would take now if it can take a maskable
     * interrupt (IF=1, no interrupt shadow), or -1. The driver calls it at
     * instruction boundaries; it must not change state. */
    int (*irq_pending)(void *ctx, vmt_vcpu vcpu);
    /* The vCPU accepted `vector` (the interrupt controller moves it from
     * IRR to ISR, or the PIC acknowledges it). */
    void (*irq_ack)(void *ctx, vmt_vcpu vcpu, uint8_t vector);
    /* An NMI is pending for the vCPU (and is consumed by this call). */
    bool (*nmi_take)(void *ctx, vmt_vcpu vcpu);

    /* Guest time is now `now_ns`: devices catch up (timers fire, the UART
     * drains). Returns the next deadline in ns (UINT64_MAX: none). `now_ns`
     * never goes backwards except through a restore. */
    uint64_t (*advance)(void *ctx, uint64_t now_ns);

    /* Why the last VMT_E_STOPPED or failure happened, in words. */
    const char *(*stop_reason)(void *ctx);
} vmt_bus_ops;

typedef struct vmt_bus {
    const vmt_bus_ops *ops;   /* NULL: no devices at all */
    void *ctx;
} vmt_bus;

#ifdef __cplusplus
}
#endif
#endif
