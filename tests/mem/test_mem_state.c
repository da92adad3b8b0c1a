/*
 * tests/mem/test_mem_state.c — the mem driver's state semantics: views
 * (normalisation, remap resets rights, destroy in use, VM-wide mode),
 * extra frames (exhaustion, reuse, zeroing, busy while backing), capability
 * removal, trap-access limits, no-op mode, and an invariant checker that
 * really detects corruption. vmt_mem_check runs after every operation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mem_expect.h"

#include "drivers/mem/mem_internal.h"
#include "vmtrap/driver.h"
#include "vmtrap/mem.h"

static size_t entries(vmt_driver *d, vmt_view v) { return vmt_hmap_count(&mem_of(d)->views[v].entries); }

static void test_views_stay_normalised(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 32, .extra_frames = 4, .max_views = 3 };
    vmt_driver *d = mem_make(&cfg);
    vmt_view v;
    vmt_gfn f;
    vmt_access a;
    vmt_gfn b;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RX, &v));
    OK(d, vmt_drv_frame_alloc(d, &f));
    OK(d, vmt_drv_view_set_access(d, v, 2, VMT_ACCESS_R));
    OK(d, vmt_drv_view_remap(d, v, 2, f)); /* resets rights to RX */
    OK(d, vmt_drv_view_get_access(d, v, 2, &a, &b));
    assert_int_equal(a, VMT_ACCESS_RX);
    assert_int_equal(b, f);
    EXPECT(d, VMT_E_BUSY, vmt_drv_frame_free(d, f)); /* still backing gfn 2 */
    OK(d, vmt_drv_view_set_access(d, v, 2, VMT_ACCESS_X));
    OK(d, vmt_drv_view_remap(d, v, 2, 2)); /* back to (gfn, default): no entry left */
    assert_int_equal(entries(d, v), 0);
    OK(d, vmt_drv_frame_free(d, f));
    OK(d, vmt_drv_view_set_access(d, v, 3, VMT_ACCESS_R));
    assert_int_equal(entries(d, v), 1);
    OK(d, vmt_drv_view_set_access(d, v, 3, VMT_ACCESS_RX));
    assert_int_equal(entries(d, v), 0);
    /* Errors name the problem. */
    EXPECT(d, VMT_E_NOTFOUND, vmt_drv_view_remap(d, v, 2, 32)); /* an extra gfn never handed out */
    assert_non_null(strstr(vmt_driver_error(d), "not an allocated frame"));
    EXPECT(d, VMT_E_RANGE, vmt_drv_view_remap(d, v, 2, 32 + 4));
    EXPECT(d, VMT_E_INVAL, vmt_drv_view_remap(d, 0, 2, 3));
    EXPECT(d, VMT_E_INVAL, vmt_drv_view_set_access(d, 0, 2, VMT_ACCESS_R));
    EXPECT(d, VMT_E_INVAL, vmt_drv_view_set_access(d, v, 2, 0x8));
    EXPECT(d, VMT_E_INVAL, vmt_drv_view_create(d, 0x9, &v));
    vmt_driver_destroy(d);
}

static void test_destroy_view_in_use_and_release_frames(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 32, .extra_frames = 4, .max_views = 3, .vcpus = 3 };
    vmt_driver *d = mem_make(&cfg);
    vmt_view v, w;
    vmt_gfn f;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &w));
    EXPECT(d, VMT_E_RANGE, vmt_drv_view_create(d, VMT_ACCESS_RWX, &w)); /* max_views 3 incl. view 0 */
    OK(d, vmt_drv_frame_alloc(d, &f));
    OK(d, vmt_drv_view_remap(d, v, 1, f));
    OK(d, vmt_drv_view_remap(d, v, 2, f)); /* one frame backing two gfns */
    OK(d, vmt_drv_view_switch(d, 2, v));
    EXPECT(d, VMT_E_BUSY, vmt_drv_view_destroy(d, v));
    assert_non_null(strstr(vmt_driver_error(d), "vCPU 2"));
    OK(d, vmt_drv_view_switch(d, 2, w));
    OK(d, vmt_drv_view_destroy(d, v)); /* drops both references */
    OK(d, vmt_drv_frame_free(d, f));
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    assert_int_equal(v, 1); /* lowest free id */
    vmt_access a;
    vmt_gfn b;
    OK(d, vmt_drv_view_get_access(d, v, 1, &a, &b)); /* a fresh view, no old state */
    assert_int_equal(b, 1);
    vmt_driver_destroy(d);
}

