/*
 * tests/snapshot/test_snapshot_restore.c — restore for repeated runs on the
 * mem driver (VCPU_STATE + DIRTY_LOG): after "runs" that write guest pages
 * and change registers, a restore rewrites exactly the dirty frames, puts
 * every vCPU and the platform back, and the machine equals the snapshot
 * again, run after run; a dirty frame in a hole of the memory map is zeroed;
 * a failing driver write is reported and the next restore repairs it; a
 * driver without a dirty log gets a full rewrite. Both snapshot kinds (QEMU
 * core, vmts file) are restored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core_builder.h"
#include "vmtrap/mem.h"
#include "vmtrap/snapshot.h"

#define HOLE_GPA 0x100000ull   /* [0x100000, 0x200000) is not RAM in the snapshot */

typedef struct fx {
    uint8_t *core;
    size_t len;
    vmt_snapshot *s;
    vmt_driver *d;
    int resets;
    size_t blob_len;
} fx;

static vmt_status platform_reset(void *ctx, const void *blob, size_t len)
{
    fx *x = ctx;
    (void)blob;
    x->resets++;
    x->blob_len = len;
    return VMT_OK;
}

static vmt_driver *mem_for(uint64_t frames, uint64_t remove)
{
    vmt_mem_config cfg = { .ram_frames = frames, .vcpus = 2, .caps_remove = remove };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    return d;
}

static int setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    core_spec spec;
    core_default_spec(&spec, HOLE_GPA);
    spec.blocks[1] = (core_block){ 0x200000, 0x100000 };
    spec.nvcpus = 2;
    core_default_vcpu(&spec.vcpu[1], 1);
    x->core = core_build(&spec, &x->len, NULL);
    char why[256];
    assert_int_equal(vmt_snapshot_open_mem(x->core, x->len, NULL, &x->s, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_reconstruct(x->s, NULL, NULL), VMT_OK);
    vmt_snapshot_set_platform_reset(x->s, platform_reset, x);
    x->d = mem_for(0x300, 0);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    vmt_driver_destroy(x->d);
    vmt_snapshot_destroy(x->s);
    free(x->core);
    free(x);
    return 0;
}

/* The driver's RAM equals the snapshot (holes zero) and the vCPUs too. */
static void assert_machine_is_snapshot(vmt_snapshot *s, vmt_driver *d)
{
    static uint8_t got[0x100000], want[0x100000];
    for (uint64_t base = 0; base < 0x300000; base += sizeof got) {
        assert_int_equal(vmt_drv_read_phys(d, base, got, sizeof got), VMT_OK);
        if (base == HOLE_GPA)
            memset(want, 0, sizeof want);
        else
            assert_int_equal(vmt_snapshot_read(s, base, want, sizeof want), VMT_OK);
        if (memcmp(got, want, sizeof got) != 0)
            fail_msg("RAM at 0x%llx differs from the snapshot", (unsigned long long)base);
    }
    for (uint32_t i = 0; i < 2; i++) {
        vmt_vcpu_state v;
        assert_int_equal(vmt_drv_get_vcpu_state(d, i, &v), VMT_OK);
        const vmt_vcpu_state *w = vmt_snapshot_vcpu(s, i);
        assert_memory_equal(&v.regs, &w->regs, sizeof v.regs);
        assert_int_equal(v.apic_base, w->apic_base);
        assert_int_equal(v.tr.base, w->tr.base);
    }
}

/* A "run": the guest writes `pages` distinct pages (some adjacent, some in
 * the hole) and changes its registers. Returns the distinct frames written. */
static size_t guest_run(vmt_driver *d, unsigned seed, size_t pages)
{
    uint8_t junk[64];
    memset(junk, (int)(0x5a + seed), sizeof junk);
    size_t n = 0;
    for (size_t k = 0; k < pages; k++) {
        uint64_t gfn = (k * 37 + seed * 11) % 0x300; /* distinct for pages <= 0x300/gcd */
        assert_int_equal(vmt_mem_write_view(d, 0, gfn * 4096 + (k % 64) * 8, junk, 8), VMT_OK);
        n++;
    }
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_OK);
    r.rip += 0x1000;
    r.rax = 0xdead;
    assert_int_equal(vmt_drv_set_regs(d, 0, &r), VMT_OK);
    return n;
}

static void test_restore_rewrites_only_dirty_pages(void **state)
{
    fx *x = *state;
    vmt_snapshot_run_stats st;
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, &st), VMT_OK); /* first: full apply */
    assert_int_equal(st.last_dirty_pages, 0x200);
    assert_machine_is_snapshot(x->s, x->d);
    for (unsigned run = 1; run <= 3; run++) {
        size_t wrote = guest_run(x->d, run, 100);
        uint64_t writes_before = vmt_mem_op_count(x->d, VMT_MEM_OP_WRITE_PHYS);
        assert_int_equal(vmt_snapshot_restore(x->s, x->d, &st), VMT_OK);
        assert_int_equal(st.last_dirty_pages, wrote);
        assert_int_equal(st.restores, run + 1);
        /* consecutive frames go in one write: fewer writes than pages */
        assert_true(vmt_mem_op_count(x->d, VMT_MEM_OP_WRITE_PHYS) - writes_before <= wrote);
        assert_machine_is_snapshot(x->s, x->d);
    }
    assert_int_equal(x->resets, 4);
    assert_int_equal(x->blob_len, 0);
    assert_true(st.total_ns >= st.last_ns && st.max_ns >= st.last_ns);
    /* nothing written: nothing to do */
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, &st), VMT_OK);
    assert_int_equal(st.last_dirty_pages, 0);
}

