/*
 * tests/bpm/test_bpm_shadow.c — the manager's semantics with the shadow-INT3
 * controller on the mem driver: driver calls and their order, sharing,
 * duplicates, pending/page-in/page-out, globals and conflicts, removal paths
 * (events: test_bpm_events.c).
 * vmt_bpm_check() runs after every operation (CK).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bpm_fixture.h"

#define VA1 0x400123ULL
#define PA1 0x10123ULL   /* gfn 0x10 */
#define CK(f) fx_check(f)

/* Logged calls other than reads of page tables (translation). */
static size_t install_calls(fx *f)
{
    size_t n = 0;
    for (size_t i = 0; i < vmt_mem_log_count(f->d); i++) {
        const vmt_mem_call *c = vmt_mem_log_at(f->d, i);
        if (c->op == VMT_MEM_OP_READ_PHYS && c->addr >= 0x80000 && c->addr < 0x100000)
            continue;
        n++;
    }
    return n;
}

static void test_call_order_and_shadow_content(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_AUTO);
    assert_int_equal(vmt_bpm_controller_of(f.b), VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 7);
    fx_map(&f, FX_ROOT_A, VA1, PA1);
    uint8_t before[4096];
    fx_page(&f, 0x10, before);
    vmt_mem_log_clear(f.d);

    vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 1, 0x1111, false);
    bool active = false;
    assert_int_equal(vmt_bpm_insert(f.b, &bp, &active), VMT_OK);
    assert_true(active);
    CK(&f);

    /* frame_alloc -> copy -> remap -> execute-only, in that order */
    long a = fx_find_call(&f, VMT_MEM_OP_FRAME_ALLOC, 0);
    assert_true(a >= 0);
    vmt_gfn shadow = vmt_mem_log_at(f.d, (size_t)a)->gfn;
    long w = fx_find_call(&f, VMT_MEM_OP_WRITE_PHYS, (size_t)a);
    assert_true(w > a);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)w)->addr, shadow << 12);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)w)->len, 4096);
    long r = fx_find_call(&f, VMT_MEM_OP_VIEW_REMAP, 0);
    assert_true(r > w);
    const vmt_mem_call *rc = vmt_mem_log_at(f.d, (size_t)r);
    assert_int_equal(rc->view, f.view);
    assert_int_equal(rc->gfn, 0x10);
    assert_int_equal(rc->backing, shadow);
    long p = fx_find_call(&f, VMT_MEM_OP_VIEW_SET_ACCESS, 0);
    assert_true(p > r);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)p)->access, VMT_ACCESS_X);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)p)->gfn, 0x10);

    /* the shadow has the INT3 and otherwise the page; RAM is untouched */
    uint8_t sh[4096], now[4096];
    fx_page(&f, shadow, sh);
    fx_page(&f, 0x10, now);
    assert_memory_equal(now, before, 4096);
    assert_int_equal(sh[0x123], 0xCC);
    sh[0x123] = before[0x123];
    assert_memory_equal(sh, before, 4096);
    vmt_access acc;
    vmt_gfn backing;
    fx_view_state(&f, 0x10, &acc, &backing);
    assert_int_equal(acc, VMT_ACCESS_X);
    assert_int_equal(backing, shadow);

    /* remove: remap back, rights back, shadow freed (in that order) */
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
    CK(&f);
    r = fx_find_call(&f, VMT_MEM_OP_VIEW_REMAP, 0);
    p = fx_find_call(&f, VMT_MEM_OP_VIEW_SET_ACCESS, 0);
    long fr = fx_find_call(&f, VMT_MEM_OP_FRAME_FREE, 0);
    assert_true(r >= 0 && r < fr);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)r)->backing, 0x10);
    assert_int_equal(vmt_mem_log_at(f.d, (size_t)fr)->gfn, shadow);
    (void)p;
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    fx_view_state(&f, 0x10, &acc, &backing);
    assert_int_equal(acc, VMT_ACCESS_RWX);
    assert_int_equal(backing, 0x10);
    vmt_bpm_stats stt;
    vmt_bpm_get_stats(f.b, &stt);
    assert_int_equal(stt.breakpoints, 0);
    assert_int_equal(stt.frames, 0);
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_E_NOTFOUND);
    fx_free(&f);
}

