/*
 * drivers/mem/mem_views.c — views of the mem driver: create/destroy/switch,
 * per-gfn backing (remap) and rights.
 *
 * Each view keeps only the gfns whose (backing, rights) differ from
 * (gfn, default rights): a sparse vmt_hmap, normalised after every change
 * (an entry that becomes the default is deleted). A backing that is an extra
 * frame holds a reference on it (m->refs) so the frame cannot be freed while
 * a view uses it. Every op validates all arguments before changing anything;
 * the only allocation (vmt_hmap_put) happens before any other change, so a
 * failure leaves the state as it was.
 */
#include <string.h>

#include "drivers/mem/mem_internal.h"

/* In no-op mode views have no state and every id below max_views counts
 * as live, so switching to an id view_create returned works. */
bool mem_view_live(const mem_drv *m, vmt_view view)
{
    return view < m->cfg.max_views && (m->views[view].live || m->cfg.noop);
}

static vmt_status need_view(vmt_driver *d, mem_drv *m, vmt_view view, bool allow_zero, const char *op)
{
    if (view == VMT_VIEW_DEFAULT && !allow_zero)
        return vmt_driver_fail(d, VMT_E_INVAL, "%s: view 0 is the unaltered view and cannot be changed", op);
    if (!mem_view_live(m, view))
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "%s: no view %u", op, view);
    return VMT_OK;
}

static vmt_status need_ram_gfn(vmt_driver *d, mem_drv *m, vmt_gfn gfn, const char *op)
{
    if (gfn >= m->cfg.ram_frames)
        return vmt_driver_fail(d, VMT_E_RANGE, "%s: gfn 0x%llx is not guest RAM (%llu frames)", op,
                               (unsigned long long)gfn, (unsigned long long)m->cfg.ram_frames);
    return VMT_OK;
}

static void ref_adjust(mem_drv *m, vmt_gfn backing, int delta)
{
    if (backing >= m->cfg.ram_frames)
        m->refs[backing - m->cfg.ram_frames] += (uint32_t)delta;
}

/* Store `e` for gfn in view v (normalising). Fails only with NOMEM, then
 * nothing changed. */
static vmt_status set_entry(vmt_driver *d, mem_drv *m, vmt_view v, vmt_gfn gfn, mem_entry e)
{
    mem_view *mv = &m->views[v];
    mem_entry old = { gfn, mv->default_access };
    mem_entry *cur = vmt_hmap_get(&mv->entries, &gfn);
    if (cur)
        old = *cur;
    if (e.backing == gfn && e.access == mv->default_access) {
        vmt_hmap_del(&mv->entries, &gfn, NULL);
    } else if (cur) {
        *cur = e;
    } else {
        void *slot;
        bool existed;
        mem_entry z;
        memset(&z, 0, sizeof z);
        z.backing = e.backing;
        z.access = e.access;
        if (vmt_hmap_put(&mv->entries, &gfn, &z, &slot, &existed))
            return vmt_driver_fail(d, VMT_E_NOMEM, "view %u: no memory for gfn 0x%llx", v,
                                   (unsigned long long)gfn);
    }
    ref_adjust(m, old.backing, -1);
    ref_adjust(m, e.backing, +1);
    return VMT_OK;
}

static vmt_status do_create(vmt_driver *d, mem_drv *m, vmt_access def, vmt_view *out)
{
    vmt_access denied = (vmt_access)(~def & VMT_ACCESS_RWX);
    if (denied & ~m->caps.trap_access) {
        char a[4];
        return vmt_driver_fail(d, VMT_E_NOTSUP, "view_create: default rights '%s' deny accesses it cannot trap",
                               vmt_access_str(def, a));
    }
    for (vmt_view v = 1; v < m->cfg.max_views; v++) {
        if (m->views[v].live)
            continue;
        m->views[v].live = true;
        m->views[v].default_access = def;
        vmt_hmap_init(&m->views[v].entries, sizeof(vmt_gfn), sizeof(mem_entry));
        *out = v;
        return VMT_OK;
    }
    return vmt_driver_fail(d, VMT_E_RANGE, "view_create: all %u views in use", m->cfg.max_views);
}

