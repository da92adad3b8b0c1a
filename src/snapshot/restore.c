/*
 * snapshot/restore.c — putting a driver back to the snapshot for repeated
 * runs (as wtf does between fuzz cases).
 *
 * With VMT_CAP_DIRTY_LOG the driver says which frames were written since
 * the last restore; only those are rewritten, from the snapshot's bytes
 * (a QEMU core's mapping, or a vmts file's decompressed chunks — each chunk
 * is decompressed once, on the first restore that needs it), consecutive
 * frames of one block in one write_phys. A dirty frame outside the
 * snapshot's RAM is zeroed (a driver's RAM outside the memory map starts
 * zero). The log is walked first and cleared only after the rewrite, since
 * the rewrite itself is a write the driver logs. Without DIRTY_LOG all RAM
 * is rewritten. Then every vCPU state is set and the platform reset
 * callback gets the platform blob.
 *
 * A restore on a driver other than the one the snapshot was last applied
 * to (or restored into) is a full apply; drivers are told apart by their
 * handle, so after destroying a driver apply the snapshot to the new one.
 *
 * Failure: a failing driver call stops the restore with the driver's
 * message; the driver may be partly restored (the message says so) and a
 * later restore still rewrites everything still logged dirty.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "snapshot/snapshot_internal.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int collect(void *ctx, vmt_gfn gfn)
{
    vmt_snapshot *s = ctx;
    if (s->ndirty == s->dirtycap) {
        size_t cap = s->dirtycap ? s->dirtycap * 2 : 4096;
        vmt_gfn *n = realloc(s->dirty, cap * sizeof *n);
        if (!n) {
            s->dirty_oom = 1;
            return 1;
        }
        s->dirty = n;
        s->dirtycap = cap;
    }
    s->dirty[s->ndirty++] = gfn;
    return 0;
}

static vmt_status rewrite_dirty(vmt_snapshot *s, vmt_driver *d)
{
    static const uint8_t zero[VMT_PAGE_SIZE];
    s->ndirty = 0;
    s->dirty_oom = 0;
    vmt_status st = vmt_drv_dirty_log(d, collect, s, 0);
    if (st)
        return vmt_errbuf_set(&s->err, st, "restore: reading the dirty log failed: %s", vmt_driver_error(d));
    if (s->dirty_oom)
        return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "restore: out of memory for the dirty list");
    for (size_t i = 0; i < s->ndirty;) {
        vmt_pa pa = vmt_gfn_to_pa(s->dirty[i]);
        const snap_block *b = snap_block_of(s, pa);
        size_t j = i + 1;
        if (!b) {
            st = vmt_drv_write_phys(d, pa, zero, sizeof zero);
            if (st)
                return vmt_errbuf_set(&s->err, st, "restore: zeroing gfn 0x%llx failed (driver partly restored): %s",
                                      (unsigned long long)s->dirty[i], vmt_driver_error(d));
        } else {
            vmt_pa end = b->gpa + b->size;
            while (j < s->ndirty && s->dirty[j] == s->dirty[j - 1] + 1 && vmt_gfn_to_pa(s->dirty[j]) < end)
                j++;
            if ((st = snap_write_pages(s, d, pa, (uint64_t)(j - i) * VMT_PAGE_SIZE)))
                return st;
        }
        i = j;
    }
    st = vmt_drv_dirty_log(d, snap_dirty_ignore, NULL, 1);
    if (st)
        return vmt_errbuf_set(&s->err, st, "restore: clearing the dirty log failed: %s", vmt_driver_error(d));
    return VMT_OK;
}

vmt_status snap_zero_dirty_holes(vmt_snapshot *s, vmt_driver *d)
{
    static const uint8_t zero[VMT_PAGE_SIZE];
    s->ndirty = 0;
    s->dirty_oom = 0;
    vmt_status st = vmt_drv_dirty_log(d, collect, s, 0);
    if (st)
        return vmt_errbuf_set(&s->err, st, "snapshot: reading the dirty log failed: %s", vmt_driver_error(d));
    if (s->dirty_oom)
        return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "snapshot: out of memory for the dirty list");
    for (size_t i = 0; i < s->ndirty; i++) {
        vmt_pa pa = vmt_gfn_to_pa(s->dirty[i]);
        if (!snap_block_of(s, pa) && (st = vmt_drv_write_phys(d, pa, zero, sizeof zero)))
            return vmt_errbuf_set(&s->err, st, "snapshot: zeroing gfn 0x%llx failed (driver partly written): %s",
                                  (unsigned long long)s->dirty[i], vmt_driver_error(d));
    }
    st = vmt_drv_dirty_log(d, snap_dirty_ignore, NULL, 1);
    if (st)
        return vmt_errbuf_set(&s->err, st, "snapshot: clearing the dirty log failed: %s", vmt_driver_error(d));
    return VMT_OK;
}

void vmt_snapshot_set_platform_reset(vmt_snapshot *s, vmt_snapshot_platform_reset_fn fn, void *ctx)
{
    s->reset_fn = fn;
    s->reset_ctx = ctx;
}

vmt_status vmt_snapshot_restore(vmt_snapshot *s, vmt_driver *d, vmt_snapshot_run_stats *stats)
{
    uint64_t t0 = now_ns();
    uint64_t pages = 0;
    vmt_status st;
    if (s->applied_to != d || !vmt_driver_has(d, VMT_CAP_DIRTY_LOG)) {
        if ((st = vmt_snapshot_apply(s, d)))
            return st;
        for (size_t i = 0; i < s->nblocks; i++)
            pages += s->blocks[i].size / VMT_PAGE_SIZE;
    } else {
        if ((st = rewrite_dirty(s, d)))
            return st;
        pages = s->ndirty;
        if ((st = snap_set_vcpus(s, d)))
            return st;
    }
    if (s->reset_fn && (st = s->reset_fn(s->reset_ctx, s->platform, s->platform_len)))
        return vmt_errbuf_set(&s->err, st, "restore: the platform reset callback refused the %zu-byte platform "
                              "state: %s (RAM and vCPUs are restored)", s->platform_len, vmt_strerror(st));
    uint64_t dt = now_ns() - t0;
    s->stats.restores++;
    s->stats.last_dirty_pages = pages;
    s->stats.total_dirty_pages += pages;
    s->stats.last_ns = dt;
    s->stats.total_ns += dt;
    if (dt > s->stats.max_ns)
        s->stats.max_ns = dt;
    if (stats)
        *stats = s->stats;
    return VMT_OK;
}

void vmt_snapshot_stats(const vmt_snapshot *s, vmt_snapshot_run_stats *out) { *out = s->stats; }
