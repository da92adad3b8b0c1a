/*
 * tests/bpm/test_bpm_fail.c — failure injection: for every operation, the
 * mem driver fails its 1st, 2nd, 3rd, ... call in turn until the operation
 * succeeds. Each failed attempt must leave the manager's maps (digest),
 * the invariants (check), the session's arbiter and what the guest sees in
 * every view exactly as they were; shadow frames must not leak (ASan run and
 * frames_in_use). The successful attempt must have been preceded by a
 * failure of every driver call it makes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bpm_fixture.h"

#define NGFN 4 /* frames 0x10..0x13 are the ones the scenarios touch */

typedef struct snap {
    uint64_t digest;
    uint64_t frames_in_use;
    uint8_t view_bytes[2][NGFN][4096]; /* view 0 and the breakpoint view */
    vmt_access eff[NGFN];
    vmt_va hw_va[4];
    bool hw_en[4];
} snap;

static void take(fx *f, snap *s)
{
    memset(s, 0, sizeof *s);
    s->digest = vmt_bpm_digest(f->b);
    s->frames_in_use = vmt_mem_frames_in_use(f->d);
    for (unsigned g = 0; g < NGFN; g++) {
        vmt_pa pa = (0x10ULL + g) << 12;
        assert_int_equal(vmt_mem_read_view(f->d, 0, pa, s->view_bytes[0][g], 4096), VMT_OK);
        if (f->view)
            assert_int_equal(vmt_mem_read_view(f->d, f->view, pa, s->view_bytes[1][g], 4096), VMT_OK);
        s->eff[g] = vmt_session_effective_access(f->s, f->view, 0x10 + g);
    }
    for (unsigned i = 0; i < vmt_driver_caps(f->d)->hw_breakpoints && i < 4; i++)
        assert_int_equal(vmt_mem_hw_breakpoint_get(f->d, 0, i, &s->hw_va[i], &s->hw_en[i]), VMT_OK);
}

static void same(const snap *a, const snap *b, const char *what, uint64_t n)
{
    if (a->digest != b->digest)
        fail_msg("%s: failing call %llu changed the manager's maps", what, (unsigned long long)n);
    if (a->frames_in_use != b->frames_in_use)
        fail_msg("%s: failing call %llu leaked or lost a shadow frame (%llu -> %llu)", what, (unsigned long long)n,
                 (unsigned long long)a->frames_in_use, (unsigned long long)b->frames_in_use);
    if (memcmp(a->view_bytes, b->view_bytes, sizeof a->view_bytes))
        fail_msg("%s: failing call %llu changed guest-visible memory", what, (unsigned long long)n);
    if (memcmp(a->eff, b->eff, sizeof a->eff))
        fail_msg("%s: failing call %llu changed access rights", what, (unsigned long long)n);
    if (memcmp(a->hw_va, b->hw_va, sizeof a->hw_va) || memcmp(a->hw_en, b->hw_en, sizeof a->hw_en))
        fail_msg("%s: failing call %llu changed the debug registers", what, (unsigned long long)n);
}

typedef struct scenario {
    const char *name;
    vmt_bpm_controller ctl;
    uint64_t caps_remove;
    void (*setup)(fx *f);
    vmt_status (*op)(fx *f);
} scenario;

static void run(const scenario *sc)
{
    fx f;
    vmt_mem_config mc;
    memset(&mc, 0, sizeof mc);
    mc.caps_remove = sc->caps_remove;
    fx_init(&f, &mc, sc->ctl);
    for (unsigned g = 0; g < NGFN; g++)
        fx_fill(&f, 0x10 + g, (uint8_t)(g * 16));
    sc->setup(&f);
    fx_check(&f);
    snap before, after;
    take(&f, &before);
    uint64_t n;
    vmt_status st = VMT_E_INJECTED;
    for (n = 1; n < 100; n++) {
        uint64_t injected = vmt_mem_injected(f.d);
        vmt_mem_fail_nth(f.d, VMT_MEM_OP_ANY, n);
        st = sc->op(&f);
        vmt_mem_fail_clear(f.d);
        fx_check(&f);
        if (vmt_session_check(f.s))
            fail_msg("%s: session check after failing call %llu: %s", sc->name, (unsigned long long)n,
                     vmt_session_error(f.s));
        if (vmt_mem_injected(f.d) == injected) {
            /* the n-th call never came: the operation ran to the end */
            assert_int_equal(st, VMT_OK);
            break;
        }
        if (st == VMT_OK) {
            /* a failure the operation tolerates (none of ours does) */
            fail_msg("%s: call %llu failed but the operation reported success", sc->name, (unsigned long long)n);
        }
        assert_true(strlen(vmt_bpm_error(f.b)) > 0);
        take(&f, &after);
        same(&before, &after, sc->name, n);
    }
    assert_true(n > 1); /* it makes at least one driver call */
    print_message("  %-34s %2llu injected failures (call 1, 2, ...), state unchanged after each\n", sc->name,
                  (unsigned long long)(n - 1));
    fx_free(&f); /* destroy frees what is left: no leak */
}

