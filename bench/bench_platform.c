/*
 * bench/bench_platform.c — what the PC platform costs a CPU driver per
 * call: the interrupt check a driver makes at instruction boundaries, an
 * advance with nothing due, a full LAPIC timer cycle (arm, expire, take,
 * EOI), a byte through the UART to a serial line, an HPET counter read, a
 * PM timer read, and a state save + load. Each is reported in ns per
 * operation and as a ratio to an indirect call of an empty function
 * measured in the same run (the floor of any bus call).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmtrap/platform.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static volatile unsigned sink;
static void on_line(void *ctx, const char *line)
{
    (void)ctx;
    sink += (unsigned)line[0];
}

static int empty_call(void *ctx, vmt_vcpu vcpu)
{
    (void)ctx;
    return (int)vcpu - 1;
}
static int (*volatile empty_fn)(void *, vmt_vcpu) = empty_call;

#define N 2000000

int main(void)
{
    vmt_platform_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.serial = on_line;
    vmt_platform *p;
    char why[256];
    if (vmt_platform_create(&cfg, &p, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "bench_platform: %s\n", why);
        return 1;
    }
    vmt_bus b = vmt_platform_bus(p);
    b.ops->mmio_write(b.ctx, 0, 0xfee000f0, 4, 0x1ff);
    b.ops->mmio_write(b.ctx, 0, 0xfee003e0, 4, 0xb);
    b.ops->mmio_write(b.ctx, 0, 0xfee00320, 4, 0xec);
    b.ops->mmio_write(b.ctx, 0, 0xfed00010, 8, 1);

    double t0 = now_s();
    for (int i = 0; i < N; i++)
        sink += (unsigned)empty_fn(NULL, 0);
    double base = (now_s() - t0) / N * 1e9;

    t0 = now_s();
    for (int i = 0; i < N; i++)
        sink += (unsigned)b.ops->irq_pending(b.ctx, 0);
    double pending = (now_s() - t0) / N * 1e9;

    uint64_t t = 1000;
    t0 = now_s();
    for (int i = 0; i < N; i++)
        sink += (unsigned)b.ops->advance(b.ctx, t++);
    double adv = (now_s() - t0) / N * 1e9;

    t0 = now_s();
    for (int i = 0; i < N / 4; i++) {
        b.ops->mmio_write(b.ctx, 0, 0xfee00380, 4, 100);
        t += 100;
        b.ops->advance(b.ctx, t);
        int v = b.ops->irq_pending(b.ctx, 0);
        if (v != 0xec)
            abort();
        b.ops->irq_ack(b.ctx, 0, (uint8_t)v);
        b.ops->mmio_write(b.ctx, 0, 0xfee000b0, 4, 0);
    }
    double timer = (now_s() - t0) / (N / 4) * 1e9;

    t0 = now_s();
    for (int i = 0; i < N; i++)
        b.ops->pio_write(b.ctx, 0, 0x3f8, 1, (i % 64) == 63 ? '\n' : 'a');
    double uart = (now_s() - t0) / N * 1e9;

    uint64_t v;
    t0 = now_s();
    for (int i = 0; i < N; i++) {
        b.ops->mmio_read(b.ctx, 0, 0xfed000f0, 4, &v);
        sink += (unsigned)v;
    }
    double hpet = (now_s() - t0) / N * 1e9;

    uint32_t pm;
    t0 = now_s();
    for (int i = 0; i < N; i++) {
        b.ops->pio_read(b.ctx, 0, 0xb008, 4, &pm);
        sink += pm;
    }
    double pmt = (now_s() - t0) / N * 1e9;

    t0 = now_s();
    for (int i = 0; i < 2000; i++) {
        uint8_t *blob;
        size_t len;
        if (vmt_platform_save(p, &blob, &len) != VMT_OK || vmt_platform_load(p, blob, len) != VMT_OK)
            abort();
        free(blob);
    }
    double state = (now_s() - t0) / 2000 * 1e9;
    if (vmt_platform_check(p) != VMT_OK)
        abort();

    printf("empty indirect call     %8.1f ns\n", base);
    printf("irq_pending (idle)      %8.1f ns  (%.1fx a call)\n", pending, pending / base);
    printf("advance (nothing due)   %8.1f ns  (%.1fx)\n", adv, adv / base);
    printf("LAPIC timer cycle       %8.1f ns  (%.1fx; arm, expire, take, EOI)\n", timer, timer / base);
    printf("UART byte to a line     %8.1f ns  (%.1fx)\n", uart, uart / base);
    printf("HPET counter read       %8.1f ns  (%.1fx)\n", hpet, hpet / base);
    printf("PM timer read           %8.1f ns  (%.1fx)\n", pmt, pmt / base);
    printf("state save + load       %8.1f ns  (%.0fx)\n", state, state / base);
    printf("RESULT pending_x=%.1f advance_x=%.1f timer_cycle_x=%.1f uart_byte_x=%.1f hpet_read_x=%.1f "
           "save_load_x=%.0f\n",
           pending / base, adv / base, timer / base, uart / base, hpet / base, state / base);
    vmt_platform_destroy(p);
    return 0;
}
