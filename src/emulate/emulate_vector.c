/*
 * emulate/emulate_vector.c — the engine and the vCPU's x87/MMX/SSE state
 * (emulate_vector.h): which instructions use it, and moving it between the
 * FXSAVE layout (vmt_fpu_state) and Unicorn's registers.
 *
 * Design: Capstone's groups name most vector instructions; the
 * state-management ones without a group and the SSE-group instructions
 * that touch no vector state (pause, fences, prefetches, clflush, movnti)
 * are listed. The state moves through Unicorn's register API: FCW, FSW
 * (with TOP, written first so the stack-relative ST registers land right),
 * the tag word (FXSAVE's abridged bit i <-> Unicorn's 2-bit field != 3),
 * FOP/FIP/FDP, MXCSR, ST0-7 (10 bytes each) and XMM0-15; test_emulate_state
 * checks it against Unicorn's own FXRSTOR/FXSAVE. No state of its own.
 */
#include <string.h>

#include "emulate_vector.h"

/* Does the instruction read or write x87, MMX, SSE or AVX state (registers,
 * FCW/FSW/MXCSR)? Decided from Capstone's groups, explicit register
 * operands and the few state-management instructions no group names. */
bool emul_uses_vector_state(const cs_insn *in)
{
    switch (in->id) { /* in SSE groups, but no vector register or control word */
    case X86_INS_PAUSE: case X86_INS_LFENCE: case X86_INS_MFENCE: case X86_INS_SFENCE:
    case X86_INS_PREFETCHNTA: case X86_INS_PREFETCHT0: case X86_INS_PREFETCHT1: case X86_INS_PREFETCHT2:
    case X86_INS_PREFETCHW: case X86_INS_CLFLUSH: case X86_INS_CLFLUSHOPT: case X86_INS_MOVNTI:
        return false;
    default:
        break;
    }
    const cs_detail *d = in->detail;
    for (unsigned i = 0; i < d->groups_count; i++) {
        switch (d->groups[i]) {
        case X86_GRP_FPU: case X86_GRP_MMX: case X86_GRP_3DNOW: case X86_GRP_SSE1: case X86_GRP_SSE2:
        case X86_GRP_SSE3: case X86_GRP_SSSE3: case X86_GRP_SSE41: case X86_GRP_SSE42: case X86_GRP_SSE4A:
        case X86_GRP_AVX: case X86_GRP_AVX2: case X86_GRP_AVX512: case X86_GRP_FMA: case X86_GRP_FMA4:
        case X86_GRP_F16C: case X86_GRP_XOP: case X86_GRP_AES: case X86_GRP_PCLMUL: case X86_GRP_SHA:
            return true;
        default:
            break;
        }
    }
    switch (in->id) {
    case X86_INS_FXSAVE: case X86_INS_FXSAVE64: case X86_INS_FXRSTOR: case X86_INS_FXRSTOR64:
    case X86_INS_XSAVE: case X86_INS_XSAVE64: case X86_INS_XSAVEC: case X86_INS_XSAVEC64:
    case X86_INS_XSAVEOPT: case X86_INS_XSAVEOPT64: case X86_INS_XSAVES: case X86_INS_XSAVES64:
    case X86_INS_XRSTOR: case X86_INS_XRSTOR64: case X86_INS_XRSTORS: case X86_INS_XRSTORS64:
    case X86_INS_XGETBV: case X86_INS_XSETBV: case X86_INS_EMMS: case X86_INS_FEMMS: case X86_INS_WAIT:
    case X86_INS_LDMXCSR: case X86_INS_STMXCSR:
        return true;
    default:
        break;
    }
    const cs_x86 *x = &d->x86;
    for (unsigned i = 0; i < x->op_count; i++) {
        int r = x->operands[i].type == X86_OP_REG ? x->operands[i].reg : 0;
        if ((r >= X86_REG_FP0 && r <= X86_REG_FP7) || (r >= X86_REG_K0 && r <= X86_REG_K7) ||
            (r >= X86_REG_MM0 && r <= X86_REG_MM7) || (r >= X86_REG_ST0 && r <= X86_REG_ZMM31) ||
            r == X86_REG_FPSW)
            return true;
    }
    return false;
}

