/*
 * tests/conformance/conf_memory.c — conformance group "memory":
 * guest-physical reads and writes, page crossings and bounds.
 */
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

static vmt_pa ram_end(const vmt_conf *c) { return c->caps->ram_frames * VMT_PAGE_SIZE; }

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + seed * 7u + (i >> 8));
}

/* A write spanning three pages, then reads of sub-ranges that start, end
 * or cross on page boundaries. */
static void phys_round_trip_across_pages(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_WRITE_PHYS);
    enum { N = 2 * 4096 + 100 };
    static uint8_t in[N], out[N];
    fill(in, N, 1);
    vmt_pa base = 0x10000 - 50;
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, base, in, N));
    memset(out, 0, N);
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, base, out, N));
    assert_memory_equal(in, out, N);
    uint8_t two[2];
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, 0x10000 - 1, two, 2)); /* crosses one boundary */
    assert_memory_equal(two, in + 49, 2);
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, 0x11000, two, 1)); /* first byte of a page */
    assert_int_equal(two[0], in[50 + 4096]);
    /* A small overwrite inside changes exactly those bytes. */
    uint8_t x[3] = { 0xde, 0xad, 0x99 };
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, 0x10fff, x, 3));
    memcpy(in + 50 + 4095, x, 3);
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, base, out, N));
    assert_memory_equal(in, out, N);
}

static void phys_last_bytes_of_ram(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_READ_PHYS);
    uint8_t b[16];
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, ram_end(c) - sizeof b, b, sizeof b));
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, 0, b, 0));
    if (vmt_driver_has(c->d, VMT_CAP_WRITE_PHYS)) {
        uint8_t v = 0xa5, back = 0;
        VMT_CONF_OK(c, vmt_drv_write_phys(c->d, ram_end(c) - 1, &v, 1));
        VMT_CONF_OK(c, vmt_drv_read_phys(c->d, ram_end(c) - 1, &back, 1));
        assert_int_equal(back, 0xa5);
    }
}

static void phys_past_ram_is_range(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_READ_PHYS);
    uint8_t b[16];
    vmt_pa end = ram_end(c);
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_read_phys(c->d, end, b, 1));
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_read_phys(c->d, end - 4, b, 8));
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_read_phys(c->d, 1ull << 50, b, 8));
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_read_phys(c->d, UINT64_MAX - 3, b, 8)); /* pa + len wraps */
    uint8_t *big = malloc((size_t)end + 1); /* big enough even for a driver that ignores the bound */
    assert_non_null(big);
    vmt_status st = vmt_drv_read_phys(c->d, 0, big, (size_t)end + 1);
    free(big);
    VMT_CONF_EXPECT(c, VMT_E_RANGE, st);
    if (vmt_driver_has(c->d, VMT_CAP_WRITE_PHYS)) {
        memset(b, 0x3c, sizeof b);
        VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_write_phys(c->d, end, b, 1));
        VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_write_phys(c->d, UINT64_MAX - 3, b, 8));
    }
}

/* A write that runs past RAM fails as a whole: the in-RAM part is not
 * written either. */
static void failed_write_changes_nothing(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS);
    vmt_pa end = ram_end(c);
    uint8_t a[8], b[16], back[8];
    memset(a, 0x11, sizeof a);
    memset(b, 0x22, sizeof b);
    VMT_CONF_OK(c, vmt_drv_write_phys(c->d, end - 8, a, sizeof a));
    VMT_CONF_EXPECT(c, VMT_E_RANGE, vmt_drv_write_phys(c->d, end - 8, b, sizeof b));
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, end - 8, back, sizeof back));
    assert_memory_equal(a, back, sizeof a);
}

static const struct CMUnitTest memory_tests[] = {
    VMT_CONF_TEST(phys_round_trip_across_pages),
    VMT_CONF_TEST(phys_last_bytes_of_ram),
    VMT_CONF_TEST(phys_past_ram_is_range),
    VMT_CONF_TEST(failed_write_changes_nothing),
};

const vmt_conformance_group vmt_conf_group_memory = {
    .name = "memory",
    .needs = VMT_CAP_READ_PHYS,
    .needs_cpu = false,
    .tests = memory_tests,
    .count = sizeof memory_tests / sizeof memory_tests[0],
};
