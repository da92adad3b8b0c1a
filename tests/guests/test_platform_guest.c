/*
 * tests/guests/test_platform_guest.c — the platform guest (guests/platform)
 * on the emulator driver with the PC platform as its bus. The guest
 * programs the LAPIC timer (one-shot, TSC-deadline), routes the UART's IRQ
 * 4 through the IOAPIC and transmits only from THRE interrupts, checks the
 * HPET against the TSC, reads the RTC, calibrates against the PIT and receives the line the host types
 * in answer to its prompt through the RX interrupt, asserting from inside. The host
 * checks that it finished, that the interrupt-driven text came out as
 * serial lines, that the RTC showed the configured epoch, and that two runs
 * give the same serial output, reports and final device state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guest_runner.h"
#include "vmtrap/platform.h"

#define RAM_SIZE (64ULL << 20)
#define TSC_HZ 2000000000ULL
#define EPOCH 1796455815 /* 2026-12-05 07:30:15 UTC */

typedef struct lines {
    char text[16384];
    size_t len;
    unsigned count;
    vmt_platform *p;
} lines;

/* A terminal on COM1: answers the guest's prompt with a line of input. */
static void on_line(void *ctx, const char *line)
{
    lines *l = ctx;
    if (strcmp(line, "rx ready") == 0)
        assert_int_equal(vmt_platform_serial_input(l->p, "ping from the host\n", 19), VMT_OK);
    int n = snprintf(l->text + l->len, sizeof l->text - l->len, "%s\n", line);
    if (n > 0 && (size_t)n < sizeof l->text - l->len)
        l->len += (size_t)n;
    l->count++;
}

typedef struct result {
    lines serial;
    uint8_t *state;
    size_t state_len;
    uint64_t rtc_ymd, rtc_hms, uart_irqs, oneshot_ns;
} result;

static void run_guest(result *out)
{
    memset(out, 0, sizeof *out);
    vmt_platform_config pc;
    memset(&pc, 0, sizeof pc);
    pc.tsc_hz = TSC_HZ;
    pc.rtc_epoch_s = EPOCH;
    pc.serial = on_line;
    pc.serial_ctx = &out->serial;
    vmt_platform *p;
    char why[256];
    assert_int_equal(vmt_platform_create(&pc, &p, why, sizeof why), VMT_OK);
    out->serial.p = p;
    vmt_bus bus = vmt_platform_bus(p);
    vmt_clock_config clock = { .insns_per_sec = 1000000000ULL, .tsc_hz = TSC_HZ, .start_ns = 0 };
    guest_param param = { "platform_tsc_mhz", (uint32_t)(TSC_HZ / 1000000) };
    char path[512];
    snprintf(path, sizeof path, "%s/platform.elf", VMT_GUEST_DIR);
    guest_run r;
    vmt_status st = guest_run_elf_machine("emu", path, RAM_SIZE, &bus, &clock, &param, 1, 60.0, &r);
    if (st == VMT_E_NOTSUP) {
        print_message("SKIP: %s\n", r.error);
        vmt_platform_destroy(p);
        exit(77);
    }
    if (st != VMT_OK || !r.done || r.exit_code != 0) {
        guest_run_dump(&r);
        printf("serial:\n%s", out->serial.text);
        fail_msg("platform guest: %s (%s)", vmt_strerror(st), r.error);
    }
    assert_int_equal(vmt_platform_check(p), VMT_OK);
    int found;
    out->rtc_ymd = guest_run_report(&r, "rtc.ymd", &found);
    assert_true(found);
    out->rtc_hms = guest_run_report(&r, "rtc.hms", &found);
    assert_true(found);
    out->uart_irqs = guest_run_report(&r, "uart.interrupts", &found);
    assert_true(found);
    out->oneshot_ns = guest_run_report(&r, "timer.oneshot_ns", &found);
    assert_true(found);
    assert_true(guest_run_report(&r, "timer.tsc_deadline", &found) == 1 && found);
    guest_run_report(&r, "hpet.ns", &found);
    assert_true(found);
    assert_true(guest_run_report(&r, "pit.irq0", &found) >= 3 && found);
    assert_int_equal(vmt_platform_save(p, &out->state, &out->state_len), VMT_OK);
    guest_run_free(&r);
    vmt_platform_destroy(p);
}

static void platform_guest_runs(void **state)
{
    (void)state;
    result a;
    run_guest(&a);
    /* The interrupt-only writer's text, line by line, in order. */
    const char *want[] = {
        "platform guest: console line 1 of the interrupt-driven writer\n",
        "platform guest: the 8250 driver sends 16 bytes per THRE interrupt\n",
        "platform guest: last line\n",
        "got: ping from the host\n",
    };
    const char *at = a.serial.text;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *hit = strstr(at, want[i]);
        if (!hit)
            fail_msg("serial output lacks \"%s\":\n%s", want[i], a.serial.text);
        at = hit + strlen(want[i]);
    }
    assert_true(a.uart_irqs >= 1);
    /* The RTC showed the machine's epoch (the run lasts well under a minute). */
    assert_int_equal(a.rtc_ymd, 0x20261205);
    assert_int_equal(a.rtc_hms >> 8, 0x0730);
    assert_true((a.rtc_hms & 0xff) >= 0x15 && (a.rtc_hms & 0xff) <= 0x59);
    assert_true(a.oneshot_ns >= 2000000);
    free(a.state);
}

static void platform_guest_is_deterministic(void **state)
{
    (void)state;
    result a, b;
    run_guest(&a);
    run_guest(&b);
    assert_int_equal(a.serial.len, b.serial.len);
    assert_memory_equal(a.serial.text, b.serial.text, a.serial.len);
    assert_int_equal(a.oneshot_ns, b.oneshot_ns);
    assert_int_equal(a.uart_irqs, b.uart_irqs);
    assert_int_equal(a.state_len, b.state_len);
    assert_memory_equal(a.state, b.state, a.state_len);
    free(a.state);
    free(b.state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(platform_guest_runs),
        cmocka_unit_test(platform_guest_is_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
