/*
 * drivers/emu/emu_insn.c — what the emulator driver performs itself:
 * registers (the guest-visible CR0/CR2/CR3/CR4/EFER are virtual: Unicorn
 * runs with paging off), the instructions the code hook stops in front of
 * (INT3, port I/O, mov to/from CRn, rdmsr/wrmsr of EFER, syscall family),
 * serial output, and exception delivery through the guest's IDT.
 *
 * Design: the code hook only classifies opcode bytes; the instruction is
 * decoded here with Capstone and performed against the virtual state, then
 * RIP moves past it. Exception delivery builds the 64-bit interrupt frame
 * exactly as the CPU does (16-byte aligned stack, SS, RSP, RFLAGS, CS, RIP,
 * error code; IF cleared for interrupt gates, TF/RF/NT cleared) through the
 * driver's MMU. A failure while delivering (no IDT entry, unwritable stack,
 * IST) stops the guest as a triple fault with a message that says why.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

static const struct {
    int cs_reg;
    int uc_reg;
} gpr_map[] = {
    { X86_REG_RAX, UC_X86_REG_RAX }, { X86_REG_RBX, UC_X86_REG_RBX }, { X86_REG_RCX, UC_X86_REG_RCX },
    { X86_REG_RDX, UC_X86_REG_RDX }, { X86_REG_RSI, UC_X86_REG_RSI }, { X86_REG_RDI, UC_X86_REG_RDI },
    { X86_REG_RBP, UC_X86_REG_RBP }, { X86_REG_RSP, UC_X86_REG_RSP }, { X86_REG_R8, UC_X86_REG_R8 },
    { X86_REG_R9, UC_X86_REG_R9 },   { X86_REG_R10, UC_X86_REG_R10 }, { X86_REG_R11, UC_X86_REG_R11 },
    { X86_REG_R12, UC_X86_REG_R12 }, { X86_REG_R13, UC_X86_REG_R13 }, { X86_REG_R14, UC_X86_REG_R14 },
    { X86_REG_R15, UC_X86_REG_R15 },
};

int emu_uc_gpr(int cs_reg)
{
    for (size_t i = 0; i < sizeof gpr_map / sizeof gpr_map[0]; i++)
        if (gpr_map[i].cs_reg == cs_reg)
            return gpr_map[i].uc_reg;
    return -1;
}

uint64_t emu_rd(emu *e, int reg)
{
    uint64_t v = 0;
    uc_reg_read(e->uc, reg, &v);
    return v;
}

void emu_wr(emu *e, int reg, uint64_t v)
{
    e->regs_from_event = false;
    uc_reg_write(e->uc, reg, &v);
}

uint64_t emu_rip(emu *e) { return emu_rd(e, UC_X86_REG_RIP); }
void emu_set_rip(emu *e, uint64_t rip) { emu_wr(e, UC_X86_REG_RIP, rip); }

uint64_t emu_msr_get(emu *e, uint32_t index)
{
    uc_x86_msr m = { index, 0 };
    uc_reg_read(e->uc, UC_X86_REG_MSR, &m);
    return m.value;
}

void emu_msr_set(emu *e, uint32_t index, uint64_t value)
{
    uc_x86_msr m = { index, value };
    e->regs_from_event = false; /* FS/GS base */
    uc_reg_write(e->uc, UC_X86_REG_MSR, &m);
}

static const int sel_ids[6] = { UC_X86_REG_CS, UC_X86_REG_SS, UC_X86_REG_DS,
                                UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS };

void emu_sync_selectors(emu *e)
{
    for (int i = 0; i < 6; i++) {
        uint16_t v = (uint16_t)emu_rd(e, sel_ids[i]);
        if (v != e->sel_snap[i]) {
            e->sel[i] = v;
            e->sel_snap[i] = v;
        }
    }
}

