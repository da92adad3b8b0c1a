/*
 * tests/bpm/test_bpm_ctl.c — controller choice from driver capabilities, the
 * execute-permission and debug-register controllers (their exact driver
 * calls and events), and what the guest sees in each view.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bpm_fixture.h"

#define CK(f) fx_check(f)

static vmt_status try_create(uint64_t caps_remove, vmt_bpm_controller want, vmt_bpm_controller *got, char *why,
                             size_t why_len)
{
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.caps_remove = caps_remove;
    vmt_driver *d;
    assert_int_equal(vmt_mem_driver_create(&mc, &d, why, why_len), VMT_OK);
    vmt_session *s;
    assert_int_equal(vmt_session_create(d, NULL, &s), VMT_OK);
    vmt_bpm *b = NULL;
    vmt_bpm_config cfg = { want, 0 };
    vmt_status st = vmt_bpm_create(s, &cfg, &b, why, why_len);
    if (!st) {
        *got = vmt_bpm_controller_of(b);
        vmt_bpm_destroy(b);
    } else {
        assert_null(b);
    }
    vmt_session_destroy(s);
    return st;
}

static void test_choose_from_capabilities(void **state)
{
    (void)state;
    char why[512];
    vmt_bpm_controller got;
    assert_int_equal(try_create(0, VMT_BPM_CTL_AUTO, &got, why, sizeof why), VMT_OK);
    assert_int_equal(got, VMT_BPM_CTL_SHADOW);
    /* no frames -> execute permission */
    assert_int_equal(try_create(VMT_CAP_FRAMES, VMT_BPM_CTL_AUTO, &got, why, sizeof why), VMT_OK);
    assert_int_equal(got, VMT_BPM_CTL_EXEC);
    /* no views -> debug registers */
    assert_int_equal(try_create(VMT_CAP_VIEWS, VMT_BPM_CTL_AUTO, &got, why, sizeof why), VMT_OK);
    assert_int_equal(got, VMT_BPM_CTL_DEBUG);
    /* nothing fits: NOTSUP naming what is missing */
    assert_int_equal(try_create(VMT_CAP_VIEWS | VMT_CAP_HW_BREAKPOINTS, VMT_BPM_CTL_AUTO, &got, why, sizeof why),
                     VMT_E_NOTSUP);
    assert_non_null(strstr(why, "no breakpoint controller"));
    assert_non_null(strstr(why, vmt_cap_name(VMT_CAP_HW_BREAKPOINTS)));
    /* forced controller without its capability */
    assert_int_equal(try_create(VMT_CAP_FRAMES, VMT_BPM_CTL_SHADOW, &got, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, vmt_cap_name(VMT_CAP_FRAMES)));
    assert_non_null(strstr(why, "shadow"));
    assert_int_equal(try_create(VMT_CAP_EMULATE | VMT_CAP_FAST_STEP, VMT_BPM_CTL_EXEC, &got, why, sizeof why),
                     VMT_E_NOTSUP);
    assert_non_null(strstr(why, "emulate or fast-step"));
    /* forced controllers that fit */
    assert_int_equal(try_create(0, VMT_BPM_CTL_DEBUG, &got, why, sizeof why), VMT_OK);
    assert_int_equal(got, VMT_BPM_CTL_DEBUG);
    assert_int_equal(try_create(0, VMT_BPM_CTL_EXEC, &got, why, sizeof why), VMT_OK);
    assert_int_equal(got, VMT_BPM_CTL_EXEC);
}

/* Shadow INT3 as the guest sees it: view 1 shows the INT3 only to
 * execution; reads in the breakpoint view trap (the handler serves them
 * from view 0, which is unaltered). */
