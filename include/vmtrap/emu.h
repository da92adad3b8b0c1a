/*
 * vmtrap/emu.h — the emulator driver ("emu"): an x86-64 CPU on Unicorn 2.1
 * with vmtrap's own MMU and Xen-altp2m-like views; it runs testbed guests
 * and real kernels (CPL0 and CPL3, SYSCALL, interrupts from the devices of
 * a vmt_bus, virtual time).
 *
 * Design (details and the Unicorn behaviour relied on: src/drivers/emu/emu_priv.h):
 *  - Memory: guest RAM is mapped into Unicorn once, at its guest-physical
 *    addresses (holes in vmt_machine_config.ram_ranges are MMIO regions
 *    routed to cfg->bus); the extra frames sit high above, where no guest
 *    translation reaches them. Unicorn runs with UC_TLB_VIRTUAL: every miss
 *    of its TLB asks the driver, which walks the guest's tables (4/5 levels,
 *    2M/1G pages, NX, U/S, WP, SMEP, SMAP with EFLAGS.AC, reserved bits, A/D
 *    bits set as the CPU does, recursive tables allowed) and applies the
 *    vCPU's current view
 *    (remap + R/W/X). The driver keeps a record of every translation it
 *    handed out since Unicorn's TLB was last flushed, so guest page-table
 *    writes (never handed out writable while a translation walked them),
 *    INVLPG/CR3/CR4 writes, view changes and host writes invalidate exactly
 *    what they must.
 *  - Every memory event is raised BEFORE the access with the exact address,
 *    size and data: a forbidden data access is translated onto a "trap
 *    slot" (a physical page nothing is mapped at) whose UNMAPPED hook sees
 *    the exact access and aborts the instruction; a forbidden fetch is
 *    refused by the fill. Responses (CONTINUE, EMULATE, FAST_STEP, DENY,
 *    STEP) are performed on one instruction by the reusable engine
 *    (vmtrap/emulate.h) or by a one-instruction step of the main CPU.
 *  - The CPU: the driver performs what Unicorn does not (entering CPL0:
 *    exceptions and interrupts through the guest IDT with TSS.RSP0/IST and
 *    #DF/triple fault, SYSCALL, SYSENTER, INT n) and what must be the
 *    machine's (port I/O, MSRs, RDTSC, control registers); Unicorn runs
 *    the rest natively (IRETQ, SYSRETQ, SYSEXIT, SWAPGS, SSE, ...).
 *  - Time is virtual: guest ns = instructions * 1e9 / insns_per_sec + HLT
 *    skips (vmt_machine_config.clock); the TSC derives from it. Interrupts
 *    from the bus are taken at instruction boundaries (IF, STI/MOV SS
 *    shadow); HLT sleeps until the bus's next deadline. Runs are
 *    deterministic; the time a monitor spends is invisible to the guest.
 *
 * Limits (refused with a message): one vCPU; 64-bit mode with paging on
 * (compatibility-mode code segments, turning paging or long mode off,
 * changing LA57 at run time); string port I/O. Four debug-register execute
 * breakpoints (hw_breakpoint op; DR0-3/DR7 in the registers mirror them and
 * cannot be changed through set_regs). CPUID is Unicorn's model (qemu64
 * unless vmt_emu_options.cpu_model says otherwise) without PKU (no
 * protection keys here); PCID and INVPCID only when
 * vmt_emu_options.offer_pcid / offer_invpcid ask (no Unicorn model offers
 * them).
 *
 * CR4: a bit whose feature CPUID (as presented) lacks is reserved: MOV to
 * CR4 raises #GP(0) and set_regs / set_vcpu_state (a snapshot's resume)
 * refuse, naming the bit and the model — the guest's kernel believes it
 * has what it set, so dropping the bit silently would change what it runs
 * on. Checked: UMIP, LA57, VMXE, SMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP;
 * PKE, bits 15, 19 and 23-63 always. What Unicorn 2.1.1's models report
 * (measured): qemu64, kvm64, Core 2, Nehalem, Westmere, Opteron G1-G3:
 * none of them; Sandy Bridge, Opteron G4/G5: XSAVE (OSXSAVE); Ivy Bridge, Haswell,
 * Knights Mill: + FSGSBASE, SMEP; Broadwell, Skylake-Client/Server,
 * Cascadelake, Cooperlake, Icelake-Client, Denverton, Snowridge, EPYC(-Rome),
 * Dhyana: + SMAP; Icelake-Server: + LA57. None has UMIP, VMX, SMX, PCID.
 * The Linux snapshot (qemu64, CR4 0x6f0) needs none of them.
 *
 * SMEP and SMAP: with CR4.SMEP the kernel cannot fetch from a user page;
 * with CR4.SMAP (Broadwell and later) its data accesses to user pages raise
 * #PF (P, W/R, U/S = 0) unless EFLAGS.AC (STAC, CLAC, POPF run natively;
 * STAC/CLAC raise #UD without SMAP). Unicorn keeps translations made with
 * AC = 0 and AC = 1 apart, so a change of AC needs no flush. The driver's
 * own accesses apply it too: the engine's (EMULATE, FAST_STEP), and
 * exception delivery's IDT/TSS reads as implicit supervisor accesses (at
 * CPL3 regardless of AC); a delivery that fails that way escalates to #DF.
 *
 * Translations and PCIDs: the record is tagged with the PCID (and global
 * for leaf G with CR4.PGE) and invalidated as the SDM says (MOV to CR3
 * with/without bit 63, INVLPG, INVPCID types 0-3, CR4 writes), and also
 * whenever the guest writes a table entry a recorded walk read — more than
 * hardware: no translation outlives a change of the tables it was walked
 * from, even without an invalidation. Non-global translations are used
 * again only under the same PCID and CR3 root (a PCID reused with another
 * root walks again); global ones under any PCID and root, like the CPU:
 * they survive CR3 writes, and INVLPG, INVPCID type 2 and CR4 writes drop
 * them. Unicorn's TLB (VA only) is flushed at every CR3 change and refilled
 * from the record, so returning to a PCID with bit 63 set costs no guest
 * walk; the record keeps other address spaces' translations, and their
 * table frames stay watched (a guest write there is performed by the
 * driver), until an invalidation drops them or the record fills
 * (tlb_entries) and starts over.
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
    uint32_t tlb_entries;   /* translations recorded before Unicorn's TLB is
                               flushed and refilled (8..2048); 0: 1024 */
    bool no_engine;         /* always answer with internal steps (tests) */
    /* The CPU model CPUID presents (Unicorn's UC_CPU_X86_* of
     * <unicorn/x86.h>, e.g. UC_CPU_X86_HASWELL); ignored unless
     * set_cpu_model. Default: qemu64, what QEMU's `-cpu qemu64` shows. */
    bool set_cpu_model;
    int cpu_model;
    /* Offer PCID (CPUID.1:ECX[17]: CR4.PCIDE, PCIDs in CR3) and INVPCID
     * (CPUID.7.0:EBX[10]) on top of the model: Unicorn 2.1.1 filters both
     * out of every model; the driver performs them itself. */
    bool offer_pcid;
    bool offer_invpcid;
} vmt_emu_options;

