/*
 * drivers/emu/emu_priv.h — internal state of the emulator driver.
 *
 * Split by concern:
 *   emu_driver.c     create/destroy, physical memory map, frames, ops table
 *   emu_views.c      views: per-gfn backing + rights overrides
 *   emu_mmu.c        the TLB-fill hook: guest walk + view, trap slots, the
 *                    record of handed-out translations, invalidation
 *   emu_cpu.c        Unicorn hooks, the run loop, events and responses
 *   emu_insn.c       registers, instructions the driver performs (port I/O,
 *                    CRs, MSR dispatch, INT3, SYSCALL dispatch, RDTSC)
 *   emu_exceptions.c privilege switches, IDT delivery, SYSCALL/SYSENTER
 *   emu_irq.c        interrupts from the bus, HLT, deadlines
 *   emu_msr.c        MSRs and the virtual clock
 *   emu_state.c      VCPU_STATE and DIRTY_LOG
 *   emu_pcid.c       PCID/INVPCID as the CPU offers them (CPUID), CR3
 *                    writes with PCIDs, INVPCID, INVLPG's record side
 *   emu_cr4.c        CR4's reserved bits per the presented CPU, SMAP
 *
 * Unicorn 2.1.1 behaviour this driver relies on (measured on this machine;
 * the tests would catch a change):
 *  - uc_ctl_tlb_mode(UC_TLB_VIRTUAL) + UC_HOOK_TLB_FILL: on every miss of
 *    Unicorn's TLB (per QEMU MMU index, i.e. per CPL) the hook gets the page
 *    and the access type and answers a physical address + UC_PROT rights;
 *    an access beyond the rights it got asks again (a write after a read
 *    fill, ...). Returning false aborts the instruction (uc_emu_start
 *    returns UC_ERR_EXCEPTION, RIP on it, no INTR hook). The hook gets only
 *    the page, so exact addresses come from trap slots: a translation onto
 *    an unmapped physical page makes the access reach the UNMAPPED hook
 *    with the exact physical address (= slot + offset), size and value;
 *    returning false there aborts the instruction before it wrote anything
 *    with RIP on it (the code hook keeps RIP exact).
 *  - uc_ctl_flush_tlb flushes only the TLB (not translated code), ~a few
 *    microseconds; the driver calls it between runs only, never in hooks.
 *  - Translated code is keyed by physical page and survives TLB flushes;
 *    chained jumps inside a page keep running it without a new fill.
 *    uc_mem_write does NOT drop translated code in 2.1.1 (its dirty
 *    tracking is a no-op), and uc_ctl_remove_cache takes a VIRTUAL address
 *    (it translates through the TLB/fill): the driver drops code over a
 *    physical page by answering a private non-canonical address (EMU_CTL_VA
 *    + physical) during that call. Guest stores into code are noticed by
 *    Unicorn itself (a new write translation starts "not dirty"), but
 *    translating code re-protects only writes through the same virtual
 *    page: emu_mmu.c keeps a frame from being executable at one page and
 *    writable at another. The driver has no UC_HOOK_MEM_READ/WRITE hook:
 *    one sends every guest load and store through the slow path.
 *  - uc_emu_start's `until` makes Unicorn translate that address at every
 *    start (a fill): exits mode with no exits is used instead.
 *  - In 64-bit mode uc_reg_write of CS/SS/DS/ES sets only the selector; the
 *    privilege level (QEMU hflags bits 0-1, set from SS.DPL by segment
 *    loads) never changes through the API. iretq/sysretq/sysexit executed
 *    by the guest change it correctly; SYSCALL and SYSENTER are no-ops
 *    (UC_HOOK_INSN only); exceptions call UC_HOOK_INTR, never the guest
 *    IDT. So emu_set_cpl patches hflags in a saved context (offset found at
 *    creation by flipping CR0.TS/EM, mirrored in hflags bits 11/10).
 *  - SMAP: Unicorn keeps CR4.SMAP only when its model has SMAP (then
 *    HF_SMAP_MASK); its MMU index for CPL0-2 accesses is then "kernel SMAP"
 *    with EFLAGS.AC = 0 and "kernel no-SMAP" with AC = 1, each with its own
 *    TLB; translated blocks are keyed by AC and STAC/CLAC/POPF end a block;
 *    STAC/CLAC end the run as an invalid instruction (#UD) without
 *    CPUID.SMAP or at CPL > 0. The TLB-fill hook is not told the index.
 *  - hlt ends uc_emu_start with RIP after it; an invalid opcode ends it with
 *    UC_ERR_INSN_INVALID; uc_emu_stop from the code hook stops before that
 *    instruction.
 *
 * Invariants (vmt_emu_check):
 *  - tlb_index maps emu_tlb_key(entry) -> slot for exactly tlb[0 ..
 *    tlb_used): one entry per (PCID, va page) and one global entry per va
 *    page; a global entry exists only while CR4.PGE is set, and every
 *    non-global entry has PCID 0 while CR4.PCIDE is clear;
 *  - every recorded translation is what its walk would read now: each
 *    table entry on its path is present and points at the next recorded
 *    table (the leaf at gfn), A is set on all of them, D on a dirty leaf,
 *    G on the leaf exactly when the entry is global (guest page-table
 *    writes drop the translations that walked them, so the record never
 *    holds a translation the tables no longer give);
 *  - a recorded translation's rights ⊆ PTE rights ∩ view rights (∪ the
 *    current one-step grant), and never include W on a page-table frame
 *    (pt_refs[backing] > 0) unless a flush is already pending;
 *  - pt_refs[f] == number of (recorded translation, table level) pairs
 *    whose walk read a table in host frame f;
 *  - the record holds at most tlb_cap + EMU_TLB_SLACK translations;
 *  - CR4 has no bit of cr4_reserved, and Unicorn's CR4.SMAP equals the
 *    guest's (translations made with AC = 1 are then never used with AC = 0).
 */
