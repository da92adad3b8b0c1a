/*
 * snapshot/snap_driver.c — a read-only driver over a snapshot, so the OS
 * layer (and anything else written against the driver contract) can look
 * into a dump without a CPU and without copying its RAM.
 *
 * Capabilities: READ_PHYS and REGS_GET only (nothing it cannot do is
 * declared). read_phys reads the snapshot's RAM (for a QEMU core straight
 * from the file mapping, for a vmts file decompressing the chunks touched);
 * a range reaching a hole or past the last block is VMT_E_RANGE and fills
 * nothing. get_regs gives each vCPU's registers as loaded, with what
 * reconstructions and sidecars set (call vmt_snapshot_reconstruct first
 * for EFER). ram_frames is the end of the highest block.
 *
 * Lifetime: the driver borrows the snapshot; destroy the driver first.
 */
#include <stdlib.h>

#include "snapshot/snapshot_internal.h"

static const char snap_driver_name[] = "snapshot";

static vmt_status op_read_phys(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    vmt_snapshot *s = vmt_driver_impl(d);
    vmt_status st = vmt_snapshot_read(s, pa, buf, len);
    if (st)
        return vmt_driver_fail(d, st, "%s", vmt_snapshot_error(s));
    return VMT_OK;
}

static vmt_status op_get_regs(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    vmt_snapshot *s = vmt_driver_impl(d);
    if (vcpu >= s->nvcpus)
        return vmt_driver_fail(d, VMT_E_INVAL, "get_regs: no vCPU %u (snapshot has %u)", vcpu, s->nvcpus);
    *regs = s->vcpus[vcpu].regs;
    return VMT_OK;
}

static void op_destroy(vmt_driver *d) { (void)d; }

static const vmt_driver_ops snap_ops = {
    .name = snap_driver_name,
    .destroy = op_destroy,
    .read_phys = op_read_phys,
    .get_regs = op_get_regs,
};

vmt_status vmt_snapshot_driver_create(vmt_snapshot *s, vmt_driver **out, char *why, size_t why_len)
{
    const snap_block *last = &s->blocks[s->nblocks - 1];
    vmt_caps caps = {
        .flags = VMT_CAP_READ_PHYS | VMT_CAP_REGS_GET,
        .max_views = 1,
        .vcpus = s->nvcpus,
        .ram_frames = (last->gpa + last->size) / VMT_PAGE_SIZE,
        .maxphyaddr = 52,
    };
    return vmt_driver_create(&snap_ops, s, &caps, out, why, why_len);
}
