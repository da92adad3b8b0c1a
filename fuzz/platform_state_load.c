/*
 * fuzz/platform_state_load.c — vmt_platform_load() on hostile blobs.
 *
 * Each input is tried twice: as given (structure, magic, checksum) and with
 * its checksum recomputed (so the fuzzer reaches the section parsers and the
 * device invariant checks). A blob that loads must pass vmt_platform_check,
 * survive a few bus operations with the invariants intact, and save back to
 * a blob that loads again; a refused blob must leave the platform as it was.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtrap/platform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void exercise(vmt_platform *p)
{
    vmt_bus bus = vmt_platform_bus(p);
    if (vmt_platform_check(p) != VMT_OK)
        abort();
    uint64_t now = vmt_platform_now(p);
    for (int i = 0; i < 4; i++) {
        uint64_t d = bus.ops->advance(bus.ctx, now);
        if (vmt_platform_check(p) != VMT_OK || d <= now)
            abort();
        int v = bus.ops->irq_pending(bus.ctx, 0);
        if (v >= 0)
            bus.ops->irq_ack(bus.ctx, 0, (uint8_t)v);
        uint32_t x;
        bus.ops->pio_read(bus.ctx, 0, 0x3fa, 1, &x);
        bus.ops->mmio_write(bus.ctx, 0, 0xfee000b0, 4, 0);
        if (vmt_platform_check(p) != VMT_OK)
            abort();
        now = d == UINT64_MAX ? now + 1000000 : d;
    }
}

static void try_load(vmt_platform *p, const uint8_t *blob, size_t len, const uint8_t *before, size_t before_len)
{
    if (vmt_platform_load(p, blob, len) != VMT_OK) {
        uint8_t *now;
        size_t n;
        if (vmt_platform_save(p, &now, &n) != VMT_OK)
            abort();
        if (n != before_len || memcmp(now, before, n) != 0)
            abort(); /* a refused load changed the state */
        free(now);
        return;
    }
    exercise(p);
    uint8_t *again;
    size_t n;
    if (vmt_platform_save(p, &again, &n) != VMT_OK)
        abort();
    if (vmt_platform_load(p, again, n) != VMT_OK)
        abort();
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmt_platform_config cfg;
    memset(&cfg, 0, sizeof cfg);
    vmt_platform *p;
    if (vmt_platform_create(&cfg, &p, NULL, 0) != VMT_OK)
        abort();
    uint8_t *before;
    size_t before_len;
    if (vmt_platform_save(p, &before, &before_len) != VMT_OK)
        abort();
    try_load(p, data, size, before, before_len);
    vmt_platform_destroy(p);
    if (size >= 24) {
        uint8_t *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        uint64_t h = fnv1a(copy, size - 8);
        for (unsigned i = 0; i < 8; i++)
            copy[size - 8 + i] = (uint8_t)(h >> (8 * i));
        if (vmt_platform_create(&cfg, &p, NULL, 0) != VMT_OK)
            abort();
        try_load(p, copy, size, before, before_len);
        vmt_platform_destroy(p);
        free(copy);
    }
    free(before);
    return 0;
}
