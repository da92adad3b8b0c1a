/*
 * fuzz/snapshot_vmts.c — the vmtrap snapshot loader past its checksums.
 *
 * Random bytes almost never carry valid CRC-32s, so a plain fuzzer stops at
 * the header check. This harness repairs them first (each section's CRC
 * where the table entry lies inside the input, then the table's and the
 * header's, and the header's file size) and opens the result, so the field
 * validation behind the checksums (memory map, chunk table, zstd frames,
 * vCPU records, metadata, fixups) meets arbitrary values. A loaded snapshot
 * must pass its checker; reading its RAM decompresses every chunk, which
 * either works or fails with VMT_E_FORMAT (a frame corrupt inside, which a
 * real file's section CRC would have caught at load).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "vmtrap/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t crc(const uint8_t *p, size_t n) { return (uint32_t)crc32(crc32(0, Z_NULL, 0), p, (uInt)n); }

static void repair(uint8_t *f, size_t size)
{
    if (size < 64 || memcmp(f, "VMTSNAP", 8) != 0)
        return;
    put64(f + 32, size);
    uint32_t count = le32(f + 20) % 33;
    put32(f + 20, count);
    put64(f + 24, 64);
    uint64_t table_end = 64 + (uint64_t)count * 32 + 8;
    if (table_end <= size) {
        for (uint32_t i = 0; i < count; i++) {
            uint8_t *e = f + 64 + i * 32;
            uint64_t off = le64(e + 8), len = le64(e + 16);
            if (off <= size && len <= size - off)
                put32(e + 24, crc(f + off, (size_t)len));
        }
        put32(f + 64 + count * 32, crc(f + 64, count * 32));
    }
    put32(f + 56, crc(f, 56));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    repair(copy, size);
    vmt_snapshot *s = NULL;
    char why[256];
    vmt_snapshot_options opts = { .quiet = true };
    if (vmt_snapshot_open_mem(copy, size, &opts, &s, why, sizeof why) == VMT_OK) {
        if (vmt_snapshot_check(s, why, sizeof why) != VMT_OK)
            abort();
        uint64_t budget = 64u << 20; /* bytes decompressed per input */
        for (size_t i = 0; i < vmt_snapshot_ram_count(s); i++) {
            vmt_snapshot_ram r;
            vmt_snapshot_ram_at(s, i, &r);
            for (uint64_t off = 0; off < r.size && budget; off += 65536) {
                const uint8_t *p;
                uint64_t n = r.size - off < 65536 ? r.size - off : 65536;
                /* with repaired CRCs a frame may still be corrupt inside: that
                 * must be a clean FORMAT error, nothing else */
                vmt_status st = vmt_snapshot_ram_ptr(s, r.gpa + off, n, &p);
                if (st != VMT_OK && st != VMT_E_FORMAT)
                    abort();
                budget = budget > n ? budget - n : 0;
            }
        }
        vmt_snapshot_destroy(s);
    }
    free(copy);
    return 0;
}
