/*
 * tests/ptm/test_ptm_writes.c — how guest writes reach the monitor: exits
 * per write for each response mechanism, partial writes in both orders
 * (with data and stepped) followed at once, a lone half-entry remap, failed CMPXCHG and duplicate writes, per-vCPU
 * dirty sets and partial state, unmonitor while an entry is dirty.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ptm_fixture.h"
#include "vmtrap/paging.h"

#define TAG 5

static vmt_pa pt_entry_pa(fx *f)
{
    return (fx_table_at(f, f->root, FX_VA_A, 1) << 12) + 8 * 4;
}

/* Exits per monitored write for each mechanism. */
static void exits_case(uint64_t caps_remove, bool with_data, uint64_t want_exits, uint32_t want_actions)
{
    fx *f = fx_create(caps_remove, 1);
    f->with_data = with_data;
    fx_setup_a(f, TAG);
    vmt_pa e = pt_entry_pa(f);
    vmt_gfn frame2 = fx_data(f);
    f->exits = 0;
    vmt_response r = cpu_store_trap(f, 0, e, 8, pte_page(frame2));
    assert_int_equal(r.actions, want_actions);
    if (r.actions == VMT_RESP_CONTINUE) {
        /* with data: the event was emitted before the write even landed */
        fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
        uint64_t v = pte_page(frame2);
        assert_int_equal(vmt_drv_write_phys(f->d, e, &v, 8), VMT_OK);
        vmt_session_flush_frames(f->s);
    } else {
        cpu_store_finish(f, 0, e, 8, pte_page(frame2));
        fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
    }
    assert_int_equal(f->exits, want_exits);
    assert_false(vmt_ptm_stepping(f->ptm, 0));
    assert_int_equal(fx_current_view(f, 0), f->view);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.writes, 1);
    assert_int_equal(st.writes_with_data, with_data ? 1 : 0);
    assert_int_equal(st.writes_stepped, with_data ? 0 : 1);
    fx_destroy(f);
}

static void test_exits_per_write(void **state)
{
    (void)state;
    exits_case(0, true, 1, VMT_RESP_CONTINUE);
    exits_case(VMT_CAP_EMULATE, true, 2, VMT_RESP_FAST_STEP);
    exits_case(VMT_CAP_EMULATE | VMT_CAP_FAST_STEP, true, 2, VMT_RESP_STEP | VMT_RESP_SWITCH_VIEW);
    exits_case(0, false, 2, VMT_RESP_STEP | VMT_RESP_SWITCH_VIEW);
}

/* What the hardware would translate FX_VA_A to from memory as it is now
 * (4K pages only, as these scenarios build; a frame past RAM or a reserved
 * bit counts as not present, like the monitor's hostile walks). */
static bool hw_translate_a(fx *f, vmt_pa *pa)
{
    vmt_gfn table = f->root >> 12;
    for (unsigned l = 4; l >= 1; l--) {
        uint64_t e = fx_get(f, table, vmt_pt_index(FX_VA_A, l));
        vmt_gfn next = (e & 0x000ffffffffff000ULL) >> 12;
        if (!(e & 1) || (e & 0x000fff8000000000ULL) || next >= FX_RAM_FRAMES)
            return false;
        table = next;
    }
    *pa = (table << 12) | (FX_VA_A & 0xfff);
    return true;
}

/* After every store the monitor must agree with what the hardware uses,
 * and the events must chain: each starts where the previous one ended. */
static void assert_follows_memory(fx *f, bool *present, vmt_pa *pa, unsigned *seen)
{
    vmt_pa hw_pa = 0;
    bool hw = hw_translate_a(f, &hw_pa);
    vmt_ptm_watch_info wi = fx_info_a(f, TAG);
    assert_int_equal(wi.present, hw);
    if (hw)
        assert_int_equal(wi.pa, hw_pa);
    for (; *seen < f->nevents; (*seen)++) {
        const vmt_ptm_event *ev = &f->events[*seen];
        assert_int_equal(ev->kind == VMT_PTM_PAGE_IN, !*present);
        if (*present)
            assert_int_equal(ev->old_pa, *pa);
        *present = ev->kind != VMT_PTM_PAGE_OUT;
        *pa = ev->new_pa;
    }
    assert_int_equal(*present, hw);
    if (hw)
        assert_int_equal(*pa, hw_pa);
}