static void test_frames_exhaust_reuse_zero(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 8, .extra_frames = 3 };
    vmt_driver *d = mem_make(&cfg);
    vmt_gfn f[3], g;
    for (int i = 0; i < 3; i++) {
        OK(d, vmt_drv_frame_alloc(d, &f[i]));
        assert_int_equal(f[i], 8 + i);
    }
    EXPECT(d, VMT_E_NOMEM, vmt_drv_frame_alloc(d, &g));
    assert_int_equal(vmt_mem_frames_in_use(d), 3);
    uint8_t pat[16], back[16];
    memset(pat, 0x77, sizeof pat);
    OK(d, vmt_drv_write_phys(d, vmt_gfn_to_pa(f[1]) + 4090, pat, sizeof pat)); /* crosses into f[2] */
    OK(d, vmt_drv_read_phys(d, vmt_gfn_to_pa(f[1]) + 4090, back, sizeof back));
    assert_memory_equal(pat, back, sizeof pat);
    OK(d, vmt_drv_frame_free(d, f[1]));
    EXPECT(d, VMT_E_RANGE, vmt_drv_read_phys(d, vmt_gfn_to_pa(f[1]), back, 1)); /* freed: not readable */
    EXPECT(d, VMT_E_RANGE, vmt_drv_read_phys(d, vmt_gfn_to_pa(f[0]) + 4095, back, 2)); /* runs into it */
    EXPECT(d, VMT_E_NOTFOUND, vmt_drv_frame_free(d, f[1]));
    EXPECT(d, VMT_E_INVAL, vmt_drv_frame_free(d, 7));
    OK(d, vmt_drv_frame_alloc(d, &g));
    assert_int_equal(g, f[1]); /* reused */
    OK(d, vmt_drv_read_phys(d, vmt_gfn_to_pa(g) + 4090, back, 6));
    uint8_t zero[6] = { 0 };
    assert_memory_equal(back, zero, 6); /* handed out zeroed */
    vmt_driver_destroy(d); /* frees allocated frames (ASan: no leak) */
}

/* Each removable capability: not declared, refused by the wrapper without
 * reaching the driver (nothing logged), dependents removed with it. */
