/*
 * tests/platform/test_platform_lapic.c — the local APIC against the Intel
 * SDM vol. 3 ch. 11: reset values, priority (IRR/ISR/TPR/PPR), EOI, the
 * timer in one-shot, periodic and TSC-deadline modes, IPIs, ESR, x2APIC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

static void test_reset_values(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    assert_int_equal(pfx_rdmsr(&f, 0, 0x1b), 0xfee00900ull); /* enabled, BSP */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x30), 0x00050014u);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x20), 0u);
    assert_int_equal(pfx_r32(&f, LAPIC + 0xf0), 0xffu);      /* software-disabled */
    assert_int_equal(pfx_r32(&f, LAPIC + 0xe0), 0xffffffffu);
    for (unsigned r = 0x320; r <= 0x370; r += 0x10)
        assert_int_equal(pfx_r32(&f, LAPIC + r) & 0x10000, 0x10000);
    /* Software-disabled: an LVT cannot be unmasked. */
    pfx_w32(&f, LAPIC + 0x320, 0xec);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x320), 0x100ecu);
    /* Byte reads see the register's bytes. */
    uint64_t v = 0;
    assert_int_equal(f.bus.ops->mmio_read(f.bus.ctx, 0, LAPIC + 0x32, 1, &v), VMT_OK);
    assert_int_equal(v, 0x05);
    pfx_free(&f);
}

static void self_ipi(pfx *f, uint8_t vector)
{
    pfx_w32(f, LAPIC + 0x300, 0x40000u | vector); /* shorthand self, fixed */
}

static void test_priority_and_eoi(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    self_ipi(&f, 0x40);
    assert_int_equal(pfx_pending(&f, 0), -1); /* software-disabled APIC delivers nothing */
    pfx_lapic_enable(&f);
    assert_int_equal(pfx_pending(&f, 0), 0x40);
    self_ipi(&f, 0x31);
    self_ipi(&f, 0x52);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x200 + 0x10 * (0x52 / 32)) >> (0x52 % 32) & 1, 1); /* IRR */
    assert_int_equal(pfx_take(&f, 0), 0x52);
    assert_int_equal(pfx_r32(&f, LAPIC + 0xa0), 0x50); /* PPR = class of ISR */
    /* 0x40 and 0x31 are below the in-service class 0x50. */
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_eoi(&f);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x100 + 0x10 * (0x52 / 32)) >> (0x52 % 32) & 1, 0); /* ISR clear */
    /* TPR 0x40 blocks class 4 and below; 0x40 waits. */
    pfx_w32(&f, LAPIC + 0x80, 0x40);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_w32(&f, LAPIC + 0x80, 0x30);
    assert_int_equal(pfx_take(&f, 0), 0x40);
    /* Same class as the in-service vector: not delivered (must be higher). */
    self_ipi(&f, 0x45);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_eoi(&f);
    assert_int_equal(pfx_take(&f, 0), 0x45);
    pfx_eoi(&f);
    pfx_w32(&f, LAPIC + 0x80, 0);
    assert_int_equal(pfx_take(&f, 0), 0x31);
    pfx_eoi(&f);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_free(&f);
}

static void test_illegal_vector_sets_esr(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0x370, 0xfe); /* error LVT, unmasked */
    self_ipi(&f, 5);
    pfx_w32(&f, LAPIC + 0x280, 0); /* latch */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x280), 0x20u); /* send illegal vector */
    assert_int_equal(pfx_take(&f, 0), 0xfe);
    pfx_w32(&f, LAPIC + 0x280, 0);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x280), 0u);
    pfx_free(&f);
}

static void test_timer_oneshot(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL); /* APIC bus 1 GHz */
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0x3e0, 0x3);   /* divide by 16 */
    pfx_w32(&f, LAPIC + 0x320, 0xec);  /* one-shot, vector 0xec (Linux) */
    assert_int_equal(pfx_advance(&f, 1000), UINT64_MAX);
    pfx_w32(&f, LAPIC + 0x380, 100);   /* 100 * 16 ns */
    assert_int_equal(vmt_platform_next_deadline(f.p), 1000 + 1600);
    pfx_advance(&f, 1000 + 800);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 50u);
    assert_int_equal(pfx_pending(&f, 0), -1);
    assert_int_equal(pfx_advance(&f, 2600), UINT64_MAX);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 0u);
    assert_int_equal(pfx_take(&f, 0), 0xec);
    pfx_eoi(&f);
    /* Re-arm, then change the divider half way: the rest runs at the new rate. */
    pfx_w32(&f, LAPIC + 0x380, 100);
    pfx_advance(&f, 2600 + 800);
    pfx_w32(&f, LAPIC + 0x3e0, 0xb);   /* divide by 1 */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 50u);
    assert_int_equal(vmt_platform_next_deadline(f.p), 3400 + 50);
    /* Writing 0 stops it. */
    pfx_w32(&f, LAPIC + 0x380, 0);
    assert_int_equal(vmt_platform_next_deadline(f.p), UINT64_MAX);
    pfx_free(&f);
}

