/*
 * tests/mem/test_mem.c — the in-memory driver's own behaviour: call log,
 * fault injection, no state change on failure, capability removal, views,
 * frames, events and the invariant checker (run after every operation).
 *
 * Every call goes through the public wrapper (vmt_drv_*), as the breakpoint
 * manager and the page-table monitor will call it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mem_expect.h"

#include "drivers/mem/mem_internal.h"
#include "vmtrap/driver.h"
#include "vmtrap/mem.h"

static vmt_driver *make_small(void)
{
    vmt_mem_config cfg = { .ram_frames = 16, .extra_frames = 4, .max_views = 4, .vcpus = 2 };
    return mem_make(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    vmt_driver *d = mem_make(NULL);
    const vmt_caps *c = vmt_driver_caps(d);
    assert_string_equal(vmt_driver_name(d), "mem");
    assert_int_equal(c->ram_frames, 256);
    assert_int_equal(c->vcpus, 1);
    assert_int_equal(c->max_views, 16);
    assert_int_equal(c->hw_breakpoints, 4);
    assert_int_equal(c->trap_access, VMT_ACCESS_RWX);
    uint64_t want = VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_REGS_SET | VMT_CAP_PAUSE |
                    VMT_CAP_VIEWS | VMT_CAP_VIEW_PER_VCPU | VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM |
                    VMT_CAP_FRAMES | VMT_CAP_EVENTS | VMT_CAP_HW_BREAKPOINTS | VMT_CAP_INJECT_BP;
    assert_true(vmt_driver_has(d, want));
    assert_true(vmt_mem_is(d));
    vmt_driver_destroy(d);

    vmt_mem_config bad = { .hw_breakpoints = 5 };
    char why[256] = "";
    d = NULL;
    assert_int_equal(vmt_mem_driver_create(&bad, &d, why, sizeof why), VMT_E_INVAL);
    assert_null(d);
    assert_non_null(strstr(why, "hw_breakpoints"));
}

static void test_log_records_calls_in_order(void **state)
{
    (void)state;
    vmt_driver *d = make_small();
    vmt_view v;
    vmt_gfn f;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    OK(d, vmt_drv_frame_alloc(d, &f));
    OK(d, vmt_drv_view_remap(d, v, 3, f));
    OK(d, vmt_drv_view_set_access(d, v, 3, VMT_ACCESS_X));
    EXPECT(d, VMT_E_RANGE, vmt_drv_view_set_access(d, v, 99, VMT_ACCESS_X));
    uint8_t b[8];
    OK(d, vmt_drv_read_phys(d, 0x1ffc, b, sizeof b));

    assert_int_equal(vmt_mem_log_count(d), 6);
    const vmt_mem_call *c = vmt_mem_log_at(d, 0);
    assert_int_equal(c->op, VMT_MEM_OP_VIEW_CREATE);
    assert_int_equal(c->view, v);
    assert_int_equal(c->access, VMT_ACCESS_RWX);
    c = vmt_mem_log_at(d, 1);
    assert_int_equal(c->op, VMT_MEM_OP_FRAME_ALLOC);
    assert_int_equal(c->gfn, f);
    c = vmt_mem_log_at(d, 2);
    assert_int_equal(c->op, VMT_MEM_OP_VIEW_REMAP);
    assert_int_equal(c->view, v);
    assert_int_equal(c->gfn, 3);
    assert_int_equal(c->backing, f);
    assert_int_equal(c->status, VMT_OK);
    c = vmt_mem_log_at(d, 3);
    assert_int_equal(c->op, VMT_MEM_OP_VIEW_SET_ACCESS);
    assert_int_equal(c->access, VMT_ACCESS_X);
    c = vmt_mem_log_at(d, 4);
    assert_int_equal(c->op, VMT_MEM_OP_VIEW_SET_ACCESS);
    assert_int_equal(c->gfn, 99);
    assert_int_equal(c->status, VMT_E_RANGE);
    c = vmt_mem_log_at(d, 5);
    assert_int_equal(c->op, VMT_MEM_OP_READ_PHYS);
    assert_int_equal(c->addr, 0x1ffc);
    assert_int_equal(c->len, 8);
    assert_null(vmt_mem_log_at(d, 6));
    assert_string_equal(vmt_mem_op_name(VMT_MEM_OP_VIEW_REMAP), "view_remap");

    /* Refused by the wrapper: never reaches the driver, not logged. */
    EXPECT(d, VMT_E_INVAL, vmt_drv_view_destroy(d, 0));
    assert_int_equal(vmt_mem_log_count(d), 6);

    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_VIEW_SET_ACCESS), 2);
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_ANY), 6);
    vmt_mem_log_clear(d);
    assert_int_equal(vmt_mem_log_count(d), 0);
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_ANY), 6);
    vmt_driver_destroy(d);
}