#ifndef VMT_EMU_PRIV_H
#define VMT_EMU_PRIV_H

#include <capstone/capstone.h>
#include <stdbool.h>
#include <stdint.h>
#include <unicorn/unicorn.h>

#include "core/hmap.h"
#include "vmtrap/bus.h"
#include "vmtrap/driver.h"
#include "vmtrap/emu.h"
#include "vmtrap/emulate.h"
#include "vmtrap/machine.h"
#include "vmtrap/paging.h"

#define EMU_PAGE 4096u
#define EMU_NO_SLOT UINT32_MAX
/* Unicorn physical layout: RAM at its guest-physical addresses (holes are
 * MMIO regions routed to the bus), extra frames, the DENY sink page and the
 * trap window (nothing mapped) above anything MAXPHYADDR 40 can reach. */
#define EMU_EXTRA_PA (1ull << 41)
#define EMU_SINK_PA (1ull << 42)
#define EMU_TRAP_PA (1ull << 43)
#define EMU_TRAP_SLOTS 64u
#define EMU_CTL_VA (1ull << 63)  /* + physical: code removal (emu_code_written) */
#define EMU_CR4_PGE (1ull << 7)
#define EMU_CR4_PCIDE (1ull << 17)
#define EMU_CR3_NOFLUSH (1ull << 63) /* MOV to CR3 with CR4.PCIDE: keep the PCID's translations */
#define EMU_TLB_KEY_GLOBAL (1ull << 62) /* flips a canonical va: never a non-global key */
#define EMU_CR4_SMEP (1ull << 20)
#define EMU_CR4_SMAP (1ull << 21)
#define EMU_RFLAGS_AC (1ull << 18)
#define EMU_NSTORED 34
#define EMU_MCE_BANKS 10
#define EMU_TLB_SLACK 64u     /* fills one instruction may add past capacity */

typedef struct emu_view {
    bool live;
    vmt_access def;       /* rights of gfns without an override */
    vmt_hmap gfns;        /* vmt_gfn -> emu_gfn_ov */
} emu_view;

typedef struct emu_gfn_ov {
    vmt_gfn backing;
    vmt_access access;
} emu_gfn_ov;

typedef struct emu_tlb_entry {
    bool is_mmio;         /* translation reaches no RAM: the bus */
    bool is_sink;         /* DENY of a write: mapped onto the sink copy */
    uint64_t va;          /* page-aligned guest-virtual address */
    vmt_gfn gfn;          /* guest frame from the guest's tables */
    vmt_gfn backing;      /* host frame (after the view) */
    vmt_access pte_rights;/* rights the guest tables gave the fills (CPL, AC
                             applied; union over refills: see uc_perms) */
    bool dirty;           /* leaf D bit set (W may be mapped) */
    uint8_t ntables;
    vmt_gfn tables[5];    /* host frames of the tables the walk read */
    vmt_gfn table_gfns[5];/* the same tables as guest frames (pre-view) */
    uint16_t entry_off[5];/* byte offset of the entry the walk read in each table */
    uint32_t uc_perms;    /* UC_PROT_* handed to Unicorn: the union over
                             refills since its flush (one TLB per MMU index) */
    uint16_t pcid;        /* the PCID it was walked under (0 with CR4.PCIDE clear) */
    bool global;          /* leaf G with CR4.PGE: serves every PCID and root */
    bool walk_user;       /* the walk's U/S over all levels */
    vmt_access walk_rights;/* the walk's R/W/X over all levels (before CPL, WP, SMEP) */
} emu_tlb_entry;

