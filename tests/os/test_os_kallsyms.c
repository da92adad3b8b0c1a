/*
 * tests/os/test_os_kallsyms.c — the kallsyms parser on tables built like
 * the kernel builds them (ksym_build.c): every symbol comes back with its
 * name, type and address; lookups by name and address; and a corrupt table
 * (marker, count, token index, truncation, no signature) is a clear
 * VMT_E_FORMAT, never a wrong answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksym_build.h"
#include "os/linux/kallsyms.h"

#define BASE 0xffffffff81000000ull
#define NSYMS 1000
#define CAP (1u << 20)

typedef struct fixture {
    uint8_t *buf;
    kb_sym syms[NSYMS];
    char names[NSYMS][48];
    kb_layout lo;
    size_t used;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->buf = calloc(1, CAP);
    /* Two absolute per-CPU symbols, then text: some names long enough for
     * the 2-byte length, some sharing names (static duplicates). */
    for (size_t i = 0; i < NSYMS; i++) {
        if (i < 2)
            snprintf(f->names[i], sizeof f->names[i], "percpu_var%zu", i);
        else if (i % 97 == 0)
            snprintf(f->names[i], sizeof f->names[i], "dup_static");
        else if (i % 10 == 0)
            snprintf(f->names[i], sizeof f->names[i], "sys_call_%zu", i);
        else
            snprintf(f->names[i], sizeof f->names[i], "fn_%zu", i);
        f->syms[i].name = f->names[i];
        f->syms[i].type = i < 2 ? 'D' : (i % 3 ? 'T' : 't');
        f->syms[i].addr = i < 2 ? 0x1000 * (i + 1) : BASE + 0x10 * i;
    }
    /* One symbol with a 200-character name (two-byte length). */
    static char longname[201];
    memset(longname, 'L', 200);
    f->syms[NSYMS - 1].name = longname;
    f->used = kb_build(f->buf, CAP, 4096, f->syms, NSYMS, BASE, &f->lo);
    assert_true(f->used > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->buf);
    free(f);
    return 0;
}

static vmt_status parse(fixture *f, ksym_table *t, vmt_errbuf *e)
{
    size_t sig = ksym_find_signature(f->buf, CAP, 0);
    if (sig == (size_t)-1)
        return vmt_errbuf_set(e, VMT_E_NOTFOUND, "no signature");
    return ksym_parse(f->buf, CAP, sig, t, e);
}

static void every_symbol_comes_back(void **state)
{
    fixture *f = *state;
    ksym_table t;
    vmt_errbuf e = { 0 };
    assert_int_equal(parse(f, &t, &e), VMT_OK);
    assert_int_equal(t.count, NSYMS);
    assert_true(t.relative_base == BASE);
    assert_int_equal(t.off_token_table, f->lo.token_table);
    assert_int_equal(t.off_names, f->lo.names);
    for (uint32_t i = 0; i < NSYMS; i++) {
        assert_string_equal(ksym_name(&t, i), f->syms[i].name);
        assert_int_equal(t.type[i], f->syms[i].type);
        assert_true(t.addr[i] == f->syms[i].addr);
    }
    char why[256];
    assert_int_equal(ksym_check(&t, why, sizeof why), VMT_OK);
    ksym_free(&t);
}

static void lookups(void **state)
{
    fixture *f = *state;
    ksym_table t;
    vmt_errbuf e = { 0 };
    assert_int_equal(parse(f, &t, &e), VMT_OK);
    assert_int_equal(ksym_by_name(&t, "fn_5"), 5);
    assert_int_equal(ksym_by_name(&t, "sys_call_20"), 20);
    assert_int_equal(ksym_by_name(&t, "dup_static"), 97); /* the first in kernel order */
    assert_int_equal(ksym_by_name(&t, "nope"), -1);
    assert_int_equal(ksym_by_addr(&t, BASE + 0x10 * 7 + 3), 7);
    assert_int_equal(ksym_by_addr(&t, 0x1800), 0);
    assert_int_equal(ksym_by_addr(&t, 0x10), -1);
    ksym_free(&t);
}

static void expect_format_error(fixture *f, const char *needle)
{
    ksym_table t;
    vmt_errbuf e = { 0 };
    vmt_status st = parse(f, &t, &e);
    assert_int_not_equal(st, VMT_OK);
    assert_null(t.addr);
    if (needle && !strstr(e.msg, needle)) {
        print_error("message '%s' lacks '%s'\n", e.msg, needle);
        fail();
    }
}

static void corrupt_marker(void **state)
{
    fixture *f = *state;
    f->buf[f->lo.markers + 4 * 2] ^= 0x01; /* markers[2] */
    expect_format_error(f, "kallsyms_markers");
}

static void corrupt_count(void **state)
{
    fixture *f = *state;
    f->buf[f->lo.num_syms] += 1; /* one symbol more than the names hold */
    expect_format_error(f, "kallsyms");
}

static void corrupt_token_index(void **state)
{
    fixture *f = *state;
    f->buf[f->lo.token_index + 2 * 100] ^= 0x04;
    expect_format_error(f, "token index entry 100");
}

static void corrupt_name_length(void **state)
{
    fixture *f = *state;
    f->buf[f->lo.names + 1 + 1] = 0xff; /* a token byte inside the first name: fine */
    f->buf[f->lo.names] = 0x7f;         /* first name claims 127 bytes: markers no longer fit */
    expect_format_error(f, "kallsyms");
}

static void addresses_unsorted(void **state)
{
    fixture *f = *state;
    /* Scramble a quarter of the offsets: no address table fits. */
    for (size_t i = 2; i < NSYMS; i += 4)
        f->buf[f->lo.offsets + 4 * i + 2] ^= 0x55;
    expect_format_error(f, "no address table");
}

static void no_signature(void **state)
{
    fixture *f = *state;
    memset(f->buf + f->lo.token_table, 'x', f->lo.token_index - f->lo.token_table);
    ksym_table t;
    vmt_errbuf e = { 0 };
    assert_int_equal(parse(f, &t, &e), VMT_E_NOTFOUND);
}

static void truncated_window(void **state)
{
    fixture *f = *state;
    size_t sig = ksym_find_signature(f->buf, CAP, 0);
    for (size_t cut = sig + 20; cut < f->lo.end; cut += 97) {
        ksym_table t;
        vmt_errbuf e = { 0 };
        assert_int_not_equal(ksym_parse(f->buf, cut, sig, &t, &e), VMT_OK);
    }
    /* The window may also start in the middle of the tables. */
    ksym_table t;
    vmt_errbuf e = { 0 };
    size_t start = f->lo.names + 64;
    assert_int_not_equal(ksym_parse(f->buf + start, CAP - start, sig - start, &t, &e), VMT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_symbol_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_count, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_token_index, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_name_length, setup, teardown),
        cmocka_unit_test_setup_teardown(addresses_unsorted, setup, teardown),
        cmocka_unit_test_setup_teardown(no_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_window, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
