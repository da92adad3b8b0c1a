/*
 * drivers/qemu/qemu_nop.c — the NOP fast path for resuming from a
 * breakpoint.
 *
 * Why: QEMU 7.2 flushes its whole translation cache when a breakpoint is
 * inserted or removed and when single-stepping is switched on or off, so
 * the generic step-over (remove, step, re-insert) costs four flushes and
 * the guest then re-translates its hot code (measured: ~150 ms per hit on
 * the Linux snapshot). Most Linux functions start with the 5-byte ftrace
 * NOP; resuming past a NOP is just rip += length (one 'P' packet). The
 * instruction is decoded with Capstone (never by hand) from physical memory
 * at each hit (the code may have been patched since); its physical address
 * is translated once per breakpoint. Without Capstone every hit takes the
 * generic path.
 */
#include <string.h>

#include "drivers/qemu/qemu_internal.h"
#include "vmtrap/paging.h"

#ifdef VMT_QEMU_CAPSTONE
#include <capstone/capstone.h>

void qemu_nop_init(qemu_drv *q)
{
    csh h;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) == CS_ERR_OK)
        q->cs_handle = (uintptr_t)h;
}

void qemu_nop_fini(qemu_drv *q)
{
    if (q->cs_handle) {
        csh h = (csh)q->cs_handle;
        cs_close(&h);
        q->cs_handle = 0;
    }
}

static vmt_status walk_reader(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

int qemu_nop_at(vmt_driver *d, qemu_bp *bp, unsigned *len)
{
    qemu_drv *q = qemu_of(d);
    if (!q->cs_handle)
        return 0;
    if (!bp->pa_known) {
        vmt_phys_reader rd = { walk_reader, d };
        vmt_paging_config pc = { .levels = (q->regs.cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                                 .nxe = (q->regs.efer & VMT_EFER_NXE) != 0 };
        vmt_walk w;
        if (!(q->regs.cr0 & VMT_CR0_PG) ||
            vmt_paging_walk(&rd, &pc, q->regs.cr3 & VMT_PTE_ADDR_MASK, bp->va, &w, NULL, 0) != VMT_OK)
            return 0;
        /* Only kernel addresses keep one translation for every address space. */
        if (!(bp->va >> 63))
            return 0;
        bp->pa = w.pa;
        bp->pa_known = true;
    }
    uint8_t code[15];
    size_t n = 4096 - (size_t)(bp->pa & 4095);
    if (n > sizeof code)
        n = sizeof code;
    if (vmt_drv_read_phys(d, bp->pa, code, n) != VMT_OK)
        return 0;
    cs_insn *insn = NULL;
    size_t count = cs_disasm((csh)q->cs_handle, code, n, bp->va, 1, &insn);
    int nop = count == 1 && insn[0].id == X86_INS_NOP;
    if (nop)
        *len = insn[0].size;
    if (count)
        cs_free(insn, count);
    return nop;
}
#else
void qemu_nop_init(qemu_drv *q)
{
    (void)q;
}

void qemu_nop_fini(qemu_drv *q)
{
    (void)q;
}

int qemu_nop_at(vmt_driver *d, qemu_bp *bp, unsigned *len)
{
    (void)d;
    (void)bp;
    (void)len;
    return 0;
}
#endif