/* Two 4-byte stores (or eight 1-byte stores) into one entry, in order or
 * reversed: after EVERY store the watch follows the entry as memory holds
 * it (a half that is never completed is not held back), and the events
 * chain from the old frame to the new one. */
static void partial_case(bool with_data, unsigned chunk, bool high_first)
{
    fx *f = fx_create(0, 1);
    f->with_data = with_data;
    f->report_size = true;
    vmt_gfn frame = fx_setup_a(f, TAG);
    vmt_pa e = pt_entry_pa(f);
    vmt_gfn frame2 = fx_data(f);
    /* The NX bit in the high dword makes the halves differ. */
    uint64_t nv = pte_page(frame2) | VMT_PTE_NX;
    unsigned n = 8 / chunk, seen = 0;
    bool present = true;
    vmt_pa pa = (frame << 12) | 0x123;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = high_first ? n - 1 - k : k;
        uint64_t part = (nv >> (8 * chunk * i)) & (chunk == 8 ? ~0ULL : ((1ULL << (8 * chunk)) - 1));
        cpu_store(f, 0, e + chunk * i, chunk, part);
        assert_follows_memory(f, &present, &pa, &seen);
    }
    assert_true(present);
    assert_int_equal(pa, (frame2 << 12) | 0x123);
    vmt_ptm_stats st;
    vmt_ptm_get_stats(f->ptm, &st);
    assert_int_equal(st.partial_writes, n);
    assert_int_equal(st.entry_updates, n);
    if (chunk == 4) {
        /* Low half first: the remap is visible after that half alone (the
         * high half only adds NX); high half first: nothing until the low. */
        assert_int_equal(f->nevents, 1);
        assert_int_equal(f->events[0].kind, VMT_PTM_REMAP);
    }
    fx_clear_events(f);
    seen = 0;

    /* Page-out by halves: clearing the low half (P) pages out at once. */
    if (chunk == 4) {
        cpu_store(f, 0, e + (high_first ? 4 : 0), 4, 0);
        assert_follows_memory(f, &present, &pa, &seen);
        assert_int_equal(f->nevents, high_first ? 0 : 1);
        cpu_store(f, 0, e + (high_first ? 0 : 4), 4, 0);
        assert_follows_memory(f, &present, &pa, &seen);
        fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
    }
    fx_destroy(f);
}

/* The case: ONE 4-byte store moves the hooked page to a copy and
 * the other half never comes — the remap must be seen at once, and a
 * resync afterwards must not put the old value back. */
static void test_lone_half_remaps_at_once(void **state)
{
    (void)state;
    for (int with_data = 0; with_data < 2; with_data++) {
        fx *f = fx_create(0, 1);
        f->with_data = with_data;
        f->report_size = true;
        vmt_gfn frame = fx_setup_a(f, TAG);
        vmt_pa e = pt_entry_pa(f);
        vmt_gfn copy = fx_data(f);
        cpu_store(f, 0, e, 4, (uint32_t)pte_page(copy));
        const vmt_ptm_event *ev = fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
        assert_int_equal(ev->old_pa, (frame << 12) | 0x123);
        assert_int_equal(ev->new_pa, (copy << 12) | 0x123);
        fx_clear_events(f);
        assert_int_equal(vmt_ptm_resync(f->ptm, fx_sink, f), VMT_OK);
        assert_int_equal(f->nevents, 0);
        assert_int_equal(fx_info_a(f, TAG).pa, (copy << 12) | 0x123);
        assert_int_equal(fx_get(f, e >> 12, 4), pte_page(copy));
        fx_check(f);
        fx_destroy(f);
    }
}

static void test_partial_writes_with_data(void **state)
{
    (void)state;
    partial_case(true, 4, false);
    partial_case(true, 4, true);
    partial_case(true, 1, false);
    partial_case(true, 2, true);
}

static void test_partial_writes_stepped(void **state)
{
    (void)state;
    partial_case(false, 4, false);
    partial_case(false, 4, true);
    partial_case(false, 2, false);
}

