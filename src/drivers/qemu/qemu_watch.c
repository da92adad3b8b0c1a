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

void qemu_watch_hit(vmt_driver *d, vmt_va watch_addr, vmt_event *ev)
{
    qemu_drv *q = qemu_of(d);
    ev->u.mem.gva = watch_addr;
    qemu_watch *w = NULL;
    for (size_t i = 0; i < q->nwatches; i++)
        if (watch_addr >= q->watches[i].va && watch_addr - q->watches[i].va < q->watches[i].len) {
            w = &q->watches[i];
            break;
        }
    if (!w || !w->shadow) {
        vmt_pa pa;
        if (translate(d, watch_addr, &pa) == VMT_OK)
            ev->u.mem.gpa = pa;
        return;
    }
    ev->u.mem.gpa = pa_of(w, watch_addr - w->va);
    uint8_t *now = malloc((size_t)w->len);
    if (!now || read_range(d, w, now)) {
        free(now);
        return;
    }
    for (uint64_t off = 0; off < w->len; off += 8) {
        uint64_t n = w->len - off < 8 ? w->len - off : 8;
        if (!memcmp(now + off, w->shadow + off, (size_t)n))
            continue;
        ev->u.mem.gva = w->va + off;
        ev->u.mem.gpa = pa_of(w, off);
        ev->u.mem.has_data = true;
        ev->u.mem.size = (uint8_t)n;
        ev->u.mem.value = 0;
        memcpy(&ev->u.mem.value, now + off, (size_t)n);
        break;
    }
    memcpy(w->shadow, now, (size_t)w->len);
    free(now);
}
