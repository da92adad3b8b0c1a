/*
 * os/snap/os_snapshot.c — the OS layer straight over a snapshot file
 * (vmtrap/snapshot.h), and the OS step of snapshot reconstruction.
 *
 * A snapshot is read through a read-only driver made here (caps READ_PHYS
 * only): RAM is gfn 0 .. end of the highest RAM block; the ROM window just
 * below 4 GiB (0xfe000000..0xffffffff) is left out so a 256 MiB guest does
 * not look like a 4 GiB one, and holes between blocks read as zeros (a
 * kernel never lives there; the kallsyms scan skips them). Nothing is
 * copied: reads go to the snapshot's mapping.
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

#define ROM_LO 0xfe000000ull
#define ROM_HI 0x100000000ull
#define LINUX_STAR 0x0023001000000000ull  /* __USER32_CS 0x23, __KERNEL_CS 0x10 */
#define LINUX_FMASK 0x257fd5ull           /* CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID */

typedef struct snapdrv {
    vmt_snapshot *s;
} snapdrv;

static void sd_destroy(vmt_driver *d)
{
    free(vmt_driver_impl(d));
}

static vmt_status sd_read(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    snapdrv *sd = vmt_driver_impl(d);
    uint64_t end = pa + len;
    if (end < pa || end > vmt_driver_caps(d)->ram_frames * 4096)
        return vmt_driver_fail(d, VMT_E_RANGE, "snapshot: [0x%" PRIx64 ", +0x%zx) is outside RAM", pa, len);
    memset(buf, 0, len);
    size_t n = vmt_snapshot_ram_count(sd->s);
    for (size_t i = 0; i < n; i++) {
        vmt_snapshot_ram r;
        if (vmt_snapshot_ram_at(sd->s, i, &r) != VMT_OK)
            continue;
        uint64_t lo = r.gpa > pa ? r.gpa : pa, hi = r.gpa + r.size < end ? r.gpa + r.size : end;
        if (lo >= hi)
            continue;
        vmt_status st = vmt_snapshot_read(sd->s, lo, (uint8_t *)buf + (lo - pa), (size_t)(hi - lo));
        if (st)
            return vmt_driver_fail(d, st, "snapshot: %s", vmt_snapshot_error(sd->s));
    }
    return VMT_OK;
}

static const vmt_driver_ops sd_ops = {
    .name = "snapshot",
    .destroy = sd_destroy,
    .read_phys = sd_read,
};

static vmt_status snap_driver(vmt_snapshot *s, vmt_driver **out, char *why, size_t why_len)
{
    uint64_t end = 0;
    size_t n = vmt_snapshot_ram_count(s);
    for (size_t i = 0; i < n; i++) {
        vmt_snapshot_ram r;
        if (vmt_snapshot_ram_at(s, i, &r) != VMT_OK || (r.gpa >= ROM_LO && r.gpa < ROM_HI))
            continue;
        if (r.gpa + r.size > end)
            end = r.gpa + r.size;
    }
    if (!end) {
        vmt_why(why, why_len, "os: the snapshot has no RAM below the ROM window");
        return VMT_E_FORMAT;
    }
    snapdrv *sd = calloc(1, sizeof *sd);
    if (!sd) {
        vmt_why(why, why_len, "os: no memory");
        return VMT_E_NOMEM;
    }
    sd->s = s;
    vmt_caps caps = { .flags = VMT_CAP_READ_PHYS, .max_views = 1, .ram_frames = (end + 4095) / 4096,
                      .vcpus = vmt_snapshot_vcpu_count(s) ? vmt_snapshot_vcpu_count(s) : 1, .maxphyaddr = 52 };
    vmt_status st = vmt_driver_create(&sd_ops, sd, &caps, out, why, why_len);
    if (st)
        free(sd);
    return st;
}

vmt_status vmt_os_open_snapshot(struct vmt_snapshot *s, const vmt_os_config *cfg, vmt_os **out, vmt_driver **drv,
                                char *why, size_t why_len)
{
    *out = NULL;
    *drv = NULL;
    vmt_driver *d;
    vmt_status st = snap_driver(s, &d, why, why_len);
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
