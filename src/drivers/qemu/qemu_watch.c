/*
 * drivers/qemu/qemu_watch.c — write watchpoints (gdbstub Z2 on guest-virtual
 * ranges, any length under TCG) and what a hit means.
 *
 * QEMU 7.2 reports a hit after the writing instruction, as "watch:ADDR" with
 * ADDR the watchpoint's START, not the written address. So when a watch is
 * set the driver translates its pages (current CR3) and keeps a shadow copy
 * of the range (at most QEMU_WATCH_SHADOW_MAX bytes); a hit is diffed
 * against the shadow in 8-byte words from the range start: the first word
 * that changed gives gva/gpa, and the new value is reported as data
 * (has_data, size 8 or less at the end). A write of an unchanged value, or a
 * range that could not be translated or is too large, is reported at the
 * range start without data. The shadow is refreshed at every hit.
 *
 * A physical page (e.g. a page-table page) is watched through a linear map
 * that covers it: vmt_qemu_watch_phys(pa, len, map_base) watches map_base+pa
 * (Linux: page_offset_base). Writes through other aliases of the frame are
 * not seen (QEMU watches virtual addresses).
 *
 * The driver's write-only VIEW_PERM control (qemu.h) is built on this: a
 * frame without W in view 0 is a 4096-byte watch (flag `frame`) on
 * map_base + gfn*4096, checked to translate to that gfn when set. A hit
 * names every changed 8-byte word: the first in the event, the others in
 * the driver's queue (reported next, before the guest runs again). A hit
 * for a watch the driver no longer has is dropped and counted. The table
 * of watches is searched linearly (tens of table pages in practice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qemu/qemu_internal.h"
#include "vmtrap/paging.h"

void qemu_watch_free(qemu_watch *w)
{
    free(w->shadow);
    free(w->page_pa);
    w->shadow = NULL;
    w->page_pa = NULL;
    w->npages = 0;
}

static vmt_status walk_reader(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

static vmt_status translate(vmt_driver *d, vmt_va va, vmt_pa *pa)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = qemu_fetch_regs(d);
    if (st)
        return st;
    if (!(q->regs.cr0 & VMT_CR0_PG)) {
        *pa = va;
        return VMT_OK;
    }
    vmt_phys_reader rd = { walk_reader, d };
    vmt_paging_config pc = { .levels = (q->regs.cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                             .nxe = (q->regs.efer & VMT_EFER_NXE) != 0 };
    vmt_walk w;
    st = vmt_paging_walk(&rd, &pc, q->regs.cr3 & VMT_PTE_ADDR_MASK, va, &w, NULL, 0);
    if (!st)
        *pa = w.pa;
    return st;
}

/* Read the watched range through page_pa into buf. */
static vmt_status read_range(vmt_driver *d, const qemu_watch *w, uint8_t *buf)
{
    uint64_t off = 0;
    for (size_t i = 0; i < w->npages; i++) {
        uint64_t in_page = 4096 - ((w->va + off) & 4095);
        uint64_t n = w->len - off < in_page ? w->len - off : in_page;
        vmt_status st = vmt_drv_read_phys(d, w->page_pa[i], buf + off, (size_t)n);
        if (st)
            return st;
        off += n;
    }
    return VMT_OK;
}

/* Translate and copy the range; on any failure the watch has no shadow. */
static void shadow_init(vmt_driver *d, qemu_watch *w)
{
    if (w->len > QEMU_WATCH_SHADOW_MAX)
        return;
    size_t npages = (size_t)(((w->va + w->len - 1) >> 12) - (w->va >> 12) + 1);
    w->page_pa = calloc(npages, sizeof *w->page_pa);
    w->shadow = malloc((size_t)w->len);
    w->npages = npages;
    if (!w->page_pa || !w->shadow) {
        qemu_watch_free(w);
        return;
    }
    for (size_t i = 0; i < npages; i++) {
        vmt_va page_va = i == 0 ? w->va : ((w->va >> 12) + i) << 12;
        if (translate(d, page_va, &w->page_pa[i])) {
            qemu_watch_free(w);
            return;
        }
    }
    if (read_range(d, w, w->shadow))
        qemu_watch_free(w);
}

