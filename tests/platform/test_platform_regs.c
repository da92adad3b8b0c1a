/*
 * tests/platform/test_platform_regs.c — register views: a platform set up
 * from a Linux guest's device registers at an idle pause (what a snapshot
 * importer does) behaves like that guest's machine: the pending LAPIC timer
 * interrupt is taken at once, the console UART interrupts on IOAPIC pin 4 →
 * vector 37, the HPET counter continues from its value, the LAPIC timer
 * continues from its current count. Invalid registers are refused with the
 * field named and change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"
#include "vmtrap/platform_regs.h"

#define COM1 0x3f8
#define HPET 0xfed00000ull

static void linux_idle(pfx *f)
{
    vmt_platform_lapic_regs l;
    assert_int_equal(vmt_platform_lapic_get(f->p, 0, &l), VMT_OK);
    l.svr = 0x1ff;
    l.lvt_timer = 0xec;        /* one-shot, vector 0xec */
    l.lvt_lint0 = 0x10700;
    l.lvt_lint1 = 0x400;
    l.lvt_error = 0xfe;
    l.ldr = 0x01000000;
    l.tdcr = 0xb;
    l.irr[0xec / 32] = 1u << (0xec % 32); /* the timer fired just before the pause */
    l.tmict = 0x2000;
    l.tmcct = 0;
    assert_int_equal(vmt_platform_lapic_set(f->p, 0, &l), VMT_OK);
    vmt_platform_ioapic_regs io;
    assert_int_equal(vmt_platform_ioapic_get(f->p, &io), VMT_OK);
    io.redir[4] = 37;          /* edge, unmasked, APIC 0 */
    io.redir[9] = 0x8000 | 0x2000 | 41;
    assert_int_equal(vmt_platform_ioapic_set(f->p, &io), VMT_OK);
    vmt_platform_uart_regs u;
    assert_int_equal(vmt_platform_uart_get(f->p, &u), VMT_OK);
    u.ier = 0x05;
    u.lcr = 0x03;
    u.mcr = 0x0b;
    u.fcr = 0xc1;
    u.divisor = 1;
    assert_int_equal(vmt_platform_uart_set(f->p, &u), VMT_OK);
    vmt_platform_hpet_regs h;
    assert_int_equal(vmt_platform_hpet_get(f->p, &h), VMT_OK);
    h.config = 3;
    h.counter = 0x123456789ull;
    assert_int_equal(vmt_platform_hpet_set(f->p, &h), VMT_OK);
    pfx_check(f);
}

static void test_resume_linux_idle(void **state)
{
    (void)state;
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.start_ns = 5000000000ull;
    pfx f;
    pfx_init(&f, &c);
    linux_idle(&f);
    /* The guest halted with the timer interrupt pending: it leaves HLT at once. */
    assert_int_equal(pfx_take(&f, 0), 0xec);
    pfx_eoi(&f);
    /* Linux re-arms the one-shot timer. */
    pfx_w32(&f, LAPIC + 0x380, 4000000);
    assert_int_equal(vmt_platform_next_deadline(f.p), 5004000000ull);
    /* The tty layer starts transmitting: THRE interrupt on vector 37. */
    pfx_outb(&f, COM1 + 1, 0x07);
    assert_int_equal(pfx_take(&f, 0), 37);
    assert_int_equal(pfx_inb(&f, COM1 + 2) & 0x0f, 0x02);
    pfx_outb(&f, COM1, 'o');
    pfx_outb(&f, COM1, 'k');
    pfx_outb(&f, COM1, '\n');
    assert_string_equal(f.last_line, "ok");
    pfx_eoi(&f);
    /* The clocksource watchdog reads the HPET: it continues from its value. */
    pfx_advance(&f, 5000001000ull);
    assert_int_equal(pfx_r64(&f, HPET + 0xf0), 0x123456789ull + 100);
    pfx_advance(&f, 5004000000ull);
    assert_int_equal(pfx_take(&f, 0), 0xec);
    pfx_free(&f);
}

