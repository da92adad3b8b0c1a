/*
 * tests/kvm/test_kvm_platform_guest.c — the platform guest (guests/platform)
 * on KVM: LAPIC, IOAPIC, PIC and PIT are KVM's in-kernel irqchip and PIT,
 * the UART, HPET, RTC, PM timer, i8042 and the rest are the user-space
 * platform module behind the driver's bus, and the platform's interrupt
 * lines reach the in-kernel IOAPIC through a vmt_kvm_irq_link. The guest
 * asserts from inside that the in-kernel LAPIC timer interrupts it (one-shot
 * and TSC-deadline), that the user-space UART's THRE interrupt arrives on
 * IOAPIC pin 4 as vector 37 and drives the whole message out, that the HPET
 * counts against the TSC, the RTC, the in-kernel PIT (calibration and IRQ 0
 * on pin 2) and the RX interrupt with the host's answer. The host checks the
 * interrupt-driven text, the answer's echo and that lines were forwarded.
 * Skips (77) without /dev/kvm.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../guests/guest_runner.h"
#include "util/testutil.h"
#include "vmtrap/kvm.h"
#include "vmtrap/platform.h"

#define RAM_SIZE (64ULL << 20)

typedef struct ctx {
    vmt_platform *p;
    vmt_kvm_irq_link *link;
    guest_param param;       /* platform_tsc_mhz: the rate KVM gives the guest */
    vmt_kvm_time time;       /* read at the end of the run */
    vmt_driver *d;
    char text[16384];
    size_t len;
} ctx;

static void on_line(void *c, const char *line)
{
    ctx *x = c;
    if (strcmp(line, "rx ready") == 0)
        assert_int_equal(vmt_platform_serial_input(x->p, "ping from the host\n", 19), VMT_OK);
    int n = snprintf(x->text + x->len, sizeof x->text - x->len, "%s\n", line);
    if (n > 0 && (size_t)n < sizeof x->text - x->len)
        x->len += (size_t)n;
}

static vmt_status on_driver(void *c, vmt_driver *d)
{
    ctx *x = c;
    vmt_kvm_time t;
    vmt_status st = vmt_kvm_time_info(d, &t);
    if (st || !t.irqchip || t.tsc_khz < 1000)
        return st ? st : VMT_E_INTERNAL;
    x->param.value = (uint32_t)(t.tsc_khz / 1000);
    x->d = d;
    return vmt_kvm_irq_link_attach(x->link, d);
}

static void platform_guest_on_kvm(void **state)
{
    (void)state;
    ctx x;
    memset(&x, 0, sizeof x);
    assert_int_equal(vmt_kvm_irq_link_create(&x.link), VMT_OK);
    vmt_platform_config pc;
    memset(&pc, 0, sizeof pc);
    pc.devices = VMT_KVM_PLATFORM_DEVICES;
    pc.rtc_epoch_s = 1796455815; /* 2026-12-05 07:30:15 UTC */
    pc.serial = on_line;
    pc.serial_ctx = &x;
    pc.irq_out = vmt_kvm_irq_link_out;
    pc.irq_out_ctx = x.link;
    char why[256];
    assert_int_equal(vmt_platform_create(&pc, &x.p, why, sizeof why), VMT_OK);
    vmt_bus bus = vmt_platform_bus(x.p);
    x.param = (guest_param){ "platform_tsc_mhz", 0 };
    char path[512];
    snprintf(path, sizeof path, "%s/platform.elf", VMT_GUEST_DIR);
    guest_run r;
    vmt_status st = guest_run_elf_hooked("kvm", path, RAM_SIZE, &bus, NULL, &x.param, 1, 60.0, on_driver, &x, &r);
    assert_int_equal(vmt_kvm_irq_link_attach(x.link, NULL), VMT_OK); /* the run destroyed the driver */
    if (st == VMT_E_NOTSUP && !x.d) {
        printf("SKIP: %s\n", r.error);
        exit(77);
    }
    if (st != VMT_OK || !r.done || r.exit_code != 0) {
        guest_run_dump(&r);
        printf("serial:\n%s", x.text);
        fail_msg("platform guest on kvm: %s (%s)", vmt_strerror(st), r.error);
    }
    assert_int_equal(vmt_platform_check(x.p), VMT_OK);
    assert_int_equal(vmt_kvm_irq_link_failures(x.link), 0);
    const char *want[] = {
        "platform guest: console line 1 of the interrupt-driven writer\n",
        "platform guest: last line\n",
        "got: ping from the host\n",
    };
    const char *at = x.text;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *hit = strstr(at, want[i]);
        if (!hit)
            fail_msg("serial output lacks \"%s\":\n%s", want[i], x.text);
        at = hit + strlen(want[i]);
    }
    int found;
    assert_true(guest_run_report(&r, "uart.interrupts", &found) >= 1 && found);
    assert_true(guest_run_report(&r, "timer.oneshot_ns", &found) >= 2000000 && found);
    assert_true(guest_run_report(&r, "timer.tsc_deadline", &found) == 1 && found);
    assert_true(guest_run_report(&r, "pit.irq0", &found) >= 3 && found);
    guest_run_free(&r);
    vmt_platform_destroy(x.p);
    vmt_kvm_irq_link_destroy(x.link);
}

int main(void)
{
    vmt_test_require_kvm();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(platform_guest_on_kvm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