vmt_status mem_op_view_create(vmt_driver *d, vmt_access default_access, vmt_view *out)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_CREATE, .access = default_access };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    if (m->cfg.noop) {
        *out = m->noop_next_view;
        m->noop_next_view = (vmt_view)(m->noop_next_view + 1 >= m->cfg.max_views ? 1 : m->noop_next_view + 1);
        return VMT_OK;
    }
    st = do_create(d, m, default_access, out);
    if (!st)
        c.view = *out;
    return mem_end(m, &c, st);
}

static vmt_status do_destroy(vmt_driver *d, mem_drv *m, vmt_view v)
{
    vmt_status st = need_view(d, m, v, false, "view_destroy");
    if (st)
        return st;
    for (uint32_t i = 0; i < m->cfg.vcpus; i++)
        if (m->vcpus[i].view == v)
            return vmt_driver_fail(d, VMT_E_BUSY, "view_destroy: vCPU %u is on view %u; switch it away first", i, v);
    size_t it = 0;
    void *k, *val;
    while (vmt_hmap_next(&m->views[v].entries, &it, &k, &val))
        ref_adjust(m, ((mem_entry *)val)->backing, -1);
    vmt_hmap_free(&m->views[v].entries);
    m->views[v].live = false;
    return VMT_OK;
}

vmt_status mem_op_view_destroy(vmt_driver *d, vmt_view view)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_DESTROY, .view = view };
    vmt_status st = mem_begin(d, m, &c);
    if (st || m->cfg.noop)
        return mem_end(m, &c, st);
    return mem_end(m, &c, do_destroy(d, m, view));
}

void mem_switch_view(mem_drv *m, vmt_vcpu vcpu, vmt_view view)
{
    bool per_vcpu = (m->caps.flags & VMT_CAP_VIEW_PER_VCPU) != 0;
    for (uint32_t i = 0; i < m->cfg.vcpus; i++)
        if (vcpu == VMT_VCPU_ALL || !per_vcpu || i == vcpu)
            m->vcpus[i].view = view;
}

vmt_status mem_op_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_SWITCH, .vcpu = vcpu, .view = view };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    if (vcpu != VMT_VCPU_ALL && vcpu >= m->cfg.vcpus)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_INVAL, "view_switch: no vCPU %u", vcpu));
    st = need_view(d, m, view, true, "view_switch");
    if (!st)
        mem_switch_view(m, vcpu, view);
    return mem_end(m, &c, st);
}

vmt_status mem_op_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_CURRENT, .vcpu = vcpu };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    if (vcpu >= m->cfg.vcpus)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_INVAL, "view_current: no vCPU %u", vcpu));
    *out = c.view = m->vcpus[vcpu].view;
    return mem_end(m, &c, VMT_OK);
}

static vmt_status do_remap(vmt_driver *d, mem_drv *m, vmt_view v, vmt_gfn gfn, vmt_gfn backing)
{
    vmt_status st = need_view(d, m, v, false, "view_remap");
    if (!st)
        st = need_ram_gfn(d, m, gfn, "view_remap");
    if (st)
        return st;
    if (backing >= m->cfg.ram_frames) {
        if (backing - m->cfg.ram_frames >= m->cfg.extra_frames)
            return vmt_driver_fail(d, VMT_E_RANGE, "view_remap: backing gfn 0x%llx is neither RAM nor an extra frame",
                                   (unsigned long long)backing);
        if (!mem_frame_ptr(m, backing))
            return vmt_driver_fail(d, VMT_E_NOTFOUND, "view_remap: backing gfn 0x%llx is not an allocated frame",
                                   (unsigned long long)backing);
    }
    mem_entry e = { backing, m->views[v].default_access };
    return set_entry(d, m, v, gfn, e);
}

vmt_status mem_op_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_REMAP, .view = view, .gfn = gfn, .backing = backing };
    vmt_status st = mem_begin(d, m, &c);
    if (st || m->cfg.noop)
        return mem_end(m, &c, st);
    return mem_end(m, &c, do_remap(d, m, view, gfn, backing));
}

