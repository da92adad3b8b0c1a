/*
 * tests/bpm/hidden_guest.h — tiny hand-assembled guests that measure what a
 * hidden breakpoint costs on a CPU-running driver, shared by
 * bench/bench_hidden.c (times) and tests/bpm/test_bpm_exits.c (exit counts).
 *
 * Every guest boots with the boot protocol (identity 2 MiB pages, CPL0,
 * rdi = RAM size), repeats one operation `n` times, then writes eax to port
 * HG_PORT_DONE and halts. The operation:
 *   HG_OUT_LOOP   out to HG_PORT_LOOP (one I/O event each);
 *   HG_NOP_LOOP   the same loop with a nop instead (its guest-only cost);
 *   HG_CALLS      call HG_FUNC_VA (push rbp; mov rax,rdi; pop rbp; ret):
 *                 eax at the end is HG_CALLS_VALUE;
 *   HG_READS      load 8 bytes from HG_FUNC_VA itself: eax at the end is
 *                 HG_READ_VALUE, the function's real first bytes (an INT3
 *                 seen by the guest would show as 0xcc in the low byte);
 *   HG_PT_WRITES  store the PD entry that maps HG_PT_VA, unchanged;
 *   HG_WRITES     store rax (the iteration count) at HG_WRITE_VA, in the
 *                 function's page (a hidden breakpoint's page is rebuilt).
 *   HG_SELF_STORES call HG_FUNC_VA with rdi = i (n down to 1); the function's
 *                 FIRST instruction stores edi into the immediate of its
 *                 own `mov eax, imm32` that follows, so it returns i only
 *                 when the code that runs is what was just written; eax at
 *                 the end is the sum of the returns: HG_SELF_SUM(n).
 * No test framework here: callers assert.
 */
#ifndef VMT_TESTS_HIDDEN_GUEST_H
#define VMT_TESTS_HIDDEN_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "vmtrap/driver.h"

#define HG_RAM (16ull << 20)
#define HG_CODE_PA 0x1000ull
#define HG_FUNC_VA 0x3000ull
#define HG_PT_VA 0x400000ull
#define HG_WRITE_VA (HG_FUNC_VA + 0x800) /* data in the function's page */   /* its translation's leaf entry is what HG_PT_WRITES stores */
#define HG_PORT_LOOP 0x5e2
#define HG_PORT_DONE 0x5e1
#define HG_CALLS_VALUE ((uint32_t)HG_RAM)  /* the function returns rdi */
#define HG_READ_VALUE 0xf8894855u           /* push rbp; mov rax,rdi (55 48 89 f8) */

typedef enum hg_kind { HG_OUT_LOOP, HG_NOP_LOOP, HG_CALLS, HG_READS, HG_PT_WRITES, HG_WRITES, HG_SELF_STORES } hg_kind;
#define HG_SELF_SUM(n) ((uint32_t)((uint64_t)(n) * ((uint64_t)(n) + 1) / 2))

/* Physical address of the PD entry HG_PT_WRITES stores into. */
uint64_t hg_pde_pa(void);

/* 1 when `driver` ("emu" or "kvm") is built into this program. */
int hg_driver_built(const char *driver);

/* A driver of that name running guest `kind` with `n` repetitions
 * (1 .. 2^31). VMT_E_NOTSUP: the driver is not built; other failures (no
 * /dev/kvm) come from the driver. why gets the reason. */
vmt_status hg_driver(const char *driver, hg_kind kind, uint32_t n, vmt_driver **out, char *why, size_t why_len);

#endif
