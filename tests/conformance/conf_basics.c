/*
 * tests/conformance/conf_basics.c — conformance group "basics": the
 * capability record, refusal of undeclared capabilities, registers,
 * pause/resume, hardware-breakpoint slots, optional event kinds and run
 * limits, stats.
 */
#include <string.h>

#include "conformance.h"

/* The record matches the config and is self-consistent. */
static void caps_record_consistent(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    const vmt_caps *k = c->caps;
    assert_int_equal(k->vcpus, c->cfg.vcpus);
    assert_int_equal(k->ram_frames, c->cfg.ram_size / VMT_PAGE_SIZE);
    assert_in_range(k->maxphyaddr, 32, 52);
    assert_true(k->ram_frames < (1ull << (k->maxphyaddr - VMT_PAGE_SHIFT)));
    if (k->flags & VMT_CAP_VIEWS)
        assert_true(k->max_views >= 2);
    else
        assert_true(k->max_views <= 1);
    if (k->flags & VMT_CAP_HW_BREAKPOINTS)
        assert_in_range(k->hw_breakpoints, 1, 4);
    else
        assert_int_equal(k->hw_breakpoints, 0);
    assert_int_equal(k->trap_access & ~VMT_ACCESS_RWX, 0);
    if (k->flags & VMT_CAP_VIEW_PERM)
        assert_true(k->trap_access != VMT_ACCESS_NONE);
    if (k->flags & (VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM | VMT_CAP_VIEW_PER_VCPU))
        assert_true(k->flags & VMT_CAP_VIEWS);
}

/* Make one call that needs `flag`. Only called when the flag is NOT
 * declared, so the arguments never reach a driver. */
static vmt_status call_needing(vmt_driver *d, uint64_t flag)
{
    uint8_t b[8] = { 0 };
    vmt_regs r;
    vmt_view v;
    vmt_gfn g;
    vmt_access a;
    vmt_event ev;
    vmt_driver_stats stats;
    vmt_injection pf = { .vector = 14, .has_error_code = true, .cr2 = 0x1000 };
    vmt_injection bp = { .vector = 3 };
    vmt_response resp = vmt_response_continue();
    memset(&r, 0, sizeof r);
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_BREAKPOINT;
    ev.seq = 1;
    switch (flag) {
    case VMT_CAP_READ_PHYS: return vmt_drv_read_phys(d, 0, b, 1);
    case VMT_CAP_WRITE_PHYS: return vmt_drv_write_phys(d, 0, b, 1);
    case VMT_CAP_REGS_GET: return vmt_drv_get_regs(d, 0, &r);
    case VMT_CAP_REGS_SET: return vmt_drv_set_regs(d, 0, &r);
    case VMT_CAP_PAUSE: return vmt_drv_pause(d);
    case VMT_CAP_VIEWS: return vmt_drv_view_create(d, VMT_ACCESS_RWX, &v);
    case VMT_CAP_VIEW_REMAP: return vmt_drv_view_remap(d, 1, 0, 0);
    case VMT_CAP_VIEW_PERM: return vmt_drv_view_get_access(d, 1, 0, &a, &g);
    case VMT_CAP_FRAMES: return vmt_drv_frame_alloc(d, &g);
    case VMT_CAP_HW_BREAKPOINTS: return vmt_drv_hw_breakpoint(d, 0, 0, 0x1000, 1);
    case VMT_CAP_INJECT_PF: return vmt_drv_inject(d, 0, &pf);
    case VMT_CAP_INJECT_BP: return vmt_drv_inject(d, 0, &bp);
    case VMT_CAP_EVENTS: return vmt_drv_wait_event(d, 0, &ev);
    case VMT_CAP_CR3_EVENTS: return vmt_drv_monitor(d, VMT_EVENT_CR_WRITE, 1);
    case VMT_CAP_IO_EVENTS: return vmt_drv_monitor(d, VMT_EVENT_IO, 1);
    case VMT_CAP_TIME_LIMIT: return vmt_drv_set_limit(d, 1.0, 0);
    case VMT_CAP_INSN_LIMIT: return vmt_drv_set_limit(d, 0, 1000);
    case VMT_CAP_SINGLESTEP: resp.actions = VMT_RESP_STEP; return vmt_drv_respond(d, &ev, &resp);
    case VMT_CAP_FAST_STEP: resp.actions = VMT_RESP_FAST_STEP; return vmt_drv_respond(d, &ev, &resp);
    case VMT_CAP_EMULATE: resp.actions = VMT_RESP_EMULATE; return vmt_drv_respond(d, &ev, &resp);
    default: (void)stats; return VMT_E_INTERNAL;
    }
}

