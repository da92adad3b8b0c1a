/*
 * vmtrap/kvm.h — the KVM driver: an embedded VMM on /dev/kvm.
 *
 * Design: the driver creates the VM itself (stock KVM cannot introspect a VM
 * another process owns), places the image (vmtrap/image.h) into memfd-backed
 * guest RAM and starts vCPU 0 directly in the image's mode (64-bit long mode
 * for the boot protocol) through KVM_SET_SREGS. One thread drives the vCPU:
 * wait_event() runs it until something the caller must see happens.
 *
 * What it declares (see vmt_driver_caps()), honestly:
 *  - breakpoints: INT3 at CPL0 is a VMT_EVENT_BREAKPOINT (KVM_EXIT_DEBUG #BP
 *    on upstream KVM; the emulation-failure exit whose bytes start with 0xCC
 *    on this machine's kvm_pvm). INT3 at CPL3 is reported on upstream KVM
 *    only (kvm_pvm delivers it to the guest IDT). REINJECT hands the #BP to
 *    the guest's own IDT.
 *  - single-step, hardware execute breakpoints (4, invisible to the guest),
 *    port I/O events (serial 0x3f8 goes to cfg->serial as lines).
 *  - views are VM-wide (no VIEW_PER_VCPU): a remap is an mmap(MAP_FIXED) of
 *    a memfd page over the gfn's host address; write traps are read-only
 *    memslots (write events carry the exact value and size); read traps are
 *    frames left without a memslot (every data access exits as MMIO and the
 *    response decides what a read returns). trap_access is R|W: execute is
 *    never trapped, so rights must always include X. Code in a frame
 *    without read right still runs: the driver performs it in the monitor
 *    with the reusable engine (vmtrap/emulate.h, when built with Unicorn),
 *    up to 64 instructions per exit while the code stays in such frames,
 *    with the view's data rights (an access it traps leaves to the native
 *    path and raises its event); what the engine refuses (I/O, privileged
 *    instructions, TF, armed hardware breakpoints) maps the frame read-only
 *    for one single-step (~100 us per instruction on kvm_pvm); such a step
 *    reads that frame through the temporary slot, so code that reads its own
 *    read-protected frame sees the frame as mapped, without an event. An
 *    INT3 there is reported as a breakpoint event without a step. Do
 *    not deny reads on frames KVM itself must read (page tables, GDT, IDT).
 *    A memory event's regs.rip may already point past the accessing
 *    instruction (KVM hands the access over while emulating it); a store is
 *    held back until the response: CONTINUE/EMULATE/FAST_STEP/STEP make it
 *    land, DENY drops it (a denied read returns zeros). gva is not known.
 *  - switching to view 0 in a response (the step-in-view-0 dance) keeps the
 *    memslots of the view left: its extra traps are served without events,
 *    and after 64 runs in view 0 view 0's own layout is built.
 *    vmt_drv_view_switch() always builds the exact layout (30-65 us per
 *    memslot change on kvm_pvm).
 *  - I/O and write events: the instruction completes when the guest resumes
 *    (KVM semantics). SET_REGS in the response is applied after completing
 *    it, and only the fields the handler changed from the event's registers
 *    are taken (so an unchanged rip does not re-execute the instruction,
 *    whether or not KVM had moved it yet). vmt_drv_set_regs() between such an
 *    event and its response is refused (VMT_E_BUSY): use SET_REGS.
 *  - EMULATE on a breakpoint, hardware-breakpoint or single-step event
 *    performs the instruction in the monitor with the engine, through
 *    emulate_view's mapping and the current view's data rights, then goes on
 *    through code the vCPU cannot fetch (above): one exit (a hidden
 *    breakpoint hit, with the bpm's SHADOW controller). Without the engine,
 *    or for what it refuses (an access the view traps, privileged or I/O
 *    instructions, CPL3, TF, armed hardware breakpoints, SET_REGS in the same
 *    response), it is a single-step through emulate_view's mapping (the
 *    same as FAST_STEP: two exits).
 *  - A/D bits are not set in write-protected tables on kvm_pvm (no
 *    VMT_CAP_PT_AD_BITS): monitors should pre-set them.
 *  - a time limit (guest time) ends a run with VMT_EVENT_STOPPED reason
 *    VMT_STOP_TIME_LIMIT; a triple fault, hlt, or an emulation failure that
 *    is not a breakpoint stop the guest with a message (rip and bytes).
 * One vCPU (cfg->vcpus must be 0 or 1).
 *
 * Signals: the thread that runs a driver gets one real-time signal
 * (SIGRTMIN+7) blocked, and it stays blocked (several drivers may share the
 * thread); the driver's own timer sends it to that thread to interrupt
 * KVM_RUN, and KVM unblocks it only inside KVM_RUN (no handler, no global
 * state). A driver may be driven from another thread than its creator's
 * (one thread at a time): the timer follows.
 */
#ifndef VMTRAP_KVM_H
#define VMTRAP_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/machine.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create a VM from cfg. Without /dev/kvm, or without permission to open it,
 * the message in `why` says which (VMT_E_NOTSUP / VMT_E_IO). The device
 * path can be overridden with the environment variable VMT_KVM_DEVICE. */
vmt_status vmt_kvm_driver_create(const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len);

/* 1 when d was made by vmt_kvm_driver_create(). */
int vmt_kvm_is_kvm(const vmt_driver *d);

