/*
 * tests/ptm/test_ptm_hostile.c — hostile tables and driver failures.
 *
 * Hostile: tables that loop (an entry pointing at its own table or an
 * ancestor), frames past guest RAM, reserved bits, one table linked from
 * all 512 entries. monitor() refuses them and changes nothing; when a write
 * makes a watched path hostile the VA counts as not present, the path stays
 * watched down to the bad entry and a fix is seen. Work stays bounded.
 *
 * Failures (mem driver fault injection): monitor either succeeds or changes
 * nothing; a failing event leaves the watch as it was and resync repairs it;
 * a failing release is retried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ptm_fixture.h"
#include "vmtrap/paging.h"

#define TAG 9

static void assert_nothing_protected(fx *f)
{
    for (vmt_gfn g = 0; g < FX_RAM_FRAMES; g++)
        if (fx_access(f, f->view, g) != VMT_ACCESS_RWX)
            fail_msg("gfn 0x%llx is still restricted", (unsigned long long)g);
}

static void test_monitor_refuses_hostile_tables(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn r = f->root >> 12;
    /* PML4 entry 7 points at the PML4 itself. */
    fx_set(f, r, 7, pte_table(r));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(7ULL << 39, f->root), f->view, TAG), VMT_E_BAD_PT);
    assert_non_null(strstr(vmt_ptm_error(f->ptm), "loop"));
    /* A PDPT whose entry points back at the PML4 (an ancestor). */
    vmt_gfn pdpt = fx_table(f);
    fx_set(f, r, 6, pte_table(pdpt));
    fx_set(f, pdpt, 0, pte_table(r));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(6ULL << 39, f->root), f->view, TAG), VMT_E_BAD_PT);
    /* A table frame past guest RAM. */
    fx_set(f, r, 8, pte_table(100000));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(8ULL << 39, f->root), f->view, TAG), VMT_E_RANGE);
    /* A leaf frame past guest RAM. */
    vmt_va va9 = 9ULL << 39;
    fx_map4k(f, f->root, va9, 5);
    fx_set(f, fx_table_at(f, f->root, va9, 1), 0, pte_page(200000));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(va9, f->root), f->view, TAG), VMT_E_RANGE);
    /* Reserved bits (above maxphyaddr 39). */
    fx_set(f, fx_table_at(f, f->root, va9, 1), 0, pte_page(5) | (1ULL << 45));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(va9, f->root), f->view, TAG), VMT_E_BAD_PT);
    /* A root past guest RAM. */
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(0, 5000ULL << 12), f->view, TAG), VMT_E_RANGE);
    fx_check(f);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.watches, 0);
    assert_int_equal(st.hostile, 6);
    assert_nothing_protected(f);
    fx_destroy(f);
}

static void test_write_makes_path_hostile_and_back(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fx *f = fx_create(0, 1);
        f->with_data = mode == 0;
        vmt_gfn frame = fx_setup_a(f, TAG);
        vmt_gfn pd = (vmt_gfn)(fx_info_a(f, TAG).tables[2]);
        vmt_gfn pt = (vmt_gfn)(fx_info_a(f, TAG).tables[3]);
        uint64_t pd_old = fx_get(f, pd, 3);
        const uint64_t bad[] = {
            pte_table(pd),             /* the PD as its own PT: a loop */
            pte_table(f->root >> 12),  /* an ancestor */
            pte_table(100000),         /* a PT past RAM */
            pd_old | (1ULL << 50),     /* reserved bits */
        };
        for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            cpu_set(f, 0, pd, 3, bad[i]);
            const vmt_ptm_event *e = fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
            assert_int_equal(e->old_pa, (frame << 12) | 0x123);
            vmt_ptm_watch_info wi = fx_info_a(f, TAG);
            assert_false(wi.present);
            assert_true(wi.walk_status == VMT_E_BAD_PT || wi.walk_status == VMT_E_RANGE);
            assert_true(wi.depth == 3 || wi.depth == 4);
            assert_true(vmt_ptm_owns(f->ptm, f->view, pd)); /* still watched: a fix is seen */
            assert_true(strlen(vmt_ptm_error(f->ptm)) > 0);
            fx_clear_events(f);
            cpu_set(f, 0, pd, 3, pd_old);
            fx_expect(f, VMT_PTM_PAGE_IN, FX_VA_A, f->root);
            assert_true(vmt_ptm_owns(f->ptm, f->view, pt));
            fx_clear_events(f);
        }
        /* A leaf past RAM. */
        cpu_set(f, 0, pt, 4, pte_page(300000));
        fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
        assert_int_equal(fx_info_a(f, TAG).walk_status, VMT_E_RANGE);
        assert_int_equal(fx_info_a(f, TAG).depth, 4);
        fx_clear_events(f);
        cpu_set(f, 0, pt, 4, pte_page(frame));
        fx_expect(f, VMT_PTM_PAGE_IN, FX_VA_A, f->root);
        fx_destroy(f);
    }
}