static void test_duplicates_and_sharing(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 1);
    fx_map(&f, FX_ROOT_A, VA1, PA1);
    fx_map(&f, FX_ROOT_B, VA1, PA1);            /* same page in another address space */
    fx_map(&f, FX_ROOT_A, 0x400456, 0x10456);  /* another va on the frame */
    vmt_bpm_bp a1 = fx_bp(&f, VA1, FX_ROOT_A, 1, 11, false);
    assert_int_equal(vmt_bpm_insert(f.b, &a1, NULL), VMT_OK);
    CK(&f);

    vmt_mem_log_clear(f.d);
    /* duplicate: idempotent, says so, no driver call, first tag kept */
    vmt_bpm_bp dup = a1;
    dup.tag = 99;
    bool active = false;
    assert_int_equal(vmt_bpm_insert(f.b, &dup, &active), VMT_E_EXISTS);
    assert_true(active);
    assert_non_null(strstr(vmt_bpm_error(f.b), "already exists"));
    /* another key on the same context: joins, no driver call */
    vmt_bpm_bp a2 = fx_bp(&f, VA1, FX_ROOT_A, 2, 22, false);
    assert_int_equal(vmt_bpm_insert(f.b, &a2, NULL), VMT_OK);
    /* the same pa under another root: shares the INT3, no driver call */
    vmt_bpm_bp b1 = fx_bp(&f, VA1, FX_ROOT_B, 1, 33, false);
    assert_int_equal(vmt_bpm_insert(f.b, &b1, NULL), VMT_OK);
    CK(&f);
    assert_int_equal(install_calls(&f), 0); /* only page-table reads (translation) */

    /* another offset of the frame: one byte read + one byte written, no remap */
    vmt_bpm_bp c1 = fx_bp(&f, 0x400456, FX_ROOT_A, 1, 44, false);
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &c1, 0x10456, NULL), VMT_OK); /* no translation */
    CK(&f);
    assert_int_equal(vmt_mem_log_count(f.d), 2);
    assert_int_equal(vmt_mem_log_at(f.d, 0)->op, VMT_MEM_OP_READ_PHYS);
    assert_int_equal(vmt_mem_log_at(f.d, 0)->addr, 0x10456);
    assert_int_equal(vmt_mem_log_at(f.d, 1)->op, VMT_MEM_OP_WRITE_PHYS);
    assert_int_equal(vmt_mem_log_at(f.d, 1)->len, 1);

    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.breakpoints, 4);
    assert_int_equal(st.contexts, 3);
    assert_int_equal(st.frames, 1);
    assert_int_equal(st.sites, 2);
    assert_int_equal(st.shadow_frames, 1);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 1);

    /* lookup behind an INT3 event: the keys of that root only */
    vmt_bpm_bp hits[4];
    size_t total;
    vmt_event ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
    size_t n = vmt_bpm_lookup_event(f.b, &ev, hits, 4, &total);
    assert_int_equal(n, 2);
    assert_int_equal(total, 2);
    assert_true((hits[0].key == 1 && hits[0].tag == 11 && hits[1].key == 2 && hits[1].tag == 22) ||
                (hits[1].key == 1 && hits[1].tag == 11 && hits[0].key == 2 && hits[0].tag == 22));
    assert_true(vmt_bpm_contains_event(f.b, &ev));
    ev.regs.cr3 = FX_ROOT_B;
    n = vmt_bpm_lookup_event(f.b, &ev, hits, 4, &total);
    assert_int_equal(n, 1);
    assert_int_equal(hits[0].tag, 33);
    /* truncated copy still reports the total */
    ev.regs.cr3 = FX_ROOT_A;
    n = vmt_bpm_lookup_event(f.b, &ev, hits, 1, &total);
    assert_int_equal(n, 1);
    assert_int_equal(total, 2);

    /* removals: nothing reaches the driver until the frame's last one */
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_remove(f.b, &a1), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_mem_log_count(f.d), 0);
    assert_true(vmt_bpm_contains(f.b, &a2));
    assert_false(vmt_bpm_contains(f.b, &a1));
    assert_int_equal(vmt_bpm_remove(f.b, &a2), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_remove(f.b, &b1), VMT_OK); /* last on the site: byte restored */
    CK(&f);
    assert_int_equal(vmt_mem_log_count(f.d), 1);
    assert_int_equal(vmt_mem_log_at(f.d, 0)->op, VMT_MEM_OP_WRITE_PHYS);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 1);
    assert_int_equal(vmt_bpm_remove(f.b, &c1), VMT_OK); /* last on the frame */
    CK(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    assert_true(fx_find_call(&f, VMT_MEM_OP_FRAME_FREE, 0) >= 0);
    fx_free(&f);
}

