/*
 * tests/conformance/conf_views.c — conformance group "views": create,
 * destroy, switch and current up to max_views; per-vCPU vs VM-wide
 * switching; remap and rights per (view, gfn); remap resets rights; unknown
 * views and gfns outside RAM are refused; view 0 stays unaltered.
 */
#include <string.h>

#include "conformance.h"

static vmt_view new_view(vmt_conf *c, vmt_access def)
{
    vmt_view v = VMT_VIEW_INVALID;
    VMT_CONF_OK(c, vmt_drv_view_create(c->d, def, &v));
    if (v == VMT_VIEW_DEFAULT || v == VMT_VIEW_INVALID || v >= c->caps->max_views)
        fail_msg("view_create returned id %u (max_views %u)", v, c->caps->max_views);
    return v;
}

static vmt_view current(vmt_conf *c, vmt_vcpu vcpu)
{
    vmt_view v = VMT_VIEW_INVALID;
    VMT_CONF_OK(c, vmt_drv_view_current(c->d, vcpu, &v));
    return v;
}

/* A view id that is certainly not live. */
static vmt_view unknown_view(vmt_conf *c)
{
    return (vmt_view)(c->caps->max_views < VMT_VIEW_INVALID - 1 ? c->caps->max_views + 1 : 0xfffe);
}

static void views_up_to_max(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    unsigned n = c->caps->max_views - 1u; /* view 0 counts */
    if (n > 256)
        n = 256; /* keep the test fast on drivers with huge limits */
    vmt_view ids[256] = { 0 };
    for (unsigned i = 0; i < n; i++) {
        ids[i] = new_view(c, VMT_ACCESS_RWX);
        for (unsigned j = 0; j < i; j++)
            if (ids[j] == ids[i])
                fail_msg("view_create returned id %u twice", ids[i]);
    }
    vmt_view extra;
    if (n == c->caps->max_views - 1u)
        VMT_CONF_FAILS(c, vmt_drv_view_create(c->d, VMT_ACCESS_RWX, &extra));
    VMT_CONF_OK(c, vmt_drv_view_destroy(c->d, ids[0]));
    VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_destroy(c->d, ids[0]));
    ids[0] = new_view(c, VMT_ACCESS_RWX); /* a slot freed by destroy can be used again */
    for (unsigned i = 0; i < n; i++)
        VMT_CONF_OK(c, vmt_drv_view_destroy(c->d, ids[i]));
    VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_destroy(c->d, unknown_view(c)));
    VMT_CONF_EXPECT(c, VMT_E_INVAL, vmt_drv_view_destroy(c->d, VMT_VIEW_DEFAULT));
}

static void switch_and_current(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    assert_int_equal(current(c, 0), VMT_VIEW_DEFAULT);
    vmt_view v = new_view(c, VMT_ACCESS_RWX);
    assert_int_equal(current(c, 0), VMT_VIEW_DEFAULT); /* create does not switch */
    VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 0, v));
    assert_int_equal(current(c, 0), v);
    VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_switch(c->d, 0, unknown_view(c)));
    assert_int_equal(current(c, 0), v);
    /* A view in use cannot be destroyed; it stays usable. */
    VMT_CONF_EXPECT(c, VMT_E_BUSY, vmt_drv_view_destroy(c->d, v));
    assert_int_equal(current(c, 0), v);
    VMT_CONF_OK(c, vmt_drv_view_switch(c->d, VMT_VCPU_ALL, VMT_VIEW_DEFAULT));
    assert_int_equal(current(c, 0), VMT_VIEW_DEFAULT);
    VMT_CONF_OK(c, vmt_drv_view_destroy(c->d, v));
    VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_switch(c->d, 0, v));
}

