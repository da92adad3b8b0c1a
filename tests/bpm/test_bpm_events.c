/*
 * tests/bpm/test_bpm_events.c — vmt_bpm_handle_event with the shadow-INT3
 * controller on the mem driver: our INT3 (emulated or fast-stepped in view
 * 0), double traps, the guest's own INT3, stale events, hidden reads, and
 * writes into shadowed pages (stepped + rebuilt, or mirrored + rebuilt at
 * the next event, including rep-string stores and stores that cross into
 * the next frame). vmt_bpm_check() runs after every operation (CK).
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

static void test_int3_events(void **state)
{
    (void)state;
    for (int emulate = 1; emulate >= 0; emulate--) {
        fx f;
        vmt_mem_config mc;
        memset(&mc, 0, sizeof mc);
        if (!emulate)
            mc.caps_remove = VMT_CAP_EMULATE;
        fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
        fx_fill(&f, 0x10, 2);
        uint8_t cc = 0xCC;
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10200, &cc, 1), VMT_OK); /* the guest's own INT3 */
        assert_int_equal(vmt_drv_write_phys(f.d, 0x13300, &cc, 1), VMT_OK);
        fx_map(&f, FX_ROOT_A, VA1, PA1);
        fx_map(&f, FX_ROOT_A, 0x400200, 0x10200);
        fx_map(&f, FX_ROOT_B, VA1, PA1);
        vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 4, 0xabc, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        vmt_bpm_bp dbl = fx_bp(&f, 0x400200, FX_ROOT_A, 4, 0xdef, false);
        vmt_mem_log_clear(f.d);
        assert_int_equal(vmt_bpm_insert(f.b, &dbl, NULL), VMT_OK);
        /* double trap: the byte is read, nothing is written */
        assert_int_equal(vmt_mem_log_count(f.d), 1);
        assert_int_equal(vmt_mem_log_at(f.d, 0)->op, VMT_MEM_OP_READ_PHYS);
        CK(&f);

        vmt_response resp;
        vmt_bpm_verdict vd;
        vmt_bpm_bp hits[4];
        /* our INT3: hit, execute the displaced instruction in view 0 */
        vmt_event ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_int_equal(vd.nhits, 1);
        assert_int_equal(hits[0].tag, 0xabc);
        assert_false(vd.double_trap);
        if (emulate) {
            assert_int_equal(resp.actions, VMT_RESP_EMULATE);
            assert_int_equal(resp.emulate_view, 0);
        } else {
            assert_int_equal(resp.actions, VMT_RESP_FAST_STEP);
            assert_int_equal(resp.step_view, 0);
        }
        /* the response is one the driver accepts */
        assert_int_equal(vmt_mem_push_event(f.d, &ev), VMT_OK);
        vmt_event got;
        assert_int_equal(vmt_drv_wait_event(f.d, 0, &got), VMT_OK);
        assert_int_equal(vmt_drv_respond(f.d, &got, &resp), VMT_OK);
        /* a driver that reports the shadow gfn resolves too */
        vmt_access acc;
        vmt_gfn sh;
        fx_view_state(&f, 0x10, &acc, &sh);
        vmt_event evs = fx_int3(&f, VA1, (sh << 12) | 0x123, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &evs, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_int_equal(vd.nhits, 1);
        assert_false(vd.alias);
        /* same frame shared with another root that has no breakpoint of its
         * own: a physical alias, the hit of the breakpoint there, stepped over */
        ev.regs.cr3 = FX_ROOT_B;
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_int_equal(vd.nhits, 1);
        assert_true(vd.alias);
        assert_int_equal(hits[0].tag, 0xabc);
        assert_int_equal(hits[0].ctx.va, VA1);
        assert_true(resp.actions == VMT_RESP_EMULATE || resp.actions == VMT_RESP_FAST_STEP);
        /* double trap: hit + the guest's INT3 reinjected */
        ev = fx_int3(&f, 0x400200, 0x10200, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_true(vd.double_trap);
        assert_int_equal(vd.nhits, 1);
        assert_int_equal(resp.actions, VMT_RESP_REINJECT);
        /* the guest's own INT3 elsewhere: reinjected */
        ev = fx_int3(&f, 0x777300, 0x13300, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_FOREIGN);
        assert_int_equal(resp.actions, VMT_RESP_REINJECT);
        /* stale event after removal: continue silently */
        assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
        CK(&f);
        ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_STALE);
        assert_int_equal(resp.actions, VMT_RESP_CONTINUE);
        /* not ours at all */
        vmt_event other;
        memset(&other, 0, sizeof other);
        other.kind = VMT_EVENT_CR_WRITE;
        assert_int_equal(vmt_bpm_handle_event(f.b, &other, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_NOT_OURS);
        vmt_bpm_stats st;
        vmt_bpm_get_stats(f.b, &st);
        assert_int_equal(st.hits, 4);
        assert_int_equal(st.foreign_int3, 1);
        assert_int_equal(st.stale_int3, 1);
        CK(&f);
        fx_free(&f);
    }
}

