/*
 * emulate/emulate_fast.c — the engine's fast path: one instruction of
 * the kinds a breakpoint usually displaces (a function's first instruction:
 * push r64, mov r64,r64, endbr64/nop, and the load mov r64,[base+disp] a
 * hidden read traps) performed directly, without Unicorn (whose register
 * batches, kept-page refresh and uc_emu_start are most of a hidden hit).
 *
 * Design: Capstone decodes the bytes at a rip once; the decoding is cached
 * with the bytes (EMUL_FAST_SLOTS entries, direct-mapped by rip) and reused
 * only while the bytes read now are the same, so code that changes is
 * decoded again. The instruction is performed only when it is plain: no
 * prefix that changes it, 64-bit operands, TF/RF clear, every access inside
 * one page, canonical addresses, and the page allows the access (rights as
 * mem->read reports them). Anything else — including every case in which
 * the instruction would fault — is NOT_TAKEN and the full engine runs it
 * as before, so its faults, events and results are the full engine's. The
 * effect equals real execution: tests compare it with Unicorn's on random
 * register states for every form.
 */
#include "emulate_fast.h"

#include <string.h>

#define RFLAGS_TF 0x100ull
#define RFLAGS_RF 0x10000ull

static int gpr_index(x86_reg r)
{
    switch (r) {
    case X86_REG_RAX: return 0;
    case X86_REG_RBX: return 1;
    case X86_REG_RCX: return 2;
    case X86_REG_RDX: return 3;
    case X86_REG_RSI: return 4;
    case X86_REG_RDI: return 5;
    case X86_REG_RBP: return 6;
    case X86_REG_RSP: return 7;
    case X86_REG_R8: return 8;
    case X86_REG_R9: return 9;
    case X86_REG_R10: return 10;
    case X86_REG_R11: return 11;
    case X86_REG_R12: return 12;
    case X86_REG_R13: return 13;
    case X86_REG_R14: return 14;
    case X86_REG_R15: return 15;
    default: return -1;
    }
}

/* GPR index of a 64- or 32-bit register, its size in *size. */
static int gpr_sized(x86_reg r, uint8_t *size)
{
    static const x86_reg r32[16] = { X86_REG_EAX,  X86_REG_EBX,  X86_REG_ECX,  X86_REG_EDX,
                                     X86_REG_ESI,  X86_REG_EDI,  X86_REG_EBP,  X86_REG_ESP,
                                     X86_REG_R8D,  X86_REG_R9D,  X86_REG_R10D, X86_REG_R11D,
                                     X86_REG_R12D, X86_REG_R13D, X86_REG_R14D, X86_REG_R15D };
    int i = gpr_index(r);
    *size = 8;
    if (i >= 0)
        return i;
    *size = 4;
    for (i = 0; i < 16; i++)
        if (r32[i] == r)
            return i;
    return -1;
}

/* A memory operand the fast path computes: [base + disp], no index, no
 * segment override; *base -1 for rip-relative. */
static bool plain_mem(const cs_x86_op *o, int8_t *base, int64_t *disp)
{
    if (o->type != X86_OP_MEM || o->mem.segment != X86_REG_INVALID || o->mem.index != X86_REG_INVALID)
        return false;
    int b = o->mem.base == X86_REG_RIP ? -1 : gpr_index(o->mem.base);
    if (b < 0 && o->mem.base != X86_REG_RIP)
        return false;
    *base = (int8_t)b;
    *disp = o->mem.disp;
    return true;
}

static bool canonical(uint64_t va)
{
    uint64_t top = va >> 47;
    return top == 0 || top == 0x1ffff;
}