/* Per-vCPU drivers switch only the named vCPU; VM-wide ones switch all. */
static void switch_scope(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    vmt_machine_config mc = vmt_conf_default_config(c);
    mc.vcpus = 2;
    if (vmt_conf_reopen(c, &mc) != VMT_OK || c->caps->vcpus < 2 || !vmt_driver_has(c->d, VMT_CAP_VIEWS))
        skip(); /* the driver cannot run two vCPUs */
    vmt_view v = new_view(c, VMT_ACCESS_RWX);
    if (vmt_driver_has(c->d, VMT_CAP_VIEW_PER_VCPU)) {
        VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 1, v));
        assert_int_equal(current(c, 0), VMT_VIEW_DEFAULT);
        assert_int_equal(current(c, 1), v);
        VMT_CONF_OK(c, vmt_drv_view_switch(c->d, VMT_VCPU_ALL, v));
        assert_int_equal(current(c, 0), v);
        VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 0, VMT_VIEW_DEFAULT));
        assert_int_equal(current(c, 0), VMT_VIEW_DEFAULT);
        assert_int_equal(current(c, 1), v);
    } else {
        VMT_CONF_OK(c, vmt_drv_view_switch(c->d, 0, v));
        assert_int_equal(current(c, 0), v);
        assert_int_equal(current(c, 1), v);
        VMT_CONF_OK(c, vmt_drv_view_switch(c->d, VMT_VCPU_ALL, VMT_VIEW_DEFAULT));
        assert_int_equal(current(c, 1), VMT_VIEW_DEFAULT);
    }
}

static void access_of(vmt_conf *c, vmt_view v, vmt_gfn gfn, vmt_access *a, vmt_gfn *backing)
{
    VMT_CONF_OK(c, vmt_drv_view_get_access(c->d, v, gfn, a, backing));
}

static void remap_and_get_access(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM);
    vmt_view v = new_view(c, VMT_ACCESS_RWX);
    vmt_access a;
    vmt_gfn b;
    access_of(c, v, 7, &a, &b);
    assert_int_equal(b, 7);
    assert_int_equal(a, VMT_ACCESS_RWX);
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 7, 9));
    access_of(c, v, 7, &a, &b);
    assert_int_equal(b, 9);
    access_of(c, v, 9, &a, &b); /* the target itself is not remapped */
    assert_int_equal(b, 9);
    access_of(c, VMT_VIEW_DEFAULT, 7, &a, &b); /* view 0 is unaltered */
    assert_int_equal(b, 7);
    assert_int_equal(a, VMT_ACCESS_RWX);
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 7, 7)); /* undo */
    access_of(c, v, 7, &a, &b);
    assert_int_equal(b, 7);
}

static void rights_set_get(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEW_PERM);
    vmt_view v = new_view(c, VMT_ACCESS_RWX);
    vmt_access trap = c->caps->trap_access;
    for (vmt_access want = 0; want <= VMT_ACCESS_RWX; want++) {
        vmt_access denied = (vmt_access)(~want & VMT_ACCESS_RWX);
        if (denied & ~trap) {
            VMT_CONF_EXPECT(c, VMT_E_NOTSUP, vmt_drv_view_set_access(c->d, v, 3, want));
            continue;
        }
        VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v, 3, want));
        vmt_access a;
        vmt_gfn b;
        access_of(c, v, 3, &a, &b);
        assert_int_equal(a, want);
        assert_int_equal(b, 3);
        access_of(c, v, 4, &a, &b); /* the neighbour keeps the default */
        assert_int_equal(a, VMT_ACCESS_RWX);
        access_of(c, VMT_VIEW_DEFAULT, 3, &a, &b);
        assert_int_equal(a, VMT_ACCESS_RWX);
    }
}

/* Xen altp2m semantics: a remap resets the gfn's rights to the view's
 * default, in a view whose default is RWX and in one whose default is not. */
static void remap_resets_rights(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM);
    vmt_access trap = c->caps->trap_access;
    vmt_access defaults[2] = { VMT_ACCESS_RWX, (vmt_access)(VMT_ACCESS_RWX & ~(trap & VMT_ACCESS_W ? VMT_ACCESS_W : trap)) };
    for (int i = 0; i < 2; i++) {
        vmt_view v = new_view(c, defaults[i]);
        vmt_access a;
        vmt_gfn b;
        access_of(c, v, 11, &a, &b);
        assert_int_equal(a, defaults[i]); /* a new view has its default everywhere */
        vmt_access restricted = (vmt_access)(VMT_ACCESS_RWX & ~trap);
        VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v, 11, restricted));
        VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 11, 12));
        access_of(c, v, 11, &a, &b);
        assert_int_equal(b, 12);
        if (a != defaults[i])
            fail_msg("after remap, rights are 0x%x, expected the view default 0x%x", a, defaults[i]);
        VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v, 11, restricted));
        VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 11, 11));
        access_of(c, v, 11, &a, &b);
        assert_int_equal(a, defaults[i]);
        assert_int_equal(b, 11);
    }
}

