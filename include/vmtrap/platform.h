/*
 * vmtrap/platform.h — the PC around a CPU: interrupt controllers, timers,
 * the console UART and the odds and ends a kernel probes.
 *
 * Design: one platform object holds every device of a `pc`-like machine
 * (QEMU's `-machine pc` layout), each in its own file under src/platform/
 * with reset, register access, state save/load and an invariant checker.
 * A CPU-running driver talks to it only through the vmt_bus it hands out
 * (vmtrap/bus.h): port I/O, MMIO, the APIC MSRs, interrupt queries and
 * `advance(now_ns)`. The driver owns virtual time; the platform never reads
 * a host clock, so the same sequence of accesses at the same virtual times
 * gives the same interrupts and the same serial output (deterministic).
 *
 * Devices and where they answer:
 *   LAPIC    one per vCPU; xAPIC MMIO at IA32_APIC_BASE (0xfee00000), x2APIC
 *            MSRs 0x800-0x8ff when enabled, TSC deadline MSR 0x6e0.
 *   IOAPIC   0xfec00000, 24 pins; ISA IRQ 0 arrives on pin 2, IRQ n on pin n.
 *   PIC      8259 pair 0x20/0x21, 0xa0/0xa1, ELCR 0x4d0/0x4d1; its INTR
 *            reaches vCPU 0 through LINT0 (ExtINT) or directly when that
 *            LAPIC is disabled in IA32_APIC_BASE.
 *   PIT      8254 at 0x40-0x43, port 0x61 (channel 2 gate/out); IRQ 0.
 *   HPET     0xfed00000, 3 timers, 100 MHz counter; legacy replacement
 *            routes timer 0 to IRQ 0 and timer 1 to IRQ 8.
 *   RTC      CMOS 0x70/0x71 (+0x72/0x73 high bank), IRQ 8.
 *   UART     16550A at 0x3f8 (COM1), IRQ 4; transmitted bytes come out as
 *            lines through `serial`; vmt_platform_serial_input() feeds input.
 *   PMTIMER  ACPI PM timer at `pm_timer_port` (0xb008), 3.579545 MHz.
 *   I8042    0x60/0x64: self-test, command byte, a keyboard that answers
 *            ACK; no mouse. Command 0xfe (pulse reset) stops the run.
 *   MISC     port 0x80 (POST, ignored), 0xcf9 reset control (reset stops
 *            the run), PCI configuration mechanism #1 (0xcf8/0xcfc) with
 *            no device except the configured functions.
 * Everything else — a port or MMIO address no device claims — is reported
 * once per distinct (kind, address) through `unknown` and in the list
 * (vmt_platform_unknown_*); reads give all-ones, writes are ignored. Ports
 * in `passthrough_ports` and VMT_PORT_UCALL (0x5e0-0x5e7) are left to the
 * driver (VMT_E_NOTFOUND: they become VMT_EVENT_IO for testbed guests).
 *
 * Time: guest TSC = tsc_offset + now_ns * tsc_hz / 1e9 (as bus.h says);
 * the LAPIC timer counts at apic_bus_hz (1 GHz as in QEMU) divided by its
 * divide register; the RTC shows rtc_epoch_s at now_ns == start_ns.
 * A device access can move the next deadline earlier (e.g. a write of the
 * LAPIC initial count): drivers call advance() after an access or ask
 * vmt_platform_next_deadline().
 *
 * State: vmt_platform_save() writes one self-describing, versioned blob
 * (magic, format version, one named+versioned section per device with its
 * length, a checksum); vmt_platform_load() validates all of it (structure,
 * every field's range, each device's invariants) into a scratch copy and
 * only then replaces the state: a corrupt blob is refused with a message and
 * changes nothing (failure atomic). Host-side things are not state: the
 * partial serial line, queued serial input, unknown-access reports.
 *
 * Register views (vmtrap/platform_regs.h) read and set the LAPIC, IOAPIC,
 * UART and HPET by their guest-visible registers, for building a platform
 * from another machine's device state.
 *
 * Invariants: vmt_platform_check() runs every device's checker (IRR/ISR
 * consistency, FIFO counts, register ranges, timer deadlines vs. now) and
 * returns VMT_E_INTERNAL with the first violation in vmt_platform_error().
 *
 * Limits: at most VMT_PLATFORM_MAX_VCPUS LAPICs; INIT/SIPI IPIs are recorded
 * but start nothing (the driver runs one vCPU); the UART transmits
 * instantly (no baud-rate timing) and reports an RX timeout as soon as the
 * FIFO holds fewer bytes than its trigger level; MSI/FSB delivery of HPET
 * timers is not modelled; no SMI.
 *
 * Threading: a platform is used from one thread (the driver's) at a time.
 */
