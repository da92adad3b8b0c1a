/*
 * tests/mem/test_mem_events.c — events without a CPU: queued events come
 * out in order with seq, view and registers stamped; an unanswered event
 * blocks the next; responses are checked, applied (SWITCH_VIEW, SET_REGS)
 * and recorded; paused VMs and empty queues time out; stats count; the
 * vCPU-side records (hardware breakpoints, injections, monitored kinds).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mem_expect.h"

#include "vmtrap/driver.h"
#include "vmtrap/mem.h"

static vmt_driver *make(uint32_t vcpus)
{
    vmt_mem_config cfg = { .ram_frames = 16, .vcpus = vcpus, .max_views = 4 };
    return mem_make(&cfg);
}

static vmt_event bp_event(vmt_vcpu vcpu, vmt_va rip)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_BREAKPOINT;
    ev.vcpu = vcpu;
    ev.regs.rip = rip;
    ev.u.bp.gva = rip;
    ev.u.bp.gpa = rip;
    ev.u.bp.gfn = rip >> 12;
    ev.u.bp.insn_len = 1;
    return ev;
}

static void test_events_in_order_with_stamps(void **state)
{
    (void)state;
    vmt_driver *d = make(2);
    vmt_view v;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    OK(d, vmt_drv_view_switch(d, 1, v));
    vmt_event a = bp_event(0, 0x1000), b = bp_event(1, 0x2000), got;
    vmt_event w;
    memset(&w, 0, sizeof w);
    w.kind = VMT_EVENT_MEM_ACCESS;
    w.vcpu = 1;
    w.u.mem.gpa = 0x3008;
    w.u.mem.access = VMT_ACCESS_W;
    w.u.mem.has_data = true;
    w.u.mem.size = 8;
    w.u.mem.value = 0x1234;
    OK(d, vmt_mem_push_event(d, &a));
    OK(d, vmt_mem_push_event(d, &b));
    OK(d, vmt_mem_push_event(d, &w));
    assert_int_equal(vmt_mem_pending_events(d), 3);

    OK(d, vmt_drv_wait_event(d, 0, &got));
    assert_int_equal(got.kind, VMT_EVENT_BREAKPOINT);
    assert_int_equal(got.seq, 1);
    assert_int_equal(got.vcpu, 0);
    assert_int_equal(got.view, 0);
    assert_int_equal(got.regs.rip, 0x1000);
    vmt_regs r;
    OK(d, vmt_drv_get_regs(d, 0, &r));
    assert_int_equal(r.rip, 0x1000); /* the vCPU "arrived" at the event */
    EXPECT(d, VMT_E_BUSY, vmt_drv_wait_event(d, 0, &got)); /* not answered yet */
    vmt_response resp = vmt_response_continue();
    OK(d, vmt_drv_respond(d, &got, &resp));
    EXPECT(d, VMT_E_INVAL, vmt_drv_respond(d, &got, &resp)); /* answered twice */

    OK(d, vmt_drv_wait_event(d, 0, &got));
    assert_int_equal(got.seq, 2);
    assert_int_equal(got.vcpu, 1);
    assert_int_equal(got.view, v);
    vmt_event stale = got;
    stale.seq = 1;
    EXPECT(d, VMT_E_INVAL, vmt_drv_respond(d, &stale, &resp));
    OK(d, vmt_drv_respond(d, &got, &resp));

    OK(d, vmt_drv_wait_event(d, 0, &got));
    assert_int_equal(got.kind, VMT_EVENT_MEM_ACCESS);
    assert_true(got.u.mem.has_data);
    assert_int_equal(got.u.mem.value, 0x1234);
    assert_int_equal(got.u.mem.size, 8);
    resp.actions = VMT_RESP_EMULATE;
    resp.emulate_view = 0;
    OK(d, vmt_drv_respond(d, &got, &resp));
    vmt_event answered;
    vmt_response last;
    OK(d, vmt_mem_last_response(d, &answered, &last));
    assert_int_equal(answered.seq, 3);
    assert_int_equal(last.actions, VMT_RESP_EMULATE);

    EXPECT(d, VMT_E_TIMEOUT, vmt_drv_wait_event(d, 100, &got));
    vmt_driver_stats s;
    OK(d, vmt_drv_stats(d, &s));
    assert_int_equal(s.events[VMT_EVENT_BREAKPOINT], 2);
    assert_int_equal(s.events[VMT_EVENT_MEM_ACCESS], 1);
    assert_int_equal(s.exits, 3);

    /* The log says what was answered how. */
    size_t n = vmt_mem_log_count(d), responds = 0;
    for (size_t i = 0; i < n; i++) {
        const vmt_mem_call *c = vmt_mem_log_at(d, i);
        if (c->op == VMT_MEM_OP_RESPOND && c->status == VMT_OK) {
            responds++;
            assert_int_equal(c->seq, responds);
        }
    }
    assert_int_equal(responds, 3);
    vmt_driver_destroy(d);
}