/* State is per view: changing one view leaves the others as they were,
 * also when the changed view is destroyed. */
static void views_are_independent(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM);
    if (c->caps->max_views < 3)
        skip();
    vmt_view v1 = new_view(c, VMT_ACCESS_RWX), v2 = new_view(c, VMT_ACCESS_RWX);
    vmt_access restricted = (vmt_access)(VMT_ACCESS_RWX & ~c->caps->trap_access);
    vmt_access a;
    vmt_gfn b;
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v1, 7, 8));
    VMT_CONF_OK(c, vmt_drv_view_set_access(c->d, v2, 9, restricted));
    access_of(c, v2, 7, &a, &b);
    assert_int_equal(b, 7);
    access_of(c, v1, 9, &a, &b);
    assert_int_equal(a, VMT_ACCESS_RWX);
    VMT_CONF_OK(c, vmt_drv_view_destroy(c->d, v1));
    access_of(c, v2, 9, &a, &b);
    assert_int_equal(a, restricted);
    access_of(c, v2, 7, &a, &b);
    assert_int_equal(b, 7);
    vmt_view v3 = new_view(c, VMT_ACCESS_RWX); /* may reuse v1's id: starts clean */
    access_of(c, v3, 7, &a, &b);
    assert_int_equal(b, 7);
    assert_int_equal(a, VMT_ACCESS_RWX);
}

static void bad_views_and_gfns(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    vmt_view v = new_view(c, VMT_ACCESS_RWX);
    vmt_view u = unknown_view(c);
    vmt_gfn past = c->caps->ram_frames;
    vmt_access a;
    vmt_gfn b;
    if (vmt_driver_has(c->d, VMT_CAP_VIEW_REMAP)) {
        VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_remap(c->d, u, 1, 2));
        VMT_CONF_FAILS(c, vmt_drv_view_remap(c->d, VMT_VIEW_DEFAULT, 1, 2));
        VMT_CONF_FAILS(c, vmt_drv_view_remap(c->d, v, past, 2));
        VMT_CONF_FAILS(c, vmt_drv_view_remap(c->d, v, 1, 1ull << 40));
    }
    if (vmt_driver_has(c->d, VMT_CAP_VIEW_PERM)) {
        VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_set_access(c->d, u, 1, VMT_ACCESS_RWX));
        VMT_CONF_EXPECT(c, VMT_E_NOTFOUND, vmt_drv_view_get_access(c->d, u, 1, &a, &b));
        VMT_CONF_FAILS(c, vmt_drv_view_set_access(c->d, VMT_VIEW_DEFAULT, 1, VMT_ACCESS_RWX & ~c->caps->trap_access));
        VMT_CONF_FAILS(c, vmt_drv_view_set_access(c->d, v, past, VMT_ACCESS_RWX));
        VMT_CONF_FAILS(c, vmt_drv_view_get_access(c->d, v, past, &a, &b));
        access_of(c, VMT_VIEW_DEFAULT, 1, &a, &b);
        assert_int_equal(a, VMT_ACCESS_RWX);
        assert_int_equal(b, 1);
    }
    VMT_CONF_FAILS(c, vmt_drv_view_current(c->d, c->caps->vcpus, &v));
}

static const struct CMUnitTest views_tests[] = {
    VMT_CONF_TEST(views_up_to_max),
    VMT_CONF_TEST(switch_and_current),
    VMT_CONF_TEST(switch_scope),
    VMT_CONF_TEST(remap_and_get_access),
    VMT_CONF_TEST(rights_set_get),
    VMT_CONF_TEST(remap_resets_rights),
    VMT_CONF_TEST(views_are_independent),
    VMT_CONF_TEST(bad_views_and_gfns),
};

const vmt_conformance_group vmt_conf_group_views = {
    .name = "views",
    .needs = VMT_CAP_VIEWS,
    .needs_cpu = false,
    .tests = views_tests,
    .count = sizeof views_tests / sizeof views_tests[0],
};