static void test_caps_remove_is_honest(void **state)
{
    (void)state;
    static const struct {
        uint64_t remove, also_gone;
        vmt_mem_op op;
    } cases[] = {
        { VMT_CAP_READ_PHYS, 0, VMT_MEM_OP_READ_PHYS },
        { VMT_CAP_WRITE_PHYS, 0, VMT_MEM_OP_WRITE_PHYS },
        { VMT_CAP_REGS_GET, 0, VMT_MEM_OP_GET_REGS },
        { VMT_CAP_REGS_SET, 0, VMT_MEM_OP_SET_REGS },
        { VMT_CAP_PAUSE, 0, VMT_MEM_OP_PAUSE },
        { VMT_CAP_VIEWS, VMT_CAP_VIEW_REMAP | VMT_CAP_VIEW_PERM | VMT_CAP_VIEW_PER_VCPU, VMT_MEM_OP_VIEW_CREATE },
        { VMT_CAP_VIEW_REMAP, 0, VMT_MEM_OP_VIEW_REMAP },
        { VMT_CAP_VIEW_PERM, 0, VMT_MEM_OP_VIEW_SET_ACCESS },
        { VMT_CAP_FRAMES, 0, VMT_MEM_OP_FRAME_ALLOC },
        { VMT_CAP_HW_BREAKPOINTS, 0, VMT_MEM_OP_HW_BREAKPOINT },
        { VMT_CAP_INJECT_PF, 0, VMT_MEM_OP_INJECT },
        { VMT_CAP_EVENTS, VMT_CAP_SINGLESTEP | VMT_CAP_FAST_STEP | VMT_CAP_EMULATE | VMT_CAP_WRITE_DATA,
          VMT_MEM_OP_WAIT_EVENT },
        { VMT_CAP_CR3_EVENTS, 0, VMT_MEM_OP_MONITOR },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vmt_mem_config cfg = { .ram_frames = 16, .caps_remove = cases[i].remove };
        vmt_driver *d = mem_make(&cfg);
        const vmt_caps *c = vmt_driver_caps(d);
        if (c->flags & (cases[i].remove | cases[i].also_gone))
            fail_msg("caps_remove %s: still declared (flags 0x%llx)", vmt_cap_name(cases[i].remove),
                     (unsigned long long)c->flags);
        vmt_status st = VMT_E_INTERNAL;
        uint8_t b[4] = { 0 };
        vmt_regs r;
        memset(&r, 0, sizeof r);
        vmt_view v;
        vmt_gfn g;
        vmt_event ev;
        vmt_injection inj = { .vector = 14 };
        switch (cases[i].op) {
        case VMT_MEM_OP_READ_PHYS: st = vmt_drv_read_phys(d, 0, b, 4); break;
        case VMT_MEM_OP_WRITE_PHYS: st = vmt_drv_write_phys(d, 0, b, 4); break;
        case VMT_MEM_OP_GET_REGS: st = vmt_drv_get_regs(d, 0, &r); break;
        case VMT_MEM_OP_SET_REGS: st = vmt_drv_set_regs(d, 0, &r); break;
        case VMT_MEM_OP_PAUSE: st = vmt_drv_pause(d); break;
        case VMT_MEM_OP_VIEW_CREATE: st = vmt_drv_view_create(d, VMT_ACCESS_RWX, &v); break;
        case VMT_MEM_OP_VIEW_REMAP: st = vmt_drv_view_remap(d, 1, 1, 2); break;
        case VMT_MEM_OP_VIEW_SET_ACCESS: st = vmt_drv_view_set_access(d, 1, 1, VMT_ACCESS_RWX); break;
        case VMT_MEM_OP_FRAME_ALLOC: st = vmt_drv_frame_alloc(d, &g); break;
        case VMT_MEM_OP_HW_BREAKPOINT: st = vmt_drv_hw_breakpoint(d, 0, 0, 0x1000, 1); break;
        case VMT_MEM_OP_INJECT: st = vmt_drv_inject(d, 0, &inj); break;
        case VMT_MEM_OP_WAIT_EVENT: st = vmt_drv_wait_event(d, 0, &ev); break;
        case VMT_MEM_OP_MONITOR: st = vmt_drv_monitor(d, VMT_EVENT_CR_WRITE, 1); break;
        default: break;
        }
        if (st != VMT_E_NOTSUP)
            fail_msg("caps_remove %s: %s returned %s", vmt_cap_name(cases[i].remove), vmt_mem_op_name(cases[i].op),
                     vmt_strerror(st));
        assert_int_equal(vmt_mem_log_count(d), 0);
        assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_ANY), 0);
        check(d);
        vmt_driver_destroy(d);
    }
}

/* Without VIEW_PER_VCPU the driver really is VM-wide: switching one vCPU
 * (directly or by a SWITCH_VIEW response) moves all of them. */
static void test_vm_wide_views(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 16, .vcpus = 3, .caps_remove = VMT_CAP_VIEW_PER_VCPU };
    vmt_driver *d = mem_make(&cfg);
    vmt_view v, cur;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    OK(d, vmt_drv_view_switch(d, 1, v));
    for (vmt_vcpu i = 0; i < 3; i++) {
        OK(d, vmt_drv_view_current(d, i, &cur));
        assert_int_equal(cur, v);
    }
    vmt_event ev = { .kind = VMT_EVENT_BREAKPOINT, .vcpu = 2 };
    OK(d, vmt_mem_push_event(d, &ev));
    OK(d, vmt_drv_wait_event(d, 0, &ev));
    vmt_response r = { .actions = VMT_RESP_SWITCH_VIEW, .new_view = 0 };
    OK(d, vmt_drv_respond(d, &ev, &r));
    for (vmt_vcpu i = 0; i < 3; i++) {
        OK(d, vmt_drv_view_current(d, i, &cur));
        assert_int_equal(cur, 0);
    }
    vmt_driver_destroy(d);
}