/* After the driver set sel[]: remember Unicorn's values to detect changes. */
void emu_snap_selectors(emu *e)
{
    for (int i = 0; i < 6; i++)
        e->sel_snap[i] = (uint16_t)emu_rd(e, sel_ids[i]);
}

/* The registers the reusable engine uses, read and written in one batch:
 * the 16 GPRs (vmt_regs order), rip, rflags, fs_base, gs_base. */
enum { ENGINE_NREGS = 20 };
static const int engine_reg_ids[ENGINE_NREGS] = {
    UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RBP,
    UC_X86_REG_RSP, UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11, UC_X86_REG_R12, UC_X86_REG_R13,
    UC_X86_REG_R14, UC_X86_REG_R15, UC_X86_REG_RIP, UC_X86_REG_RFLAGS, UC_X86_REG_FS_BASE, UC_X86_REG_GS_BASE,
};

void emu_regs_read_engine(emu *e, vmt_regs *r)
{
    uint64_t v[ENGINE_NREGS] = { 0 };
    void *p[ENGINE_NREGS];
    for (int i = 0; i < ENGINE_NREGS; i++)
        p[i] = &v[i];
    uc_reg_read_batch(e->uc, (int *)engine_reg_ids, p, ENGINE_NREGS);
    memcpy(&r->rax, v, 16 * sizeof v[0]);
    r->rip = v[16];
    r->rflags = v[17];
    r->fs_base = v[18];
    r->gs_base = v[19];
}

/* Every register an event carries, in one Unicorn batch (each separate
 * uc_reg_read call costs its own entry and exit): the engine's registers,
 * the selectors (synced as emu_sync_selectors does), KERNEL_GS_BASE, GDTR
 * and IDTR. */
vmt_status emu_regs_read(emu *e, vmt_regs *r)
{
    memset(r, 0, sizeof *r);
    enum { NSEL = 6, N = ENGINE_NREGS + NSEL + 3 };
    uint64_t v[ENGINE_NREGS + NSEL] = { 0 };
    uc_x86_msr kgs = { 0xc0000102, 0 };
    uc_x86_mmr gdtr, idtr;
    memset(&gdtr, 0, sizeof gdtr);
    memset(&idtr, 0, sizeof idtr);
    int ids[N];
    void *p[N];
    for (int i = 0; i < ENGINE_NREGS + NSEL; i++) {
        ids[i] = i < ENGINE_NREGS ? engine_reg_ids[i] : sel_ids[i - ENGINE_NREGS];
        p[i] = &v[i];
    }
    ids[N - 3] = UC_X86_REG_MSR;
    p[N - 3] = &kgs;
    ids[N - 2] = UC_X86_REG_GDTR;
    p[N - 2] = &gdtr;
    ids[N - 1] = UC_X86_REG_IDTR;
    p[N - 1] = &idtr;
    uc_reg_read_batch(e->uc, ids, p, N);
    for (int i = 0; i < NSEL; i++) {
        uint16_t s = (uint16_t)v[ENGINE_NREGS + i];
        if (s != e->sel_snap[i]) {
            e->sel[i] = s;
            e->sel_snap[i] = s;
        }
    }
    memcpy(&r->rax, v, 16 * sizeof v[0]);
    r->rip = v[16];
    r->rflags = v[17];
    r->fs_base = v[18];
    r->gs_base = v[19];
    r->cr0 = e->cr0;
    r->cr2 = e->cr2;
    r->cr3 = e->cr3;
    r->cr4 = e->cr4;
    r->efer = e->efer;
    r->kernel_gs_base = kgs.value;
    r->gdtr_base = gdtr.base;
    r->gdtr_limit = (uint16_t)gdtr.limit;
    r->idtr_base = idtr.base;
    r->idtr_limit = (uint16_t)idtr.limit;
    r->cs = e->sel[0];
    r->ss = e->sel[1];
    r->ds = e->sel[2];
    r->es = e->sel[3];
    r->fs = e->sel[4];
    r->gs = e->sel[5];
    r->dr0 = e->dr[0];
    r->dr1 = e->dr[1];
    r->dr2 = e->dr[2];
    r->dr3 = e->dr[3];
    r->dr6 = e->dr[4];
    r->dr7 = e->dr[5];
    return VMT_OK;
}