static void test_hidden_reads_and_writes(void **state)
{
    (void)state;
    fx f;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.caps_remove = VMT_CAP_SINGLESTEP; /* writes: mirror the data, rebuild at the next event */
    fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 4);
    fx_map(&f, FX_ROOT_A, VA1, PA1);
    fx_map(&f, FX_ROOT_A, 0x400130, 0x10130);
    vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 1, 1, false);
    vmt_bpm_bp bp2 = fx_bp(&f, 0x400130, FX_ROOT_A, 1, 2, false);
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
    assert_int_equal(vmt_bpm_insert(f.b, &bp2, NULL), VMT_OK);
    vmt_access acc;
    vmt_gfn sh;
    fx_view_state(&f, 0x10, &acc, &sh);
    vmt_response resp;
    vmt_bpm_verdict vd;

    /* a read of the page: served from view 0 */
    vmt_event ev = fx_mem(&f, 0x400120, 0x10120, VMT_ACCESS_R, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    assert_int_equal(resp.emulate_view, 0);

    /* a write with data over a breakpoint: the shadow mirrors it, INT3 stays */
    ev = fx_mem(&f, 0x400122, 0x10122, VMT_ACCESS_W, FX_ROOT_A);
    ev.u.mem.has_data = true;
    ev.u.mem.size = 2;
    ev.u.mem.value = 0xCC55;  /* byte 0x122 = 0x55, byte 0x123 (our site) = 0xCC */
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    CK(&f);
    assert_int_equal(fx_byte(&f, (sh << 12) + 0x122), 0x55);
    assert_int_equal(fx_byte(&f, (sh << 12) + 0x123), 0xCC);
    uint8_t landed[2] = { 0x55, 0xCC }; /* the CPU performs the write in view 0 */
    assert_int_equal(vmt_drv_write_phys(f.d, 0x10122, landed, 2), VMT_OK);
    /* the guest now has its own INT3 at our site: a hit is a double trap */
    vmt_event hit = fx_int3(&f, VA1, PA1, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &hit, &resp, NULL, 0, &vd), VMT_OK);
    assert_true(vd.double_trap);
    assert_int_equal(resp.actions, VMT_RESP_REINJECT);
    /* removing it leaves the guest's 0xCC in the shadow (it is the guest's) */
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
    CK(&f);
    assert_int_equal(fx_byte(&f, (sh << 12) + 0x123), 0xCC);
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
    CK(&f);
    fx_free(&f);

    /* with single-step: step the write in view 0, rebuild on SINGLESTEP */
    memset(&mc, 0, sizeof mc);
    fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 4);
    fx_map(&f, FX_ROOT_A, VA1, PA1);
    assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
    fx_view_state(&f, 0x10, &acc, &sh);
    ev = fx_mem(&f, 0x400100, 0x10100, VMT_ACCESS_W, FX_ROOT_A);
    ev.vcpu = 0;
    ev.u.mem.has_data = true; /* a rep stos: the event reports its first store only */
    ev.u.mem.size = 1;
    ev.u.mem.value = 0x41;
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    assert_int_equal(resp.actions, VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP);
    assert_int_equal(resp.new_view, 0);
    CK(&f);
    /* the CPU performs the whole rep stos in view 0 (the test plays it) */
    uint8_t newcode[0x40];
    memset(newcode, 0x41, sizeof newcode);
    assert_int_equal(vmt_drv_write_phys(f.d, 0x10100, newcode, sizeof newcode), VMT_OK);
    vmt_event step;
    memset(&step, 0, sizeof step);
    step.kind = VMT_EVENT_SINGLESTEP;
    step.view = 0;
    assert_int_equal(vmt_bpm_handle_event(f.b, &step, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_REFRESHED);
    assert_int_equal(resp.actions, VMT_RESP_SWITCH_VIEW);
    assert_int_equal(resp.new_view, f.view);
    CK(&f);
    uint8_t shp[4096], orig[4096];
    fx_page(&f, sh, shp);
    fx_page(&f, 0x10, orig);
    assert_int_equal(shp[0x123], 0xCC);      /* re-planted */
    assert_int_equal(orig[0x123], 0x41);     /* the write landed there */
    shp[0x123] = 0x41;
    assert_memory_equal(shp, orig, 4096);
    /* another single-step is not ours */
    assert_int_equal(vmt_bpm_handle_event(f.b, &step, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_NOT_OURS);
    /* an access to an unrelated page is not ours */
    ev = fx_mem(&f, 0x600000, 0x20000, VMT_ACCESS_W, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_NOT_OURS);
    assert_int_equal(resp.actions, VMT_RESP_CONTINUE);
    fx_free(&f);
}

/* Writes that cross into the next breakpointed frame, and a driver with
 * neither write data nor single-step: the shadow is rebuilt at the vCPU's
 * next event. */
static void test_write_edges(void **state)
{
    (void)state;
    fx f;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.caps_remove = VMT_CAP_SINGLESTEP;
    fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 1);
    fx_fill(&f, 0x11, 2);
    vmt_bpm_bp a = fx_bp(&f, 0x400ffe, FX_ROOT_A, 1, 1, false);
    vmt_bpm_bp c = fx_bp(&f, 0x401001, FX_ROOT_A, 1, 2, false);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &a, 0x10ffe, NULL), VMT_OK);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &c, 0x11001, NULL), VMT_OK);
    vmt_access acc;
    vmt_gfn sh0, sh1;
    fx_view_state(&f, 0x10, &acc, &sh0);
    fx_view_state(&f, 0x11, &acc, &sh1);
    vmt_event ev = fx_mem(&f, 0x400ffc, 0x10ffc, VMT_ACCESS_W, FX_ROOT_A);
    ev.u.mem.has_data = true;
    ev.u.mem.size = 8;
    ev.u.mem.value = 0x8877665544332211ULL; /* 0x10ffc..0x10fff, 0x11000..0x11003 */
    vmt_response resp;
    vmt_bpm_verdict vd;
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    CK(&f);
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0xffc), 0x11);
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0xffe), 0xCC); /* site kept */
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0xfff), 0x44);
    assert_int_equal(fx_byte(&f, (sh1 << 12) + 0x000), 0x55);
    assert_int_equal(fx_byte(&f, (sh1 << 12) + 0x001), 0xCC); /* site kept */
    assert_int_equal(fx_byte(&f, (sh1 << 12) + 0x002), 0x77);
    /* the sites now remember the written bytes: removing restores them */
    assert_int_equal(vmt_bpm_remove(f.b, &a), VMT_OK);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &a, 0x10ffe, NULL), VMT_OK); /* re-read from RAM */
    CK(&f);
    fx_free(&f);

    memset(&mc, 0, sizeof mc);
    mc.caps_remove = VMT_CAP_WRITE_DATA | VMT_CAP_SINGLESTEP;
    fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 1);
    vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 1, 1, false);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, PA1, NULL), VMT_OK);
    fx_view_state(&f, 0x10, &acc, &sh0);
    ev = fx_mem(&f, 0x400120, 0x10120, VMT_ACCESS_W, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    CK(&f);
    uint8_t w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    assert_int_equal(vmt_drv_write_phys(f.d, 0x10120, w, sizeof w), VMT_OK); /* the write lands */
    vmt_event hit = fx_int3(&f, VA1, PA1, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &hit, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIT);
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0x120), 1);
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0x123), 0xCC);
    assert_int_equal(fx_byte(&f, (sh0 << 12) + 0x127), 8);
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.refreshes, 1);
    CK(&f);
    fx_free(&f);
}