/* The least CPU (model, PCID offer) that has every feature CR4 `cr4` uses,
 * oldest first: qemu64 (left as it is when nothing is needed), Sandy Bridge
 * (OSXSAVE), Ivy Bridge (SMEP, FSGSBASE), Broadwell (SMAP), Icelake-Server
 * (LA57); PCIDE adds offer_pcid and offer_invpcid. For a vCPU state from
 * elsewhere (a snapshot): set_vcpu_state refuses CR4 bits the model lacks.
 * Only those fields of *opt change. VMT_E_NOTSUP (why names the bits) when
 * no model has them (PKE, UMIP, VMXE, SMXE, ...). */
vmt_status vmt_emu_options_for_cr4(uint64_t cr4, vmt_emu_options *opt, char *why, size_t why_len);

/* The name of a UC_CPU_X86_* model ("qemu64", "broadwell", ...; "unknown"). */
const char *vmt_emu_cpu_model_name(int model);

/* Create the emulator driver for cfg (cfg->image is placed into RAM; its
 * registers become vCPU 0's). cfg->image may be NULL: RAM starts zeroed and
 * the registers are the boot-protocol defaults the caller then replaces with
 * write_phys / set_regs. `why` names the problem on failure (an image whose
 * CPU state needs SYSCALL, LA57, more than one vCPU, ...). */