/* With log_limit the log keeps the newest calls and counts the dropped. */
static void test_log_limit_keeps_newest(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 16, .log_limit = 4 };
    vmt_driver *d = mem_make(&cfg);
    uint8_t b;
    for (vmt_pa pa = 0; pa < 10; pa++)
        OK(d, vmt_drv_read_phys(d, pa, &b, 1));
    assert_int_equal(vmt_mem_log_count(d), 4);
    assert_int_equal(vmt_mem_log_dropped(d), 6);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(vmt_mem_log_at(d, i)->addr, 6 + i);
    assert_null(vmt_mem_log_at(d, 4));
    vmt_mem_log_clear(d);
    OK(d, vmt_drv_read_phys(d, 42, &b, 1));
    assert_int_equal(vmt_mem_log_count(d), 1);
    assert_int_equal(vmt_mem_log_at(d, 0)->addr, 42);
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_READ_PHYS), 11);
    vmt_driver_destroy(d);
}

static void test_fail_nth_any(void **state)
{
    (void)state;
    vmt_driver *d = make_small();
    vmt_regs r;
    vmt_mem_fail_nth(d, VMT_MEM_OP_ANY, 3);
    OK(d, vmt_drv_get_regs(d, 0, &r));
    OK(d, vmt_drv_pause(d));
    EXPECT(d, VMT_E_INJECTED, vmt_drv_resume(d));
    assert_non_null(strstr(vmt_driver_error(d), "injected failure of resume"));
    assert_true(vmt_mem_paused(d)); /* the failed resume changed nothing */
    OK(d, vmt_drv_resume(d));       /* one shot */
    OK(d, vmt_drv_pause(d));
    assert_int_equal(vmt_mem_injected(d), 1);
    const vmt_mem_call *c = vmt_mem_log_at(d, 2);
    assert_int_equal(c->op, VMT_MEM_OP_RESUME);
    assert_int_equal(c->status, VMT_E_INJECTED);
    vmt_driver_destroy(d);
}

static void test_fail_nth_of_one_kind(void **state)
{
    (void)state;
    vmt_driver *d = make_small();
    vmt_view v;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    vmt_mem_fail_nth(d, VMT_MEM_OP_VIEW_SET_ACCESS, 2);
    OK(d, vmt_drv_view_set_access(d, v, 1, VMT_ACCESS_RX));
    OK(d, vmt_drv_view_remap(d, v, 2, 5)); /* other kinds do not count */
    uint8_t b;
    OK(d, vmt_drv_read_phys(d, 0, &b, 1));
    EXPECT(d, VMT_E_INJECTED, vmt_drv_view_set_access(d, v, 2, VMT_ACCESS_R));
    vmt_access a;
    vmt_gfn back;
    OK(d, vmt_drv_view_get_access(d, v, 2, &a, &back));
    assert_int_equal(a, VMT_ACCESS_RWX); /* unchanged by the failed call */
    assert_int_equal(back, 5);
    OK(d, vmt_drv_view_set_access(d, v, 2, VMT_ACCESS_R));
    OK(d, vmt_drv_view_get_access(d, v, 2, &a, NULL));
    assert_int_equal(a, VMT_ACCESS_R);
    vmt_driver_destroy(d);
}

static void test_fail_always(void **state)
{
    (void)state;
    vmt_driver *d = make_small();
    vmt_view v;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    vmt_mem_fail_always(d, VMT_MEM_OP_VIEW_REMAP, true);
    for (int i = 0; i < 3; i++)
        EXPECT(d, VMT_E_INJECTED, vmt_drv_view_remap(d, v, 1, 2));
    OK(d, vmt_drv_view_set_access(d, v, 1, VMT_ACCESS_R));
    vmt_mem_fail_always(d, VMT_MEM_OP_VIEW_REMAP, false);
    OK(d, vmt_drv_view_remap(d, v, 1, 2));
    vmt_mem_fail_always(d, VMT_MEM_OP_FRAME_ALLOC, true);
    vmt_gfn f = 12345;
    EXPECT(d, VMT_E_INJECTED, vmt_drv_frame_alloc(d, &f));
    assert_int_equal(f, 12345);
    assert_int_equal(vmt_mem_frames_in_use(d), 0);
    vmt_mem_fail_clear(d);
    OK(d, vmt_drv_frame_alloc(d, &f));
    assert_int_equal(vmt_mem_injected(d), 4);
    vmt_driver_destroy(d);
}

