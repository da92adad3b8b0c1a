/*
 * tests/core/test_session_mem.c — the session over the real in-memory
 * driver (src/drivers/mem): the arbiter's rights as the driver holds them
 * (read back with view_get_access), remap re-application with a real
 * shadow frame, injected driver failures, and the event loop leaving no
 * event unanswered. Both invariant checkers (session and mem driver) run
 * after every step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/mem.h"
#include "vmtrap/session.h"

typedef struct fx {
    vmt_driver *d; /* owned by s */
    vmt_session *s;
} fx;

static void check_all(fx *x)
{
    char why[256];
    if (vmt_session_check(x->s) != VMT_OK)
        fail_msg("session: %s", vmt_session_error(x->s));
    if (vmt_mem_check(x->d, why, sizeof why) != VMT_OK)
        fail_msg("mem driver: %s", why);
}

static fx *make(void)
{
    fx *x = calloc(1, sizeof *x);
    vmt_mem_config cfg = { .ram_frames = 64, .extra_frames = 16, .max_views = 4 };
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &x->d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_session_create(x->d, NULL, &x->s), VMT_OK);
    check_all(x);
    return x;
}

static void destroy(fx *x)
{
    check_all(x);
    vmt_session_destroy(x->s);
    free(x);
}

/* What the driver holds for (view, gfn). */
static vmt_access held(fx *x, vmt_view v, vmt_gfn g, vmt_gfn *backing)
{
    vmt_access a = 0;
    vmt_gfn b = 0;
    assert_int_equal(vmt_drv_view_get_access(x->d, v, g, &a, &b), VMT_OK);
    if (backing)
        *backing = b;
    return a;
}

static void test_arbiter_against_driver_state(void **state)
{
    (void)state;
    fx *x = make();
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(x->d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_session_restrict(x->s, v, 10, VMT_OWNER_BPM, VMT_ACCESS_X), VMT_OK);
    check_all(x);
    assert_int_equal(vmt_session_restrict(x->s, v, 10, VMT_OWNER_PTM, VMT_ACCESS_RX), VMT_OK);
    check_all(x);
    assert_int_equal(held(x, v, 10, NULL), VMT_ACCESS_X);
    /* Remap to a shadow frame: the driver resets rights, the arbiter re-applies. */
    vmt_gfn shadow;
    assert_int_equal(vmt_drv_frame_alloc(x->d, &shadow), VMT_OK);
    assert_int_equal(vmt_session_remap(x->s, v, 10, shadow), VMT_OK);
    check_all(x);
    vmt_gfn backing;
    assert_int_equal(held(x, v, 10, &backing), VMT_ACCESS_X);
    assert_int_equal(backing, shadow);
    /* A remap straight through the driver loses the rights (why the arbiter re-applies). */
    vmt_gfn shadow2;
    assert_int_equal(vmt_drv_frame_alloc(x->d, &shadow2), VMT_OK);
    assert_int_equal(vmt_drv_view_set_access(x->d, v, 11, VMT_ACCESS_X), VMT_OK);
    assert_int_equal(vmt_drv_view_remap(x->d, v, 11, shadow2), VMT_OK);
    assert_int_equal(held(x, v, 11, NULL), VMT_ACCESS_RWX);
    assert_int_equal(vmt_drv_view_remap(x->d, v, 11, 11), VMT_OK);
    assert_int_equal(vmt_drv_frame_free(x->d, shadow2), VMT_OK);
    /* Owners leave one by one. */
    assert_int_equal(vmt_session_unrestrict(x->s, v, 10, VMT_OWNER_BPM), VMT_OK);
    assert_int_equal(held(x, v, 10, NULL), VMT_ACCESS_RX);
    assert_int_equal(vmt_session_unrestrict(x->s, v, 10, VMT_OWNER_PTM), VMT_OK);
    assert_int_equal(held(x, v, 10, NULL), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_remap(x->s, v, 10, 10), VMT_OK);
    check_all(x);
    assert_int_equal(vmt_drv_frame_free(x->d, shadow), VMT_OK);
    /* View 0 cannot be restricted: the driver's refusal leaves no entry. */
    assert_int_equal(vmt_session_restrict(x->s, VMT_VIEW_DEFAULT, 3, VMT_OWNER_USER, VMT_ACCESS_R), VMT_E_INVAL);
    assert_int_equal(vmt_session_effective_access(x->s, VMT_VIEW_DEFAULT, 3), VMT_ACCESS_RWX);
    check_all(x);
    destroy(x);
}

