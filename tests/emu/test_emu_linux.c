/*
 * tests/emu/test_emu_linux.c — the project's real Linux snapshot (Debian
 * 6.1 kernel + busybox loop printing "tick N pid P" every second; made by
 * scripts/make-linux-snapshot.sh, cached in
 * ${VMT_CACHE_DIR:-~/.cache/vmtrap}/linux-snapshot/) resumed on the
 * emulator driver with the platform devices.
 *
 * A QEMU core holds no MSRs and no device state, so the test supplies what
 * the kernel programmed at boot and a core cannot show: LSTAR from the
 * kallsyms sample the guest printed (serial.txt), Linux's STAR/FMASK, the
 * LAPIC timer (one-shot, vector 0xec, re-armed by the kernel itself) and
 * the IOAPIC route of the UART (pin 4 -> vector 37).
 *
 * A core has no TSC either: the kernel's clocksource must not see time go
 * back past its last reading (it would stand still and no sleep would ever
 * end), so the TSC is set well past any plausible uptime.
 *
 * Checked: the kernel wakes from the HLT it was paused in, keeps running
 * through timer interrupts (LAPIC vector 0xec), syscalls and user mode, and
 * the shell's loop prints its next "tick" line on the UART (THRE
 * interrupts, vector 37) within the instruction budget; the driver's and
 * the platform's invariants hold at the end. Skipped (77) without the
 * cache.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmtrap/emu.h"
#include "vmtrap/platform.h"
#include "vmtrap/snapshot.h"

#define INSN_BUDGET 100000000ull

static char dir[512];

typedef struct serial_log {
    char lines[64][160];
    size_t n;
    int last_tick;
} serial_log;

static void on_serial(void *ctx, const char *line)
{
    serial_log *l = ctx;
    int t = 0;
    if (sscanf(line, "tick %d", &t) == 1 && t > l->last_tick)
        l->last_tick = t;
    if (l->n < 64)
        snprintf(l->lines[l->n++], sizeof l->lines[0], "%s", line);
    if (getenv("VMT_TEST_VERBOSE"))
        fprintf(stderr, "  serial: %s\n", line);
}

static uint64_t kallsyms(const char *name)
{
    char path[600], line[256];
    snprintf(path, sizeof path, "%s/serial.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        char sym[128], type;
        uint64_t a;
        if (sscanf(line, "%" SCNx64 " %c %127s", &a, &type, sym) == 3 && !strcmp(sym, name)) {
            v = a;
            break;
        }
    }
    fclose(f);
    return v;
}

/* The platform's bus with the acknowledged vectors counted (diagnostics). */
static vmt_bus inner_bus;
static uint64_t vec_count[256];
static vmt_bus_ops counting_ops;
static void counting_ack(void *ctx, vmt_vcpu vcpu, uint8_t vector)
{
    vec_count[vector]++;
    inner_bus.ops->irq_ack(ctx, vcpu, vector);
}

static void mmio32(vmt_bus *bus, uint64_t gpa, uint32_t v)
{
    assert_int_equal(bus->ops->mmio_write(bus->ctx, 0, gpa, 4, v), VMT_OK);
}

