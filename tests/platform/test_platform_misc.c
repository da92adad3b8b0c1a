/*
 * tests/platform/test_platform_misc.c — what a kernel probes besides the
 * interrupt controllers and timers: unknown ports and MMIO (reported once,
 * all-ones, never fatal), ports left to the driver, the i8042 and its reset
 * command, 0xcf9, PCI configuration space, bad arguments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

static unsigned reports;
static vmt_platform_unknown last_report;

static void on_unknown(void *ctx, const vmt_platform_unknown *u)
{
    (void)ctx;
    reports++;
    last_report = *u;
}

static void test_unknown_reported_once(void **state)
{
    (void)state;
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.unknown = on_unknown;
    reports = 0;
    pfx f;
    pfx_init(&f, &c);
    pfx_advance(&f, 777);
    assert_int_equal(pfx_inb(&f, 0x2f8), 0xff);          /* COM2: not on this machine */
    assert_int_equal(reports, 1);
    assert_int_equal(last_report.space, VMT_PLATFORM_PIO);
    assert_int_equal(last_report.addr, 0x2f8);
    assert_int_equal(last_report.size, 1);
    assert_false(last_report.write);
    assert_int_equal(last_report.now_ns, 777);
    pfx_outb(&f, 0x2f8, 0x41);
    assert_int_equal(reports, 1);                         /* once per address */
    assert_int_equal(pfx_r32(&f, 0xfe000000), 0xffffffffu);
    pfx_w32(&f, 0xfe000010, 0x1234);
    assert_int_equal(reports, 3);
    assert_int_equal(last_report.space, VMT_PLATFORM_MMIO);
    assert_true(last_report.write);
    assert_int_equal(last_report.value, 0x1234);
    assert_int_equal(vmt_platform_unknown_count(f.p), 3);
    vmt_platform_unknown u;
    assert_int_equal(vmt_platform_unknown_get(f.p, 1, &u), VMT_OK);
    assert_int_equal(u.addr, 0xfe000000);
    assert_int_equal(vmt_platform_unknown_get(f.p, 3, &u), VMT_E_INVAL);
    /* A 16-bit read over a known and an unknown port: bytes split. */
    pfx_outb(&f, 0x3ff, 0x5a);
    assert_int_equal(pfx_in(&f, 0x3ff, 2), 0xff5a);
    assert_int_equal(reports, 4);
    /* Port 0x80 is a device (POST codes): not reported. */
    pfx_outb(&f, 0x80, 0x12);
    assert_int_equal(reports, 4);
    pfx_free(&f);
}

static void test_passthrough_and_bad_args(void **state)
{
    (void)state;
    static const uint16_t mine[] = {0x510};
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.passthrough_ports = mine;
    c.passthrough_count = 1;
    pfx f;
    pfx_init(&f, &c);
    uint32_t v;
    assert_int_equal(f.bus.ops->pio_write(f.bus.ctx, 0, 0x5e0, 4, 0x1000), VMT_E_NOTFOUND); /* ucall */
    assert_int_equal(f.bus.ops->pio_read(f.bus.ctx, 0, 0x510, 2, &v), VMT_E_NOTFOUND);
    assert_int_equal(vmt_platform_unknown_count(f.p), 0);
    assert_int_equal(f.bus.ops->pio_read(f.bus.ctx, 3, 0x3f8, 1, &v), VMT_E_INVAL);
    assert_int_equal(f.bus.ops->pio_read(f.bus.ctx, 0, 0x3f8, 3, &v), VMT_E_INVAL);
    uint64_t m;
    assert_int_equal(f.bus.ops->msr_read(f.bus.ctx, 0, 0xc0000080, &m), VMT_E_NOTFOUND); /* EFER: the CPU's */
    assert_int_equal(f.bus.ops->irq_pending(f.bus.ctx, 9), -1);
    pfx_check(&f);
    pfx_free(&f);

    vmt_platform *p = NULL;
    char why[256];
    vmt_platform_config bad;
    memset(&bad, 0, sizeof bad);
    bad.vcpus = VMT_PLATFORM_MAX_VCPUS + 1;
    assert_int_equal(vmt_platform_create(&bad, &p, why, sizeof why), VMT_E_INVAL);
    assert_non_null(strstr(why, "vCPUs"));
    assert_null(p);
    memset(&bad, 0, sizeof bad);
    bad.devices = 1u << 20;
    assert_int_equal(vmt_platform_create(&bad, &p, why, sizeof why), VMT_E_INVAL);
    memset(&bad, 0, sizeof bad);
    bad.pm_timer_port = 0xb009;
    assert_int_equal(vmt_platform_create(&bad, &p, why, sizeof why), VMT_E_INVAL);
    memset(&bad, 0, sizeof bad);
    bad.pci_count = 1;
    assert_int_equal(vmt_platform_create(&bad, &p, why, sizeof why), VMT_E_INVAL);
}

