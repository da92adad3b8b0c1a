/*
 * drivers/emu/emu_cpu.c — Unicorn hooks, the run loop, events and responses.
 *
 * Design: wait_event() runs uc_emu_start() in a loop. Hooks never stop the
 * CPU in a broken way: memory-protection / unmapped hooks record the fault
 * and return false, which (with the no-op memory hook installed) aborts the
 * faulting instruction with RIP on it and no side effects; the code hook
 * (one per instruction) calls uc_emu_stop() BEFORE an instruction the driver
 * must perform itself, before the instruction after a step, at the
 * instruction limit, and after a page-table write done by a hook; the
 * interrupt hook stops for exceptions Unicorn raises. After uc_emu_start
 * returns, exactly one of these is handled and the loop either runs again
 * (internal exit) or reports one event.
 *
 * Steps: a STEP response runs one instruction and reports SINGLESTEP (it
 * ends when the instruction retired: a restart of the same instruction by
 * Unicorn after a store into its own translation does not count); the
 * other responses that must perform a trapped access (CONTINUE, EMULATE,
 * FAST_STEP, DENY) run one instruction with the MMU context changed (right
 * granted / emulate_view / step_view / access skipped) and then restore it
 * silently. Events inside a step end the step first.
 *
 * Determinism: nothing depends on wall-clock time except the time limit and
 * wait_event's timeout, neither of which changes the event sequence.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "drivers/emu/emu_priv.h"

#define EMU_UNTIL 0x8000000000000000ull /* non-canonical: never reached */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void stop_cpu(emu *e)
{
    e->hook_stop = true;
    uc_emu_stop(e->uc);
}

/* First-byte classes: 1 = a prefix, 2 = an opcode the driver may perform
 * or watch (INT3/INT n, port I/O, 0x0f escapes, the IF-window opcodes),
 * 0 = anything else (the common case: no further look). */
#define P1 1
#define SP 2
static const uint8_t first_byte[256] = {
    [0x26] = P1, [0x2e] = P1, [0x36] = P1, [0x3e] = P1,
    [0x40] = P1, [0x41] = P1, [0x42] = P1, [0x43] = P1, [0x44] = P1, [0x45] = P1, [0x46] = P1, [0x47] = P1,
    [0x48] = P1, [0x49] = P1, [0x4a] = P1, [0x4b] = P1, [0x4c] = P1, [0x4d] = P1, [0x4e] = P1, [0x4f] = P1,
    [0x64] = P1, [0x65] = P1, [0x66] = P1, [0x67] = P1, [0xf0] = P1, [0xf2] = P1, [0xf3] = P1,
    [0x0f] = SP, [0x6c] = SP, [0x6d] = SP, [0x6e] = SP, [0x6f] = SP, [0x9d] = SP, [0xcc] = SP, [0xcd] = SP,
    [0xcf] = SP, [0xe4] = SP, [0xe5] = SP, [0xe6] = SP, [0xe7] = SP, [0xec] = SP, [0xed] = SP, [0xee] = SP,
    [0xef] = SP, [0xfb] = SP,
};
#undef P1
#undef SP

/* Second bytes after 0x0f that classify() or window_opens() look at: CR
 * moves, rdmsr/wrmsr, sysret/sysexit, rdtsc/rdtscp (0f 01 f9), invlpg
 * (0f 01 /7), and sysret/sysexit again for the interrupt window. The other 0f opcodes
 * (jcc, movzx, cmov, setcc, nopl, SSE, ...) need no look. */
static const uint8_t special_0f[256] = {
    [0x01] = 1, [0x05] = 1, [0x07] = 1, [0x20] = 1, [0x22] = 1,
    [0x30] = 1, [0x31] = 1, [0x32] = 1, [0x34] = 1, [0x35] = 1,
};

static inline bool is_prefix(uint8_t b) { return first_byte[b] == 1; }

/* The instruction needs no look by classify() / window_opens(): after its
 * prefixes, an opcode of class 0, or 0x0f with a second byte not listed
 * in special_0f (classify would answer EMU_SP_NONE and window_opens do
 * nothing). */
