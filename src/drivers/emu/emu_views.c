/*
 * drivers/emu/emu_views.c — views of the emulator driver (Xen altp2m
 * semantics, same rules as the mem driver, see vmtrap/mem.h).
 *
 * Design: view 0 is the unaltered memory and cannot be changed. Every other
 * view has a default rights set and a hash map of per-gfn overrides
 * (backing frame + rights); a gfn without an override is backed by itself
 * with the default rights. A remap resets the gfn's rights to the default.
 * Any change to the view the MMU currently uses re-derives the software-TLB
 * entries that depend on the gfn (emu_tlb_revalidate), so the next guest
 * access sees the new backing / rights.
 *
 * Invariants: views[0] is live with RWX and no overrides; an override's
 * backing is a RAM frame or an allocated extra frame; override keys are RAM
 * gfns.
 */
#include <string.h>

#include "drivers/emu/emu_priv.h"

vmt_status emu_views_init(emu *e, uint16_t max_views)
{
    e->views = calloc(max_views, sizeof *e->views);
    if (!e->views)
        return VMT_E_NOMEM;
    e->max_views = max_views;
    for (uint16_t i = 0; i < max_views; i++)
        vmt_hmap_init(&e->views[i].gfns, sizeof(vmt_gfn), sizeof(emu_gfn_ov));
    e->views[0].live = true;
    e->views[0].def = VMT_ACCESS_RWX;
    return VMT_OK;
}

void emu_views_free(emu *e)
{
    if (!e->views)
        return;
    for (uint16_t i = 0; i < e->max_views; i++)
        vmt_hmap_free(&e->views[i].gfns);
    free(e->views);
    e->views = NULL;
}

vmt_access emu_view_resolve(const emu *e, vmt_view v, vmt_gfn gfn, vmt_gfn *backing)
{
    *backing = gfn;
    if (v == VMT_VIEW_DEFAULT || v >= e->max_views || !e->views[v].live)
        return VMT_ACCESS_RWX;
    const emu_gfn_ov *ov = vmt_hmap_get(&e->views[v].gfns, &gfn);
    if (!ov)
        return e->views[v].def;
    *backing = ov->backing;
    return ov->access;
}

bool emu_frame_is_backing(const emu *e, vmt_gfn frame)
{
    for (uint16_t v = 1; v < e->max_views; v++) {
        if (!e->views[v].live)
            continue;
        size_t it = 0;
        void *k, *val;
        while (vmt_hmap_next(&e->views[v].gfns, &it, &k, &val))
            if (((emu_gfn_ov *)val)->backing == frame)
                return true;
    }
    return false;
}

static emu *impl(vmt_driver *d) { return vmt_driver_impl(d); }

static vmt_status check_view(vmt_driver *d, vmt_view view, bool allow_default)
{
    emu *e = impl(d);
    if (view >= e->max_views || !e->views[view].live)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "view %u does not exist", view);
    if (!allow_default && view == VMT_VIEW_DEFAULT)
        return vmt_driver_fail(d, VMT_E_INVAL, "view 0 is the unaltered view and cannot be changed");
    return VMT_OK;
}

vmt_status emu_op_view_create(vmt_driver *d, vmt_access def, vmt_view *out)
{
    emu *e = impl(d);
    for (uint16_t v = 1; v < e->max_views; v++) {
        if (!e->views[v].live) {
            e->views[v].live = true;
            e->views[v].def = def;
            vmt_hmap_clear(&e->views[v].gfns);
            *out = v;
            return VMT_OK;
        }
    }
    return vmt_driver_fail(d, VMT_E_RANGE, "all %u views are in use", e->max_views);
}

vmt_status emu_op_view_destroy(vmt_driver *d, vmt_view view)
{
    emu *e = impl(d);
    vmt_status st = check_view(d, view, false);
    if (st)
        return st;
    if (e->cur_view == view || e->mmu_view == view)
        return vmt_driver_fail(d, VMT_E_BUSY, "view %u is the current view of vCPU 0", view);
    e->views[view].live = false;
    vmt_hmap_clear(&e->views[view].gfns);
    return VMT_OK;
}