/* ---- scenarios ---- */

#define VA 0x400123ULL
#define PA 0x10123ULL

static vmt_bpm_bp bp_at(fx *f, vmt_va va, uint32_t key) { return fx_bp(f, va, FX_ROOT_A, key, key * 10, false); }

static void setup_mapped(fx *f)
{
    fx_map(f, FX_ROOT_A, VA, PA);
    fx_map(f, FX_ROOT_A, 0x400456, 0x10456);
    fx_map(f, FX_ROOT_A, 0x401010, 0x11010);
}
static void setup_one(fx *f)
{
    setup_mapped(f);
    vmt_bpm_bp bp = bp_at(f, VA, 1);
    assert_int_equal(vmt_bpm_insert(f->b, &bp, NULL), VMT_OK);
}
static void setup_two_sites(fx *f)
{
    setup_one(f);
    vmt_bpm_bp bp = bp_at(f, 0x400456, 2);
    assert_int_equal(vmt_bpm_insert(f->b, &bp, NULL), VMT_OK);
}
static void setup_view(fx *f)
{
    setup_two_sites(f);
    vmt_bpm_bp bp = bp_at(f, 0x401010, 3);
    assert_int_equal(vmt_bpm_insert(f->b, &bp, NULL), VMT_OK);
    bp.key = 4;
    assert_int_equal(vmt_bpm_insert(f->b, &bp, NULL), VMT_OK);
}
static void setup_pending(fx *f)
{
    vmt_bpm_bp bp = bp_at(f, VA, 1);
    assert_int_equal(vmt_bpm_insert(f->b, &bp, NULL), VMT_OK);
}
static void setup_nodata_write(fx *f)
{
    setup_one(f);
    vmt_event ev = fx_mem(f, 0x400100, 0x10100, VMT_ACCESS_W, FX_ROOT_A);
    vmt_response r;
    vmt_bpm_verdict vd;
    assert_int_equal(vmt_bpm_handle_event(f->b, &ev, &r, NULL, 0, &vd), VMT_OK);
    assert_int_equal(r.actions, VMT_RESP_SWITCH_VIEW | VMT_RESP_STEP);
    uint8_t code[16];
    memset(code, 0x42, sizeof code);
    assert_int_equal(vmt_drv_write_phys(f->d, 0x10118, code, sizeof code), VMT_OK); /* covers the site */
}

static vmt_status op_insert_new_frame(fx *f)
{
    vmt_bpm_bp bp = bp_at(f, VA, 1);
    return vmt_bpm_insert(f->b, &bp, NULL);
}
static vmt_status op_insert_site(fx *f)
{
    vmt_bpm_bp bp = bp_at(f, 0x400456, 2);
    return vmt_bpm_insert(f->b, &bp, NULL);
}
static vmt_status op_remove_site(fx *f)
{
    vmt_bpm_bp bp = bp_at(f, 0x400456, 2);
    return vmt_bpm_remove(f->b, &bp);
}
static vmt_status op_remove_last(fx *f)
{
    vmt_bpm_bp bp = bp_at(f, VA, 1);
    return vmt_bpm_remove(f->b, &bp);
}
static vmt_status op_remove_by_event(fx *f)
{
    vmt_event ev = fx_int3(f, VA, PA, FX_ROOT_A);
    size_t n;
    vmt_status st = vmt_bpm_remove_by_event(f->b, &ev, VMT_BPM_KEY_ANY, &n);
    if (!st)
        assert_int_equal(n, 1);
    return st;
}
static vmt_status op_remove_view(fx *f)
{
    size_t n;
    vmt_status st = vmt_bpm_remove_view(f->b, f->view, &n);
    if (!st)
        assert_int_equal(n, 4);
    return st;
}
static vmt_status ptm(fx *f, vmt_ptm_event_kind kind, vmt_pa old_pa, vmt_pa new_pa)
{
    vmt_ptm_event pe;
    memset(&pe, 0, sizeof pe);
    pe.kind = kind;
    pe.ctx = vmt_addr_ctx_make(VA, FX_ROOT_A);
    pe.view = f->view;
    pe.old_pa = old_pa;
    pe.new_pa = new_pa;
    pe.page_size = 4096;
    size_t changed = 0;
    vmt_status st = vmt_bpm_handle_ptm_event(f->b, &pe, &changed);
    if (!st)
        assert_int_equal(changed, 1);
    return st;
}
static vmt_status op_page_in(fx *f) { return ptm(f, VMT_PTM_PAGE_IN, 0, PA); }
static vmt_status op_page_out(fx *f) { return ptm(f, VMT_PTM_PAGE_OUT, PA, 0); }
static vmt_status op_remap(fx *f) { return ptm(f, VMT_PTM_REMAP, PA, 0x12123); }
/* Hand `ev` to the manager; when that succeeds, its verdict is `want`. */
static vmt_status handle_as(fx *f, const vmt_event *ev, vmt_bpm_disposition want, vmt_response *r)
{
    vmt_bpm_verdict vd;
    vmt_status st = vmt_bpm_handle_event(f->b, ev, r, NULL, 0, &vd);
    if (!st)
        assert_int_equal(vd.disposition, want);
    return st;
}
static vmt_status op_write_data(fx *f)
{
    vmt_event ev = fx_mem(f, 0x400122, 0x10122, VMT_ACCESS_W, FX_ROOT_A);
    ev.u.mem.has_data = true;
    ev.u.mem.size = 4;
    ev.u.mem.value = 0x11cc2233;
    vmt_response r;
    vmt_status st = handle_as(f, &ev, VMT_BPM_HIDDEN, &r);
    if (st)
        assert_int_equal(r.actions, VMT_RESP_CONTINUE);
    return st;
}
static vmt_status op_refresh(fx *f)
{
    vmt_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = VMT_EVENT_SINGLESTEP;
    vmt_response r;
    return handle_as(f, &ev, VMT_BPM_REFRESHED, &r);
}
static void setup_foreign(fx *f)
{
    setup_one(f);
    uint8_t cc = 0xCC;
    assert_int_equal(vmt_drv_write_phys(f->d, 0x13300, &cc, 1), VMT_OK);
}
static vmt_status op_foreign_check(fx *f)
{
    vmt_event ev = fx_int3(f, 0x777300, 0x13300, FX_ROOT_A);
    vmt_response r;
    return handle_as(f, &ev, VMT_BPM_FOREIGN, &r);
}

