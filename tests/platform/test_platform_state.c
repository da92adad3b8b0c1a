/*
 * tests/platform/test_platform_state.c — determinism and state blobs.
 *
 * A workload drives every interrupt source the way a kernel would (LAPIC
 * periodic tick printing a line per tick through an interrupt-only UART
 * writer, HPET periodic timer in legacy mode, RTC periodic interrupt, PIT)
 * and logs every interrupt taken and every serial line. Two runs of the
 * same workload give identical logs; a run saved half way and loaded into a
 * fresh platform continues exactly as the original; corrupt, truncated or
 * inconsistent blobs are refused with a message and change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

#define HPET 0xfed00000ull
#define COM1 0x3f8

typedef struct workload {
    char tx[4096];
    size_t tx_len, tx_sent;
    unsigned ticks, hpet, rtc, pit;
    uint64_t now;
} workload;

static void cmos_set(pfx *f, uint8_t idx, uint8_t v)
{
    pfx_outb(f, 0x70, idx);
    pfx_outb(f, 0x71, v);
}

static void setup(pfx *f)
{
    pfx_lapic_enable(f);
    pfx_ioapic_route(f, 4, 37, false);
    pfx_ioapic_route(f, 2, 0x30, false);
    pfx_ioapic_route(f, 8, 0x38, false);
    pfx_outb(f, COM1 + 2, 0x07);
    pfx_outb(f, COM1 + 1, 0x05);
    pfx_w32(f, LAPIC + 0x3e0, 0xb);
    pfx_w32(f, LAPIC + 0x320, 0x20000 | 0xec);
    pfx_w32(f, LAPIC + 0x380, 1000000);             /* 1 ms tick */
    pfx_ioapic_route(f, 20, 0x50, false);
    pfx_w64(f, HPET + 0x10, 1);
    pfx_w64(f, HPET + 0x100, 0x4c | (20u << 9));
    pfx_w64(f, HPET + 0x108, 33333);
    pfx_w64(f, HPET + 0x108, 33333);                /* every 333.33 us */
    cmos_set(f, 0x0a, 0x26);
    cmos_set(f, 0x0b, 0x42);                        /* 1024 Hz periodic */
    pfx_outb(f, 0x43, 0x34);
    pfx_outb(f, 0x40, 0x00);
    pfx_outb(f, 0x40, 0x10);                        /* PIT: 3.4 ms */
}

static void handle(pfx *f, workload *w, int v)
{
    switch (v) {
    case 0xec:
        w->ticks++;
        if (w->tx_len + 64 < sizeof w->tx) {
            w->tx_len += (size_t)snprintf(w->tx + w->tx_len, sizeof w->tx - w->tx_len, "tick %u hpet %u rtc %u pit %u\n",
                                          w->ticks, w->hpet, w->rtc, w->pit);
            pfx_outb(f, COM1 + 1, 0x07);
        }
        break;
    case 37:
        for (;;) {
            uint8_t iir = pfx_inb(f, COM1 + 2);
            if (iir & 1)
                break;
            for (unsigned n = 0; n < 16 && w->tx_sent < w->tx_len; n++)
                pfx_outb(f, COM1, (uint8_t)w->tx[w->tx_sent++]);
            if (w->tx_sent == w->tx_len) {
                pfx_outb(f, COM1 + 1, 0x05);
                w->tx_len = w->tx_sent = 0;
            }
        }
        break;
    case 0x50: w->hpet++; break;
    case 0x30: w->pit++; break;
    case 0x38:
        w->rtc++;
        pfx_outb(f, 0x70, 0x0c);
        (void)pfx_inb(f, 0x71);
        break;
    default: fail_msg("unexpected vector %d", v);
    }
    pfx_eoi(f);
}

