/*
 * tests/ptm/test_ptm_paths.c — which table pages the monitor protects and
 * which events a change at each level produces: page-in, page-out and remap
 * at every level (4- and 5-level paging), with and without write data;
 * permission and A/D changes; every large-page transition; tables shared
 * across VAs, roots, tags and views. The invariant checkers run after every
 * step (inside the fixture).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ptm_fixture.h"
#include "vmtrap/paging.h"

/* PML4 1, PDPT 2, PD 3, PT 4, offset 0x123. */
#define VA_A ((1ULL << 39) | (2ULL << 30) | (3ULL << 21) | (4ULL << 12) | 0x123)
#define TAG 77

static vmt_addr_ctx ctx_of(vmt_va va, vmt_pa root)
{
    return vmt_addr_ctx_make(va, root);
}

static vmt_ptm_watch_info info(fx *f, vmt_va va, vmt_pa root)
{
    vmt_ptm_watch_info wi;
    assert_int_equal(vmt_ptm_query(f->ptm, ctx_of(va, root), f->view, TAG, &wi), VMT_OK);
    return wi;
}

static bool protected_in(fx *f, vmt_gfn g)
{
    return !(fx_access(f, f->view, g) & VMT_ACCESS_W);
}

/* Fresh tables (not monitored) from `level` down that map va to frame;
 * returns the entry value for `level` that points at them. */
static uint64_t subtree(fx *f, unsigned level, vmt_va va, vmt_gfn frame)
{
    if (level == 1)
        return pte_page(frame);
    vmt_gfn t = fx_table(f);
    fx_set(f, t, vmt_pt_index(va, level - 1), subtree(f, level - 1, va, frame));
    return pte_table(t);
}

static void test_monitor_protects_path_and_restores(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, VA_A, frame);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    vmt_ptm_watch_info wi = info(f, VA_A, f->root);
    assert_true(wi.present);
    assert_int_equal(wi.pa, (frame << 12) | 0x123);
    assert_int_equal(wi.page_size, VMT_PAGE_SIZE);
    assert_int_equal(wi.depth, 4);
    for (unsigned l = 4; l >= 1; l--) {
        vmt_gfn t = fx_table_at(f, f->root, VA_A, l);
        assert_int_equal(wi.tables[4 - l], t);
        assert_true(protected_in(f, t));
        assert_int_equal(fx_access(f, f->view, t), VMT_ACCESS_RX);
        assert_true(fx_access(f, 0, t) & VMT_ACCESS_W); /* view 0 untouched */
        assert_true(vmt_ptm_owns(f->ptm, f->view, t));
    }
    assert_false(protected_in(f, frame)); /* the data frame is not a table */
    /* Same watch again: refused, nothing changes; view 0 refused. */
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_E_EXISTS);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), 0, TAG), VMT_E_INVAL);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(0x0000900000000000ULL, f->root), f->view, TAG), VMT_E_INVAL);
    fx_check(f);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.watches, 1);
    assert_int_equal(st.table_pages, 4);

    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    for (unsigned l = 4; l >= 1; l--)
        assert_int_equal(fx_access(f, f->view, fx_table_at(f, f->root, VA_A, l)), VMT_ACCESS_RWX);
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_E_NOTFOUND);
    fx_destroy(f);
}

static void test_monitor_not_present_watches_down_to_the_hole(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    /* Nothing mapped: only the PML4 entry is watched. */
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    vmt_ptm_watch_info wi = info(f, VA_A, f->root);
    assert_false(wi.present);
    assert_int_equal(wi.walk_status, VMT_E_NOT_PRESENT);
    assert_int_equal(wi.depth, 1);
    assert_true(protected_in(f, f->root >> 12));

    /* The guest builds the path top down; each step extends the watch. */
    vmt_gfn frame = fx_data(f);
    unsigned want_depth = 2;
    vmt_gfn t = f->root >> 12;
    for (unsigned l = 4; l > 1; l--) {
        vmt_gfn next = fx_table(f); /* zeroed, not monitored: no trap */
        cpu_set(f, 0, t, vmt_pt_index(VA_A, l), pte_table(next));
        assert_int_equal(f->nevents, 0);
        wi = info(f, VA_A, f->root);
        assert_false(wi.present);
        assert_int_equal(wi.depth, want_depth++);
        assert_true(protected_in(f, next)); /* the new table is watched */
        t = next;
    }
    cpu_set(f, 0, t, vmt_pt_index(VA_A, 1), pte_page(frame));
    const vmt_ptm_event *e = fx_expect(f, VMT_PTM_PAGE_IN, VA_A, f->root);
    assert_int_equal(e->new_pa, (frame << 12) | 0x123);
    assert_int_equal(e->page_size, VMT_PAGE_SIZE);
    assert_int_equal(e->tag, TAG);
    assert_int_equal(e->view, f->view);
    assert_int_equal(e->vcpu, 0);
    assert_int_equal(info(f, VA_A, f->root).depth, 4);
    fx_destroy(f);
}