static void test_fail_each_call(void **state)
{
    (void)state;
    static const scenario scs[] = {
        { "shadow insert (new frame)", VMT_BPM_CTL_SHADOW, 0, setup_mapped, op_insert_new_frame },
        { "shadow insert (second site)", VMT_BPM_CTL_SHADOW, 0, setup_one, op_insert_site },
        { "shadow remove (one site)", VMT_BPM_CTL_SHADOW, 0, setup_two_sites, op_remove_site },
        { "shadow remove (last of frame)", VMT_BPM_CTL_SHADOW, 0, setup_one, op_remove_last },
        { "shadow remove by event", VMT_BPM_CTL_SHADOW, 0, setup_one, op_remove_by_event },
        { "shadow remove view", VMT_BPM_CTL_SHADOW, 0, setup_view, op_remove_view },
        { "shadow page-in", VMT_BPM_CTL_SHADOW, 0, setup_pending, op_page_in },
        { "shadow page-out", VMT_BPM_CTL_SHADOW, 0, setup_one, op_page_out },
        { "shadow remap", VMT_BPM_CTL_SHADOW, 0, setup_one, op_remap },
        { "shadow write with data", VMT_BPM_CTL_SHADOW, VMT_CAP_SINGLESTEP, setup_one, op_write_data },
        { "shadow refresh after step", VMT_BPM_CTL_SHADOW, VMT_CAP_WRITE_DATA, setup_nodata_write, op_refresh },
        { "foreign INT3 check", VMT_BPM_CTL_SHADOW, 0, setup_foreign, op_foreign_check },
        { "exec insert", VMT_BPM_CTL_EXEC, 0, setup_mapped, op_insert_new_frame },
        { "exec remove", VMT_BPM_CTL_EXEC, 0, setup_one, op_remove_last },
        { "exec remap", VMT_BPM_CTL_EXEC, 0, setup_one, op_remap },
        { "debug insert", VMT_BPM_CTL_DEBUG, 0, setup_mapped, op_insert_new_frame },
        { "debug remove", VMT_BPM_CTL_DEBUG, 0, setup_one, op_remove_last },
    };
    for (size_t i = 0; i < sizeof scs / sizeof scs[0]; i++)
        run(&scs[i]);
}

/* clear is best effort: it goes on after a failure, stays consistent, and
 * a retry finishes the job. */
static void test_clear_after_failures(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    setup_view(&f);
    vmt_mem_fail_always(f.d, VMT_MEM_OP_FRAME_FREE, true);
    assert_int_equal(vmt_bpm_clear(f.b), VMT_E_INJECTED);
    fx_check(&f);
    vmt_bpm_stats st;
    vmt_bpm_get_stats(f.b, &st);
    assert_true(st.frames > 0);
    vmt_mem_fail_clear(f.d);
    assert_int_equal(vmt_bpm_clear(f.b), VMT_OK);
    fx_check(&f);
    vmt_bpm_get_stats(f.b, &st);
    assert_int_equal(st.breakpoints, 0);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 0);
    fx_free(&f);
}

/* Destroy after failures still frees every shadow frame. */
static void test_destroy_frees_everything(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, NULL, VMT_BPM_CTL_SHADOW);
    setup_view(&f);
    assert_int_equal(vmt_mem_frames_in_use(f.d), 2);
    fx_free(&f); /* asserts frames_in_use == 0 and mem_check */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_each_call),
        cmocka_unit_test(test_clear_after_failures),
        cmocka_unit_test(test_destroy_frees_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