static vmt_status do_set_access(vmt_driver *d, mem_drv *m, vmt_view v, vmt_gfn gfn, vmt_access allowed)
{
    vmt_status st = need_view(d, m, v, false, "view_set_access");
    if (!st)
        st = need_ram_gfn(d, m, gfn, "view_set_access");
    if (st)
        return st;
    vmt_access denied = (vmt_access)(~allowed & VMT_ACCESS_RWX);
    if (denied & ~m->caps.trap_access) {
        char a[4];
        return vmt_driver_fail(d, VMT_E_NOTSUP, "view_set_access: rights '%s' deny accesses it cannot trap",
                               vmt_access_str(allowed, a));
    }
    mem_entry e = { gfn, allowed };
    const mem_entry *cur = vmt_hmap_get(&m->views[v].entries, &gfn);
    if (cur)
        e.backing = cur->backing;
    return set_entry(d, m, v, gfn, e);
}

vmt_status mem_op_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_SET_ACCESS, .view = view, .gfn = gfn, .access = allowed };
    vmt_status st = mem_begin(d, m, &c);
    if (st || m->cfg.noop)
        return mem_end(m, &c, st);
    return mem_end(m, &c, do_set_access(d, m, view, gfn, allowed));
}

vmt_status mem_op_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                  vmt_gfn *backing)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_VIEW_GET_ACCESS, .view = view, .gfn = gfn };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    mem_entry e = { gfn, VMT_ACCESS_RWX };
    if (!m->cfg.noop) {
        st = need_view(d, m, view, true, "view_get_access");
        if (!st)
            st = need_ram_gfn(d, m, gfn, "view_get_access");
        if (st)
            return mem_end(m, &c, st);
        const mem_entry *cur = vmt_hmap_get(&m->views[view].entries, &gfn);
        e.access = m->views[view].default_access;
        if (cur)
            e = *cur;
    }
    if (allowed)
        *allowed = e.access;
    if (backing)
        *backing = e.backing;
    c.access = e.access;
    c.backing = e.backing;
    return mem_end(m, &c, VMT_OK);
}

/* Copy between buf and guest RAM as seen through `view`. */
static vmt_status view_bytes(vmt_driver *d, vmt_view view, vmt_pa pa, uint8_t *buf, size_t len, bool write)
{
    mem_drv *m = mem_of(d);
    if (!m)
        return VMT_E_INVAL;
    const char *op = write ? "write_view" : "read_view";
    if (!mem_view_live(m, view))
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "%s: no view %u", op, view);
    uint64_t ram = m->cfg.ram_frames * VMT_PAGE_SIZE;
    if (pa >= ram || len > ram - pa)
        return vmt_driver_fail(d, VMT_E_RANGE, "%s: [0x%llx, +0x%zx) is not guest RAM", op, (unsigned long long)pa,
                               len);
    while (len) {
        vmt_gfn gfn = vmt_pa_to_gfn(pa);
        const mem_entry *e = vmt_hmap_get(&m->views[view].entries, &gfn);
        uint8_t *frame = mem_frame_ptr(m, e ? e->backing : gfn);
        size_t off = vmt_page_offset(pa), n = VMT_PAGE_SIZE - off;
        if (n > len)
            n = len;
        if (write) {
            memcpy(frame + off, buf, n);
            mem_mark_dirty(m, pa, n);
        } else {
            memcpy(buf, frame + off, n);
        }
        buf += n;
        pa += n;
        len -= n;
    }
    return VMT_OK;
}

vmt_status vmt_mem_read_view(vmt_driver *d, vmt_view view, vmt_pa pa, void *buf, size_t len)
{
    return view_bytes(d, view, pa, buf, len, false);
}

vmt_status vmt_mem_write_view(vmt_driver *d, vmt_view view, vmt_pa pa, const void *buf, size_t len)
{
    return view_bytes(d, view, pa, (uint8_t *)buf, len, true);
}

void mem_views_free(mem_drv *m)
{
    if (!m->views)
        return;
    for (uint32_t v = 0; v < m->cfg.max_views; v++)
        if (m->views[v].live)
            vmt_hmap_free(&m->views[v].entries);
}