static void test_shadow_guest_view(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    fx_fill(&f, 0x10, 0x20);
    vmt_bpm_bp bp = fx_bp(&f, 0x400010, FX_ROOT_A, 1, 1, false);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, 0x10010, NULL), VMT_OK);
    uint8_t v0, v1;
    assert_int_equal(vmt_mem_read_view(f.d, 0, 0x10010, &v0, 1), VMT_OK);
    assert_int_equal(vmt_mem_read_view(f.d, f.view, 0x10010, &v1, 1), VMT_OK);
    assert_int_equal(v0, (uint8_t)(0x20 + 0x10));
    assert_int_equal(v1, 0xCC);
    vmt_access acc;
    vmt_gfn backing;
    fx_view_state(&f, 0x10, &acc, &backing);
    assert_int_equal(acc & VMT_ACCESS_RW, 0); /* reads and writes trap there */
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
    assert_int_equal(vmt_mem_read_view(f.d, f.view, 0x10010, &v1, 1), VMT_OK);
    assert_int_equal(v1, v0);
    CK(&f);
    fx_free(&f);
}

static void test_exec_controller(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_EXEC);
    fx_fill(&f, 0x10, 1);
    uint8_t before[4096];
    fx_page(&f, 0x10, before);
    vmt_bpm_bp bp = fx_bp(&f, 0x400010, FX_ROOT_A, 3, 33, false);
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp, 0x10010, NULL), VMT_OK);
    CK(&f);
    /* exactly one call: the page loses execute in the view */
    assert_int_equal(vmt_mem_log_count(f.d), 1);
    const vmt_mem_call *c = vmt_mem_log_at(f.d, 0);
    assert_int_equal(c->op, VMT_MEM_OP_VIEW_SET_ACCESS);
    assert_int_equal(c->view, f.view);
    assert_int_equal(c->gfn, 0x10);
    assert_int_equal(c->access, VMT_ACCESS_RW);
    /* a second breakpoint on the page costs no call */
    vmt_bpm_bp bp2 = fx_bp(&f, 0x400020, FX_ROOT_A, 3, 34, false);
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bp2, 0x10020, NULL), VMT_OK);
    assert_int_equal(vmt_mem_log_count(f.d), 0);
    CK(&f);
    uint8_t now[4096];
    fx_page(&f, 0x10, now);
    assert_memory_equal(now, before, 4096); /* no code change */
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);

    vmt_response resp;
    vmt_bpm_verdict vd;
    vmt_bpm_bp hits[2];
    vmt_event ev = fx_mem(&f, 0x400010, 0x10010, VMT_ACCESS_X, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIT);
    assert_int_equal(vd.nhits, 1);
    assert_int_equal(hits[0].tag, 33);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    assert_int_equal(resp.emulate_view, 0);
    /* another instruction on the page: stepped through, no hit */
    ev = fx_mem(&f, 0x400011, 0x10011, VMT_ACCESS_X, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIDDEN);
    assert_int_equal(vd.nhits, 0);
    assert_int_equal(resp.actions, VMT_RESP_EMULATE);
    /* reads are not restricted: not ours; INT3s are the guest's */
    ev = fx_mem(&f, 0x400010, 0x10010, VMT_ACCESS_R, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_NOT_OURS);
    vmt_event i3 = fx_int3(&f, 0x400010, 0x10010, FX_ROOT_A);
    assert_int_equal(vmt_bpm_handle_event(f.b, &i3, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_FOREIGN); /* this controller plants none */
    assert_int_equal(resp.actions, VMT_RESP_REINJECT);

    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_remove(f.b, &bp), VMT_OK);
    assert_int_equal(vmt_mem_log_count(f.d), 0);
    assert_int_equal(vmt_bpm_remove(f.b, &bp2), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_mem_log_count(f.d), 1);
    assert_int_equal(vmt_mem_log_at(f.d, 0)->access, VMT_ACCESS_RWX);
    fx_free(&f);
}

