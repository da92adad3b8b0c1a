/*
 * tests/ptm/test_ptm_guest.c — the monitor against real guest instructions.
 *
 * Runs the `workload` testbed guest (ptm_guest_run.c) on the driver this
 * binary is built for; the guest's memory manager pages its four service
 * pages out, in (also on demand from its #PF handler), moves them with plain
 * stores, 4-byte halves and `lock cmpxchg`, hits them with a failing
 * cmpxchg, re-tables, merges them into a 2 MiB page and splits it again. The
 * runner checks each reported step against the monitor's events; here we
 * also require: the guest passed, every kind of event happened, and each
 * monitored write cost one driver exit with write data (two when the value
 * is stripped and the monitor has to single-step).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ptm_guest_run.h"

static int g_skipped; /* main() turns a skip into exit code 77 for ctest */

static void run_workload(ptm_guest_mode mode)
{
    ptm_guest_result r;
    ptm_guest_run(PTM_GUEST_DRIVER, VMT_GUEST_DIR "/workload.elf", mode, &r);
    if (r.skipped) {
        print_message("skipped: %s\n", r.error);
        g_skipped = 1;
        skip();
    }
    print_message("%s (%s): %" PRIu64 " steps checked; %" PRIu64 " monitored PT writes (%" PRIu64 " with data, %" PRIu64
                  " partial), %" PRIu64 " driver exits for them = %.2f per write; events in %" PRIu64 " out %" PRIu64
                  " remap %" PRIu64 "\n",
                  r.driver, ptm_guest_mode_name(mode), r.steps, r.stats.writes, r.stats.writes_with_data,
                  r.stats.partial_writes, r.ptm_exits,
                  r.stats.writes ? (double)r.ptm_exits / (double)r.stats.writes : 0.0, r.events[VMT_PTM_PAGE_IN],
                  r.events[VMT_PTM_PAGE_OUT], r.events[VMT_PTM_REMAP]);
    if (r.error[0])
        fail_msg("%s", r.error);
    assert_int_equal(r.check, VMT_OK);
    assert_true(r.done);
    assert_int_equal(r.exit_code, 0);
    assert_true(r.steps >= 32);
    assert_true(r.events[VMT_PTM_PAGE_IN] > 0 && r.events[VMT_PTM_PAGE_OUT] > 0 && r.events[VMT_PTM_REMAP] > 0);
    if (mode != PTM_GUEST_STEP_BLIND)
        assert_true(r.stats.partial_writes > 0); /* the guest's 4-byte halves */
    if (mode == PTM_GUEST_WITH_DATA && r.data_and_emulate)
        assert_int_equal(r.ptm_exits, r.stats.writes); /* one exit per monitored write */
    if (mode != PTM_GUEST_WITH_DATA) {
        assert_int_equal(r.ptm_exits, 2 * r.stats.writes); /* the write and its single-step */
        assert_int_equal(r.stats.writes_stepped, r.stats.writes);
    }
}

static void test_workload_with_write_data(void **state)
{
    (void)state;
    run_workload(PTM_GUEST_WITH_DATA);
}

static void test_workload_stepped_size_known(void **state)
{
    (void)state;
    run_workload(PTM_GUEST_STEP_SIZE);
}

static void test_workload_stepped_size_unknown(void **state)
{
    (void)state;
    run_workload(PTM_GUEST_STEP_BLIND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_with_write_data),
        cmocka_unit_test(test_workload_stepped_size_known),
        cmocka_unit_test(test_workload_stepped_size_unknown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    return rc == 0 && g_skipped ? 77 : rc;
}