static void linux_resumes_and_ticks(void **state)
{
    (void)state;
    char core[600];
    snprintf(core, sizeof core, "%s/core.elf", dir);
    if (access(core, R_OK) != 0)
        skip();
    char why[256] = "";
    vmt_snapshot *s = NULL;
    vmt_snapshot_options so = { .quiet = true };
    if (vmt_snapshot_open(core, &so, &s, why, sizeof why) != VMT_OK)
        fail_msg("open %s: %s", core, why);
    uint64_t lstar = kallsyms("entry_SYSCALL_64");
    assert_true(lstar != 0);
    assert_int_equal(vmt_snapshot_fixup_set(s, 0, "lstar", lstar, "kallsyms: entry_SYSCALL_64"), VMT_OK);
    assert_int_equal(vmt_snapshot_fixup_set(s, 0, "star", 0x0023001000000000ull, "Linux __USER32_CS/__KERNEL_CS"), VMT_OK);
    assert_int_equal(vmt_snapshot_fixup_set(s, 0, "cstar", lstar, "no compat entry needed"), VMT_OK);
    assert_int_equal(vmt_snapshot_fixup_set(s, 0, "fmask", 0x47700, "Linux SYSCALL flag mask"), VMT_OK);
    /* A core has no TSC, and the kernel's clocksource must not go back
     * past its last reading (time would stand still): a value well past
     * any plausible uptime of the snapshot (~6 min at 2.5 GHz). */
    const char *tsc_env = getenv("VMT_LINUX_TSC");
    uint64_t tsc = tsc_env ? strtoull(tsc_env, NULL, 0) : 1000000000000ull;
    assert_int_equal(vmt_snapshot_fixup_set(s, 0, "tsc", tsc, "past the kernel's last clocksource reading"), VMT_OK);
    assert_int_equal(vmt_snapshot_reconstruct(s, NULL, NULL), VMT_OK);
    for (size_t i = 0; getenv("VMT_TEST_VERBOSE") && i < vmt_snapshot_fixup_count(s); i++) {
        const vmt_snapshot_fixup *f = vmt_snapshot_fixup_at(s, i);
        fprintf(stderr, "  fixup %s = 0x%" PRIx64 " (%s)\n", f->field, f->value, f->how);
    }

    serial_log log;
    memset(&log, 0, sizeof log);
    vmt_clock_config clock;
    vmt_snapshot_clock(s, &clock);
    vmt_platform_config pc;
    memset(&pc, 0, sizeof pc);
    pc.tsc_hz = clock.tsc_hz;
    pc.start_ns = clock.start_ns;
    pc.serial = on_serial;
    pc.serial_ctx = &log;
    vmt_platform *p = NULL;
    if (vmt_platform_create(&pc, &p, why, sizeof why) != VMT_OK)
        fail_msg("platform: %s", why);
    vmt_bus bus = vmt_platform_bus(p);
    inner_bus = bus;
    counting_ops = *bus.ops;
    counting_ops.irq_ack = counting_ack;
    bus.ops = &counting_ops;
    /* what the kernel programmed at boot: LAPIC on, its timer one-shot on
     * vector 0xec (the kernel re-arms it), the UART's IOAPIC pin */
    mmio32(&bus, 0xfee000f0, 0x1ff);
    mmio32(&bus, 0xfee000e0, 0xffffffff);
    mmio32(&bus, 0xfee000d0, 0x01000000);
    mmio32(&bus, 0xfee003e0, 0xb);
    mmio32(&bus, 0xfee00320, 0xec);
    mmio32(&bus, 0xfee00380, 100000);
    mmio32(&bus, 0xfec00000, 0x10 + 2 * 4);
    mmio32(&bus, 0xfec00010, 37);
    mmio32(&bus, 0xfec00000, 0x11 + 2 * 4);
    mmio32(&bus, 0xfec00010, 0);

    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    vmt_snapshot_machine_config(s, &mc);
    mc.bus = bus;
    mc.extra_frames = 256;
    vmt_driver *d = NULL;
    if (vmt_emu_driver_create(&mc, &d, why, sizeof why) != VMT_OK)
        fail_msg("emu: %s", why);
    if (vmt_snapshot_apply(s, d) != VMT_OK)
        fail_msg("apply: %s", vmt_snapshot_error(s));
    const uint64_t slice = 10000000ull; /* look at the console every 10 M instructions */
    uint64_t done_insns = 0;
    assert_int_equal(vmt_drv_set_limit(d, 0, slice), VMT_OK);
    int start_tick = 5;
    vmt_event ev;
    uint64_t io_events = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (vmt_drv_wait_event(d, -1, &ev) != VMT_OK)
            fail_msg("wait: %s", vmt_driver_error(d));
        if (ev.kind == VMT_EVENT_STOPPED && ev.u.stop.reason == VMT_STOP_INSN_LIMIT && log.last_tick <= start_tick &&
            (done_insns += slice) < INSN_BUDGET) {
            vmt_emu_tlb_stats ts;
            vmt_emu_tlb_stats_get(d, &ts);
            if (getenv("VMT_LINUX_TRACE"))
                fprintf(stderr, "  trace: rip 0x%" PRIx64 " rflags 0x%" PRIx64 " cs 0x%x fills %" PRIu64 " flushes %" PRIu64
                    " pf %" PRIu64 " irqs %" PRIu64 " ns %" PRIu64 " hlt_ns %" PRIu64 "\n", ev.regs.rip, ev.regs.rflags,
                    ev.regs.cs, ts.fills, ts.uc_flushes, ts.pf_injected, ts.interrupts, ts.guest_ns, ts.hlt_skipped_ns);
            assert_int_equal(vmt_drv_set_limit(d, 0, slice), VMT_OK);
            continue;
        }
        if (ev.kind == VMT_EVENT_STOPPED && ev.u.stop.reason == VMT_STOP_INSN_LIMIT && log.last_tick > start_tick)
            break;
        if (ev.kind == VMT_EVENT_STOPPED)
            break;
        io_events += ev.kind == VMT_EVENT_IO;
        vmt_response r = vmt_response_continue();
        if (vmt_drv_respond(d, &ev, &r) != VMT_OK)
            fail_msg("respond: %s", vmt_driver_error(d));
        if (log.last_tick > start_tick)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    vmt_platform_serial_flush(p);
    vmt_driver_stats st;
    vmt_drv_stats(d, &st);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("  linux: %" PRIu64 " instructions in %.2f s (%.1f M/s), %" PRIu64 " unclaimed port events, "
           "last tick %d, rip 0x%" PRIx64 "%s%s\n",
           st.instructions, secs, (double)st.instructions / secs / 1e6, io_events, log.last_tick, ev.regs.rip,
           ev.kind == VMT_EVENT_STOPPED ? ", stopped: " : "", ev.kind == VMT_EVENT_STOPPED ? ev.u.stop.message : "");
    for (int v = 0; v < 256; v++)
        if (vec_count[v])
            printf("  vector 0x%x: %" PRIu64 " interrupts\n", v, vec_count[v]);
    for (size_t i = 0; i < log.n && i < 8; i++)
        printf("  serial: %s\n", log.lines[i]);
    assert_true(log.last_tick > start_tick);
    assert_int_equal(vmt_emu_check(d), VMT_OK);
    assert_int_equal(vmt_platform_check(p), VMT_OK);
    vmt_driver_destroy(d);
    vmt_platform_destroy(p);
    vmt_snapshot_destroy(s);
}

int main(void)
{
    const char *c = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    if (c && *c)
        snprintf(dir, sizeof dir, "%s/linux-snapshot", c);
    else
        snprintf(dir, sizeof dir, "%s/.cache/vmtrap/linux-snapshot", home ? home : "/nonexistent");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linux_resumes_and_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
