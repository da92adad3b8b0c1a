/*
 * tests/core/test_driver.c — the generic driver wrapper: a driver never
 * pretends. Declared capabilities need their ops; calls needing an
 * undeclared capability are refused (naming it) before they reach the
 * driver; responses are checked against the capabilities.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_driver.h"
#include "vmtrap/driver.h"

static int destroyed;
static void noop_destroy(vmt_driver *d) { (void)d; destroyed++; }
static vmt_status noop_read(vmt_driver *d, vmt_pa pa, void *buf, size_t len)
{
    (void)d, (void)pa;
    memset(buf, 0, len);
    return VMT_OK;
}

static void expect_refused(const vmt_driver_ops *ops, const vmt_caps *caps, const char *w1, const char *w2)
{
    vmt_driver *d = (vmt_driver *)&d;
    char why[256] = "";
    assert_int_equal(vmt_driver_create(ops, NULL, caps, &d, why, sizeof why), VMT_E_INVAL);
    if (!strstr(why, w1) || (w2 && !strstr(why, w2)))
        fail_msg("\"%s\" does not name \"%s\"/\"%s\"", why, w1, w2 ? w2 : "");
}

static void test_create_refuses_caps_without_ops(void **state)
{
    (void)state;
    vmt_driver_ops ops = { .name = "half", .destroy = noop_destroy, .read_phys = noop_read };
    vmt_caps caps = { .flags = VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS, .max_views = 1, .vcpus = 1 };
    expect_refused(&ops, &caps, "write-phys", "write_phys");
    caps.flags = VMT_CAP_READ_PHYS | VMT_CAP_EVENTS;
    expect_refused(&ops, &caps, "events", "wait_event");
    caps.flags = VMT_CAP_READ_PHYS | VMT_CAP_FRAMES;
    expect_refused(&ops, &caps, "frames", "frame_alloc");
    /* Consistency beyond ops. */
    fake_driver f;
    vmt_driver *full = fake_driver_create(&f, 4, VMT_CAP_READ_PHYS);
    assert_non_null(full);
    vmt_caps bad = *vmt_driver_caps(full);
    bad.flags |= VMT_CAP_VIEW_REMAP;
    assert_int_equal(vmt_driver_set_caps(full, &bad), VMT_E_INVAL);
    assert_non_null(strstr(vmt_driver_error(full), "view features without views"));
    /* Permissions on view 0 alone: only for a driver reporting writes after they landed. */
    bad.flags = VMT_CAP_READ_PHYS | VMT_CAP_VIEW_PERM;
    assert_int_equal(vmt_driver_set_caps(full, &bad), VMT_E_INVAL);
    bad.flags |= VMT_CAP_WRITE_AFTER;
    assert_int_equal(vmt_driver_set_caps(full, &bad), VMT_OK);
    assert_string_equal(vmt_cap_name(VMT_CAP_WRITE_AFTER), "write-after");
    bad.flags = VMT_CAP_READ_PHYS;
    assert_int_equal(vmt_driver_set_caps(full, &bad), VMT_OK);
    bad.flags = VMT_CAP_READ_PHYS | VMT_CAP_VIEWS;
    bad.max_views = 1;
    assert_int_equal(vmt_driver_set_caps(full, &bad), VMT_E_INVAL);
    assert_non_null(strstr(vmt_driver_error(full), "max_views 1"));
    assert_int_equal(vmt_driver_caps(full)->flags, VMT_CAP_READ_PHYS); /* unchanged */
    vmt_driver_destroy(full);
    fake_driver_release(&f);
    /* Name and destroy are required. */
    vmt_driver_ops nameless = { .destroy = noop_destroy };
    caps.flags = 0;
    expect_refused(&nameless, &caps, "name and destroy", NULL);
    /* A consistent record is accepted; destroy calls the driver's destroy. */
    vmt_driver *d = NULL;
    caps.flags = VMT_CAP_READ_PHYS;
    assert_int_equal(vmt_driver_create(&ops, NULL, &caps, &d, NULL, 0), VMT_OK);
    assert_string_equal(vmt_driver_name(d), "half");
    assert_true(vmt_driver_has(d, VMT_CAP_READ_PHYS));
    assert_false(vmt_driver_has(d, VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS));
    destroyed = 0;
    vmt_driver_destroy(d);
    assert_int_equal(destroyed, 1);
}

