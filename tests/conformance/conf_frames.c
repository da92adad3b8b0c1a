/*
 * tests/conformance/conf_frames.c — conformance group "frames": extra
 * frames from frame_alloc are outside guest RAM, distinct, readable and
 * writable by the host, reusable after free, usable as a view's backing and
 * never themselves a gfn a view can remap or restrict.
 */
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

enum { NFRAMES = 8 };

static void alloc_n(vmt_conf *c, vmt_gfn *f, int n)
{
    for (int i = 0; i < n; i++) {
        VMT_CONF_OK(c, vmt_drv_frame_alloc(c->d, &f[i]));
        if (f[i] < c->caps->ram_frames)
            fail_msg("frame_alloc returned gfn 0x%llx inside guest RAM (%llu frames)", (unsigned long long)f[i],
                     (unsigned long long)c->caps->ram_frames);
        assert_true(f[i] < (1ull << (c->caps->maxphyaddr - VMT_PAGE_SHIFT)));
        for (int j = 0; j < i; j++)
            if (f[j] == f[i])
                fail_msg("frame_alloc returned gfn 0x%llx twice", (unsigned long long)f[i]);
    }
}

static void free_n(vmt_conf *c, const vmt_gfn *f, int n)
{
    for (int i = 0; i < n; i++)
        VMT_CONF_OK(c, vmt_drv_frame_free(c->d, f[i]));
}

static void frames_distinct_host_read_write(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS);
    size_t ram_len = (size_t)(c->caps->ram_frames * VMT_PAGE_SIZE);
    uint8_t *ram_before = malloc(ram_len);
    assert_non_null(ram_before);
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, 0, ram_before, ram_len));
    vmt_gfn f[NFRAMES];
    alloc_n(c, f, NFRAMES);
    static uint8_t page[4096], back[4096];
    for (int i = 0; i < NFRAMES; i++) {
        memset(page, 0x40 + i, sizeof page);
        page[0] = (uint8_t)i;
        VMT_CONF_OK(c, vmt_drv_write_phys(c->d, vmt_gfn_to_pa(f[i]), page, sizeof page));
    }
    for (int i = 0; i < NFRAMES; i++) {
        memset(page, 0x40 + i, sizeof page);
        page[0] = (uint8_t)i;
        VMT_CONF_OK(c, vmt_drv_read_phys(c->d, vmt_gfn_to_pa(f[i]), back, sizeof back));
        if (memcmp(page, back, sizeof page) != 0)
            fail_msg("extra frame 0x%llx does not hold what was written to it", (unsigned long long)f[i]);
    }
    /* Guest RAM did not change: no extra frame aliases a RAM frame. */
    size_t ram = (size_t)(c->caps->ram_frames * VMT_PAGE_SIZE);
    uint8_t *after = malloc(ram);
    assert_non_null(after);
    VMT_CONF_OK(c, vmt_drv_read_phys(c->d, 0, after, ram));
    int same = memcmp(ram_before, after, ram) == 0;
    free(after);
    free(ram_before);
    if (!same)
        fail_msg("writing extra frames changed guest RAM");
    free_n(c, f, NFRAMES);
}

/* Freed frames go back to the pool: allocate until the pool (the config's
 * extra_frames) is empty, free them all, and the same number can be had
 * again, three times. (Allocating fewer than the pool holds could not tell
 * a frame_free that returns nothing.) */
static void frames_reusable(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    enum { POOL_MAX = 4096 };
    static vmt_gfn f[POOL_MAX];
    int first = 0;
    for (int round = 0; round < 3; round++) {
        int n = 0;
        while (n < POOL_MAX && vmt_drv_frame_alloc(c->d, &f[n]) == VMT_OK)
            n++;
        if (n == POOL_MAX)
            fail_msg("frame_alloc gave %d frames with extra_frames = %llu: the pool is not bounded", n,
                     (unsigned long long)c->cfg.extra_frames);
        if (round == 0)
            first = n;
        else if (n != first)
            fail_msg("round %d: %d frames after freeing all, %d before", round, n, first);
        assert_true(n >= NFRAMES);
        free_n(c, f, n);
    }
}

static void frame_free_errors(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, 0);
    vmt_gfn f;
    VMT_CONF_FAILS(c, vmt_drv_frame_free(c->d, 0)); /* guest RAM */
    VMT_CONF_FAILS(c, vmt_drv_frame_free(c->d, c->caps->ram_frames - 1));
    VMT_CONF_OK(c, vmt_drv_frame_alloc(c->d, &f));
    VMT_CONF_OK(c, vmt_drv_frame_free(c->d, f));
    VMT_CONF_FAILS(c, vmt_drv_frame_free(c->d, f)); /* double free */
}

static void frames_back_views_but_are_not_gfns(void **state)
{
    vmt_conf *c = vmt_conf_begin(state, VMT_CAP_VIEWS | VMT_CAP_VIEW_REMAP);
    vmt_view v;
    vmt_gfn f;
    VMT_CONF_OK(c, vmt_drv_view_create(c->d, VMT_ACCESS_RWX, &v));
    VMT_CONF_OK(c, vmt_drv_frame_alloc(c->d, &f));
    VMT_CONF_FAILS(c, vmt_drv_view_remap(c->d, v, f, 0)); /* an extra frame is not a guest gfn */
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 5, f));
    if (vmt_driver_has(c->d, VMT_CAP_VIEW_PERM)) {
        vmt_access a;
        vmt_gfn back;
        VMT_CONF_FAILS(c, vmt_drv_view_set_access(c->d, v, f, VMT_ACCESS_RWX));
        VMT_CONF_OK(c, vmt_drv_view_get_access(c->d, v, 5, &a, &back));
        assert_int_equal(back, f);
    }
    VMT_CONF_OK(c, vmt_drv_view_remap(c->d, v, 5, 5));
    VMT_CONF_OK(c, vmt_drv_frame_free(c->d, f));
}

static const struct CMUnitTest frames_tests[] = {
    VMT_CONF_TEST(frames_distinct_host_read_write),
    VMT_CONF_TEST(frames_reusable),
    VMT_CONF_TEST(frame_free_errors),
    VMT_CONF_TEST(frames_back_views_but_are_not_gfns),
};

const vmt_conformance_group vmt_conf_group_frames = {
    .name = "frames",
    .needs = VMT_CAP_FRAMES,
    .needs_cpu = false,
    .tests = frames_tests,
    .count = sizeof frames_tests / sizeof frames_tests[0],
};