static void test_failed_write_is_repaired_next_time(void **state)
{
    fx *x = *state;
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, NULL), VMT_OK);
    guest_run(x->d, 7, 50);
    vmt_mem_fail_nth(x->d, VMT_MEM_OP_WRITE_PHYS, 3);
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, NULL), VMT_E_INJECTED);
    assert_non_null(strstr(vmt_snapshot_error(x->s), "partly"));
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, NULL), VMT_OK);
    assert_machine_is_snapshot(x->s, x->d);
}

static void test_without_dirty_log_everything_is_rewritten(void **state)
{
    fx *x = *state;
    vmt_driver *d = mem_for(0x300, VMT_CAP_DIRTY_LOG);
    vmt_snapshot_run_stats st;
    assert_int_equal(vmt_snapshot_restore(x->s, d, &st), VMT_OK);
    guest_run(d, 1, 10);
    assert_int_equal(vmt_snapshot_restore(x->s, d, &st), VMT_OK);
    assert_int_equal(st.last_dirty_pages, 0x200);
    /* the hole is not the snapshot's: without a log it cannot be found */
    static const uint8_t z[4096];
    int dirty_hole_pages = 0;
    for (uint64_t g = 0x100; g < 0x200; g++) {
        uint8_t b[4096];
        assert_int_equal(vmt_drv_read_phys(d, g * 4096, b, sizeof b), VMT_OK);
        if (memcmp(b, z, sizeof b) != 0) {
            dirty_hole_pages++;
            assert_int_equal(vmt_drv_write_phys(d, g * 4096, z, sizeof z), VMT_OK);
        }
    }
    assert_true(dirty_hole_pages > 0);
    assert_machine_is_snapshot(x->s, d);
    vmt_driver_destroy(d);
}

static void test_restore_from_a_vmts_file(void **state)
{
    fx *x = *state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/vmt_restore_%d.vmts", (int)getpid());
    vmt_snapshot_save_options so = { .platform = "blob", .platform_len = 4 };
    assert_int_equal(vmt_snapshot_save(x->s, &so, path), VMT_OK);
    vmt_snapshot *v = NULL;
    char why[256];
    assert_int_equal(vmt_snapshot_open(path, NULL, &v, why, sizeof why), VMT_OK);
    vmt_snapshot_set_platform_reset(v, platform_reset, x);
    vmt_driver *d = mem_for(0x300, 0);
    assert_int_equal(vmt_snapshot_restore(v, d, NULL), VMT_OK);
    assert_int_equal(x->blob_len, 4);
    for (unsigned run = 0; run < 2; run++) {
        guest_run(d, run + 3, 200);
        vmt_snapshot_run_stats st;
        assert_int_equal(vmt_snapshot_restore(v, d, &st), VMT_OK);
        assert_true(st.last_dirty_pages > 0);
        assert_machine_is_snapshot(x->s, d);
    }
    assert_int_equal(vmt_snapshot_check(v, why, sizeof why), VMT_OK); /* chunks decompressed on demand */
    vmt_driver_destroy(d);
    vmt_snapshot_destroy(v);
    unlink(path);
}

/* One snapshot restoring two machines in turn: each switch is a full
 * apply (the other machine's dirty log says nothing about this one). */
static void test_two_drivers_in_turn(void **state)
{
    fx *x = *state;
    vmt_driver *e = mem_for(0x300, 0);
    vmt_snapshot_run_stats st;
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, &st), VMT_OK);
    guest_run(x->d, 1, 10);
    assert_int_equal(vmt_snapshot_restore(x->s, e, &st), VMT_OK);
    assert_int_equal(st.last_dirty_pages, 0x200); /* e: full */
    guest_run(e, 2, 10);
    assert_int_equal(vmt_snapshot_restore(x->s, e, &st), VMT_OK);
    assert_int_equal(st.last_dirty_pages, 10);    /* e: dirty only */
    assert_machine_is_snapshot(x->s, e);
    assert_int_equal(vmt_snapshot_restore(x->s, x->d, &st), VMT_OK);
    assert_int_equal(st.last_dirty_pages, 0x200); /* back to d: full, repairs its run */
    assert_machine_is_snapshot(x->s, x->d);
    vmt_driver_destroy(e);
}

static void test_apply_refuses_too_few_vcpus(void **state)
{
    fx *x = *state;
    vmt_mem_config cfg = { .ram_frames = 0x300, .vcpus = 1 };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_snapshot_apply(x->s, d), VMT_E_INVAL);
    assert_non_null(strstr(vmt_snapshot_error(x->s), "2 vCPUs"));
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restore_rewrites_only_dirty_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_is_repaired_next_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_dirty_log_everything_is_rewritten, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_from_a_vmts_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_refuses_too_few_vcpus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_drivers_in_turn, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
