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

static int uc_gpr(int cs_reg)
{
    for (size_t i = 0; i < sizeof gpr_map / sizeof gpr_map[0]; i++)
        if (gpr_map[i].cs_reg == cs_reg)
            return gpr_map[i].uc_reg;
    return -1;
}

static uint64_t rd(emu *e, int reg)
{
    uint64_t v = 0;
    uc_reg_read(e->uc, reg, &v);
    return v;
}

static void wr(emu *e, int reg, uint64_t v) { uc_reg_write(e->uc, reg, &v); }

uint64_t emu_rip(emu *e) { return rd(e, UC_X86_REG_RIP); }
void emu_set_rip(emu *e, uint64_t rip) { wr(e, UC_X86_REG_RIP, rip); }

static uint64_t msr_read(emu *e, uint32_t index)
{
    uc_x86_msr m = { index, 0 };
    uc_reg_read(e->uc, UC_X86_REG_MSR, &m);
    return m.value;
}

static void msr_write(emu *e, uint32_t index, uint64_t value)
{
    uc_x86_msr m = { index, value };
    uc_reg_write(e->uc, UC_X86_REG_MSR, &m);
}

static const int sel_ids[6] = { UC_X86_REG_CS, UC_X86_REG_SS, UC_X86_REG_DS,
                                UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS };

void emu_sync_selectors(emu *e)
{
    for (int i = 0; i < 6; i++) {
        uint16_t v = (uint16_t)rd(e, sel_ids[i]);
        if (v != e->sel_snap[i]) {
            e->sel[i] = v;
            e->sel_snap[i] = v;
        }
    }
}