static void test_straddling_store_updates_both_entries(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    vmt_gfn frame = fx_setup_a(f, TAG);
    vmt_va vb = FX_VA_A + 0x1000; /* PT entry 5, right after FX_VA_A's entry 4 */
    fx_map4k(f, f->root, vb, frame + 100);
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(vb, f->root), f->view, TAG), VMT_OK);
    vmt_pa e = pt_entry_pa(f);
    /* Entry 4 high half + entry 5 low half in one 8-byte store: entry 5
     * loses P at once (entry 4's high half was already 0: no change). */
    cpu_store(f, 0, e + 4, 8, 0);
    fx_expect(f, VMT_PTM_PAGE_OUT, vb, f->root);
    fx_clear_events(f);
    cpu_store(f, 0, e, 4, 0);
    fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
    fx_clear_events(f);
    cpu_store(f, 0, e + 12, 4, 0);
    assert_int_equal(f->nevents, 0);
    fx_destroy(f);
}

static void test_cmpxchg_fail_and_duplicates_emit_nothing(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fx *f = fx_create(0, 1);
        f->with_data = mode == 0;
        fx_setup_a(f, TAG);
        vmt_pa e = pt_entry_pa(f);
        for (unsigned l = 4; l >= 1; l--) {
            vmt_pa at = (fx_table_at(f, f->root, FX_VA_A, l) << 12) + 8 * vmt_pt_index(FX_VA_A, l);
            cpu_cmpxchg_fail(f, 0, at);
        }
        uint64_t cur = 0;
        assert_int_equal(vmt_drv_read_phys(f->d, e, &cur, 8), VMT_OK);
        cpu_store(f, 0, e, 8, cur);
        cpu_store(f, 0, e, 8, cur);
        assert_int_equal(f->nevents, 0);
        vmt_ptm_stats st;
        vmt_ptm_get_stats(f->ptm, &st);
        assert_int_equal(st.entry_updates, 6);
        assert_int_equal(st.no_change, 6);
        assert_int_equal(st.rewalks, 6); /* re-checked against memory, nothing emitted */
        /* Then a real change right after the duplicates is still seen. */
        cpu_store(f, 0, e, 8, 0);
        fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
        fx_destroy(f);
    }
}

static void test_unwatched_entry_on_watched_page(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    fx_setup_a(f, TAG);
    vmt_gfn pt = fx_table_at(f, f->root, FX_VA_A, 1);
    f->exits = 0;
    cpu_set(f, 0, pt, 100, pte_page(fx_data(f)));
    cpu_store(f, 0, (pt << 12) + 8 * 101, 4, 0x1234); /* partial, unwatched: no state */
    assert_int_equal(f->exits, 2);
    assert_int_equal(f->nevents, 0);
    assert_int_equal(fx_get(f, pt, 100) & VMT_PTE_P, VMT_PTE_P); /* the writes landed */
    f->with_data = false;
    cpu_set(f, 0, pt, 100, 0);
    assert_int_equal(fx_get(f, pt, 100), 0);
    assert_int_equal(f->nevents, 0);
    fx_destroy(f);
}

static void test_per_vcpu_dirty_sets(void **state)
{
    (void)state;
    fx *f = fx_create(0, 2);
    f->with_data = false;
    vmt_gfn frame = fx_setup_a(f, TAG);
    vmt_gfn pd = fx_table_at(f, f->root, FX_VA_A, 2);
    vmt_pa pt_e = pt_entry_pa(f);
    vmt_pa pd_e = (pd << 12) + 8 * 3;
    vmt_gfn frame2 = fx_data(f);
    uint64_t pd_old = fx_get(f, pd, 3);

    /* vCPU 0 traps on the PT entry, vCPU 1 on the PD entry. */
    cpu_store_trap(f, 0, pt_e, 8, pte_page(frame2));
    cpu_store_trap(f, 1, pd_e, 8, 0);
    assert_true(vmt_ptm_stepping(f->ptm, 0));
    assert_true(vmt_ptm_stepping(f->ptm, 1));
    assert_int_equal(fx_current_view(f, 0), 0);
    assert_int_equal(fx_current_view(f, 1), 0);
    /* vCPU 1 finishes first: only its PD write is processed. */
    cpu_store_finish(f, 1, pd_e, 8, 0);
    const vmt_ptm_event *e = fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
    assert_int_equal(e->vcpu, 1);
    assert_int_equal(e->old_pa, (frame << 12) | 0x123);
    assert_true(vmt_ptm_stepping(f->ptm, 0));
    assert_false(vmt_ptm_stepping(f->ptm, 1));
    fx_clear_events(f);
    /* vCPU 0's PT entry is no longer on the path: its step emits nothing. */
    cpu_store_finish(f, 0, pt_e, 8, pte_page(frame2));
    assert_int_equal(f->nevents, 0);
    /* Restoring the PD entry pages in the new frame. */
    cpu_set(f, 1, pd, 3, pd_old);
    e = fx_expect(f, VMT_PTM_PAGE_IN, FX_VA_A, f->root);
    assert_int_equal(e->new_pa, (frame2 << 12) | 0x123);
    fx_destroy(f);
}

