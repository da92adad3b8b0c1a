/*
 * tests/snapshot/test_snapshot_platform.c — the platform's device state
 * travels in a vmtrap snapshot and comes back on every restore: a machine
 * (mem driver + platform) whose LAPIC timer and UART were programmed is
 * saved with the platform blob; after a "run" that reprograms the devices
 * and moves virtual time, a restore through the platform-reset callback
 * gives back exactly the saved device state (the platform's own save of it
 * is byte-identical), and a platform that refuses the blob (different vCPU
 * count) fails the restore with its reason.
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

#include "vmtrap/mem.h"
#include "vmtrap/platform.h"
#include "vmtrap/snapshot.h"

/* The adapter a user writes: the snapshot gives the blob back. */
static vmt_status platform_reset(void *ctx, const void *blob, size_t len)
{
    return vmt_platform_load(ctx, blob, len);
}

static vmt_platform *make_platform(uint32_t vcpus)
{
    vmt_platform_config pc = { .vcpus = vcpus, .tsc_hz = 2600000000ull };
    vmt_platform *p = NULL;
    char why[256];
    assert_int_equal(vmt_platform_create(&pc, &p, why, sizeof why), VMT_OK);
    return p;
}

/* Program the devices like the Debian guest at its pause: LAPIC timer
 * one-shot on vector 0xec, UART IER 0x05. */
static void program(vmt_platform *p, uint64_t now, uint32_t count, uint8_t ier)
{
    vmt_bus b = vmt_platform_bus(p);
    b.ops->advance(b.ctx, now);
    assert_int_equal(b.ops->mmio_write(b.ctx, 0, 0xfee000f0, 4, 0x1ff), VMT_OK);  /* SVR: enabled */
    assert_int_equal(b.ops->mmio_write(b.ctx, 0, 0xfee00320, 4, 0xec), VMT_OK);   /* LVT timer */
    assert_int_equal(b.ops->mmio_write(b.ctx, 0, 0xfee00380, 4, count), VMT_OK); /* initial count */
    assert_int_equal(b.ops->pio_write(b.ctx, 0, 0x3f9, 1, ier), VMT_OK);
}

static uint8_t *platform_blob(vmt_platform *p, size_t *len)
{
    uint8_t *blob = NULL;
    assert_int_equal(vmt_platform_save(p, &blob, len), VMT_OK);
    return blob;
}

static void test_platform_state_restored_every_time(void **state)
{
    (void)state;
    vmt_platform *p = make_platform(1);
    program(p, 1000000, 5000000, 0x05);
    size_t len;
    uint8_t *saved = platform_blob(p, &len);

    vmt_mem_config mc = { .ram_frames = 64 };
    vmt_driver *d = NULL;
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&mc, &d, why, sizeof why), VMT_OK);
    vmt_vcpu_state v;
    vmt_vcpu_state_init(&v);
    v.known = VMT_VS_REGS;
    assert_int_equal(vmt_drv_set_vcpu_state(d, 0, &v), VMT_OK);
    char path[128];
    snprintf(path, sizeof path, "/tmp/vmt_platform_%d.vmts", (int)getpid());
    vmt_snapshot_save_options so = { .platform = saved, .platform_len = len,
                                     .clock = { .tsc_hz = 2600000000ull, .start_ns = 1000000 } };
    assert_int_equal(vmt_snapshot_save_driver(d, &so, path, why, sizeof why), VMT_OK);

    vmt_snapshot *s = NULL;
    assert_int_equal(vmt_snapshot_open(path, NULL, &s, why, sizeof why), VMT_OK);
    size_t blen;
    const void *b = vmt_snapshot_platform(s, &blen);
    assert_int_equal(blen, len);
    assert_memory_equal(b, saved, len);
    vmt_snapshot_set_platform_reset(s, platform_reset, p);
    assert_int_equal(vmt_snapshot_restore(s, d, NULL), VMT_OK);
    for (int run = 0; run < 3; run++) {
        /* the run: time moves on, the guest reprograms the devices */
        program(p, 9000000 + (uint64_t)run * 1000, 77 + (uint32_t)run, 0x00);
        size_t nlen;
        uint8_t *now = platform_blob(p, &nlen);
        assert_true(nlen != len || memcmp(now, saved, len) != 0);
        free(now);
        assert_int_equal(vmt_snapshot_restore(s, d, NULL), VMT_OK);
        uint8_t *back = platform_blob(p, &nlen);
        assert_int_equal(nlen, len);
        assert_memory_equal(back, saved, len);
        free(back);
        assert_int_equal(vmt_platform_now(p), 1000000);
        assert_int_equal(vmt_platform_check(p), VMT_OK);
    }

    /* a platform that cannot take the blob fails the restore, saying so */
    vmt_platform *two = make_platform(2);
    vmt_snapshot_set_platform_reset(s, platform_reset, two);
    assert_int_not_equal(vmt_snapshot_restore(s, d, NULL), VMT_OK);
    assert_non_null(strstr(vmt_snapshot_error(s), "platform"));

    vmt_platform_destroy(two);
    vmt_snapshot_destroy(s);
    unlink(path);
    vmt_driver_destroy(d);
    free(saved);
    vmt_platform_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_platform_state_restored_every_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
