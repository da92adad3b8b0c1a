/*
 * tests/guests/test_guest_runs.c — the testbed guests run to DONE on one
 * CPU-running driver (GUEST_TEST_DRIVER: "emu" or "kvm"; built once per
 * driver) with no monitoring, and their own reports are checked:
 *  - smoke: the exact ucall sequence and serial line; each way of failing
 *    (unhandled #UD, #PF, failed GUEST_ASSERT_EQ) is reported with its
 *    vector/values and stops the guest;
 *  - workload: the iteration parameter is honoured, every memory-manager
 *    operation kind happens and its STEP reports are consistent (a page comes
 *    back in at a frame other than the one it left, counters match the
 *    steps), every service got every call, and all 16 stealth detectors pass
 *    on a plain run, with the entry-byte hashes equal to the ELF's bytes.
 * Skipped (77) when the driver is not built or not usable here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "guest_runner.h"
#include "vmtrap/driver.h"
#include "util/testutil.h"

#ifndef GUEST_TEST_DRIVER
#error "GUEST_TEST_DRIVER must name the driver"
#endif

#define RAM_SIZE (64ULL << 20)
#define TIME_LIMIT_S 60.0
#define WORKLOAD_ITERATIONS 24
#define NDETECTORS 16
/* svc_exit calls the detectors make (4: 1, 16 timing: 64 x 7), svc_spawn (12 alias: 1) */
#define DETECTOR_EXIT_CALLS (1 + 64 * 7)
#define DETECTOR_SPAWN_CALLS 1

static const char *const services[] = { "svc_open", "svc_write", "svc_spawn", "svc_exit" };

static void run_or_fail(const char *guest, const guest_param *params, size_t nparams, guest_run *r)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.elf", VMT_GUEST_DIR, guest);
    vmt_status st = guest_run_elf(GUEST_TEST_DRIVER, path, RAM_SIZE, params, nparams, TIME_LIMIT_S, r);
    if (st != VMT_OK) {
        guest_run_dump(r);
        fail_msg("%s on %s: %s (%s)", guest, GUEST_TEST_DRIVER, vmt_strerror(st), r->error);
    }
}

static void test_smoke_sequence(void **state)
{
    (void)state;
    guest_run r;
    run_or_fail("smoke", NULL, 0, &r);
    if (!r.done || r.ncalls != 6)
        guest_run_dump(&r);
    assert_true(r.done);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.ncalls, 6);
    static const vmt_ucall_cmd want[] = { VMT_UCALL_PRINT, VMT_UCALL_PRINT, VMT_UCALL_REPORT,
                                          VMT_UCALL_STEP, VMT_UCALL_DETECTOR, VMT_UCALL_DONE };
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(r.calls[i].cmd, want[i]);
        assert_int_equal(r.calls[i].seq, i + 1);
    }
    assert_string_equal(r.calls[0].text, "smoke: hello");
    assert_string_equal(r.calls[1].text, "fmt: -42 42 beef 00001234 str|ab  |  7|z % -9000000000");
    assert_string_equal(r.calls[2].name, "ram_size");
    assert_int_equal(r.calls[2].args[0], RAM_SIZE);
    assert_string_equal(r.calls[3].name, "smoke");
    assert_int_equal(r.calls[3].nargs, 3);
    assert_int_equal(r.calls[3].args[0], 1);
    assert_int_equal(r.calls[3].args[1], 2);
    assert_int_equal(r.calls[3].args[2], 3);
    assert_int_equal(r.calls[4].args[0], 0);
    assert_int_equal(r.calls[4].args[1], 1);
    int serial_ok = 0;
    for (size_t i = 0; i < r.nserial; i++)
        serial_ok |= !strcmp(r.serial[i], "smoke: serial ok");
    assert_true(serial_ok);
    guest_run_free(&r);
}

/* smoke_fault = n: the guest must report the failure and stop without DONE. */
static void expect_guest_failure(uint32_t fault, const char *file, const char *expr_part, uint64_t arg1,
                                 uint64_t arg4)
{
    guest_param p = { "smoke_fault", fault };
    guest_run r;
    run_or_fail("smoke", &p, 1, &r);
    const vmt_ucall *af = guest_run_find(&r, VMT_UCALL_ASSERT_FAIL, NULL, 0);
    if (!af || r.done || !r.stopped)
        guest_run_dump(&r);
    if (!af)
        fail_msg("smoke_fault=%u: the guest never reported the failure through its own IDT/ucall; "
                 "the %s driver stopped it: %s %s", (unsigned)fault, GUEST_TEST_DRIVER,
                 r.stopped ? vmt_stop_reason_name(r.stop.reason) : "(not stopped)", r.stop.message);
    assert_false(r.done);
    assert_true(r.stopped);
    assert_int_equal(r.stop.reason, VMT_STOP_HALT);
    assert_string_equal(af->name, file);
    if (!strstr(af->text, expr_part))
        fail_msg("assert text '%s' lacks '%s'", af->text, expr_part);
    assert_int_equal(af->args[1], arg1);
    if (arg4)
        assert_int_equal(af->args[4], arg4);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_STEP, NULL), 0);
    guest_run_free(&r);
}

