/*
 * tests/platform/test_platform_timers.c — PIT 8254 (Linux's clockevent and
 * calibration paths, latches, read-back, port 0x61), HPET (capabilities,
 * counter from virtual time, comparators in one-shot, periodic and level
 * modes, legacy replacement routing), RTC/CMOS (time from the epoch in BCD
 * and binary, 12-hour mode, SET, UIP, periodic and update interrupts,
 * NVRAM) and the ACPI PM timer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

#define HPET 0xfed00000ull

/* ---------- PIT ---------- */

static void test_pit_periodic_irq0(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 2, 0x30, false);
    assert_int_equal(pfx_advance(&f, 0), UINT64_MAX); /* unprogrammed: no IRQ 0 */
    pfx_outb(&f, 0x43, 0x34);  /* channel 0, lsb/msb, mode 2 */
    pfx_outb(&f, 0x40, 11932 & 0xff);
    pfx_outb(&f, 0x40, 11932 >> 8); /* 100 Hz */
    assert_int_equal(vmt_platform_next_deadline(f.p), 10000151);
    assert_int_equal(pfx_advance(&f, 10000151), 20000302);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    /* Mode 0 one-shot (Linux's pit_set_next_event). */
    pfx_outb(&f, 0x43, 0x30);
    assert_int_equal(vmt_platform_next_deadline(f.p), UINT64_MAX);
    pfx_outb(&f, 0x40, 1000 & 0xff);
    pfx_outb(&f, 0x40, 1000 >> 8);
    assert_int_equal(pfx_advance(&f, 10000151 + 838096), UINT64_MAX);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_free(&f);
}

static void test_pit_channel2_calibration(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    /* pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0. */
    pfx_outb(&f, 0x61, (uint8_t)((pfx_inb(&f, 0x61) & ~0x02) | 0x01));
    pfx_outb(&f, 0x43, 0xb0);
    pfx_outb(&f, 0x42, 1000 & 0xff);
    pfx_outb(&f, 0x42, 1000 >> 8);
    assert_int_equal(pfx_inb(&f, 0x61) & 0x20, 0);
    pfx_advance(&f, 419048);                      /* 500 ticks */
    pfx_outb(&f, 0x43, 0x80);                     /* latch channel 2 */
    pfx_advance(&f, 600000);                      /* the latch holds */
    uint16_t c = pfx_inb(&f, 0x42);
    c |= (uint16_t)(pfx_inb(&f, 0x42) << 8);
    assert_int_equal(c, 500);
    assert_int_equal(pfx_inb(&f, 0x61) & 0x20, 0);
    pfx_advance(&f, 838096);                      /* terminal count: OUT high */
    assert_int_equal(pfx_inb(&f, 0x61) & 0x20, 0x20);
    /* Read-back: status of channel 2 = OUT high, lsb/msb, mode 0. */
    pfx_outb(&f, 0x43, 0xe8);
    assert_int_equal(pfx_inb(&f, 0x42), 0xb0);
    /* Gate low pauses a mode 0 count. */
    pfx_outb(&f, 0x43, 0xb0);
    pfx_outb(&f, 0x42, 0x00);
    pfx_outb(&f, 0x42, 0x10);                     /* 4096 */
    pfx_outb(&f, 0x61, 0x00);
    pfx_advance(&f, 2000000);
    pfx_outb(&f, 0x43, 0x80);
    c = pfx_inb(&f, 0x42);
    c |= (uint16_t)(pfx_inb(&f, 0x42) << 8);
    assert_int_equal(c, 4096);
    pfx_free(&f);
}

/* ---------- HPET ---------- */