/* A driver that can only trap writes cannot deny reads or execution. */
static void test_trap_access_limits(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 16, .trap_access = VMT_ACCESS_W };
    vmt_driver *d = mem_make(&cfg);
    assert_int_equal(vmt_driver_caps(d)->trap_access, VMT_ACCESS_W);
    vmt_view v;
    EXPECT(d, VMT_E_NOTSUP, vmt_drv_view_create(d, VMT_ACCESS_R, &v));
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RX, &v));
    EXPECT(d, VMT_E_NOTSUP, vmt_drv_view_set_access(d, v, 1, VMT_ACCESS_W));
    OK(d, vmt_drv_view_set_access(d, v, 1, VMT_ACCESS_RWX));
    vmt_driver_destroy(d);
}

static void test_noop_mode_only_counts(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 16, .extra_frames = 8, .max_views = 4, .noop = true };
    vmt_driver *d = mem_make(&cfg);
    vmt_view v;
    vmt_gfn f;
    vmt_access a;
    vmt_gfn b;
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_X, &v));
    OK(d, vmt_drv_frame_alloc(d, &f));
    assert_true(f >= 16);
    for (int i = 0; i < 1000; i++) {
        OK(d, vmt_drv_view_remap(d, v, 3, f));
        OK(d, vmt_drv_view_set_access(d, v, 3, VMT_ACCESS_X));
    }
    vmt_view cur;
    OK(d, vmt_drv_view_switch(d, 0, v));
    OK(d, vmt_drv_view_current(d, 0, &cur));
    assert_int_equal(cur, v);
    OK(d, vmt_drv_view_switch(d, 0, 0));
    OK(d, vmt_drv_view_get_access(d, v, 3, &a, &b));
    assert_int_equal(a, VMT_ACCESS_RWX); /* nothing changed */
    assert_int_equal(b, 3);
    uint8_t byte = 0xcc, back = 1;
    OK(d, vmt_drv_write_phys(d, vmt_gfn_to_pa(f), &byte, 1)); /* dropped */
    OK(d, vmt_drv_read_phys(d, vmt_gfn_to_pa(f), &back, 1));
    assert_int_equal(back, 0);
    OK(d, vmt_drv_frame_free(d, f));
    OK(d, vmt_drv_view_destroy(d, v));
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_VIEW_REMAP), 1000);
    assert_int_equal(vmt_mem_op_count(d, VMT_MEM_OP_VIEW_SET_ACCESS), 1000);
    assert_int_equal(vmt_mem_log_count(d), 0);
    assert_int_equal(vmt_mem_frames_in_use(d), 0);
    vmt_driver_destroy(d);
}

