/*
 * tests/guests/test_pfinject.c — page-fault injection, end to end on the
 * emulator: the pfinject guest (guests/pfinject) calls pf_consume() with a
 * string in a page that is not present; the monitor's hook finds
 * VMT_E_NOT_PRESENT, asks for a #PF (vmt_hit_inject_pf), the guest's own
 * handler maps the page, the call hits again (hit.pf_retry) and the string
 * decodes. A page the guest never maps gets exactly the run's tries, then
 * the request is refused with the reason; a hit with interrupts disabled
 * is no safe point and gets none. With injection off nothing is
 * injected and the guest sees no fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/driver.h"
#include "vmtrap/emu.h"
#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#include "vmtrap/monitor.h"
#include "vmtrap/session.h"

#define RAM (64ULL << 20)
#define LAZY_VA 0x0000000040001000ULL
#define NEVER_VA 0x0000000040203000ULL
#define CLI_VA 0x0000000040405000ULL
#define LAZY_TEXT "/etc/pfinject/lazy.conf"
#define MAX_ATTEMPTS 16

/* One call of the hook: what it read and what it asked for. */
typedef struct attempt {
    uint64_t arg, count;
    unsigned pf_retry;
    vmt_status read_st, inject_st;
    char text[64];
    char why[160];
} attempt;

typedef struct ctx {
    attempt at[MAX_ATTEMPTS];
    size_t n;
    struct { char key[VMT_UCALL_NAME_LEN]; uint64_t value; } reports[16];
    size_t nreports;
    int done;
    uint64_t exit_code;
} ctx;

static vmt_status on_consume(const vmt_hit *hit, void *user)
{
    ctx *c = user;
    if (c->n == MAX_ATTEMPTS)
        return VMT_OK;
    attempt *a = &c->at[c->n++];
    a->pf_retry = hit->pf_retry;
    a->count = hit->count;
    vmt_status st = vmt_hit_arg(hit, 0, &a->arg);
    if (st)
        return st;
    vmt_va fault = 0;
    a->read_st = vmt_hit_read_str(hit, a->arg, a->text, sizeof a->text, &fault);
    a->inject_st = VMT_E_NOTFOUND; /* not asked */
    if (a->read_st == VMT_E_NOT_PRESENT)
        a->inject_st = vmt_hit_inject_pf(hit, fault, a->why, sizeof a->why);
    return VMT_OK;
}

static void on_ucall(const vmt_ucall *uc, void *user)
{
    ctx *c = user;
    if (uc->cmd == VMT_UCALL_REPORT && c->nreports < 16) {
        snprintf(c->reports[c->nreports].key, sizeof c->reports[0].key, "%s", uc->name);
        c->reports[c->nreports++].value = uc->args[0];
    } else if (uc->cmd == VMT_UCALL_DONE) {
        c->done = 1;
        c->exit_code = uc->args[0];
    } else if (uc->cmd == VMT_UCALL_ASSERT_FAIL) {
        fprintf(stderr, "guest assert: %s %s\n", uc->name, uc->text);
    }
}

static uint64_t report(const ctx *c, const char *key)
{
    for (size_t i = 0; i < c->nreports; i++)
        if (!strcmp(c->reports[i].key, key))
            return c->reports[i].value;
    fail_msg("guest did not report %s", key);
    return 0;
}

