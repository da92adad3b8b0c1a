/*
 * vmtrap/emulate.h — the reusable instruction emulator: run one instruction
 * (or a short run) of x86-64 guest code against a register state and
 * caller-supplied guest-virtual memory accessors.
 *
 * Design: other drivers (KVM) use it to perform a displaced instruction in
 * one exit — a hidden-breakpoint hit or a trapped read of a hidden page is
 * emulated against the unaltered frame instead of being single-stepped in
 * another view. The engine is a private Unicorn 2.0.1 instance with paging
 * off whose memory is filled on demand, page by page, from `mem->read`
 * (the caller does the guest translation and applies whatever view it
 * wants, and says which access kinds the page allows). Stores go to a
 * per-instruction log and reach `mem->write` only when the instruction
 * completes, so a faulting instruction changes nothing (no partial writes,
 * registers untouched). Up to 4 pages stay mapped between calls; they are
 * re-read through `mem->read` at the start of every call (so the caller's
 * memory may change between calls; a re-read counts as an access). Code
 * that changes between calls is translated again (tens of microseconds):
 * a caller alternating two versions of a code page keeps one engine each.
 *
 * It stops BEFORE instructions whose effect lies outside registers and
 * memory (INT3/INT n, port I/O, hlt, control/debug-register and MSR
 * access, syscall/sysenter and their returns, iret, cpuid is allowed):
 * VMT_EMULATE_SPECIAL, with RIP on it, for the caller to handle.
 *
 * Registers used: the 16 GPRs, rip, rflags, fs_base, gs_base, and with
 * vmt_emulate_full the x87/MMX/SSE state (FXSAVE layout); the others are
 * passed through unchanged. Every instruction performed writes back all the
 * architectural state it changes: registers, flags, memory. vmt_emulate
 * has no vector state, so it stops BEFORE any instruction that reads or
 * writes x87/MMX/SSE/AVX registers or control words (VMT_EMULATE_SPECIAL)
 * for the caller to run on its own CPU, instead of running it on registers
 * that are not the guest's. AVX instructions are never performed (Unicorn
 * has no AVX): VMT_E_DRIVER or SPECIAL, nothing changed. CPL0 64-bit code
 * only; no exceptions are delivered (a faulting instruction reports
 * VMT_EMULATE_FAULT or VMT_EMULATE_EXCEPTION).
 */
#ifndef VMTRAP_EMULATE_H
#define VMTRAP_EMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/access.h"
#include "vmtrap/addr.h"
#include "vmtrap/regs.h"
#include "vmtrap/status.h"
#include "vmtrap/vcpu_state.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_emulator vmt_emulator;

/* Guest-virtual memory for the engine. read() is asked for whole 4 KiB
 * pages (va page-aligned, len 4096) and sets *allowed to the access kinds
 * the page permits (it starts as RWX); a failure, or an access outside
 * *allowed, makes the instruction fault (VMT_EMULATE_FAULT). write() gets
 * each completed instruction's stores in program order, a store crossing a
 * page boundary split in two (the pages may be different frames). stop_before() is
 * optional (NULL: never): asked with the rip of every instruction after the
 * first, true ends the run there (VMT_EMULATE_STOP_REQUESTED), e.g. when
 * the code leaves a region the caller wants emulated. */
typedef struct vmt_emulate_mem {
    vmt_status (*read)(void *ctx, vmt_va va, void *buf, size_t len, vmt_access *allowed);
    vmt_status (*write)(void *ctx, vmt_va va, const void *buf, size_t len);
    void *ctx;
    bool (*stop_before)(void *ctx, vmt_va rip);
} vmt_emulate_mem;

typedef enum vmt_emulate_stop {
    VMT_EMULATE_DONE = 0,      /* max_insns instructions completed */
    VMT_EMULATE_SPECIAL,       /* stopped before an instruction it does not perform */
    VMT_EMULATE_FAULT,         /* a page could not be read: fault_va */
    VMT_EMULATE_EXCEPTION,     /* the instruction raised an exception: vector */
    VMT_EMULATE_STOP_REQUESTED,/* stop_before() said so, RIP on that instruction */
} vmt_emulate_stop;

typedef struct vmt_emulate_result {
    vmt_emulate_stop stop;
    uint64_t instructions;     /* completed */
    vmt_va fault_va;           /* FAULT */
    vmt_access fault_access;   /* FAULT: the kind of access (R, W or X) */
    uint8_t vector;            /* EXCEPTION */
    uint64_t bytes_written;    /* through mem->write */
    uint64_t fast_instructions;/* of the completed ones, performed without Unicorn (see vmt_emulate) */
} vmt_emulate_result;

vmt_status vmt_emulator_create(vmt_emulator **out, char *why, size_t why_len);
void vmt_emulator_destroy(vmt_emulator *em);
/* The message of the last failure ("" if none). */
const char *vmt_emulator_error(const vmt_emulator *em);
/* Invariant checker (tests): between calls at most 4 pages are mapped, no
 * store is pending, the engine's record of each mapped page matches what
 * it holds, and the fast path's decodings are well formed. VMT_OK or VMT_E_INTERNAL (vmt_emulator_error says why). */
vmt_status vmt_emulator_check(vmt_emulator *em);

/* Fast path (on by default; off: every instruction runs on Unicorn, e.g.
 * to compare the two). */
void vmt_emulator_use_fast_path(vmt_emulator *em, bool on);

/* Emulate up to max_insns (1..1000) instructions from regs->rip. Leading
 * plain push/pop r64, mov r64,r64, mov r64,[base+disp], ret and nop/endbr
 * whose accesses stay inside pages that allow them are performed directly
 * (decoded once per site and content, no Unicorn; only the pages they touch
 * are read: res->fast_instructions); the rest runs on Unicorn with the same
 * result. On VMT_OK,
 * *regs is the state after the completed instructions and *res says why it
 * stopped. A failing mem->write is VMT_E_IO (state of that instruction's
 * other stores unspecified). */
vmt_status vmt_emulate(vmt_emulator *em, vmt_regs *regs, const vmt_emulate_mem *mem, uint64_t max_insns,
                       vmt_emulate_result *res);

/* The same with the vCPU's x87/MMX/SSE state (fpu->fxsave; ymm_hi passed
 * through): x87, MMX and SSE instructions are performed too and *fpu is the
 * state after the completed instructions (unchanged on a failure or when
 * none of them used it). fpu must not be NULL (VMT_E_INVAL). */
vmt_status vmt_emulate_full(vmt_emulator *em, vmt_regs *regs, vmt_fpu_state *fpu, const vmt_emulate_mem *mem,
                            uint64_t max_insns, vmt_emulate_result *res);

#ifdef __cplusplus
}
#endif
#endif