/* Page-out, page-in and remap through the entry at `level`. */
static void levels_case(bool with_data, unsigned levels)
{
    for (unsigned level = levels; level >= 1; level--) {
        fx *f = fx_create(0, 1);
        f->with_data = with_data;
        if (levels == 5)
            fx_set_levels(f, 5);
        vmt_va va = VA_A | (levels == 5 ? (3ULL << 48) : 0);
        vmt_gfn frame = fx_data(f);
        fx_map4k(f, f->root, va, frame);
        assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(va, f->root), f->view, TAG), VMT_OK);
        assert_int_equal(info(f, va, f->root).depth, levels);
        vmt_gfn table = fx_table_at(f, f->root, va, level);
        unsigned idx = vmt_pt_index(va, level);
        uint64_t old = fx_get(f, table, idx);
        vmt_gfn below[5] = { 0 };
        for (unsigned l = level - 1; l >= 1; l--)
            below[l] = fx_table_at(f, f->root, va, l);

        /* page-out */
        cpu_set(f, 0, table, idx, 0);
        const vmt_ptm_event *e = fx_expect(f, VMT_PTM_PAGE_OUT, va, f->root);
        assert_int_equal(e->old_pa, (frame << 12) | 0x123);
        vmt_ptm_watch_info wi = info(f, va, f->root);
        assert_false(wi.present);
        assert_int_equal(wi.depth, levels - level + 1);
        assert_true(protected_in(f, table));
        for (unsigned l = level - 1; l >= 1; l--)
            assert_false(protected_in(f, below[l])); /* subtree released */
        fx_clear_events(f);

        /* page-in of the same subtree */
        cpu_set(f, 0, table, idx, old);
        e = fx_expect(f, VMT_PTM_PAGE_IN, va, f->root);
        assert_int_equal(e->new_pa, (frame << 12) | 0x123);
        assert_int_equal(info(f, va, f->root).depth, levels);
        for (unsigned l = level - 1; l >= 1; l--)
            assert_true(protected_in(f, below[l]));
        fx_clear_events(f);

        /* remap: a new subtree (or PT entry) with another frame */
        vmt_gfn frame2 = fx_data(f);
        uint64_t nv = subtree(f, level, va, frame2);
        cpu_set(f, 0, table, idx, nv);
        e = fx_expect(f, VMT_PTM_REMAP, va, f->root);
        assert_int_equal(e->old_pa, (frame << 12) | 0x123);
        assert_int_equal(e->new_pa, (frame2 << 12) | 0x123);
        assert_int_equal(e->page_size, VMT_PAGE_SIZE);
        for (unsigned l = level - 1; l >= 1; l--) {
            assert_false(protected_in(f, below[l]));
            assert_true(protected_in(f, fx_table_at(f, f->root, va, l)));
        }
        fx_clear_events(f);

        /* a new subtree that maps the same frame: no event, path moves */
        if (level > 1) {
            vmt_gfn moved_from = fx_table_at(f, f->root, va, level - 1);
            cpu_set(f, 0, table, idx, subtree(f, level, va, frame2));
            assert_int_equal(f->nevents, 0);
            assert_false(protected_in(f, moved_from));
            assert_true(protected_in(f, fx_table_at(f, f->root, va, level - 1)));
            assert_int_equal(info(f, va, f->root).depth, levels);
        }
        fx_destroy(f);
    }
}

static void test_levels_with_data(void **state)
{
    (void)state;
    levels_case(true, 4);
}

static void test_levels_stepped(void **state)
{
    (void)state;
    levels_case(false, 4);
}

static void test_levels_5level(void **state)
{
    (void)state;
    levels_case(true, 5);
    levels_case(false, 5);
}

