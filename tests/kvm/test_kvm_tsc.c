/*
 * tests/kvm/test_kvm_tsc.c — monitor time is invisible in the guest's TSC on
 * KVM: the kvmtime guest (guests/kvmtime) times 1,000 calls of a function
 * the host hooks with a hardware breakpoint against 1,000 calls of an
 * identical twin; the host spends 1 ms in the monitor at every hit. Without
 * hiding, each hooked call would cost the guest >= 1 ms of TSC; the driver
 * takes the stopped time off the TSC, so the hooked calls must cost less
 * than half of that more than the twin's. The remaining per-call cost (the
 * exits themselves, which no offset hides) is printed: that is what is left
 * to hide (issue 14's timing bullet).
 * Skips (77) without /dev/kvm, or when the host offers no way to move the
 * TSC back (the reason is printed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "util/testutil.h"
#include "vmtrap/image.h"
#include "vmtrap/kvm.h"
#include "vmtrap/ucall.h"

#define RAM (64ull << 20)
#define KERNEL_VMA 0xffffffff80000000ull
#define CALLS 100u
#define ROUNDS 10u
#define MONITOR_NS 1000000ull /* the monitor's work per hit */

static vmt_status read_phys(void *ctx, vmt_pa pa, void *buf, size_t len) { return vmt_drv_read_phys(ctx, pa, buf, len); }

static void set_param(vmt_driver *d, const vmt_image *img, const char *sym, uint32_t v)
{
    vmt_va va;
    uint64_t size;
    assert_int_equal(vmt_image_symbol(img, sym, &va, &size), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, va - KERNEL_VMA, &v, sizeof v), VMT_OK);
}

static void hooked_call_costs_no_monitor_time(void **state)
{
    (void)state;
    char why[256] = "", path[512];
    snprintf(path, sizeof path, "%s/kvmtime.elf", VMT_GUEST_DIR);
    vmt_image *img = NULL;
    if (vmt_image_load_elf(path, RAM, &img, why, sizeof why) != VMT_OK)
        fail_msg("guest: %s", why);
    vmt_machine_config cfg = { .ram_size = RAM, .image = img };
    vmt_driver *d = NULL;
    if (vmt_kvm_driver_create(&cfg, &d, why, sizeof why) != VMT_OK)
        fail_msg("kvm driver: %s", why);
    vmt_kvm_time t;
    assert_int_equal(vmt_kvm_time_info(d, &t), VMT_OK);
    if (!strcmp(t.tsc_method, "none")) {
        printf("SKIP: this host cannot move the guest TSC back: %s\n", t.tsc_why_none);
        vmt_driver_destroy(d);
        vmt_image_destroy(img);
        exit(77);
    }
    set_param(d, img, "kvmtime_calls", CALLS);
    set_param(d, img, "kvmtime_rounds", ROUNDS);
    vmt_va hooked;
    uint64_t size;
    assert_int_equal(vmt_image_symbol(img, "kvmtime_hooked", &hooked, &size), VMT_OK);
    vmt_image_destroy(img);
    assert_int_equal(vmt_drv_hw_breakpoint(d, 0, 0, hooked, 1), VMT_OK);

    vmt_phys_reader rd = { read_phys, d };
    uint64_t hits = 0, tsc_hooked = 0, tsc_twin = 0, calls = 0;
    int done = 0;
    while (!done) {
        vmt_event ev;
        vmt_status st = vmt_drv_wait_event(d, 20000, &ev);
        if (st != VMT_OK)
            fail_msg("wait: %s (%s)", vmt_strerror(st), vmt_driver_error(d));
        switch (ev.kind) {
        case VMT_EVENT_HW_BREAKPOINT: {
            assert_int_equal(ev.regs.rip, hooked);
            hits++;
            struct timespec ts = { 0, (long)MONITOR_NS };
            nanosleep(&ts, NULL);
            break;
        }
        case VMT_EVENT_IO: {
            assert_true(vmt_ucall_is_ucall(&ev));
            vmt_ucall uc;
            if (vmt_ucall_decode(&rd, RAM, &ev, &uc, why, sizeof why) != VMT_OK)
                fail_msg("ucall: %s", why);
            if (uc.cmd == VMT_UCALL_REPORT && !strcmp(uc.name, "tsc.hooked"))
                tsc_hooked = uc.args[0];
            else if (uc.cmd == VMT_UCALL_REPORT && !strcmp(uc.name, "tsc.twin"))
                tsc_twin = uc.args[0];
            else if (uc.cmd == VMT_UCALL_REPORT && !strcmp(uc.name, "calls"))
                calls = uc.args[0];
            else if (uc.cmd == VMT_UCALL_DONE) {
                assert_int_equal(uc.args[0], 0);
                done = 1;
            } else {
                char line[300];
                vmt_ucall_format(&uc, line, sizeof line);
                fail_msg("unexpected ucall: %s", line);
            }
            break;
        }
        default:
            fail_msg("unexpected %s event at rip 0x%llx%s%s", vmt_event_kind_name(ev.kind),
                     (unsigned long long)ev.regs.rip, ev.kind == VMT_EVENT_STOPPED ? ": " : "",
                     ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
        }
        vmt_response r = vmt_response_continue();
        assert_int_equal(vmt_drv_respond(d, &ev, &r), VMT_OK);
    }
    assert_int_equal(vmt_kvm_check(d), VMT_OK);
    assert_int_equal(calls, CALLS * ROUNDS);
    assert_int_equal(hits, calls);
    assert_int_equal(vmt_kvm_time_info(d, &t), VMT_OK);
    assert_int_equal(t.tsc_failures, 0);
    assert_true(t.tsc_hidden_ns + 100000 >= hits * MONITOR_NS); /* the MSR path may hold back < 100 us */
    assert_true(tsc_hooked > 0 && tsc_twin > 0);
    double ns_per_tick = 1e6 / (double)t.tsc_khz;
    double extra_ns = tsc_hooked > tsc_twin ? (double)(tsc_hooked - tsc_twin) * ns_per_tick / (double)calls : 0.0;
    printf("kvm tsc (%s, %llu kHz): hooked/twin = %.2f, residual per hooked call = %.0f ns of %llu ns stopped "
           "(%.2f%% left)\n",
           t.tsc_method, (unsigned long long)t.tsc_khz, (double)tsc_hooked / (double)tsc_twin, extra_ns,
           (unsigned long long)(t.stopped_ns / hits), 100.0 * extra_ns / ((double)t.stopped_ns / (double)hits));
    assert_true(extra_ns < MONITOR_NS / 2.0);
    vmt_driver_destroy(d);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hooked_call_costs_no_monitor_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