/* Run the guest under a monitor hooking pf_consume with this many tries. */
static void run_guest(uint32_t tries, vmt_bpm_controller ctl, ctx *c, vmt_monitor_stats *stats)
{
    memset(c, 0, sizeof *c);
    char why[256] = "";
    vmt_image *img = NULL;
    assert_int_equal(vmt_image_load_elf(VMT_GUEST_DIR "/pfinject.elf", RAM, &img, why, sizeof why), VMT_OK);
    vmt_machine_config mc = { .ram_size = RAM, .image = img };
    vmt_driver *d = NULL;
    vmt_status st = vmt_emu_driver_create(&mc, &d, why, sizeof why);
    if (st == VMT_E_NOTSUP) {
        vmt_image_destroy(img);
        skip();
    }
    assert_int_equal(st, VMT_OK);
    assert_true(vmt_driver_has(d, VMT_CAP_INJECT_PF));
    vmt_drv_set_limit(d, 30.0, 0);
    vmt_session *s = NULL;
    assert_int_equal(vmt_session_create(d, NULL, &s), VMT_OK);
    vmt_monitor_config cfg = { .inject_pf_tries = tries, .controller = ctl };
    vmt_monitor *m = NULL;
    assert_int_equal(vmt_monitor_create_ex(s, img, &cfg, &m, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_monitor_hook(m, "pf_consume", on_consume, c), VMT_OK);
    vmt_monitor_on_ucall(m, on_ucall, c);
    st = vmt_monitor_run(m);
    if (st)
        fail_msg("run: %s: %s", vmt_strerror(st), vmt_monitor_error(m));
    assert_int_equal(vmt_monitor_check(m), VMT_OK);
    *stats = *vmt_monitor_stats_get(m);
    assert_int_equal(vmt_monitor_hook_hits(m, 0), 3); /* three calls, however many #PFs */
    vmt_monitor_destroy(m);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    assert_true(c->done);
    assert_int_equal(c->exit_code, 0);
}

/* The whole story under one breakpoint mechanism. */
static void check_injection(vmt_bpm_controller ctl)
{
    ctx c;
    vmt_monitor_stats st;
    run_guest(2, ctl, &c, &st);
    for (size_t i = 0; i < c.n; i++)
        fprintf(stderr, "hit %zu: arg 0x%llx retry %u read %s inject %s %s '%s'\n", i, (unsigned long long)c.at[i].arg,
                c.at[i].pf_retry, vmt_strerror(c.at[i].read_st), vmt_strerror(c.at[i].inject_st), c.at[i].why,
                c.at[i].text);
    /* the lazy call: not present, one #PF, then the string */
    assert_int_equal(c.n, 6);
    assert_int_equal(c.at[0].arg, LAZY_VA);
    assert_int_equal(c.at[0].read_st, VMT_E_NOT_PRESENT);
    assert_int_equal(c.at[0].inject_st, VMT_OK);
    assert_int_equal(c.at[0].pf_retry, 0);
    assert_int_equal(c.at[1].arg, LAZY_VA);
    assert_int_equal(c.at[1].pf_retry, 1);
    assert_int_equal(c.at[1].count, c.at[0].count); /* the same call */
    assert_int_equal(c.at[1].read_st, VMT_OK);
    assert_string_equal(c.at[1].text, LAZY_TEXT);
    /* the page that never comes in: exactly `tries` #PFs, then the reason */
    for (unsigned k = 0; k < 3; k++) {
        const attempt *a = &c.at[2 + k];
        assert_int_equal(a->arg, NEVER_VA);
        assert_int_equal(a->pf_retry, k);
        assert_int_equal(a->read_st, VMT_E_NOT_PRESENT);
        assert_int_equal(a->inject_st, k < 2 ? VMT_OK : VMT_E_RANGE);
    }
    assert_non_null(strstr(c.at[4].why, "2 #PF injected, still not present"));
    /* interrupts disabled at the hit: not a safe point, nothing injected */
    assert_int_equal(c.at[5].arg, CLI_VA);
    assert_int_equal(c.at[5].read_st, VMT_E_NOT_PRESENT);
    assert_int_equal(c.at[5].inject_st, VMT_E_BUSY);
    assert_non_null(strstr(c.at[5].why, "interrupts are disabled"));
    assert_int_equal(report(&c, "cli_faults"), 0);
    /* the guest's handler saw exactly the injected faults, as user reads */
    assert_int_equal(report(&c, "lazy_faults"), 1);
    assert_int_equal(report(&c, "never_faults"), 2);
    assert_int_equal(report(&c, "other_faults"), 0);
    assert_int_equal(report(&c, "lazy_cr2"), LAZY_VA);
    assert_int_equal(report(&c, "last_error"), 4);
    assert_int_equal(report(&c, "lazy_present"), 1);
    assert_int_equal(report(&c, "consume_calls"), 3);
    assert_int_equal(st.pf_injected, 3);
    assert_int_equal(st.pf_refused, 2);
    assert_int_equal(st.hits, 3);
}

static void injected_fault_pages_in_the_argument(void **state)
{
    (void)state;
    check_injection(VMT_BPM_CTL_SHADOW);
}

/* Execute traps and debug registers re-trigger at the hooked entry after
 * the handler's iret just like the hidden INT3. */
static void the_same_under_exec_and_debug(void **state)
{
    (void)state;
    check_injection(VMT_BPM_CTL_EXEC);
    check_injection(VMT_BPM_CTL_DEBUG);
}

static void off_by_default_nothing_is_injected(void **state)
{
    (void)state;
    ctx c;
    vmt_monitor_stats st;
    run_guest(0, VMT_BPM_CTL_AUTO, &c, &st);
    assert_int_equal(c.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(c.at[i].read_st, VMT_E_NOT_PRESENT);
        assert_int_equal(c.at[i].inject_st, VMT_E_NOTSUP);
        assert_int_equal(c.at[i].pf_retry, 0);
        assert_non_null(strstr(c.at[i].why, "off"));
    }
    assert_int_equal(report(&c, "lazy_faults"), 0);
    assert_int_equal(report(&c, "never_faults"), 0);
    assert_int_equal(report(&c, "lazy_present"), 0);
    assert_int_equal(report(&c, "cli_faults"), 0);
    assert_int_equal(report(&c, "consume_calls"), 3);
    assert_int_equal(st.pf_injected, 0);
    assert_int_equal(st.pf_refused, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(injected_fault_pages_in_the_argument),
        cmocka_unit_test(the_same_under_exec_and_debug),
        cmocka_unit_test(off_by_default_nothing_is_injected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