#ifndef VMTRAP_PLATFORM_H
#define VMTRAP_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/bus.h"
#include "vmtrap/machine.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_PLATFORM_MAX_VCPUS 64

/* Devices (vmt_platform_config.devices; 0 means VMT_PLATFORM_DEV_ALL). */
enum {
    VMT_PLATFORM_DEV_LAPIC   = 1u << 0,
    VMT_PLATFORM_DEV_IOAPIC  = 1u << 1,
    VMT_PLATFORM_DEV_PIC     = 1u << 2,
    VMT_PLATFORM_DEV_PIT     = 1u << 3,
    VMT_PLATFORM_DEV_HPET    = 1u << 4,
    VMT_PLATFORM_DEV_RTC     = 1u << 5,
    VMT_PLATFORM_DEV_UART    = 1u << 6,
    VMT_PLATFORM_DEV_PMTIMER = 1u << 7,
    VMT_PLATFORM_DEV_I8042   = 1u << 8,
    VMT_PLATFORM_DEV_MISC    = 1u << 9,   /* port 0x80, 0xcf9, PCI config */
    VMT_PLATFORM_DEV_ALL     = (1u << 10) - 1,
};

typedef enum vmt_platform_space {
    VMT_PLATFORM_PIO = 1,
    VMT_PLATFORM_MMIO = 2,
} vmt_platform_space;

/* One access no device claimed (reported once per (space, addr)). */
typedef struct vmt_platform_unknown {
    vmt_platform_space space;
    uint64_t addr;            /* port or guest-physical address */
    unsigned size;            /* of the first access */
    bool write;               /* the first access was a write */
    uint64_t value;           /* value written (0 for reads) */
    vmt_vcpu vcpu;
    uint64_t now_ns;          /* virtual time of the first access */
} vmt_platform_unknown;

typedef void (*vmt_platform_unknown_fn)(void *ctx, const vmt_platform_unknown *u);

/* An interrupt line changed level: irq 0..15 ISA numbering, 16..23 IOAPIC
 * pins (HPET routes). For a driver whose interrupt controllers are
 * elsewhere (KVM's in-kernel irqchip: create the platform without LAPIC,
 * IOAPIC, PIC and PIT and forward these to KVM_IRQ_LINE). */
typedef void (*vmt_platform_irq_fn)(void *ctx, unsigned irq, bool level);

/* A PCI function that answers configuration reads (bus 0 only). Its 256
 * config bytes are returned as given; writes are ignored. */
typedef struct vmt_platform_pci_function {
    uint8_t device;           /* 0..31 */
    uint8_t function;         /* 0..7 */
    uint8_t config[256];
} vmt_platform_pci_function;