/* Index key of a recorded translation: va page | PCID, or for a global one
 * the va page with bit 62 flipped (non-canonical, so never a PCID key). */
static inline uint64_t emu_tlb_key(uint64_t va_page, bool global, uint16_t pcid)
{
    return global ? va_page ^ EMU_TLB_KEY_GLOBAL : va_page | pcid;
}

/* A memory fault recorded by a Unicorn hook (handled after uc_emu_start). */
typedef struct emu_fault {
    bool pending;
    bool counted;         /* the code hook counted the instruction */
    vmt_access kind;      /* R, W or X */
    uint64_t va;          /* UINT64_MAX: unmapped physical pa (a bug) */
    uint64_t pa;
    int size;
    uint64_t value;
} emu_fault;

/* What the code hook stopped in front of. */
enum emu_special {
    EMU_SP_NONE = 0,
    EMU_SP_INT3,
    EMU_SP_IO,
    EMU_SP_STRING_IO,
    EMU_SP_CR,            /* mov to/from CRn */
    EMU_SP_MSR,           /* rdmsr / wrmsr */
    EMU_SP_SYSCALL,       /* syscall / sysret / sysenter / sysexit */
    EMU_SP_HWBP,          /* a debug-register execute breakpoint */
    EMU_SP_INTN,          /* int n (n != 3) */
    EMU_SP_TSC,           /* rdtsc / rdtscp: the virtual clock */
    EMU_SP_INVPCID,       /* invpcid (66 0f 38 82): Unicorn stops at it as invalid */
    EMU_SP_INVLPG,        /* invlpg: the code hook drops the record's side, Unicorn runs it */
};

/* The one-instruction step the driver is running, if any. */
enum emu_step_kind {
    EMU_STEP_NONE = 0,
    EMU_STEP_USER,        /* STEP response: report SINGLESTEP after */
    EMU_STEP_INTERNAL,    /* CONTINUE/EMULATE/FAST_STEP/DENY: silent */
};

struct emu;
typedef struct emu_mmio_region {
    struct emu *e;
    uint64_t base;        /* guest-physical start */
} emu_mmio_region;

