/*
 * snapshot/reconstruct.c — derive what a bare core lacks from the guest
 * itself, without OS symbols, and hand over to an OS layer for the rest.
 *
 * Every value set here goes through vmt_snapshot_fixup_set, so it is
 * recorded with the reason (`how`) and its group is marked reconstructed;
 * a run's log and summary list them. Nothing already known (from the file
 * or a sidecar) is overwritten.
 *
 * What is derived, per vCPU:
 *  - EFER: LME|LMA when paging is on with PAE and the vCPU is in long mode
 *    (CS.L, or system tables above 4 GiB: a 64-bit kernel with a 32-bit
 *    process in compatibility mode); NXE when a present entry of the page
 *    tables reachable from CR3 has bit 63 (XD) set — with NXE clear that
 *    bit is reserved and the entry would fault, so the kernel uses NX;
 *    SCE in long mode (64-bit kernels enter system calls with SYSCALL; the
 *    OS layer confirms with LSTAR).
 *  - APIC base: 0xfee00000, enabled, BSP bit on vCPU 0 (the PC default).
 *  - TSC: tsc_hz * start_ns / 1e9; 0 when the clock is unknown, which a
 *    kernel that read the TSC before the pause takes as time standing
 *    still (its timekeeper holds the last TSC read: an OS layer sets the
 *    TSC from there, the reason says so).
 *
 * Order: the OS layer's step runs first (it knows more), then the
 * defaults above fill only what is still unknown.
 *  - XCR0 = 1 when CR4.OSXSAVE is clear (XCR0 is then irrelevant).
 *  - PAT: the reset value.
 *
 * Limits: the NX scan reads at most SCAN_TABLES page-table pages; a CR3
 * outside RAM gives no NX evidence (NXE stays clear, the reason says so).
 */
#include <stdio.h>
#include <string.h>

#include "snapshot/snapshot_internal.h"

#define SCAN_TABLES 2048u
#define PTE_P 1ull
#define PTE_PS (1ull << 7)
#define PTE_XD (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

typedef struct nx_scan {
    vmt_snapshot *s;
    unsigned tables;
    bool found;
    bool unreadable;
} nx_scan;

static void scan_table(nx_scan *n, vmt_pa table, int level)
{
    if (n->found || n->tables >= SCAN_TABLES)
        return;
    uint64_t e[512];
    if (vmt_snapshot_read(n->s, table & PTE_ADDR, e, sizeof e)) {
        n->unreadable = true;
        return;
    }
    n->tables++;
    for (int i = 0; i < 512 && !n->found; i++) {
        if (!(e[i] & PTE_P))
            continue;
        if (e[i] & PTE_XD) {
            n->found = true;
            return;
        }
    }
    if (level <= 1)
        return;
    for (int i = 0; i < 512 && !n->found; i++)
        if ((e[i] & PTE_P) && !(level <= 3 && (e[i] & PTE_PS)))
            scan_table(n, e[i] & PTE_ADDR, level - 1);
}

static bool long_mode(const vmt_vcpu_state *v)
{
    const vmt_regs *r = &v->regs;
    if (!(r->cr0 & VMT_CR0_PG) || !(r->cr4 & VMT_CR4_PAE))
        return false;
    return (v->cs.attrib & VMT_SEG_ATTR_L) || r->idtr_base > 0xffffffffull || r->gdtr_base > 0xffffffffull ||
           v->tr.base > 0xffffffffull;
}

static vmt_status fix(vmt_snapshot *s, uint32_t i, const char *field, uint64_t value, const char *how)
{
    return vmt_snapshot_fixup_set(s, i, field, value, how);
}

static vmt_status reconstruct_efer(vmt_snapshot *s, uint32_t i)
{
    const vmt_vcpu_state *v = &s->vcpus[i];
    if (s->efer_set[i])
        return VMT_OK;
    char how[200];
    if (!long_mode(v)) {
        snprintf(how, sizeof how, "not in long mode (CR0 0x%llx, CR4 0x%llx, CS attrib 0x%x): EFER 0",
                 (unsigned long long)v->regs.cr0, (unsigned long long)v->regs.cr4, v->cs.attrib);
        return fix(s, i, "efer", 0, how);
    }
    nx_scan n = { .s = s };
    scan_table(&n, v->regs.cr3, (v->regs.cr4 & VMT_CR4_LA57) ? 5 : 4);
    uint64_t efer = VMT_EFER_LME | VMT_EFER_LMA | VMT_EFER_SCE;
    if (n.found)
        efer |= VMT_EFER_NXE;
    snprintf(how, sizeof how, "long mode (CR0.PG, CR4.PAE, %s) -> LME|LMA; 64-bit kernel -> SCE; %s",
             (v->cs.attrib & VMT_SEG_ATTR_L) ? "CS.L" : "system tables above 4 GiB",
             n.found ? "an XD bit in the page tables from CR3 -> NXE"
                     : n.unreadable ? "page tables from CR3 not in RAM -> no NXE"
                                    : "no XD bit in the page tables from CR3 -> no NXE");
    return fix(s, i, "efer", efer, how);
}

vmt_status vmt_snapshot_reconstruct(vmt_snapshot *s, vmt_snapshot_reconstruct_fn os_fn, void *os_ctx)
{
    /* The OS layer knows more (e.g. the kernel's last TSC read): it goes
     * first, the defaults below only fill what is still unknown. */
    vmt_status st = os_fn ? os_fn(os_ctx, s) : VMT_OK;
    for (uint32_t i = 0; i < s->nvcpus && !st; i++) {
        const vmt_vcpu_state *v = &s->vcpus[i];
        if ((st = reconstruct_efer(s, i)))
            break;
        if (!(v->known & VMT_VS_APIC_BASE))
            st = fix(s, i, "apic_base", 0xfee00000ull | (1u << 11) | (i == 0 ? 1u << 8 : 0),
                     i == 0 ? "PC default: xAPIC at 0xfee00000, enabled, BSP" : "PC default: xAPIC at 0xfee00000, enabled");
        if (!st && !(v->known & VMT_VS_TSC)) {
            char how[200];
            uint64_t tsc = 0;
            if (s->clock.tsc_hz) {
                unsigned __int128 t = (unsigned __int128)s->clock.start_ns * s->clock.tsc_hz / 1000000000u;
                tsc = (uint64_t)t;
                snprintf(how, sizeof how, "virtual time start %llu ns at %llu Hz", (unsigned long long)s->clock.start_ns,
                         (unsigned long long)s->clock.tsc_hz);
            } else {
                snprintf(how, sizeof how, "no clock known: TSC 0; a kernel that read the TSC before the pause sees "
                         "time stand still until it passes that reading (sidecar tsc, or the OS layer)");
            }
            st = fix(s, i, "tsc", tsc, how);
        }
        if (!st && !(v->known & VMT_VS_FPU) && !(v->regs.cr4 & (1ull << 18)))
            st = fix(s, i, "xcr0", 1, "CR4.OSXSAVE clear: XCR0 x87 only; FPU/SSE registers not in the core, reset values (FCW 0x37f, MXCSR 0x1f80)");
        if (!st && !(v->known & VMT_VS_MSRS))
            st = fix(s, i, "pat", 0x0007040600070406ull, "not in the core: PAT and the other MSRs of the group take reset values");
    }
    return st;
}
