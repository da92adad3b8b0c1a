/*
 * tests/os/test_os_dwarf.c — prototypes of the workload guest's services
 * from its DWARF (no table), and the shared decoder on them: strings,
 * buffers sized by their length parameter, integers, and reads that fail
 * reported as not present at the exact address.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "vmtrap/proto.h"

#define WORKLOAD VMT_GUEST_DIR "/workload.elf"

/* Guest memory for the decoder: one 8 KiB window at 0x10000; the page at
 * 0x12000 and above is "paged out". */
static uint8_t mem[0x2000];

static vmt_status fake_read(void *ctx, uint64_t va, void *buf, size_t len, size_t *done)
{
    (void)ctx;
    size_t got = 0;
    while (got < len) {
        uint64_t a = va + got;
        if (a < 0x10000 || a >= 0x12000) {
            *done = got;
            return VMT_E_NOT_PRESENT;
        }
        ((uint8_t *)buf)[got++] = mem[a - 0x10000];
    }
    *done = got;
    return VMT_OK;
}

static const vmt_vreader rd = { fake_read, NULL };

static int setup(void **state)
{
    vmt_dwarf *dw;
    char why[256];
    if (vmt_dwarf_open(WORKLOAD, &dw, why, sizeof why) != VMT_OK) {
        print_error("%s\n", why);
        return -1;
    }
    *state = dw;
    return 0;
}

static int teardown(void **state)
{
    vmt_dwarf_close(*state);
    return 0;
}

static void services_have_prototypes(void **state)
{
    vmt_dwarf *dw = *state;
    vmt_proto p;
    assert_int_equal(vmt_dwarf_proto(dw, "svc_open", &p), VMT_OK);
    assert_string_equal(p.source, "dwarf");
    assert_int_equal(p.nparams, 1);
    assert_string_equal(p.params[0].name, "path");
    assert_int_equal(p.params[0].kind, VMT_PARAM_STRING);
    assert_true(p.has_ret);
    assert_int_equal(p.ret.kind, VMT_PARAM_INT);
    assert_string_equal(p.text, "int64_t svc_open(const char * path)");

    assert_int_equal(vmt_dwarf_proto(dw, "svc_write", &p), VMT_OK);
    assert_int_equal(p.nparams, 3);
    assert_string_equal(p.params[0].name, "fd");
    assert_int_equal(p.params[0].kind, VMT_PARAM_INT);
    assert_string_equal(p.params[1].name, "buf");
    assert_int_equal(p.params[1].kind, VMT_PARAM_BUFFER);
    assert_int_equal(p.params[1].len_param, 2);
    assert_int_equal(p.params[2].kind, VMT_PARAM_UINT);

    assert_int_equal(vmt_dwarf_proto(dw, "svc_spawn", &p), VMT_OK);
    assert_int_equal(p.params[0].kind, VMT_PARAM_STRING);
    assert_string_equal(p.params[0].name, "name");

    /* Assembly: the C declaration gives the type, not the name. */
    assert_int_equal(vmt_dwarf_proto(dw, "svc_exit", &p), VMT_OK);
    assert_int_equal(p.nparams, 1);
    assert_int_equal(p.params[0].kind, VMT_PARAM_INT);
    assert_string_equal(p.params[0].name, "arg0");

    assert_int_equal(vmt_dwarf_proto(dw, "no_such_function", &p), VMT_E_NOTFOUND);
    assert_non_null(strstr(vmt_dwarf_error(dw), "no_such_function"));
}

static void decode_write_and_open(void **state)
{
    vmt_dwarf *dw = *state;
    vmt_proto p;
    vmt_value v[VMT_PROTO_MAX_PARAMS];
    vmt_regs r;
    memset(&r, 0, sizeof r);
    memcpy(mem + 0x100, "tick 7\n and more", 16);
    assert_int_equal(vmt_dwarf_proto(dw, "svc_write", &p), VMT_OK);
    r.rdi = (uint64_t)-1;
    r.rsi = 0x10100;
    r.rdx = 7;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_true(v[0].raw == (uint64_t)-1); /* signed */
    assert_int_equal(v[1].read_status, VMT_OK);
    assert_int_equal(v[1].nbytes, 7);
    assert_memory_equal(v[1].text, "tick 7\n", 7);
    assert_false(v[1].truncated);
    /* A buffer crossing into the paged-out page: what was read, then where it stopped. */
    r.rsi = 0x11ffc;
    r.rdx = 100;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[1].read_status, VMT_E_NOT_PRESENT);
    assert_true(v[1].fault_va == 0x12000);
    assert_true(v[1].truncated);

    assert_int_equal(vmt_dwarf_proto(dw, "svc_open", &p), VMT_OK);
    strcpy((char *)mem + 0x200, "/etc/motd");
    r.rdi = 0x10200;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[0].read_status, VMT_OK);
    assert_string_equal(v[0].text, "/etc/motd");
    /* A string running into the paged-out page. */
    memset(mem + 0x1ff0, 'A', 0x10);
    r.rdi = 0x11ff0;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[0].read_status, VMT_E_NOT_PRESENT);
    assert_true(v[0].fault_va == 0x12000);
    assert_int_equal(v[0].nbytes, 16);
    /* Entirely paged out. */
    r.rdi = 0x50000;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[0].read_status, VMT_E_NOT_PRESENT);
    assert_true(v[0].fault_va == 0x50000);

    /* The return value: rax, sign-extended. */
    vmt_value ret;
    r.rax = (uint64_t)-2;
    vmt_proto_decode_ret(&p, &r, &rd, &ret);
    assert_string_equal(ret.name, "ret");
    assert_true((int64_t)ret.raw == -2);
}

static void open_errors(void **state)
{
    (void)state;
    vmt_dwarf *dw;
    char why[256];
    assert_int_equal(vmt_dwarf_open("/nonexistent.elf", &dw, why, sizeof why), VMT_E_IO);
    assert_null(dw);
    assert_int_equal(vmt_dwarf_open("/etc/hostname", &dw, why, sizeof why), VMT_E_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(services_have_prototypes, setup, teardown),
        cmocka_unit_test_setup_teardown(decode_write_and_open, setup, teardown),
        cmocka_unit_test(open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