static void test_i8042(void **state)
{
    (void)state;
    pfx f;
    pfx_init(&f, NULL);
    assert_int_equal(pfx_inb(&f, 0x64) & 0x01, 0);
    pfx_outb(&f, 0x64, 0xaa);                 /* self test */
    assert_int_equal(pfx_inb(&f, 0x64) & 0x01, 1);
    assert_int_equal(pfx_inb(&f, 0x60), 0x55);
    pfx_outb(&f, 0x64, 0x20);
    assert_int_equal(pfx_inb(&f, 0x60), 0x45);
    pfx_outb(&f, 0x64, 0x60);
    pfx_outb(&f, 0x60, 0x44);                 /* interrupts off */
    pfx_outb(&f, 0x64, 0x20);
    assert_int_equal(pfx_inb(&f, 0x60), 0x44);
    pfx_outb(&f, 0x60, 0xff);                 /* keyboard reset */
    assert_int_equal(pfx_inb(&f, 0x60), 0xfa);
    assert_int_equal(pfx_inb(&f, 0x60), 0xaa);
    pfx_outb(&f, 0x64, 0xa9);                 /* aux test fails: no mouse */
    assert_int_equal(pfx_inb(&f, 0x60), 0x01);
    /* Keyboard interrupt (IRQ 1) when enabled and a byte is waiting. */
    pfx_lapic_enable(&f);
    pfx_ioapic_route(&f, 1, 0x31, false);
    pfx_outb(&f, 0x64, 0x60);
    pfx_outb(&f, 0x60, 0x45);
    pfx_outb(&f, 0x64, 0xd2);
    pfx_outb(&f, 0x60, 0x1c);
    assert_int_equal(pfx_take(&f, 0), 0x31);
    assert_int_equal(pfx_inb(&f, 0x60), 0x1c);
    /* Reset through the controller stops the run with a reason. */
    assert_int_equal(f.bus.ops->pio_write(f.bus.ctx, 0, 0x64, 1, 0xfe), VMT_E_STOPPED);
    assert_non_null(strstr(f.bus.ops->stop_reason(f.bus.ctx), "0xfe"));
    pfx_check(&f);
    pfx_free(&f);
}

static void test_reset_port_and_pci(void **state)
{
    (void)state;
    static vmt_platform_pci_function host_bridge;
    memset(&host_bridge, 0, sizeof host_bridge);
    host_bridge.config[0] = 0x86;
    host_bridge.config[1] = 0x80;
    host_bridge.config[2] = 0x37;
    host_bridge.config[3] = 0x12; /* 8086:1237 (i440FX) */
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.pci = &host_bridge;
    c.pci_count = 1;
    pfx f;
    pfx_init(&f, &c);
    pfx_out(&f, 0xcf8, 4, 0x80000000u);               /* 00:00.0 reg 0 */
    assert_int_equal(pfx_in(&f, 0xcfc, 4), 0x12378086u);
    assert_int_equal(pfx_in(&f, 0xcfe, 2), 0x1237u);
    pfx_out(&f, 0xcf8, 4, 0x80000800u);               /* 00:01.0: nothing there */
    assert_int_equal(pfx_in(&f, 0xcfc, 4), 0xffffffffu);
    pfx_out(&f, 0xcf8, 4, 0x80010000u);               /* bus 1 */
    assert_int_equal(pfx_in(&f, 0xcfc, 2), 0xffffu);
    assert_int_equal(pfx_in(&f, 0xcf8, 4), 0x80010000u);
    pfx_outb(&f, 0xcf9, 0x02);                        /* no reset bit */
    assert_int_equal(pfx_inb(&f, 0xcf9), 0x02);
    assert_int_equal(f.bus.ops->pio_write(f.bus.ctx, 0, 0xcf9, 1, 0x06), VMT_E_STOPPED);
    assert_non_null(strstr(f.bus.ops->stop_reason(f.bus.ctx), "0xcf9"));
    pfx_check(&f);
    pfx_free(&f);
}

typedef struct line_log {
    unsigned n;
    unsigned irq[16];
    bool level[16];
} line_log;

static void on_irq(void *ctx, unsigned irq, bool level)
{
    line_log *l = ctx;
    if (l->n < 16) {
        l->irq[l->n] = irq;
        l->level[l->n] = level;
    }
    l->n++;
}

/* KVM irqchip mode: no interrupt controllers here, lines go out. */
static void test_lines_out_without_controllers(void **state)
{
    (void)state;
    line_log log = {0};
    vmt_platform_config c;
    memset(&c, 0, sizeof c);
    c.devices = VMT_PLATFORM_DEV_UART | VMT_PLATFORM_DEV_HPET | VMT_PLATFORM_DEV_RTC;
    c.irq_out = on_irq;
    c.irq_out_ctx = &log;
    pfx f;
    pfx_init(&f, &c);
    pfx_outb(&f, 0x3f9, 0x02); /* THRE interrupt: IRQ 4 up */
    assert_int_equal(log.n, 1);
    assert_int_equal(log.irq[0], 4);
    assert_true(log.level[0]);
    assert_int_equal(pfx_inb(&f, 0x3fa), 0x02);
    assert_int_equal(log.n, 2);
    assert_false(log.level[1]);
    /* No LAPIC here: the MSRs and the APIC page are not the platform's. */
    uint64_t v;
    assert_int_equal(f.bus.ops->msr_read(f.bus.ctx, 0, 0x1b, &v), VMT_E_NOTFOUND);
    assert_int_equal(pfx_pending(&f, 0), -1);
    pfx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_reported_once),
        cmocka_unit_test(test_passthrough_and_bad_args),
        cmocka_unit_test(test_i8042),
        cmocka_unit_test(test_reset_port_and_pci),
        cmocka_unit_test(test_lines_out_without_controllers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