typedef struct emu {
    vmt_driver *drv;
    uc_engine *uc;
    csh cs;
    uc_hook hooks[10];
    unsigned nhooks;

    /* memory: RAM frames then extra frames, one mapping */
    uint8_t *mem;
    size_t mem_bytes;
    uint64_t ram_frames;
    uint64_t extra_frames;
    uint8_t *extra_used;  /* 1 per extra frame: handed out by frame_alloc */
    uint32_t *pt_refs;    /* per host frame */
    uint8_t *sink;        /* 4 KiB at EMU_SINK_PA: DENY-ed writes land here */
    uint8_t *dirty;       /* a bit per RAM frame written since the last clear */
    uint8_t *xframes;     /* a bit per frame ever handed out executable (fetch fills only) */
    uint8_t maxphyaddr;
    vmt_ram_range *ranges;/* RAM blocks (nranges 0: one block 0..ram) */
    size_t nranges;
    vmt_bus bus;
    emu_mmio_region mmio[16];
    unsigned nmmio;
    vmt_status bus_error;     /* a bus failure inside a hook: stop the run */
    bool halted;              /* in HLT, waiting for an interrupt */
    /* interrupts (emu_irq.c) */
    uint64_t irq_check_at;    /* the code hook stops when icount reaches it */
    bool irq_waiting;         /* one is pending but IF = 0: watch for STI & co */
    bool nmi_blocked;         /* an NMI handler runs (until its IRET) */
    uint64_t irqs_delivered;
    uint64_t hlt_skipped_ns;
    /* virtual clock and MSRs the driver keeps (emu_msr.c) */
    uint64_t ips, tsc_hz, start_ns, skip_ns, tsc_offset;
    uint64_t clock_icount;    /* icount when the clock was last set (start_ns) */
    uint64_t apic_base, tsc_deadline;
    uint64_t mcg_ctl, mce[4 * EMU_MCE_BANKS];
    /* PCID / INVPCID offered in CPUID (emu_pcid.c): Unicorn's leaves 1 and
     * 7.0 as its model reports them, answered with the bits added */
    bool offer_pcid, offer_invpcid;
    uint32_t cpuid1[4], cpuid7[4];
    uint32_t cpuid_max;       /* the model's last basic leaf */
    int cpu_model;            /* UC_CPU_X86_* */
    uint64_t cr4_reserved;    /* CR4 bits this CPU does not have (emu_cr4.c) */
    uint32_t msr_ids[EMU_NSTORED];
    uint64_t msr_vals[EMU_NSTORED];
    uc_context *cpl_ctx;      /* scratch context for privilege switches */
    size_t cpl_ctx_size;
    size_t hflags_off;        /* offset of QEMU's hflags in a saved context */

    /* views */
    emu_view *views;
    uint16_t max_views;
    vmt_view cur_view;

    /* MMU effective context (current view unless a step overrides it) */
    vmt_view mmu_view;
    vmt_access grant_kinds;   /* extra rights for grant_va during a step */
    uint64_t grant_va;        /* page; UINT64_MAX = every page */
    uint64_t ptw_va;          /* page whose page-table write is being stepped
                                 (UINT64_MAX: none) */
    uint64_t deadline_ns;     /* wall-clock end of this run slice (0: none) */
    bool deadline_hit;
    bool deny_active;         /* DENY: the trapped access is skipped */
    uint64_t deny_va;
    vmt_access deny_kind;

    /* record of the translations handed to Unicorn since its last flush */
    emu_tlb_entry *tlb;       /* tlb[0 .. tlb_used) */
    uint32_t tlb_cap;
    uint32_t tlb_used;
    vmt_hmap tlb_index;       /* uint64 va page -> uint32 slot */
    bool uc_flush_pending;    /* Unicorn's TLB must be flushed before running */
    bool flush_asap;          /* stop at the next instruction and flush */
    bool in_ctl;              /* inside a uc_ctl call: only EMU_CTL_VA fills */
    bool ctl_pa_valid;
    uint64_t trap_va[EMU_TRAP_SLOTS];
    uint32_t trap_next;       /* trap slots handed out since Unicorn's last TLB flush */
    uint64_t code_va;         /* 1-entry cache for the code hook */
    const uint8_t *code_host;
    vmt_gfn code_gfn;         /* code_va's guest frame (UINT64_MAX: not known) */
    vmt_emu_tlb_stats tstats;
    vmt_emulator *engine;     /* one-instruction responses without a map change */
    vmt_fpu_state engine_fpu[2]; /* engine_one: the vCPU's FXSAVE state before / after */
    bool no_engine;

    /* virtual control state */
    uint64_t cr0, cr2, cr3, cr4, efer;
    uint64_t dr[6];           /* dr0-3, dr6, dr7 as the guest set them */
    uint64_t hwbp_va[4];      /* execute breakpoints (hw_breakpoint op) */
    uint8_t hwbp_mask;
    uint8_t hwbp_hit;         /* index of the one that fired */
    bool hwbp_suppress;       /* like EFLAGS.RF: not again at this rip */
    uint64_t hwbp_suppress_rip;
    bool paused;
    uint16_t sel[6];          /* cs ss ds es fs gs as last set / delivered */
    uint16_t sel_snap[6];     /* Unicorn's selectors when sel[] was synced:
                                 a difference means the guest loaded one */

    /* run state */
    emu_fault fault;
    enum emu_special special;
    uint64_t special_rip;
    uint32_t special_size;
    int intr_no;              /* -1: none */
    bool hook_stop;           /* a hook called uc_emu_stop */
    enum emu_step_kind step;
    bool step_started;        /* the stepped instruction has begun */
    bool step_rerun;          /* ... and Unicorn restarted it once (SMC) */
    uint64_t step_rip;        /* where it began */
    uint64_t step_gpr[17];    /* rax..r15, rflags when it began */
    bool step_done;
    vmt_view step_return_view;/* view to restore after an internal step */
    bool step_restore_view;
    uint64_t icount;          /* guest instructions completed */
    uint64_t insn_limit;      /* 0 = none */
    bool insn_limit_hit;
    double time_limit_s;
    uint64_t ns_guest_total;

    /* events */
    bool awaiting_response;
    vmt_event last;           /* the event awaiting a response */
    bool regs_from_event;     /* last.regs still hold Unicorn's engine registers
                                 (cleared by every register write and run) */
    uint64_t seq;
    bool stopped;             /* sticky until set_regs / set_limit */
    vmt_stop_info stop;
    bool monitor_cr, monitor_io, monitor_ss;
    vmt_driver_stats stats;
    uint64_t ns_event_at;

    /* serial line buffer */
    vmt_serial_fn serial;
    void *serial_ctx;
    char serial_line[256];
    size_t serial_len;
} emu;