static void test_pending_and_page_events(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 3);
    fx_fill(&f, 0x11, 5);
    vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 7, 70, false);
    bool active = true;
    assert_int_equal(vmt_bpm_insert(f.b, &bp, &active), VMT_OK); /* not mapped: pending */
    assert_false(active);
    CK(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    assert_true(vmt_bpm_contains(f.b, &bp));
    assert_false(vmt_bpm_is_active(f.b, &bp));
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_E_EXISTS);

    /* page-in arms it at new_pa */
    vmt_ptm_event pe;
    memset(&pe, 0, sizeof pe);
    pe.kind = VMT_PTM_PAGE_IN;
    pe.ctx = vmt_addr_ctx_make(VA1, FX_ROOT_A);
    pe.view = f.view;
    pe.new_pa = PA1;
    pe.page_size = 4096;
    size_t changed = 0;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    assert_int_equal(changed, 1);
    CK(&f);
    assert_true(vmt_bpm_is_active(f.b, &bp));
    assert_int_equal(vmt_mem_frames_in_use(f.d), 1);

    /* remap moves it: the new shadow is built from the new frame */
    pe.kind = VMT_PTM_REMAP;
    pe.old_pa = PA1;
    pe.new_pa = 0x11123;
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    CK(&f);
    assert_int_equal(changed, 1);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 1);
    vmt_access acc;
    vmt_gfn backing10, backing11;
    fx_view_state(&f, 0x10, &acc, &backing10);
    assert_int_equal(backing10, 0x10);
    assert_int_equal(acc, VMT_ACCESS_RWX);
    fx_view_state(&f, 0x11, &acc, &backing11);
    assert_int_equal(acc, VMT_ACCESS_X);
    uint8_t sh[4096], orig[4096];
    fx_page(&f, backing11, sh);
    fx_page(&f, 0x11, orig);
    assert_int_equal(sh[0x123], 0xCC);
    sh[0x123] = orig[0x123];
    assert_memory_equal(sh, orig, 4096);
    vmt_bpm_bp hits[2];
    vmt_event ev = fx_int3(&f, VA1, 0x11123, FX_ROOT_A);
    assert_int_equal(vmt_bpm_lookup_event(f.b, &ev, hits, 2, NULL), 1);
    ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
    assert_int_equal(vmt_bpm_lookup_event(f.b, &ev, hits, 2, NULL), 0);

    /* page-out parks it; the shadow goes */
    pe.kind = VMT_PTM_PAGE_OUT;
    pe.old_pa = 0x11123;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    CK(&f);
    assert_int_equal(changed, 1);
    assert_false(vmt_bpm_is_active(f.b, &bp));
    assert_true(vmt_bpm_contains(f.b, &bp));
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    /* a second page-out changes nothing; an event of another ctx neither */
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    assert_int_equal(changed, 0);
    pe.ctx.va = 0x999000;
    pe.kind = VMT_PTM_PAGE_IN;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    assert_int_equal(changed, 0);
    CK(&f);
    /* page-in outside RAM (hostile tables): refused, stays pending */
    pe.ctx.va = VA1;
    pe.new_pa = 0x7fff0123ULL;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_E_RANGE);
    assert_non_null(strstr(vmt_bpm_error(f.b), "outside guest RAM"));
    CK(&f);
    assert_false(vmt_bpm_is_active(f.b, &bp));
    /* removing a pending breakpoint makes no driver call */
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
    assert_int_equal(vmt_mem_log_count(f.d), 0);
    CK(&f);
    fx_free(&f);
}