static void test_responses_checked_and_applied(void **state)
{
    (void)state;
    vmt_driver *d = make(2);
    vmt_view v, cur;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    vmt_event ev = bp_event(1, 0x4000), got;
    OK(d, vmt_mem_push_event(d, &ev));
    vmt_response resp = vmt_response_continue();
    EXPECT(d, VMT_E_INVAL, vmt_drv_respond(d, &ev, &resp)); /* nothing delivered yet */
    OK(d, vmt_drv_wait_event(d, 0, &got));

    resp.actions = VMT_RESP_SWITCH_VIEW | VMT_RESP_SET_REGS;
    resp.new_view = 3; /* does not exist */
    resp.regs = got.regs;
    resp.regs.rip = 0x4001;
    EXPECT(d, VMT_E_NOTFOUND, vmt_drv_respond(d, &got, &resp));
    vmt_regs r;
    OK(d, vmt_drv_get_regs(d, 1, &r));
    assert_int_equal(r.rip, 0x4000); /* the refused response applied nothing */
    resp.new_view = v;
    OK(d, vmt_drv_respond(d, &got, &resp));
    OK(d, vmt_drv_get_regs(d, 1, &r));
    assert_int_equal(r.rip, 0x4001);
    OK(d, vmt_drv_view_current(d, 1, &cur));
    assert_int_equal(cur, v);
    OK(d, vmt_drv_view_current(d, 0, &cur));
    assert_int_equal(cur, 0); /* per-vCPU views: only the event's vCPU */

    /* REINJECT only answers a breakpoint (wrapper); FAST_STEP needs a live view. */
    OK(d, vmt_mem_push_event(d, &ev));
    OK(d, vmt_drv_wait_event(d, 0, &got));
    resp = vmt_response_continue();
    resp.actions = VMT_RESP_FAST_STEP;
    resp.step_view = 9;
    EXPECT(d, VMT_E_NOTFOUND, vmt_drv_respond(d, &got, &resp));
    resp.actions = VMT_RESP_REINJECT;
    OK(d, vmt_drv_respond(d, &got, &resp));
    vmt_driver_destroy(d);
}