/* DR7 enable bits (L0..L3, execute, 1 byte) of the hw_breakpoint state. */
uint64_t emu_hwbp_dr7(const emu *e)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        if (e->hwbp_mask >> i & 1)
            v |= 1ull << (2 * i);
    return v;
}

/* One instruction changes a few registers: only those are written (each
 * Unicorn register write goes through its big per-register switch). */
void emu_regs_write_engine(emu *e, const vmt_regs *before, const vmt_regs *r)
{
    uint64_t old[ENGINE_NREGS], v[ENGINE_NREGS];
    memcpy(old, &before->rax, 16 * sizeof old[0]);
    old[16] = before->rip;
    old[17] = before->rflags | 2;
    old[18] = before->fs_base;
    old[19] = before->gs_base;
    memcpy(v, &r->rax, 16 * sizeof v[0]);
    v[16] = r->rip;
    v[17] = r->rflags | 2;
    v[18] = r->fs_base;
    v[19] = r->gs_base;
    int ids[ENGINE_NREGS];
    void *p[ENGINE_NREGS];
    int n = 0;
    for (int i = 0; i < ENGINE_NREGS; i++) {
        if (v[i] == old[i])
            continue;
        ids[n] = engine_reg_ids[i];
        p[n++] = &v[i];
    }
    e->regs_from_event = false;
    if (n)
        uc_reg_write_batch(e->uc, ids, p, n);
}

/* What the emulator can run: checked for set_regs and images. */
static vmt_status regs_supported(const emu *e, const vmt_regs *r, char *why, size_t why_len)
{
    if ((r->cr0 & (VMT_CR0_PG | VMT_CR0_PE)) != (VMT_CR0_PG | VMT_CR0_PE) || !(r->cr4 & VMT_CR4_PAE) ||
        !(r->efer & VMT_EFER_LME)) {
        snprintf(why, why_len,
                 "the emulator runs 64-bit guests with paging on only (cr0 0x%" PRIx64 ", cr4 0x%" PRIx64
                 ", efer 0x%" PRIx64 ")",
                 r->cr0, r->cr4, r->efer);
        return VMT_E_NOTSUP;
    }
    vmt_status cst = emu_cr4_supported(e, r->cr4, why, why_len);
    if (cst)
        return cst;
    if ((r->cs & 3) != 0 && (r->cs & 3) != 3) {
        snprintf(why, why_len, "CS 0x%x is CPL%u: the emulator runs CPL0 and CPL3 code", r->cs, r->cs & 3);
        return VMT_E_NOTSUP;
    }
    const uint64_t drs[4] = { r->dr0, r->dr1, r->dr2, r->dr3 };
    bool same = (r->dr7 & 0xff) == emu_hwbp_dr7(e);
    for (unsigned i = 0; i < 4 && same; i++)
        same = !(e->hwbp_mask >> i & 1) || drs[i] == e->hwbp_va[i];
    if (!same) {
        snprintf(why, why_len, "debug registers are changed with the hw_breakpoint op, not with set_regs "
                               "(DR7 0x%" PRIx64 ")", r->dr7);
        return VMT_E_NOTSUP;
    }
    return VMT_OK;
}