/* Guest RAM frames written since the previous call (or since creation), by
 * the guest or through the driver (write_phys, completed write events):
 * bit g of `bitmap` (64 bits per word) is gfn g. nbits must be at least the
 * RAM frame count; bits beyond it are cleared. Reading clears the log.
 * Writes through a remapped gfn are logged under the gfn, not the backing. */
vmt_status vmt_kvm_dirty_log(vmt_driver *d, uint64_t *bitmap, uint64_t nbits);

/* KVM exits seen so far with this KVM_EXIT_* reason (0 for an unknown one). */
uint64_t vmt_kvm_exit_count(const vmt_driver *d, uint32_t kvm_exit_reason);

/* Number of KVM memslots the driver currently uses (1 + about 2 per
 * write-protected run of frames). */
uint32_t vmt_kvm_memslot_count(const vmt_driver *d);

/* Invariant checker: memslots tile guest RAM exactly, each slot's read-only
 * flag matches the current view's write right for all its frames, extra
 * frame reference counts match the views' remaps. VMT_E_INTERNAL with a
 * message (vmt_driver_error) when one fails. */
vmt_status vmt_kvm_check(vmt_driver *d);

/* ---- With a bus (vmt_machine_config.bus) ----
 * The VM gets KVM's in-kernel irqchip (LAPIC, IOAPIC, PIC) and PIT; create
 * the platform with VMT_KVM_PLATFORM_DEVICES (the rest: UART, HPET, RTC,
 * PM timer, i8042, misc). Ports and MMIO the kernel does not handle go to the
 * bus first (VMT_E_NOTFOUND: as without a bus — the ucall port is an
 * VMT_EVENT_IO). The platform's interrupt lines reach KVM through a link:
 * vmt_kvm_irq_link_create(&l); platform config irq_out =
 * vmt_kvm_irq_link_out, irq_out_ctx = l; create the platform and the driver;
 * vmt_kvm_irq_link_attach(l, driver) (lines raised before are replayed);
 * attach(l, NULL) before destroying the driver. Lines 0..15 are ISA IRQs
 * (GSI 0 on IOAPIC pin 2 as in QEMU's pc), 16..23 IOAPIC pins.
 * Guest time (bus and TSC alike) = host time since creation minus the time
 * the vCPU was stopped for the monitor (from the KVM_RUN return behind an
 * event to the next KVM_RUN). The bus is advanced before every access and
 * every run; its next deadline arms the driver's timer, so the platform's
 * deadlines are met while the guest runs (within the timer's latency).
 * TSC: the stopped time goes off the guest TSC through the vCPU's TSC
 * offset attribute (KVM_VCPU_TSC_OFFSET, Linux 5.16+) or, older, a
 * read-back-verified host write of IA32_TSC (in steps >= 100 us; if KVM
 * takes it for a synchronisation the method turns off, vmt_kvm_time_info
 * says why). clock.tsc_hz asks KVM_SET_TSC_KHZ for that rate.
 * Limits (what remains): the exits themselves (kernel entry/exit, a few us;
 * ~10 us on kvm_pvm) are not hidden; KVM's in-kernel timers (LAPIC timer,
 * TSC deadline, PIT) run on host time, so a stop while one is armed makes
 * it fire early by the hidden time in guest-TSC terms; ram_ranges holes
 * are not modelled (MMIO goes to the bus only past the end of RAM).
 * VCPU_STATE: regs, segments, SYSCALL/SYSENTER/other MSRs, APIC base, TSC
 * deadline, XSAVE (FXSAVE + YMM high) and XCR0, TSC, vCPU events; HLT only
 * with the irqchip; the in-kernel LAPIC's registers are not part of
 * vmt_vcpu_state. DIRTY_LOG: KVM's dirty logs plus host writes. */
#define VMT_KVM_PLATFORM_DEVICES 0x3f0u /* VMT_PLATFORM_DEV_ALL without LAPIC, IOAPIC, PIC, PIT */

vmt_status vmt_kvm_irq_line(vmt_driver *d, unsigned irq, bool level);

typedef struct vmt_kvm_irq_link vmt_kvm_irq_link;
vmt_status vmt_kvm_irq_link_create(vmt_kvm_irq_link **out);
void vmt_kvm_irq_link_destroy(vmt_kvm_irq_link *l);
void vmt_kvm_irq_link_out(void *link, unsigned irq, bool level); /* a vmt_platform_irq_fn */
vmt_status vmt_kvm_irq_link_attach(vmt_kvm_irq_link *l, vmt_driver *d);
uint64_t vmt_kvm_irq_link_failures(const vmt_kvm_irq_link *l);

typedef struct vmt_kvm_time {
    uint64_t guest_ns;          /* the bus's clock now */
    uint64_t stopped_ns;        /* time stopped for the monitor so far */
    uint64_t tsc_khz;
    uint64_t tsc_hidden_ns;     /* of stopped_ns, taken off the guest TSC */
    uint64_t tsc_hidden_ticks;
    uint64_t tsc_failures;
    const char *tsc_method;     /* "tsc-offset-attr", "ia32-tsc-write" or "none" */
    const char *tsc_why_none;   /* why "none" ("" otherwise) */
    bool irqchip;
    uint64_t irq_raised, irq_coalesced, irq_masked;
} vmt_kvm_time;
vmt_status vmt_kvm_time_info(vmt_driver *d, vmt_kvm_time *out);

#ifdef __cplusplus
}
#endif
#endif