/* The guest's own traps in every encoding and every controller reach its
 * IDT (REINJECT), and no event the manager cannot attribute repeats: a
 * STALE answer (CONTINUE) never comes twice in a row at one rip. */
static void test_guest_traps(void **state)
{
    (void)state;
    static const vmt_bpm_controller ctls[] = { VMT_BPM_CTL_SHADOW, VMT_BPM_CTL_EXEC, VMT_BPM_CTL_DEBUG };
    for (size_t c = 0; c < sizeof ctls / sizeof ctls[0]; c++) {
        fx f;
        fx_init(&f, NULL, ctls[c]);
        fx_fill(&f, 0x10, 2);
        fx_fill(&f, 0x13, 9);
        /* CD 03 inside the hooked frame and in an unhooked one */
        const uint8_t int_3[2] = { 0xCD, 0x03 };
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10400, int_3, 2), VMT_OK);
        assert_int_equal(vmt_drv_write_phys(f.d, 0x13400, int_3, 2), VMT_OK);
        fx_map(&f, FX_ROOT_A, VA1, PA1);
        fx_map(&f, FX_ROOT_A, 0x400400, 0x10400);
        fx_map(&f, FX_ROOT_A, 0x777400, 0x13400);
        vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 4, 0xabc, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        vmt_response resp;
        vmt_bpm_verdict vd;
        vmt_bpm_bp hits[4];
        static const vmt_va vas[] = { 0x400400, 0x777400 };
        static const vmt_pa pas[] = { 0x10400, 0x13400 };
        for (int k = 0; k < 2; k++) {
            vmt_event ev = fx_int3(&f, vas[k], pas[k], FX_ROOT_A);
            ev.u.bp.insn_len = 2;
            for (int again = 0; again < 3; again++) {
                assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
                assert_int_equal(vd.disposition, VMT_BPM_FOREIGN);
                assert_int_equal(resp.actions, VMT_RESP_REINJECT);
            }
        }
        if (ctls[c] != VMT_BPM_CTL_SHADOW) {
            /* no INT3 of ours exists: any breakpoint event is the guest's
             * (e.g. a byte the driver reports that is no INT3 in memory) */
            vmt_event ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_FOREIGN);
            assert_int_equal(resp.actions, VMT_RESP_REINJECT);
        } else {
            /* an INT3 event at a byte that is no trap: stale once ... */
            vmt_event ev = fx_int3(&f, 0x777480, 0x13480, FX_ROOT_A);
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_STALE);
            assert_int_equal(resp.actions, VMT_RESP_CONTINUE);
            /* ... but the same event again right after is the guest's own */
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_FOREIGN);
            assert_int_equal(resp.actions, VMT_RESP_REINJECT);
            /* another event of the vCPU in between: stale again (a
             * breakpoint removed since is possible again) */
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_STALE);
            vmt_event other = fx_mem(&f, 0x777000, 0x13000, VMT_ACCESS_R, FX_ROOT_A);
            assert_int_equal(vmt_bpm_handle_event(f.b, &other, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_STALE);
            /* another vCPU's stale event does not count as this one's repeat */
            vmt_event ev1 = ev;
            ev1.vcpu = 1;
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev1, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_STALE);
            /* a CD 03 whose second byte is in the next page is not read past the page */
            ev = fx_int3(&f, 0x777fff, 0x13fff, FX_ROOT_A);
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_STALE);
        }
        CK(&f);
        fx_free(&f);
    }
}