static void test_global_and_conflicts(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 9);
    fx_map(&f, FX_ROOT_A, VA1, PA1);
    fx_map(&f, FX_ROOT_B, VA1, PA1);
    fx_map(&f, FX_ROOT_A, 0x500000, 0x12000);
    vmt_bpm_bp g = fx_bp(&f, VA1, FX_ROOT_A, 1, 5, true);
    assert_int_equal(vmt_bpm_insert(f.b, &g, NULL), VMT_OK);
    CK(&f);
    /* any root hits it */
    vmt_bpm_bp hits[2];
    vmt_event ev = fx_int3(&f, VA1, PA1, FX_ROOT_B);
    assert_int_equal(vmt_bpm_lookup_event(f.b, &ev, hits, 2, NULL), 1);
    assert_true(hits[0].global);
    assert_int_equal(hits[0].ctx.root, FX_ROOT_A); /* registration root */
    ev.regs.cr3 = 0x123000;
    assert_int_equal(vmt_bpm_lookup_event(f.b, &ev, hits, 2, NULL), 1);
    /* the same global under another root is the same breakpoint */
    vmt_bpm_bp g2 = fx_bp(&f, VA1, FX_ROOT_B, 1, 6, true);
    assert_int_equal(vmt_bpm_insert(f.b, &g2, NULL), VMT_E_EXISTS);
    vmt_bpm_bp g3 = fx_bp(&f, VA1, FX_ROOT_B, 2, 6, true); /* another key joins */
    assert_int_equal(vmt_bpm_insert(f.b, &g3, NULL), VMT_OK);
    CK(&f);
    /* per-root at a global va: conflict, clear message, nothing changed */
    uint64_t dg = vmt_bpm_digest(f.b);
    vmt_bpm_bp p = fx_bp(&f, VA1, FX_ROOT_A, 3, 7, false);
    assert_int_equal(vmt_bpm_insert(f.b, &p, NULL), VMT_E_CONFLICT);
    assert_non_null(strstr(vmt_bpm_error(f.b), "global"));
    assert_int_equal(vmt_bpm_digest(f.b), dg);
    CK(&f);
    /* and the reverse */
    vmt_bpm_bp q = fx_bp(&f, 0x500000, FX_ROOT_A, 1, 8, false);
    assert_int_equal(vmt_bpm_insert(f.b, &q, NULL), VMT_OK);
    vmt_bpm_bp qg = fx_bp(&f, 0x500000, FX_ROOT_B, 1, 8, true);
    assert_int_equal(vmt_bpm_insert(f.b, &qg, NULL), VMT_E_CONFLICT);
    assert_non_null(strstr(vmt_bpm_error(f.b), "per-root"));
    CK(&f);
    /* page events under the registration root move the global; others not */
    vmt_ptm_event pe;
    memset(&pe, 0, sizeof pe);
    pe.kind = VMT_PTM_PAGE_OUT;
    pe.ctx = vmt_addr_ctx_make(VA1, FX_ROOT_B);
    pe.view = f.view;
    pe.old_pa = PA1;
    size_t changed;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    assert_int_equal(changed, 0);
    pe.ctx.root = FX_ROOT_A;
    assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, &changed), VMT_OK);
    assert_int_equal(changed, 1);
    CK(&f);
    assert_false(vmt_bpm_is_active(f.b, &g));
    /* removing all keys of the global context */
    vmt_bpm_bp any = g;
    any.key = VMT_BPM_KEY_ANY;
    assert_int_equal(vmt_bpm_remove(f.b, &any), VMT_OK);
    CK(&f);
    assert_false(vmt_bpm_contains(f.b, &g3));
    /* the va is free again: a per-root breakpoint is fine now */
    assert_int_equal(vmt_bpm_insert(f.b, &p, NULL), VMT_OK);
    CK(&f);
    fx_free(&f); /* destroy removes what is left and frees the shadows */
}