vmt_status emu_regs_write(emu *e, const vmt_regs *r, char *why, size_t why_len)
{
    vmt_status st = regs_supported(e, r, why, why_len);
    if (st)
        return st;
    static const int gprs[] = { UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
                                UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,
                                UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15 };
    const uint64_t *src = &r->rax;
    for (size_t i = 0; i < 16; i++)
        emu_wr(e, gprs[i], src[i]);
    emu_wr(e, UC_X86_REG_RIP, r->rip);
    emu_wr(e, UC_X86_REG_RFLAGS, r->rflags | 2);
    if ((r->cs & 3) != (emu_rd(e, UC_X86_REG_CS) & 3) || (r->cs & 3) != (e->sel[0] & 3))
        emu_set_cpl(e, r->cs & 3, true);
    /* in 64-bit mode Unicorn writes only the selector of these */
    emu_wr(e, UC_X86_REG_CS, r->cs);
    emu_wr(e, UC_X86_REG_SS, r->ss);
    emu_wr(e, UC_X86_REG_DS, r->ds);
    emu_wr(e, UC_X86_REG_ES, r->es);
    emu_wr(e, UC_X86_REG_FS_BASE, r->fs_base);
    emu_wr(e, UC_X86_REG_GS_BASE, r->gs_base);
    /* Unicorn's paging stays off (the fill hook translates); the other
     * CR0/CR4 bits and EFER act natively (FPU/SSE, SYSRET) */
    emu_wr(e, UC_X86_REG_CR0, (r->cr0 & ~VMT_CR0_PG) | VMT_CR0_PE);
    emu_wr(e, UC_X86_REG_CR4, r->cr4 & ~EMU_CR4_PCIDE);
    emu_msr_set(e, 0xc0000080, r->efer | VMT_EFER_LMA);
    emu_msr_set(e, 0xc0000102, r->kernel_gs_base);
    uc_x86_mmr m;
    memset(&m, 0, sizeof m);
    m.base = r->gdtr_base;
    m.limit = r->gdtr_limit;
    uc_reg_write(e->uc, UC_X86_REG_GDTR, &m);
    m.base = r->idtr_base;
    m.limit = r->idtr_limit;
    uc_reg_write(e->uc, UC_X86_REG_IDTR, &m);
    bool paging_changed = r->cr3 != e->cr3 || r->cr0 != e->cr0 || r->cr4 != e->cr4 ||
                          (r->efer & VMT_EFER_NXE) != (e->efer & VMT_EFER_NXE) || (r->cs & 3) != (e->sel[0] & 3);
    e->cr0 = r->cr0;
    e->cr2 = r->cr2;
    e->cr3 = r->cr3;
    e->cr4 = r->cr4;
    e->efer = r->efer | VMT_EFER_LMA;
    e->sel[0] = r->cs;
    e->sel[1] = r->ss;
    e->sel[2] = r->ds;
    e->sel[3] = r->es;
    e->sel[4] = r->fs;
    e->sel[5] = r->gs;
    emu_snap_selectors(e);
    e->dr[0] = r->dr0;
    e->dr[1] = r->dr1;
    e->dr[2] = r->dr2;
    e->dr[3] = r->dr3;
    e->dr[4] = r->dr6;
    e->dr[5] = r->dr7;
    if (r->rip != e->hwbp_suppress_rip)
        e->hwbp_suppress = false;
    if (paging_changed)
        emu_tlb_flush(e);
    return VMT_OK;
}