/* emu_views.c */
vmt_status emu_views_init(emu *e, uint16_t max_views);
void emu_views_free(emu *e);
/* Backing and rights of gfn in view v (view 0: gfn itself, RWX). */
vmt_access emu_view_resolve(const emu *e, vmt_view v, vmt_gfn gfn, vmt_gfn *backing);
bool emu_frame_is_backing(const emu *e, vmt_gfn frame);
vmt_status emu_op_view_create(vmt_driver *d, vmt_access def, vmt_view *out);
vmt_status emu_op_view_destroy(vmt_driver *d, vmt_view view);
vmt_status emu_op_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view);
vmt_status emu_op_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out);
vmt_status emu_op_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing);
vmt_status emu_op_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed);
vmt_status emu_op_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                  vmt_gfn *backing);

/* emu_mmu.c */
typedef enum emu_fault_result {
    EMU_FR_RETRY,         /* nothing wrong any more: flush and run again */
    EMU_FR_EVENT,         /* a memory-access event was filled in */
    EMU_FR_PAGE_FAULT,    /* the guest's tables forbid it: deliver #PF */
    EMU_FR_STOP,          /* the guest cannot go on (e->stop filled) */
    EMU_FR_GP,            /* non-canonical address: deliver #GP(0) */
    EMU_FR_PT_WRITE,      /* a permitted write into a page-table frame */
} emu_fault_result;

vmt_status emu_tlb_init(emu *e, uint32_t cap);
void emu_tlb_free(emu *e);
bool emu_gfn_is_ram(const emu *e, vmt_gfn gfn);
/* Unicorn physical address of a host frame (RAM or extra). */
uint64_t emu_phys_pa(const emu *e, vmt_gfn frame);
uint8_t emu_cpl(emu *e);

/* ---- the guest walk (emu_walk.c) ---- */
typedef struct emu_walk_ctx {
    emu *e;
    bool pt_violation;     /* the view forbids reading a table frame */
    vmt_pa violation_pa;
} emu_walk_ctx;
vmt_access emu_view_rights(const emu *e, uint64_t va_page, vmt_gfn gfn, vmt_gfn *backing);
vmt_gfn emu_table_host_frame(const emu *e, vmt_gfn gfn);
void emu_set_ad_bits(emu *e, vmt_walk *w, bool write);
vmt_access emu_rights_for(const emu *e, vmt_access walk_rights, bool user, uint8_t cpl, bool smap);
vmt_access emu_pte_rights_for(const emu *e, const vmt_walk *w, uint8_t cpl, bool smap);
vmt_status emu_walk(emu *e, uint64_t va, vmt_walk *w, emu_walk_ctx *wc);

/* The TLB-fill hook's decision for an access of `kind` to va_page: true
 * with *paddr / *perms for Unicorn, or false (a fetch that faults; the
 * fault is recorded in e->fault). */
bool emu_mmu_fill(emu *e, uint64_t va_page, vmt_access kind, uint64_t *paddr, uint32_t *perms);
/* The UNMAPPED hook: an access through a trap slot (recorded; false). */
bool emu_mmu_trap(emu *e, vmt_access kind, uint64_t paddr, int size, int64_t value);
/* Handle a recorded fault. On EMU_FR_EVENT, ev->u.mem is filled; on
 * EMU_FR_PAGE_FAULT, *pf_error is the #PF error code. */
emu_fault_result emu_mmu_fault(emu *e, const emu_fault *f, vmt_event *ev, uint32_t *pf_error);
/* Forget every recorded translation (Unicorn's TLB is flushed before the
 * next run by emu_tlb_apply_flush). */