/* Every capability with a call: when undeclared, the wrapper refuses it. */
static void undeclared_caps_are_refused(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    static const uint64_t flags[] = {
        VMT_CAP_READ_PHYS, VMT_CAP_WRITE_PHYS, VMT_CAP_REGS_GET, VMT_CAP_REGS_SET, VMT_CAP_PAUSE,
        VMT_CAP_VIEWS, VMT_CAP_VIEW_REMAP, VMT_CAP_VIEW_PERM, VMT_CAP_FRAMES, VMT_CAP_HW_BREAKPOINTS,
        VMT_CAP_INJECT_PF, VMT_CAP_INJECT_BP, VMT_CAP_EVENTS, VMT_CAP_CR3_EVENTS, VMT_CAP_IO_EVENTS,
        VMT_CAP_TIME_LIMIT, VMT_CAP_INSN_LIMIT, VMT_CAP_SINGLESTEP, VMT_CAP_FAST_STEP, VMT_CAP_EMULATE,
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (vmt_driver_has(c->d, flags[i]))
            continue;
        vmt_status st = call_needing(c->d, flags[i]);
        if (st != VMT_E_NOTSUP)
            fail_msg("driver '%s' does not declare %s but a call needing it returned %s (%s)", c->driver_name,
                     vmt_cap_name(flags[i]), vmt_strerror(st), vmt_driver_error(c->d));
        assert_true(vmt_driver_error(c->d)[0] != '\0'); /* the refusal says why */
    }
}

#define GPR_LIST(r) { &(r).rax, &(r).rbx, &(r).rcx, &(r).rdx, &(r).rsi, &(r).rdi, &(r).rbp, &(r).rsp, \
                      &(r).r8, &(r).r9, &(r).r10, &(r).r11, &(r).r12, &(r).r13, &(r).r14, &(r).r15 }

static void regs_round_trip(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_REGS_GET | VMT_CAP_REGS_SET);
    vmt_regs r, back;
    VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &r));
    uint64_t *gpr[16] = GPR_LIST(r);
    for (int i = 0; i < 16; i++)
        *gpr[i] = 0x1111111111111111ull * (uint64_t)(i + 1) ^ 0x0123456789abcdefull;
    r.rip = 0x1234;
    r.rflags = (r.rflags | 0x2 | 0x1) & ~VMT_RFLAGS_TF; /* bit 1 is fixed; set CF */
    VMT_CONF_OK(c, vmt_drv_set_regs(c->d, 0, &r));
    memset(&back, 0xee, sizeof back);
    VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &back));
    uint64_t *bgpr[16] = GPR_LIST(back);
    for (int i = 0; i < 16; i++)
        if (*bgpr[i] != *gpr[i])
            fail_msg("general register %d: set 0x%llx, got 0x%llx", i, (unsigned long long)*gpr[i],
                     (unsigned long long)*bgpr[i]);
    assert_int_equal(back.rip, 0x1234);
    assert_int_equal(back.rflags, r.rflags);
    assert_int_equal(back.cr3, r.cr3);
    VMT_CONF_EXPECT(c, VMT_E_INVAL, vmt_drv_get_regs(c->d, c->caps->vcpus, &back));
}

static void pause_resume(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_PAUSE);
    for (int i = 0; i < 2; i++) {
        VMT_CONF_OK(c, vmt_drv_pause(c->d));
        if (vmt_driver_has(c->d, VMT_CAP_REGS_GET)) {
            vmt_regs r;
            VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &r));
        }
        VMT_CONF_OK(c, vmt_drv_resume(c->d));
    }
    if (vmt_driver_has(c->d, VMT_CAP_EVENTS)) {
        /* Paused, nothing runs: a finite wait times out, an endless one is
         * refused (it could never return), and the VM stays paused. */
        vmt_event ev0;
        VMT_CONF_OK(c, vmt_drv_pause(c->d));
        VMT_CONF_EXPECT(c, VMT_E_TIMEOUT, vmt_drv_wait_event(c->d, 0, &ev0));
        VMT_CONF_EXPECT(c, VMT_E_BUSY, vmt_drv_wait_event(c->d, -1, &ev0));
        VMT_CONF_EXPECT(c, VMT_E_TIMEOUT, vmt_drv_wait_event(c->d, 0, &ev0));
        VMT_CONF_OK(c, vmt_drv_resume(c->d));
    }
    if (!c->factory->runs_cpu || !vmt_driver_has(c->d, VMT_CAP_REGS_GET | VMT_CAP_EVENTS))
        return; /* no CPU: the calls above are all there is to check */
    /* The effect: paused, the guest does not run; resumed, it does. The
     * guest counts in rax forever (inc rax; jmp back). */
    static const uint8_t count_loop[] = { 0x48, 0xff, 0xc0, 0xeb, 0xfb };
    VMT_CONF_OK(c, vmt_conf_reopen_code(c, NULL, 0x1000, count_loop, sizeof count_loop));
    vmt_event ev;
    vmt_regs before, after;
    VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &before));
    VMT_CONF_OK(c, vmt_drv_pause(c->d));
    VMT_CONF_EXPECT(c, VMT_E_TIMEOUT, vmt_drv_wait_event(c->d, 20, &ev));
    VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &after));
    assert_int_equal(after.rax, before.rax);
    assert_int_equal(after.rip, before.rip);
    VMT_CONF_OK(c, vmt_drv_resume(c->d));
    /* Resumed, it runs: a loaded machine (CI under ASan) may spend a whole
     * 20 ms slice translating before the first instruction retires, so
     * allow a bounded number of slices for the first progress. */
    for (int slice = 0; slice < 50; slice++) {
        VMT_CONF_EXPECT(c, VMT_E_TIMEOUT, vmt_drv_wait_event(c->d, 20, &ev));
        VMT_CONF_OK(c, vmt_drv_get_regs(c->d, 0, &after));
        if (after.rax > before.rax)
            break;
    }
    assert_true(after.rax > before.rax);
}