static void stop_with(emu *e, vmt_stop_reason reason, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void stop_with(emu *e, vmt_stop_reason reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->stop.reason = reason;
    vsnprintf(e->stop.message, sizeof e->stop.message, fmt, ap);
    va_end(ap);
}

void emu_serial_flush(emu *e)
{
    if (!e->serial_len)
        return;
    e->serial_line[e->serial_len] = 0;
    if (e->serial)
        e->serial(e->serial_ctx, e->serial_line);
    e->serial_len = 0;
}

static void serial_put(emu *e, uint8_t c)
{
    if (c == '\n') {
        e->serial_line[e->serial_len] = 0;
        if (e->serial)
            e->serial(e->serial_ctx, e->serial_line);
        e->serial_len = 0;
        return;
    }
    if (c == '\r')
        return;
    e->serial_line[e->serial_len++] = (char)c;
    if (e->serial_len == sizeof e->serial_line - 1)
        emu_serial_flush(e);
}

/* Decode the instruction at the special RIP with Capstone. */
static cs_insn *decode(emu *e, uint64_t rip)
{
    uint8_t bytes[16];
    size_t got = 0;
    while (got < 15) {
        if (emu_va_read(e, rip + got, bytes + got, 1))
            break;
        got++;
    }
    cs_insn *insn = NULL;
    if (!got || cs_disasm(e->cs, bytes, got, rip, 1, &insn) != 1)
        return NULL;
    return insn;
}

static emu_insn_result do_io(emu *e, cs_insn *in, vmt_event *ev)
{
    cs_x86 *x = &in->detail->x86;
    bool is_out = in->id == X86_INS_OUT;
    uint16_t port = 0;
    uint8_t size = 1;
    for (unsigned i = 0; i < x->op_count; i++) {
        cs_x86_op *op = &x->operands[i];
        if (op->type == X86_OP_IMM)
            port = (uint16_t)op->imm;
        else if (op->type == X86_OP_REG && op->reg == X86_REG_DX)
            port = (uint16_t)emu_rd(e, UC_X86_REG_RDX);
        else if (op->type == X86_OP_REG)
            size = op->size;
    }
    uint64_t rax = emu_rd(e, UC_X86_REG_RAX);
    uint32_t mask = size == 4 ? 0xffffffffu : size == 2 ? 0xffffu : 0xffu;
    if (e->bus.ops && (is_out ? e->bus.ops->pio_write != NULL : e->bus.ops->pio_read != NULL)) {
        uint32_t v = 0;
        vmt_status st = is_out ? e->bus.ops->pio_write(e->bus.ctx, 0, port, size, (uint32_t)rax & mask)
                               : e->bus.ops->pio_read(e->bus.ctx, 0, port, size, &v);
        emu_irq_after_bus(e);
        if (st == VMT_OK) {
            if (!is_out) {
                uint64_t nv = size == 4 ? (v & mask) : (rax & ~(uint64_t)mask) | (v & mask);
                emu_wr(e, UC_X86_REG_RAX, nv);
            }
            emu_set_rip(e, in->address + in->size);
            e->icount++;
            return EMU_IR_DONE;
        }
        if (st == VMT_E_STOPPED || st != VMT_E_NOTFOUND) {
            stop_with(e, st == VMT_E_STOPPED ? VMT_STOP_SHUTDOWN : VMT_STOP_DRIVER_ERROR,
                      "port 0x%x at rip 0x%" PRIx64 ": %s", port, in->address,
                      e->bus.ops->stop_reason ? e->bus.ops->stop_reason(e->bus.ctx) : vmt_strerror(st));
            return EMU_IR_STOP;
        }
    }
    emu_set_rip(e, in->address + in->size);
    e->icount++;
    if (port >= VMT_PORT_SERIAL && port < VMT_PORT_SERIAL + 8) {
        if (is_out && port == VMT_PORT_SERIAL)
            serial_put(e, (uint8_t)rax);
        if (!is_out) {
            uint64_t v = port == VMT_PORT_SERIAL + 5 ? 0x60 : 0; /* LSR: transmitter empty */
            emu_wr(e, UC_X86_REG_RAX, (rax & ~(uint64_t)mask) | v);
        }
        return EMU_IR_DONE;
    }
    if (!e->monitor_io) {
        if (!is_out)
            emu_wr(e, UC_X86_REG_RAX, (rax & ~(uint64_t)mask) | mask);
        return EMU_IR_DONE;
    }
    ev->kind = VMT_EVENT_IO;
    ev->u.io.port = port;
    ev->u.io.size = size;
    ev->u.io.is_write = is_out;
    ev->u.io.value = is_out ? (uint32_t)(rax & mask) : 0;
    return EMU_IR_EVENT;
}

static emu_insn_result do_cr(emu *e, cs_insn *in, vmt_event *ev)
{
    cs_x86 *x = &in->detail->x86;
    if (x->op_count != 2 || x->operands[0].type != X86_OP_REG || x->operands[1].type != X86_OP_REG) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "unsupported control-register instruction at rip 0x%" PRIx64 ": %s %s",
                  in->address, in->mnemonic, in->op_str);
        return EMU_IR_STOP;
    }
    int dst = x->operands[0].reg, src = x->operands[1].reg;
    bool to_cr = dst >= X86_REG_CR0 && dst <= X86_REG_CR15;
    int cr = to_cr ? dst - X86_REG_CR0 : src - X86_REG_CR0;
    int gpr = emu_uc_gpr(to_cr ? src : dst);
    if (cr < 0 || cr > 8 || gpr < 0) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "unsupported control-register access at rip 0x%" PRIx64 ": %s %s",
                  in->address, in->mnemonic, in->op_str);
        return EMU_IR_STOP;
    }
    uint64_t *slot = cr == 0 ? &e->cr0 : cr == 2 ? &e->cr2 : cr == 3 ? &e->cr3 : cr == 4 ? &e->cr4 : NULL;
    if (!to_cr) {
        emu_wr(e, gpr, slot ? *slot : 0);
        emu_set_rip(e, in->address + in->size);
        e->icount++;
        return EMU_IR_DONE;
    }
    uint64_t v = emu_rd(e, gpr);
    if (cr == 0 && (v & (VMT_CR0_PG | VMT_CR0_PE)) != (VMT_CR0_PG | VMT_CR0_PE)) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "mov cr0 at rip 0x%" PRIx64 " turns paging off: not supported", in->address);
        return EMU_IR_STOP;
    }
    if (cr == 4 && (((v ^ e->cr4) & VMT_CR4_LA57) || !(v & VMT_CR4_PAE) || emu_cr4_write_faults(e, e->cr4, v)))
        return emu_deliver_exception(e, 13, true, 0, in->address) ? EMU_IR_DONE : EMU_IR_STOP;
    uint64_t old = slot ? *slot : 0;
    if (cr == 3) {
        /* PCID-aware invalidation; bit 63 ("no flush") is not stored */
        if (!emu_cr3_write(e, v, &v))
            return emu_deliver_exception(e, 13, true, 0, in->address) ? EMU_IR_DONE : EMU_IR_STOP;
    } else if (slot) {
        *slot = v;
    }
    emu_set_rip(e, in->address + in->size);
    e->icount++;
    if (cr == 0) {
        emu_wr(e, UC_X86_REG_CR0, (v & ~VMT_CR0_PG) | VMT_CR0_PE);
        if ((old ^ v) & (VMT_CR0_WP | VMT_CR0_PG | VMT_CR0_PE))
            emu_tlb_flush(e);
    } else if (cr == 4) {
        emu_wr(e, UC_X86_REG_CR4, v & ~EMU_CR4_PCIDE);
        if (old != v)
            emu_tlb_flush(e);
    }
    if (e->monitor_cr && (cr == 0 || cr == 3 || cr == 4)) {
        ev->kind = VMT_EVENT_CR_WRITE;
        ev->u.cr.cr = (uint8_t)cr;
        ev->u.cr.old_value = old;
        ev->u.cr.new_value = v;
        return EMU_IR_EVENT;
    }
    return EMU_IR_DONE;
}

