/*
 * tests/cli/test_cli_log.c — the CLI log is safe against hostile guest text.
 *
 * The guest writes the ucall name/text, its serial lines and its detector
 * results; tools/log.c prints them. A hostile guest must not be able to
 * forge extra log lines (a '\n' in its text), drive the terminal (ESC), or
 * make the JSON log invalid UTF-8 (bytes >= 0x80) so that a strict JSON
 * reader rejects the whole log. Checked on the rendered output itself: each
 * call writes exactly one line, every JSON line parses with UTF-8
 * validation, and no control or high byte reaches the output.
 */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "cli.h"

static const char hostile[] = "ok\nfake\x1b[2J\xff\xc3\\end";
static const char hostile_escaped[] = "ok\\x0afake\\x1b[2J\\xff\\xc3\\\\end";

static vmt_ucall hostile_ucall(vmt_ucall_cmd cmd)
{
    vmt_ucall uc;
    memset(&uc, 0, sizeof uc);
    uc.cmd = cmd;
    uc.nargs = 2;
    uc.args[0] = 4;
    uc.args[1] = 1;
    snprintf(uc.name, sizeof uc.name, "%s", hostile);
    snprintf(uc.text, sizeof uc.text, "%s", hostile);
    return uc;
}

/* Log three hostile records; return the output (caller frees). */
static char *render(int json, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    assert_non_null(f);
    cli_log l = { .out = f, .json = json };
    vmt_ucall print = hostile_ucall(VMT_UCALL_PRINT), det = hostile_ucall(VMT_UCALL_DETECTOR);
    cli_log_ucall(&l, &print);
    cli_log_ucall(&l, &det);
    cli_log_serial(&l, hostile);
    assert_int_equal(l.lines, 3);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void assert_clean_lines(const char *out, size_t len)
{
    size_t newlines = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == '\n')
            newlines++;
        else if (c < 0x20 || c >= 0x7f)
            fail_msg("byte 0x%02x at offset %zu reached the log", c, i);
    }
    assert_int_equal(newlines, 3); /* one line per record: none forged */
}

static void test_text_log_has_no_forged_lines(void **state)
{
    (void)state;
    size_t len = 0;
    char *out = render(0, &len);
    assert_clean_lines(out, len);
    assert_non_null(strstr(out, hostile_escaped));
    free(out);
}

static void test_json_log_is_valid_utf8(void **state)
{
    (void)state;
    size_t len = 0;
    char *out = render(1, &len);
    assert_clean_lines(out, len);
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_tokener *tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *o = json_tokener_parse_ex(tok, line, (int)strlen(line));
        if (!o)
            fail_msg("line %d is not valid JSON: %s: %s", n, json_tokener_error_desc(json_tokener_get_error(tok)),
                     line);
        json_object *v;
        const char *key = n == 2 ? "line" : n == 1 ? "detail" : "text";
        assert_true(json_object_object_get_ex(o, key, &v));
        assert_string_equal(json_object_get_string(v), hostile_escaped);
        json_object_put(o);
        json_tokener_free(tok);
    }
    assert_int_equal(n, 3);
    free(out);
}

/* --inject-pf: a call decoded after injected #PFs says how many; one whose
 * page stayed out says why, in text and in JSON. */
static char *render_pf_calls(int json, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    assert_non_null(f);
    cli_log l = { .out = f, .json = json };
    cli_call a, b;
    memset(&a, 0, sizeof a);
    a.symbol = "do_sys_openat2";
    a.count = 1;
    a.nargs = 1;
    a.args[0].name = "filename";
    a.args[0].kind = CLI_ARG_STR;
    a.args[0].value = 0x40001000;
    snprintf(a.args[0].text, sizeof a.args[0].text, "/etc/lazy");
    a.pf_injected = 1;
    b = a;
    b.count = 2;
    b.pf_injected = 2;
    b.args[0].read_status = VMT_E_NOT_PRESENT;
    b.args[0].fault_va = 0x40203000;
    b.args[0].text[0] = '\0';
    snprintf(b.pf_refused, sizeof b.pf_refused, "2 #PF injected, still not present");
    cli_log_call(&l, &a);
    cli_log_call(&l, &b);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_injected_page_faults_are_reported(void **state)
{
    (void)state;
    size_t len = 0;
    char *out = render_pf_calls(0, &len);
    assert_non_null(strstr(out, "filename=\"/etc/lazy\") #1 vcpu0 [after 1 injected #PF]"));
    assert_non_null(strstr(out, "<paged out at 0x40203000>) #2 vcpu0 [after 2 injected #PF] [no #PF: 2 #PF injected, still not present]"));
    free(out);
    out = render_pf_calls(1, &len);
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    json_object *o1 = json_tokener_parse(out), *o2 = json_tokener_parse(second), *pf, *v;
    assert_non_null(o1);
    assert_non_null(o2);
    assert_true(json_object_object_get_ex(o1, "page_fault", &pf));
    assert_true(json_object_object_get_ex(pf, "injected", &v));
    assert_int_equal(json_object_get_int(v), 1);
    assert_false(json_object_object_get_ex(pf, "refused", &v));
    assert_true(json_object_object_get_ex(o2, "page_fault", &pf));
    assert_true(json_object_object_get_ex(pf, "refused", &v));
    assert_string_equal(json_object_get_string(v), "2 #PF injected, still not present");
    json_object_put(o1);
    json_object_put(o2);
    free(out);
}

static void test_escape_cuts_between_escapes(void **state)
{
    (void)state;
    char out[8];
    /* "ab" fits, "\xff" (4 bytes) would end at 6, "\xfe" would not fit in 7 + NUL */
    assert_string_equal(cli_escape_guest_text("ab\xff\xfe", out, sizeof out), "ab\\xff");
    assert_string_equal(cli_escape_guest_text("plain text: \"ok\"", out, sizeof out), "plain t");
    char big[64];
    assert_string_equal(cli_escape_guest_text("plain text: \"ok\"", big, sizeof big), "plain text: \"ok\"");
    assert_string_equal(cli_escape_guest_text(NULL, big, sizeof big), "");
    char one[1] = { 'x' };
    assert_string_equal(cli_escape_guest_text("abc", one, sizeof one), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_log_has_no_forged_lines),
        cmocka_unit_test(test_json_log_is_valid_utf8),
        cmocka_unit_test(test_escape_cuts_between_escapes),
        cmocka_unit_test(test_injected_page_faults_are_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
