/*
 * tests/cli/test_cli_decode.c — a decoded argument says when what is shown
 * was cut (tools/decode.c).
 *
 * Guest strings and buffers are shown escaped (\xNN for non-printable bytes,
 * up to 4 characters per byte), so a string that fits the read buffer may
 * not fit the shown text. `truncated` must then be set, or the log presents
 * a cut string as the whole argument. Runs cli_decode_hit() on a monitor over
 * the mem driver (boot-protocol identity tables), with the string in RAM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"
#include "vmtrap/image.h"
#include "vmtrap/mem.h"
#include "vmtrap/session.h"

#define RAM_SIZE (4ULL << 20)
#define STR_PA 0x3000ULL

typedef struct fixture {
    vmt_driver *drv; /* owned by the session */
    vmt_session *s;
    vmt_image *img;
    vmt_monitor *m;
    cli_decoder *dec; /* svc_open's prototype from the workload's DWARF */
    vmt_hit hit;
} fixture;

static vmt_status write_phys_cb(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    return vmt_drv_write_phys(ctx, pa, buf, len);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    char why[256];
    static const uint8_t hlt[] = { 0xf4 };
    vmt_image_segment seg = { .pa = 0x1000, .data = hlt, .filesz = 1, .memsz = 1 };
    assert_int_equal(vmt_image_from_segments(&seg, 1, NULL, RAM_SIZE, &f->img, why, sizeof why), VMT_OK);
    vmt_mem_config mc = { .ram_frames = RAM_SIZE / VMT_PAGE_SIZE, .extra_frames = 16 };
    assert_int_equal(vmt_mem_driver_create(&mc, &f->drv, why, sizeof why), VMT_OK);
    vmt_regs regs;
    assert_int_equal(vmt_image_place(f->img, RAM_SIZE, write_phys_cb, f->drv, &regs, why, sizeof why), VMT_OK);
    assert_int_equal(vmt_drv_set_regs(f->drv, 0, &regs), VMT_OK);
    assert_int_equal(vmt_session_create(f->drv, NULL, &f->s), VMT_OK);
    if (vmt_monitor_create(f->s, f->img, &f->m, why, sizeof why) != VMT_OK)
        fail_msg("vmt_monitor_create: %s", why);
    char err[256];
    if (cli_decoder_open(VMT_GUEST_DIR "/workload.elf", NULL, &f->dec, err, sizeof err) != 0 ||
        !cli_decoder_knows(f->dec, "svc_open"))
        fail_msg("decoder: %s %s", err, f->dec ? cli_decoder_note(f->dec) : "");
    f->hit.monitor = f->m;
    f->hit.symbol = "svc_open";
    f->hit.count = 1;
    f->hit.root = regs.cr3 & VMT_CR3_ADDR_MASK;
    f->hit.regs = regs;
    f->hit.regs.rdi = STR_PA; /* identity-mapped */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cli_decoder_close(f->dec);
    vmt_monitor_destroy(f->m);
    vmt_session_destroy(f->s);
    vmt_image_destroy(f->img);
    free(f);
    return 0;
}

static void decode_string(fixture *f, const char *s, cli_call *call)
{
    assert_int_equal(vmt_session_write_pa(f->s, STR_PA, s, strlen(s) + 1), VMT_OK); /* also drops cached frames */
    cli_decode_hit(f->dec, &f->hit, call);
    assert_int_equal(call->nargs, 1);
    assert_int_equal(call->args[0].read_status, VMT_OK);
}

static void test_short_string_is_whole(void **state)
{
    fixture *f = *state;
    cli_call call;
    decode_string(f, "/etc/\x01passwd", &call);
    assert_string_equal(call.args[0].text, "/etc/\\x01passwd");
    assert_false(call.args[0].truncated);
}

static void test_escaped_string_cut_is_truncated(void **state)
{
    fixture *f = *state;
    /* 60 bytes: fits the read buffer, but escaped (240 chars) not the text */
    char s[61];
    memset(s, 0x01, 60);
    s[60] = 0;
    cli_call call;
    decode_string(f, s, &call);
    assert_int_equal(call.args[0].nbytes, 60);
    assert_true(strlen(call.args[0].text) < 240);
    assert_true(call.args[0].truncated);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_short_string_is_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaped_string_cut_is_truncated, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