void emu_tlb_flush(emu *e);
void emu_tlb_apply_flush(emu *e);
/* More than half of the trap slots were handed out since the last flush. */
bool emu_trap_slots_low(const emu *e);
/* After a view/rights/grant change: flush when any translation changes. */
void emu_tlb_revalidate(emu *e);
/* Bytes [off, off + len) of a host frame were written: translations whose
 * walk read an entry there are dropped. */
void emu_tlb_range_written(emu *e, vmt_gfn frame, uint32_t off, uint32_t len);
void emu_tlb_frame_written(emu *e, vmt_gfn frame);
/* Write host memory of a frame the way a device would: translated code
 * over it is dropped, and translations walked through it. */
void emu_host_write(emu *e, vmt_gfn frame, uint32_t off, const void *buf, size_t len);
/* Drop Unicorn's translated code over bytes of a host frame. */
void emu_code_written(emu *e, vmt_gfn frame, uint32_t off, uint32_t len);
/* Translate va for the driver's own accesses (IDT, stack frames,
 * instruction bytes) as a supervisor access: host pointer of the byte,
 * bytes left in the page. Sets A (and D when write) bits. smap: the access
 * is a data access SMAP forbids on a user page now (emu_smap_explicit /
 * _implicit): such a page gives VMT_E_CONFLICT (present, forbidden). */
vmt_status emu_mmu_host_ptr(emu *e, uint64_t va, bool write, bool smap, uint8_t **host, size_t *left);
/* Guest-physical address of va under the guest's tables (no view). */
vmt_status emu_mmu_gpa(emu *e, uint64_t va, vmt_pa *gpa);
/* Supervisor reads/writes without SMAP (instruction bytes, host queries). */
vmt_status emu_va_read(emu *e, uint64_t va, void *buf, size_t len);
vmt_status emu_va_write(emu *e, uint64_t va, const void *buf, size_t len);
/* The same as data accesses of the guest CPU: smap as emu_mmu_host_ptr. */
vmt_status emu_va_read_data(emu *e, uint64_t va, void *buf, size_t len, bool smap);
vmt_status emu_va_write_data(emu *e, uint64_t va, const void *buf, size_t len, bool smap);
vmt_paging_config emu_paging_cfg(const emu *e);
vmt_status emu_mmu_check(emu *e, char *why, size_t why_len);
/* Memory accessors of the reusable engine over the MMU context. */
vmt_status emu_engine_read(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed);
vmt_status emu_engine_write(void *ctx, vmt_va va, const void *buf, size_t len);

/* emu_insn.c: instructions the driver performs itself */
int emu_uc_gpr(int cs_reg);   /* Unicorn id of a 64-bit GPR (Capstone id), -1 */
uint64_t emu_rd(emu *e, int reg);
void emu_wr(emu *e, int reg, uint64_t v);
uint64_t emu_msr_get(emu *e, uint32_t index);   /* Unicorn's MSR */
void emu_msr_set(emu *e, uint32_t index, uint64_t value);
void emu_snap_selectors(emu *e);
typedef enum emu_insn_result {
    EMU_IR_DONE,          /* performed, run on */
    EMU_IR_EVENT,         /* performed (or not, for INT3), event filled */
    EMU_IR_STOP,          /* e->stop filled */
} emu_insn_result;
emu_insn_result emu_insn_special(emu *e, vmt_event *ev);

/* emu_exceptions.c: privilege levels, exception/interrupt delivery, SYSCALL */
/* Find where Unicorn keeps the privilege level in its saved context. */
vmt_status emu_cpl_init(emu *e, char *why, size_t why_len);
/* Switch Unicorn's privilege level (writing CS never changes it); cs64:
 * the code segment is 64-bit. */
void emu_set_cpl(emu *e, unsigned cpl, bool cs64);
/* Deliver an exception through the guest IDT with return address ret_rip
 * (#DF when that fails, triple fault when #DF fails); false (and e->stop
 * filled) when the guest cannot take it. */
bool emu_deliver_exception(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip);
/* INT n / external interrupt: soft = INT n (gate DPL checked). */
bool emu_deliver_interrupt(emu *e, uint8_t vector, uint64_t ret_rip, bool soft);
/* SYSCALL / SYSENTER at rip (len bytes), per the SDM. */
bool emu_do_syscall(emu *e, uint64_t rip, uint32_t len);
bool emu_do_sysenter(emu *e, uint64_t rip, uint32_t len);
void emu_serial_flush(emu *e);
uint64_t emu_hwbp_dr7(const emu *e);
/* Load what the engine changes: GPRs, rip, rflags, fs/gs base; only those
 * that differ from `before` (what emu_regs_read_engine gave). */