static inline bool plain_insn(const uint8_t *p, uint32_t size)
{
    uint32_t i = 0;
    while (i < size && is_prefix(p[i]))
        i++;
    if (i >= size)
        return false;
    if (first_byte[p[i]] == 0)
        return true;
    return p[i] == 0x0f && i + 1 < size && !special_0f[p[i + 1]];
}

/* Opcode classification only (Capstone decodes the few matches later). */
static enum emu_special classify(const uint8_t *p, uint32_t size)
{
    uint32_t i = 0;
    while (i < size && is_prefix(p[i]))
        i++;
    if (i >= size)
        return EMU_SP_NONE;
    uint8_t op = p[i];
    if (op == 0xcc || (op == 0xcd && i + 1 < size && p[i + 1] == 3))
        return EMU_SP_INT3;
    if (op == 0xcd)
        return EMU_SP_INTN;
    if ((op >= 0xe4 && op <= 0xe7) || (op >= 0xec && op <= 0xef))
        return EMU_SP_IO;
    if (op >= 0x6c && op <= 0x6f)
        return EMU_SP_STRING_IO;
    if (op == 0x0f && i + 1 < size) {
        uint8_t op2 = p[i + 1];
        if (op2 == 0x20 || op2 == 0x22)
            return EMU_SP_CR;
        if (op2 == 0x30 || op2 == 0x32)
            return EMU_SP_MSR;
        if (op2 == 0x05 || op2 == 0x34) /* sysret / sysexit: Unicorn runs them */
            return EMU_SP_SYSCALL;
        if (op2 == 0x31 || (op2 == 0x01 && i + 2 < size && p[i + 2] == 0xf9))
            return EMU_SP_TSC;
        if (op2 == 0x01 && i + 2 < size && (p[i + 2] & 0x38) == 0x38 && (p[i + 2] >> 6) != 3)
            return EMU_SP_INVLPG;
    }
    return EMU_SP_NONE;
}

/* An interrupt waits for IF: after STI (and its shadow), POPF, IRET,
 * SYSRET or SYSEXIT, look again. IRET also ends an NMI handler. */
static void window_opens(emu *e, const uint8_t *p, uint32_t size)
{
    uint32_t i = 0;
    while (i < size && is_prefix(p[i]))
        i++;
    if (i >= size)
        return;
    bool iret = p[i] == 0xcf;
    bool opens = iret || p[i] == 0xfb || p[i] == 0x9d ||
                 (p[i] == 0x0f && i + 1 < size && (p[i + 1] == 0x07 || p[i + 1] == 0x35));
    if (iret)
        e->nmi_blocked = false;
    if (opens && e->irq_waiting && e->irq_check_at > e->icount + 2)
        e->irq_check_at = e->icount + 2;
}

static const uint8_t *code_bytes(emu *e, uint64_t addr, uint32_t size, uint8_t *tmp)
{
    uint64_t page = addr & ~(uint64_t)(EMU_PAGE - 1);
    uint64_t off = addr - page;
    if (off + size > EMU_PAGE || size > 16) {
        if (size > 16 || uc_mem_read(e->uc, addr, tmp, size) != UC_ERR_OK)
            return NULL;
        return tmp;
    }
    if (page != e->code_va) {
        const emu_tlb_entry *t = emu_tlb_current(e, page);
        if (t && !t->is_mmio && !t->is_sink) {
            e->code_host = emu_frame_ptr(e, t->backing);
            e->code_gfn = t->gfn;
        } else {
            /* translated code can run after a flush without a new fill
             * (jumps chained inside a page): translate here */
            uint8_t *h;
            size_t left;
            if (emu_mmu_host_ptr(e, page, false, false, &h, &left) != VMT_OK)
                return NULL;
            e->code_host = h;
            e->code_gfn = UINT64_MAX;
        }
        e->code_va = page;
    }
    return e->code_host + off;
}

/* The general registers and flags (what a step compares to tell a retired
 * instruction from a restarted one). */
static void step_gprs(emu *e, uint64_t out[17])
{
    int ids[17] = { UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX, UC_X86_REG_RSP,
                    UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_R8,  UC_X86_REG_R9,
                    UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14,
                    UC_X86_REG_R15, UC_X86_REG_RFLAGS };
    void *ptrs[17];
    for (int i = 0; i < 17; i++) {
        out[i] = 0;
        ptrs[i] = &out[i];
    }
    uc_reg_read_batch(e->uc, ids, ptrs, 17);
}