/* A digest of all observable state of a small driver (RAM, extra frames,
 * views, vCPUs). Taken with injection off. */
typedef struct digest {
    uint8_t ram[16 * 4096];
    uint8_t extra[4][64];
    vmt_access access[4][16];
    vmt_gfn backing[4][16];
    int view_exists[4];
    vmt_view cur[2];
    vmt_regs regs[2];
    uint64_t frames_in_use;
    vmt_va hw_va[2][4];
    bool hw_on[2][4];
    bool paused;
} digest;

static void take_digest(vmt_driver *d, digest *g)
{
    memset(g, 0, sizeof *g);
    assert_int_equal(vmt_drv_read_phys(d, 0, g->ram, sizeof g->ram), VMT_OK);
    for (int k = 0; k < 4; k++)
        (void)vmt_drv_read_phys(d, (16 + (vmt_pa)k) * 4096, g->extra[k], sizeof g->extra[k]);
    for (vmt_view v = 0; v < 4; v++) {
        g->view_exists[v] = vmt_drv_view_get_access(d, v, 0, NULL, NULL) == VMT_OK;
        for (vmt_gfn gfn = 0; g->view_exists[v] && gfn < 16; gfn++)
            assert_int_equal(vmt_drv_view_get_access(d, v, gfn, &g->access[v][gfn], &g->backing[v][gfn]), VMT_OK);
    }
    for (vmt_vcpu i = 0; i < 2; i++) {
        assert_int_equal(vmt_drv_view_current(d, i, &g->cur[i]), VMT_OK);
        assert_int_equal(vmt_drv_get_regs(d, i, &g->regs[i]), VMT_OK);
        for (unsigned b = 0; b < 4; b++)
            assert_int_equal(vmt_mem_hw_breakpoint_get(d, i, b, &g->hw_va[i][b], &g->hw_on[i][b]), VMT_OK);
    }
    g->frames_in_use = vmt_mem_frames_in_use(d);
    g->paused = vmt_mem_paused(d);
}