static void test_timer_periodic_masked(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0x3e0, 0x0);             /* divide by 2 */
    pfx_w32(&f, LAPIC + 0x320, 0x20000 | 0x30);  /* periodic */
    pfx_w32(&f, LAPIC + 0x380, 500);             /* 1000 ns period */
    assert_int_equal(pfx_advance(&f, 1000), 2000);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    pfx_eoi(&f);
    /* Three periods pass at once: one interrupt (IRR holds one), next on the grid. */
    assert_int_equal(pfx_advance(&f, 4500), 5000);
    assert_int_equal(pfx_take(&f, 0), 0x30);
    assert_int_equal(pfx_take(&f, 0), -1);
    pfx_eoi(&f);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 250u);
    /* Masked: keeps counting, delivers nothing. */
    pfx_w32(&f, LAPIC + 0x320, 0x30000 | 0x30);
    pfx_advance(&f, 5000);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_free(&f);
}

static void test_timer_tsc_deadline(void **state)
{
    (void)state;
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.tsc_hz = 2000000000ull;
    c.tsc_offset = 1000000;
    pfx f;
    pfx_init(&f, &c);
    pfx_lapic_enable(&f);
    pfx_wrmsr(&f, 0, 0x6e0, 1000000 + 500); /* one-shot mode: ignored */
    assert_int_equal(pfx_rdmsr(&f, 0, 0x6e0), 0);
    pfx_w32(&f, LAPIC + 0x320, 0x40000 | 0xec); /* TSC-deadline mode */
    pfx_wrmsr(&f, 0, 0x6e0, 1000000 + 20000);   /* 10 us at 2 GHz */
    assert_int_equal(pfx_rdmsr(&f, 0, 0x6e0), 1000000 + 20000);
    assert_int_equal(vmt_platform_next_deadline(f.p), 10000);
    pfx_w32(&f, LAPIC + 0x380, 5); /* TMICT ignored in this mode */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 0);
    pfx_advance(&f, 9999);
    assert_int_equal(pfx_pending(&f, 0), -1);
    assert_int_equal(pfx_advance(&f, 10000), UINT64_MAX);
    assert_int_equal(pfx_take(&f, 0), 0xec);
    assert_int_equal(pfx_rdmsr(&f, 0, 0x6e0), 0); /* disarmed after firing */
    pfx_eoi(&f);
    /* A deadline already passed fires at once. */
    pfx_wrmsr(&f, 0, 0x6e0, 1);
    assert_int_equal(pfx_take(&f, 0), 0xec);
    pfx_eoi(&f);
    /* Leaving TSC-deadline mode disarms. */
    pfx_wrmsr(&f, 0, 0x6e0, 1000000 + 40000);
    pfx_w32(&f, LAPIC + 0x320, 0xec);
    assert_int_equal(vmt_platform_next_deadline(f.p), UINT64_MAX);
    pfx_free(&f);
}

