/*
 * vmtrap/regs.h — the x86-64 register state of one vCPU.
 *
 * Design: one flat struct that every driver fills completely on get and
 * applies completely on set (a driver that cannot set some field, e.g. a
 * debug register, says so through its capabilities and returns
 * VMT_E_NOTSUP when asked to change it). Segment registers carry only what
 * a 64-bit guest needs: selectors and the FS/GS bases.
 */
#ifndef VMTRAP_REGS_H
#define VMTRAP_REGS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmt_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer;
    uint64_t fs_base, gs_base, kernel_gs_base;
    uint64_t gdtr_base, idtr_base;
    uint16_t gdtr_limit, idtr_limit;
    uint16_t cs, ss, ds, es, fs, gs;
    uint64_t dr0, dr1, dr2, dr3, dr6, dr7;
} vmt_regs;

#define VMT_RFLAGS_TF   (1ULL << 8)
#define VMT_RFLAGS_IF   (1ULL << 9)
#define VMT_RFLAGS_RF   (1ULL << 16)
#define VMT_CR0_PE      (1ULL << 0)
#define VMT_CR0_WP      (1ULL << 16)
#define VMT_CR0_PG      (1ULL << 31)
#define VMT_CR4_PAE     (1ULL << 5)
#define VMT_CR4_LA57    (1ULL << 12)
#define VMT_EFER_SCE    (1ULL << 0)
#define VMT_EFER_LME    (1ULL << 8)
#define VMT_EFER_LMA    (1ULL << 10)
#define VMT_EFER_NXE    (1ULL << 11)

/* System V AMD64 argument n (0-based, 0..5) from registers; n >= 6 is on the stack. */
static inline uint64_t vmt_regs_sysv_arg(const vmt_regs *r, unsigned n)
{
    switch (n) {
    case 0: return r->rdi;
    case 1: return r->rsi;
    case 2: return r->rdx;
    case 3: return r->rcx;
    case 4: return r->r8;
    case 5: return r->r9;
    default: return 0;
    }
}

#ifdef __cplusplus
}
#endif
#endif