/* ---- x87 / MMX / SSE state (FXSAVE layout) <-> Unicorn ----
 * FCW, FSW (TOP included), the abridged tag word (bit i: physical register
 * i not empty; Unicorn's full tag word is 3 for empty), FOP, FIP, FDP,
 * MXCSR, ST0-7 (stack-relative, 10 bytes each; MMX aliases them) and
 * XMM0-15. The YMM upper halves are the caller's: the engine runs no AVX
 * instruction (Unicorn has none), and legacy SSE leaves them alone. */
static uint16_t fx16(const uint8_t *fx, unsigned off) { return (uint16_t)(fx[off] | fx[off + 1] << 8); }
static uint64_t fx64(const uint8_t *fx, unsigned off)
{
    uint64_t v;
    memcpy(&v, fx + off, sizeof v);
    return v;
}

void emul_fpu_load(uc_engine *uc, const vmt_fpu_state *f)
{
    const uint8_t *fx = f->fxsave;
    uint64_t v = fx16(fx, 0);
    uc_reg_write(uc, UC_X86_REG_FPCW, &v);
    v = fx16(fx, 2);
    uc_reg_write(uc, UC_X86_REG_FPSW, &v); /* sets TOP: before the stack-relative ST registers */
    uint64_t tag = 0;
    for (unsigned i = 0; i < 8; i++)
        tag |= (uint64_t)((fx[4] >> i) & 1 ? 0 : 3) << (2 * i);
    uc_reg_write(uc, UC_X86_REG_FPTAG, &tag);
    v = fx16(fx, 6);
    uc_reg_write(uc, UC_X86_REG_FOP, &v);
    v = fx64(fx, 8);
    uc_reg_write(uc, UC_X86_REG_FIP, &v);
    v = fx64(fx, 16);
    uc_reg_write(uc, UC_X86_REG_FDP, &v);
    v = (uint32_t)fx64(fx, 24);
    uc_reg_write(uc, UC_X86_REG_MXCSR, &v);
    for (unsigned i = 0; i < 8; i++) {
        uint8_t st[16];
        memcpy(st, fx + 32 + 16 * i, sizeof st);
        uc_reg_write(uc, UC_X86_REG_ST0 + (int)i, st);
    }
    for (unsigned i = 0; i < 16; i++) {
        uint8_t x[16];
        memcpy(x, fx + 160 + 16 * i, sizeof x);
        uc_reg_write(uc, UC_X86_REG_XMM0 + (int)i, x);
    }
}

void emul_fpu_save(uc_engine *uc, vmt_fpu_state *f)
{
    uint8_t *fx = f->fxsave;
    uint64_t v = 0;
    uc_reg_read(uc, UC_X86_REG_FPCW, &v);
    fx[0] = (uint8_t)v, fx[1] = (uint8_t)(v >> 8);
    v = 0;
    uc_reg_read(uc, UC_X86_REG_FPSW, &v);
    fx[2] = (uint8_t)v, fx[3] = (uint8_t)(v >> 8);
    uint64_t tag = 0;
    uc_reg_read(uc, UC_X86_REG_FPTAG, &tag);
    fx[4] = 0;
    for (unsigned i = 0; i < 8; i++)
        if (((tag >> (2 * i)) & 3) != 3)
            fx[4] |= (uint8_t)(1u << i);
    v = 0;
    uc_reg_read(uc, UC_X86_REG_FOP, &v);
    fx[6] = (uint8_t)v, fx[7] = (uint8_t)((v >> 8) & 7);
    v = 0;
    uc_reg_read(uc, UC_X86_REG_FIP, &v);
    memcpy(fx + 8, &v, 8);
    v = 0;
    uc_reg_read(uc, UC_X86_REG_FDP, &v);
    memcpy(fx + 16, &v, 8);
    v = 0;
    uc_reg_read(uc, UC_X86_REG_MXCSR, &v);
    uint32_t mx = (uint32_t)v;
    memcpy(fx + 24, &mx, 4);
    for (unsigned i = 0; i < 8; i++) {
        uint8_t st[16] = { 0 };
        uc_reg_read(uc, UC_X86_REG_ST0 + (int)i, st);
        memset(st + 10, 0, 6);
        memcpy(fx + 32 + 16 * i, st, sizeof st);
    }
    for (unsigned i = 0; i < 16; i++)
        uc_reg_read(uc, UC_X86_REG_XMM0 + (int)i, fx + 160 + 16 * i);
}
