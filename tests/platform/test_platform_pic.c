/*
 * tests/platform/test_platform_pic.c — the 8259A pair against its
 * datasheet: the ICW sequence Linux uses, masks, IRR/ISR reads, EOI,
 * cascade through IRQ 2, spurious IRQ 7, ELCR level mode, poll mode, and
 * delivery to vCPU 0 through LINT0 ExtINT or with the LAPIC disabled.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

static void init_like_linux(pfx *f)
{
    pfx_outb(f, 0x21, 0xff);
    pfx_outb(f, 0xa1, 0xff);
    pfx_outb(f, 0x20, 0x11); /* ICW1: edge, cascade, ICW4 */
    pfx_outb(f, 0x21, 0x30); /* ICW2: vectors 0x30-0x37 */
    pfx_outb(f, 0x21, 0x04); /* ICW3: slave on IRQ 2 */
    pfx_outb(f, 0x21, 0x01); /* ICW4: 8086 mode */
    pfx_outb(f, 0xa0, 0x11);
    pfx_outb(f, 0xa1, 0x38);
    pfx_outb(f, 0xa1, 0x02);
    pfx_outb(f, 0xa1, 0x01);
    pfx_outb(f, 0x21, 0xfb); /* only the cascade unmasked */
    pfx_outb(f, 0xa1, 0xff);
}

static void pic_only(pfx *f)
{
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.devices = VMT_PLATFORM_DEV_PIC;
    pfx_init(f, &c);
}

static void test_init_mask_eoi(void **state)
{
    (void)state;
    pfx f;
    pic_only(&f);
    init_like_linux(&f);
    assert_int_equal(pfx_inb(&f, 0x21), 0xfb);
    vmt_platform_set_irq(f.p, 3, true);
    assert_int_equal(pfx_pending(&f, 0), -1); /* masked */
    assert_int_equal(pfx_inb(&f, 0x20), 0x08); /* IRR (OCW3 default) */
    pfx_outb(&f, 0x21, 0xf3);
    assert_int_equal(pfx_take(&f, 0), 0x33);
    pfx_outb(&f, 0x20, 0x0b); /* OCW3: read ISR */
    assert_int_equal(pfx_inb(&f, 0x20), 0x08);
    /* Lower priority (IRQ 4) waits behind IRQ 3 in service; IRQ 1 does not. */
    pfx_outb(&f, 0x21, 0xe1);
    vmt_platform_set_irq(f.p, 4, true);
    assert_int_equal(pfx_pending(&f, 0), -1);
    vmt_platform_set_irq(f.p, 1, true);
    assert_int_equal(pfx_take(&f, 0), 0x31);
    pfx_outb(&f, 0x20, 0x20); /* non-specific EOI: IRQ 1 */
    pfx_outb(&f, 0x20, 0x63); /* specific EOI: IRQ 3 */
    assert_int_equal(pfx_inb(&f, 0x20), 0x00);
    assert_int_equal(pfx_take(&f, 0), 0x34);
    pfx_outb(&f, 0x20, 0x20);
    pfx_free(&f);
}

static void test_cascade_and_spurious(void **state)
{
    (void)state;
    pfx f;
    pic_only(&f);
    init_like_linux(&f);
    pfx_outb(&f, 0xa1, 0xfe); /* IRQ 8 */
    vmt_platform_set_irq(f.p, 8, true);
    assert_int_equal(pfx_take(&f, 0), 0x38);
    pfx_outb(&f, 0xa0, 0x20);
    pfx_outb(&f, 0x20, 0x20);
    /* Edge mode: the request was latched and taken; the line is still high
     * but no new edge arrived. */
    assert_int_equal(pfx_pending(&f, 0), -1);
    vmt_platform_set_irq(f.p, 8, false);
    pfx_free(&f);
}

static void test_level_mode_elcr_spurious_15(void **state)
{
    (void)state;
    pfx f;
    pic_only(&f);
    init_like_linux(&f);
    pfx_outb(&f, 0x4d1, 0xff);
    assert_int_equal(pfx_inb(&f, 0x4d1), 0xde); /* IRQ 8 and 13 are fixed edge */
    pfx_outb(&f, 0xa1, 0xfd);                   /* IRQ 9 */
    vmt_platform_set_irq(f.p, 9, true);
    assert_int_equal(pfx_take(&f, 0), 0x39);
    pfx_outb(&f, 0xa0, 0x20);
    pfx_outb(&f, 0x20, 0x20);
    assert_int_equal(pfx_take(&f, 0), 0x39); /* level still high: again */
    pfx_outb(&f, 0xa0, 0x20);
    pfx_outb(&f, 0x20, 0x20);
    /* The slave re-raised its INT at the EOI, latching master IRQ 2 (edge);
     * the device then drops its line before the INTA: the slave has nothing
     * to give, so the CPU gets the spurious IRQ 15 vector, the slave's ISR
     * stays empty and only the master needs an EOI (what Linux checks). */
    vmt_platform_set_irq(f.p, 9, false);
    assert_int_equal(pfx_take(&f, 0), 0x3f);
    pfx_outb(&f, 0xa0, 0x0b);
    assert_int_equal(pfx_inb(&f, 0xa0), 0x00);
    pfx_outb(&f, 0x20, 0x0b);
    assert_int_equal(pfx_inb(&f, 0x20), 0x04);
    pfx_outb(&f, 0x20, 0x20);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_free(&f);
}

static void test_poll_mode(void **state)
{
    (void)state;
    pfx f;
    pic_only(&f);
    init_like_linux(&f);
    pfx_outb(&f, 0x21, 0x00);
    vmt_platform_set_irq(f.p, 5, true);
    pfx_outb(&f, 0x20, 0x0c); /* OCW3 poll */
    assert_int_equal(pfx_inb(&f, 0x20), 0x85);
    pfx_outb(&f, 0x20, 0x0c);
    assert_int_equal(pfx_inb(&f, 0x20), 0x00); /* IRQ 5 in service now */
    pfx_free(&f);
}

static void test_extint_through_lapic(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    init_like_linux(&f);
    pfx_outb(&f, 0x21, 0xf7);
    vmt_platform_set_irq(f.p, 3, true);
    /* SDM reset state: LINT0 masked, so the PIC does not reach the CPU. */
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0x350, 0x700); /* LINT0 ExtINT (virtual wire) */
    assert_int_equal(pfx_take(&f, 0), 0x33);
    pfx_outb(&f, 0x20, 0x20);
    vmt_platform_set_irq(f.p, 3, false);
    /* With the LAPIC disabled in IA32_APIC_BASE, INTR goes straight in. */
    pfx_wrmsr(&f, 0, 0x1b, 0xfee00000ull);
    vmt_platform_set_irq(f.p, 3, true);
    assert_int_equal(pfx_take(&f, 0), 0x33);
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_mask_eoi),
        cmocka_unit_test(test_cascade_and_spurious),
        cmocka_unit_test(test_level_mode_elcr_spurious_15),
        cmocka_unit_test(test_poll_mode),
        cmocka_unit_test(test_extint_through_lapic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