vmt_status vmt_qemu_watch(vmt_driver *d, vmt_va va, uint64_t len, int enable)
{
    if (!vmt_qemu_is_qemu(d))
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    if (q->gone)
        return vmt_driver_fail(d, VMT_E_STOPPED, "QEMU is gone");
    if (len == 0 || va + len - 1 < va)
        return vmt_driver_fail(d, VMT_E_INVAL, "watch range 0x%llx+0x%llx is empty or wraps", (unsigned long long)va,
                               (unsigned long long)len);
    size_t i;
    for (i = 0; i < q->nwatches; i++)
        if (q->watches[i].va == va && q->watches[i].len == len)
            break;
    if (enable && i < q->nwatches)
        return vmt_driver_fail(d, VMT_E_EXISTS, "0x%llx+0x%llx is already watched", (unsigned long long)va,
                               (unsigned long long)len);
    if (!enable && i < q->nwatches && q->watches[i].frame)
        return vmt_driver_fail(d, VMT_E_BUSY, "0x%llx+0x%llx is a write-protected frame (view_set_access owns it)",
                               (unsigned long long)va, (unsigned long long)len);
    if (!enable && i == q->nwatches)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "0x%llx+0x%llx is not watched", (unsigned long long)va,
                               (unsigned long long)len);
    if (enable && q->nwatches == q->capwatches) {
        size_t cap = q->capwatches ? 2 * q->capwatches : 16;
        qemu_watch *p = realloc(q->watches, cap * sizeof *p);
        if (!p)
            return vmt_driver_fail(d, VMT_E_NOMEM, "out of memory");
        q->watches = p;
        q->capwatches = cap;
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "%c2,%llx,%llx", enable ? 'Z' : 'z', (unsigned long long)va, (unsigned long long)len);
    vmt_status st = gdb_exchange_ok(&q->gdb, cmd);
    if (st)
        return qemu_gdb_fail(d, st, enable ? "setting a write watchpoint" : "removing a write watchpoint");
    if (enable) {
        qemu_watch *w = &q->watches[q->nwatches++];
        memset(w, 0, sizeof *w);
        w->va = va;
        w->len = len;
        shadow_init(d, w);
    } else {
        qemu_watch_free(&q->watches[i]);
        q->watches[i] = q->watches[--q->nwatches];
    }
    return VMT_OK;
}

vmt_status vmt_qemu_watch_phys(vmt_driver *d, vmt_pa pa, uint64_t len, vmt_va map_base, int enable)
{
    if (!vmt_qemu_is_qemu(d))
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    if (pa > q->ram_bytes || len > q->ram_bytes - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "physical range 0x%llx+0x%llx is outside guest RAM",
                               (unsigned long long)pa, (unsigned long long)len);
    if (map_base + pa < map_base)
        return vmt_driver_fail(d, VMT_E_INVAL, "map base 0x%llx + pa wraps", (unsigned long long)map_base);
    return vmt_qemu_watch(d, map_base + pa, len, enable);
}

static vmt_pa pa_of(const qemu_watch *w, uint64_t off)
{
    size_t page = (size_t)(((w->va + off) >> 12) - (w->va >> 12));
    return page == 0 ? w->page_pa[0] + off : (w->page_pa[page] & ~0xfffull) + ((w->va + off) & 0xfff);
}

/* Queue a further changed word of the same hit. -1 when the queue is full:
 * the caller then leaves that word (and the rest) out of the shadow, so the
 * next hit on the frame reports them (late, never lost). */
