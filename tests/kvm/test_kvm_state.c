/*
 * tests/kvm/test_kvm_state.c — VMT_CAP_VCPU_STATE and VMT_CAP_DIRTY_LOG on
 * real KVM: a state read from a vCPU, changed and written back is what the
 * guest runs with (its `out dx, eax` reports the rax/rdx the host put
 * there), every group reads back as written, and host writes show in the
 * dirty log until cleared. Skips (77) without /dev/kvm.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kvm_guest.h"
#include "util/testutil.h"
#include "vmtrap/kvm.h"

/* out dx, eax; hlt */
static const uint8_t g_out[] = { 0xef, 0xf4 };

static void state_round_trip_runs(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_out, sizeof g_out, KG_RAM);
    assert_true(vmt_driver_has(d, VMT_CAP_VCPU_STATE));
    vmt_vcpu_state s, back;
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &s), VMT_OK);
    assert_int_equal(s.regs.rip, KG_CODE_PA);
    char why[200];
    assert_int_equal(vmt_vcpu_state_check(&s, why, sizeof why), VMT_OK);
    s.regs.rax = 0x5eed1234;
    s.regs.rdx = KG_PORT_REPORT;
    s.star = 0x0023001000000000ull;
    s.lstar = 0xffffffff81a00080ull;
    s.fpu.fxsave[160] = 0x42; /* xmm0 byte 0 */
    assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &s), VMT_OK);
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &back), VMT_OK);
    assert_int_equal(back.regs.rax, 0x5eed1234);
    assert_int_equal(back.lstar, s.lstar);
    assert_int_equal(back.star, s.star);
    assert_int_equal(back.fpu.fxsave[160], 0x42);
    assert_memory_equal(&back.cs, &s.cs, sizeof s.cs);
    kg_check(d);
    vmt_event ev;
    kg_expect_io_on(d, KG_PORT_REPORT, 0x5eed1234, &ev);
    vmt_driver_destroy(d);
}

static int collect(void *ctx, vmt_gfn gfn)
{
    vmt_gfn *seen = ctx;
    if (seen[0] < 15)
        seen[++seen[0]] = gfn;
    return 0;
}

static void dirty_log_sees_host_writes(void **state)
{
    (void)state;
    vmt_driver *d = kg_driver(g_out, sizeof g_out, KG_RAM);
    assert_true(vmt_driver_has(d, VMT_CAP_DIRTY_LOG));
    vmt_gfn seen[16] = { 0 };
    assert_int_equal(vmt_drv_dirty_log(d, collect, seen, 1), VMT_OK); /* the image's pages */
    memset(seen, 0, sizeof seen);
    uint32_t v = 7;
    assert_int_equal(vmt_drv_write_phys(d, 0x5000, &v, sizeof v), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, 0x9ffe, &v, sizeof v), VMT_OK); /* crosses into frame 10 */
    assert_int_equal(vmt_drv_dirty_log(d, collect, seen, 1), VMT_OK);
    assert_int_equal(seen[0], 3);
    assert_true(seen[1] == 5 && seen[2] == 9 && seen[3] == 10);
    memset(seen, 0, sizeof seen);
    assert_int_equal(vmt_drv_dirty_log(d, collect, seen, 1), VMT_OK);
    assert_int_equal(seen[0], 0);
    vmt_driver_destroy(d);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_round_trip_runs),
        cmocka_unit_test(dirty_log_sees_host_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