static void test_rights_and_ad_bits_emit_nothing(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fx *f = fx_create(0, 1);
        f->with_data = mode == 0;
        vmt_gfn frame = fx_data(f);
        fx_map4k(f, f->root, VA_A, frame);
        assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
        for (unsigned level = 4; level >= 1; level--) {
            vmt_gfn t = fx_table_at(f, f->root, VA_A, level);
            unsigned i = vmt_pt_index(VA_A, level);
            uint64_t e = fx_get(f, t, i);
            cpu_set(f, 0, t, i, e | VMT_PTE_A);
            cpu_set(f, 0, t, i, e | VMT_PTE_A | (level == 1 ? VMT_PTE_D : 0));
            cpu_set(f, 0, t, i, (e & ~VMT_PTE_RW) | VMT_PTE_NX);
            cpu_set(f, 0, t, i, e & ~VMT_PTE_US);
            cpu_set(f, 0, t, i, e);
        }
        assert_int_equal(f->nevents, 0);
        vmt_ptm_stats st;
        vmt_ptm_get_stats(f->ptm, &st);
        assert_int_equal(st.writes, 20);
        assert_int_equal(st.events[VMT_PTM_PAGE_IN] + st.events[VMT_PTM_PAGE_OUT] + st.events[VMT_PTM_REMAP], 0);
        fx_destroy(f);
    }
}

/* PDPT 2, PD 1, PT 5: under a 1G page at pa 0, a 2M page at 0x200000 or a
 * 4K page at gfn 0x205 the VA maps pa 0x205abc in each case. */
#define VA_L ((1ULL << 39) | (2ULL << 30) | (1ULL << 21) | (5ULL << 12) | 0xabc)

static void expect_size_change(fx *f, uint64_t size)
{
    vmt_ptm_watch_info wi = info(f, VA_L, f->root);
    assert_true(wi.present);
    assert_int_equal(wi.page_size, size);
}

static void test_large_page_transitions(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fx *f = fx_create(0, 1);
        f->with_data = mode == 0;
        fx_map4k(f, f->root, VA_L, 0x205);
        assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_L, f->root), f->view, TAG), VMT_OK);
        vmt_gfn pdpt = fx_table_at(f, f->root, VA_L, 3);
        vmt_gfn pd = fx_table_at(f, f->root, VA_L, 2);
        vmt_gfn pt = fx_table_at(f, f->root, VA_L, 1);
        const vmt_ptm_event *e;

        /* 4K -> 2M, same frame: nothing; the PT is released. */
        cpu_set(f, 0, pd, 1, pte_large(0x200000));
        assert_int_equal(f->nevents, 0);
        expect_size_change(f, VMT_SIZE_2M);
        assert_int_equal(info(f, VA_L, f->root).depth, 3);
        assert_false(protected_in(f, pt));

        /* 2M -> 4K (split), same frame: nothing; the PT is watched. */
        cpu_set(f, 0, pd, 1, pte_table(pt));
        assert_int_equal(f->nevents, 0);
        expect_size_change(f, VMT_PAGE_SIZE);
        assert_true(protected_in(f, pt));

        /* 4K -> 2M, other frame: remap. */
        cpu_set(f, 0, pd, 1, pte_large(0));
        e = fx_expect(f, VMT_PTM_REMAP, VA_L, f->root);
        assert_int_equal(e->old_pa, 0x205abc);
        assert_int_equal(e->new_pa, 0x005abc);
        assert_int_equal(e->page_size, VMT_SIZE_2M);
        fx_clear_events(f);

        /* 2M -> 4K (split), other frame: remap. */
        vmt_gfn pt2 = fx_table(f);
        fx_set(f, pt2, 5, pte_page(0x300));
        cpu_set(f, 0, pd, 1, pte_table(pt2));
        e = fx_expect(f, VMT_PTM_REMAP, VA_L, f->root);
        assert_int_equal(e->old_pa, 0x005abc);
        assert_int_equal(e->new_pa, 0x300abc);
        assert_int_equal(e->page_size, VMT_PAGE_SIZE);
        fx_clear_events(f);

        /* 4K -> 1G (merge two levels), other frame: remap; PD and PT released. */
        cpu_set(f, 0, pdpt, 2, pte_large(0));
        e = fx_expect(f, VMT_PTM_REMAP, VA_L, f->root);
        assert_int_equal(e->new_pa, 0x205abc);
        assert_int_equal(e->page_size, VMT_SIZE_1G);
        assert_int_equal(info(f, VA_L, f->root).depth, 2);
        assert_false(protected_in(f, pd));
        assert_false(protected_in(f, pt2));
        fx_clear_events(f);

        /* 1G -> 2M (split), same frame: nothing. */
        vmt_gfn pd2 = fx_table(f);
        for (unsigned i = 0; i < 2; i++)
            fx_set(f, pd2, i, pte_large((uint64_t)i << 21));
        cpu_set(f, 0, pdpt, 2, pte_table(pd2));
        assert_int_equal(f->nevents, 0);
        expect_size_change(f, VMT_SIZE_2M);
        assert_true(protected_in(f, pd2));

        /* 2M -> 1G (merge), same frame: nothing. */
        cpu_set(f, 0, pdpt, 2, pte_large(0));
        assert_int_equal(f->nevents, 0);
        expect_size_change(f, VMT_SIZE_1G);
        assert_false(protected_in(f, pd2));

        /* 1G -> 4K (split two levels), same frame: nothing. */
        cpu_set(f, 0, pd, 1, pte_table(pt)); /* pd is unwatched now: no trap */
        cpu_set(f, 0, pdpt, 2, pte_table(pd));
        assert_int_equal(f->nevents, 0);
        expect_size_change(f, VMT_PAGE_SIZE);
        assert_int_equal(info(f, VA_L, f->root).depth, 4);

        /* 4K -> 2M elsewhere, then a 2M split from 1G-level tables: remaps;
         * page-out and a 1G page-in. */
        cpu_set(f, 0, pd, 1, pte_large(0));
        fx_clear_events(f);
        vmt_gfn pd3 = fx_table(f);
        fx_set(f, pd3, 1, pte_large(0x200000)); /* -> 0x205abc */
        cpu_set(f, 0, pdpt, 2, pte_table(pd3));
        e = fx_expect(f, VMT_PTM_REMAP, VA_L, f->root);
        assert_int_equal(e->page_size, VMT_SIZE_2M);
        fx_clear_events(f);
        cpu_set(f, 0, pd3, 1, 0);
        e = fx_expect(f, VMT_PTM_PAGE_OUT, VA_L, f->root);
        assert_int_equal(e->old_pa, 0x205abc);
        fx_clear_events(f);
        cpu_set(f, 0, pdpt, 2, pte_large(0));
        e = fx_expect(f, VMT_PTM_PAGE_IN, VA_L, f->root);
        assert_int_equal(e->page_size, VMT_SIZE_1G);
        fx_clear_events(f);

        /* 1G -> 4K (split two levels), other frame: remap. */
        vmt_gfn pd4 = fx_table(f), pt4 = fx_table(f);
        fx_set(f, pd4, 1, pte_table(pt4));
        fx_set(f, pt4, 5, pte_page(0x301));
        cpu_set(f, 0, pdpt, 2, pte_table(pd4));
        e = fx_expect(f, VMT_PTM_REMAP, VA_L, f->root);
        assert_int_equal(e->old_pa, 0x205abc);
        assert_int_equal(e->new_pa, 0x301abc);
        assert_int_equal(e->page_size, VMT_PAGE_SIZE);
        assert_int_equal(info(f, VA_L, f->root).depth, 4);
        assert_true(protected_in(f, pd4) && protected_in(f, pt4));
        fx_destroy(f);
    }
}