static emu_insn_result do_msr(emu *e, cs_insn *in)
{
    uint32_t index = (uint32_t)emu_rd(e, UC_X86_REG_RCX);
    bool is_write = in->id == X86_INS_WRMSR;
    uint64_t v = is_write ? (emu_rd(e, UC_X86_REG_RDX) << 32) | (uint32_t)emu_rd(e, UC_X86_REG_RAX) : 0;
    switch (emu_msr_access(e, index, is_write, &v)) {
    case EMU_MSR_OK:
        break;
    case EMU_MSR_GP:
        return emu_deliver_exception(e, 13, true, 0, in->address) ? EMU_IR_DONE : EMU_IR_STOP;
    case EMU_MSR_UNSUPPORTED:
        stop_with(e, VMT_STOP_GUEST_ERROR, "wrmsr 0x%x (0x%" PRIx64 ") at rip 0x%" PRIx64 " leaves long mode: not supported",
                  index, v, in->address);
        return EMU_IR_STOP;
    case EMU_MSR_SHUTDOWN:
        stop_with(e, VMT_STOP_SHUTDOWN, "msr 0x%x at rip 0x%" PRIx64 ": %s", index, in->address,
                  e->bus.ops->stop_reason ? e->bus.ops->stop_reason(e->bus.ctx) : "the bus stopped the machine");
        return EMU_IR_STOP;
    case EMU_MSR_BUS_ERROR:
        e->bus_error = VMT_OK;
        stop_with(e, VMT_STOP_DRIVER_ERROR, "msr 0x%x at rip 0x%" PRIx64 ": the bus failed: %s", index, in->address,
                  e->bus.ops->stop_reason ? e->bus.ops->stop_reason(e->bus.ctx) : "no reason given");
        return EMU_IR_STOP;
    }
    if (!is_write) {
        emu_wr(e, UC_X86_REG_RAX, (uint32_t)v);
        emu_wr(e, UC_X86_REG_RDX, v >> 32);
    }
    emu_set_rip(e, in->address + in->size);
    e->icount++;
    return EMU_IR_DONE;
}

