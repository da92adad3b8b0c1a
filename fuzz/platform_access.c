/*
 * fuzz/platform_access.c — random guest register access sequences against
 * every device, with virtual time and interrupt acknowledgement mixed in.
 *
 * The input is a program of operations (port/MMIO/MSR reads and writes
 * aimed at the device windows, advance, take/ack/EOI, interrupt lines,
 * serial input, save+load, register-view sets filled with input bytes over a
 * valid starting point). After every operation vmt_platform_check must
 * hold and no access may fail except with the statuses the bus contract
 * allows (NOTFOUND, INVAL for #GP, STOPPED for a reset request).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/platform.h"
#include "vmtrap/platform_regs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static uint64_t take(in *s, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes && s->n; i++, s->n--, s->p++)
        v |= (uint64_t)*s->p << (8 * i);
    return v;
}

static const uint16_t ports[] = {0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x60, 0x64,
                                 0x70, 0x71, 0x72, 0x73, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff,
                                 0xb008, 0x80, 0xcf8, 0xcf9, 0xcfc, 0xcfe, 0x5e0, 0x2f8};
static const uint64_t windows[] = {0xfee00000, 0xfec00000, 0xfed00000, 0xfe000000};
static const uint32_t msrs[] = {0x1b, 0x6e0, 0x802, 0x803, 0x808, 0x80b, 0x80f, 0x828, 0x830, 0x832, 0x835,
                                0x838, 0x839, 0x83e, 0x83f, 0x8ff, 0x10};
static const unsigned sizes[] = {1, 2, 4, 8};

static void ok(vmt_status st)
{
    if (st != VMT_OK && st != VMT_E_NOTFOUND && st != VMT_E_INVAL && st != VMT_E_STOPPED)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in s = {data, size};
    vmt_platform_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vcpus = (uint32_t)(take(&s, 1) % 3) + 1;
    vmt_platform *p;
    if (vmt_platform_create(&cfg, &p, NULL, 0) != VMT_OK)
        abort();
    vmt_bus bus = vmt_platform_bus(p);
    uint64_t now = 0;
    while (s.n) {
        unsigned op = (unsigned)take(&s, 1);
        vmt_vcpu cpu = (op >> 4) % cfg.vcpus;
        uint32_t v32;
        uint64_t v64;
        switch (op & 15) {
        case 0: case 1: {
            uint16_t port = ports[take(&s, 1) % (sizeof ports / sizeof ports[0])];
            unsigned sz = sizes[take(&s, 1) % 3];
            if ((op & 15) == 0)
                ok(bus.ops->pio_write(bus.ctx, cpu, port, sz, (uint32_t)take(&s, 4)));
            else
                ok(bus.ops->pio_read(bus.ctx, cpu, port, sz, &v32));
            break;
        }
        case 2: case 3: {
            uint64_t gpa = windows[take(&s, 1) % 4] + (take(&s, 2) & 0xfff);
            unsigned sz = sizes[take(&s, 1) % 4];
            if ((op & 15) == 2)
                ok(bus.ops->mmio_write(bus.ctx, cpu, gpa, sz, take(&s, 8)));
            else
                ok(bus.ops->mmio_read(bus.ctx, cpu, gpa, sz, &v64));
            break;
        }
        case 4: case 5: {
            uint32_t msr = msrs[take(&s, 1) % (sizeof msrs / sizeof msrs[0])];
            if ((op & 15) == 4)
                ok(bus.ops->msr_write(bus.ctx, cpu, msr, take(&s, 8)));
            else
                ok(bus.ops->msr_read(bus.ctx, cpu, msr, &v64));
            break;
        }
        case 6: {
            uint64_t d = bus.ops->advance(bus.ctx, now);
            if (d <= now)
                abort();
            uint64_t step = take(&s, 4);
            now += (d != UINT64_MAX && (step & 1)) ? d - now : step;
            bus.ops->advance(bus.ctx, now);
            break;
        }
        case 7: {
            int v = bus.ops->irq_pending(bus.ctx, cpu);
            if (v >= 0)
                bus.ops->irq_ack(bus.ctx, cpu, (uint8_t)v);
            bus.ops->nmi_take(bus.ctx, cpu);
            break;
        }
        case 8: ok(bus.ops->mmio_write(bus.ctx, cpu, 0xfee000b0, 4, 0)); break;
        case 9: vmt_platform_set_irq(p, (unsigned)take(&s, 1) % 26, take(&s, 1) & 1); break;
        case 10: {
            uint8_t b[4] = {0};
            size_t n = (size_t)take(&s, 1) % 5;
            vmt_platform_serial_input(p, b, n);
            break;
        }
        case 11: {
            uint8_t *blob;
            size_t len;
            if (vmt_platform_save(p, &blob, &len) != VMT_OK || vmt_platform_load(p, blob, len) != VMT_OK)
                abort();
            free(blob);
            break;
        }
        case 12: case 13: case 14: case 15: {
            /* Register views: read, overwrite some bytes, set; a set either
             * refuses (INVAL) or leaves a consistent platform. */
            union {
                vmt_platform_lapic_regs l;
                vmt_platform_ioapic_regs io;
                vmt_platform_uart_regs u;
                vmt_platform_hpet_regs h;
            } r;
            size_t len;
            unsigned which = op & 3;
            if (which == 0) {
                vmt_platform_lapic_get(p, cpu, &r.l);
                len = sizeof r.l;
            } else if (which == 1) {
                vmt_platform_ioapic_get(p, &r.io);
                len = sizeof r.io;
            } else if (which == 2) {
                vmt_platform_uart_get(p, &r.u);
                len = sizeof r.u;
            } else {
                vmt_platform_hpet_get(p, &r.h);
                len = sizeof r.h;
            }
            unsigned edits = (unsigned)take(&s, 1) % 8;
            for (unsigned k = 0; k < edits; k++) {
                size_t at = (size_t)take(&s, 2) % len;
                ((uint8_t *)&r)[at] = (uint8_t)take(&s, 1);
            }
            vmt_status st;
            if (which == 0)
                st = vmt_platform_lapic_set(p, cpu, &r.l);
            else if (which == 1)
                st = vmt_platform_ioapic_set(p, &r.io);
            else if (which == 2)
                st = vmt_platform_uart_set(p, &r.u);
            else
                st = vmt_platform_hpet_set(p, &r.h);
            if (st != VMT_OK && st != VMT_E_INVAL)
                abort();
            break;
        }
        default: break;
        }
        if (vmt_platform_check(p) != VMT_OK) {
            fprintf(stderr, "platform_access: op %u: %s\n", op & 15, vmt_platform_error(p));
            abort();
        }
    }
    vmt_platform_destroy(p);
    return 0;
}