/* A step ends when its instruction RETIRED, not at the second code-hook
 * call: an instruction that stores into its own translation (SMC) is
 * aborted and run again by Unicorn, so the hook sees it twice, at the same
 * rip with the same registers. That second call is taken as the restart
 * (once); any other second call (another rip, changed registers: a rep
 * iteration, or a jump to itself seen a third time) ends the step. */
static bool step_retired(emu *e, uint64_t addr)
{
    if (addr != e->step_rip || e->step_rerun)
        return true;
    uint64_t now[17];
    step_gprs(e, now);
    if (memcmp(now, e->step_gpr, sizeof now) != 0)
        return true;
    e->step_rerun = true;
    return false;
}

/* Every decision of the code hook (hook_code takes the common case). */
static __attribute__((noinline)) void hook_code_slow(emu *e, uint64_t addr, uint32_t size)
{
    if (e->step != EMU_STEP_NONE) {
        if (e->step_started) {
            if (!step_retired(e, addr))
                return; /* the restart: its first start was counted already */
            e->step_done = true;
            stop_cpu(e);
            return;
        }
        e->step_started = true;
        e->step_rerun = false;
        e->step_rip = addr;
        step_gprs(e, e->step_gpr);
    }
    if (e->flush_asap) {
        stop_cpu(e);
        return;
    }
    if (e->insn_limit && e->icount >= e->insn_limit) {
        e->insn_limit_hit = true;
        stop_cpu(e);
        return;
    }
    if (e->icount >= e->irq_check_at) {
        stop_cpu(e); /* a device deadline or a possible interrupt */
        return;
    }
    if (e->deadline_ns && (e->icount & 0xffff) == 0 && now_ns() >= e->deadline_ns) {
        e->deadline_hit = true;
        stop_cpu(e);
        return;
    }
    if (e->hwbp_mask) {
        if (e->hwbp_suppress && addr != e->hwbp_suppress_rip)
            e->hwbp_suppress = false;
        for (uint8_t i = 0; i < 4 && !e->hwbp_suppress; i++) {
            if ((e->hwbp_mask >> i & 1) && e->hwbp_va[i] == addr) {
                e->hwbp_hit = i;
                e->special = EMU_SP_HWBP;
                e->special_rip = addr;
                e->special_size = size;
                stop_cpu(e);
                return;
            }
        }
    }
    uint8_t tmp[16];
    const uint8_t *p = code_bytes(e, addr, size, tmp);
    if (p && first_byte[p[0]] == 0) {
        e->icount++; /* the common case: nothing to perform or watch */
        return;
    }
    enum emu_special sp = p ? classify(p, size) : EMU_SP_NONE;
    if (sp == EMU_SP_INVLPG) { /* Unicorn runs it; the record's side first */
        emu_invlpg_seen(e, addr, p, size);
        sp = EMU_SP_NONE;
    }
    if (p && (e->irq_waiting || e->nmi_blocked))
        window_opens(e, p, size);
    if (sp != EMU_SP_NONE) {
        e->special = sp;
        e->special_rip = addr;
        e->special_size = size;
        stop_cpu(e);
        return;
    }
    e->icount++;
}

/* Before every guest instruction (a quarter of the time Linux runs): the
 * common case — no step, no pending flush, no execute breakpoint, no
 * instruction limit / interrupt check / deadline poll due, the instruction
 * inside the cached code page and plain (plain_insn: REX and other
 * prefixes, two-byte opcodes included) — only counts it, in a frame small
 * enough to need no saved registers.
 * Anything else takes hook_code_slow, which decides exactly as before. */
static void hook_code(uc_engine *uc, uint64_t addr, uint32_t size, void *user)
{
    (void)uc;
    emu *e = user;
    uint64_t n = e->icount;
    uint64_t off = addr & (EMU_PAGE - 1);
    if (e->step == EMU_STEP_NONE && !e->flush_asap && !e->hwbp_mask && n < e->irq_check_at &&
        (!e->insn_limit || n < e->insn_limit) && (!e->deadline_ns || (n & 0xffff) != 0) &&
        addr - off == e->code_va && off + size <= EMU_PAGE && plain_insn(e->code_host + off, size)) {
        e->icount = n + 1;
        return;
    }
    hook_code_slow(e, addr, size);
}

