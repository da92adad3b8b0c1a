/*
 * tests/resume/test_resume_inputs.c — vmt_resume_open on inputs that are
 * not the project's Linux snapshot: a missing file, a truncated core and a
 * core with two vCPUs each give one clear line and no machine; a core whose
 * memory holds no kernel (synthetic bytes, page tables that are garbage)
 * still becomes a machine — the notes say what could not be reconstructed
 * — and running it ends with a stop reason, never a crash; running it
 * until a time or an address that never comes ends at the bound with the
 * breakpoint disarmed. Synthetic cores
 * from tests/snapshot/core_builder.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core_builder.h"
#include "vmtrap/resume.h"

static char *write_core(const core_spec *spec, size_t cut)
{
    size_t len = 0;
    uint8_t *bytes = core_build(spec, &len, NULL);
    assert_non_null(bytes);
    char *path = strdup("/tmp/vmtrap-resume-in-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = cut && cut < len ? cut : len;
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    free(bytes);
    return path;
}

static void test_missing_file(void **state)
{
    (void)state;
    vmt_resume *r = (vmt_resume *)1;
    char why[256] = "";
    assert_int_not_equal(vmt_resume_open("/nonexistent/core.elf", NULL, &r, why, sizeof why), VMT_OK);
    assert_null(r);
    assert_non_null(strstr(why, "/nonexistent/core.elf"));
}

static void test_truncated_core(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 1 << 20);
    char *path = write_core(&spec, 4096 + 512); /* headers, but not the RAM */
    vmt_resume *r = NULL;
    char why[256] = "";
    assert_int_equal(vmt_resume_open(path, NULL, &r, why, sizeof why), VMT_E_FORMAT);
    assert_null(r);
    assert_true(strlen(why) > 10);
    assert_null(strchr(why, '\n'));
    unlink(path);
    free(path);
}

static void test_two_vcpus_refused(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 1 << 20);
    spec.nvcpus = 2;
    core_default_vcpu(&spec.vcpu[1], 1);
    char *path = write_core(&spec, 0);
    vmt_resume *r = NULL;
    char why[256] = "";
    vmt_resume_config cfg = { .quiet = true };
    assert_int_equal(vmt_resume_open(path, &cfg, &r, why, sizeof why), VMT_E_NOTSUP);
    assert_null(r);
    assert_non_null(strstr(why, "2 vCPUs"));
    unlink(path);
    free(path);
}

static void test_no_kernel_runs_to_a_stop(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 2 << 20);
    char *path = write_core(&spec, 0);
    vmt_resume *r = NULL;
    char why[256] = "";
    vmt_resume_config cfg = { .quiet = true };
    vmt_status st = vmt_resume_open(path, &cfg, &r, why, sizeof why);
    if (st != VMT_OK) {
        /* Refusing the garbage machine is fine too, with a reason. */
        print_message("refused: %s\n", why);
        assert_true(strlen(why) > 10);
        unlink(path);
        free(path);
        return;
    }
    int os_note = 0, lapic_note = 0;
    for (size_t i = 0; i < vmt_resume_note_count(r); i++) {
        os_note |= strstr(vmt_resume_note_at(r, i), "os: no Linux kernel") != NULL;
        lapic_note |= strstr(vmt_resume_note_at(r, i), "platform lapic") != NULL;
    }
    assert_true(os_note);
    assert_true(lapic_note);
    assert_int_equal(vmt_resume_check(r), VMT_OK);
    vmt_stop_info stop;
    assert_int_equal(vmt_resume_run(r, 100000, 0, &stop, NULL), VMT_OK);
    assert_true(stop.reason != 0);
    assert_true(strlen(stop.message) > 0);
    print_message("stopped: %s: %s\n", vmt_stop_reason_name(stop.reason), stop.message);
    vmt_resume_close(r);
    unlink(path);
    free(path);
}

/* vmt_resume_run_until_time/_address on a machine whose point never comes:
 * they end at their bound with reached = false, leave no breakpoint armed
 * (DR7 clean for a save), refuse count 0, and a time already passed is
 * reached at once without running. */
static void test_run_until_bounds(void **state)
{
    (void)state;
    core_spec spec;
    core_default_spec(&spec, 2 << 20);
    char *path = write_core(&spec, 0);
    vmt_resume *r = NULL;
    char why[256] = "";
    vmt_resume_config cfg = { .quiet = true };
    if (vmt_resume_open(path, &cfg, &r, why, sizeof why) != VMT_OK) {
        print_message("refused: %s\n", why); /* as in test_no_kernel_runs_to_a_stop */
        unlink(path);
        free(path);
        return;
    }
    bool reached = true;
    uint64_t hits = 7, retired = 0;
    vmt_stop_info stop;
    assert_int_equal(vmt_resume_run_until_address(r, 0xffffffff81000000ull, 0, 1000, 0, &reached, &hits, &stop, NULL),
                     VMT_E_INVAL);
    assert_false(reached);
    assert_non_null(strstr(vmt_resume_error(r), "count"));

    assert_int_equal(vmt_resume_run_until_address(r, 0xffffffff81000000ull, 1, 20000, 0, &reached, &hits, &stop,
                                                  &retired), VMT_OK);
    assert_false(reached);
    assert_int_equal(hits, 0);
    assert_int_not_equal(stop.reason, 0);
    assert_true(retired <= 20000);
    const vmt_stop_reason first_stop = stop.reason;
    vmt_regs regs;
    assert_int_equal(vmt_drv_get_regs(vmt_resume_driver(r), 0, &regs), VMT_OK);
    assert_int_equal(regs.dr7 & 0xff, 0);

    uint64_t now = vmt_resume_now_ns(r);
    retired = 0;
    assert_int_equal(vmt_resume_run_until_time(r, now, 1000, 0, &reached, &stop, &retired), VMT_OK);
    assert_true(reached);
    assert_int_equal(retired, 0);
    if (first_stop != VMT_STOP_INSN_LIMIT) {
        /* the garbage guest is stopped for good: a later time is not reached */
        assert_int_equal(vmt_resume_run_until_time(r, now + 1000000000ull, 5000, 0, &reached, &stop, NULL), VMT_OK);
        assert_false(reached);
    }
    vmt_resume_close(r);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_truncated_core),
        cmocka_unit_test(test_two_vcpus_refused),
        cmocka_unit_test(test_no_kernel_runs_to_a_stop),
        cmocka_unit_test(test_run_until_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