static void hw_breakpoint_slots(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_HW_BREAKPOINTS);
    unsigned n = c->caps->hw_breakpoints;
    for (unsigned i = 0; i < n; i++)
        VMT_CONF_OK(c, vmt_drv_hw_breakpoint(c->d, 0, i, 0x100000 + 0x10 * i, 1));
    for (unsigned i = 0; i < n; i++)
        VMT_CONF_OK(c, vmt_drv_hw_breakpoint(c->d, 0, i, 0, 0));
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_hw_breakpoint(c->d, 0, n, 0x100000, 1));
}

/* Optional event kinds and run limits can be switched on and off. */
static void optional_kinds_and_limits_toggle(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    int did = 0;
    if (vmt_driver_has(c->d, VMT_CAP_CR3_EVENTS)) {
        VMT_CONF_OK(c, vmt_drv_monitor(c->d, VMT_EVENT_CR_WRITE, 1));
        VMT_CONF_OK(c, vmt_drv_monitor(c->d, VMT_EVENT_CR_WRITE, 0));
        did++;
    }
    if (vmt_driver_has(c->d, VMT_CAP_IO_EVENTS)) {
        /* Port I/O is how testbed guests talk to the host (machine.h): a
         * driver may report it always, so only enabling is required. */
        VMT_CONF_OK(c, vmt_drv_monitor(c->d, VMT_EVENT_IO, 1));
        did++;
    }
    if (vmt_driver_has(c->d, VMT_CAP_TIME_LIMIT)) {
        VMT_CONF_OK(c, vmt_drv_set_limit(c->d, 3600.0, 0));
        did++;
    }
    if (vmt_driver_has(c->d, VMT_CAP_INSN_LIMIT)) {
        VMT_CONF_OK(c, vmt_drv_set_limit(c->d, 0, 1ull << 40));
        did++;
    }
    VMT_CONF_OK(c, vmt_drv_set_limit(c->d, 0, 0)); /* clearing limits always works */
    if (!did)
        skip();
}

static void stats_of_fresh_driver(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_EVENTS);
    vmt_driver_stats s;
    memset(&s, 0xee, sizeof s);
    VMT_CONF_OK(c, vmt_drv_stats(c->d, &s));
    for (int k = 0; k < VMT_EVENT_KIND_COUNT; k++)
        if (s.events[k])
            fail_msg("fresh driver reports %llu %s events", (unsigned long long)s.events[k],
                     vmt_event_kind_name((vmt_event_kind)k));
    assert_true(s.internal_exits <= s.exits);
}

static const struct CMUnitTest basics_tests[] = {
    VMT_CONF_TEST(caps_record_consistent),
    VMT_CONF_TEST(undeclared_caps_are_refused),
    VMT_CONF_TEST(regs_round_trip),
    VMT_CONF_TEST(pause_resume),
    VMT_CONF_TEST(hw_breakpoint_slots),
    VMT_CONF_TEST(optional_kinds_and_limits_toggle),
    VMT_CONF_TEST(stats_of_fresh_driver),
};

const vmt_conformance_group vmt_conf_group_basics = {
    .name = "basics",
    .needs = 0,
    .needs_cpu = false,
    .tests = basics_tests,
    .count = sizeof basics_tests / sizeof basics_tests[0],
};