static bool hook_fault(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *user)
{
    (void)uc;
    vmt_access kind = type == UC_MEM_WRITE_UNMAPPED ? VMT_ACCESS_W
                      : type == UC_MEM_FETCH_UNMAPPED ? VMT_ACCESS_X : VMT_ACCESS_R;
    return emu_mmu_trap(user, kind, addr, size, value);
}

static bool hook_tlb_fill(uc_engine *uc, uint64_t vaddr, uc_mem_type type, uc_tlb_entry *out, void *user)
{
    (void)uc;
    vmt_access kind = type == UC_MEM_WRITE ? VMT_ACCESS_W : type == UC_MEM_FETCH ? VMT_ACCESS_X : VMT_ACCESS_R;
    uint64_t pa = 0;
    uint32_t perms = 0;
    if (!emu_mmu_fill(user, vaddr, kind, &pa, &perms))
        return false;
    out->paddr = pa;
    out->perms = (uc_prot)perms;
    return true;
}

/* MMIO: guest-physical addresses outside RAM go to the bus; without a bus
 * (or when it says "not mine") reads see all ones and writes are dropped. */
static uint64_t hook_mmio_read(uc_engine *uc, uint64_t offset, unsigned size, void *user)
{
    (void)uc;
    emu_mmio_region *r = user;
    emu *e = r->e;
    uint64_t v = size >= 8 ? UINT64_MAX : (1ull << (8 * size)) - 1;
    if (e->bus.ops && e->bus.ops->mmio_read) {
        uint64_t got = 0;
        vmt_status st = e->bus.ops->mmio_read(e->bus.ctx, 0, r->base + offset, size, &got);
        emu_irq_after_bus(e);
        if (st == VMT_OK)
            v = got;
        else if (st != VMT_E_NOTFOUND)
            e->bus_error = st;
    }
    return v;
}

static void hook_mmio_write(uc_engine *uc, uint64_t offset, unsigned size, uint64_t value, void *user)
{
    (void)uc;
    emu_mmio_region *r = user;
    emu *e = r->e;
    if (e->bus.ops && e->bus.ops->mmio_write) {
        vmt_status st = e->bus.ops->mmio_write(e->bus.ctx, 0, r->base + offset, size, value);
        emu_irq_after_bus(e);
        if (st != VMT_OK && st != VMT_E_NOTFOUND)
            e->bus_error = st;
    }
}

vmt_status emu_mmio_map(emu *e, uint64_t base, uint64_t size)
{
    if (e->nmmio == sizeof e->mmio / sizeof e->mmio[0])
        return VMT_E_NOMEM;
    emu_mmio_region *r = &e->mmio[e->nmmio];
    r->e = e;
    r->base = base;
    if (uc_mmio_map(e->uc, base, size, hook_mmio_read, r, hook_mmio_write, r) != UC_ERR_OK)
        return VMT_E_DRIVER;
    e->nmmio++;
    return VMT_OK;
}

static void hook_intr(uc_engine *uc, uint32_t intno, void *user)
{
    (void)uc;
    emu *e = user;
    if (e->intr_no < 0)
        e->intr_no = (int)intno;
    stop_cpu(e);
}

static uint32_t hook_in(uc_engine *uc, uint32_t port, int size, void *user)
{
    (void)uc, (void)port, (void)size, (void)user;
    return 0xffffffffu; /* not reached: the code hook performs port I/O */
}

static void hook_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user)
{
    (void)uc, (void)port, (void)size, (void)value, (void)user;
}

