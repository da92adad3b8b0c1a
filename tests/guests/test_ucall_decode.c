/*
 * tests/guests/test_ucall_decode.c — the host decoder of the ucall protocol
 * against hand-made guest memory: valid records of every command, and the
 * ways a hostile guest can lie (wrong event, address outside RAM or
 * straddling its end, unreadable memory, garbage, bad magic/version/size,
 * unknown command, too many or too few arguments, unterminated strings).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "vmtrap/machine.h"
#include "vmtrap/ucall.h"

#define RAM_SIZE (64 * 1024)
#define REC_PA 0x2000

typedef struct fake_ram {
    uint8_t bytes[RAM_SIZE];
    int fail_reads; /* reader reports a driver failure */
} fake_ram;

static vmt_status fake_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    fake_ram *r = ctx;
    if (r->fail_reads)
        return VMT_E_DRIVER;
    if (pa > RAM_SIZE || len > RAM_SIZE - pa)
        return VMT_E_RANGE;
    memcpy(buf, r->bytes + pa, len);
    return VMT_OK;
}

static fake_ram ram;

static vmt_phys_reader reader(void)
{
    vmt_phys_reader r = { fake_read, &ram };
    return r;
}

static vmt_event io_event(uint32_t value)
{
    vmt_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = VMT_EVENT_IO;
    ev.u.io.port = VMT_PORT_UCALL;
    ev.u.io.size = 4;
    ev.u.io.is_write = true;
    ev.u.io.value = value;
    return ev;
}

static vmt_ucall_wire *record_at(uint64_t pa, uint16_t cmd, uint32_t nargs)
{
    vmt_ucall_wire *w = (vmt_ucall_wire *)(ram.bytes + pa);
    memset(w, 0, sizeof(*w));
    w->magic = VMT_UCALL_MAGIC;
    w->version = VMT_UCALL_VERSION;
    w->cmd = cmd;
    w->size = sizeof(*w);
    w->nargs = nargs;
    w->seq = 7;
    return w;
}

static int setup(void **state)
{
    (void)state;
    memset(&ram, 0, sizeof(ram));
    return 0;
}

static vmt_status decode(uint32_t pa, vmt_ucall *uc, char *why, size_t why_len)
{
    vmt_phys_reader r = reader();
    vmt_event ev = io_event(pa);
    return vmt_ucall_decode(&r, RAM_SIZE, &ev, uc, why, why_len);
}

static void test_valid_step(void **state)
{
    (void)state;
    vmt_ucall_wire *w = record_at(REC_PA, VMT_UCALL_STEP, 3);
    w->args[0] = 0xffffffff80200000ULL;
    w->args[1] = 0x200;
    w->args[2] = 0x3456;
    w->args[3] = 99; /* past nargs: must not come through */
    strcpy(w->name, "pageout");
    strcpy(w->text, "svc_open");
    vmt_ucall uc;
    char why[256] = "";
    assert_int_equal(decode(REC_PA, &uc, why, sizeof(why)), VMT_OK);
    assert_int_equal(uc.cmd, VMT_UCALL_STEP);
    assert_int_equal(uc.nargs, 3);
    assert_int_equal(uc.seq, 7);
    assert_int_equal(uc.pa, REC_PA);
    assert_int_equal(uc.args[0], 0xffffffff80200000ULL);
    assert_int_equal(uc.args[2], 0x3456);
    assert_int_equal(uc.args[3], 0);
    assert_string_equal(uc.name, "pageout");
    assert_string_equal(uc.text, "svc_open");
    char line[512];
    vmt_ucall_format(&uc, line, sizeof(line));
    assert_string_equal(line, "step pageout 0xffffffff80200000 0x200 0x3456 (svc_open)");
}