static void test_timer_continues_from_current_count(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    pfx_advance(&f, 1000);
    vmt_platform_lapic_regs l;
    assert_int_equal(vmt_platform_lapic_get(f.p, 0, &l), VMT_OK);
    l.svr = 0x1ff;
    l.lvt_timer = 0x20000 | 0xec; /* periodic */
    l.tdcr = 0x0;                 /* divide by 2 */
    l.tmict = 1000;
    l.tmcct = 300;
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &l), VMT_OK);
    assert_int_equal(pfx_r32(&f, LAPIC + 0x390), 300);
    assert_int_equal(vmt_platform_next_deadline(f.p), 1000 + 600);
    assert_int_equal(pfx_advance(&f, 1600), 1600 + 2000);
    assert_int_equal(pfx_take(&f, 0), 0xec);
    vmt_platform_lapic_regs back;
    assert_int_equal(vmt_platform_lapic_get(f.p, 0, &back), VMT_OK);
    assert_int_equal(back.tmcct, 1000);
    /* TSC-deadline given in the past fires at once. */
    l.lvt_timer = 0x40000 | 0xef;
    l.tsc_deadline = 1;
    l.tmcct = 0;
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &l), VMT_OK);
    assert_int_equal(pfx_take(&f, 0), 0xef);
    pfx_free(&f);
}

static void test_invalid_refused_unchanged(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    linux_idle(&f);
    uint8_t *before;
    size_t n;
    assert_int_equal(vmt_platform_save(f.p, &before, &n), VMT_OK);
    vmt_platform_lapic_regs l;
    assert_int_equal(vmt_platform_lapic_get(f.p, 0, &l), VMT_OK);
    vmt_platform_lapic_regs bad = l;
    bad.irr[0] = 1u << 5;
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &bad), VMT_E_INVAL);
    assert_non_null(strstr(vmt_platform_error(f.p), "below 16"));
    bad = l;
    bad.tmcct = bad.tmict + 1;
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &bad), VMT_E_INVAL);
    bad = l;
    bad.svr = 0xff;            /* software-disabled with unmasked LVTs */
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &bad), VMT_E_INVAL);
    bad = l;
    bad.apic_base = 0xfee00400; /* x2APIC without enable */
    assert_int_equal(vmt_platform_lapic_set(f.p, 0, &bad), VMT_E_INVAL);
    assert_int_equal(vmt_platform_lapic_set(f.p, 1, &l), VMT_E_INVAL);
    vmt_platform_ioapic_regs io;
    assert_int_equal(vmt_platform_ioapic_get(f.p, &io), VMT_OK);
    io.redir[3] = 0x4000 | 0x33; /* Remote IRR on an edge entry */
    assert_int_equal(vmt_platform_ioapic_set(f.p, &io), VMT_E_INVAL);
    vmt_platform_uart_regs u;
    assert_int_equal(vmt_platform_uart_get(f.p, &u), VMT_OK);
    u.fcr = 0;
    u.rx_count = 2;
    assert_int_equal(vmt_platform_uart_set(f.p, &u), VMT_E_INVAL);
    assert_non_null(strstr(vmt_platform_error(f.p), "FIFO"));
    vmt_platform_hpet_regs h;
    assert_int_equal(vmt_platform_hpet_get(f.p, &h), VMT_OK);
    h.timer[1].config |= 0x100;
    h.timer[1].cmp = 1ull << 40;
    assert_int_equal(vmt_platform_hpet_set(f.p, &h), VMT_E_INVAL);
    uint8_t *after;
    size_t m;
    assert_int_equal(vmt_platform_save(f.p, &after, &m), VMT_OK);
    assert_int_equal(n, m);
    assert_memory_equal(before, after, n);
    free(before);
    free(after);
    /* Without the device: not supported. */
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.devices = VMT_PLATFORM_DEV_PIC;
    pfx g;
    pfx_init(&g, &c);
    assert_int_equal(vmt_platform_hpet_get(g.p, &h), VMT_E_NOTSUP);
    pfx_free(&g);
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_linux_idle),
        cmocka_unit_test(test_timer_continues_from_current_count),
        cmocka_unit_test(test_invalid_refused_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