vmt_status emu_cpu_init(emu *e)
{
    uc_err err;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        err = uc_hook_add(e->uc, &e->hooks[e->nhooks], __VA_ARGS__);                               \
        if (err != UC_ERR_OK)                                                                      \
            return VMT_E_DRIVER;                                                                   \
        e->nhooks++;                                                                               \
    } while (0)
    ADD(UC_HOOK_CODE, (void *)hook_code, e, 1, 0);
    ADD(UC_HOOK_MEM_UNMAPPED, (void *)hook_fault, e, 1, 0);
    ADD(UC_HOOK_TLB_FILL, (void *)hook_tlb_fill, e, 1, 0);
    /* no UC_HOOK_MEM_READ/WRITE: any such hook sends every guest load and
     * store through Unicorn's slow path (see emu_mmu.c on self-modifying
     * code); the code hook keeps RIP exact for the trap and fault hooks */
    ADD(UC_HOOK_INTR, (void *)hook_intr, e, 1, 0);
    ADD(UC_HOOK_INSN, (void *)hook_in, e, 1, 0, UC_X86_INS_IN);
    ADD(UC_HOOK_INSN, (void *)hook_out, e, 1, 0, UC_X86_INS_OUT);
#undef ADD
    /* exits mode with no exits: uc_emu_start never stops at an address
     * (an `until` address would make Unicorn translate it at every start) */
    if (uc_ctl_exits_enable(e->uc) != UC_ERR_OK)
        return VMT_E_DRIVER;
    e->intr_no = -1;
    e->ptw_va = UINT64_MAX;
    e->irq_check_at = UINT64_MAX;
    e->mmu_view = 0;
    e->monitor_io = true;
    return VMT_OK;
}

/* ---- steps ---- */

void emu_end_step(emu *e)
{
    bool changed = e->grant_kinds || e->deny_active || (e->step_restore_view && e->mmu_view != e->cur_view);
    e->step = EMU_STEP_NONE;
    e->step_started = false;
    e->step_done = false;
    e->grant_kinds = 0;
    e->grant_va = 0;
    e->deny_active = false;
    if (e->ptw_va != UINT64_MAX) {
        /* a page-table write was stepped: what it changed is unknown */
        e->ptw_va = UINT64_MAX;
        emu_tlb_flush(e);
    }
    if (e->step_restore_view) {
        e->cur_view = e->step_return_view;
        e->mmu_view = e->cur_view;
        e->step_restore_view = false;
    }
    if (changed)
        emu_tlb_revalidate(e);
}

/* ---- the run loop ---- */

static void fill_common(emu *e, vmt_event *ev)
{
    ev->vcpu = 0;
    ev->view = e->cur_view;
    ev->seq = ++e->seq;
    emu_regs_read(e, &ev->regs);
}

static vmt_status report(emu *e, vmt_event *ev)
{
    if (e->step != EMU_STEP_NONE && ev->kind != VMT_EVENT_SINGLESTEP)
        emu_end_step(e);
    fill_common(e, ev);
    e->stats.events[ev->kind]++;
    if (ev->kind == VMT_EVENT_STOPPED) {
        emu_serial_flush(e);
        e->stopped = true;
        e->stop = ev->u.stop;
    } else {
        e->awaiting_response = true;
        e->last = *ev;
        e->regs_from_event = true;
    }
    e->ns_event_at = now_ns();
    return VMT_OK;
}

static vmt_status report_stop(emu *e, vmt_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = VMT_EVENT_STOPPED;
    ev->u.stop = e->stop;
    return report(e, ev);
}

/* An exception ends an internal step (the stepped instruction did not
 * complete; the guest's handler runs in the vCPU's own view). A STEP
 * response completes with the delivery: SINGLESTEP at the handler's first
 * instruction (what a monitor-trap-flag step reports). */
static bool deliver(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip)
{
    if (e->step == EMU_STEP_INTERNAL)
        emu_end_step(e);
    return emu_deliver_exception(e, vector, has_err, err, ret_rip);
}

/* After a delivery: a pending STEP reports now. */
static bool step_after_delivery(emu *e, vmt_event *ev)
{
    if (e->step != EMU_STEP_USER)
        return false;
    emu_end_step(e);
    ev->kind = VMT_EVENT_SINGLESTEP;
    report(e, ev);
    return true;
}

static bool vector_has_error(unsigned v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21;
}


/* A permitted guest write into a page-table frame (aborted before it wrote):
 * performed by the engine, which invalidates exactly what it changed, or
 * by a one-instruction step with the write allowed, after which every
 * translation is dropped. 1: an event was reported; 0: run on; -1: stop. */
