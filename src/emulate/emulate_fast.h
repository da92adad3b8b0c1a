/*
 * emulate/emulate_fast.h — the engine's fast path (internal to the
 * engine, emulate.c / emulate_fast.c): single instructions of the kinds a
 * breakpoint usually displaces, performed without Unicorn.
 *
 * Invariant: a cache entry is only a decoding of the bytes it stores; it is
 * used only when the bytes at its rip, read now, equal them.
 */
#ifndef VMT_EMULATE_FAST_H
#define VMT_EMULATE_FAST_H

#include <stdbool.h>
#include <stdint.h>

#include <capstone/capstone.h>

#include "vmtrap/emulate.h"

enum { EMUL_FAST_SLOTS = 16, EMUL_FAST_MAXLEN = 15 };

typedef enum emul_fast_kind {
    EMUL_FAST_NONE = 0,  /* decoded, not a fast form: the full engine runs it */
    EMUL_FAST_NOP,       /* nop (any length), endbr64/endbr32 */
    EMUL_FAST_PUSH,      /* push r64 */
    EMUL_FAST_MOV_RR,    /* mov r64, r64 / mov r32, r32 (zero-extends) */
    EMUL_FAST_MOV_LOAD,  /* mov r64|r32, [base + disp] (base a GPR or rip, no index, no segment) */
    EMUL_FAST_MOV_STORE, /* mov [base + disp], r64|r32 */
    EMUL_FAST_POP,       /* pop r64 */
    EMUL_FAST_RET,       /* ret (near, no immediate) */
} emul_fast_kind;

typedef struct emul_fast_entry {
    uint64_t rip;
    uint8_t bytes[EMUL_FAST_MAXLEN];
    uint8_t len;          /* 0: slot empty */
    uint8_t kind;         /* emul_fast_kind */
    int8_t dst, src;      /* vmt_regs GPR index (0..15) */
    int8_t base;          /* memory operand: GPR index, -1 for rip-relative */
    uint8_t size;         /* MOV forms: operand size, 4 or 8 */
    int64_t disp;
} emul_fast_entry;

typedef struct emul_fast_cache {
    emul_fast_entry slot[EMUL_FAST_SLOTS];
} emul_fast_cache;

typedef enum emul_fast_outcome {
    EMUL_FAST_NOT_TAKEN = 0, /* nothing changed (but accessed bits): run the full engine */
    EMUL_FAST_DONE,          /* performed: *regs updated, stores landed */
    EMUL_FAST_WRITE_FAILED,  /* mem->write refused the store at *fail_va */
} emul_fast_outcome;

/* Perform the one instruction at regs->rip if it is a fast form whose every
 * access stays inside one page the accessor allows; otherwise change
 * nothing. *written: bytes stored through mem->write. */
emul_fast_outcome emul_fast_try(emul_fast_cache *fc, csh cs, cs_insn *insn, vmt_regs *regs,
                                const vmt_emulate_mem *mem, uint64_t *fail_va, uint64_t *written);

/* Invariant checker: every used slot is where its rip hashes, its length
 * and register indexes are in range, its MOV size is 4 or 8. NULL when
 * consistent, else what is wrong. */
const char *emul_fast_cache_problem(const emul_fast_cache *fc);

#endif