vmt_status vmt_emu_driver_create(const vmt_machine_config *cfg, vmt_driver **out, char *why,
                                 size_t why_len);
vmt_status vmt_emu_driver_create_ex(const vmt_machine_config *cfg, const vmt_emu_options *opt,
                                    vmt_driver **out, char *why, size_t why_len);

/* Translation counters (tests, benchmarks). */
typedef struct vmt_emu_tlb_stats {
    uint32_t capacity;
    uint32_t used;
    uint64_t fills;          /* translations handed to Unicorn (TLB-fill hook) */
    uint64_t evictions;      /* recorded translations dropped because the record was full */
    uint64_t invalidations;  /* entries dropped by invalidation */
    uint64_t pt_write_faults;/* guest writes into a page-table frame (performed exactly) */
    uint64_t pf_injected;    /* #PF delivered to the guest */
    uint64_t engine_steps;   /* responses performed by the reusable engine
                                (one instruction, no Unicorn map change) */
    uint64_t uc_flushes;     /* times Unicorn's TLB was flushed */
    uint64_t interrupts;     /* external interrupts delivered from the bus */
    uint64_t hlt_skipped_ns; /* guest time skipped over HLT */
    uint64_t guest_ns;       /* guest time now (virtual clock) */
    uint64_t engine_fpu_steps;/* of engine_steps, x87/MMX/SSE instructions
                                (performed with the vCPU's FXSAVE state) */
    uint64_t walks;          /* fills that walked the guest's page tables */
    uint64_t record_hits;    /* fills answered from the record without a walk
                                (after a flush of Unicorn's TLB, a CR3 switch
                                back to a PCID it kept, INVLPG, ...) */
    uint64_t cr3_writes;     /* MOV to CR3 */
    uint64_t cr3_noflush;    /* of them, with CR4.PCIDE and bit 63 set (nothing invalidated) */
    uint64_t invlpg;         /* INVLPG executed */
    uint64_t invpcid;        /* INVPCID performed */
} vmt_emu_tlb_stats;

/* VMT_E_INVAL when d is not an emu driver. */
vmt_status vmt_emu_tlb_stats_get(vmt_driver *d, vmt_emu_tlb_stats *out);

/* "unicorn 2.1.1, capstone 4.0" — the versions this driver runs on. */
void vmt_emu_library_versions(char *buf, size_t len);

/* Guest virtual time (ns) now, and set it (a restore puts the clock back
 * to the snapshot's time so the devices' deadlines line up again; the TSC
 * keeps its value until the vCPU state sets it). VMT_E_INVAL when d is not
 * an emu driver. */
vmt_status vmt_emu_clock_get(vmt_driver *d, uint64_t *now_ns);
vmt_status vmt_emu_clock_set(vmt_driver *d, uint64_t now_ns);

/* Invariant checker: every recorded translation gives rights within PTE ∩
 * view rights and no write permission on a page-table frame, page-table
 * reference counts match the record, the index matches the slots (one
 * translation per PCID and va, global ones only with CR4.PGE, PCID 0
 * without CR4.PCIDE), every recorded translation is still what the guest
 * tables give (each entry of its walk present, accessed and pointing where
 * it did), views are well formed, CR4 has no bit the CPU lacks and
 * Unicorn's CR4.SMAP is the guest's. VMT_OK or VMT_E_INTERNAL with the reason in
 * vmt_driver_error(d). */
vmt_status vmt_emu_check(vmt_driver *d);

#ifdef __cplusplus
}
#endif
#endif