static vmt_va canon(uint64_t va)
{
    return (va & (1ULL << 47)) ? (va | 0xffff000000000000ULL) : va;
}

static void test_one_table_linked_from_all_512_entries(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_data(f);
    vmt_gfn pdpt = fx_table(f), pd = fx_table(f), pt = fx_table(f);
    vmt_gfn r = f->root >> 12;
    for (unsigned i = 0; i < 512; i++) {
        fx_set(f, r, i, pte_table(pdpt));
        fx_set(f, pdpt, i, pte_table(pd));
        fx_set(f, pd, i, pte_table(pt));
    }
    fx_set(f, pt, 0, pte_page(frame));
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(canon((uint64_t)i << 39), f->root), f->view, TAG),
                         VMT_OK);
    fx_check(f);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.table_pages, 4);
    /* One write below the fan: 512 re-walks, 512 events, nothing more. */
    cpu_set(f, 0, pdpt, 0, 0);
    assert_int_equal(f->nevents, 512);
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(f->events[i].kind, VMT_PTM_PAGE_OUT);
    vmt_ptm_stats st2;
    vmt_ptm_get_stats(f->ptm, &st2);
    assert_int_equal(st2.rewalks - st.rewalks, 512);
    assert_int_equal(st2.table_pages, 2);
    fx_clear_events(f);
    /* Every PDPT entry pointing back at the PML4: 512 loops, bounded. */
    cpu_set(f, 0, pdpt, 0, pte_table(r));
    assert_int_equal(f->nevents, 0);
    for (unsigned i = 0; i < 512; i++) {
        vmt_ptm_watch_info wi;
        assert_int_equal(vmt_ptm_query(f->ptm, vmt_addr_ctx_make(canon((uint64_t)i << 39), f->root), f->view, TAG,
                                       &wi), VMT_OK);
        assert_int_equal(wi.walk_status, VMT_E_BAD_PT);
    }
    cpu_set(f, 0, pdpt, 0, pte_table(pd));
    assert_int_equal(f->nevents, 512);
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(vmt_ptm_unmonitor(f->ptm, vmt_addr_ctx_make(canon((uint64_t)i << 39), f->root), f->view,
                                           TAG), VMT_OK);
    fx_check(f);
    assert_nothing_protected(f);
    fx_destroy(f);
}