static void test_valid_every_command(void **state)
{
    (void)state;
    static const struct {
        uint16_t cmd;
        uint32_t nargs;
        const char *line;
    } cases[] = {
        { VMT_UCALL_PRINT, 0, "print hello" },
        { VMT_UCALL_REPORT, 1, "report key = 5 (0x5)" },
        { VMT_UCALL_ASSERT_FAIL, 3, "assert-fail key:5: hello 0x6 0x7" },
        { VMT_UCALL_DETECTOR, 2, "detector 5 key FAIL: hello" },
        { VMT_UCALL_DONE, 1, "done 5" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vmt_ucall_wire *w = record_at(REC_PA, cases[i].cmd, cases[i].nargs);
        w->args[0] = 5;
        w->args[1] = cases[i].cmd == VMT_UCALL_DETECTOR ? 0 : 6;
        w->args[2] = 7;
        strcpy(w->name, "key");
        strcpy(w->text, "hello");
        vmt_ucall uc;
        char why[256] = "";
        assert_int_equal(decode(REC_PA, &uc, why, sizeof(why)), VMT_OK);
        assert_int_equal(uc.cmd, cases[i].cmd);
        char line[512];
        vmt_ucall_format(&uc, line, sizeof(line));
        assert_string_equal(line, cases[i].line);
    }
    assert_string_equal(vmt_ucall_cmd_name(VMT_UCALL_DONE), "done");
    assert_string_equal(vmt_ucall_cmd_name(0), "?");
    assert_string_equal(vmt_ucall_cmd_name(-3), "?");
    assert_string_equal(vmt_ucall_cmd_name(1000), "?");
}

static void expect_failure(uint32_t pa, vmt_status want, const char *why_part)
{
    vmt_ucall uc;
    memset(&uc, 0xab, sizeof(uc));
    char why[256] = "";
    assert_int_equal(decode(pa, &uc, why, sizeof(why)), want);
    if (!strstr(why, why_part))
        fail_msg("why '%s' does not mention '%s'", why, why_part);
    /* nothing of a rejected record leaks out */
    vmt_ucall zero;
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&uc, &zero, sizeof(uc));
}

static void test_not_a_ucall_event(void **state)
{
    (void)state;
    record_at(REC_PA, VMT_UCALL_DONE, 1);
    vmt_phys_reader r = reader();
    vmt_ucall uc;
    char why[256];
    vmt_event ev = io_event(REC_PA);
    ev.kind = VMT_EVENT_BREAKPOINT;
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, &uc, why, sizeof(why)), VMT_E_INVAL);
    assert_false(vmt_ucall_is_ucall(&ev));
    ev = io_event(REC_PA);
    ev.u.io.port = VMT_PORT_SERIAL;
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, &uc, why, sizeof(why)), VMT_E_INVAL);
    assert_non_null(strstr(why, "port 0x3f8"));
    ev = io_event(REC_PA);
    ev.u.io.is_write = false;
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, &uc, why, sizeof(why)), VMT_E_INVAL);
    ev = io_event(REC_PA);
    ev.u.io.size = 1;
    assert_false(vmt_ucall_is_ucall(&ev));
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, &uc, why, sizeof(why)), VMT_E_INVAL);
    ev = io_event(REC_PA);
    assert_true(vmt_ucall_is_ucall(&ev));
    assert_int_equal(vmt_ucall_decode(NULL, RAM_SIZE, &ev, &uc, why, sizeof(why)), VMT_E_INVAL);
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, NULL, &uc, why, sizeof(why)), VMT_E_INVAL);
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, NULL, why, sizeof(why)), VMT_E_INVAL);
    /* why may be NULL */
    assert_int_equal(vmt_ucall_decode(&r, RAM_SIZE, &ev, &uc, NULL, 0), VMT_OK);
}

static void test_address_outside_ram(void **state)
{
    (void)state;
    expect_failure(RAM_SIZE, VMT_E_RANGE, "outside guest RAM");
    expect_failure(0xfffffff0u, VMT_E_RANGE, "outside guest RAM");
    /* a valid-looking record whose tail is past the end of RAM */
    uint32_t straddle = RAM_SIZE - sizeof(vmt_ucall_wire) + 8;
    memcpy(ram.bytes + straddle, &(uint32_t){ VMT_UCALL_MAGIC }, 4);
    expect_failure(straddle, VMT_E_RANGE, "outside guest RAM");
    /* the last record that fits is fine */
    record_at(RAM_SIZE - sizeof(vmt_ucall_wire), VMT_UCALL_DONE, 1);
    vmt_ucall uc;
    assert_int_equal(decode(RAM_SIZE - sizeof(vmt_ucall_wire), &uc, NULL, 0), VMT_OK);
}

static void test_unreadable_memory(void **state)
{
    (void)state;
    record_at(REC_PA, VMT_UCALL_DONE, 1);
    ram.fail_reads = 1;
    expect_failure(REC_PA, VMT_E_RANGE, "cannot read");
}