static void test_per_vcpu_partial_state(void **state)
{
    (void)state;
    fx *f = fx_create(0, 2);
    fx_setup_a(f, TAG);
    vmt_pa e = pt_entry_pa(f);
    vmt_gfn frame2 = fx_data(f);
    uint64_t nv = pte_page(frame2);
    /* vCPU 0 writes the low half: that alone is the new entry (the high
     * half is 0 in both), so the remap is vCPU 0's, at once. */
    cpu_store(f, 0, e, 4, nv & 0xffffffff);
    const vmt_ptm_event *ev = fx_expect(f, VMT_PTM_REMAP, FX_VA_A, f->root);
    assert_int_equal(ev->vcpu, 0);
    fx_clear_events(f);
    /* vCPU 1 rewrites either half with what memory holds: nothing new. */
    cpu_store(f, 1, e + 4, 4, nv >> 32);
    cpu_store(f, 1, e, 4, nv & 0xffffffff);
    assert_int_equal(f->nevents, 0);
    /* vCPU 1 clears the low half: its page-out, though vCPU 0 wrote last. */
    cpu_store(f, 1, e, 4, 0);
    ev = fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
    assert_int_equal(ev->vcpu, 1);
    assert_false(fx_info_a(f, TAG).present);
    fx_destroy(f);
}

static void test_unmonitor_while_dirty(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    f->with_data = false;
    fx_setup_a(f, TAG);
    vmt_pa e = pt_entry_pa(f);
    cpu_store_trap(f, 0, e, 8, 0);
    assert_true(vmt_ptm_stepping(f->ptm, 0));
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_OK);
    fx_check(f);
    assert_int_equal(fx_access(f, f->view, e >> 12), VMT_ACCESS_RWX);
    /* The step still comes back to the monitor, which switches back. */
    cpu_store_finish(f, 0, e, 8, 0);
    assert_int_equal(f->nevents, 0);
    assert_false(vmt_ptm_stepping(f->ptm, 0));
    /* Same with a pending partial write (with data). */
    f->with_data = true;
    fx_map4k(f, f->root, FX_VA_A, fx_data(f));
    assert_int_equal(vmt_ptm_monitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_OK);
    cpu_store(f, 0, e, 4, 0);
    assert_int_equal(vmt_ptm_unmonitor(f->ptm, fx_ctx_a(f), f->view, TAG), VMT_OK);
    fx_check(f);
    fx_destroy(f);
}

/* One stepped store that completes a PD entry and a PT entry at once (it
 * straddles the end of the PD page into the PT page that follows): the
 * vCPU's dirty entries are processed top level first. */
