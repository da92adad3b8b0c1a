/*
 * tests/mem/test_mem_dirty.c — the mem driver's VCPU_STATE and DIRTY_LOG:
 * host and guest (write_view) writes are logged per frame in gfn order,
 * reads and extra frames are not, a stopping callback keeps the log, clear
 * empties it; a full vCPU state round-trips group by group, groups not
 * named in `known` keep their values, and a refused state changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/mem.h"

typedef struct gfn_list {
    vmt_gfn g[64];
    size_t n;
    size_t stop_after; /* 0: never */
} gfn_list;

static int collect(void *ctx, vmt_gfn gfn)
{
    gfn_list *l = ctx;
    if (l->n < 64)
        l->g[l->n++] = gfn;
    return l->stop_after && l->n >= l->stop_after;
}

static vmt_driver *make(void)
{
    vmt_mem_config cfg = { .ram_frames = 200, .vcpus = 2 };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    assert_true(vmt_driver_has(d, VMT_CAP_DIRTY_LOG | VMT_CAP_VCPU_STATE));
    return d;
}

static void test_dirty_log_frames_in_order(void **state)
{
    (void)state;
    vmt_driver *d = make();
    uint8_t b[16] = { 1 };
    gfn_list l = { 0 };
    assert_int_equal(vmt_drv_dirty_log(d, collect, &l, 0), VMT_OK);
    assert_int_equal(l.n, 0);
    assert_int_equal(vmt_drv_write_phys(d, 0x7ff8, b, 16), VMT_OK);  /* frames 7 and 8 */
    assert_int_equal(vmt_drv_write_phys(d, 0xc7000, b, 1), VMT_OK);  /* frame 199, the last */
    assert_int_equal(vmt_mem_write_view(d, 0, 0x41000, b, 4), VMT_OK); /* the guest writes frame 0x41 */
    assert_int_equal(vmt_drv_read_phys(d, 0x50000, b, 16), VMT_OK);  /* reads are not writes */
    vmt_gfn extra;
    assert_int_equal(vmt_drv_frame_alloc(d, &extra), VMT_OK);
    assert_int_equal(vmt_drv_write_phys(d, vmt_gfn_to_pa(extra), b, 8), VMT_OK); /* not guest RAM */
    assert_int_equal(vmt_drv_dirty_log(d, collect, &l, 0), VMT_OK);
    vmt_gfn want[] = { 7, 8, 0x41, 199 };
    assert_int_equal(l.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(l.g[i], want[i]);
    /* a callback that stops keeps the log even when asked to clear */
    gfn_list s = { .stop_after = 2 };
    assert_int_equal(vmt_drv_dirty_log(d, collect, &s, 1), VMT_OK);
    assert_int_equal(s.n, 2);
    l.n = 0;
    assert_int_equal(vmt_drv_dirty_log(d, collect, &l, 1), VMT_OK);
    assert_int_equal(l.n, 4);
    l.n = 0;
    assert_int_equal(vmt_drv_dirty_log(d, collect, &l, 0), VMT_OK);
    assert_int_equal(l.n, 0); /* cleared */
    assert_int_equal(vmt_drv_write_phys(d, 0x3000, b, 1), VMT_OK);
    assert_int_equal(vmt_drv_dirty_log(d, NULL, NULL, 1), VMT_OK); /* clear only */
    assert_int_equal(vmt_drv_dirty_log(d, collect, &l, 0), VMT_OK);
    assert_int_equal(l.n, 0);
    char why[256];
    assert_int_equal(vmt_mem_check(d, why, sizeof why), VMT_OK);
    vmt_driver_destroy(d);
}

static void test_vcpu_state_groups(void **state)
{
    (void)state;
    vmt_driver *d = make();
    vmt_vcpu_state s, got;
    assert_int_equal(vmt_drv_get_vcpu_state(d, 1, &got), VMT_OK);
    assert_int_equal(got.pat, 0x0007040600070406ull); /* init defaults */
    vmt_vcpu_state_init(&s);
    s.known = VMT_VS_REGS | VMT_VS_SYSCALL | VMT_VS_TSC | VMT_VS_EVENTS;
    s.reconstructed = VMT_VS_SYSCALL;
    s.regs.rip = 0xffffffff81000000ull;
    s.regs.cr0 = 0x80050033;
    s.regs.cr4 = 0x6f0;
    s.regs.efer = 0x500;
    s.cs.attrib = 0xa09b;
    s.lstar = 0xffffffff81a00080ull;
    s.tsc = 12345;
    s.halted = true;
    s.pat = 0x1111; /* MSRS not in known: must not be taken */
    assert_int_equal(vmt_drv_set_vcpu_state(d, 1, &s), VMT_OK);
    assert_int_equal(vmt_drv_get_vcpu_state(d, 1, &got), VMT_OK);
    assert_int_equal(got.regs.rip, s.regs.rip);
    assert_int_equal(got.lstar, s.lstar);
    assert_int_equal(got.tsc, 12345);
    assert_true(got.halted);
    assert_int_equal(got.pat, 0x0007040600070406ull);
    assert_true((got.known & s.known) == s.known);
    assert_int_equal(got.reconstructed, VMT_VS_SYSCALL);
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 1, &r), VMT_OK); /* the same registers */
    assert_int_equal(r.rip, s.regs.rip);
    /* vCPU 0 untouched */
    assert_int_equal(vmt_drv_get_vcpu_state(d, 0, &got), VMT_OK);
    assert_int_equal(got.lstar, 0);
    /* an inconsistent state is refused and changes nothing */
    vmt_vcpu_state bad = s;
    bad.regs.cr0 = 0x80000000; /* PG without PE */
    bad.lstar = 1;
    assert_int_equal(vmt_drv_set_vcpu_state(d, 1, &bad), VMT_E_INVAL);
    assert_non_null(strstr(vmt_driver_error(d), "PG without PE"));
    assert_int_equal(vmt_drv_get_vcpu_state(d, 1, &got), VMT_OK);
    assert_int_equal(got.lstar, s.lstar);
    assert_int_equal(vmt_drv_set_vcpu_state(d, 2, &s), VMT_E_INVAL); /* no vCPU 2 */
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirty_log_frames_in_order),
        cmocka_unit_test(test_vcpu_state_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
