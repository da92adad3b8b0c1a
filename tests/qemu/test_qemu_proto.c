/*
 * tests/qemu/test_qemu_proto.c — the GDB remote protocol parser on its own:
 * framing, escapes, run lengths, checksums, stop replies and the target
 * description, with the malformed and hostile inputs a stub could send.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "drivers/qemu/gdb_proto.h"

static vmt_status scan(const char *in, gdb_scan_kind *kind, size_t *used, char *out, size_t cap, size_t *olen)
{
    char why[200];
    return gdb_scan((const uint8_t *)in, strlen(in), kind, used, out, cap, olen, why, sizeof why);
}

static void scan_acks_and_packets(void **state)
{
    (void)state;
    gdb_scan_kind k;
    size_t used, olen;
    char out[256];
    assert_int_equal(scan("+$OK#9a", &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_ACK);
    assert_int_equal(used, 1);
    assert_int_equal(scan("$OK#9a+", &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_PACKET);
    assert_int_equal(used, 6);
    assert_string_equal(out, "OK");
    assert_int_equal(scan("-", &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_NAK);
    /* Partial input: need more, consume nothing. */
    assert_int_equal(scan("$OK#9", &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(scan("$O", &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_MORE);
}

static void scan_decodes_escapes_and_run_lengths(void **state)
{
    (void)state;
    char framed[64], out[64];
    size_t n = gdb_frame("a$b#c}d*e", 9, framed, sizeof framed);
    assert_true(n > 0);
    gdb_scan_kind k;
    size_t used, olen;
    assert_int_equal(scan(framed, &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_int_equal(k, GDB_SCAN_PACKET);
    assert_string_equal(out, "a$b#c}d*e");
    /* "0* " = '0' then 3 more: "0000" (' ' is 32 = 29 + 3). */
    const char *rle = "$0* #";
    char buf[16];
    unsigned sum = '0' + '*' + ' ';
    snprintf(buf, sizeof buf, "%s%02x", rle, sum & 0xff);
    assert_int_equal(scan(buf, &k, &used, out, sizeof out, &olen), VMT_OK);
    assert_string_equal(out, "0000");
}

static void scan_rejects_hostile_input(void **state)
{
    (void)state;
    gdb_scan_kind k;
    size_t used, olen;
    char out[8];
    assert_int_equal(scan("$OK#00", &k, &used, out, sizeof out, &olen), VMT_E_FORMAT); /* bad checksum */
    assert_int_equal(used, 6);
    assert_int_equal(scan("xyz", &k, &used, out, sizeof out, &olen), VMT_E_FORMAT);   /* junk */
    assert_int_equal(used, 1);
    assert_int_equal(scan("$OK#zz", &k, &used, out, sizeof out, &olen), VMT_E_FORMAT); /* checksum not hex */
    char buf[32];
    /* '*' first: nothing to repeat. */
    assert_int_equal(scan("$*#2a", &k, &used, out, sizeof out, &olen), VMT_E_FORMAT);
    /* Escape as the last byte. */
    snprintf(buf, sizeof buf, "$a}#%02x", ('a' + '}') & 0xff);
    assert_int_equal(scan(buf, &k, &used, out, sizeof out, &olen), VMT_E_FORMAT);
    /* A run length that expands past the output buffer (8 bytes). */
    snprintf(buf, sizeof buf, "$a*~#%02x", ('a' + '*' + '~') & 0xff);
    assert_int_equal(scan(buf, &k, &used, out, sizeof out, &olen), VMT_E_FORMAT);
    /* Longer than the buffer without a run length. */
    snprintf(buf, sizeof buf, "$0123456789#%02x", (10 * '0' + 45) & 0xff);
    assert_int_equal(scan(buf, &k, &used, out, sizeof out, &olen), VMT_E_FORMAT);
}

static void hex_and_numbers_are_strict(void **state)
{
    (void)state;
    uint8_t b[4];
    assert_int_equal(gdb_hex_to_bytes("0aFf", 4, b, 2), VMT_OK);
    assert_int_equal(b[0], 0x0a);
    assert_int_equal(b[1], 0xff);
    assert_int_equal(gdb_hex_to_bytes("0aF", 3, b, 2), VMT_E_FORMAT);
    assert_int_equal(gdb_hex_to_bytes("0g", 2, b, 1), VMT_E_FORMAT);
    uint64_t v;
    assert_int_equal(gdb_parse_u64("ffffffff81000000", 16, &v), VMT_OK);
    assert_true(v == 0xffffffff81000000ull);
    assert_int_equal(gdb_parse_u64("1ffffffff81000000", 17, &v), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_u64("", 0, &v), VMT_E_FORMAT);
    int code;
    assert_true(gdb_is_error("E14", 3, &code));
    assert_int_equal(code, 0x14);
    assert_false(gdb_is_error("EE", 2, &code));
}

static void stop_replies(void **state)
{
    (void)state;
    gdb_stop st;
    char why[200];
    const char *t = "T05thread:p01.01;";
    assert_int_equal(gdb_parse_stop(t, strlen(t), &st, why, sizeof why), VMT_OK);
    assert_int_equal(st.type, 'T');
    assert_int_equal(st.signal, 5);
    assert_true(st.has_thread);
    assert_false(st.has_watch);
    const char *w = "T05watch:ffff888000100000;thread:p01.01;";
    assert_int_equal(gdb_parse_stop(w, strlen(w), &st, why, sizeof why), VMT_OK);
    assert_true(st.has_watch);
    assert_int_equal(st.watch_kind, 'w');
    assert_true(st.watch_addr == 0xffff888000100000ull);
    assert_int_equal(gdb_parse_stop("W00", 3, &st, why, sizeof why), VMT_OK);
    assert_int_equal(st.type, 'W');
    assert_int_equal(gdb_parse_stop("O4142", 5, &st, why, sizeof why), VMT_OK);
    /* malformed */
    assert_int_equal(gdb_parse_stop("T5", 2, &st, why, sizeof why), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_stop("OK", 2, &st, why, sizeof why), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_stop("T05watch:zz;", 12, &st, why, sizeof why), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_stop("T05nocolon;", 11, &st, why, sizeof why), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_stop("", 0, &st, why, sizeof why), VMT_E_FORMAT);
    assert_int_equal(gdb_parse_stop("W00junk", 7, &st, why, sizeof why), VMT_E_FORMAT);
}

static const char feature[] =
    "<?xml version=\"1.0\"?><!DOCTYPE feature SYSTEM \"gdb-target.dtd\"><feature name=\"x\">"
    "<reg name=\"rax\" bitsize=\"64\" regnum=\"0\"/><reg name=\"rbx\" bitsize=\"64\"/>"
    "<!-- <reg name=\"hidden\" bitsize=\"64\"/> -->"
    "<reg name=\"eflags\" bitsize=\"32\"/><reg name=\"xmm0\" bitsize=\"128\"/><reg name=\"rip\" bitsize=\"64\"/>"
    "</feature>";

static void target_description_layout(void **state)
{
    (void)state;
    gdb_tdesc td;
    char why[200];
    gdb_tdesc_init(&td);
    const char *top = "<?xml version=\"1.0\"?><target><architecture>i386:x86-64</architecture>"
                      "<xi:include href=\"i386-64bit.xml\"/></target>";
    assert_int_equal(gdb_tdesc_parse(&td, top, strlen(top), why, sizeof why), VMT_OK);
    assert_string_equal(td.arch, "i386:x86-64");
    assert_int_equal(td.nincludes, 1);
    assert_string_equal(td.includes[0], "i386-64bit.xml");
    assert_int_equal(gdb_tdesc_parse(&td, feature, strlen(feature), why, sizeof why), VMT_OK);
    assert_int_equal(gdb_tdesc_layout(&td, why, sizeof why), VMT_OK);
    assert_int_equal(td.nregs, 5); /* the commented-out register is not one */
    assert_null(gdb_tdesc_find(&td, "hidden"));
    assert_int_equal(gdb_tdesc_find(&td, "eflags")->offset, 16);
    assert_int_equal(gdb_tdesc_find(&td, "rip")->offset, 16 + 4 + 16);
    assert_int_equal(td.g_bytes, 16 + 4 + 16 + 8);
}

static void target_description_hostile(void **state)
{
    (void)state;
    gdb_tdesc td;
    char why[200];
    static const char *const bad[] = {
        "<target><xi:include href=\"../etc/passwd\"/></target>",
        "<target><xi:include href=\"/etc/passwd\"/></target>",
        "<target><reg name=\"a\" bitsize=\"7\"/></target>",
        "<target><reg name=\"a\" bitsize=\"99999999999\"/></target>",
        "<target><reg bitsize=\"64\"/></target>",
        "<target><reg name=\"a\" bitsize=\"64\" regnum=\"-1\"/></target>",
        "<target><reg name=\"a\"",
        "not xml at all",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gdb_tdesc_init(&td);
        why[0] = '\0';
        assert_int_equal(gdb_tdesc_parse(&td, bad[i], strlen(bad[i]), why, sizeof why), VMT_E_FORMAT);
        assert_true(strlen(why) > 0);
    }
    /* Duplicate register numbers cannot be laid out. */
    gdb_tdesc_init(&td);
    const char *dup = "<target><reg name=\"a\" bitsize=\"64\" regnum=\"0\"/><reg name=\"b\" bitsize=\"64\" regnum=\"0\"/></target>";
    assert_int_equal(gdb_tdesc_parse(&td, dup, strlen(dup), why, sizeof why), VMT_OK);
    assert_int_equal(gdb_tdesc_layout(&td, why, sizeof why), VMT_E_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scan_acks_and_packets),
        cmocka_unit_test(scan_decodes_escapes_and_run_lengths),
        cmocka_unit_test(scan_rejects_hostile_input),
        cmocka_unit_test(hex_and_numbers_are_strict),
        cmocka_unit_test(stop_replies),
        cmocka_unit_test(target_description_layout),
        cmocka_unit_test(target_description_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