static int queue_word(qemu_drv *q, vmt_va gva, vmt_pa gpa, const uint8_t *bytes, uint64_t n)
{
    if (!q->queue) {
        q->queue = calloc(QEMU_QUEUE_MAX, sizeof *q->queue);
        if (!q->queue)
            return -1;
    }
    if (q->qhead + q->qlen >= QEMU_QUEUE_MAX) {
        memmove(q->queue, q->queue + q->qhead, q->qlen * sizeof *q->queue);
        q->qhead = 0;
    }
    if (q->qlen >= QEMU_QUEUE_MAX)
        return -1;
    vmt_event *e = &q->queue[q->qhead + q->qlen++];
    memset(e, 0, sizeof *e);
    e->kind = VMT_EVENT_MEM_ACCESS;
    e->u.mem.gva = gva;
    e->u.mem.gva_valid = true;
    e->u.mem.gpa = gpa;
    e->u.mem.access = VMT_ACCESS_W;
    e->u.mem.has_data = true;
    e->u.mem.size = (uint8_t)n;
    memcpy(&e->u.mem.value, bytes, (size_t)n);
    q->watch_words++;
    return 0;
}

static qemu_watch *watch_of(qemu_drv *q, vmt_va watch_addr)
{
    /* QEMU reports the watchpoint's start: an exact match first. */
    for (size_t i = 0; i < q->nwatches; i++)
        if (q->watches[i].va == watch_addr)
            return &q->watches[i];
    for (size_t i = 0; i < q->nwatches; i++)
        if (watch_addr >= q->watches[i].va && watch_addr - q->watches[i].va < q->watches[i].len)
            return &q->watches[i];
    return NULL;
}

int qemu_watch_hit(vmt_driver *d, vmt_va watch_addr, vmt_event *ev)
{
    qemu_drv *q = qemu_of(d);
    ev->u.mem.gva = watch_addr;
    qemu_watch *w = watch_of(q, watch_addr);
    if (!w) {
        /* Removed before QEMU's report reached us (or never ours): the store
         * happened, but nobody asked for it any more. */
        q->stale_watch_hits++;
        return 0;
    }
    if (!w->shadow) {
        vmt_pa pa;
        if (translate(d, watch_addr, &pa) == VMT_OK)
            ev->u.mem.gpa = pa;
        return 1;
    }
    ev->u.mem.gva = w->va;
    ev->u.mem.gpa = pa_of(w, 0);
    uint8_t *now = malloc((size_t)w->len);
    if (!now || read_range(d, w, now)) {
        free(now);
        return 1;
    }
    bool first = true;
    uint64_t seen = w->len; /* the shadow takes the new bytes up to here */
    for (uint64_t off = 0; off < w->len; off += 8) {
        uint64_t n = w->len - off < 8 ? w->len - off : 8;
        if (!memcmp(now + off, w->shadow + off, (size_t)n))
            continue;
        if (!first) {
            if (queue_word(q, w->va + off, pa_of(w, off), now + off, n)) {
                seen = off;
                break;
            }
            continue;
        }
        first = false;
        q->watch_words++;
        ev->u.mem.gva = w->va + off;
        ev->u.mem.gpa = pa_of(w, off);
        ev->u.mem.has_data = true;
        ev->u.mem.size = (uint8_t)n;
        ev->u.mem.value = 0;
        memcpy(&ev->u.mem.value, now + off, (size_t)n);
    }
    memcpy(w->shadow, now, (size_t)seen);
    free(now);
    return 1;
}

/* ---- the write-only VIEW_PERM control (frames through the linear map) ---- */

static qemu_watch *frame_watch(qemu_drv *q, vmt_gfn gfn, size_t *index)
{
    vmt_va va = q->map_base + (gfn << 12);
    for (size_t i = 0; i < q->nwatches; i++)
        if (q->watches[i].frame && q->watches[i].va == va) {
            if (index)
                *index = i;
            return &q->watches[i];
        }
    return NULL;
}

static vmt_status check_view_gfn(vmt_driver *d, vmt_view view, vmt_gfn gfn)
{
    qemu_drv *q = qemu_of(d);
    if (view != VMT_VIEW_DEFAULT)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "view %u does not exist (the qemu driver has view 0 only)",
                               (unsigned)view);
    if (gfn >= q->ram_bytes / 4096)
        return vmt_driver_fail(d, VMT_E_RANGE, "gfn 0x%llx is past guest RAM", (unsigned long long)gfn);
    if (!q->map_base)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "no linear map base: frames cannot be watched");
    return VMT_OK;
}