static void test_monitor_fails_cleanly(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, FX_VA_A, frame);
    /* Another watch shares the upper tables, so a failure must keep those. */
    vmt_va vb = FX_VA_A + (1ULL << 30);
    fx_map4k(f, f->root, vb, fx_data(f));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(vb, f->root), f->view, TAG), VMT_OK);
    vmt_gfn pml4 = f->root >> 12, pdpt = fx_table_at(f, f->root, FX_VA_A, 3);
    /* FX_VA_A needs two new table pages (PD, PT): fail either restriction. */
    for (uint64_t n = 1; n <= 2; n++) {
        vmt_mem_fail_nth(f->d, VMT_MEM_OP_VIEW_SET_ACCESS, n);
        assert_int_equal(vmt_ptm_monitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_E_INJECTED);
        vmt_mem_fail_clear(f->d);
        fx_check(f);
        vmt_ptm_watch_info wi;
        assert_int_equal(vmt_ptm_query(f->ptm, fx_ctx_a(f), f->view, TAG, &wi), VMT_E_NOTFOUND);
        assert_int_equal(fx_access(f, f->view, fx_table_at(f, f->root, FX_VA_A, 2)), VMT_ACCESS_RWX);
        assert_int_equal(fx_access(f, f->view, fx_table_at(f, f->root, FX_VA_A, 1)), VMT_ACCESS_RWX);
        assert_int_equal(fx_access(f, f->view, pml4), VMT_ACCESS_RX);
        assert_int_equal(fx_access(f, f->view, pdpt), VMT_ACCESS_RX);
    }
    /* A failing read: nothing changes either. */
    vmt_mem_fail_nth(f->d, VMT_MEM_OP_READ_PHYS, 1);
    vmt_session_flush_frames(f->s);
    assert_int_equal(vmt_ptm_monitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_E_INJECTED);
    vmt_mem_fail_clear(f->d);
    fx_check(f);
    assert_int_equal(vmt_ptm_monitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_OK);
    assert_true(fx_info_a(f, TAG).present);
    fx_destroy(f);
}

static void test_failed_event_keeps_state_and_resync_repairs(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_setup_a(f, TAG);
    vmt_gfn pt = fx_info_a(f, TAG).tables[3];
    vmt_gfn pd = fx_info_a(f, TAG).tables[2];
    /* The read of the entry fails: the event is handled (the guest goes
     * on), the error is returned, the watch is unchanged. */
    vmt_gfn frame2 = fx_data(f);
    vmt_mem_fail_nth(f->d, VMT_MEM_OP_READ_PHYS, 1);
    cpu_set(f, 0, pt, 4, pte_page(frame2));
    vmt_mem_fail_clear(f->d);
    assert_int_equal(f->last_status, VMT_E_INJECTED);
    assert_int_equal(f->nevents, 0);
    assert_int_equal(fx_info_a(f, TAG).pa, (frame << 12) | 0x123);
    assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
    fx_check(f);
    const vmt_ptm_event *e = fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
    assert_int_equal(e->new_pa, (frame2 << 12) | 0x123);
    fx_clear_events(f);

    /* Protecting the new path fails half-way: the old path stays. */
    vmt_gfn frame3 = fx_data(f);
    vmt_gfn pt3 = fx_table(f);
    fx_set(f, pt3, 4, pte_page(frame3));
    vmt_mem_fail_nth(f->d, VMT_MEM_OP_VIEW_SET_ACCESS, 1);
    cpu_set(f, 0, pd, 3, pte_table(pt3));
    vmt_mem_fail_clear(f->d);
    assert_int_equal(f->last_status, VMT_E_INJECTED);
    assert_int_equal(f->nevents, 0);
    assert_int_equal(fx_info_a(f, TAG).tables[3], pt);
    assert_int_equal(fx_access(f, f->view, pt3), VMT_ACCESS_RWX);
    assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
    fx_check(f);
    e = fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
    assert_int_equal(e->new_pa, (frame3 << 12) | 0x123);
    assert_int_equal(fx_info_a(f, TAG).tables[3], pt3);
    assert_int_equal(fx_access(f, f->view, pt), VMT_ACCESS_RWX);
    fx_destroy(f);
}

static void test_failed_release_is_retried(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    fx_setup_a(f, TAG);
    vmt_ptm_watch_info wi = fx_info_a(f, TAG);
    vmt_mem_fail_always(f->d, VMT_MEM_OP_VIEW_SET_ACCESS, true);
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_OK);
    fx_check(f);
    /* The pages are still protected and still the monitor's: a write to
     * them is handled and emits nothing. */
    assert_true(vmt_ptm_owns(f->ptm, f->view, wi.tables[3]));
    vmt_mem_fail_always(f->d, VMT_MEM_OP_VIEW_SET_ACCESS, false);
    cpu_set(f, 0, wi.tables[3], 4, 0);
    assert_int_equal(f->nevents, 0);
    /* The next operation retries the release. */
    assert_int_equal(vmt_ptm_resync(f->ptm, NULL, NULL), VMT_OK);
    fx_check(f);
    assert_false(vmt_ptm_owns(f->ptm, f->view, wi.tables[3]));
    assert_nothing_protected(f);
    fx_destroy(f);
}