static void test_shared_tables_across_vas(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_va vb = VA_A + 0x1000;                   /* same PT */
    vmt_va vc = VA_A + (1ULL << 21);             /* same PD, other PT */
    vmt_gfn fa = fx_data(f), fb = fx_data(f), fc = fx_data(f);
    fx_map4k(f, f->root, VA_A, fa);
    fx_map4k(f, f->root, vb, fb);
    fx_map4k(f, f->root, vc, fc);
    vmt_va vas[3] = { VA_A, vb, vc };
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(vas[i], f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.table_pages, 5); /* PML4, PDPT, PD, 2 PTs */

    /* A PDPT entry change hits all three; a PD entry only its PT's VAs. */
    vmt_gfn pdpt = fx_table_at(f, f->root, VA_A, 3);
    uint64_t old = fx_get(f, pdpt, 2);
    cpu_set(f, 0, pdpt, 2, 0);
    assert_int_equal(f->nevents, 3);
    for (unsigned i = 0; i < 3; i++)
        fx_expect(f, VMT_PTM_PAGE_OUT, vas[i], f->root);
    fx_clear_events(f);
    cpu_set(f, 0, pdpt, 2, old);
    assert_int_equal(f->nevents, 3);
    fx_clear_events(f);
    vmt_gfn pd = fx_table_at(f, f->root, VA_A, 2);
    cpu_set(f, 0, pd, 3, 0);
    assert_int_equal(f->nevents, 2);
    fx_expect(f, VMT_PTM_PAGE_OUT, VA_A, f->root);
    fx_expect(f, VMT_PTM_PAGE_OUT, vb, f->root);
    fx_clear_events(f);

    /* Unmonitoring one user of a shared table keeps it protected. */
    vmt_gfn pt_c = fx_table_at(f, f->root, vc, 1);
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    assert_true(protected_in(f, pd));
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(vb, f->root), f->view, TAG), VMT_OK);
    assert_true(protected_in(f, pd)); /* vc still uses it */
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(vc, f->root), f->view, TAG), VMT_OK);
    fx_check(f);
    assert_false(protected_in(f, pd));
    assert_false(protected_in(f, pt_c));
    assert_false(protected_in(f, f->root >> 12));
    fx_destroy(f);
}

