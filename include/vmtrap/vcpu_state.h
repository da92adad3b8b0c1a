/*
 * vmtrap/vcpu_state.h — everything needed to stop one vCPU and resume it later.
 *
 * Design: vmt_regs (regs.h) is what the monitor reads at every event; it is
 * small on purpose. A resumed machine (a snapshot of a real kernel) needs
 * more: the hidden parts of the segment registers (base, limit, attributes,
 * TR and LDTR included), the SYSCALL/SYSENTER MSRs and the other MSRs a
 * kernel programs once at boot, XCR0, the FPU/SSE/AVX registers, the TSC and
 * the interrupt state (HLT, interrupt shadow, an event being injected). This
 * record holds all of it. Drivers that can load and save it declare
 * VMT_CAP_VCPU_STATE (driver.h); snapshot loaders fill it; vmtrap's own
 * snapshot format stores it.
 *
 * Identity: one record per vCPU. `regs` is authoritative for everything it
 * holds (GPRs, RIP, RFLAGS, CRs, EFER, FS/GS/KERNEL_GS base, GDTR/IDTR,
 * selectors, DRs); the vmt_segment records repeat the selectors and add the
 * hidden parts. Invariant a loader checks (vmt_vcpu_state_check): the
 * selector of regs and of the segment record agree; fs.base == regs.fs_base,
 * gs.base == regs.gs_base.
 *
 * Provenance: `known` says which groups carry real values. A group whose bit
 * is clear holds defaults and the driver may fill it in (a QEMU ELF core has
 * no MSRs, no FPU state); `reconstructed` marks groups a loader derived from
 * the guest itself (e.g. LSTAR from kallsyms) so the run's log can list them.
 */
#ifndef VMTRAP_VCPU_STATE_H
#define VMTRAP_VCPU_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/regs.h"
#include "vmtrap/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A segment register with its hidden part. `attrib` is the descriptor's
 * access-rights word as VMX/KVM/QEMU hold it: bits 0-3 type, 4 S, 5-6 DPL,
 * 7 P, 12 AVL, 13 L, 14 D/B, 15 G (descriptor bits 40-47 and 52-55). */
typedef struct vmt_segment {
    uint64_t base;
    uint32_t limit;       /* expanded (granularity applied), in bytes - 1 */
    uint16_t selector;
    uint16_t attrib;
} vmt_segment;

#define VMT_SEG_ATTR_P   (1u << 7)
#define VMT_SEG_ATTR_L   (1u << 13)
#define VMT_SEG_ATTR_DB  (1u << 14)
#define VMT_SEG_ATTR_G   (1u << 15)
#define VMT_SEG_ATTR_DPL(a) (((a) >> 5) & 3u)

/* x87/MMX/SSE in FXSAVE layout (512 bytes: FCW, FSW, FTW, ..., MXCSR at 24,
 * ST0-7 at 32, XMM0-15 at 160) plus the upper halves of YMM0-15. */
typedef struct vmt_fpu_state {
    uint8_t fxsave[512];
    uint8_t ymm_hi[16][16];   /* meaningful when xcr0 bit 2 (AVX) is set */
} vmt_fpu_state;

/* Groups of vmt_vcpu_state (bits of `known` and `reconstructed`). */
enum {
    VMT_VS_REGS      = 1u << 0,  /* regs */
    VMT_VS_SEGMENTS  = 1u << 1,  /* hidden segment parts, TR, LDTR */
    VMT_VS_SYSCALL   = 1u << 2,  /* star, lstar, cstar, fmask */
    VMT_VS_SYSENTER  = 1u << 3,  /* sysenter_cs/esp/eip */
    VMT_VS_MSRS      = 1u << 4,  /* pat, tsc_aux, misc_enable, spec_ctrl, mtrr_def_type */
    VMT_VS_APIC_BASE = 1u << 5,  /* apic_base, tsc_deadline */
    VMT_VS_FPU       = 1u << 6,  /* fpu, xcr0 */
    VMT_VS_TSC       = 1u << 7,  /* tsc */
    VMT_VS_EVENTS    = 1u << 8,  /* halted, interrupt shadow, pending event */
};

typedef struct vmt_vcpu_state {
    uint32_t known;           /* VMT_VS_* groups holding real values */
    uint32_t reconstructed;   /* VMT_VS_* groups derived from the guest by a loader */

    vmt_regs regs;
    vmt_segment cs, ss, ds, es, fs, gs, tr, ldtr;

    uint64_t star, lstar, cstar, fmask;
    uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
    uint64_t pat, tsc_aux, misc_enable, spec_ctrl, mtrr_def_type;
    uint64_t apic_base, tsc_deadline;
    uint64_t xcr0;
    uint64_t tsc;
    vmt_fpu_state fpu;

    bool halted;              /* in HLT, waiting for an interrupt */
    uint8_t interrupt_shadow; /* 0, or 1 after STI / MOV SS: no interrupt before the next insn */
    bool event_pending;       /* an exception or interrupt being delivered */
    uint8_t event_vector;
    bool event_has_error;
    uint32_t event_error;
} vmt_vcpu_state;

/* A state with architectural reset-like defaults for a 64-bit guest whose
 * groups are unknown: PAT 0x0007040600070406, FCW 0x37f, MXCSR 0x1f80,
 * xcr0 1, apic_base 0xfee00900 (enabled, BSP), known = 0. */
void vmt_vcpu_state_init(vmt_vcpu_state *s);

/* Consistency of a loaded state (selectors agree, FS/GS bases agree, CS is
 * a present 64-bit code segment when EFER.LMA, CR0.PG implies CR0.PE, EFER.LMA
 * implies CR4.PAE and CR0.PG). VMT_E_FORMAT with the first problem in why. */
vmt_status vmt_vcpu_state_check(const vmt_vcpu_state *s, char *why, size_t why_len);

/* Names of the groups in `mask`, comma-separated ("syscall-msrs,fpu"). */
size_t vmt_vcpu_state_groups(uint32_t mask, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