/* Run until `until` ns, jumping from deadline to deadline like a halted CPU. */
static void run(pfx *f, workload *w, uint64_t until)
{
    while (w->now < until) {
        uint64_t d = pfx_advance(f, w->now);
        int v;
        while ((v = pfx_take(f, 0)) >= 0)
            handle(f, w, v);
        d = vmt_platform_next_deadline(f->p);
        w->now = d < until ? d : until;
    }
    pfx_advance(f, w->now);
    int v;
    while ((v = pfx_take(f, 0)) >= 0)
        handle(f, w, v);
}

static void test_determinism(void **state)
{
    (void)state;
    static pfx a, b;
    workload wa = {0}, wb = {0};
    pfx_init(&a, NULL);
    pfx_init(&b, NULL);
    setup(&a);
    setup(&b);
    run(&a, &wa, 50000000);
    run(&b, &wb, 50000000);
    assert_true(wa.ticks >= 49 && wa.hpet >= 140 && wa.rtc >= 50 && wa.pit >= 14);
    assert_true(a.lines >= 45);
    assert_int_equal(a.log_len, b.log_len);
    assert_memory_equal(a.log, b.log, a.log_len);
    uint8_t *sa, *sb;
    size_t la, lb;
    assert_int_equal(vmt_platform_save(a.p, &sa, &la), VMT_OK);
    assert_int_equal(vmt_platform_save(b.p, &sb, &lb), VMT_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    free(sa);
    free(sb);
    pfx_free(&a);
    pfx_free(&b);
}

static void test_save_load_continues(void **state)
{
    (void)state;
    static pfx a, b;
    workload wa = {0};
    pfx_init(&a, NULL);
    setup(&a);
    run(&a, &wa, 20000000);
    /* Save at a quiet point of the writer (no partial line in the host). */
    while (wa.tx_len)
        run(&a, &wa, wa.now + 1000);
    uint8_t *blob;
    size_t len;
    assert_int_equal(vmt_platform_save(a.p, &blob, &len), VMT_OK);
    workload wb = wa;
    pfx_init(&b, NULL);
    if (vmt_platform_load(b.p, blob, len) != VMT_OK)
        fail_msg("load: %s", vmt_platform_error(b.p));
    pfx_check(&b);
    assert_int_equal(vmt_platform_now(b.p), wa.now);
    a.log_len = 0;
    run(&a, &wa, 45000000);
    run(&b, &wb, 45000000);
    assert_true(a.log_len > 1000);
    assert_int_equal(a.log_len, b.log_len);
    assert_memory_equal(a.log, b.log, a.log_len);
    assert_int_equal(wa.ticks, wb.ticks);
    free(blob);
    pfx_free(&a);
    pfx_free(&b);
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void reseal(uint8_t *b, size_t len)
{
    uint64_t h = fnv1a(b, len - 8);
    for (unsigned i = 0; i < 8; i++)
        b[len - 8 + i] = (uint8_t)(h >> (8 * i));
}

/* Offset of the payload of section `name`. */
static size_t section(const uint8_t *b, size_t len, const char *name)
{
    size_t at = 16;
    while (at + 16 <= len - 8) {
        uint32_t slen = (uint32_t)b[at + 12] | (uint32_t)b[at + 13] << 8 | (uint32_t)b[at + 14] << 16 |
                        (uint32_t)b[at + 15] << 24;
        if (strncmp((const char *)b + at, name, 8) == 0)
            return at + 16;
        at += 16 + slen;
    }
    fail_msg("no section %s", name);
    return 0;
}

static void test_corrupt_blobs_refused(void **state)
{
    (void)state;
    static pfx a;
    workload wa = {0};
    pfx_init(&a, NULL);
    setup(&a);
    run(&a, &wa, 3000000);
    uint8_t *good;
    size_t len;
    assert_int_equal(vmt_platform_save(a.p, &good, &len), VMT_OK);
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    /* Every single-byte change and every truncation is refused; the live
     * state stays what it was. */
    for (size_t i = 0; i < len; i += 7) {
        memcpy(bad, good, len);
        bad[i] ^= 0x20;
        assert_int_equal(vmt_platform_load(a.p, bad, len), VMT_E_FORMAT);
    }
    for (size_t n = 0; n < len; n += 13)
        assert_int_equal(vmt_platform_load(a.p, good, n), VMT_E_FORMAT);
    assert_non_null(strstr(vmt_platform_error(a.p), "platform state"));
    uint8_t *again;
    size_t len2;
    assert_int_equal(vmt_platform_save(a.p, &again, &len2), VMT_OK);
    assert_int_equal(len, len2);
    assert_memory_equal(good, again, len);
    free(again);
    /* Checksum right, contents wrong: refused by the device checks. */
    memcpy(bad, good, len);
    size_t uart = section(bad, len, "uart");
    bad[uart + 2 + 7 + 2 + 16 + 1] = 40; /* rx_count 40 in a 16-byte FIFO */
    reseal(bad, len);
    assert_int_equal(vmt_platform_load(a.p, bad, len), VMT_E_FORMAT);
    if (!strstr(vmt_platform_error(a.p), "uart"))
        fail_msg("%s", vmt_platform_error(a.p));
    memcpy(bad, good, len);
    size_t lapic = section(bad, len, "lapic");
    bad[lapic + 4 + 8 + 4 * 5 + 8] |= 0x08; /* IRR[0] bit 3: vector 3 */
    reseal(bad, len);
    assert_int_equal(vmt_platform_load(a.p, bad, len), VMT_E_FORMAT);
    assert_non_null(strstr(vmt_platform_error(a.p), "vector below 16"));
    memcpy(bad, good, len);
    size_t ioapic = section(bad, len, "ioapic");
    bad[ioapic + 12 + 8 * 4 + 3] = 0x01; /* entry 4: reserved bit 24 */
    reseal(bad, len);
    assert_int_equal(vmt_platform_load(a.p, bad, len), VMT_E_FORMAT);
    assert_non_null(strstr(vmt_platform_error(a.p), "ioapic"));
    /* A boolean that is not 0/1. */
    memcpy(bad, good, len);
    bad[uart + 2 + 7] = 2; /* fifo_enabled */
    reseal(bad, len);
    assert_int_equal(vmt_platform_load(a.p, bad, len), VMT_E_FORMAT);
    /* Other machine shape. */
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.vcpus = 2;
    static pfx two;
    pfx_init(&two, &c);
    assert_int_equal(vmt_platform_load(two.p, good, len), VMT_E_CONFLICT);
    pfx_check(&two);
    pfx_free(&two);
    /* Still loads fine; a partial line of the old timeline is dropped. */
    pfx_outb(&a, COM1, 'x');
    unsigned lines = a.lines;
    assert_int_equal(vmt_platform_load(a.p, good, len), VMT_OK);
    vmt_platform_serial_flush(a.p);
    assert_int_equal(a.lines, lines);
    pfx_check(&a);
    free(bad);
    free(good);
    pfx_free(&a);
}

static void test_reset_restores_power_on_state(void **state)
{
    (void)state;
    static pfx a, fresh;
    workload wa = {0};
    pfx_init(&a, NULL);
    pfx_init(&fresh, NULL);
    setup(&a);
    run(&a, &wa, 2000000);
    vmt_platform_reset(a.p);
    pfx_check(&a);
    assert_int_equal(vmt_platform_next_deadline(a.p), UINT64_MAX);
    assert_int_equal(pfx_pending(&a, 0), -1);
    assert_int_equal(pfx_r32(&a, LAPIC + 0xf0), 0xff);
    /* Same as a new platform, apart from the time. */
    pfx_advance(&fresh, vmt_platform_now(a.p));
    vmt_platform_reset(fresh.p);
    uint8_t *sa, *sb;
    size_t la, lb;
    assert_int_equal(vmt_platform_save(a.p, &sa, &la), VMT_OK);
    assert_int_equal(vmt_platform_save(fresh.p, &sb, &lb), VMT_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    free(sa);
    free(sb);
    pfx_free(&a);
    pfx_free(&fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_save_load_continues),
        cmocka_unit_test(test_corrupt_blobs_refused),
        cmocka_unit_test(test_reset_restores_power_on_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
