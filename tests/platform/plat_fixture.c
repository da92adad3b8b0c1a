/*
 * tests/platform/plat_fixture.c — see plat_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plat_fixture.h"

static void on_line(void *ctx, const char *line)
{
    pfx *f = ctx;
    f->lines++;
    snprintf(f->last_line, sizeof f->last_line, "%s", line);
    int n = snprintf(f->log + f->log_len, sizeof f->log - f->log_len, "L:%s\n", line);
    if (n > 0 && (size_t)n < sizeof f->log - f->log_len)
        f->log_len += (size_t)n;
}

void pfx_init(pfx *f, const vmt_platform_config *cfg)
{
    memset(f, 0, sizeof *f);
    vmt_platform_config c;
    if (cfg)
        c = *cfg;
    else
        memset(&c, 0, sizeof c);
    c.serial = on_line;
    c.serial_ctx = f;
    char why[256] = "";
    vmt_status st = vmt_platform_create(&c, &f->p, why, sizeof why);
    if (st != VMT_OK)
        fail_msg("platform create: %s", why);
    f->bus = vmt_platform_bus(f->p);
    pfx_check(f);
}

void pfx_free(pfx *f)
{
    vmt_platform_destroy(f->p);
    f->p = NULL;
}

void pfx_check(pfx *f)
{
    if (vmt_platform_check(f->p) != VMT_OK)
        fail_msg("invariant: %s", vmt_platform_error(f->p));
}

void pfx_out(pfx *f, uint16_t port, unsigned size, uint32_t v)
{
    vmt_status st = f->bus.ops->pio_write(f->bus.ctx, 0, port, size, v);
    if (st != VMT_OK)
        fail_msg("out 0x%x: status %d: %s", port, st, vmt_platform_error(f->p));
    pfx_check(f);
}

uint32_t pfx_in(pfx *f, uint16_t port, unsigned size)
{
    uint32_t v = 0;
    vmt_status st = f->bus.ops->pio_read(f->bus.ctx, 0, port, size, &v);
    if (st != VMT_OK)
        fail_msg("in 0x%x: status %d: %s", port, st, vmt_platform_error(f->p));
    pfx_check(f);
    return v;
}

void pfx_outb(pfx *f, uint16_t port, uint8_t v) { pfx_out(f, port, 1, v); }
uint8_t pfx_inb(pfx *f, uint16_t port) { return (uint8_t)pfx_in(f, port, 1); }

void pfx_w64(pfx *f, uint64_t gpa, uint64_t v)
{
    vmt_status st = f->bus.ops->mmio_write(f->bus.ctx, 0, gpa, 8, v);
    assert_int_equal(st, VMT_OK);
    pfx_check(f);
}

uint64_t pfx_r64(pfx *f, uint64_t gpa)
{
    uint64_t v = 0;
    assert_int_equal(f->bus.ops->mmio_read(f->bus.ctx, 0, gpa, 8, &v), VMT_OK);
    pfx_check(f);
    return v;
}

void pfx_w32(pfx *f, uint64_t gpa, uint32_t v)
{
    assert_int_equal(f->bus.ops->mmio_write(f->bus.ctx, 0, gpa, 4, v), VMT_OK);
    pfx_check(f);
}

uint32_t pfx_r32(pfx *f, uint64_t gpa)
{
    uint64_t v = 0;
    assert_int_equal(f->bus.ops->mmio_read(f->bus.ctx, 0, gpa, 4, &v), VMT_OK);
    pfx_check(f);
    return (uint32_t)v;
}

void pfx_wrmsr(pfx *f, unsigned vcpu, uint32_t msr, uint64_t v)
{
    vmt_status st = f->bus.ops->msr_write(f->bus.ctx, vcpu, msr, v);
    if (st != VMT_OK)
        fail_msg("wrmsr 0x%x: status %d: %s", msr, st, vmt_platform_error(f->p));
    pfx_check(f);
}

uint64_t pfx_rdmsr(pfx *f, unsigned vcpu, uint32_t msr)
{
    uint64_t v = 0;
    vmt_status st = f->bus.ops->msr_read(f->bus.ctx, vcpu, msr, &v);
    if (st != VMT_OK)
        fail_msg("rdmsr 0x%x: status %d: %s", msr, st, vmt_platform_error(f->p));
    pfx_check(f);
    return v;
}

uint64_t pfx_advance(pfx *f, uint64_t now_ns)
{
    uint64_t d = f->bus.ops->advance(f->bus.ctx, now_ns);
    pfx_check(f);
    assert_true(d > now_ns);
    assert_int_equal(d, vmt_platform_next_deadline(f->p));
    return d;
}

int pfx_pending(pfx *f, unsigned vcpu)
{
    int v = f->bus.ops->irq_pending(f->bus.ctx, vcpu);
    pfx_check(f);
    return v;
}

int pfx_take(pfx *f, unsigned vcpu)
{
    int v = f->bus.ops->irq_pending(f->bus.ctx, vcpu);
    if (v < 0)
        return -1;
    f->bus.ops->irq_ack(f->bus.ctx, vcpu, (uint8_t)v);
    pfx_check(f);
    int n = snprintf(f->log + f->log_len, sizeof f->log - f->log_len, "I:%u:%d@%llu\n", vcpu, v,
                     (unsigned long long)vmt_platform_now(f->p));
    if (n > 0 && (size_t)n < sizeof f->log - f->log_len)
        f->log_len += (size_t)n;
    return v;
}

void pfx_lapic_enable(pfx *f)
{
    pfx_w32(f, LAPIC + 0xf0, 0x1ff);
}

void pfx_eoi(pfx *f)
{
    pfx_w32(f, LAPIC + 0xb0, 0);
}

void pfx_ioapic_route(pfx *f, unsigned pin, uint8_t vector, bool level)
{
    pfx_w32(f, 0xfec00000, 0x10 + 2 * pin + 1);
    pfx_w32(f, 0xfec00010, 0); /* destination APIC 0 */
    pfx_w32(f, 0xfec00000, 0x10 + 2 * pin);
    pfx_w32(f, 0xfec00010, vector | (level ? 0x8000u : 0));
}