vmt_status qemu_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed)
{
    qemu_drv *q = qemu_of(d);
    vmt_status st = check_view_gfn(d, view, gfn);
    if (st)
        return st;
    size_t i;
    qemu_watch *w = frame_watch(q, gfn, &i);
    if (allowed & VMT_ACCESS_W) {
        if (!w)
            return VMT_OK;
        w->frame = false;
        st = vmt_qemu_watch(d, w->va, w->len, 0);
        if (st) {
            q->watches[i].frame = true; /* the removal failed before the table changed */
            return st;
        }
        q->nframes--;
        return VMT_OK;
    }
    if (w)
        return VMT_OK;
    vmt_va va = q->map_base + (gfn << 12);
    vmt_pa pa;
    if ((st = translate(d, va, &pa)))
        return vmt_driver_fail(d, st == VMT_E_NOT_PRESENT ? VMT_E_RANGE : st,
                               "map base 0x%llx does not map gfn 0x%llx (va 0x%llx does not translate under cr3 "
                               "0x%llx)", (unsigned long long)q->map_base, (unsigned long long)gfn,
                               (unsigned long long)va, (unsigned long long)q->regs.cr3);
    if (pa != gfn << 12)
        return vmt_driver_fail(d, VMT_E_RANGE, "map base 0x%llx does not map gfn 0x%llx (va 0x%llx is pa 0x%llx)",
                               (unsigned long long)q->map_base, (unsigned long long)gfn, (unsigned long long)va,
                               (unsigned long long)pa);
    if ((st = vmt_qemu_watch(d, va, 4096, 1)))
        return st;
    w = &q->watches[q->nwatches - 1];
    if (!w->shadow) {
        (void)vmt_qemu_watch(d, va, 4096, 0);
        return vmt_driver_fail(d, VMT_E_NOMEM, "no shadow copy of gfn 0x%llx: its writes could not be named",
                               (unsigned long long)gfn);
    }
    w->frame = true;
    q->nframes++;
    return VMT_OK;
}

vmt_status qemu_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed, vmt_gfn *backing)
{
    vmt_status st = check_view_gfn(d, view, gfn);
    if (st)
        return st;
    if (allowed)
        *allowed = frame_watch(qemu_of(d), gfn, NULL) ? VMT_ACCESS_RX : VMT_ACCESS_RWX;
    if (backing)
        *backing = gfn;
    return VMT_OK;
}

void qemu_caps(const qemu_drv *q, vmt_caps *c)
{
    memset(c, 0, sizeof *c);
    c->flags = VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_REGS_SET | VMT_CAP_PAUSE |
               VMT_CAP_EVENTS | VMT_CAP_SINGLESTEP | VMT_CAP_HW_BREAKPOINTS;
    if (q->map_base) {
        c->flags |= VMT_CAP_VIEW_PERM | VMT_CAP_WRITE_DATA | VMT_CAP_WRITE_AFTER;
        c->trap_access = VMT_ACCESS_W;
    }
    c->max_views = 1;
    c->hw_breakpoints = QEMU_SLOTS;
    c->vcpus = 1;
    c->ram_frames = q->ram_bytes / 4096;
    c->maxphyaddr = 40; /* qemu64's CPUID 0x80000008 phys-bits */
}

vmt_status vmt_qemu_set_map_base(vmt_driver *d, vmt_va map_base)
{
    if (!vmt_qemu_is_qemu(d))
        return VMT_E_INVAL;
    qemu_drv *q = qemu_of(d);
    if (map_base & 0xfff)
        return vmt_driver_fail(d, VMT_E_INVAL, "map base 0x%llx is not page-aligned", (unsigned long long)map_base);
    if (q->nframes && map_base != q->map_base)
        return vmt_driver_fail(d, VMT_E_BUSY, "%u frames are watched through map base 0x%llx", q->nframes,
                               (unsigned long long)q->map_base);
    vmt_va old = q->map_base;
    q->map_base = map_base;
    vmt_caps c;
    qemu_caps(q, &c);
    vmt_status st = vmt_driver_set_caps(d, &c);
    if (st)
        q->map_base = old;
    return st;
}