/* What a guest in a view sees: the backing frame of each gfn. */
static void test_read_write_through_views(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 8, .extra_frames = 2 };
    vmt_driver *d = mem_make(&cfg);
    vmt_view v;
    vmt_gfn f;
    uint8_t orig[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, cc = 0xcc, got[8];
    OK(d, vmt_drv_write_phys(d, 0x3ffc, orig, 8)); /* straddles gfn 3 and 4 */
    OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
    OK(d, vmt_drv_frame_alloc(d, &f));
    uint8_t page[4096];
    OK(d, vmt_drv_read_phys(d, 0x4000, page, sizeof page));
    OK(d, vmt_drv_write_phys(d, vmt_gfn_to_pa(f), page, sizeof page)); /* shadow copy of gfn 4 */
    OK(d, vmt_drv_write_phys(d, vmt_gfn_to_pa(f) + 1, &cc, 1));       /* with an INT3 */
    OK(d, vmt_drv_view_remap(d, v, 4, f));
    OK(d, vmt_mem_read_view(d, v, 0x3ffc, got, 8));
    uint8_t want[8] = { 1, 2, 3, 4, 5, 0xcc, 7, 8 };
    assert_memory_equal(got, want, 8);
    OK(d, vmt_mem_read_view(d, 0, 0x3ffc, got, 8));
    assert_memory_equal(got, orig, 8);
    uint8_t nine = 9;
    OK(d, vmt_mem_write_view(d, v, 0x4002, &nine, 1)); /* lands in the shadow frame */
    OK(d, vmt_drv_read_phys(d, vmt_gfn_to_pa(f) + 2, got, 1));
    assert_int_equal(got[0], 9);
    OK(d, vmt_drv_read_phys(d, 0x4002, got, 1));
    assert_int_equal(got[0], 7);
    EXPECT(d, VMT_E_RANGE, vmt_mem_read_view(d, v, 8 * 4096 - 2, got, 4));
    EXPECT(d, VMT_E_RANGE, vmt_mem_read_view(d, v, vmt_gfn_to_pa(f), got, 1)); /* not guest-reachable */
    EXPECT(d, VMT_E_NOTFOUND, vmt_mem_read_view(d, 5, 0, got, 1));
    vmt_driver_destroy(d);
}

/* The checker is not a rubber stamp: corrupt each invariant, see it fail. */
static void test_check_detects_corruption(void **state)
{
    (void)state;
    vmt_mem_config cfg = { .ram_frames = 16, .extra_frames = 4, .max_views = 4, .vcpus = 2 };
    char why[256];
    for (int kind = 0; kind < 6; kind++) {
        vmt_driver *d = mem_make(&cfg);
        mem_drv *m = mem_of(d);
        vmt_view v;
        vmt_gfn f;
        OK(d, vmt_drv_view_create(d, VMT_ACCESS_RWX, &v));
        OK(d, vmt_drv_frame_alloc(d, &f));
        OK(d, vmt_drv_view_remap(d, v, 2, f));
        const char *expect = NULL;
        mem_entry e = { 5, VMT_ACCESS_RWX };
        vmt_gfn key = 5;
        void *slot;
        bool existed;
        switch (kind) {
        case 0: m->refs[f - 16] = 0; expect = "references"; break;
        case 1: m->vcpus[1].view = 3; expect = "does not exist"; break;
        case 2: assert_int_equal(vmt_hmap_put(&m->views[v].entries, &key, &e, &slot, &existed), VMT_OK);
                expect = "not normalised"; break;
        case 3: m->free_stack[m->free_count++] = 0; expect = "free stack"; break;
        case 4: m->extra_hwm = 2; expect = "neither allocated nor free"; break;
        case 5: m->views[0].default_access = VMT_ACCESS_R; expect = "view 0"; break;
        }
        why[0] = '\0';
        assert_int_equal(vmt_mem_check(d, why, sizeof why), VMT_E_INTERNAL);
        if (!strstr(why, expect))
            fail_msg("corruption %d: message '%s' does not mention '%s'", kind, why, expect);
        /* Undo enough for a clean destroy. */
        switch (kind) {
        case 0: m->refs[f - 16] = 1; break;
        case 1: m->vcpus[1].view = 0; break;
        case 2: vmt_hmap_del(&m->views[v].entries, &key, NULL); break;
        case 3: m->free_count--; break;
        case 4: m->extra_hwm = 1; break;
        case 5: m->views[0].default_access = VMT_ACCESS_RWX; break;
        }
        check(d);
        vmt_driver_destroy(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_stay_normalised),
        cmocka_unit_test(test_destroy_view_in_use_and_release_frames),
        cmocka_unit_test(test_frames_exhaust_reuse_zero),
        cmocka_unit_test(test_caps_remove_is_honest),
        cmocka_unit_test(test_vm_wide_views),
        cmocka_unit_test(test_trap_access_limits),
        cmocka_unit_test(test_noop_mode_only_counts),
        cmocka_unit_test(test_read_write_through_views),
        cmocka_unit_test(test_check_detects_corruption),
    };
    return cmocka_run_group_tests_name("mem driver state", tests, NULL, NULL);
}