static void test_remove_by_event_view_and_clear(void **state)
{
    (void)state;
    fx f;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
    vmt_view v2;
    assert_int_equal(vmt_drv_view_create(f.d, VMT_ACCESS_RWX, &v2), VMT_OK);
    for (unsigned i = 0; i < 8; i++) {
        fx_fill(&f, 0x10 + i, (uint8_t)i);
        fx_map(&f, FX_ROOT_A, 0x400000 + i * 0x1000 + 0x10, ((0x10ULL + i) << 12) + 0x10);
    }
    for (unsigned i = 0; i < 8; i++) {
        vmt_bpm_bp bp = fx_bp(&f, 0x400000 + i * 0x1000 + 0x10, FX_ROOT_A, 1, i, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        bp.key = 2;
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        bp.view = v2;
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        CK(&f);
    }
    assert_int_equal(vmt_mem_frames_in_use(f.d), 16);
    /* by event: key 1 only, then any key */
    vmt_event ev = fx_int3(&f, 0x400010, 0x10010, FX_ROOT_A);
    size_t removed = 0;
    assert_int_equal(vmt_bpm_remove_by_event(f.b, &ev, 1, &removed), VMT_OK);
    assert_int_equal(removed, 1);
    CK(&f);
    assert_int_equal(vmt_bpm_remove_by_event(f.b, &ev, VMT_BPM_KEY_ANY, &removed), VMT_OK);
    assert_int_equal(removed, 1);
    CK(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 15);
    assert_int_equal(vmt_bpm_remove_by_event(f.b, &ev, VMT_BPM_KEY_ANY, &removed), VMT_OK);
    assert_int_equal(removed, 0);

    /* view 2 is destroyed under the manager: removal tolerates it */
    assert_int_equal(vmt_drv_view_destroy(f.d, v2), VMT_OK);
    vmt_session_forget_view(f.s, v2);
    assert_int_equal(vmt_bpm_remove_view(f.b, v2, &removed), VMT_OK);
    assert_int_equal(removed, 8);
    CK(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 7);
    /* clear removes the rest */
    assert_int_equal(vmt_bpm_clear(f.b), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.breakpoints, 0);
    assert_int_equal(st.contexts, 0);
    fx_free(&f);
}

static void test_bad_input(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_map(&f, FX_ROOT_A, 0x400000, 0x7f000);
    vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 1, 1, false);
    bp.view = 0;
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_E_INVAL);
    assert_non_null(strstr(vmt_bpm_error(f.b), "view 0"));
    bp.view = f.view;
    bp.key = VMT_BPM_KEY_ANY;
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_E_INVAL);
    bp.key = 1;
    bp.view = 5000;
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_E_RANGE);
    bp.view = f.view;
    /* pa outside RAM or with the wrong page offset */
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, 0x40000000123ULL, NULL), VMT_E_RANGE);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, 0x10000, NULL), VMT_E_INVAL);
    CK(&f);
    /* insert_pa skips translation; remove_pa checks the frame */
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, 0x20123, NULL), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_remove_pa(f.b, &bp, 0x21123), VMT_E_NOTFOUND);
    assert_int_equal(vmt_bpm_remove_pa(f.b, &bp, 0x20123), VMT_OK);
    CK(&f);
    fx_free(&f);
}

/* Many address contexts at one va (roots and views): the va's first
 * context is stored inline and the others aside; removing in any order and
 * re-inserting keeps every lookup right. */
static void test_many_contexts_one_va(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    vmt_view v2;
    assert_int_equal(vmt_drv_view_create(f.d, VMT_ACCESS_RWX, &v2), VMT_OK);
    fx_fill(&f, 0x10, 1);
    enum { NR = 6 };
    vmt_bpm_bp bps[2 * NR];
    for (unsigned i = 0; i < 2 * NR; i++) {
        bps[i] = fx_bp(&f, VA1, 0x200000 + (i % NR) * 0x1000, 1, i, false);
        if (i >= NR)
            bps[i].view = v2;
        assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[i], PA1, NULL), VMT_OK);
        CK(&f);
    }
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.contexts, 2 * NR);
    assert_int_equal(st.frames, 2);
    /* remove the first (inline) one, then every other one */
    int gone[2 * NR] = { 0 };
    const unsigned order[] = { 0, 3, 7, 1, 11 };
    for (unsigned j = 0; j < sizeof order / sizeof order[0]; j++) {
        assert_int_equal(vmt_bpm_remove(f.b, &bps[order[j]]), VMT_OK);
        gone[order[j]] = 1;
        CK(&f);
        for (unsigned i = 0; i < 2 * NR; i++) {
            assert_int_equal(vmt_bpm_contains(f.b, &bps[i]), !gone[i]);
            vmt_bpm_bp hit[2 * NR];
            vmt_event ev = fx_int3(&f, VA1, PA1, bps[i].ctx.root);
            ev.view = bps[i].view;
            size_t total;
            size_t n = vmt_bpm_lookup_event(f.b, &ev, hit, 2 * NR, &total);
            if (!gone[i]) {
                assert_int_equal(total, 1);
                assert_int_equal(hit[0].tag, i);
            } else { /* no breakpoint of its own: at most the others at that frame (an alias) */
                for (size_t h = 0; h < n; h++)
                    assert_int_not_equal(hit[h].tag, i);
            }
        }
    }
    /* back in again (fills the freed inline place) */
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[3], PA1, NULL), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[0], PA1, NULL), VMT_OK);
    CK(&f);
    /* a global there conflicts with every one of them */
    vmt_bpm_bp g = fx_bp(&f, VA1, FX_ROOT_A, 9, 9, true);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &g, PA1, NULL), VMT_E_CONFLICT);
    assert_int_equal(vmt_bpm_remove_view(f.b, v2, NULL), VMT_OK);
    CK(&f);
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.contexts, NR - 1 + 0); /* view 1: 6 - {1} */
    assert_int_equal(vmt_bpm_clear(f.b), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &g, PA1, NULL), VMT_OK); /* free again */
    CK(&f);
    fx_free(&f);
}

