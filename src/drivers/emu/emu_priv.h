/*
 * drivers/emu/emu_priv.h — internal state of the emulator driver.
 *
 * Split by concern:
 *   emu_driver.c  create/destroy, registers, physical memory, frames, ops
 *   emu_views.c   views: per-gfn backing + rights overrides
 *   emu_mmu.c     the software TLB: guest walk, A/D bits, view resolution,
 *                 Unicorn mappings, page-table write protection, invalidation
 *   emu_cpu.c     Unicorn hooks, the run loop, events, responses, exception
 *                 delivery through the guest IDT, emulated instructions
 *
 * Unicorn 2.0.1 behaviour this driver relies on (probed on this machine,
 * beyond ../shared/platform/unicorn-here.md; the tests would catch a change):
 *  - uc_open(UC_MODE_64) starts in long mode with paging OFF (CR0 0x11,
 *    EFER 0x500): 64-bit code runs with addresses used as-is, so the
 *    driver maps guest-virtual pages itself; upper-half canonical addresses
 *    can be mapped;
 *  - a protection/unmapped hook returning false aborts the instruction
 *    with no side effect and RIP on it, provided a (no-op) MEM_READ/WRITE
 *    hook exists; without it RIP is the start of the translation block;
 *  - returning true from WRITE_PROT does NOT drop the store: Unicorn still
 *    writes (hence the undo list for DENY and writes into no memory);
 *  - uc_ctl_remove_cache must run BEFORE uc_mem_unmap: after the unmap it
 *    finds nothing and stale translated code survives;
 *  - uc_emu_stop from the code hook stops before that instruction; from an
 *    IN/OUT hook it only takes effect at the end of the block, and setting
 *    EFLAGS.TF there does not step (so port I/O is performed by the driver);
 *  - an invalid opcode ends uc_emu_start with UC_ERR_INSN_INVALID (no
 *    interrupt hook call); guest stores into code are picked up (SMC works);
 *  - each uc_mem_map_ptr/unmap costs ~15-25 us with few regions and grows
 *    with their number; uc_mem_protect ~7-10 us.
 *
 * Invariants (vmt_emu_check):
 *  - tlb_index maps va page -> slot for exactly the valid slots;
 *  - a valid entry is mapped in Unicorn at its va with uc_perms, onto
 *    mem + backing*4K (or the void page);
 *  - uc_perms ⊆ (pte rights ∩ view rights ∪ the current one-step grant),
 *    and never contains WRITE when the backing frame is a page-table frame
 *    (pt_refs[backing] > 0) or the PTE's dirty bit is clear;
 *  - pt_refs[f] == number of (valid entry, table level) pairs whose walk
 *    read a table in host frame f.
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
#define EMU_CR4_PCIDE (1ull << 17)
#define EMU_CR4_SMEP (1ull << 20)
#define EMU_CR4_SMAP (1ull << 21)
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
    vmt_access pte_rights;/* R always, W, X from the walk */
    bool dirty;           /* leaf D bit set (W may be mapped) */
    uint8_t ntables;
    vmt_gfn tables[5];    /* host frames of the tables the walk read */
    vmt_gfn table_gfns[5];/* the same tables as guest frames (pre-view) */
    uint16_t entry_off[5];/* byte offset of the entry the walk read in each table */
    uint32_t uc_perms;    /* UC_PROT_* handed to Unicorn */
} emu_tlb_entry;

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
    uc_hook hooks[8];
    unsigned nhooks;

    /* memory: RAM frames then extra frames, one mapping */
    uint8_t *mem;
    size_t mem_bytes;
    uint64_t ram_frames;
    uint64_t extra_frames;
    uint8_t *extra_used;  /* 1 per extra frame: handed out by frame_alloc */
    uint32_t *pt_refs;    /* per host frame */
    uint8_t *sink;        /* 4 KiB at EMU_SINK_PA: DENY-ed writes land here */
    uint8_t maxphyaddr;
    vmt_ram_range *ranges;/* RAM blocks (nranges 0: one block 0..ram) */
    size_t nranges;
    vmt_bus bus;
    emu_mmio_region mmio[16];
    unsigned nmmio;
    vmt_status bus_error;     /* a bus failure inside a hook: stop the run */

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
    uint32_t trap_next;
    uint64_t code_va;         /* 1-entry cache for the code hook */
    const uint8_t *code_host;
    vmt_emu_tlb_stats tstats;
    vmt_emulator *engine;     /* one-instruction responses without a map change */
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
 * bytes left in the page. Sets A (and D when write) bits. */
vmt_status emu_mmu_host_ptr(emu *e, uint64_t va, bool write, uint8_t **host, size_t *left);
/* Guest-physical address of va under the guest's tables (no view). */
vmt_status emu_mmu_gpa(emu *e, uint64_t va, vmt_pa *gpa);
vmt_status emu_va_read(emu *e, uint64_t va, void *buf, size_t len);
vmt_status emu_va_write(emu *e, uint64_t va, const void *buf, size_t len);
vmt_paging_config emu_paging_cfg(const emu *e);
vmt_status emu_mmu_check(emu *e, char *why, size_t why_len);
/* Memory accessors of the reusable engine over the MMU context. */
vmt_status emu_engine_read(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed);
vmt_status emu_engine_write(void *ctx, vmt_va va, const void *buf, size_t len);

/* emu_insn.c: instructions the driver performs itself, exceptions */
typedef enum emu_insn_result {
    EMU_IR_DONE,          /* performed, run on */
    EMU_IR_EVENT,         /* performed (or not, for INT3), event filled */
    EMU_IR_STOP,          /* e->stop filled */
} emu_insn_result;
emu_insn_result emu_insn_special(emu *e, vmt_event *ev);
/* Deliver an exception through the guest IDT with return address ret_rip;
 * false (and e->stop filled) when the guest cannot take it. */
bool emu_deliver_exception(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip);
void emu_serial_flush(emu *e);
uint64_t emu_hwbp_dr7(const emu *e);
/* Load what the engine changes: GPRs, rip, rflags, fs/gs base. */
void emu_regs_write_engine(emu *e, const vmt_regs *r);
void emu_regs_read_engine(emu *e, vmt_regs *r); /* only what the engine uses (see emu_regs_write_engine) */
/* Pick up selectors the guest loaded natively (iretq, far jumps, mov). */
void emu_sync_selectors(emu *e);
/* For UC_ERR_INSN_INVALID: true when the bytes at rip are not a valid
 * instruction (#UD for the guest); else msg names the instruction. */
bool emu_insn_is_undefined(emu *e, uint64_t rip, char *msg, size_t msg_len);
uint64_t emu_rip(emu *e);
void emu_set_rip(emu *e, uint64_t rip);

/* emu_cpu.c */
vmt_status emu_cpu_init(emu *e);
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