static void test_hpet_counter(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    assert_int_equal(pfx_r64(&f, HPET), 0x009896808086a201ull);
    assert_int_equal(pfx_r32(&f, HPET + 4), 10000000u); /* period, fs */
    pfx_advance(&f, 1000);
    assert_int_equal(pfx_r64(&f, HPET + 0xf0), 0);      /* halted */
    pfx_w64(&f, HPET + 0x10, 1);                        /* ENABLE_CNF */
    pfx_advance(&f, 1000 + 12345);
    assert_int_equal(pfx_r64(&f, HPET + 0xf0), 1234);
    pfx_w64(&f, HPET + 0x10, 0);
    pfx_advance(&f, 99999);
    assert_int_equal(pfx_r32(&f, HPET + 0xf0), 1234);
    pfx_w32(&f, HPET + 0xf4, 1);                        /* high half, while halted */
    assert_int_equal(pfx_r64(&f, HPET + 0xf0), (1ull << 32) + 1234);
    pfx_free(&f);
}

static void test_hpet_legacy_oneshot_and_periodic(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 2, 0x30, false);
    /* The PIT, programmed, is disconnected once legacy replacement is on. */
    pfx_outb(&f, 0x43, 0x34);
    pfx_outb(&f, 0x40, 100);
    pfx_outb(&f, 0x40, 0);
    pfx_w64(&f, HPET + 0x10, 3);                 /* enable + legacy */
    pfx_w64(&f, HPET + 0x100, 0x4);              /* timer 0: interrupts on, one-shot */
    pfx_w64(&f, HPET + 0x108, 100);              /* counter 100 = 1000 ns */
    pfx_advance(&f, 999);
    assert_int_equal(pfx_pending(&f, 0), -1);    /* no PIT IRQ 0 either */
    pfx_advance(&f, 1000);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    pfx_advance(&f, 5000);
    assert_int_equal(pfx_pending(&f, 0), -1);
    /* Periodic the way Linux programs it: VAL_SET, comparator, then period. */
    pfx_w64(&f, HPET + 0x100, 0x4c);
    pfx_w64(&f, HPET + 0x108, 500 + 50);         /* first at counter 550 */
    pfx_w64(&f, HPET + 0x108, 50);               /* then every 50 ticks */
    assert_int_equal(pfx_advance(&f, 5500), 6000);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    assert_int_equal(pfx_r64(&f, HPET + 0x108), 600);
    assert_int_equal(pfx_advance(&f, 6000), 6500);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    pfx_free(&f);
}

static void test_hpet_level_status(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 20, 0x50, true);
    pfx_w64(&f, HPET + 0x10, 1);
    pfx_w64(&f, HPET + 0x140, 0x6 | (20u << 9)); /* timer 2: level, enabled, pin 20 */
    assert_int_equal(pfx_r64(&f, HPET + 0x140) >> 9 & 0x1f, 20);
    pfx_w64(&f, HPET + 0x148, 10);
    pfx_advance(&f, 100);
    assert_int_equal(pfx_r64(&f, HPET + 0x20), 0x4);
    assert_int_equal(pfx_take(&f, 0), 0x50);
    pfx_eoi(&f);
    assert_int_equal(pfx_take(&f, 0), 0x50);     /* status still set: line still high */
    pfx_w64(&f, HPET + 0x20, 0x4);               /* write 1 to clear */
    pfx_eoi(&f);
    assert_int_equal(pfx_pending(&f, 0), -1);
    assert_int_equal(pfx_r64(&f, HPET + 0x20), 0);
    pfx_free(&f);
}

/* ---------- RTC ---------- */

static uint8_t cmos(pfx *f, uint8_t idx)
{
    pfx_outb(f, 0x70, idx);
    return pfx_inb(f, 0x71);
}

static void cmos_set(pfx *f, uint8_t idx, uint8_t v)
{
    pfx_outb(f, 0x70, idx);
    pfx_outb(f, 0x71, v);
}

static void rtc_platform(pfx *f)
{
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.rtc_epoch_s = 1796455815; /* 2026-12-05 07:30:15 UTC, a Saturday */
    pfx_init(f, &c);
}

