/*
 * tests/qemu/test_qemu_bpm.c — the breakpoint manager on the qemu driver:
 * with no views it must choose the debug controller by itself (shadow and
 * exec need views), and through the session's event loop a global
 * breakpoint at do_sys_openat2 on the real Linux snapshot is reported as a
 * hit of its key, with the filename readable, while the code bytes the
 * guest sees stay the original ones. Skipped (77) only without QEMU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "linux_snap.h"
#include "util/testutil.h"
#include "vmtrap/bpm.h"
#include "vmtrap/qemu.h"
#include "vmtrap/session.h"

#define KERNEL_MAP 0xffffffff80000000ull

typedef struct ctx {
    vmt_bpm *b;
    vmt_driver *d;
    int hits, tickfile;
    uint8_t code[16];
    uint64_t code_pa;
    vmt_status err;
} ctx;

static vmt_status handler(vmt_session *s, const vmt_event *ev, vmt_response *resp, void *user)
{
    ctx *c = user;
    vmt_bpm_bp hits[4];
    vmt_bpm_verdict v;
    vmt_status st = vmt_bpm_handle_event(c->b, ev, resp, hits, 4, &v);
    if (st)
        return st;
    if (v.disposition == VMT_BPM_HIT) {
        if (v.nhits != 1 || hits[0].key != 7)
            return VMT_E_INTERNAL;
        c->hits++;
        char name[128];
        if (snap_read_string(c->d, &ev->regs, ev->regs.rsi, name, sizeof name) == VMT_OK)
            c->tickfile += !strcmp(name, "/etc/tickfile");
        uint8_t now[16];
        if (vmt_drv_read_phys(c->d, c->code_pa, now, sizeof now) || memcmp(now, c->code, sizeof now))
            return VMT_E_INTERNAL; /* the guest would see our breakpoint */
        if (c->hits >= 12)
            vmt_session_request_stop(s);
    }
    return VMT_OK;
}

static void manager_uses_debug_slots(void **state)
{
    (void)state;
    linux_snap snap;
    char why[512];
    if (snap_open(&snap, VMT_SOURCE_DIR, why, sizeof why))
        fail_msg("snapshot: %s", why);
    uint64_t openat2 = snap_symbol(&snap, "do_sys_openat2");
    vmt_driver *d;
    if (snap_launch(&snap, 1, 1, &d, why, sizeof why) != VMT_OK)
        fail_msg("launch: %s", why);
    vmt_session *s;
    assert_int_equal(vmt_session_create(d, NULL, &s), VMT_OK);
    ctx c = { .d = d, .code_pa = openat2 - KERNEL_MAP };
    assert_int_equal(vmt_drv_read_phys(d, c.code_pa, c.code, sizeof c.code), VMT_OK);
    assert_int_equal(vmt_bpm_create(s, NULL, &c.b, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_bpm_controller_of(c.b), VMT_BPM_CTL_DEBUG);
    /* Forcing a controller that needs views is refused with the reason. */
    vmt_bpm *other;
    vmt_bpm_config shadow = { .controller = VMT_BPM_CTL_SHADOW };
    assert_int_equal(vmt_bpm_create(s, &shadow, &other, why, sizeof why), VMT_E_NOTSUP);
    assert_non_null(strstr(why, "views"));
    vmt_regs r;
    assert_int_equal(vmt_drv_get_regs(d, 0, &r), VMT_OK);
    vmt_bpm_bp bp = { .ctx = { .va = openat2, .root = r.cr3 & VMT_CR3_ADDR_MASK }, .global = true, .key = 7 };
    bool active = false;
    assert_int_equal(vmt_bpm_insert(c.b, &bp, &active), VMT_OK);
    assert_true(active);
    assert_int_equal(vmt_session_run(s, handler, &c), VMT_OK);
    print_message("%d hits, %d of /etc/tickfile\n", c.hits, c.tickfile);
    assert_int_equal(c.hits, 12);
    assert_true(c.tickfile >= 2);
    assert_int_equal(vmt_bpm_check(c.b), VMT_OK);
    assert_int_equal(vmt_session_check(s), VMT_OK);
    vmt_bpm_destroy(c.b);
    vmt_session_destroy(s);
    snap_close(&snap);
}

int main(void)
{
    if (!snap_have_qemu()) {
        printf("SKIP: qemu-system-x86_64 is not installed\n");
        return VMT_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = { cmocka_unit_test(manager_uses_debug_slots) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