static void test_smoke_unhandled_ud(void **state)
{
    (void)state;
    expect_guest_failure(1, "exception", "unexpected exception #UD (6)", 6, 0);
}

static void test_smoke_unhandled_pf(void **state)
{
    (void)state;
    expect_guest_failure(2, "exception", "unexpected exception #PF (14)", 14, 0x0000700000000000ULL);
}

static void test_smoke_assert_fails(void **state)
{
    (void)state;
    expect_guest_failure(3, "smoke.c", "1 == 2", 1, 0);
}

static uint64_t report_or_fail(const guest_run *r, const char *key)
{
    int found = 0;
    uint64_t v = guest_run_report(r, key, &found);
    if (!found)
        fail_msg("guest did not report %s", key);
    return v;
}

/* The STEP stream tells a consistent story: every service page starts at
 * its load frame (va - KERNEL_VMA) and is back there after a 2 MiB merge; a
 * page leaves from the frame it was last put in and comes back in, or
 * moves, to another one. */
static void check_step_consistency(const guest_run *r)
{
    struct {
        uint64_t va, frame;
    } where[8];
    size_t nwhere = 0;
    for (size_t i = 0; i < r->ncalls; i++) {
        const vmt_ucall *u = &r->calls[i];
        if (u->cmd != VMT_UCALL_STEP)
            continue;
        assert_int_equal(u->nargs, 3);
        if (!strcmp(u->name, "merge-2m")) {
            /* every service page of the region is back at its home frame */
            for (size_t k = 0; k < nwhere; k++)
                if (where[k].va >= u->args[0] && where[k].va < u->args[0] + (2u << 20))
                    where[k].frame = where[k].va - GUEST_KERNEL_VMA;
            continue;
        }
        int is_out = !strcmp(u->name, "pageout") || !strcmp(u->name, "pageout-data");
        int is_in = !strcmp(u->name, "pagein") || !strcmp(u->name, "pagein-data");
        if (!is_out && !is_in && strcmp(u->name, "move"))
            continue;
        size_t k = 0;
        while (k < nwhere && where[k].va != u->args[0])
            k++;
        if (k == nwhere) {
            assert_true(nwhere < 8);
            where[nwhere].va = u->args[0];
            where[nwhere].frame = u->args[0] - GUEST_KERNEL_VMA; /* its home (load) frame */
            nwhere++;
        }
        if (is_in) {
            assert_int_not_equal(u->args[2], u->args[1]);
            assert_int_equal(u->args[1], where[k].frame);
        } else {
            assert_int_equal(u->args[1], where[k].frame);
        }
        if (!strcmp(u->name, "move"))
            assert_int_not_equal(u->args[2], u->args[1]);
        where[k].frame = is_out ? u->args[1] : u->args[2];
        /* the data page goes out right before a service reads it: that
         * service's read faults it back in, the very next step */
        if (!strcmp(u->name, "pageout-data")) {
            const vmt_ucall *next = u + 1;
            assert_true(next < r->calls + r->ncalls);
            assert_int_equal(next->cmd, VMT_UCALL_STEP);
            assert_string_equal(next->name, "pagein-data");
            assert_string_equal(next->text, "demand fault");
            assert_int_equal(next->args[0], u->args[0]);
        }
        assert_int_equal(u->args[0] & 0xfff, 0);
    }
}

