/*
 * tests/mem/test_mem_liar.c — the conformance suite catches lying drivers.
 *
 * Each case runs one conformance test in a forked child (so its expected
 * failure does not fail this program) against a driver that declares a
 * capability but does not honour it, and asserts the child reports a
 * failure. The same test against the honest mem driver must pass, which
 * shows the failure comes from the lie and not from the harness.
 *
 * Lies: an op that always fails (fault injection while the capability is
 * still declared), and semantic lies through a forwarding driver around a
 * mem driver: a remap that keeps the old rights, per-vCPU views declared on
 * a VM-wide driver, frames handed out inside guest RAM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conformance.h"
#include "mem_factory.h"

/* ---- a forwarding driver that lies ---- */

typedef enum lie {
    LIE_NONE,
    LIE_REMAP_KEEPS_RIGHTS,
    LIE_PER_VCPU_ON_VM_WIDE,
    LIE_FRAMES_IN_RAM,
} lie;

typedef struct liar {
    vmt_driver *inner;
    lie lie;
} liar;

static liar *L(vmt_driver *d) { return vmt_driver_impl(d); }

static vmt_status pass(vmt_driver *d, vmt_status st)
{
    if (st)
        return vmt_driver_fail(d, st, "%s", vmt_driver_error(L(d)->inner));
    return VMT_OK;
}

static void l_destroy(vmt_driver *d)
{
    vmt_driver_destroy(L(d)->inner);
    free(L(d));
}
static vmt_status l_read(vmt_driver *d, vmt_pa pa, void *b, size_t n) { return pass(d, vmt_drv_read_phys(L(d)->inner, pa, b, n)); }
static vmt_status l_write(vmt_driver *d, vmt_pa pa, const void *b, size_t n) { return pass(d, vmt_drv_write_phys(L(d)->inner, pa, b, n)); }
static vmt_status l_get_regs(vmt_driver *d, vmt_vcpu v, vmt_regs *r) { return pass(d, vmt_drv_get_regs(L(d)->inner, v, r)); }
static vmt_status l_set_regs(vmt_driver *d, vmt_vcpu v, const vmt_regs *r) { return pass(d, vmt_drv_set_regs(L(d)->inner, v, r)); }
static vmt_status l_pause(vmt_driver *d) { return pass(d, vmt_drv_pause(L(d)->inner)); }
static vmt_status l_resume(vmt_driver *d) { return pass(d, vmt_drv_resume(L(d)->inner)); }
static vmt_status l_view_create(vmt_driver *d, vmt_access a, vmt_view *o) { return pass(d, vmt_drv_view_create(L(d)->inner, a, o)); }
static vmt_status l_view_destroy(vmt_driver *d, vmt_view v) { return pass(d, vmt_drv_view_destroy(L(d)->inner, v)); }
static vmt_status l_view_switch(vmt_driver *d, vmt_vcpu c, vmt_view v) { return pass(d, vmt_drv_view_switch(L(d)->inner, c, v)); }
static vmt_status l_view_current(vmt_driver *d, vmt_vcpu c, vmt_view *o) { return pass(d, vmt_drv_view_current(L(d)->inner, c, o)); }
static vmt_status l_set_access(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_access a) { return pass(d, vmt_drv_view_set_access(L(d)->inner, v, g, a)); }
static vmt_status l_get_access(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_access *a, vmt_gfn *b) { return pass(d, vmt_drv_view_get_access(L(d)->inner, v, g, a, b)); }
static vmt_status l_frame_free(vmt_driver *d, vmt_gfn g) { return pass(d, vmt_drv_frame_free(L(d)->inner, g)); }
static vmt_status l_stats(vmt_driver *d, vmt_driver_stats *s) { return pass(d, vmt_drv_stats(L(d)->inner, s)); }