static void test_garbage(void **state)
{
    (void)state;
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(ram.bytes); i++) {
        x = x * 1103515245u + 12345u;
        ram.bytes[i] = (uint8_t)(x >> 16);
    }
    for (uint32_t pa = 0; pa + sizeof(vmt_ucall_wire) <= RAM_SIZE; pa += 1021) {
        vmt_ucall uc;
        char why[256] = "";
        assert_int_equal(decode(pa, &uc, why, sizeof(why)), VMT_E_FORMAT);
        assert_true(why[0] != 0);
    }
    /* garbage with the right header but random body: strings or nargs fail */
    vmt_ucall_wire *w = (vmt_ucall_wire *)(ram.bytes + REC_PA);
    w->magic = VMT_UCALL_MAGIC;
    w->version = VMT_UCALL_VERSION;
    w->size = sizeof(*w);
    w->cmd = VMT_UCALL_PRINT;
    vmt_ucall uc;
    assert_int_equal(decode(REC_PA, &uc, NULL, 0), VMT_E_FORMAT);
}

static void test_bad_header_fields(void **state)
{
    (void)state;
    vmt_ucall_wire *w = record_at(REC_PA, VMT_UCALL_DONE, 1);
    w->magic ^= 1;
    expect_failure(REC_PA, VMT_E_FORMAT, "bad magic");
    w = record_at(REC_PA, VMT_UCALL_DONE, 1);
    w->version = 2;
    expect_failure(REC_PA, VMT_E_FORMAT, "version 2");
    w = record_at(REC_PA, VMT_UCALL_DONE, 1);
    w->size = 100;
    expect_failure(REC_PA, VMT_E_FORMAT, "record size 100");
    uint16_t bad_cmds[] = { 0, 7, 0xffff };
    for (size_t i = 0; i < 3; i++) {
        record_at(REC_PA, bad_cmds[i], 1);
        expect_failure(REC_PA, VMT_E_FORMAT, "unknown command");
    }
    record_at(REC_PA, VMT_UCALL_STEP, VMT_UCALL_MAX_ARGS + 1);
    expect_failure(REC_PA, VMT_E_FORMAT, "arguments (at most 6)");
    record_at(REC_PA, VMT_UCALL_STEP, 0xffffffffu);
    expect_failure(REC_PA, VMT_E_FORMAT, "at most");
    record_at(REC_PA, VMT_UCALL_REPORT, 0);
    expect_failure(REC_PA, VMT_E_FORMAT, "report needs 1");
    record_at(REC_PA, VMT_UCALL_DETECTOR, 1);
    expect_failure(REC_PA, VMT_E_FORMAT, "detector needs 2");
}

static void test_unterminated_strings(void **state)
{
    (void)state;
    vmt_ucall_wire *w = record_at(REC_PA, VMT_UCALL_PRINT, 0);
    memset(w->name, 'A', sizeof(w->name));
    expect_failure(REC_PA, VMT_E_FORMAT, "name field is not NUL-terminated");
    w = record_at(REC_PA, VMT_UCALL_PRINT, 0);
    memset(w->text, 'B', sizeof(w->text));
    expect_failure(REC_PA, VMT_E_FORMAT, "text field is not NUL-terminated");
    /* the longest legal strings pass and come through whole */
    w = record_at(REC_PA, VMT_UCALL_PRINT, 0);
    memset(w->name, 'A', sizeof(w->name) - 1);
    memset(w->text, 'B', sizeof(w->text) - 1);
    vmt_ucall uc;
    assert_int_equal(decode(REC_PA, &uc, NULL, 0), VMT_OK);
    assert_int_equal(strlen(uc.name), VMT_UCALL_NAME_LEN - 1);
    assert_int_equal(strlen(uc.text), VMT_UCALL_TEXT_LEN - 1);
}

static void test_format_truncates(void **state)
{
    (void)state;
    vmt_ucall_wire *w = record_at(REC_PA, VMT_UCALL_PRINT, 0);
    strcpy(w->text, "a long message that will not fit");
    vmt_ucall uc;
    assert_int_equal(decode(REC_PA, &uc, NULL, 0), VMT_OK);
    char small[10];
    vmt_ucall_format(&uc, small, sizeof(small));
    assert_string_equal(small, "print a l");
    vmt_ucall_format(NULL, small, sizeof(small));
    assert_string_equal(small, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_valid_step, setup),
        cmocka_unit_test_setup(test_valid_every_command, setup),
        cmocka_unit_test_setup(test_not_a_ucall_event, setup),
        cmocka_unit_test_setup(test_address_outside_ram, setup),
        cmocka_unit_test_setup(test_unreadable_memory, setup),
        cmocka_unit_test_setup(test_garbage, setup),
        cmocka_unit_test_setup(test_bad_header_fields, setup),
        cmocka_unit_test_setup(test_unterminated_strings, setup),
        cmocka_unit_test_setup(test_format_truncates, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