/* The step path: the read-back at the SINGLESTEP fails. The vCPU still goes
 * back to its view, the watch keeps its state, resync repairs it. */
static void test_failed_step_read_back(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    f->with_data = false;
    vmt_gfn frame = fx_setup_a(f, TAG);
    vmt_gfn pt = fx_info_a(f, TAG).tables[3];
    vmt_pa e = (pt << 12) + 8 * 4;
    cpu_store_trap(f, 0, e, 8, 0);
    assert_true(vmt_ptm_stepping(f->ptm, 0));
    vmt_mem_fail_nth(f->d, VMT_MEM_OP_READ_PHYS, 1);
    cpu_store_finish(f, 0, e, 8, 0); /* asserts the switch back */
    vmt_mem_fail_clear(f->d);
    assert_int_equal(f->last_status, VMT_E_INJECTED);
    assert_false(vmt_ptm_stepping(f->ptm, 0));
    assert_int_equal(f->nevents, 0);
    assert_true(fx_info_a(f, TAG).present);
    assert_int_equal(fx_info_a(f, TAG).pa, (frame << 12) | 0x123);
    assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
    fx_check(f);
    fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
    fx_destroy(f);
}

/* A self-map (Windows): with VMT_WALK_ALLOW_RECURSIVE the PML4 may appear at
 * several levels of one walk. The monitor counts each use, follows changes
 * and releases everything. */
static void test_recursive_self_map_when_allowed(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_paging_config pc = { 4, 39, 1, VMT_WALK_ALLOW_RECURSIVE };
    vmt_session_set_paging(f->s, &pc);
    vmt_gfn r = f->root >> 12;
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, FX_VA_A, frame); /* PML4[1] -> PDPT */
    fx_set(f, r, 5, pte_table(r));     /* the self-map slot */
    /* PML4[5] -> PML4 as PDPT [5] -> as PD [5] -> as PT, entry 1: the PDPT page. */
    vmt_va self = (5ULL << 39) | (5ULL << 30) | (5ULL << 21) | (1ULL << 12);
    vmt_gfn pdpt = fx_table_at(f, f->root, FX_VA_A, 3);
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(self, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    vmt_ptm_watch_info wi;
    assert_int_equal(vmt_ptm_query(f->ptm, vmt_addr_ctx_make(self, f->root), f->view, TAG, &wi), VMT_OK);
    assert_true(wi.present);
    assert_int_equal(wi.pa, pdpt << 12);
    assert_int_equal(wi.depth, 4);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(wi.tables[i], r);
    /* PML4[1] is the leaf of the self-mapped VA: repointing it remaps. */
    vmt_gfn pdpt2 = fx_table(f);
    cpu_set(f, 0, r, 1, pte_table(pdpt2));
    const vmt_ptm_event *e = fx_expect(f, VMT_PTM_REMAP, self, f->root);
    assert_int_equal(e->new_pa, pdpt2 << 12);
    fx_clear_events(f);
    /* Removing the self-map pages it out. */
    cpu_set(f, 0, r, 5, 0);
    fx_expect(f, VMT_PTM_PAGE_OUT, self, f->root);
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, vmt_addr_ctx_make(self, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    assert_nothing_protected(f);
    fx_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monitor_refuses_hostile_tables),
        cmocka_unit_test(test_write_makes_path_hostile_and_back),
        cmocka_unit_test(test_one_table_linked_from_all_512_entries),
        cmocka_unit_test(test_monitor_fails_cleanly),
        cmocka_unit_test(test_failed_event_keeps_state_and_resync_repairs),
        cmocka_unit_test(test_failed_release_is_retried),
        cmocka_unit_test(test_failed_step_read_back),
        cmocka_unit_test(test_recursive_self_map_when_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