/* The view is destroyed behind the session's back (no forget_view): every
 * removal path still completes and frees the shadow frames. */
static void test_view_destroyed_without_forget(void **state)
{
    (void)state;
    for (int ctl = VMT_BPM_CTL_SHADOW; ctl <= VMT_BPM_CTL_EXEC; ctl++) {
        fx f;
        fx_init(&f, NULL, (vmt_bpm_controller)ctl);
        fx_fill(&f, 0x10, 1);
        fx_fill(&f, 0x11, 1);
        vmt_bpm_bp a = fx_bp(&f, VA1, FX_ROOT_A, 1, 1, false);
        vmt_bpm_bp c = fx_bp(&f, 0x401123, FX_ROOT_A, 1, 2, false);
        assert_int_equal(vmt_bpm_insert_pa(f.b, &a, PA1, NULL), VMT_OK);
        assert_int_equal(vmt_bpm_insert_pa(f.b, &c, 0x11123, NULL), VMT_OK);
        assert_int_equal(vmt_drv_view_destroy(f.d, f.view), VMT_OK);
        assert_int_equal(vmt_bpm_remove(f.b, &a), VMT_OK);
        vmt_ptm_event pe;
        memset(&pe, 0, sizeof pe);
        pe.kind = VMT_PTM_PAGE_OUT;
        pe.ctx = c.ctx;
        pe.view = f.view;
        pe.old_pa = 0x11123;
        assert_int_equal(vmt_bpm_handle_ptm_event(f.b, &pe, NULL), VMT_OK);
        assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
        assert_int_equal(vmt_bpm_remove_view(f.b, f.view, NULL), VMT_OK);
        vmt_bpm_stats st;
        vmt_bpm_get_stats(f.b, &st);
        assert_int_equal(st.breakpoints, 0);
        assert_int_equal(vmt_bpm_check(f.b), VMT_OK);
        vmt_session_forget_view(f.s, f.view); /* the session's own entries, for its checker */
        CK(&f);
        fx_free(&f);
    }
}

/* A frame's sites: the first is stored in the frame record, a second moves
 * them to an array, and back to one the array goes. At each step the shadow
 * holds INT3 exactly at the sites, the frame is found by its shadow gfn
 * (an event naming the shadow), and the memory parts add up to the stats. */
static void expect_sites(fx *f, vmt_gfn shadow, const unsigned *offs, size_t n)
{
    uint8_t orig[4096], sh[4096];
    fx_page(f, 0x10, orig);
    fx_page(f, shadow, sh);
    for (unsigned o = 0; o < 4096; o++) {
        bool site = false;
        for (size_t i = 0; i < n; i++)
            site |= offs[i] == o;
        assert_int_equal(sh[o], site ? 0xCC : orig[o]);
    }
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f->b, &st);
    assert_int_equal(st.sites, n);
    vmt_bpm_mem_part parts[16];
    size_t np = vmt_bpm_memory_parts(f->b, parts, 16), sum = 0, site_bytes = 0;
    assert_true(np <= 16);
    for (size_t i = 0; i < np; i++) {
        sum += parts[i].bytes;
        if (strstr(parts[i].name, "site arrays"))
            site_bytes = parts[i].bytes;
    }
    assert_int_equal(sum, st.bytes);
    assert_int_equal(site_bytes == 0, n == 1); /* one site: no array */
    /* an INT3 event naming the shadow gfn (as some drivers report it) finds
     * the breakpoint of the guest frame */
    for (size_t i = 0; i < n; i++) {
        vmt_event ev = fx_int3(f, 0x400000 + offs[i], (shadow << 12) + offs[i], FX_ROOT_A);
        vmt_bpm_bp hits[2];
        size_t total = 0;
        assert_int_equal(vmt_bpm_lookup_event(f->b, &ev, hits, 2, &total), 1);
        assert_int_equal(total, 1);
        assert_true(hits[0].ctx.va == 0x400000 + offs[i]);
    }
}

