/*
 * vmtrap/emu.h — the emulator driver ("emu"): an x86-64 CPU on Unicorn 2.0.1
 * with vmtrap's own MMU and Xen-altp2m-like views.
 *
 * Design (details in src/drivers/emu/emu_priv.h):
 *  - Guest RAM and the extra frames are one host mmap. Unicorn runs in flat
 *    64-bit mode with its own paging OFF; the guest's CR0/CR3/CR4/EFER are
 *    virtual registers of the driver. vmtrap walks the guest tables itself
 *    (vmt_paging_walk), applies the vCPU's current view (gfn remap + R/W/X)
 *    and maps each guest-virtual page onto the host memory of the frame it
 *    resolves to (uc_mem_map_ptr), with Unicorn protections = guest PTE
 *    rights ∩ view rights. Those mappings form a bounded software TLB
 *    (FIFO eviction; default 64 entries: every Unicorn map change costs
 *    more as regions grow — bench_emu measured ~55 us per miss with 16
 *    entries, 60-110 us with 64, 0.4-0.6 ms with 256 on this machine — and
 *    Unicorn aborts past ~4096 regions) invalidated on CR3 writes, writes to page-table frames (which are
 *    write-protected while any TLB entry was walked through them), view
 *    switches, remaps, rights changes and host writes.
 *  - The guest's accessed/dirty bits are set by the driver when it walks
 *    (A on every level, D on the leaf at the first write) as hardware does;
 *    they never raise memory events.
 *  - A gfn at or past the end of RAM reached by a guest translation sees no
 *    memory: reads give 0xff bytes, writes are dropped, execution there stops
 *    the guest (VMT_STOP_GUEST_ERROR). Only a view remap of an in-RAM gfn
 *    can expose an extra frame.
 *  - Every memory event is raised BEFORE the access: the Unicorn protection
 *    hook returns false, which in 2.0.1 aborts the instruction cleanly with a
 *    precise RIP (a no-op memory hook keeps RIP precise); the driver then
 *    reports the event and performs the response on one instruction
 *    (CONTINUE: right granted for it; EMULATE: it sees emulate_view's
 *    mapping; FAST_STEP: it runs in step_view) with the reusable engine
 *    (vmtrap/emulate.h) when it can — no Unicorn map change — and else with
 *    a one-instruction internal step of the main CPU.
 *  - A per-instruction code hook counts instructions (deterministic
 *    instruction limit, single-step without EFLAGS.TF) and stops before the
 *    instructions the driver performs itself: INT3, port I/O, mov to/from
 *    CR0/CR3/CR4, rdmsr/wrmsr of EFER, syscall/sysret (refused).
 *  - Exceptions (#PF from the driver's MMU, REINJECT of #BP, #UD/#GP/...
 *    from Unicorn) are delivered through the guest's IDT like hardware: a
 *    64-bit frame (SS, RSP, RFLAGS, CS, RIP, error code) on the 16-byte
 *    aligned current stack; IST stacks are not supported (the guest stops).
 *
 * Limits (stated as capabilities; refused with a message when needed):
 * one vCPU; CPL0 guests in 64-bit mode with paging on and 4-level tables
 * (LA57 refused; a guest that enters CPL3 is stopped at the next exit —
 * user/supervisor rights are not modelled); EFER.SCE / syscall refused (Unicorn 2.0.1 cannot run
 * SYSCALL); string port I/O stops the guest. Four debug-register execute
 * breakpoints (hw_breakpoint op, checked by the code hook; DR0-3/DR7 in the
 * registers mirror them and cannot be changed through set_regs).
 * EFER.NXE is supported (the driver's MMU enforces NX).
 */
#ifndef VMTRAP_EMU_H
#define VMTRAP_EMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"
#include "vmtrap/machine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Optional tuning; zero fields take the defaults. */
typedef struct vmt_emu_options {
    uint32_t tlb_entries;   /* software-TLB capacity (8..2048); 0: 64 */
    bool no_engine;         /* always answer with internal steps (tests) */
} vmt_emu_options;

/* Create the emulator driver for cfg (cfg->image is placed into RAM; its
 * registers become vCPU 0's). cfg->image may be NULL: RAM starts zeroed and
 * the registers are the boot-protocol defaults the caller then replaces with
 * write_phys / set_regs. `why` names the problem on failure (an image whose
 * CPU state needs SYSCALL, LA57, more than one vCPU, ...). */
vmt_status vmt_emu_driver_create(const vmt_machine_config *cfg, vmt_driver **out, char *why,
                                 size_t why_len);
vmt_status vmt_emu_driver_create_ex(const vmt_machine_config *cfg, const vmt_emu_options *opt,
                                    vmt_driver **out, char *why, size_t why_len);

/* Software-TLB counters (tests, benchmarks). */
typedef struct vmt_emu_tlb_stats {
    uint32_t capacity;
    uint32_t used;
    uint64_t fills;          /* translations installed */
    uint64_t evictions;      /* entries evicted because the TLB was full */
    uint64_t invalidations;  /* entries dropped by invalidation */
    uint64_t pt_write_faults;/* guest writes that hit a write-protected table */
    uint64_t pf_injected;    /* #PF delivered to the guest */
    uint64_t engine_steps;   /* responses performed by the reusable engine
                                (one instruction, no Unicorn map change) */
    uint64_t uc_flushes;     /* times Unicorn's TLB was flushed */
} vmt_emu_tlb_stats;

/* VMT_E_INVAL when d is not an emu driver. */
vmt_status vmt_emu_tlb_stats_get(vmt_driver *d, vmt_emu_tlb_stats *out);

/* Invariant checker: every Unicorn mapping agrees with its TLB entry and the
 * view rules (no write permission on a page-table frame, protections within
 * PTE ∩ view rights), page-table reference counts match the entries, the
 * index matches the slots. VMT_OK or VMT_E_INTERNAL with the reason in
 * vmt_driver_error(d). */
vmt_status vmt_emu_check(vmt_driver *d);

#ifdef __cplusplus
}
#endif
#endif