static void test_rtc_time(void **state)
{
    (void)state;
    pfx f;
    rtc_platform(&f);
    assert_int_equal(cmos(&f, 0), 0x15);
    assert_int_equal(cmos(&f, 2), 0x30);
    assert_int_equal(cmos(&f, 4), 0x07);
    assert_int_equal(cmos(&f, 6), 7);
    assert_int_equal(cmos(&f, 7), 0x05);
    assert_int_equal(cmos(&f, 8), 0x12);
    assert_int_equal(cmos(&f, 9), 0x26);
    assert_int_equal(cmos(&f, 0x32), 0x20);
    assert_int_equal(cmos(&f, 0x0d), 0x80);
    pfx_advance(&f, 2500000000ull);
    assert_int_equal(cmos(&f, 0), 0x17);
    assert_int_equal(cmos(&f, 0x0a) & 0x80, 0);   /* mid-second: no update in progress */
    pfx_advance(&f, 2999800000ull);
    assert_int_equal(cmos(&f, 0x0a) & 0x80, 0x80); /* last 244 us of the second */
    cmos_set(&f, 0x0b, 0x06);                      /* binary, 24 h */
    assert_int_equal(cmos(&f, 0), 17);
    cmos_set(&f, 0x0b, 0x84);                      /* SET, binary, 12 h */
    cmos_set(&f, 4, 0x80 | 1);                     /* 1 PM */
    cmos_set(&f, 0x0b, 0x04);
    assert_int_equal(cmos(&f, 4), 0x81);
    cmos_set(&f, 0x0b, 0x06);
    assert_int_equal(cmos(&f, 4), 13);
    assert_int_equal(cmos(&f, 2), 30);
    /* NVRAM, both banks. */
    cmos_set(&f, 0x40, 0xab);
    assert_int_equal(cmos(&f, 0x40), 0xab);
    pfx_outb(&f, 0x72, 0x10);
    pfx_outb(&f, 0x73, 0xcd);
    pfx_outb(&f, 0x72, 0x10);
    assert_int_equal(pfx_inb(&f, 0x73), 0xcd);
    pfx_free(&f);
}

static void test_rtc_interrupts(void **state)
{
    (void)state;
    pfx f;
    rtc_platform(&f);
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 8, 0x38, false);
    cmos_set(&f, 0x0b, 0x42);                     /* PIE, 24 h */
    assert_int_equal(vmt_platform_next_deadline(f.p), 976563); /* 1024 Hz */
    pfx_advance(&f, 976563);
    assert_int_equal(pfx_take(&f, 0), 0x38);
    assert_int_equal(vmt_platform_next_deadline(f.p), UINT64_MAX); /* until C is read */
    assert_int_equal(cmos(&f, 0x0c), 0xc0);
    assert_int_equal(cmos(&f, 0x0c), 0x00);
    pfx_eoi(&f);
    assert_int_equal(vmt_platform_next_deadline(f.p), 1953125);
    /* Update-ended interrupt at the next second boundary. */
    cmos_set(&f, 0x0b, 0x12);
    assert_int_equal(vmt_platform_next_deadline(f.p), 1000000000ull);
    pfx_advance(&f, 1000000000ull);
    assert_int_equal(pfx_take(&f, 0), 0x38);
    assert_int_equal(cmos(&f, 0x0c) & 0x90, 0x90);
    pfx_eoi(&f);
    pfx_free(&f);
}

static void test_pm_timer(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_advance(&f, 1000000000ull);
    assert_int_equal(pfx_in(&f, 0xb008, 4), 3579545u);
    pfx_advance(&f, 5000000000ull); /* 24 bits wrap */
    assert_int_equal(pfx_in(&f, 0xb008, 4), (5ull * 3579545) & 0xffffff);
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pit_periodic_irq0),
        cmocka_unit_test(test_pit_channel2_calibration),
        cmocka_unit_test(test_hpet_counter),
        cmocka_unit_test(test_hpet_legacy_oneshot_and_periodic),
        cmocka_unit_test(test_hpet_level_status),
        cmocka_unit_test(test_rtc_time),
        cmocka_unit_test(test_rtc_interrupts),
        cmocka_unit_test(test_pm_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