static void test_failed_call_changes_nothing(void **state)
{
    (void)state;
    vmt_driver *d = make_small();
    /* Some non-trivial state first. */
    vmt_view v1, v2;
    vmt_gfn f1, f2;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v1));
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RX, &v2));
    OK(d, vmt_drv_frame_alloc(d, &f1));
    OK(d, vmt_drv_frame_alloc(d, &f2));
    OK(d, vmt_drv_view_remap(d, v1, 4, f1));
    OK(d, vmt_drv_view_set_access(d, v1, 4, VMT_ACCESS_X));
    OK(d, vmt_drv_view_switch(d, 1, v1));
    uint8_t pattern[64];
    memset(pattern, 0x5a, sizeof pattern);
    OK(d, vmt_drv_write_phys(d, 0x3000, pattern, sizeof pattern));

    static digest before, after;
    vmt_regs regs;
    memset(&regs, 0x11, sizeof regs);
    vmt_injection inj = { .vector = 14, .cr2 = 0x1000 };
    vmt_vcpu_state vs;
    vmt_vcpu_state_init(&vs);
    vs.known = VMT_VS_REGS | VMT_VS_TSC;
    vs.tsc = 99;
    for (vmt_mem_op op = VMT_MEM_OP_READ_PHYS; op < VMT_MEM_OP_COUNT; op++) {
        take_digest(d, &before);
        vmt_mem_log_clear(d);
        vmt_mem_fail_always(d, op, true);
        vmt_status st = VMT_OK;
        vmt_view vout = 77;
        vmt_gfn gout = 77;
        uint8_t buf[64];
        vmt_event ev;
        vmt_driver_stats stats;
        switch (op) {
        case VMT_MEM_OP_READ_PHYS: st = vmt_drv_read_phys(d, 0x3000, buf, sizeof buf); break;
        case VMT_MEM_OP_WRITE_PHYS: st = vmt_drv_write_phys(d, 0x3000, pattern + 1, 8); break;
        case VMT_MEM_OP_GET_REGS: st = vmt_drv_get_regs(d, 0, &regs); break;
        case VMT_MEM_OP_SET_REGS: st = vmt_drv_set_regs(d, 0, &regs); break;
        case VMT_MEM_OP_PAUSE: st = vmt_drv_pause(d); break;
        case VMT_MEM_OP_RESUME: st = vmt_drv_resume(d); break;
        case VMT_MEM_OP_VIEW_CREATE: st = vmt_drv_view_create(d, VMT_ACCESS_RWX, &vout); break;
        case VMT_MEM_OP_VIEW_DESTROY: st = vmt_drv_view_destroy(d, v2); break;
        case VMT_MEM_OP_VIEW_SWITCH: st = vmt_drv_view_switch(d, 0, v2); break;
        case VMT_MEM_OP_VIEW_CURRENT: st = vmt_drv_view_current(d, 0, &vout); break;
        case VMT_MEM_OP_VIEW_REMAP: st = vmt_drv_view_remap(d, v1, 4, 4); break;
        case VMT_MEM_OP_VIEW_SET_ACCESS: st = vmt_drv_view_set_access(d, v1, 5, VMT_ACCESS_R); break;
        case VMT_MEM_OP_VIEW_GET_ACCESS: st = vmt_drv_view_get_access(d, v1, 4, NULL, &gout); break;
        case VMT_MEM_OP_FRAME_ALLOC: st = vmt_drv_frame_alloc(d, &gout); break;
        case VMT_MEM_OP_FRAME_FREE: st = vmt_drv_frame_free(d, f2); break;
        case VMT_MEM_OP_HW_BREAKPOINT: st = vmt_drv_hw_breakpoint(d, 0, 1, 0x401000, 1); break;
        case VMT_MEM_OP_INJECT: st = vmt_drv_inject(d, 0, &inj); break;
        case VMT_MEM_OP_MONITOR: st = vmt_drv_monitor(d, VMT_EVENT_CR_WRITE, 1); break;
        case VMT_MEM_OP_WAIT_EVENT:
            memset(&ev, 0, sizeof ev);
            ev.kind = VMT_EVENT_BREAKPOINT;
            assert_int_equal(vmt_mem_push_event(d, &ev), VMT_OK);
            st = vmt_drv_wait_event(d, 0, &ev);
            assert_int_equal(vmt_mem_pending_events(d), 1); /* still queued */
            break;
        case VMT_MEM_OP_RESPOND: {
            vmt_mem_fail_clear(d);
            assert_int_equal(vmt_drv_wait_event(d, 0, &ev), VMT_OK); /* the one queued above */
            take_digest(d, &before);
            vmt_mem_log_clear(d);
            vmt_mem_fail_always(d, op, true);
            vmt_response r = { .actions = VMT_RESP_SWITCH_VIEW, .new_view = v2 };
            st = vmt_drv_respond(d, &ev, &r);
            break;
        }
        case VMT_MEM_OP_SET_LIMIT: st = vmt_drv_set_limit(d, 0, 0); break;
        case VMT_MEM_OP_STATS: st = vmt_drv_stats(d, &stats); break;
        case VMT_MEM_OP_GET_VCPU_STATE: st = vmt_drv_get_vcpu_state(d, 0, &vs); break;
        case VMT_MEM_OP_SET_VCPU_STATE: st = vmt_drv_set_vcpu_state(d, 0, &vs); break;
        case VMT_MEM_OP_DIRTY_LOG: st = vmt_drv_dirty_log(d, NULL, NULL, 1); break;
        default: fail_msg("op %d not covered", op);
        }
        if (st != VMT_E_INJECTED)
            fail_msg("%s: got %s (%s), want an injected failure", vmt_mem_op_name(op), vmt_strerror(st),
                     vmt_driver_error(d));
        assert_int_equal(vmt_mem_log_count(d), 1);
        assert_int_equal(vmt_mem_log_at(d, 0)->status, VMT_E_INJECTED);
        vmt_mem_fail_clear(d);
        check(d);
        assert_int_equal(vout, 77);
        assert_int_equal(gout, 77);
        take_digest(d, &after);
        if (memcmp(&before, &after, sizeof before) != 0)
            fail_msg("a failed %s changed the driver's state", vmt_mem_op_name(op));
        if (op == VMT_MEM_OP_RESPOND) {
            /* Still outstanding: the failed respond did not consume it. */
            assert_int_equal(vmt_drv_wait_event(d, 0, &ev), VMT_E_BUSY);
            vmt_response r = vmt_response_continue();
            OK(d, vmt_drv_respond(d, &ev, &r));
        }
    }
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_log_records_calls_in_order),
        cmocka_unit_test(test_log_limit_keeps_newest),
        cmocka_unit_test(test_fail_nth_any),
        cmocka_unit_test(test_fail_nth_of_one_kind),
        cmocka_unit_test(test_fail_always),
        cmocka_unit_test(test_failed_call_changes_nothing),
    };
    return cmocka_run_group_tests_name("mem driver", tests, NULL, NULL);
}