void emu_regs_write_engine(emu *e, const vmt_regs *before, const vmt_regs *r);
void emu_regs_read_engine(emu *e, vmt_regs *r); /* only what the engine uses (see emu_regs_write_engine) */
/* Pick up selectors the guest loaded natively (iretq, far jumps, mov). */
void emu_sync_selectors(emu *e);
/* For UC_ERR_INSN_INVALID: true when the bytes at rip are not a valid
 * instruction (#UD for the guest); else msg names the instruction. */
bool emu_insn_is_undefined(emu *e, uint64_t rip, char *msg, size_t msg_len);
/* The length of the INT1/ICEBP (F1, with any prefixes) at rip, 0 if it is
 * another instruction. Unicorn stops at F1 without a code hook call. */
uint32_t emu_insn_icebp_len(emu *e, uint64_t rip);
uint64_t emu_rip(emu *e);
void emu_set_rip(emu *e, uint64_t rip);

/* emu_msr.c: MSRs and the virtual clock */
typedef enum emu_msr_result {
    EMU_MSR_OK,
    EMU_MSR_GP,           /* #GP for the guest */
    EMU_MSR_UNSUPPORTED,  /* valid, but the driver cannot do it (leave long mode) */
    EMU_MSR_SHUTDOWN,     /* the bus stopped the machine */
    EMU_MSR_BUS_ERROR,    /* the bus failed (e->bus_error) */
} emu_msr_result;
void emu_clock_init(emu *e, const vmt_clock_config *c);
emu_msr_result emu_msr_access(emu *e, uint32_t index, bool is_write, uint64_t *value);
uint64_t emu_now_ns(const emu *e);
uint64_t emu_tsc_now(const emu *e);
void emu_tsc_set(emu *e, uint64_t tsc);

/* emu_irq.c: external interrupts, HLT, deadlines */
typedef enum emu_hlt_result { EMU_HLT_WOKE, EMU_HLT_STOP } emu_hlt_result;
/* At an instruction boundary: advance the bus, deliver what is pending;
 * false when the guest cannot take it (e->stop filled). */
bool emu_irq_poll(emu *e);
/* The guest touched the bus: check for interrupts at the next boundary. */
void emu_irq_after_bus(emu *e);
/* The guest executed HLT (rip after it). */
emu_hlt_result emu_irq_hlt(emu *e, uint64_t rip_after);

/* emu_mmu.c: the record's PCID side */
typedef enum emu_inval {
    EMU_INVAL_ADDR,       /* (pcid, va) non-global */
    EMU_INVAL_ADDR_GLOBAL,/* (pcid, va) and the global translation of va (INVLPG) */
    EMU_INVAL_PCID,       /* every non-global translation of pcid */
    EMU_INVAL_NON_GLOBAL, /* every non-global translation */
} emu_inval;
/* Drop what `what` names from the record; returns how many went. Unicorn's
 * TLB is flushed before the next run when any did (flush_unicorn). */
uint32_t emu_tlb_invalidate(emu *e, emu_inval what, uint16_t pcid, uint64_t va_page, bool flush_unicorn);
/* The recorded translation the current context (PCID, CR3 root) uses for
 * va_page, or NULL: the current PCID's (walked from the current root), else
 * a global one. */
const emu_tlb_entry *emu_tlb_current(const emu *e, uint64_t va_page);
void emu_tlb_drop_slot(emu *e, uint32_t slot); /* the last slot moves into it */
void emu_code_cache_reset(emu *e);             /* the code hook's page cache */
/* CR3 changed (or was rewritten): Unicorn forgets its TLB. */
void emu_tlb_cr3_switched(emu *e);
/* Invariant checks of the tags and of the record's coherence with the
 * guest tables (part of emu_mmu_check). */
vmt_status emu_tlb_check_tags(const emu *e, char *why, size_t why_len);

/* emu_pcid.c */
static inline uint16_t emu_pcid(const emu *e)
{
    return (e->cr4 & EMU_CR4_PCIDE) ? (uint16_t)(e->cr3 & 0xfff) : 0;
}
/* Leaves 1 and 7.0 as Unicorn's model reports them (a scratch engine). */
vmt_status emu_probe_cpuid(int model, uint32_t leaf1[4], uint32_t leaf7[4], uint32_t *max_leaf);
/* Read Unicorn's CPUID leaves and offer PCID/INVPCID when opt asks. */
vmt_status emu_pcid_init(emu *e, const vmt_emu_options *opt, char *why, size_t why_len);
/* MOV to CR3 of `v` (bit 63 included): false = #GP (reserved bits); else
 * *stored is the value CR3 keeps and the record is invalidated as the SDM
 * says (PCID-aware). */