static void test_debug_controller(void **state)
{
    (void)state;
    fx f;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.hw_breakpoints = 4;
    mc.vcpus = 2;
    fx_init(&f, &mc, VMT_BPM_CTL_DEBUG);
    fx_fill(&f, 0x10, 1);
    uint8_t before[4096];
    fx_page(&f, 0x10, before);
    vmt_bpm_bp bps[5];
    for (unsigned i = 0; i < 4; i++) {
        bps[i] = fx_bp(&f, 0x400010 + i, FX_ROOT_A, 1, 100 + i, false);
        vmt_mem_log_clear(f.d);
        assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[i], 0x10010 + i, NULL), VMT_OK);
        CK(&f);
        assert_int_equal(vmt_mem_log_count(f.d), 1);
        const vmt_mem_call *c = vmt_mem_log_at(f.d, 0);
        assert_int_equal(c->op, VMT_MEM_OP_HW_BREAKPOINT);
        assert_int_equal(c->addr, 0x400010 + i);
        assert_int_equal(c->enable, 1);
        for (vmt_vcpu v = 0; v < 2; v++) {
            vmt_va va;
            bool en;
            assert_int_equal(vmt_mem_hw_breakpoint_get(f.d, v, c->index, &va, &en), VMT_OK);
            assert_true(en);
            assert_int_equal(va, 0x400010 + i);
        }
    }
    /* same va, another root: shares the register */
    vmt_bpm_bp shared = fx_bp(&f, 0x400010, FX_ROOT_B, 1, 200, false);
    vmt_mem_log_clear(f.d);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &shared, 0x10010, NULL), VMT_OK);
    assert_int_equal(vmt_mem_log_count(f.d), 0);
    /* a fifth va: clear error, nothing changed */
    uint64_t dg = vmt_bpm_digest(f.b);
    bps[4] = fx_bp(&f, 0x400050, FX_ROOT_A, 1, 104, false);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[4], 0x10050, NULL), VMT_E_RANGE);
    assert_non_null(strstr(vmt_bpm_error(f.b), "debug registers are in use"));
    assert_int_equal(vmt_bpm_digest(f.b), dg);
    CK(&f);
    /* invisible to memory */
    uint8_t now[4096];
    fx_page(&f, 0x10, now);
    assert_memory_equal(now, before, 4096);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);

    /* the event: hits of that va and root */
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_HW_BREAKPOINT;
    ev.view = f.view;
    ev.regs.cr3 = FX_ROOT_B;
    ev.regs.rip = 0x400010;
    for (unsigned i = 0; i < 4; i++) {
        vmt_va va;
        bool en;
        assert_int_equal(vmt_mem_hw_breakpoint_get(f.d, 0, i, &va, &en), VMT_OK);
        if (va == 0x400010)
            ev.u.hwbp.index = (uint8_t)i;
    }
    ev.u.hwbp.address = 0x400010;
    vmt_response resp;
    vmt_bpm_verdict vd;
    vmt_bpm_bp hits[2];
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_HIT);
    assert_int_equal(vd.nhits, 1);
    assert_int_equal(hits[0].tag, 200);
    assert_int_equal(resp.actions, VMT_RESP_CONTINUE);
    ev.u.hwbp.index = 7;
    assert_int_equal(vmt_bpm_handle_event(f.b, &ev, &resp, hits, 2, &vd), VMT_OK);
    assert_int_equal(vd.disposition, VMT_BPM_NOT_OURS);

    /* removing frees a register for the fifth */
    assert_int_equal(vmt_bpm_remove(f.b, &bps[1]), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_insert_pa(f.b, &bps[4], 0x10050, NULL), VMT_OK);
    CK(&f);
    assert_int_equal(vmt_bpm_remove(f.b, &bps[0]), VMT_OK); /* register still used by `shared` */
    CK(&f);
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.sites, 4);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose_from_capabilities),
        cmocka_unit_test(test_shadow_guest_view),
        cmocka_unit_test(test_exec_controller),
        cmocka_unit_test(test_debug_controller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