static vmt_status l_remap(vmt_driver *d, vmt_view v, vmt_gfn g, vmt_gfn b)
{
    vmt_access old = VMT_ACCESS_RWX;
    if (L(d)->lie == LIE_REMAP_KEEPS_RIGHTS)
        (void)vmt_drv_view_get_access(L(d)->inner, v, g, &old, NULL);
    vmt_status st = pass(d, vmt_drv_view_remap(L(d)->inner, v, g, b));
    if (!st && L(d)->lie == LIE_REMAP_KEEPS_RIGHTS)
        st = pass(d, vmt_drv_view_set_access(L(d)->inner, v, g, old));
    return st;
}

static vmt_status l_frame_alloc(vmt_driver *d, vmt_gfn *out)
{
    vmt_status st = pass(d, vmt_drv_frame_alloc(L(d)->inner, out));
    if (!st && L(d)->lie == LIE_FRAMES_IN_RAM)
        *out -= vmt_driver_caps(L(d)->inner)->ram_frames / 2;
    return st;
}

static const vmt_driver_ops liar_ops = {
    .name = "liar",
    .destroy = l_destroy,
    .read_phys = l_read,
    .write_phys = l_write,
    .get_regs = l_get_regs,
    .set_regs = l_set_regs,
    .pause = l_pause,
    .resume = l_resume,
    .view_create = l_view_create,
    .view_destroy = l_view_destroy,
    .view_switch = l_view_switch,
    .view_current = l_view_current,
    .view_remap = l_remap,
    .view_set_access = l_set_access,
    .view_get_access = l_get_access,
    .frame_alloc = l_frame_alloc,
    .frame_free = l_frame_free,
    .stats = l_stats,
};

static vmt_status liar_create(void *ctx, const vmt_machine_config *mc, vmt_driver **out, char *why, size_t why_len)
{
    lie which = *(const lie *)ctx;
    mem_factory mf = { 0 };
    /* No events/breakpoints/injection: the forwarder does not implement them. */
    mf.base.caps_remove = VMT_CAP_EVENTS | VMT_CAP_HW_BREAKPOINTS | VMT_CAP_INJECT_BP | VMT_CAP_INJECT_PF |
                          VMT_CAP_VCPU_STATE | VMT_CAP_DIRTY_LOG;
    if (which == LIE_PER_VCPU_ON_VM_WIDE)
        mf.base.caps_remove |= VMT_CAP_VIEW_PER_VCPU; /* really VM-wide ... */
    vmt_driver *inner;
    vmt_status st = mem_factory_create(&mf, mc, &inner, why, why_len);
    if (st)
        return st;
    vmt_caps caps = *vmt_driver_caps(inner);
    if (which == LIE_PER_VCPU_ON_VM_WIDE)
        caps.flags |= VMT_CAP_VIEW_PER_VCPU; /* ... but claims per-vCPU views */
    liar *l = calloc(1, sizeof *l);
    if (!l) {
        vmt_driver_destroy(inner);
        return VMT_E_NOMEM;
    }
    l->inner = inner;
    l->lie = which;
    st = vmt_driver_create(&liar_ops, l, &caps, out, why, why_len);
    if (st) {
        vmt_driver_destroy(inner);
        free(l);
    }
    return st;
}

/* ---- running one conformance test in a child ---- */

/* Run one conformance test in a child; 0 when it passed, 1 when it FAILED
 * (a setup error or a crash is a harness problem and fails this test). */
static int run_in_child(const vmt_conformance_factory *f, const char *group, const char *test)
{
    FILE *out = tmpfile();
    assert_non_null(out);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(out), STDERR_FILENO);
        int failed = vmt_conformance_run_only("under test", f, group, test);
        fflush(stdout);
        fflush(stderr);
        _exit(failed ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    static char text[16384];
    rewind(out);
    size_t n = fread(text, 1, sizeof text - 1, out);
    text[n] = '\0';
    fclose(out);
    if (!WIFEXITED(status))
        fail_msg("conformance child for %s/%s died (status 0x%x):\n%s", group, test, status, text);
    char failed_line[160], ok_line[160];
    snprintf(failed_line, sizeof failed_line, "[  FAILED  ] %s", test);
    snprintf(ok_line, sizeof ok_line, "[       OK ] %s", test);
    if (WEXITSTATUS(status) == 1 && strstr(text, failed_line))
        return 1;
    if (WEXITSTATUS(status) == 0 && strstr(text, ok_line))
        return 0;
    fail_msg("conformance child for %s/%s: exit %d and unexpected output:\n%s", group, test, WEXITSTATUS(status),
             text);
    return -1;
}