/* What the instruction in *in is, as a fast form (NONE if it is not one). */
static void classify(const cs_insn *in, emul_fast_entry *e)
{
    const cs_x86 *x = &in->detail->x86;
    e->kind = EMUL_FAST_NONE;
    if (in->id == X86_INS_ENDBR64 || in->id == X86_INS_ENDBR32) {
        e->kind = EMUL_FAST_NOP;
        return;
    }
    /* lock/rep, segment overrides, operand/address size */
    for (int i = 0; i < 4; i++)
        if (x->prefix[i])
            return;
    if (in->id == X86_INS_NOP) {
        e->kind = EMUL_FAST_NOP;
        return;
    }
    if (in->id == X86_INS_PUSH && x->op_count == 1 && x->operands[0].type == X86_OP_REG &&
        x->operands[0].size == 8 && gpr_index(x->operands[0].reg) >= 0) {
        e->kind = EMUL_FAST_PUSH;
        e->src = (int8_t)gpr_index(x->operands[0].reg);
        return;
    }
    if (in->id == X86_INS_POP && x->op_count == 1 && x->operands[0].type == X86_OP_REG &&
        x->operands[0].size == 8 && gpr_index(x->operands[0].reg) >= 0) {
        e->kind = EMUL_FAST_POP;
        e->dst = (int8_t)gpr_index(x->operands[0].reg);
        return;
    }
    if (in->id == X86_INS_RET && x->op_count == 0) {
        e->kind = EMUL_FAST_RET;
        return;
    }
    if (in->id != X86_INS_MOV || x->op_count != 2)
        return;
    const cs_x86_op *d = &x->operands[0], *s = &x->operands[1];
    uint8_t dsz = 0, ssz = 0;
    int dr = d->type == X86_OP_REG ? gpr_sized(d->reg, &dsz) : -1;
    int sr = s->type == X86_OP_REG ? gpr_sized(s->reg, &ssz) : -1;
    if (dr >= 0 && sr >= 0 && dsz == ssz) {
        e->kind = EMUL_FAST_MOV_RR;
    } else if (dr >= 0 && s->size == dsz && plain_mem(s, &e->base, &e->disp)) {
        e->kind = EMUL_FAST_MOV_LOAD;
    } else if (sr >= 0 && d->size == ssz && plain_mem(d, &e->base, &e->disp)) {
        e->kind = EMUL_FAST_MOV_STORE;
    } else {
        return;
    }
    e->dst = (int8_t)dr;
    e->src = (int8_t)sr;
    e->size = dr >= 0 ? dsz : ssz;
}

static unsigned slot_of(uint64_t rip)
{
    return (unsigned)((rip ^ (rip >> 4)) % EMUL_FAST_SLOTS);
}

const char *emul_fast_cache_problem(const emul_fast_cache *fc)
{
    for (unsigned i = 0; i < EMUL_FAST_SLOTS; i++) {
        const emul_fast_entry *e = &fc->slot[i];
        if (!e->len)
            continue;
        if (e->len > EMUL_FAST_MAXLEN || slot_of(e->rip) != i || e->kind > EMUL_FAST_RET)
            return "fast-path entry with a bad length, kind or slot";
        if (e->dst < -1 || e->dst > 15 || e->src < -1 || e->src > 15 || e->base < -1 || e->base > 15)
            return "fast-path entry with a register index out of range";
        bool mov = e->kind == EMUL_FAST_MOV_RR || e->kind == EMUL_FAST_MOV_LOAD || e->kind == EMUL_FAST_MOV_STORE;
        if (mov && e->size != 4 && e->size != 8)
            return "fast-path mov entry with a size other than 4 or 8";
    }
    return NULL;
}

/* The cached decoding of the bytes at rip (decoded now if they changed);
 * NULL when Capstone cannot decode them. */
static const emul_fast_entry *decode(emul_fast_cache *fc, csh cs, cs_insn *insn, uint64_t rip, const uint8_t *at)
{
    emul_fast_entry *e = &fc->slot[slot_of(rip)];
    if (e->len && e->rip == rip && memcmp(e->bytes, at, e->len) == 0)
        return e;
    const uint8_t *code = at;
    size_t left = EMUL_FAST_MAXLEN;
    uint64_t addr = rip;
    e->len = 0;
    if (!cs_disasm_iter(cs, &code, &left, &addr, insn) || insn->size < 1 || insn->size > EMUL_FAST_MAXLEN)
        return NULL;
    e->rip = rip;
    e->len = (uint8_t)insn->size;
    memcpy(e->bytes, at, e->len);
    e->dst = e->src = e->base = -1;
    e->size = 0;
    e->disp = 0;
    classify(insn, e);
    return e;
}