typedef struct vmt_platform_config {
    uint32_t vcpus;           /* 0: 1; at most VMT_PLATFORM_MAX_VCPUS */
    uint32_t devices;         /* VMT_PLATFORM_DEV_* mask; 0: all */
    uint64_t tsc_hz;          /* 0: 1 GHz */
    uint64_t tsc_offset;      /* guest TSC at now_ns == 0 */
    uint64_t start_ns;        /* virtual time at creation */
    uint64_t apic_bus_hz;     /* LAPIC timer base clock; 0: 1 GHz (QEMU) */
    int64_t rtc_epoch_s;      /* Unix time the RTC shows at start_ns; 0: 2000-01-01 */
    uint16_t pm_timer_port;   /* 0: 0xb008 */
    bool pm_timer_32bit;      /* default 24-bit (PIIX4) */
    vmt_serial_fn serial;     /* lines the guest prints on COM1, may be NULL; it
                               * may answer with vmt_platform_serial_input() */
    void *serial_ctx;
    vmt_platform_unknown_fn unknown;  /* may be NULL (the list still fills) */
    void *unknown_ctx;
    vmt_platform_irq_fn irq_out;      /* every line change, may be NULL */
    void *irq_out_ctx;
    const uint16_t *passthrough_ports; /* left to the driver; copied */
    size_t passthrough_count;
    const vmt_platform_pci_function *pci; /* copied */
    size_t pci_count;
} vmt_platform_config;

typedef struct vmt_platform vmt_platform;

/* Create a platform in its reset state (SDM/datasheet power-on values).
 * VMT_E_INVAL with why for a bad config. */
vmt_status vmt_platform_create(const vmt_platform_config *cfg, vmt_platform **out,
                               char *why, size_t why_len);
void vmt_platform_destroy(vmt_platform *p);

/* Power-on reset of every device (as at creation); virtual time, host
 * queues and unknown-access reports are kept. */
void vmt_platform_reset(vmt_platform *p);

/* The bus for vmt_machine_config.bus; valid while the platform lives. */
vmt_bus vmt_platform_bus(vmt_platform *p);

/* Message for the last failure on this platform ("" if none). */
const char *vmt_platform_error(const vmt_platform *p);

/* Every device's invariants. VMT_OK or VMT_E_INTERNAL (why in error()). */
vmt_status vmt_platform_check(vmt_platform *p);

/* Earliest time a device changes by itself (UINT64_MAX: none). */
uint64_t vmt_platform_next_deadline(const vmt_platform *p);
/* Current virtual time as last given to advance(). */
uint64_t vmt_platform_now(const vmt_platform *p);

/* Queue bytes the guest reads from COM1. VMT_E_RANGE when the queue
 * (64 KiB) cannot take all of them (nothing is queued then). */
vmt_status vmt_platform_serial_input(vmt_platform *p, const void *bytes, size_t len);
/* Emit a partial serial line (no newline yet) through `serial`. */
void vmt_platform_serial_flush(vmt_platform *p);

/* Unknown accesses seen so far, in order of first appearance. */
size_t vmt_platform_unknown_count(const vmt_platform *p);
vmt_status vmt_platform_unknown_get(const vmt_platform *p, size_t i, vmt_platform_unknown *out);

/* Whole device state. save: *out is malloc'ed (caller frees). load:
 * VMT_E_FORMAT with why for anything malformed, VMT_E_CONFLICT when the
 * blob was saved with a different vCPU count or device set; the platform is
 * unchanged on failure. Virtual time is part of the state. A successful
 * load drops a partial serial line (it belonged to the timeline left
 * behind; vmt_platform_serial_flush first to keep it). */
vmt_status vmt_platform_save(vmt_platform *p, uint8_t **out, size_t *out_len);
vmt_status vmt_platform_load(vmt_platform *p, const uint8_t *blob, size_t len);

/* Drive an interrupt line from outside (tests, other device models):
 * irq 0..15 is an ISA line (PIC pin irq, IOAPIC pin irq except IRQ 0 on
 * pin 2), 16..23 an IOAPIC-only pin. VMT_E_INVAL for a bad line. */
vmt_status vmt_platform_set_irq(vmt_platform *p, unsigned irq, bool level);

#ifdef __cplusplus
}
#endif
#endif