bool emu_cr3_write(emu *e, uint64_t v, uint64_t *stored);
/* The instruction at rip is INVPCID (Unicorn ends a run there as invalid). */
bool emu_insn_is_invpcid(emu *e, uint64_t rip);
/* Perform the INVPCID at e->special_rip. */
emu_insn_result emu_do_invpcid(emu *e, cs_insn *in);
/* The code hook is in front of INVLPG (bytes p, size): drop the record's
 * translations of its address (current PCID + global); Unicorn then runs
 * the instruction (its own TLB drops the page; CPL checked natively). */
void emu_invlpg_seen(emu *e, uint64_t rip, const uint8_t *p, uint32_t size);

/* emu_cr4.c: CR4 as the presented CPU defines it, and SMAP */
/* Compute cr4_reserved from the CPUID leaves (after emu_pcid_init read them). */
void emu_cr4_init(emu *e);
/* MOV to CR4 of v (from old): true when it must raise #GP (a reserved bit,
 * PCIDE set with CR3[11:0] != 0). */
bool emu_cr4_write_faults(const emu *e, uint64_t old, uint64_t v);
/* set_regs / set_vcpu_state: VMT_OK, or VMT_E_NOTSUP with why naming the
 * CR4 bits this CPU does not have and how to get them. */
vmt_status emu_cr4_supported(const emu *e, uint64_t cr4, char *why, size_t why_len);
/* SMAP (CR4.SMAP): whether a supervisor-mode data access to a user page
 * faults now. Explicit accesses (the instruction's own, CPL0-2): unless
 * EFLAGS.AC; cpl 3 is a user access (false). Implicit ones (IDT, GDT, TSS:
 * supervisor accesses whatever the CPL): at CPL3 always, else unless AC. */
bool emu_smap_explicit(const emu *e, uint8_t cpl);
bool emu_smap_implicit(const emu *e, uint8_t cpl);
/* The model's name ("qemu64", "broadwell", ...). */
const char *emu_cpu_model_name(int model);

/* emu_state.c: VCPU_STATE and DIRTY_LOG */
vmt_status emu_op_get_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s);
vmt_status emu_op_set_vcpu_state(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s);
vmt_status emu_op_dirty_log(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear);
void emu_dirty_mark(emu *e, vmt_gfn frame);
/* The x87/MMX/SSE(/AVX high halves) state in FXSAVE layout, from and to
 * Unicorn (the engine's vmt_emulate_full works on it). */
void emu_fpu_read(emu *e, vmt_fpu_state *f);
void emu_fpu_write(emu *e, const vmt_fpu_state *f);
bool emu_dirty_test(const emu *e, vmt_gfn frame); /* frames past RAM: always */

/* emu_respond.c: responses and injections */
/* Perform the instruction at RIP with the reusable engine in `view` with
 * `grant` rights on grant_va (UINT64_MAX: every page); false (nothing
 * changed but A bits) when the main CPU has to step it. */
bool emu_engine_one(emu *e, vmt_view view, vmt_access grant, uint64_t grant_va);
/* One silent step of the main CPU in `view` (restored after). */
vmt_status emu_begin_internal_step(emu *e, vmt_view view);

/* emu_cpu.c */
vmt_status emu_cpu_init(emu *e);
void emu_end_step(emu *e);
/* Route guest-physical [base, base + size) to the bus as MMIO. */
vmt_status emu_mmio_map(emu *e, uint64_t base, uint64_t size);
vmt_status emu_regs_read(emu *e, vmt_regs *r);
vmt_status emu_regs_write(emu *e, const vmt_regs *r, char *why, size_t why_len);
vmt_status emu_op_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev);
vmt_status emu_op_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp);
vmt_status emu_op_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj);

static inline uint8_t *emu_frame_ptr(const emu *e, vmt_gfn frame)
{
    return e->mem + (size_t)frame * EMU_PAGE;
}
static inline uint64_t emu_total_frames(const emu *e)
{
    return e->ram_frames + e->extra_frames;
}

#endif