static void test_arbiter_injected_failures(void **state)
{
    (void)state;
    fx *x = make();
    vmt_view v;
    assert_int_equal(vmt_drv_view_create(x->d, VMT_ACCESS_RWX, &v), VMT_OK);
    assert_int_equal(vmt_session_restrict(x->s, v, 20, VMT_OWNER_BPM, VMT_ACCESS_RW), VMT_OK);
    vmt_mem_fail_nth(x->d, VMT_MEM_OP_VIEW_SET_ACCESS, 1);
    assert_int_equal(vmt_session_restrict(x->s, v, 20, VMT_OWNER_PTM, VMT_ACCESS_R), VMT_E_INJECTED);
    check_all(x);
    assert_int_equal(vmt_session_effective_access(x->s, v, 20), VMT_ACCESS_RW);
    assert_int_equal(held(x, v, 20, NULL), VMT_ACCESS_RW);
    /* Re-application after a remap fails: the next touch repairs it. */
    vmt_gfn shadow;
    assert_int_equal(vmt_drv_frame_alloc(x->d, &shadow), VMT_OK);
    vmt_mem_fail_nth(x->d, VMT_MEM_OP_VIEW_SET_ACCESS, 1);
    assert_int_equal(vmt_session_remap(x->s, v, 20, shadow), VMT_E_INJECTED);
    check_all(x);
    assert_int_equal(held(x, v, 20, NULL), VMT_ACCESS_RWX); /* the driver's reset */
    assert_int_equal(vmt_session_restrict(x->s, v, 20, VMT_OWNER_BPM, VMT_ACCESS_RW), VMT_OK);
    assert_int_equal(held(x, v, 20, NULL), VMT_ACCESS_RW);
    check_all(x);
    /* A remap the driver refuses changes nothing. */
    vmt_mem_fail_nth(x->d, VMT_MEM_OP_VIEW_REMAP, 1);
    assert_int_equal(vmt_session_remap(x->s, v, 20, 20), VMT_E_INJECTED);
    vmt_gfn b;
    assert_int_equal(held(x, v, 20, &b), VMT_ACCESS_RW);
    assert_int_equal(b, shadow);
    assert_int_equal(vmt_session_remap(x->s, v, 20, 20), VMT_OK);
    assert_int_equal(vmt_drv_frame_free(x->d, shadow), VMT_OK);
    /* Forget a destroyed view: later restrictions on a new view with the same
     * id are applied afresh. */
    assert_int_equal(vmt_drv_view_destroy(x->d, v), VMT_OK);
    vmt_session_forget_view(x->s, v);
    check_all(x);
    vmt_view v2;
    assert_int_equal(vmt_drv_view_create(x->d, VMT_ACCESS_RWX, &v2), VMT_OK);
    assert_int_equal(v2, v);
    assert_int_equal(vmt_session_effective_access(x->s, v2, 20), VMT_ACCESS_RWX);
    assert_int_equal(vmt_session_restrict(x->s, v2, 20, VMT_OWNER_BPM, VMT_ACCESS_RW), VMT_OK);
    assert_int_equal(held(x, v2, 20, NULL), VMT_ACCESS_RW);
    destroy(x);
}

static vmt_status h_count(vmt_session *s, const vmt_event *ev, vmt_response *r, void *user)
{
    (void)ev, (void)r;
    int *n = user;
    if (++*n == 2)
        vmt_session_request_stop(s);
    return VMT_OK;
}

static void test_loop_and_caches_over_mem(void **state)
{
    (void)state;
    fx *x = make();
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_BREAKPOINT;
    for (int i = 0; i < 3; i++)
        assert_int_equal(vmt_mem_push_event(x->d, &ev), VMT_OK);
    uint64_t v = 0x55aa;
    assert_int_equal(vmt_session_write_pa(x->s, 0x3000, &v, 8), VMT_OK);
    uint64_t reads = vmt_mem_op_count(x->d, VMT_MEM_OP_READ_PHYS);
    for (int i = 0; i < 5; i++) {
        uint64_t got = 0;
        assert_int_equal(vmt_session_read_pa(x->s, 0x3000, &got, 8), VMT_OK);
        assert_int_equal(got, 0x55aa);
    }
    assert_int_equal(vmt_mem_op_count(x->d, VMT_MEM_OP_READ_PHYS), reads + 1);
    int n = 0;
    assert_int_equal(vmt_session_run(x->s, h_count, &n), VMT_OK);
    check_all(x);
    assert_int_equal(n, 2);
    /* The driver holds no unanswered event: the last call was the response. */
    const vmt_mem_call *last = vmt_mem_log_at(x->d, vmt_mem_log_count(x->d) - 1);
    assert_non_null(last);
    assert_int_equal(last->op, VMT_MEM_OP_RESPOND);
    assert_int_equal(last->status, VMT_OK);
    assert_int_equal(vmt_mem_pending_events(x->d), 1);
    /* After the run the cache re-reads. */
    uint64_t got;
    assert_int_equal(vmt_session_read_pa(x->s, 0x3000, &got, 8), VMT_OK);
    assert_int_equal(vmt_mem_op_count(x->d, VMT_MEM_OP_READ_PHYS), reads + 2);
    /* An injected wait failure ends the run with the driver's message. */
    vmt_mem_fail_nth(x->d, VMT_MEM_OP_WAIT_EVENT, 1);
    assert_int_equal(vmt_session_run(x->s, h_count, &n), VMT_E_INJECTED);
    assert_non_null(strstr(vmt_session_error(x->s), "wait_event"));
    check_all(x);
    destroy(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arbiter_against_driver_state),
        cmocka_unit_test(test_arbiter_injected_failures),
        cmocka_unit_test(test_loop_and_caches_over_mem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