static void test_paused_stopped_and_bad_pushes(void **state)
{
    (void)state;
    vmt_driver *d = make(1);
    vmt_event ev = bp_event(0, 0x1000), got;
    OK(d, vmt_mem_push_event(d, &ev));
    OK(d, vmt_drv_pause(d));
    EXPECT(d, VMT_E_TIMEOUT, vmt_drv_wait_event(d, 50, &got)); /* never blocks */
    assert_non_null(strstr(vmt_driver_error(d), "paused"));
    EXPECT(d, VMT_E_BUSY, vmt_drv_wait_event(d, -1, &got)); /* could never return */
    assert_non_null(strstr(vmt_driver_error(d), "paused"));
    OK(d, vmt_drv_resume(d));
    OK(d, vmt_drv_wait_event(d, -1, &got));
    vmt_response resp = vmt_response_continue();
    OK(d, vmt_drv_respond(d, &got, &resp));

    vmt_event stop;
    memset(&stop, 0, sizeof stop);
    stop.kind = VMT_EVENT_STOPPED;
    stop.u.stop.reason = VMT_STOP_HALT;
    OK(d, vmt_mem_push_event(d, &stop));
    OK(d, vmt_mem_push_event(d, &ev));
    OK(d, vmt_drv_wait_event(d, 0, &got));
    assert_int_equal(got.kind, VMT_EVENT_STOPPED);
    OK(d, vmt_drv_wait_event(d, 0, &got)); /* STOPPED needs no answer */
    assert_int_equal(got.kind, VMT_EVENT_BREAKPOINT);

    vmt_event bad = ev;
    bad.vcpu = 1;
    EXPECT(d, VMT_E_INVAL, vmt_mem_push_event(d, &bad));
    bad = ev;
    bad.kind = VMT_EVENT_KIND_COUNT;
    EXPECT(d, VMT_E_INVAL, vmt_mem_push_event(d, &bad));
    bad.kind = VMT_EVENT_NONE;
    EXPECT(d, VMT_E_INVAL, vmt_mem_push_event(d, &bad));
    vmt_driver_destroy(d);
}

static void test_vcpu_side_records(void **state)
{
    (void)state;
    vmt_driver *d = make(2);
    vmt_va va;
    bool on;
    OK(d, vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, 2, 0x401000, 1));
    OK(d, vmt_drv_hw_breakpoint(d, 1, 2, 0, 0));
    assert_int_equal(vmt_mem_hw_breakpoint_get(d, 0, 2, &va, &on), VMT_OK);
    assert_true(on);
    assert_int_equal(va, 0x401000);
    assert_int_equal(vmt_mem_hw_breakpoint_get(d, 1, 2, &va, &on), VMT_OK);
    assert_false(on);
    EXPECT(d, VMT_E_RANGE, vmt_drv_hw_breakpoint(d, 0, 4, 0x1000, 1));
    EXPECT(d, VMT_E_INVAL, vmt_drv_hw_breakpoint(d, 5, 0, 0x1000, 1));

    vmt_injection inj = { .vector = 14, .has_error_code = true, .error_code = 2, .cr2 = 0xdead000 }, got;
    assert_int_equal(vmt_mem_last_injection(d, 0, &got), VMT_E_NOTFOUND);
    OK(d, vmt_drv_inject(d, 0, &inj));
    assert_int_equal(vmt_mem_last_injection(d, 0, &got), VMT_OK);
    assert_int_equal(got.cr2, 0xdead000);
    assert_int_equal(got.error_code, 2);
    const vmt_mem_call *c = vmt_mem_log_at(d, vmt_mem_log_count(d) - 1);
    assert_int_equal(c->op, VMT_MEM_OP_INJECT);
    assert_int_equal(c->index, 14);
    assert_int_equal(c->addr, 0xdead000);

    assert_false(vmt_mem_monitoring(d, VMT_EVENT_CR_WRITE));
    OK(d, vmt_drv_monitor(d, VMT_EVENT_CR_WRITE, 1));
    assert_true(vmt_mem_monitoring(d, VMT_EVENT_CR_WRITE));
    OK(d, vmt_drv_monitor(d, VMT_EVENT_CR_WRITE, 0));
    assert_false(vmt_mem_monitoring(d, VMT_EVENT_CR_WRITE));
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_in_order_with_stamps),
        cmocka_unit_test(test_responses_checked_and_applied),
        cmocka_unit_test(test_paused_stopped_and_bad_pushes),
        cmocka_unit_test(test_vcpu_side_records),
    };
    return cmocka_run_group_tests_name("mem driver events", tests, NULL, NULL);
}
