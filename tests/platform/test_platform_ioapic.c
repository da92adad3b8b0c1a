/*
 * tests/platform/test_platform_ioapic.c — the IOAPIC against the 82093AA
 * datasheet: ID/version, redirection entries, edge and level delivery,
 * Remote IRR and EOI (LAPIC broadcast and the EOI register), masking, and
 * the ISA IRQ 0 -> pin 2 override.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

#define IOAPIC 0xfec00000ull

static uint32_t ioreg(pfx *f, uint32_t idx)
{
    pfx_w32(f, IOAPIC, idx);
    return pfx_r32(f, IOAPIC + 0x10);
}

static void ioset(pfx *f, uint32_t idx, uint32_t v)
{
    pfx_w32(f, IOAPIC, idx);
    pfx_w32(f, IOAPIC + 0x10, v);
}

static void test_registers(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    assert_int_equal(ioreg(&f, 1), 0x00170020u); /* 24 entries, version 0x20 */
    ioset(&f, 0, 0x0a000000);
    assert_int_equal(ioreg(&f, 0), 0x0a000000u);
    for (unsigned pin = 0; pin < 24; pin++)
        assert_int_equal(ioreg(&f, 0x10 + 2 * pin), 0x10000u); /* masked */
    /* Read-only bits (delivery status, Remote IRR) ignore writes. */
    ioset(&f, 0x10 + 2 * 5, 0xffffffffu);
    assert_int_equal(ioreg(&f, 0x10 + 2 * 5), 0x1afffu);
    ioset(&f, 0x11 + 2 * 5, 0xffffffffu);
    assert_int_equal(ioreg(&f, 0x11 + 2 * 5), 0xff000000u);
    pfx_free(&f);
}

static void test_edge(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    /* Masked pin: an edge is lost. */
    assert_int_equal(vmt_platform_set_irq(f.p, 3, true), VMT_OK);
    assert_int_equal(vmt_platform_set_irq(f.p, 3, false), VMT_OK);
    pfx_ioapic_route(&f, 3, 0x33, false);
    assert_int_equal(pfx_pending(&f, 0), -1);
    /* Rising edge delivers once; holding the line high does not repeat. */
    vmt_platform_set_irq(f.p, 3, true);
    assert_int_equal(pfx_take(&f, 0), 0x33);
    pfx_eoi(&f);
    assert_int_equal(pfx_pending(&f, 0), -1);
    vmt_platform_set_irq(f.p, 3, false);
    /* ISA IRQ 0 arrives on pin 2. */
    pfx_ioapic_route(&f, 2, 0x30, false);
    vmt_platform_set_irq(f.p, 0, true);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    pfx_free(&f);
}

static void test_level_remote_irr(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 9, 0x49, true); /* ACPI SCI style */
    vmt_platform_set_irq(f.p, 9, true);
    assert_int_equal(ioreg(&f, 0x10 + 2 * 9) & 0x4000, 0x4000); /* Remote IRR */
    assert_int_equal(pfx_take(&f, 0), 0x49);
    /* TMR marks the vector level-triggered. */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x180 + 0x10 * (0x49 / 32)) >> (0x49 % 32) & 1, 1);
    /* EOI with the line still high: delivered again. */
    pfx_eoi(&f);
    assert_int_equal(pfx_take(&f, 0), 0x49);
    vmt_platform_set_irq(f.p, 9, false);
    pfx_eoi(&f);
    assert_int_equal(ioreg(&f, 0x10 + 2 * 9) & 0x4000, 0);
    assert_int_equal(pfx_pending(&f, 0), -1);
    /* Masked while asserted: nothing; unmasking delivers. */
    ioset(&f, 0x10 + 2 * 9, 0x18049);
    vmt_platform_set_irq(f.p, 9, true);
    assert_int_equal(pfx_pending(&f, 0), -1);
    ioset(&f, 0x10 + 2 * 9, 0x08049);
    assert_int_equal(pfx_take(&f, 0), 0x49);
    /* The IOAPIC's own EOI register (version 0x20) clears Remote IRR too. */
    vmt_platform_set_irq(f.p, 9, false);
    pfx_w32(&f, IOAPIC + 0x40, 0x49);
    assert_int_equal(ioreg(&f, 0x10 + 2 * 9) & 0x4000, 0);
    pfx_free(&f);
}

static void test_logical_destination(void **state)
{
    (void)state;
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.vcpus = 2;
    pfx f;
    pfx_init(&f, &c);
    assert_int_equal(f.bus.ops->mmio_write(f.bus.ctx, 1, LAPIC + 0xf0, 4, 0x1ff), VMT_OK);
    assert_int_equal(f.bus.ops->mmio_write(f.bus.ctx, 1, LAPIC + 0xd0, 4, 0x02000000), VMT_OK);
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0xd0, 0x01000000);
    ioset(&f, 0x11 + 2 * 7, 0x02000000); /* logical destination 0x02 */
    ioset(&f, 0x10 + 2 * 7, 0x800 | 0x47);
    vmt_platform_set_irq(f.p, 7, true);
    assert_int_equal(pfx_pending(&f, 0), -1);
    assert_int_equal(pfx_take(&f, 1), 0x47);
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registers),
        cmocka_unit_test(test_edge),
        cmocka_unit_test(test_level_remote_irr),
        cmocka_unit_test(test_logical_destination),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