static void test_processing_order_top_level_first(void **state)
{
    (void)state;
    fx *f = fx_create(0, 1);
    f->with_data = false;
    f->report_size = true;
    vmt_gfn pdpt = fx_table(f), pd = fx_table(f), pt = fx_table(f), pt_b = fx_table(f);
    assert_int_equal(pt, pd + 1);
    vmt_va va_b = (1ULL << 39) | (2ULL << 30) | (511ULL << 21); /* PD entry 511 */
    vmt_va va_c = (1ULL << 39) | (2ULL << 30);                  /* PD 0 -> PT entry 0 */
    fx_set(f, f->root >> 12, 1, pte_table(pdpt));
    fx_set(f, pdpt, 2, pte_table(pd));
    fx_set(f, pd, 511, pte_table(pt_b));
    fx_set(f, pt_b, 0, pte_page(fx_data(f)));
    fx_set(f, pd, 0, pte_table(pt));
    fx_set(f, pt, 0, pte_page(fx_data(f)));
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(va_c, f->root), f->view, TAG), VMT_OK);
    assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(va_b, f->root), f->view, TAG), VMT_OK);
    vmt_pa pd511 = (pd << 12) + 8 * 511, pt0 = pt << 12;
    assert_int_equal(pd511 + 8, pt0);
    /* One 8-byte store over PD[511]'s high half (a reserved bit: hostile)
     * and PT[0]'s low half (P cleared): both entries change at once. */
    cpu_store_trap(f, 0, pd511 + 4, 8, 1ULL << (45 - 32));
    cpu_store_finish(f, 0, pd511 + 4, 8, 1ULL << (45 - 32));
    assert_int_equal(f->nevents, 2);
    assert_int_equal(f->events[0].ctx.va, va_b); /* from the PD entry */
    assert_int_equal(f->events[1].ctx.va, va_c); /* from the PT entry */
    assert_int_equal(f->events[0].kind, VMT_PTM_PAGE_OUT);
    assert_int_equal(f->events[1].kind, VMT_PTM_PAGE_OUT);
    fx_destroy(f);
}

/* A sink that starts watching another VA when one pages in (what the
 * breakpoint manager does for pending breakpoints): with write data the
 * write has not landed yet, so the new watch must see it through the
 * monitor, not in memory. */
static void monitor_b_on_page_in(fx *f, const vmt_ptm_event *ev)
{
    if (ev->kind == VMT_PTM_PAGE_IN && ev->ctx.va == FX_VA_A)
        assert_int_equal(vmt_ptm_monitor(f->ptm, vmt_addr_ctx_make(f->user, f->root), f->view, TAG), VMT_OK);
}

static void test_sink_may_monitor_during_the_event(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fx *f = fx_create(0, 1);
        f->with_data = mode == 0;
        vmt_gfn frame = fx_setup_a(f, TAG);
        vmt_va vb = FX_VA_A + 0x1000;
        fx_map4k(f, f->root, vb, frame + 1);
        vmt_gfn pd = fx_table_at(f, f->root, FX_VA_A, 2);
        uint64_t pd_old = fx_get(f, pd, 3);
        cpu_set(f, 0, pd, 3, 0);
        fx_expect(f, VMT_PTM_PAGE_OUT, FX_VA_A, f->root);
        fx_clear_events(f);
        f->on_event = monitor_b_on_page_in;
        f->user = vb;
        cpu_set(f, 0, pd, 3, pd_old);
        fx_expect(f, VMT_PTM_PAGE_IN, FX_VA_A, f->root);
        vmt_ptm_watch_info wi;
        assert_int_equal(vmt_ptm_query(f->ptm, vmt_addr_ctx_make(vb, f->root), f->view, TAG, &wi), VMT_OK);
        assert_true(wi.present);
        assert_int_equal(wi.pa, ((frame + 1) << 12) | 0x123);
        assert_int_equal(wi.depth, 4);
        f->on_event = NULL;
        fx_clear_events(f);
        /* And it follows later changes like any watch. */
        cpu_set(f, 0, fx_table_at(f, f->root, vb, 1), 5, 0);
        fx_expect(f, VMT_PTM_PAGE_OUT, vb, f->root);
        fx_destroy(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exits_per_write),
        cmocka_unit_test(test_partial_writes_with_data),
        cmocka_unit_test(test_partial_writes_stepped),
        cmocka_unit_test(test_lone_half_remaps_at_once),
        cmocka_unit_test(test_straddling_store_updates_both_entries),
        cmocka_unit_test(test_cmpxchg_fail_and_duplicates_emit_nothing),
        cmocka_unit_test(test_unwatched_entry_on_watched_page),
        cmocka_unit_test(test_per_vcpu_dirty_sets),
        cmocka_unit_test(test_per_vcpu_partial_state),
        cmocka_unit_test(test_unmonitor_while_dirty),
        cmocka_unit_test(test_processing_order_top_level_first),
        cmocka_unit_test(test_sink_may_monitor_during_the_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
