/*
 * tests/guests/test_cpu_guest.c — the CPU guest (guests/cpu) on the
 * emulator driver with a tiny test bus: one interrupt source the guest arms
 * through a port (vector 0x40, a deadline in guest time). The guest asserts
 * everything itself (user mode, SYSCALL, #PF/#GP from user mode on IST1 /
 * TSS.RSP0, NX, SMEP, a PML4 self-map, SSE across switches, interrupts in
 * kernel mode, user mode and out of HLT); the host checks that every phase
 * reported, that the run ended with DONE 0, that HLT slept at least as long
 * as the deadline in virtual time, and that two runs are identical
 * (determinism: interrupts arrive at the same instruction counts).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <unicorn/unicorn.h>

#include "guest_runner.h"
#include "vmtrap/bus.h"
#include "vmtrap/driver.h"
#include "vmtrap/emu.h"

#define RAM_SIZE (64ULL << 20)
#define TSC_HZ 2000000000ULL
#define BUS_ARM 0x510
#define BUS_FIRED 0x511
#define BUS_VECTOR 0x40

/* The test bus: one timer that raises BUS_VECTOR at a deadline. */
typedef struct test_bus {
    uint64_t now;
    uint64_t deadline;       /* UINT64_MAX: not armed */
    bool pending;
    uint32_t acked;
    uint64_t fired_at[8];    /* guest ns of each acknowledgement */
} test_bus;

static vmt_status bus_pio_write(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t val)
{
    (void)vcpu, (void)size;
    test_bus *b = ctx;
    if (port != BUS_ARM)
        return VMT_E_NOTFOUND;
    b->deadline = b->now + val;
    return VMT_OK;
}

static vmt_status bus_pio_read(void *ctx, vmt_vcpu vcpu, uint16_t port, unsigned size, uint32_t *val)
{
    (void)vcpu, (void)size;
    test_bus *b = ctx;
    if (port != BUS_FIRED)
        return VMT_E_NOTFOUND;
    *val = b->acked;
    return VMT_OK;
}

static uint64_t bus_advance(void *ctx, uint64_t now_ns)
{
    test_bus *b = ctx;
    assert_true(now_ns >= b->now); /* guest time never goes back */
    b->now = now_ns;
    if (b->deadline != UINT64_MAX && now_ns >= b->deadline) {
        b->pending = true;
        b->deadline = UINT64_MAX;
    }
    return b->deadline;
}

static int bus_irq_pending(void *ctx, vmt_vcpu vcpu)
{
    (void)vcpu;
    test_bus *b = ctx;
    return b->pending ? BUS_VECTOR : -1;
}

static void bus_irq_ack(void *ctx, vmt_vcpu vcpu, uint8_t vector)
{
    (void)vcpu;
    test_bus *b = ctx;
    assert_int_equal(vector, BUS_VECTOR);
    assert_true(b->pending);
    b->pending = false;
    if (b->acked < 8)
        b->fired_at[b->acked] = b->now;
    b->acked++;
}

static const vmt_bus_ops test_bus_ops = {
    .pio_read = bus_pio_read,
    .pio_write = bus_pio_write,
    .irq_pending = bus_irq_pending,
    .irq_ack = bus_irq_ack,
    .advance = bus_advance,
};

static void run_cpu_guest(guest_run *r, test_bus *tb)
{
    memset(tb, 0, sizeof *tb);
    tb->deadline = UINT64_MAX;
    vmt_bus bus = { &test_bus_ops, tb };
    vmt_clock_config clock = { .insns_per_sec = 1000000000ULL, .tsc_hz = TSC_HZ, .start_ns = 0 };
    char path[512];
    snprintf(path, sizeof path, "%s/cpu.elf", VMT_GUEST_DIR);
    /* Haswell: the guest turns on SMEP, which qemu64 does not have */
    vmt_emu_options opt = { .set_cpu_model = true, .cpu_model = UC_CPU_X86_HASWELL };
    guest_run_config c = { .driver = "emu", .elf_path = path, .ram_size = RAM_SIZE, .bus = &bus, .clock = &clock,
                           .time_limit_s = 60.0, .emu_options = &opt };
    vmt_status st = guest_run_config_elf(&c, r);
    if (st != VMT_OK) {
        guest_run_dump(r);
        fail_msg("cpu guest: %s (%s)", vmt_strerror(st), r->error);
    }
    if (!r->done || r->exit_code != 0)
        guest_run_dump(r);
}

static void cpu_guest_passes_every_phase(void **state)
{
    (void)state;
    guest_run r;
    test_bus tb;
    run_cpu_guest(&r, &tb);
    assert_true(r.done);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(guest_run_count(&r, VMT_UCALL_ASSERT_FAIL, NULL), 0);
    static const char *const phases[] = { "syscall.ok", "user_pf.ist", "user_gp.rsp0", "nx.fault",
                                          "smep.fault", "selfmap.ok",  "sse.ok",       "irq.kernel",
                                          "irq.user" };
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) {
        int found = 0;
        uint64_t v = guest_run_report(&r, phases[i], &found);
        if (!found || v != 1)
            fail_msg("phase %s did not report (found %d, value %llu)", phases[i], found, (unsigned long long)v);
    }
    /* HLT slept until the 5 ms deadline of guest time: the TSC shows it */
    int found = 0;
    uint64_t delta = guest_run_report(&r, "hlt.tsc_delta", &found);
    assert_true(found);
    assert_true(delta >= 5000000ULL * (TSC_HZ / 1000000000ULL));
    assert_true(delta < 6000000ULL * (TSC_HZ / 1000000000ULL));
    assert_int_equal(tb.acked, 3);
    guest_run_free(&r);
}

static void cpu_guest_is_deterministic(void **state)
{
    (void)state;
    guest_run r1, r2;
    test_bus b1, b2;
    run_cpu_guest(&r1, &b1);
    run_cpu_guest(&r2, &b2);
    assert_true(r1.done && r2.done);
    assert_int_equal(b1.acked, b2.acked);
    for (uint32_t i = 0; i < b1.acked && i < 8; i++)
        assert_int_equal(b1.fired_at[i], b2.fired_at[i]);
    assert_int_equal(guest_run_report(&r1, "hlt.tsc_delta", NULL), guest_run_report(&r2, "hlt.tsc_delta", NULL));
    guest_run_free(&r1);
    guest_run_free(&r2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_guest_passes_every_phase),
        cmocka_unit_test(cpu_guest_is_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