static void test_workload(void **state)
{
    (void)state;
    guest_param p[2] = { { "workload_iterations", WORKLOAD_ITERATIONS }, { "workload_skip", 0 } };
    guest_run r;
    run_or_fail("workload", p, 2, &r);
    if (!r.done || r.exit_code || guest_run_find(&r, VMT_UCALL_ASSERT_FAIL, NULL, 0))
        guest_run_dump(&r);
    assert_true(r.done);
    assert_int_equal(r.exit_code, 0);
    assert_null(guest_run_find(&r, VMT_UCALL_ASSERT_FAIL, NULL, 0));
    assert_int_equal(report_or_fail(&r, "iterations"), WORKLOAD_ITERATIONS);

    /* every memory-manager operation happened, and the counters match the steps */
    static const struct {
        const char *step, *counter;
    } ops[] = {
        { "pageout", "mm.pageouts" },      { "pagein", "mm.pageins" },
        { "move", "mm.moves" },            { "replace-pt", "mm.pt_replacements" },
        { "merge-2m", "mm.merges" },       { "split-2m", "mm.splits" },
        { "cmpxchg-fail", "mm.cmpxchg_failures" },
        { "pageout-data", "mm.data_pageouts" }, { "pagein-data", "mm.data_pageins" },
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        size_t n = guest_run_count(&r, VMT_UCALL_STEP, ops[i].step);
        if (n == 0)
            fail_msg("no %s step in %d iterations", ops[i].step, WORKLOAD_ITERATIONS);
        assert_int_equal(n, report_or_fail(&r, ops[i].counter));
        total += n;
    }
    assert_int_equal(total, guest_run_count(&r, VMT_UCALL_STEP, NULL));
    assert_int_equal(total, report_or_fail(&r, "mm.steps"));
    assert_true(report_or_fail(&r, "mm.faults") > 0);
    /* PTE writes of every kind: halves and cmpxchg both used by moves */
    int halves = 0, cmpxchg = 0, demand = 0;
    for (size_t i = 0; i < r.ncalls; i++) {
        if (r.calls[i].cmd != VMT_UCALL_STEP)
            continue;
        halves |= !strcmp(r.calls[i].text, "halves");
        cmpxchg |= !strcmp(r.calls[i].text, "cmpxchg");
        demand |= !strcmp(r.calls[i].text, "demand fault");
    }
    assert_true(halves && cmpxchg && demand);
    check_step_consistency(&r);

    /* every call made was received: the guest asserts served == made; here
     * the made counts must be what the loop and the detectors did */
    for (size_t i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof(key), "calls.%s", services[i]);
        assert_int_equal(report_or_fail(&r, key), WORKLOAD_ITERATIONS + (i == 3   ? DETECTOR_EXIT_CALLS
                                                                         : i == 2 ? DETECTOR_SPAWN_CALLS
                                                                                  : 0));
    }
    assert_int_equal(report_or_fail(&r, "alias_calls.svc_spawn"), DETECTOR_SPAWN_CALLS);

    /* detectors: each once, all pass on a plain run (ICEBP included) */
    for (uint64_t id = 1; id <= NDETECTORS; id++) {
        size_t seen = 0;
        for (size_t i = 0; i < r.ncalls; i++) {
            const vmt_ucall *u = &r.calls[i];
            if (u->cmd != VMT_UCALL_DETECTOR || u->args[0] != id)
                continue;
            seen++;
            if (u->args[1] != 1)
                fail_msg("detector %u (%s) failed on a plain %s run: %s", (unsigned)id, u->name,
                         GUEST_TEST_DRIVER, u->text);
        }
        assert_int_equal(seen, 1);
    }
    assert_int_equal(report_or_fail(&r, "detectors.failed"), 0);
    /* a driver that reports INT3 showed us exactly the guest's own four
     * (CC and CD 03, each in .text and in svc_write's page) */
    if (r.caps_flags & VMT_CAP_BREAKPOINT_EVENTS)
        assert_int_equal(r.reinjected_bps, 4);

    /* detector 1's hashes are the ELF's bytes */
    char path[512], why[256];
    snprintf(path, sizeof(path), "%s/workload.elf", VMT_GUEST_DIR);
    for (size_t i = 0; i < 4; i++) {
        char key[64];
        uint64_t want;
        snprintf(key, sizeof(key), "d1.%s", services[i]);
        assert_int_equal(guest_elf_symbol_hash(path, services[i], 32, &want, why, sizeof(why)), VMT_OK);
        assert_int_equal(report_or_fail(&r, key), want);
    }
    guest_run_free(&r);
}

/* workload_skip turns detectors off one by one; the rest still run. */
static void test_workload_skip_detectors(void **state)
{
    (void)state;
    const uint32_t skip = (1u << 7) | (1u << 8) | (1u << 10);
    guest_param p[2] = { { "workload_iterations", 8 }, { "workload_skip", skip } };
    guest_run r;
    run_or_fail("workload", p, 2, &r);
    if (!r.done)
        guest_run_dump(&r);
    assert_true(r.done);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(report_or_fail(&r, "iterations"), 8);
    assert_int_equal(report_or_fail(&r, "detectors.skip"), skip);
    size_t want = 0;
    for (unsigned id = 1; id <= NDETECTORS; id++)
        want += !(skip & (1u << id));
    assert_int_equal(guest_run_count(&r, VMT_UCALL_DETECTOR, NULL), want);
    for (size_t i = 0; i < r.ncalls; i++)
        if (r.calls[i].cmd == VMT_UCALL_DETECTOR)
            assert_true(r.calls[i].args[0] >= 1 && r.calls[i].args[0] <= NDETECTORS &&
                        !(skip & (1u << r.calls[i].args[0])));
    guest_run_free(&r);
}

int main(void)
{
    char why[256] = "";
    /* skip when the driver cannot run here */
    if (!strcmp(GUEST_TEST_DRIVER, "kvm") && !vmt_test_kvm_available(why, sizeof(why))) {
        printf("skipped: %s\n", why);
        return VMT_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smoke_sequence),
        cmocka_unit_test(test_smoke_unhandled_ud),
        cmocka_unit_test(test_smoke_unhandled_pf),
        cmocka_unit_test(test_smoke_assert_fails),
        cmocka_unit_test(test_workload),
        cmocka_unit_test(test_workload_skip_detectors),
    };
    return cmocka_run_group_tests_name(GUEST_TEST_DRIVER, tests, NULL, NULL);
}