static void assert_caught(const vmt_conformance_factory *liar_f, const vmt_conformance_factory *honest_f,
                          const char *group, const char *test)
{
    if (run_in_child(honest_f, group, test) != 0)
        fail_msg("%s/%s fails on the honest driver", group, test);
    if (run_in_child(liar_f, group, test) != 1)
        fail_msg("%s/%s did not catch the lying driver", group, test);
}

static void test_failing_remap_is_caught(void **state)
{
    (void)state;
    mem_factory honest = { 0 }, broken = { .fail = true, .fail_op = VMT_MEM_OP_VIEW_REMAP };
    vmt_conformance_factory h = { .create = mem_factory_create, .ctx = &honest };
    vmt_conformance_factory b = { .create = mem_factory_create, .ctx = &broken };
    assert_caught(&b, &h, "views", "remap_and_get_access");
}

static void test_failing_frame_alloc_is_caught(void **state)
{
    (void)state;
    mem_factory honest = { 0 }, broken = { .fail = true, .fail_op = VMT_MEM_OP_FRAME_ALLOC };
    vmt_conformance_factory h = { .create = mem_factory_create, .ctx = &honest };
    vmt_conformance_factory b = { .create = mem_factory_create, .ctx = &broken };
    assert_caught(&b, &h, "frames", "frames_reusable");
}

static void test_semantic_lies_are_caught(void **state)
{
    (void)state;
    static const lie honest = LIE_NONE;
    static const struct {
        lie lie;
        const char *group, *test;
    } cases[] = {
        { LIE_REMAP_KEEPS_RIGHTS, "views", "remap_resets_rights" },
        { LIE_PER_VCPU_ON_VM_WIDE, "views", "switch_scope" },
        { LIE_FRAMES_IN_RAM, "frames", "frames_distinct_host_read_write" },
    };
    vmt_conformance_factory h = { .create = liar_create, .ctx = (void *)&honest };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vmt_conformance_factory b = { .create = liar_create, .ctx = (void *)&cases[i].lie };
        assert_caught(&b, &h, cases[i].group, cases[i].test);
    }
}

/* The vmt_mem_* calls refuse drivers that are not mem drivers. */
static void test_mem_calls_refuse_other_drivers(void **state)
{
    (void)state;
    static const lie honest = LIE_NONE;
    vmt_machine_config mc = { .ram_size = 1 << 20 };
    vmt_driver *d = NULL;
    char why[256] = "";
    assert_int_equal(liar_create((void *)&honest, &mc, &d, why, sizeof why), VMT_OK);
    assert_false(vmt_mem_is(d));
    assert_true(vmt_mem_is(L(d)->inner));
    vmt_event ev = { .kind = VMT_EVENT_BREAKPOINT };
    assert_int_equal(vmt_mem_push_event(d, &ev), VMT_E_INVAL);
    assert_int_equal(vmt_mem_log_count(d), 0);
    assert_int_equal(vmt_mem_check(d, why, sizeof why), VMT_E_INTERNAL);
    vmt_mem_fail_always(d, VMT_MEM_OP_READ_PHYS, true); /* ignored */
    uint8_t b;
    assert_int_equal(vmt_drv_read_phys(d, 0, &b, 1), VMT_OK);
    vmt_driver_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failing_remap_is_caught),
        cmocka_unit_test(test_failing_frame_alloc_is_caught),
        cmocka_unit_test(test_semantic_lies_are_caught),
        cmocka_unit_test(test_mem_calls_refuse_other_drivers),
    };
    return cmocka_run_group_tests_name("conformance catches lying drivers", tests, NULL, NULL);
}