static void test_shared_tables_across_roots_tags_views(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, VA_A, frame);
    /* A second address space sharing the PDPT (a kernel half). */
    vmt_pa root2 = fx_table(f) << 12;
    vmt_gfn pdpt = fx_table_at(f, f->root, VA_A, 3);
    fx_set(f, root2 >> 12, 1, pte_table(pdpt));
    vmt_view view2;
    assert_int_equal(vmt_drv_view_create(f->d, VMT_ACCESS_RWX, &view2), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, root2), f->view, TAG), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG + 1), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), view2, TAG), VMT_OK);
    fx_check(f);
    assert_true(vmt_ptm_owns(f->ptm, view2, pdpt));
    assert_int_equal(fx_access(f, view2, pdpt), VMT_ACCESS_RX);

    /* A PT change (trapped in view 1) reaches all four watches. */
    vmt_gfn pt = fx_table_at(f, f->root, VA_A, 1);
    vmt_gfn frame2 = fx_data(f);
    cpu_set(f, 0, pt, 4, pte_page(frame2));
    assert_int_equal(f->nevents, 4);
    unsigned by_root2 = 0, by_view2 = 0, by_tag2 = 0;
    for (unsigned i = 0; i < f->nevents; i++) {
        const vmt_ptm_event *e = &f->events[i];
        assert_int_equal(e->kind, VMT_PTM_REMAP);
        assert_int_equal(e->new_pa, (frame2 << 12) | 0x123);
        by_root2 += e->ctx.root == root2;
        by_view2 += e->view == view2;
        by_tag2 += e->tag == TAG + 1;
    }
    assert_int_equal(by_root2, 1);
    assert_int_equal(by_view2, 1);
    assert_int_equal(by_tag2, 1);
    fx_clear_events(f);

    /* Only root2's PML4 entry: only root2's watch. */
    cpu_set(f, 0, root2 >> 12, 1, 0);
    assert_int_equal(f->nevents, 1);
    fx_expect(f, VMT_PTM_PAGE_OUT, VA_A, root2);
    /* The shared PDPT stays protected for the other watches. */
    assert_true(protected_in(f, pdpt));
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, ctx_of(VA_A, f->root), view2, TAG), VMT_OK);
    assert_int_equal(fx_access(f, view2, pdpt), VMT_ACCESS_RWX);
    assert_true(protected_in(f, pdpt));
    fx_destroy(f);
}

static void test_resync_picks_up_untrapped_changes(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_data(f);
    fx_map4k(f, f->root, VA_A, frame);
    assert_int_equal(vmt_ptm_monitor(f->ptm, ctx_of(VA_A, f->root), f->view, TAG), VMT_OK);
    /* A change the monitor did not see (e.g. made in another view). */
    fx_set(f, fx_table_at(f, f->root, VA_A, 1), 4, 0);
    assert_int_equal(vmt_ptm_resync(f->ptm, NULL, NULL), VMT_OK);
    fx_check(f);
    assert_false(info(f, VA_A, f->root).present);
    fx_set(f, fx_table_at(f, f->root, VA_A, 1), 4, pte_page(frame));
    cpu_set(f, 0, fx_table_at(f, f->root, VA_A, 1), 4, 0); /* no event: already known */
    assert_int_equal(f->nevents, 0);
    fx_set(f, fx_table_at(f, f->root, VA_A, 1), 4, pte_page(frame));
    assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
    const vmt_ptm_event *e = fx_expect(f, VMT_PTM_PAGE_IN, VA_A, f->root);
    assert_int_equal(e->vcpu, VMT_VCPU_ALL);
    fx_clear_events(f);
    assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
    assert_int_equal(f->nevents, 0);
    fx_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monitor_protects_path_and_restores),
        cmocka_unit_test(test_monitor_not_present_watches_down_to_the_hole),
        cmocka_unit_test(test_levels_with_data),
        cmocka_unit_test(test_levels_stepped),
        cmocka_unit_test(test_levels_5level),
        cmocka_unit_test(test_rights_and_ad_bits_emit_nothing),
        cmocka_unit_test(test_large_page_transitions),
        cmocka_unit_test(test_shared_tables_across_vas),
        cmocka_unit_test(test_shared_tables_across_roots_tags_views),
        cmocka_unit_test(test_resync_picks_up_untrapped_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