/* After the driver set sel[]: remember Unicorn's values to detect changes. */
static void snap_selectors(emu *e)
{
    for (int i = 0; i < 6; i++)
        e->sel_snap[i] = (uint16_t)rd(e, sel_ids[i]);
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

vmt_status emu_regs_read(emu *e, vmt_regs *r)
{
    memset(r, 0, sizeof *r);
    emu_sync_selectors(e);
    emu_regs_read_engine(e, r);
    r->cr0 = e->cr0;
    r->cr2 = e->cr2;
    r->cr3 = e->cr3;
    r->cr4 = e->cr4;
    r->efer = e->efer;
    r->kernel_gs_base = msr_read(e, 0xc0000102);
    uc_x86_mmr m;
    memset(&m, 0, sizeof m);
    uc_reg_read(e->uc, UC_X86_REG_GDTR, &m);
    r->gdtr_base = m.base;
    r->gdtr_limit = (uint16_t)m.limit;
    memset(&m, 0, sizeof m);
    uc_reg_read(e->uc, UC_X86_REG_IDTR, &m);
    r->idtr_base = m.base;
    r->idtr_limit = (uint16_t)m.limit;
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

void emu_regs_write_engine(emu *e, const vmt_regs *r)
{
    uint64_t v[ENGINE_NREGS];
    memcpy(v, &r->rax, 16 * sizeof v[0]);
    v[16] = r->rip;
    v[17] = r->rflags | 2;
    v[18] = r->fs_base;
    v[19] = r->gs_base;
    void *p[ENGINE_NREGS];
    for (int i = 0; i < ENGINE_NREGS; i++)
        p[i] = &v[i];
    uc_reg_write_batch(e->uc, (int *)engine_reg_ids, p, ENGINE_NREGS);
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
    if (r->efer & VMT_EFER_SCE) {
        snprintf(why, why_len, "EFER.SCE is set: SYSCALL/SYSRET do not work in Unicorn 2.0.1, "
                               "so the emulator cannot run this guest");
        return VMT_E_NOTSUP;
    }
    if (r->cs & 3) {
        snprintf(why, why_len, "CS 0x%x is CPL%u: the emulator driver runs CPL0 guests only", r->cs, r->cs & 3);
        return VMT_E_NOTSUP;
    }
    if (r->cr4 & VMT_CR4_LA57) {
        snprintf(why, why_len, "CR4.LA57 (5-level paging) is not supported by the emulator driver");
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
        wr(e, gprs[i], src[i]);
    wr(e, UC_X86_REG_RIP, r->rip);
    wr(e, UC_X86_REG_RFLAGS, r->rflags | 2);
    wr(e, UC_X86_REG_FS_BASE, r->fs_base);
    wr(e, UC_X86_REG_GS_BASE, r->gs_base);
    msr_write(e, 0xc0000102, r->kernel_gs_base);
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
    snap_selectors(e);
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

bool emu_deliver_exception(emu *e, uint8_t vector, bool has_err, uint32_t err, uint64_t ret_rip)
{
    uc_x86_mmr idtr;
    memset(&idtr, 0, sizeof idtr);
    uc_reg_read(e->uc, UC_X86_REG_IDTR, &idtr);
    if ((uint64_t)vector * 16 + 15 > idtr.limit) {
        stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": vector beyond the IDT limit 0x%x",
                  vector, ret_rip, idtr.limit);
        return false;
    }
    uint8_t gate[16];
    if (emu_va_read(e, idtr.base + (uint64_t)vector * 16, gate, sizeof gate)) {
        stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": IDT at 0x%" PRIx64 " not readable",
                  vector, ret_rip, idtr.base);
        return false;
    }
    unsigned type = gate[5] & 0xf;
    if (!(gate[5] & 0x80) || (type != 0xe && type != 0xf)) {
        stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": IDT gate not present or not a "
                  "64-bit interrupt/trap gate", vector, ret_rip);
        return false;
    }
    if (gate[4] & 7) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "exception %u at rip 0x%" PRIx64 ": IST stacks are not supported", vector,
                  ret_rip);
        return false;
    }
    uint64_t target = (uint64_t)gate[0] | (uint64_t)gate[1] << 8 | (uint64_t)gate[6] << 16 |
                      (uint64_t)gate[7] << 24 | (uint64_t)gate[8] << 32 | (uint64_t)gate[9] << 40 |
                      (uint64_t)gate[10] << 48 | (uint64_t)gate[11] << 56;
    uint16_t selector = (uint16_t)(gate[2] | gate[3] << 8);
    emu_sync_selectors(e);
    uint64_t rsp = rd(e, UC_X86_REG_RSP);
    uint64_t rflags = rd(e, UC_X86_REG_RFLAGS);
    uint64_t frame[6];
    unsigned n = 0;
    if (has_err)
        frame[n++] = err;
    frame[n++] = ret_rip;
    frame[n++] = e->sel[0];
    frame[n++] = rflags;
    frame[n++] = rsp;
    frame[n++] = e->sel[1];
    /* frame[] is lowest address first */
    uint64_t new_rsp = (rsp & ~(uint64_t)15) - 8ULL * n;
    if (emu_va_write(e, new_rsp, frame, 8ULL * n)) {
        stop_with(e, VMT_STOP_TRIPLE_FAULT, "exception %u at rip 0x%" PRIx64 ": stack at 0x%" PRIx64
                  " is not writable", vector, ret_rip, new_rsp);
        return false;
    }
    rflags &= ~(VMT_RFLAGS_TF | VMT_RFLAGS_RF | (1ULL << 14));
    if (type == 0xe)
        rflags &= ~VMT_RFLAGS_IF;
    wr(e, UC_X86_REG_RSP, new_rsp);
    wr(e, UC_X86_REG_RFLAGS, rflags);
    wr(e, UC_X86_REG_RIP, target);
    e->sel[0] = selector;
    snap_selectors(e);
    return true;
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
            port = (uint16_t)rd(e, UC_X86_REG_RDX);
        else if (op->type == X86_OP_REG)
            size = op->size;
    }
    uint64_t rax = rd(e, UC_X86_REG_RAX);
    uint32_t mask = size == 4 ? 0xffffffffu : size == 2 ? 0xffffu : 0xffu;
    emu_set_rip(e, in->address + in->size);
    e->icount++;
    if (port >= VMT_PORT_SERIAL && port < VMT_PORT_SERIAL + 8) {
        if (is_out && port == VMT_PORT_SERIAL)
            serial_put(e, (uint8_t)rax);
        if (!is_out) {
            uint64_t v = port == VMT_PORT_SERIAL + 5 ? 0x60 : 0; /* LSR: transmitter empty */
            wr(e, UC_X86_REG_RAX, (rax & ~(uint64_t)mask) | v);
        }
        return EMU_IR_DONE;
    }
    if (!e->monitor_io) {
        if (!is_out)
            wr(e, UC_X86_REG_RAX, (rax & ~(uint64_t)mask) | mask);
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
    int gpr = uc_gpr(to_cr ? src : dst);
    if (cr < 0 || cr > 8 || gpr < 0) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "unsupported control-register access at rip 0x%" PRIx64 ": %s %s",
                  in->address, in->mnemonic, in->op_str);
        return EMU_IR_STOP;
    }
    uint64_t *slot = cr == 0 ? &e->cr0 : cr == 2 ? &e->cr2 : cr == 3 ? &e->cr3 : cr == 4 ? &e->cr4 : NULL;
    if (!to_cr) {
        wr(e, gpr, slot ? *slot : 0);
        emu_set_rip(e, in->address + in->size);
        e->icount++;
        return EMU_IR_DONE;
    }
    uint64_t v = rd(e, gpr);
    if (cr == 0 && (v & (VMT_CR0_PG | VMT_CR0_PE)) != (VMT_CR0_PG | VMT_CR0_PE)) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "mov cr0 at rip 0x%" PRIx64 " turns paging off: not supported", in->address);
        return EMU_IR_STOP;
    }
    if (cr == 4 && ((v & VMT_CR4_LA57) || !(v & VMT_CR4_PAE))) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "mov cr4 at rip 0x%" PRIx64 " changes LA57/PAE: not supported", in->address);
        return EMU_IR_STOP;
    }
    uint64_t old = slot ? *slot : 0;
    if (slot)
        *slot = v;
    emu_set_rip(e, in->address + in->size);
    e->icount++;
    if (cr == 0 || cr == 3 || cr == 4)
        emu_tlb_flush(e);
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
    uint32_t index = (uint32_t)rd(e, UC_X86_REG_RCX);
    bool is_write = in->id == X86_INS_WRMSR;
    if (index != 0xc0000080) {
        if (is_write)
            msr_write(e, index, (rd(e, UC_X86_REG_RDX) << 32) | (uint32_t)rd(e, UC_X86_REG_RAX));
        else {
            uint64_t v = msr_read(e, index);
            wr(e, UC_X86_REG_RAX, (uint32_t)v);
            wr(e, UC_X86_REG_RDX, v >> 32);
        }
    } else if (!is_write) {
        wr(e, UC_X86_REG_RAX, (uint32_t)e->efer);
        wr(e, UC_X86_REG_RDX, e->efer >> 32);
    } else {
        uint64_t v = (rd(e, UC_X86_REG_RDX) << 32) | (uint32_t)rd(e, UC_X86_REG_RAX);
        if (v & VMT_EFER_SCE) {
            stop_with(e, VMT_STOP_GUEST_ERROR, "wrmsr EFER.SCE at rip 0x%" PRIx64
                      ": SYSCALL/SYSRET do not work in Unicorn 2.0.1", in->address);
            return EMU_IR_STOP;
        }
        if (!(v & VMT_EFER_LME)) {
            stop_with(e, VMT_STOP_GUEST_ERROR, "wrmsr EFER at rip 0x%" PRIx64 " leaves long mode: not supported",
                      in->address);
            return EMU_IR_STOP;
        }
        if ((v ^ e->efer) & VMT_EFER_NXE)
            emu_tlb_flush(e);
        e->efer = v | VMT_EFER_LMA;
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
        (void)emu_va_read(e, rip, &b, 1);
        ev->u.bp.insn_len = b == 0xcc ? 1 : 2;
        ev->u.bp.gva = rip;
        vmt_pa gpa = 0;
        if (emu_mmu_gpa(e, rip, &gpa) == VMT_OK) { /* the guest's gfn, before the view */
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
    if (e->special == EMU_SP_SYSCALL) {
        stop_with(e, VMT_STOP_GUEST_ERROR, "syscall/sysret/sysenter at rip 0x%" PRIx64
                  ": not supported by Unicorn 2.0.1", rip);
        return EMU_IR_STOP;
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
    default:
        stop_with(e, VMT_STOP_GUEST_ERROR, "unsupported instruction at rip 0x%" PRIx64 ": %s %s", rip, in->mnemonic,
                  in->op_str);
        r = EMU_IR_STOP;
    }
    cs_free(in, 1);
    return r;
}

bool emu_insn_is_undefined(emu *e, uint64_t rip, char *msg, size_t msg_len)
{
    cs_insn *in = decode(e, rip);
    if (!in)
        return true;
    bool ud = in->id == X86_INS_UD2 || in->id == X86_INS_UD0 || in->id == X86_INS_INVALID;
    if (!ud)
        snprintf(msg, msg_len, "unsupported instruction at rip 0x%" PRIx64 ": %s %s (Unicorn 2.0.1 cannot run it)",
                 rip, in->mnemonic, in->op_str);
    cs_free(in, 1);
    return ud;
}