static void test_ipi_between_vcpus(void **state)
{
    (void)state;
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.vcpus = 2;
    pfx f;
    pfx_init(&f, &c);
    /* vCPU 1's APIC: enable through its own MMIO view. */
    assert_int_equal(f.bus.ops->mmio_write(f.bus.ctx, 1, LAPIC + 0xf0, 4, 0x1ff), VMT_OK);
    uint64_t id = 0;
    assert_int_equal(f.bus.ops->mmio_read(f.bus.ctx, 1, LAPIC + 0x20, 4, &id), VMT_OK);
    assert_int_equal(id, 1u << 24);
    assert_int_equal(pfx_rdmsr(&f, 1, 0x1b), 0xfee00800ull); /* not the BSP */
    pfx_lapic_enable(&f);
    pfx_w32(&f, LAPIC + 0x310, 1u << 24);
    pfx_w32(&f, LAPIC + 0x300, 0x61);  /* fixed, physical, to APIC 1 */
    assert_int_equal(pfx_pending(&f, 0), -1);
    assert_int_equal(pfx_take(&f, 1), 0x61);
    pfx_w32(&f, LAPIC + 0x300, 0x400); /* NMI to APIC 1 */
    assert_true(f.bus.ops->nmi_take(f.bus.ctx, 1));
    assert_false(f.bus.ops->nmi_take(f.bus.ctx, 1));
    assert_false(f.bus.ops->nmi_take(f.bus.ctx, 0));
    /* All-excluding-self from vCPU 1 reaches vCPU 0 only. */
    assert_int_equal(f.bus.ops->mmio_write(f.bus.ctx, 1, LAPIC + 0x300, 4, 0xc0000 | 0x70), VMT_OK);
    pfx_check(&f);
    assert_int_equal(pfx_take(&f, 0), 0x70);
    assert_int_equal(pfx_take(&f, 1), -1);
    /* Logical flat mode: LDR bit 1 on vCPU 1. */
    assert_int_equal(f.bus.ops->mmio_write(f.bus.ctx, 1, LAPIC + 0xd0, 4, 0x02000000), VMT_OK);
    pfx_w32(&f, LAPIC + 0x310, 0x02u << 24);
    pfx_w32(&f, LAPIC + 0x300, 0x800 | 0x72);
    assert_int_equal(pfx_take(&f, 1), 0x72);
    pfx_free(&f);
}

static void test_x2apic(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    uint64_t v;
    /* x2APIC MSRs are #GP in xAPIC mode. */
    assert_int_equal(f.bus.ops->msr_read(f.bus.ctx, 0, 0x802, &v), VMT_E_INVAL);
    pfx_wrmsr(&f, 0, 0x1b, 0xfee00000ull | 0xc00);
    assert_int_equal(pfx_rdmsr(&f, 0, 0x1b), 0xfee00d00ull);
    assert_int_equal(pfx_rdmsr(&f, 0, 0x802), 0);           /* full 32-bit ID */
    assert_int_equal(pfx_rdmsr(&f, 0, 0x803), 0x00050014u);
    assert_int_equal(pfx_rdmsr(&f, 0, 0x80d), 1);           /* LDR derived from the ID */
    /* The MMIO page is no longer the APIC: an unknown access. */
    assert_int_equal(pfx_r32(&f, LAPIC + 0x30), 0xffffffffu);
    assert_int_equal(vmt_platform_unknown_count(f.p), 1);
    pfx_wrmsr(&f, 0, 0x80f, 0x1ff);
    pfx_wrmsr(&f, 0, 0x83f, 0x55); /* SELF IPI */
    assert_int_equal(pfx_take(&f, 0), 0x55);
    pfx_wrmsr(&f, 0, 0x80b, 0);    /* EOI */
    pfx_wrmsr(&f, 0, 0x830, 0x40000 | 0x56);
    assert_int_equal(pfx_take(&f, 0), 0x56);
    /* #GP cases: read of EOI, write of the read-only ID, non-zero EOI,
     * reserved high bits, x2APIC -> xAPIC. */
    assert_int_equal(f.bus.ops->msr_read(f.bus.ctx, 0, 0x80b, &v), VMT_E_INVAL);
    assert_int_equal(f.bus.ops->msr_write(f.bus.ctx, 0, 0x802, 5), VMT_E_INVAL);
    assert_int_equal(f.bus.ops->msr_write(f.bus.ctx, 0, 0x80b, 1), VMT_E_INVAL);
    assert_int_equal(f.bus.ops->msr_write(f.bus.ctx, 0, 0x808, 1ull << 32), VMT_E_INVAL);
    assert_int_equal(f.bus.ops->msr_write(f.bus.ctx, 0, 0x1b, 0xfee00800ull), VMT_E_INVAL);
    assert_non_null(strstr(vmt_platform_error(f.p), "x2APIC to xAPIC"));
    pfx_check(&f);
    /* Disabling resets the APIC; then xAPIC again. */
    pfx_wrmsr(&f, 0, 0x1b, 0xfee00000ull);
    pfx_wrmsr(&f, 0, 0x1b, 0xfee00800ull);
    assert_int_equal(pfx_r32(&f, LAPIC + 0xf0), 0xffu);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x100 + 0x10 * 2), 0u); /* ISR cleared */
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_values),
        cmocka_unit_test(test_priority_and_eoi),
        cmocka_unit_test(test_illegal_vector_sets_esr),
        cmocka_unit_test(test_timer_oneshot),
        cmocka_unit_test(test_timer_periodic_masked),
        cmocka_unit_test(test_timer_tsc_deadline),
        cmocka_unit_test(test_ipi_between_vcpus),
        cmocka_unit_test(test_x2apic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