/* A hooked frame executed through a second virtual address (same root):
 * the breakpoint at that frame and offset is reported with the alias flag,
 * in the shadow and the execute controller; another offset of the frame is
 * not a hit. */
static void test_alias_hits(void **state)
{
    (void)state;
    static const vmt_bpm_controller ctls[] = { VMT_BPM_CTL_SHADOW, VMT_BPM_CTL_EXEC };
    for (size_t c = 0; c < 2; c++) {
        fx f;
        fx_init(&f, NULL, ctls[c]);
        fx_fill(&f, 0x10, 2);
        fx_map(&f, FX_ROOT_A, VA1, PA1);
        fx_map(&f, FX_ROOT_A, 0x900123, PA1); /* the alias: another page, same frame */
        vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 4, 0xabc, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        vmt_response resp;
        vmt_bpm_verdict vd;
        vmt_bpm_bp hits[4];
        vmt_event ev = ctls[c] == VMT_BPM_CTL_SHADOW ? fx_int3(&f, 0x900123, PA1, FX_ROOT_A)
                                                      : fx_mem(&f, 0x900123, PA1, VMT_ACCESS_X, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_true(vd.alias);
        assert_int_equal(vd.nhits, 1);
        assert_int_equal(hits[0].tag, 0xabc);
        assert_int_equal(hits[0].key, 4);
        assert_int_equal(hits[0].ctx.va, VA1);
        assert_true(vmt_bpm_contains_event(f.b, &ev));
        assert_true(resp.actions == VMT_RESP_EMULATE || resp.actions == VMT_RESP_FAST_STEP);
        /* the real address: a plain hit */
        ev = ctls[c] == VMT_BPM_CTL_SHADOW ? fx_int3(&f, VA1, PA1, FX_ROOT_A)
                                            : fx_mem(&f, VA1, PA1, VMT_ACCESS_X, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_false(vd.alias);
        if (ctls[c] == VMT_BPM_CTL_EXEC) {
            /* another instruction of the frame through the alias: stepped, no hit */
            ev = fx_mem(&f, 0x900200, 0x10200, VMT_ACCESS_X, FX_ROOT_A);
            assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
            assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
        }
        /* removed: the alias is nothing any more */
        assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
        ev = ctls[c] == VMT_BPM_CTL_SHADOW ? fx_int3(&f, 0x900123, PA1, FX_ROOT_A)
                                            : fx_mem(&f, 0x900123, PA1, VMT_ACCESS_X, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_true(vd.disposition != VMT_BPM_HIT);
        CK(&f);
        fx_free(&f);
    }
}

/* The displaced instruction of a hit (and an instruction that reads a
 * hidden page) runs in view 0, where its stores do not trap: one that
 * stores into a shadowed frame must leave the shadow rebuilt before the
 * breakpoint view runs it. With execute traps: EMULATE as usual, the frame
 * loses execute, its first execution rebuilds it (REFRESHED). Without
 * them: stepped, rebuilt at the SINGLESTEP. Other instructions keep the
 * one-exit EMULATE. */
static void play_step_or_exec(fx *f, bool exec_traps, vmt_gfn gfn, vmt_va exec_va)
{
    vmt_response resp;
    vmt_bpm_verdict vd;
    vmt_event ev;
    if (exec_traps) {
        vmt_access acc;
        vmt_gfn backing;
        fx_view_state(f, gfn, &acc, &backing);
        assert_int_equal(acc, VMT_ACCESS_NONE); /* the breakpoint view cannot run it now */
        ev = fx_mem(f, exec_va, (gfn << 12) | (exec_va & 0xfff), VMT_ACCESS_X, FX_ROOT_A);
    } else {
        memset(&ev, 0, sizeof ev);
        ev.kind = VMT_EVENT_SINGLESTEP;
    }
    assert_int_equal(vmt_bpm_handle_event(f->b, &ev, &resp, NULL, 0, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_REFRESHED);
    if (exec_traps) {
        assert_int_equal(resp.actions, VMT_RESP_CONTINUE);
        vmt_access acc;
        vmt_gfn backing;
        fx_view_state(f, gfn, &acc, &backing);
        assert_int_equal(acc, VMT_ACCESS_X); /* execute-only again */
    } else {
        assert_int_equal(resp.actions, VMT_RESP_SWITCH_VIEW);
        assert_int_equal(resp.new_view, f->view);
    }
}

static void test_displaced_stores(void **state)
{
    (void)state;
    for (int exec_traps = 1; exec_traps >= 0; exec_traps--) {
        fx f;
        vmt_mem_config mc;
        memset(&mc, 0, sizeof mc);
        if (!exec_traps)
            mc.trap_access = VMT_ACCESS_RW;
        fx_init(&f, &mc, VMT_BPM_CTL_SHADOW);
        const uint32_t want_displaced = exec_traps ? VMT_RESP_EMULATE : (VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP);
        fx_fill(&f, 0x10, 2);
        fx_fill(&f, 0x11, 5);
        fx_fill(&f, 0x13, 7);
        /* at VA1: mov [rip+0xd7], eax -> 0x400129 + 0xd7 = 0x400200, its own page */
        static const uint8_t self_store[6] = { 0x89, 0x05, 0xd7, 0x00, 0x00, 0x00 };
        assert_int_equal(vmt_drv_write_phys(f.d, PA1, self_store, sizeof self_store), VMT_OK);
        /* at 0x400300: mov [rbx], eax; at 0x400310: push rbp; at 0x400320: rep movsb */
        static const uint8_t store_rbx[2] = { 0x89, 0x03 }, push_rbp[1] = { 0x55 }, rep_movsb[2] = { 0xf3, 0xa4 };
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10300, store_rbx, 2), VMT_OK);
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10310, push_rbp, 1), VMT_OK);
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10320, rep_movsb, 2), VMT_OK);
        fx_map(&f, FX_ROOT_A, 0x400000, 0x10000);
        fx_map(&f, FX_ROOT_A, 0x401000, 0x11000); /* a second hooked frame */
        fx_map(&f, FX_ROOT_A, 0x777000, 0x13000); /* plain data */
        vmt_bpm_bp bp = fx_bp(&f, VA1, FX_ROOT_A, 4, 1, false);
        vmt_bpm_bp bp2 = fx_bp(&f, 0x401010, FX_ROOT_A, 4, 2, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp, NULL), VMT_OK);
        assert_int_equal(vmt_bpm_insert(f.b, &bp2, NULL), VMT_OK);
        vmt_access acc;
        vmt_gfn sh;
        fx_view_state(&f, 0x10, &acc, &sh);
        vmt_response resp;
        vmt_bpm_verdict vd;
        vmt_bpm_bp hits[4];

        /* the hit: its displaced instruction stores into its own page */
        vmt_event ev = fx_int3(&f, VA1, PA1, FX_ROOT_A);
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIT);
        assert_int_equal(vd.nhits, 1);
        assert_int_equal(resp.actions, want_displaced);
        CK(&f);
        /* the CPU performs it in view 0 (the test plays it), then the step
         * or the next execution in the page */
        const uint32_t stored = 0xdeadbeef;
        assert_int_equal(vmt_drv_write_phys(f.d, 0x10200, &stored, 4), VMT_OK);
        play_step_or_exec(&f, exec_traps, 0x10, 0x400129);
        uint8_t shp[4096], orig[4096];
        fx_page(&f, sh, shp);
        fx_page(&f, 0x10, orig);
        assert_int_equal(shp[0x123], 0xCC); /* the breakpoint stays */
        shp[0x123] = orig[0x123];
        assert_memory_equal(shp, orig, 4096); /* and the new bytes are what executes */
        vmt_bpm_stats st;
        vmt_bpm_get_stats(f.b, &st);
        assert_int_equal(st.displaced_refreshes, 1);
        CK(&f);

        /* stores nowhere near a shadow: one exit as before */
        vmt_bpm_bp bp3 = fx_bp(&f, 0x400300, FX_ROOT_A, 4, 3, false);
        vmt_bpm_bp bp4 = fx_bp(&f, 0x400310, FX_ROOT_A, 4, 4, false);
        assert_int_equal(vmt_bpm_insert(f.b, &bp3, NULL), VMT_OK);
        assert_int_equal(vmt_bpm_insert(f.b, &bp4, NULL), VMT_OK);
        ev = fx_int3(&f, 0x400300, 0x10300, FX_ROOT_A);
        ev.regs.rbx = 0x777010;
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(resp.actions, VMT_RESP_EMULATE);
        ev = fx_int3(&f, 0x400310, 0x10310, FX_ROOT_A);
        ev.regs.rsp = 0x777800;
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(resp.actions, VMT_RESP_EMULATE);
        /* ... but a push onto a hooked page is guarded */
        ev.regs.rsp = 0x401808;
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(resp.actions, want_displaced);
        play_step_or_exec(&f, exec_traps, 0x11, 0x401010);

        /* a hidden read whose instruction copies into another hooked page */
        ev = fx_mem(&f, 0x400000, 0x10000, VMT_ACCESS_R, FX_ROOT_A);
        ev.regs.rip = 0x400320;
        ev.regs.rsi = 0x400000;
        ev.regs.rdi = 0x401f00;
        ev.regs.rcx = 0x200; /* crosses 0x402000: unmapped there, only 0x401000's frame */
        assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 4, &vd), VMT_OK);
        assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
        assert_int_equal(resp.actions, want_displaced);
        uint8_t copied[0x100];
        memset(copied, 0x99, sizeof copied);
        assert_int_equal(vmt_drv_write_phys(f.d, 0x11f00, copied, sizeof copied), VMT_OK);
        play_step_or_exec(&f, exec_traps, 0x11, 0x401010);
        vmt_gfn sh2;
        fx_view_state(&f, 0x11, &acc, &sh2);
        assert_int_equal(fx_byte(&f, (sh2 << 12) + 0xf80), 0x99);
        assert_int_equal(fx_byte(&f, (sh2 << 12) + 0x010), 0xCC);
        vmt_bpm_get_stats(f.b, &st);
        assert_int_equal(st.displaced_refreshes, 3);
        CK(&f);
        fx_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int3_events),
        cmocka_unit_test(test_hidden_reads_and_writes),
        cmocka_unit_test(test_write_edges),
        cmocka_unit_test(test_guest_traps),
        cmocka_unit_test(test_alias_hits),
        cmocka_unit_test(test_displaced_stores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