emu_insn_result emu_insn_special(emu *e, vmt_event *ev)
{
    uint64_t rip = e->special_rip;
    if (e->special == EMU_SP_INT3) {
        ev->kind = VMT_EVENT_BREAKPOINT;
        uint8_t b = 0;
        vmt_pa gpa = 0;
        bool have_gpa;
        uint64_t off = rip & (EMU_PAGE - 1);
        if (e->code_host && e->code_va == rip - off && e->code_gfn != UINT64_MAX) {
            /* the code hook's page (from the record): no walk */
            b = e->code_host[off];
            gpa = (e->code_gfn << 12) | off;
            have_gpa = true;
        } else {
            (void)emu_va_read(e, rip, &b, 1);
            have_gpa = emu_mmu_gpa(e, rip, &gpa) == VMT_OK;
        }
        ev->u.bp.insn_len = b == 0xcc ? 1 : 2;
        ev->u.bp.gva = rip;
        if (have_gpa) { /* the guest's gfn, before the view */
            ev->u.bp.gpa = gpa;
            ev->u.bp.gfn = gpa >> 12;
        }
        return EMU_IR_EVENT;
    }
    if (e->special == EMU_SP_HWBP) {
        ev->kind = VMT_EVENT_HW_BREAKPOINT;
        ev->u.hwbp.index = e->hwbp_hit;
        ev->u.hwbp.address = rip;
        e->hwbp_suppress = true; /* resuming here does not fire again (RF) */
        e->hwbp_suppress_rip = rip;
        return EMU_IR_EVENT;
    }
    if (e->special == EMU_SP_SYSCALL || e->special == EMU_SP_INTN) {
        uint8_t b[3] = { 0, 0, 0 };
        (void)emu_va_read(e, rip, b, e->special_size < 3 ? e->special_size : 3);
        e->icount++;
        bool ok;
        if (e->special == EMU_SP_INTN)
            ok = emu_deliver_interrupt(e, b[e->special_size - 1], rip + e->special_size, true);
        else if (b[e->special_size - 1] == 0x05)
            ok = emu_do_syscall(e, rip, e->special_size);
        else
            ok = emu_do_sysenter(e, rip, e->special_size);
        return ok ? EMU_IR_DONE : EMU_IR_STOP;
    }
    if (e->special == EMU_SP_TSC) {
        uint64_t tsc = emu_tsc_now(e);
        uint8_t b[3] = { 0, 0, 0 };
        (void)emu_va_read(e, rip, b, e->special_size < 3 ? e->special_size : 3);
        if ((emu_rd(e, UC_X86_REG_CR4) & 4) && (e->sel[0] & 3)) /* CR4.TSD */
            return emu_deliver_exception(e, 13, true, 0, rip) ? EMU_IR_DONE : EMU_IR_STOP;
        emu_wr(e, UC_X86_REG_RAX, (uint32_t)tsc);
        emu_wr(e, UC_X86_REG_RDX, tsc >> 32);
        if (e->special_size >= 3 && b[e->special_size - 1] == 0xf9)
            emu_wr(e, UC_X86_REG_RCX, (uint32_t)emu_msr_get(e, 0xc0000103));
        emu_set_rip(e, rip + e->special_size);
        e->icount++;
        return EMU_IR_DONE;
    }
    if (e->special == EMU_SP_STRING_IO) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "string port I/O (ins/outs) at rip 0x%" PRIx64 " is not supported", rip);
        return EMU_IR_STOP;
    }
    cs_insn *in = decode(e, rip);
    if (!in) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "cannot decode the instruction at rip 0x%" PRIx64, rip);
        return EMU_IR_STOP;
    }
    emu_insn_result r;
    unsigned cpl = e->sel[0] & 3;
    unsigned iopl = (unsigned)(emu_rd(e, UC_X86_REG_RFLAGS) >> 12) & 3;
    bool privileged = in->id == X86_INS_MOV || in->id == X86_INS_RDMSR || in->id == X86_INS_WRMSR;
    bool io = in->id == X86_INS_IN || in->id == X86_INS_OUT;
    if ((privileged && cpl) || (io && cpl > iopl)) {
        cs_free(in, 1);
        return emu_deliver_exception(e, 13, true, 0, rip) ? EMU_IR_DONE : EMU_IR_STOP;
    }
    switch (in->id) {
    case X86_INS_IN:
    case X86_INS_OUT:
        r = do_io(e, in, ev);
        break;
    case X86_INS_MOV:
        r = do_cr(e, in, ev);
        break;
    case X86_INS_RDMSR:
    case X86_INS_WRMSR:
        r = do_msr(e, in);
        break;
    case X86_INS_INVPCID:
        r = emu_do_invpcid(e, in);
        break;
    default:
        stop_with(e, VMT_STOP_GUEST_ERROR, "unsupported instruction at rip 0x%" PRIx64 ": %s %s", rip, in->mnemonic,
                  in->op_str);
        r = EMU_IR_STOP;
    }
    cs_free(in, 1);
    return r;
}

uint32_t emu_insn_icebp_len(emu *e, uint64_t rip)
{
    cs_insn *in = decode(e, rip);
    if (!in)
        return 0;
    uint32_t len = in->id == X86_INS_INT1 ? in->size : 0;
    cs_free(in, 1);
    return len;
}

bool emu_insn_is_undefined(emu *e, uint64_t rip, char *msg, size_t msg_len)
{
    cs_insn *in = decode(e, rip);
    if (!in)
        return true;
    /* Unicorn refuses STAC/CLAC exactly when the SDM says #UD: without
     * CPUID.SMAP (the model's) or at CPL > 0 */
    bool ud = in->id == X86_INS_UD2 || in->id == X86_INS_UD0 || in->id == X86_INS_INVALID ||
              in->id == X86_INS_STAC || in->id == X86_INS_CLAC;
    if (!ud)
        snprintf(msg, msg_len, "unsupported instruction at rip 0x%" PRIx64 ": %s %s (Unicorn cannot run it)",
                 rip, in->mnemonic, in->op_str);
    cs_free(in, 1);
    return ud;
}