vmt_status emu_op_view_switch(vmt_driver *d, vmt_vcpu vcpu, vmt_view view)
{
    emu *e = impl(d);
    if (vcpu != 0 && vcpu != VMT_VCPU_ALL)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    vmt_status st = check_view(d, view, true);
    if (st)
        return st;
    e->cur_view = view;
    if (e->step == EMU_STEP_NONE || !e->step_restore_view) {
        e->mmu_view = view;
        emu_tlb_revalidate(e);
    } else {
        e->step_return_view = view;
    }
    return VMT_OK;
}

vmt_status emu_op_view_current(vmt_driver *d, vmt_vcpu vcpu, vmt_view *out)
{
    emu *e = impl(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    *out = e->cur_view;
    return VMT_OK;
}

static vmt_status check_gfn(vmt_driver *d, vmt_gfn gfn)
{
    emu *e = impl(d);
    if (gfn >= e->ram_frames)
        return vmt_driver_fail(d, VMT_E_RANGE, "gfn 0x%llx is not guest RAM (%llu frames)",
                               (unsigned long long)gfn, (unsigned long long)e->ram_frames);
    return VMT_OK;
}

/* An existing non-default view and a guest-RAM gfn (remap, set_access). */
static vmt_status check_view_gfn(vmt_driver *d, vmt_view view, vmt_gfn gfn)
{
    vmt_status st = check_view(d, view, false);
    return st ? st : check_gfn(d, gfn);
}

static vmt_status put_override(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing,
                               vmt_access access)
{
    emu *e = impl(d);
    emu_view *v = &e->views[view];
    if (backing == gfn && access == v->def) {
        vmt_hmap_del(&v->gfns, &gfn, NULL);
    } else {
        emu_gfn_ov ov = { backing, access };
        void *slot;
        bool existed;
        vmt_status st = vmt_hmap_put(&v->gfns, &gfn, &ov, &slot, &existed);
        if (st)
            return vmt_driver_fail(d, st, "out of memory for view %u overrides", view);
        *(emu_gfn_ov *)slot = ov;
    }
    if (view == e->mmu_view || view == e->cur_view)
        emu_tlb_revalidate(e);
    return VMT_OK;
}

vmt_status emu_op_view_remap(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_gfn backing)
{
    emu *e = impl(d);
    vmt_status st = check_view_gfn(d, view, gfn);
    if (st)
        return st;
    bool ok = backing < e->ram_frames ||
              (backing < emu_total_frames(e) && e->extra_used[backing - e->ram_frames]);
    if (!ok)
        return vmt_driver_fail(d, VMT_E_RANGE,
                               "backing frame 0x%llx is neither RAM nor an allocated extra frame",
                               (unsigned long long)backing);
    return put_override(d, view, gfn, backing, e->views[view].def);
}

vmt_status emu_op_view_set_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access allowed)
{
    emu *e = impl(d);
    vmt_status st = check_view_gfn(d, view, gfn);
    if (st)
        return st;
    vmt_gfn backing;
    (void)emu_view_resolve(e, view, gfn, &backing);
    return put_override(d, view, gfn, backing, allowed);
}

vmt_status emu_op_view_get_access(vmt_driver *d, vmt_view view, vmt_gfn gfn, vmt_access *allowed,
                                  vmt_gfn *backing)
{
    emu *e = impl(d);
    vmt_status st = check_view(d, view, true);
    if (!st)
        st = check_gfn(d, gfn);
    if (st)
        return st;
    vmt_gfn b;
    vmt_access a = emu_view_resolve(e, view, gfn, &b);
    if (allowed)
        *allowed = a;
    if (backing)
        *backing = b;
    return VMT_OK;
}