static int pt_write(emu *e, vmt_event *ev)
{
    e->tstats.pt_write_faults++;
    if (emu_engine_one(e, e->mmu_view, 0, 0)) {
        if (e->step == EMU_STEP_USER) {
            emu_end_step(e);
            ev->kind = VMT_EVENT_SINGLESTEP;
            report(e, ev);
            return 1;
        }
        if (e->step == EMU_STEP_INTERNAL)
            emu_end_step(e);
        return 0;
    }
    e->ptw_va = e->fault.va & ~(uint64_t)(EMU_PAGE - 1);
    if (e->step == EMU_STEP_NONE)
        emu_begin_internal_step(e, e->mmu_view);
    emu_tlb_flush(e);
    return 0;
}

vmt_status emu_op_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev)
{
    emu *e = vmt_driver_impl(d);
    if (e->stopped) {
        memset(ev, 0, sizeof *ev);
        ev->kind = VMT_EVENT_STOPPED;
        ev->u.stop = e->stop;
        fill_common(e, ev);
        return VMT_OK;
    }
    if (e->awaiting_response)
        return vmt_driver_fail(d, VMT_E_BUSY, "event %" PRIu64 " has not been answered", e->last.seq);
    if (e->paused) {
        if (timeout_ms < 0)
            return vmt_driver_fail(d, VMT_E_BUSY, "the VM is paused and no timeout was given; resume it first");
        return vmt_driver_fail(d, VMT_E_TIMEOUT, "the VM is paused: no event");
    }
    if (e->ns_event_at) {
        e->stats.ns_monitor += now_ns() - e->ns_event_at;
        e->ns_event_at = 0;
    }
    uint64_t start = now_ns();
    uint64_t wait_deadline = timeout_ms >= 0 ? start + (uint64_t)timeout_ms * 1000000ull : 0;
    uint64_t limit_deadline = 0;
    if (e->time_limit_s > 0) {
        double left = e->time_limit_s * 1e9 - (double)e->ns_guest_total;
        limit_deadline = start + (left > 0 ? (uint64_t)left : 0);
    }
    uint64_t last_fault_va = UINT64_MAX, last_fault_icount = 0;
    unsigned same_fault = 0;
    memset(ev, 0, sizeof *ev);
    e->regs_from_event = false; /* the guest runs */
    for (;;) {
        e->fault.pending = false;
        e->special = EMU_SP_NONE;
        e->intr_no = -1;
        e->hook_stop = false;
        e->step_started = false;
        e->step_done = false;
        e->insn_limit_hit = false;
        e->deadline_hit = false;
        e->deadline_ns = wait_deadline;
        if (limit_deadline && (!e->deadline_ns || limit_deadline < e->deadline_ns))
            e->deadline_ns = limit_deadline;
        if (e->insn_limit && e->icount >= e->insn_limit) {
            e->stop.reason = VMT_STOP_INSN_LIMIT;
            snprintf(e->stop.message, sizeof e->stop.message, "instruction limit of %" PRIu64 " reached",
                     e->insn_limit);
            return report_stop(e, ev);
        }
        if (e->halted && e->step == EMU_STEP_NONE && emu_irq_hlt(e, emu_rip(e)) == EMU_HLT_STOP)
            return report_stop(e, ev); /* restored in HLT: sleep first */
        if (!emu_irq_poll(e))
            return report_stop(e, ev);
        if (emu_trap_slots_low(e))
            emu_tlb_flush(e);
        emu_tlb_apply_flush(e);
        uint64_t rip = emu_rip(e);
        uint64_t t0 = now_ns();
        uc_err err = uc_emu_start(e->uc, rip, EMU_UNTIL, 0, 0);
        uint64_t t1 = now_ns();
        e->ns_guest_total += t1 - t0;
        e->stats.ns_guest += t1 - t0;
        e->stats.exits++;
        e->stats.instructions = e->icount;
        emu_sync_selectors(e);
        if (err == UC_ERR_INSN_INVALID && emu_insn_is_invpcid(e, emu_rip(e))) {
            /* no Unicorn model has INVPCID: it ends the run as invalid
             * (counted by the code hook); the driver performs it */
            e->special = EMU_SP_INVPCID;
            e->special_rip = emu_rip(e);
            if (e->icount)
                e->icount--;
            err = UC_ERR_OK;
        }
        if (e->flush_asap) {
            e->flush_asap = false;
            emu_tlb_flush(e);
        }
        if (e->bus_error) {
            vmt_status bst = e->bus_error;
            e->bus_error = VMT_OK;
            e->stop.reason = VMT_STOP_DRIVER_ERROR;
            snprintf(e->stop.message, sizeof e->stop.message, "the bus failed (%s) at rip 0x%" PRIx64 ": %s",
                     vmt_strerror(bst), emu_rip(e),
                     e->bus.ops && e->bus.ops->stop_reason ? e->bus.ops->stop_reason(e->bus.ctx) : "no reason given");
            return report_stop(e, ev);
        }
        if (e->fault.pending) {
            if (e->fault.counted && e->icount)
                e->icount--; /* the aborted instruction was counted when it started */
            if (e->fault.kind == VMT_ACCESS_X) {
                uint64_t r0 = emu_rip(e);
                if ((r0 & ~(uint64_t)(EMU_PAGE - 1)) == e->fault.va)
                    e->fault.va = r0;
            }
            if (e->icount != last_fault_icount)
                same_fault = 0; /* progress since the last fault */
            if (e->fault.va == last_fault_va && ++same_fault > 8) {
                e->stop.reason = VMT_STOP_DRIVER_ERROR;
                snprintf(e->stop.message, sizeof e->stop.message,
                         "the MMU cannot resolve a %s fault at va 0x%" PRIx64 " (rip 0x%" PRIx64 ")",
                         e->fault.kind == VMT_ACCESS_W ? "write" : e->fault.kind == VMT_ACCESS_R ? "read" : "fetch",
                         e->fault.va, emu_rip(e));
                return report_stop(e, ev);
            }
            if (e->fault.va != last_fault_va)
                same_fault = 0;
            last_fault_va = e->fault.va;
            last_fault_icount = e->icount;
            uint32_t pf_err = 0;
            emu_fault_result r = emu_mmu_fault(e, &e->fault, ev, &pf_err);
            /* the trap slot's translation must go unless it still answers
             * right: a memory event (the view forbids the access) keeps
             * trapping the same way until the MMU context changes, which
             * flushes (emu_tlb_revalidate); anything else (a retry, a
             * page-table write, #PF, #GP) changes what the access does */
            if (e->fault.kind != VMT_ACCESS_X && (r != EMU_FR_EVENT || emu_trap_slots_low(e)))
                emu_tlb_flush(e);
            if (r == EMU_FR_RETRY) {
                e->stats.internal_exits++;
                continue;
            }
            if (r == EMU_FR_EVENT) {
                ev->kind = VMT_EVENT_MEM_ACCESS;
                return report(e, ev);
            }
            if (r == EMU_FR_STOP)
                return report_stop(e, ev);
            e->stats.internal_exits++;
            if (r == EMU_FR_PT_WRITE) {
                int done = pt_write(e, ev);
                if (done < 0)
                    return report_stop(e, ev);
                if (done > 0)
                    return VMT_OK;
                continue;
            }
            if (r == EMU_FR_PAGE_FAULT) {
                e->cr2 = e->fault.va;
                e->tstats.pf_injected++;
                if (!deliver(e, 14, true, pf_err, emu_rip(e)))
                    return report_stop(e, ev);
            } else if (!deliver(e, 13, true, 0, emu_rip(e))) {
                return report_stop(e, ev);
            }
            if (step_after_delivery(e, ev))
                return VMT_OK;
            continue;
        }
        last_fault_va = UINT64_MAX;
        if (e->special != EMU_SP_NONE) {
            emu_insn_result r = emu_insn_special(e, ev);
            if (r == EMU_IR_STOP)
                return report_stop(e, ev);
            if (r == EMU_IR_EVENT)
                return report(e, ev);
            if (e->step == EMU_STEP_USER) {
                ev->kind = VMT_EVENT_SINGLESTEP;
                emu_end_step(e);
                return report(e, ev);
            }
            if (e->step == EMU_STEP_INTERNAL)
                emu_end_step(e);
            e->stats.internal_exits++;
            continue;
        }
        if (e->intr_no >= 0) {
            unsigned v = (unsigned)e->intr_no;
            if (v != 1 && v != 3 && v != 4 && e->icount)
                e->icount--; /* a fault: the instruction did not complete */
            e->stats.internal_exits++;
            if (!deliver(e, (uint8_t)v, vector_has_error(v), 0, emu_rip(e)))
                return report_stop(e, ev);
            if (step_after_delivery(e, ev))
                return VMT_OK;
            continue;
        }
        if (e->step_done) {
            if (e->step == EMU_STEP_USER) {
                ev->kind = VMT_EVENT_SINGLESTEP;
                emu_end_step(e);
                return report(e, ev);
            }
            emu_end_step(e);
            e->stats.internal_exits++;
            continue;
        }
        if (e->insn_limit_hit) {
            e->stop.reason = VMT_STOP_INSN_LIMIT;
            snprintf(e->stop.message, sizeof e->stop.message, "instruction limit of %" PRIu64 " reached at rip 0x%" PRIx64,
                     e->insn_limit, emu_rip(e));
            return report_stop(e, ev);
        }
        if (e->deadline_hit || (err == UC_ERR_OK && !e->hook_stop && e->deadline_ns && t1 >= e->deadline_ns)) {
            if (limit_deadline && t1 >= limit_deadline) {
                e->stop.reason = VMT_STOP_TIME_LIMIT;
                snprintf(e->stop.message, sizeof e->stop.message, "time limit of %.3f s reached at rip 0x%" PRIx64,
                         e->time_limit_s, emu_rip(e));
                return report_stop(e, ev);
            }
            if (wait_deadline && t1 >= wait_deadline)
                return VMT_E_TIMEOUT;
            continue;
        }
        if (err == UC_ERR_OK && !e->hook_stop) {
            uint64_t r2 = emu_rip(e);
            uint8_t b = 0;
            if (emu_va_read(e, r2 - 1, &b, 1) == VMT_OK && b == 0xf4) {
                if (e->step != EMU_STEP_NONE)
                    emu_end_step(e);
                if (emu_irq_hlt(e, r2) == EMU_HLT_STOP)
                    return report_stop(e, ev);
                e->stats.internal_exits++;
                continue;
            }
            e->stats.internal_exits++;
            continue;
        }
        if (err == UC_ERR_INSN_INVALID) {
            /* an invalid opcode is #UD for the guest; a valid one Unicorn
             * cannot run stops the guest with its name */
            uint64_t r2 = emu_rip(e);
            uint32_t icebp = emu_insn_icebp_len(e, r2);
            if (icebp) {
                /* INT1 / ICEBP (SDM vol. 2 "INT n/INTO/INT3/INT1", vol. 3
                 * "Debug Exception (#DB)"): it retires and raises a
                 * trap-class #DB, delivered like a hardware exception (no
                 * gate DPL check) with the rip after it; DR6 keeps what the
                 * guest had (no B0-B3/BD/BS/BT bit names a cause). Unicorn
                 * ends the run at it without calling the code hook, so it
                 * was not counted yet. */
                e->icount++;
                e->stats.internal_exits++;
                if (!deliver(e, 1, false, 0, r2 + icebp))
                    return report_stop(e, ev);
                if (step_after_delivery(e, ev))
                    return VMT_OK;
                continue;
            }
            if (e->icount)
                e->icount--;
            if (!emu_insn_is_undefined(e, r2, ev->u.stop.message, sizeof ev->u.stop.message)) {
                e->stop.reason = VMT_STOP_GUEST_ERROR;
                snprintf(e->stop.message, sizeof e->stop.message, "%s", ev->u.stop.message);
                return report_stop(e, ev);
            }
            e->stats.internal_exits++;
            if (!deliver(e, 6, false, 0, r2))
                return report_stop(e, ev);
            if (step_after_delivery(e, ev))
                return VMT_OK;
            continue;
        }
        if (err != UC_ERR_OK) {
            uint64_t r2 = emu_rip(e);
            e->stop.reason = VMT_STOP_GUEST_ERROR;
            snprintf(e->stop.message, sizeof e->stop.message, "unicorn stopped at rip 0x%" PRIx64 ": %s", r2,
                     uc_strerror(err));
            return report_stop(e, ev);
        }
        e->stats.internal_exits++;
    }
}

