/*
 * os/snap/os_snapshot.c — the OS layer straight over a snapshot file
 * (vmtrap/snapshot.h), and the OS step of snapshot reconstruction.
 *
 * A snapshot is read through the snapshot module's read-only driver
 * (vmt_snapshot_driver_create: reads from the mapping, nothing copied);
 * the kallsyms scan skips ranges that driver cannot read (holes, the ROM
 * window below 4 GiB), so no adaptation is needed here.
 *
 * vmt_os_snapshot_reconstruct() sets what a QEMU core lacks and Linux
 * decides, from kallsyms: the SYSCALL MSRs exactly as Linux's syscall_init
 * writes them (LSTAR = entry_SYSCALL_64, STAR = __USER32_CS << 48 |
 * __KERNEL_CS << 32, CSTAR = entry_SYSCALL_compat, FMASK = the flags it
 * clears; checked against the Debian 6.1 kernel's code in the snapshot).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/os.h"
#include "vmtrap/snapshot.h"

#include "core/errbuf.h"

#define LINUX_STAR 0x0023001000000000ull  /* __USER32_CS 0x23, __KERNEL_CS 0x10 */
#define LINUX_FMASK 0x257fd5ull           /* CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID */

vmt_status vmt_os_open_snapshot(struct vmt_snapshot *s, const vmt_os_config *cfg, vmt_os **out, vmt_driver **drv,
                                char *why, size_t why_len)
{
    *out = NULL;
    *drv = NULL;
    vmt_driver *d;
    vmt_status st = vmt_snapshot_driver_create(s, &d, why, why_len);
    if (st)
        return st;
    if ((st = vmt_os_open(d, cfg, out, why, why_len))) {
        vmt_driver_destroy(d);
        return st;
    }
    *drv = d;
    return VMT_OK;
}

vmt_status vmt_os_snapshot_reconstruct(void *ctx, struct vmt_snapshot *s)
{
    (void)ctx;
    vmt_os *os;
    vmt_driver *d;
    char why[256];
    vmt_os_config cfg = { .no_btf = 1 };
    vmt_status st = vmt_os_open_snapshot(s, &cfg, &os, &d, why, sizeof why);
    if (st)
        return st;
    vmt_os_symbol lstar, cstar;
    st = vmt_os_symbol_by_name(os, "entry_SYSCALL_64", &lstar);
    int have_cstar = vmt_os_symbol_by_name(os, "entry_SYSCALL_compat", &cstar) == VMT_OK ||
                     vmt_os_symbol_by_name(os, "ignore_sysret", &cstar) == VMT_OK;
    for (uint32_t v = 0; !st && v < vmt_snapshot_vcpu_count(s); v++) {
        st = vmt_snapshot_fixup_set(s, v, "lstar", lstar.addr, "kallsyms: entry_SYSCALL_64");
        if (!st)
            st = vmt_snapshot_fixup_set(s, v, "star", LINUX_STAR, "Linux syscall_init: __USER32_CS, __KERNEL_CS");
        if (!st)
            st = vmt_snapshot_fixup_set(s, v, "fmask", LINUX_FMASK, "Linux syscall_init: flags cleared on SYSCALL");
        if (!st && have_cstar)
            st = vmt_snapshot_fixup_set(s, v, "cstar", cstar.addr, "kallsyms: entry_SYSCALL_compat");
    }
    vmt_os_close(os);
    vmt_driver_destroy(d);
    return st;
}