static void test_undeclared_capability_is_refused_by_name(void **state)
{
    (void)state;
    fake_driver f;
    /* The fake HAS a write op, but does not declare WRITE_PHYS. */
    vmt_driver *d = fake_driver_create(&f, 4, VMT_CAP_READ_PHYS);
    uint8_t b[8] = { 1 };
    assert_int_equal(vmt_drv_write_phys(d, 0, b, sizeof b), VMT_E_NOTSUP);
    assert_int_equal(f.writes, 0); /* never reached the driver */
    assert_non_null(strstr(vmt_driver_error(d), "write-phys"));
    assert_non_null(strstr(vmt_driver_error(d), "vmt_drv_write_phys"));
    assert_non_null(strstr(vmt_driver_error(d), "'fake'"));
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "regs-get"));
    vmt_view v = 99;
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &v), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "views"));
    /* view_current without views: everyone is in view 0. */
    assert_int_equal(vmt_drv_view_current(d, 0, &v), VMT_OK);
    assert_int_equal(v, VMT_VIEW_DEFAULT);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 0, &ev), VMT_E_NOTSUP);
    assert_int_equal(f.waits, 0);
    assert_int_equal(vmt_drv_read_phys(d, 0, b, sizeof b), VMT_OK);
    assert_int_equal(f.reads, 1);
    vmt_driver_destroy(d);
    fake_driver_release(&f);
}

static void test_respond_checks_capabilities(void **state)
{
    (void)state;
    fake_driver f;
    vmt_driver *d = fake_driver_create(&f, 4, VMT_CAP_READ_PHYS | VMT_CAP_EVENTS | VMT_CAP_VIEWS);
    fake_push_kind(&f, VMT_EVENT_MEM_ACCESS);
    vmt_event ev;
    assert_int_equal(vmt_drv_wait_event(d, 0, &ev), VMT_OK);
    vmt_response r = vmt_response_continue();
    r.actions = VMT_RESP_EMULATE;
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "emulate"));
    r.actions = VMT_RESP_FAST_STEP;
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "fast-step"));
    r.actions = VMT_RESP_SET_REGS;
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_driver_error(d), "regs-set"));
    assert_int_equal(f.responds, 0); /* none of them reached the driver */
    /* Allowed ones pass. */
    r.actions = VMT_RESP_SWITCH_VIEW;
    r.new_view = 1;
    assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    assert_int_equal(f.responds, 1);
    assert_int_equal(f.last_resp.actions, VMT_RESP_SWITCH_VIEW);
    vmt_driver_destroy(d);
    fake_driver_release(&f);
}

/* Rights are validated once, in the wrapper, for every driver. */
static void test_rights_beyond_rwx_are_refused(void **state)
{
    (void)state;
    fake_driver f;
    vmt_driver *d = fake_driver_create(&f, 4, VMT_CAP_READ_PHYS | VMT_CAP_VIEWS | VMT_CAP_VIEW_PERM);
    vmt_view v = VMT_VIEW_INVALID;
    assert_int_equal(vmt_drv_view_create(d, (vmt_access)0x8, &v), VMT_E_INVAL);
    assert_non_null(strstr(vmt_driver_error(d), "beyond r/w/x"));
    assert_int_equal(vmt_drv_view_set_access(d, 1, 0, (vmt_access)(VMT_ACCESS_RX | 0x10)), VMT_E_INVAL);
    assert_non_null(strstr(vmt_driver_error(d), "beyond r/w/x"));
    assert_int_equal(f.nlog, 0); /* neither reached the driver */
    assert_int_equal(vmt_drv_view_set_access(d, 1, 0, VMT_ACCESS_RX), VMT_OK);
    assert_int_equal(f.nlog, 1);
    vmt_driver_destroy(d);
    fake_driver_release(&f);
}

static void test_names(void **state)
{
    (void)state;
    for (unsigned i = 0; i < 25; i++) {
        const char *n = vmt_cap_name(1ull << i);
        assert_string_not_equal(n, "unknown-capability");
        for (unsigned j = 0; j < i; j++)
            assert_string_not_equal(n, vmt_cap_name(1ull << j));
    }
    assert_string_equal(vmt_cap_name(1ull << 40), "unknown-capability");
    for (int s = 0; s < VMT_STATUS_COUNT; s++)
        assert_string_not_equal(vmt_strerror((vmt_status)s), "unknown status");
    assert_string_equal(vmt_strerror(VMT_STATUS_COUNT), "unknown status");
    char buf[4];
    assert_string_equal(vmt_access_str(VMT_ACCESS_RX, buf), "r-x");
    assert_string_equal(vmt_access_str(VMT_ACCESS_NONE, buf), "---");
    assert_string_equal(vmt_event_kind_name(VMT_EVENT_BREAKPOINT), "breakpoint");
    assert_string_equal(vmt_stop_reason_name(VMT_STOP_HALT), "halt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_refuses_caps_without_ops),
        cmocka_unit_test(test_undeclared_capability_is_refused_by_name),
        cmocka_unit_test(test_respond_checks_capabilities),
        cmocka_unit_test(test_rights_beyond_rwx_are_refused),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