static void test_sites_inline_then_array(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 7);
    static const unsigned offs[] = { 0x123, 0x456, 0x789 };
    vmt_bpm_bp bp[3];
    for (int i = 0; i < 3; i++) {
        bp[i] = fx_bp(&f, 0x400000 + offs[i], FX_ROOT_A, 1, (uint64_t)i, false);
        assert_int_equal(vmt_bpm_insert_pa(f.b, &bp[i], 0x10000 + offs[i], NULL), VMT_OK);
        CK(&f);
        vmt_access acc;
        vmt_gfn shadow;
        fx_view_state(&f, 0x10, &acc, &shadow);
        assert_int_equal(acc, VMT_ACCESS_X);
        expect_sites(&f, shadow, offs, (size_t)i + 1);
    }
    vmt_access acc;
    vmt_gfn shadow;
    fx_view_state(&f, 0x10, &acc, &shadow);
    /* remove the first two: back to one site (inline), the shadow follows */
    assert_int_equal(vmt_bpm_remove(f.b, &bp[0]), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_remove(f.b, &bp[1]), VMT_OK);
    CK(&f);
    expect_sites(&f, shadow, &offs[2], 1);
    /* and a second site again (array again), then everything goes */
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp[0], 0x10000 + offs[0], NULL), VMT_OK);
    CK(&f);
    static const unsigned two[] = { 0x123, 0x789 };
    expect_sites(&f, shadow, two, 2);
    assert_int_equal(vmt_bpm_clear(f.b), VMT_OK);
    CK(&f);
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.frames + st.sites + st.shadow_frames, 0);
    fx_free(&f);
}

/* A driver that hands out a frame that already shadows another one (the
 * no-op mem driver with one extra frame cycles over it): the insert fails
 * with a clear error, changes nothing and frees nothing. */
static void test_driver_repeats_a_shadow_frame(void **state)
{
    (void)state;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.noop = true;
    mc.ram_frames = 64;
    mc.extra_frames = 1;
    mc.max_views = 2;
    char why[256];
    vmt_driver *d;
    vmt_session *s;
    vmt_view view;
    vmt_bpm *b;
    assert_int_equal(vmt_mem_driver_create(&mc, &d, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_session_create(d, NULL, &s), VMT_OK);
    assert_int_equal(vmt_drv_view_create(d, VMT_ACCESS_RWX, &view), VMT_OK);
    vmt_bpm_config cfg = { VMT_BPM_CTL_SHADOW, 0 };
    assert_int_equal(vmt_bpm_create(s, &cfg, &b, why, sizeof why), VMT_OK);
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.view = view;
    bp.ctx.root = 0x1000;
    bp.key = 1;
    bp.ctx.va = 0x7000123;
    assert_int_equal(vmt_bpm_insert_pa(b, &bp, 0x10123, NULL), VMT_OK);
    assert_int_equal(vmt_bpm_check(b), VMT_OK);
    uint64_t digest = vmt_bpm_digest(b);
    size_t frees = vmt_mem_op_count(d, VMT_MEM_OP_FRAME_FREE);
    vmt_bpm_bp other = bp;
    other.ctx.va = 0x7001123;
    assert_int_equal(vmt_bpm_insert_pa(b, &other, 0x11123, NULL), VMT_E_INTERNAL);
    assert_non_null(strstr(vmt_bpm_error(b), "already shadows"));
    assert_int_equal(vmt_bpm_check(b), VMT_OK);
    assert_true(vmt_bpm_digest(b) == digest);
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_FRAME_FREE), frees);
    assert_int_equal(vmt_bpm_remove(b, &bp), VMT_OK);
    assert_int_equal(vmt_bpm_check(b), VMT_OK);
    vmt_bpm_destroy(b);
    vmt_session_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_order_and_shadow_content),
        cmocka_unit_test(test_duplicates_and_sharing),
        cmocka_unit_test(test_pending_and_page_events),
        cmocka_unit_test(test_global_and_conflicts),
        cmocka_unit_test(test_remove_by_event_view_and_clear),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_many_contexts_one_va),
        cmocka_unit_test(test_view_destroyed_without_forget),
        cmocka_unit_test(test_sites_inline_then_array),
        cmocka_unit_test(test_driver_repeats_a_shadow_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