emul_fast_outcome emul_fast_try(emul_fast_cache *fc, csh cs, cs_insn *insn, vmt_regs *regs,
                                const vmt_emulate_mem *mem, uint64_t *fail_va, uint64_t *written)
{
    *written = 0;
    uint64_t rip = regs->rip;
    if ((regs->rflags & (RFLAGS_TF | RFLAGS_RF)) || !canonical(rip) ||
        (rip & 4095) > 4096 - EMUL_FAST_MAXLEN)
        return EMUL_FAST_NOT_TAKEN;
    uint8_t page[4096];
    vmt_access allowed = VMT_ACCESS_RWX;
    if (mem->read(mem->ctx, rip & ~4095ull, page, sizeof page, &allowed) != VMT_OK || !(allowed & VMT_ACCESS_X))
        return EMUL_FAST_NOT_TAKEN;
    const emul_fast_entry *e = decode(fc, cs, insn, rip, page + (rip & 4095));
    if (!e || e->kind == EMUL_FAST_NONE)
        return EMUL_FAST_NOT_TAKEN;
    uint64_t gpr[16];
    memcpy(gpr, &regs->rax, sizeof gpr);
    uint64_t next = rip + e->len;
    switch ((emul_fast_kind)e->kind) {
    case EMUL_FAST_NOP:
        break;
    case EMUL_FAST_MOV_RR: /* a 32-bit destination is zero-extended */
        gpr[e->dst] = e->size == 8 ? gpr[e->src] : (uint32_t)gpr[e->src];
        break;
    case EMUL_FAST_PUSH: {
        uint64_t sp = gpr[7] - 8, value = gpr[e->src]; /* push rsp stores the old rsp */
        if (!canonical(sp) || (sp & 4095) > 4088)
            return EMUL_FAST_NOT_TAKEN;
        allowed = VMT_ACCESS_RWX;
        if (mem->read(mem->ctx, sp & ~4095ull, page, sizeof page, &allowed) != VMT_OK || !(allowed & VMT_ACCESS_W))
            return EMUL_FAST_NOT_TAKEN;
        if (mem->write(mem->ctx, sp, &value, 8) != VMT_OK) {
            *fail_va = sp;
            return EMUL_FAST_WRITE_FAILED;
        }
        gpr[7] = sp;
        *written = 8;
        break;
    }
    case EMUL_FAST_MOV_LOAD:
    case EMUL_FAST_MOV_STORE: {
        bool store = e->kind == EMUL_FAST_MOV_STORE;
        uint64_t va = (e->base < 0 ? next : gpr[e->base]) + (uint64_t)e->disp;
        vmt_access need = store ? VMT_ACCESS_W : VMT_ACCESS_R;
        if (!canonical(va) || (va & 4095) > 4096u - e->size)
            return EMUL_FAST_NOT_TAKEN;
        allowed = VMT_ACCESS_RWX;
        if (mem->read(mem->ctx, va & ~4095ull, page, sizeof page, &allowed) != VMT_OK || !(allowed & need))
            return EMUL_FAST_NOT_TAKEN;
        if (store) {
            uint64_t value = gpr[e->src]; /* little-endian: the low bytes first */
            if (mem->write(mem->ctx, va, &value, e->size) != VMT_OK) {
                *fail_va = va;
                return EMUL_FAST_WRITE_FAILED;
            }
            *written = e->size;
        } else {
            uint64_t value = 0;
            memcpy(&value, page + (va & 4095), e->size);
            gpr[e->dst] = value;
        }
        break;
    }
    case EMUL_FAST_POP:
    case EMUL_FAST_RET: {
        uint64_t sp = gpr[7], value;
        if (!canonical(sp) || (sp & 4095) > 4088)
            return EMUL_FAST_NOT_TAKEN;
        allowed = VMT_ACCESS_RWX;
        if (mem->read(mem->ctx, sp & ~4095ull, page, sizeof page, &allowed) != VMT_OK || !(allowed & VMT_ACCESS_R))
            return EMUL_FAST_NOT_TAKEN;
        memcpy(&value, page + (sp & 4095), 8);
        if (e->kind == EMUL_FAST_RET && !canonical(value))
            return EMUL_FAST_NOT_TAKEN; /* #GP: the full engine reports it */
        gpr[7] = sp + 8;
        if (e->kind == EMUL_FAST_POP)
            gpr[e->dst] = value; /* pop rsp: the loaded value */
        else
            next = value;
        break;
    }
    default:
        return EMUL_FAST_NOT_TAKEN;
    }
    memcpy(&regs->rax, gpr, sizeof gpr);
    regs->rip = next;
    return EMUL_FAST_DONE;
}
